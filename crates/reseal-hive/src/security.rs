//! Self-relative security descriptors: validation and SID rewriting.
//!
//! The layout follows MS-DTYP 2.4.6 (SECURITY_DESCRIPTOR_RELATIVE), 2.4.5
//! (ACL) and 2.4.4 (ACEs). Validation applies the rules the Windows hive
//! loader relies on: a 20-byte header with revision 1 and the self-relative
//! bit; every present owner, group and ACL at a 4-byte aligned offset of at
//! least 20 that fits in the descriptor; valid SIDs; ACL revision 2 to 4, an
//! ACL size of at least 8 that fits, and `AceCount` ACEs each of which lies
//! inside the ACL and is large enough for the SID it carries (object ACEs
//! need ACL revision 4, compound ACEs revision 3).
//!
//! Conditional (callback) ACEs carry an expression after their SID that
//! starts with `artx` and is a token stream (MS-DTYP 2.4.4.17); SID literals
//! in it (token 0x51, a 32-bit length, the binary SID) are rewritten too,
//! and composite tokens (0x50) have their lengths recomputed when a SID
//! changes size. Other application data (not a parsable expression) is
//! scanned for binary SIDs, which are patched in place when the replacement
//! has the same length and left alone otherwise.

use serde::Serialize;

use crate::bytes::{put_u16, put_u32, u16_at, u32_at};
use crate::error::{HiveError, Result};
use crate::sid::Sid;
use crate::sid_scan::{self, SidForm};

/// Size of the SECURITY_DESCRIPTOR_RELATIVE header.
pub const HEADER_LEN: usize = 20;
/// Control bit: a DACL is present (a zero offset then means a NULL DACL).
pub const SE_DACL_PRESENT: u16 = 0x0004;
/// Control bit: a SACL is present.
pub const SE_SACL_PRESENT: u16 = 0x0010;
/// Control bit: DACL auto-inherit required.
pub const SE_DACL_AUTO_INHERIT_REQ: u16 = 0x0100;
/// Control bit: SACL auto-inherit required.
pub const SE_SACL_AUTO_INHERIT_REQ: u16 = 0x0200;
/// Control bit: DACL auto-inherited.
pub const SE_DACL_AUTO_INHERITED: u16 = 0x0400;
/// Control bit: SACL auto-inherited.
pub const SE_SACL_AUTO_INHERITED: u16 = 0x0800;
/// Control bit: DACL protected from inheritance.
pub const SE_DACL_PROTECTED: u16 = 0x1000;
/// Control bit: SACL protected from inheritance.
pub const SE_SACL_PROTECTED: u16 = 0x2000;
/// Control bit: the descriptor is self-relative (required in a hive).
pub const SE_SELF_RELATIVE: u16 = 0x8000;

/// Signature at the start of a conditional expression (`artx`).
const CONDITIONAL_SIGNATURE: &[u8; 4] = b"artx";

/// Where in a descriptor a SID was rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum SdLocation {
    /// The owner SID.
    Owner,
    /// The primary group SID.
    Group,
    /// The SID of DACL entry number `ace` (0-based).
    Dacl {
        /// Index of the ACE in the DACL.
        ace: u16,
    },
    /// The SID of SACL entry number `ace`.
    Sacl {
        /// Index of the ACE in the SACL.
        ace: u16,
    },
    /// A SID inside the application data (conditional expression) of DACL
    /// entry number `ace`.
    DaclAppData {
        /// Index of the ACE in the DACL.
        ace: u16,
    },
    /// A SID inside the application data of SACL entry number `ace`.
    SaclAppData {
        /// Index of the ACE in the SACL.
        ace: u16,
    },
}

/// One rewritten SID.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct SdHit {
    /// Which part of the descriptor.
    pub location: SdLocation,
    /// Offset of the SID's first byte in the *original* descriptor.
    pub offset: usize,
}

/// A parsed descriptor, for dump tools.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DescriptorView {
    /// The control flags (`SE_*`).
    pub control: u16,
    /// The owner, if any.
    pub owner: Option<Sid>,
    /// The primary group, if any.
    pub group: Option<Sid>,
    /// The DACL entries; `None` when there is no DACL or a NULL DACL (tell
    /// them apart with [`SE_DACL_PRESENT`] in `control`).
    pub dacl: Option<Vec<AceView>>,
    /// The SACL entries; `None` when there is none.
    pub sacl: Option<Vec<AceView>>,
}

/// One ACE of a [`DescriptorView`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AceView {
    /// ACE type (0 allowed, 1 denied, 2 audit, 5 allowed-object, ...).
    pub ace_type: u8,
    /// ACE flags (0x01 object-inherit, 0x02 container-inherit, ...).
    pub flags: u8,
    /// Access mask (0 for ACE types without one).
    pub mask: u32,
    /// The trustee SID (for a compound ACE, the server SID); `None` for
    /// ACE types this module does not know.
    pub sid: Option<Sid>,
    /// Object type GUID of an object ACE, in registry format.
    pub object_type: Option<String>,
    /// Inherited object type GUID of an object ACE.
    pub inherited_object_type: Option<String>,
}

// ---------------------------------------------------------------------------
// Parsing and validation

fn bad(
    offset: usize,
    what: &'static str,
    expected: impl Into<String>,
    found: impl Into<String>,
) -> HiveError {
    HiveError::InvalidSecurityDescriptor {
        offset,
        what,
        expected: expected.into(),
        found: found.into(),
    }
}

/// A SID found in the descriptor.
#[derive(Clone, Debug)]
struct SidAt {
    off: usize,
    len: usize,
    sid: Sid,
}

/// How an ACE's application data is understood.
#[derive(Clone, Debug)]
enum AppData {
    /// A conditional expression whose token stream parsed; its SID literals.
    Conditional(Vec<SidAt>),
    /// Opaque bytes; binary SIDs of interest found by a raw scan.
    Raw,
}

#[derive(Clone, Debug)]
struct AceInfo {
    off: usize,
    size: usize,
    ace_type: u8,
    flags: u8,
    mask: u32,
    /// Trustee SID(s): one, or two for a compound ACE, none for unknown types.
    sids: Vec<SidAt>,
    object_type: Option<[u8; 16]>,
    inherited_object_type: Option<[u8; 16]>,
    /// Application data range and its interpretation.
    app: Option<(usize, usize, AppData)>,
}

#[derive(Clone, Debug)]
struct AclInfo {
    off: usize,
    size: usize,
    /// End of the last ACE (the rest up to `off + size` is slack).
    aces_end: usize,
    aces: Vec<AceInfo>,
}

#[derive(Clone, Debug)]
enum AclState {
    Absent,
    Null,
    Present(AclInfo),
}

#[derive(Clone, Debug)]
struct Parsed {
    control: u16,
    owner: Option<SidAt>,
    group: Option<SidAt>,
    sacl: AclState,
    dacl: AclState,
}

/// Checks an offset from the header: at least 20, inside, 4-byte aligned,
/// with `min` bytes available.
fn check_offset(sd: &[u8], off: usize, field: usize, what: &'static str, min: usize) -> Result<()> {
    if off < HEADER_LEN || off % 4 != 0 || off >= sd.len() || sd.len() - off < min {
        return Err(bad(
            field,
            what,
            format!(
                "0 or a multiple of 4 in {HEADER_LEN}..={} (descriptor length {})",
                sd.len().saturating_sub(min),
                sd.len()
            ),
            format!("{off:#x}"),
        ));
    }
    Ok(())
}

/// Reads a SID that must lie within `region` (starting at `off` of `sd`).
fn sid_in(sd: &[u8], off: usize, end: usize, what: &'static str) -> Result<SidAt> {
    let region = sd.get(off..end).unwrap_or(&[]);
    match Sid::from_bytes(region) {
        Some((sid, len)) => Ok(SidAt { off, len, sid }),
        None => {
            let found = match region {
                [] | [_] => format!("{} byte(s) left", region.len()),
                [r, _, ..] if *r != 1 => format!("revision {r}"),
                [_, n, ..] if *n > 15 => format!("{n} sub-authorities"),
                [_, n, ..] => format!(
                    "{} bytes for {n} sub-authorities, {} available",
                    8 + 4 * *n as usize,
                    region.len()
                ),
            };
            Err(bad(
                off,
                what,
                "a SID (revision 1, at most 15 sub-authorities) that fits",
                found,
            ))
        }
    }
}

fn component_sid(
    sd: &[u8],
    field: usize,
    what: &'static str,
    sid_what: &'static str,
) -> Result<Option<SidAt>> {
    let off = u32_at(sd, field).unwrap_or(0) as usize;
    if off == 0 {
        return Ok(None);
    }
    check_offset(sd, off, field, what, 8)?;
    sid_in(sd, off, sd.len(), sid_what).map(Some)
}

fn is_object_type(t: u8) -> bool {
    matches!(t, 0x05..=0x08 | 0x0B | 0x0C | 0x0F | 0x10)
}

/// Types whose body is `mask u32` then the SID.
fn is_mask_sid_type(t: u8) -> bool {
    matches!(t, 0x00..=0x03 | 0x09 | 0x0A | 0x0D | 0x0E | 0x11..=0x15)
}

/// Types with application data after the SID.
fn has_app_data(t: u8) -> bool {
    matches!(t, 0x09..=0x10 | 0x12 | 0x15)
}

fn guid_at(sd: &[u8], off: usize) -> Option<[u8; 16]> {
    sd.get(off..off + 16)?.try_into().ok()
}

/// Walks a conditional-expression token stream in `sd[start..end]`
/// (after the signature) and collects its SID literals; `None` when it is
/// not a well-formed token stream.
fn conditional_sids(sd: &[u8], start: usize, end: usize) -> Option<Vec<SidAt>> {
    let mut sids = Vec::new();
    let mut p = start;
    while p < end {
        let code = sd[p];
        match code {
            0x00 | 0x80..=0x93 | 0xA0..=0xA2 => p += 1,
            // integer literal: 8-byte value, sign byte, base byte
            0x01..=0x04 => p += 11,
            // composite: its tokens follow inline, within its length
            0x50 => {
                let len = u32_at(sd, p + 1)? as usize;
                if p.checked_add(5)?.checked_add(len)? > end {
                    return None;
                }
                p += 5;
            }
            0x10 | 0x18 | 0x51 | 0xF8..=0xFB => {
                let len = u32_at(sd, p + 1)? as usize;
                let data_end = p.checked_add(5)?.checked_add(len)?;
                if data_end > end {
                    return None;
                }
                if code == 0x51 {
                    let (sid, used) = Sid::from_bytes(&sd[p + 5..data_end])?;
                    if used != len {
                        return None;
                    }
                    sids.push(SidAt {
                        off: p + 5,
                        len,
                        sid,
                    });
                }
                p = data_end;
            }
            _ => return None,
        }
    }
    (p == end).then_some(sids)
}

fn parse_ace(sd: &[u8], p: usize, acl_rev: u8, acl_off: usize, acl_end: usize) -> Result<AceInfo> {
    let ace_type = sd[p];
    let flags = sd[p + 1];
    let size = u16_at(sd, p + 2).unwrap_or(0) as usize;
    let known = ace_type <= 0x15;
    let align = if known { 4 } else { 2 };
    if size < 4 || size % align != 0 {
        return Err(bad(
            p + 2,
            "ACE size",
            format!("a multiple of {align}, at least 4"),
            size.to_string(),
        ));
    }
    if p + size > acl_end {
        return Err(bad(
            p + 2,
            "ACE size",
            format!("at most {} (end of ACL at {acl_end:#x})", acl_end - p),
            size.to_string(),
        ));
    }
    let end = p + size;
    let need = |n: usize, what: &'static str| -> Result<()> {
        if size < n {
            Err(bad(p + 2, what, format!("at least {n}"), size.to_string()))
        } else {
            Ok(())
        }
    };
    let mut ace = AceInfo {
        off: p,
        size,
        ace_type,
        flags,
        mask: if size >= 8 {
            u32_at(sd, p + 4).unwrap_or(0)
        } else {
            0
        },
        sids: Vec::new(),
        object_type: None,
        inherited_object_type: None,
        app: None,
    };
    let sid_end;
    if is_mask_sid_type(ace_type) {
        need(16, "ACE size")?;
        let s = sid_in(sd, p + 8, end, "ACE SID")?;
        sid_end = s.off + s.len;
        ace.sids.push(s);
    } else if is_object_type(ace_type) {
        if acl_rev < 4 {
            return Err(bad(
                acl_off,
                "ACL revision",
                "4 for an ACL holding object ACEs",
                acl_rev.to_string(),
            ));
        }
        need(20, "object ACE size")?;
        let oflags = u32_at(sd, p + 8).unwrap_or(0);
        let mut q = p + 12;
        if oflags & 1 != 0 {
            need(q + 16 + 8 - p, "object ACE size")?;
            ace.object_type = guid_at(sd, q);
            q += 16;
        }
        if oflags & 2 != 0 {
            need(q + 16 + 8 - p, "object ACE size")?;
            ace.inherited_object_type = guid_at(sd, q);
            q += 16;
        }
        let s = sid_in(sd, q, end, "object ACE SID")?;
        sid_end = s.off + s.len;
        ace.sids.push(s);
    } else if ace_type == 0x04 {
        if acl_rev < 3 {
            return Err(bad(
                acl_off,
                "ACL revision",
                "at least 3 for an ACL holding compound ACEs",
                acl_rev.to_string(),
            ));
        }
        need(28, "compound ACE size")?;
        let ct = u16_at(sd, p + 8).unwrap_or(0);
        if ct != 1 {
            return Err(bad(
                p + 8,
                "compound ACE type",
                "1 (impersonation)",
                ct.to_string(),
            ));
        }
        let server = sid_in(sd, p + 12, end, "compound ACE server SID")?;
        let client = sid_in(sd, server.off + server.len, end, "compound ACE client SID")?;
        sid_end = client.off + client.len;
        ace.sids.push(server);
        ace.sids.push(client);
    } else {
        // Unknown type: opaque; scanned for binary SIDs like raw
        // application data.
        if size > 4 {
            ace.app = Some((p + 4, end, AppData::Raw));
        }
        return Ok(ace);
    }
    if has_app_data(ace_type) && sid_end < end {
        let kind = if sd[sid_end..end].starts_with(CONDITIONAL_SIGNATURE) {
            match conditional_sids(sd, sid_end + 4, end) {
                Some(s) => AppData::Conditional(s),
                None => AppData::Raw,
            }
        } else {
            AppData::Raw
        };
        ace.app = Some((sid_end, end, kind));
    }
    Ok(ace)
}

fn parse_acl(sd: &[u8], field: usize, what: &'static str) -> Result<AclInfo> {
    let off = u32_at(sd, field).unwrap_or(0) as usize;
    check_offset(sd, off, field, what, 8)?;
    let rev = sd[off];
    if !(2..=4).contains(&rev) {
        return Err(bad(off, "ACL revision", "2, 3 or 4", rev.to_string()));
    }
    let size = u16_at(sd, off + 2).unwrap_or(0) as usize;
    if size < 8 || size % 2 != 0 {
        return Err(bad(
            off + 2,
            "ACL size",
            "an even number, at least 8",
            size.to_string(),
        ));
    }
    if off + size > sd.len() {
        return Err(bad(
            off + 2,
            "ACL size",
            format!("at most {} (end of descriptor)", sd.len() - off),
            size.to_string(),
        ));
    }
    let count = u16_at(sd, off + 4).unwrap_or(0);
    let end = off + size;
    let mut p = off + 8;
    let mut aces = Vec::with_capacity(count as usize);
    for i in 0..count {
        if p + 4 > end {
            return Err(bad(
                off + 4,
                "ACE count",
                format!("at most {i} (ACEs must fit in the ACL of {size} bytes)"),
                count.to_string(),
            ));
        }
        let ace = parse_ace(sd, p, rev, off, end)?;
        p += ace.size;
        aces.push(ace);
    }
    Ok(AclInfo {
        off,
        size,
        aces_end: p,
        aces,
    })
}

fn parse(sd: &[u8]) -> Result<Parsed> {
    if sd.len() < HEADER_LEN {
        return Err(bad(
            0,
            "descriptor length",
            format!("at least {HEADER_LEN}"),
            sd.len().to_string(),
        ));
    }
    if sd[0] != 1 {
        return Err(bad(0, "revision", "1", sd[0].to_string()));
    }
    let control = u16_at(sd, 2).unwrap_or(0);
    if control & SE_SELF_RELATIVE == 0 {
        return Err(bad(
            2,
            "control",
            "self-relative bit 0x8000 set",
            format!("{control:#06x}"),
        ));
    }
    let owner = component_sid(sd, 4, "owner offset", "owner SID")?;
    let group = component_sid(sd, 8, "group offset", "group SID")?;
    let acl = |present: u16, field: usize, what| -> Result<AclState> {
        if control & present == 0 {
            Ok(AclState::Absent)
        } else if u32_at(sd, field) == Some(0) {
            Ok(AclState::Null)
        } else {
            parse_acl(sd, field, what).map(AclState::Present)
        }
    };
    let sacl = acl(SE_SACL_PRESENT, 12, "SACL offset")?;
    let dacl = acl(SE_DACL_PRESENT, 16, "DACL offset")?;
    Ok(Parsed {
        control,
        owner,
        group,
        sacl,
        dacl,
    })
}

/// Checks a self-relative descriptor against the rules in the module
/// documentation. Errors are [`HiveError::InvalidSecurityDescriptor`] with
/// the offset (inside the descriptor), the field, and expected versus found.
pub fn validate_descriptor(sd: &[u8]) -> Result<()> {
    parse(sd).map(|_| ())
}

// ---------------------------------------------------------------------------
// Rewriting

/// One SID occurrence that will be rewritten.
struct Edit {
    at: SidAt,
    new: Vec<u8>,
    location: SdLocation,
    /// Found by a raw scan of opaque application data.
    raw: bool,
}

fn acl_edits(sd: &[u8], acl: &AclInfo, dacl: bool, old: &Sid, new: &Sid, out: &mut Vec<Edit>) {
    for (i, ace) in acl.aces.iter().enumerate() {
        let i = i as u16;
        let (loc, app_loc) = if dacl {
            (
                SdLocation::Dacl { ace: i },
                SdLocation::DaclAppData { ace: i },
            )
        } else {
            (
                SdLocation::Sacl { ace: i },
                SdLocation::SaclAppData { ace: i },
            )
        };
        for s in &ace.sids {
            push_edit(s, loc, false, old, new, out);
        }
        match &ace.app {
            Some((_, _, AppData::Conditional(sids))) => {
                for s in sids {
                    push_edit(s, app_loc, false, old, new, out);
                }
            }
            Some((start, end, AppData::Raw)) => {
                let data = &sd[*start..*end];
                for h in sid_scan::find_domain_sid(data, old) {
                    if h.form != SidForm::Binary {
                        continue;
                    }
                    if let Some((sid, len)) = Sid::from_bytes(&data[h.offset..]) {
                        let at = SidAt {
                            off: start + h.offset,
                            len,
                            sid,
                        };
                        push_edit(&at, app_loc, true, old, new, out);
                    }
                }
            }
            None => {}
        }
    }
}

fn push_edit(
    s: &SidAt,
    location: SdLocation,
    raw: bool,
    old: &Sid,
    new: &Sid,
    out: &mut Vec<Edit>,
) {
    if let Some(n) = s.sid.replace_prefix(old, new) {
        out.push(Edit {
            at: s.clone(),
            new: n.to_bytes(),
            location,
            raw,
        });
    }
}

/// Rewrites every SID of `old_domain` — the domain SID itself or the domain
/// followed by RIDs — into `new_domain` with the same RIDs: owner, group,
/// the trustee of every DACL and SACL entry (plain, object, compound and
/// callback ACEs) and SID literals in conditional expressions; binary SIDs
/// in other application data are patched when the lengths match.
///
/// Returns `None` when nothing matched, else the new descriptor and the
/// hits (offsets in the original). When both SIDs have the same number of
/// sub-authorities (always true for machine SIDs) the output has the input's
/// length and differs only in the rewritten SIDs; otherwise the descriptor
/// is rebuilt with updated ACE sizes, ACL sizes, expression lengths and
/// offsets (gaps and slack kept), which requires non-overlapping
/// components. The input must be valid (see [`validate_descriptor`]).
pub fn rewrite_descriptor_sids(
    sd: &[u8],
    old_domain: &Sid,
    new_domain: &Sid,
) -> Result<Option<(Vec<u8>, Vec<SdHit>)>> {
    let parsed = parse(sd)?;
    let mut edits = Vec::new();
    for (s, loc) in [
        (&parsed.owner, SdLocation::Owner),
        (&parsed.group, SdLocation::Group),
    ] {
        if let Some(s) = s {
            push_edit(s, loc, false, old_domain, new_domain, &mut edits);
        }
    }
    if let AclState::Present(a) = &parsed.dacl {
        acl_edits(sd, a, true, old_domain, new_domain, &mut edits);
    }
    if let AclState::Present(a) = &parsed.sacl {
        acl_edits(sd, a, false, old_domain, new_domain, &mut edits);
    }
    let same_len = edits.iter().all(|e| e.new.len() == e.at.len);
    if !same_len {
        // Opaque data cannot change length.
        edits.retain(|e| !e.raw);
    }
    if edits.is_empty() {
        return Ok(None);
    }
    let out = if same_len {
        let mut out = sd.to_vec();
        for e in &edits {
            out[e.at.off..e.at.off + e.at.len].copy_from_slice(&e.new);
        }
        out
    } else {
        rebuild(sd, &parsed, &edits)?
    };
    // The output must be as valid as the input.
    parse(&out)?;
    let mut hits: Vec<SdHit> = edits
        .iter()
        .map(|e| SdHit {
            location: e.location,
            offset: e.at.off,
        })
        .collect();
    hits.sort_by_key(|h| h.offset);
    Ok(Some((out, hits)))
}

/// The byte ranges of `sd` that carry meaning: the header, owner and group
/// SIDs, each present ACL's header and ACEs (up to the end of the last one)
/// and, inside each ACE of a known type without application data, the part
/// up to the end of its SID(s). Everything else is unused.
fn used_ranges(sd: &[u8], parsed: &Parsed) -> Vec<(usize, usize)> {
    let mut used = vec![(0, HEADER_LEN)];
    for s in [&parsed.owner, &parsed.group].into_iter().flatten() {
        used.push((s.off, s.off + s.len));
    }
    for a in [&parsed.sacl, &parsed.dacl] {
        let AclState::Present(a) = a else { continue };
        used.push((a.off, a.off + 8));
        for ace in &a.aces {
            let end = ace.off + ace.size;
            let sid_end = ace.sids.iter().map(|s| s.off + s.len).max();
            let body_end = match (sid_end, &ace.app) {
                // Known layout, nothing after the SID(s): the rest is slack.
                (Some(e), None) if !has_app_data(ace.ace_type) => e.min(end),
                _ => end,
            };
            used.push((ace.off, body_end));
        }
    }
    used.retain(|&(a, b)| a < b && b <= sd.len());
    used.sort_unstable();
    used
}

/// Zeroes the unused bytes of a valid self-relative descriptor: the slack
/// of each ACL (an `AclSize` larger than its ACEs), bytes after the SID of
/// an ACE that has no application data, gaps between the components and
/// everything after the last one. Windows writes such slack and leaves old
/// data in it (a removed ACE's SID); sizes and offsets stay as they are, so
/// the descriptor keeps its length and meaning.
///
/// Returns `None` when those bytes are all zero already, else the new
/// descriptor and how many bytes were not zero.
pub fn zero_descriptor_slack(sd: &[u8]) -> Result<Option<(Vec<u8>, usize)>> {
    let parsed = parse(sd)?;
    let mut out = sd.to_vec();
    let mut changed = 0;
    let mut pos = 0;
    let mut clear = |from: usize, to: usize, out: &mut Vec<u8>| {
        if let Some(r) = out.get_mut(from..to) {
            changed += r.iter().filter(|&&b| b != 0).count();
            r.fill(0);
        }
    };
    for (a, b) in used_ranges(sd, &parsed) {
        if a > pos {
            clear(pos, a, &mut out);
        }
        pos = pos.max(b);
    }
    clear(pos, sd.len(), &mut out);
    if changed == 0 {
        return Ok(None);
    }
    // The output must be as valid, and mean the same, as the input.
    if parse_descriptor(&out)? != parse_descriptor(sd)? {
        return Err(bad(
            0,
            "descriptor",
            "the same meaning after zeroing its unused bytes",
            "a different one",
        ));
    }
    Ok(Some((out, changed)))
}

/// Rewrites the SIDs of `old_domain` as [`rewrite_descriptor_sids`] does
/// and zeroes the unused bytes of the result ([`zero_descriptor_slack`]);
/// a descriptor naming no SID of the domain is changed (slack zeroed) only
/// when its unused bytes still hold the domain's sub-authorities (see
/// [`sid_scan::find_domain_sub_authorities`]). `None` when nothing changes.
pub fn rewrite_descriptor_domain(
    sd: &[u8],
    old_domain: &Sid,
    new_domain: &Sid,
) -> Result<Option<DomainRewrite>> {
    let (base, hits) = match rewrite_descriptor_sids(sd, old_domain, new_domain)? {
        Some((d, h)) => (d, h),
        None => {
            if sid_scan::find_domain_sub_authorities(sd, old_domain).is_empty() {
                return Ok(None);
            }
            (sd.to_vec(), Vec::new())
        }
    };
    let (descriptor, slack_bytes) = match zero_descriptor_slack(&base)? {
        Some((d, n)) => (d, n),
        None => (base, 0),
    };
    if hits.is_empty() && slack_bytes == 0 {
        return Ok(None);
    }
    Ok(Some(DomainRewrite {
        descriptor,
        hits,
        slack_bytes,
    }))
}

/// What [`rewrite_descriptor_domain`] made of a descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainRewrite {
    /// The new descriptor (same length as the old one for machine SIDs).
    pub descriptor: Vec<u8>,
    /// The SIDs rewritten (offsets in the original).
    pub hits: Vec<SdHit>,
    /// Unused bytes that were not zero and now are.
    pub slack_bytes: usize,
}

fn replacement(edits: &[Edit], off: usize) -> Option<&[u8]> {
    edits
        .iter()
        .find(|e| e.at.off == off && !e.raw)
        .map(|e| &e.new[..])
}

/// Rebuilds a conditional token stream `sd[start..end]` with replaced SID
/// literals and recomputed composite lengths.
fn rebuild_tokens(sd: &[u8], start: usize, end: usize, edits: &[Edit]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(end - start + 16);
    let mut p = start;
    while p < end {
        let code = sd[p];
        match code {
            0x00 | 0x80..=0x93 | 0xA0..=0xA2 => {
                out.push(code);
                p += 1;
            }
            0x01..=0x04 => {
                out.extend_from_slice(sd.get(p..p + 11)?);
                p += 11;
            }
            0x50 | 0x51 => {
                let len = u32_at(sd, p + 1)? as usize;
                let inner_end = p.checked_add(5)?.checked_add(len)?;
                if inner_end > end {
                    return None;
                }
                let body = if code == 0x50 {
                    rebuild_tokens(sd, p + 5, inner_end, edits)?
                } else {
                    replacement(edits, p + 5)
                        .unwrap_or(&sd[p + 5..inner_end])
                        .to_vec()
                };
                out.push(code);
                out.extend_from_slice(&u32::try_from(body.len()).ok()?.to_le_bytes());
                out.extend_from_slice(&body);
                p = inner_end;
            }
            0x10 | 0x18 | 0xF8..=0xFB => {
                let len = u32_at(sd, p + 1)? as usize;
                let data_end = p.checked_add(5)?.checked_add(len)?;
                out.extend_from_slice(sd.get(p..data_end)?);
                p = data_end;
            }
            _ => return None,
        }
    }
    (p == end).then_some(out)
}

fn too_big(offset: usize, what: &'static str, n: usize) -> HiveError {
    bad(
        offset,
        what,
        "at most 65535 after the rewrite",
        n.to_string(),
    )
}

fn rebuild_ace(sd: &[u8], ace: &AceInfo, edits: &[Edit]) -> Result<Vec<u8>> {
    let end = ace.off + ace.size;
    let mut out = sd[ace.off..ace.off + 4].to_vec();
    let mut p = ace.off + 4;
    for s in &ace.sids {
        out.extend_from_slice(&sd[p..s.off]);
        out.extend_from_slice(replacement(edits, s.off).unwrap_or(&sd[s.off..s.off + s.len]));
        p = s.off + s.len;
    }
    if let Some((start, app_end, AppData::Conditional(_))) = &ace.app {
        let tokens = rebuild_tokens(sd, start + 4, *app_end, edits).ok_or_else(|| {
            bad(
                *start,
                "conditional expression",
                "a token stream",
                "unparsable tokens",
            )
        })?;
        out.extend_from_slice(&sd[p..start + 4]);
        out.extend_from_slice(&tokens);
        p = *app_end;
    }
    out.extend_from_slice(&sd[p..end]);
    let size = u16::try_from(out.len()).map_err(|_| too_big(ace.off + 2, "ACE size", out.len()))?;
    put_u16(&mut out, 2, size);
    Ok(out)
}

fn rebuild_acl(sd: &[u8], acl: &AclInfo, edits: &[Edit]) -> Result<Vec<u8>> {
    let mut out = sd[acl.off..acl.off + 8].to_vec();
    for ace in &acl.aces {
        out.extend(rebuild_ace(sd, ace, edits)?);
    }
    out.extend_from_slice(&sd[acl.aces_end..acl.off + acl.size]);
    let size = u16::try_from(out.len()).map_err(|_| too_big(acl.off + 2, "ACL size", out.len()))?;
    put_u16(&mut out, 2, size);
    Ok(out)
}

/// Rebuilds the whole descriptor when SIDs change length.
fn rebuild(sd: &[u8], parsed: &Parsed, edits: &[Edit]) -> Result<Vec<u8>> {
    // (header field, old offset, old length, new bytes)
    let mut comps: Vec<(usize, usize, usize, Vec<u8>)> = Vec::new();
    for (field, s) in [(4, &parsed.owner), (8, &parsed.group)] {
        if let Some(s) = s {
            let bytes = replacement(edits, s.off).unwrap_or(&sd[s.off..s.off + s.len]);
            comps.push((field, s.off, s.len, bytes.to_vec()));
        }
    }
    for (field, a) in [(12, &parsed.sacl), (16, &parsed.dacl)] {
        if let AclState::Present(a) = a {
            comps.push((field, a.off, a.size, rebuild_acl(sd, a, edits)?));
        }
    }
    comps.sort_by_key(|c| c.1);
    let mut out = sd[..HEADER_LEN].to_vec();
    let mut pos = HEADER_LEN;
    let mut new_offsets = Vec::new();
    for (field, off, len, bytes) in &comps {
        if *off < pos {
            return Err(bad(
                *field,
                "component layout",
                "owner, group and ACLs that do not overlap (needed to change SID lengths)",
                format!("component at {off:#x} overlaps the previous one ending at {pos:#x}"),
            ));
        }
        out.extend_from_slice(&sd[pos..*off]);
        new_offsets.push((*field, out.len()));
        out.extend_from_slice(bytes);
        pos = off + len;
    }
    out.extend_from_slice(&sd[pos..]);
    for (field, off) in new_offsets {
        let off = u32::try_from(off).map_err(|_| too_big(field, "descriptor size", off))?;
        put_u32(&mut out, field, off);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Viewing

fn guid_string(g: &[u8; 16]) -> String {
    let d1 = u32::from_le_bytes([g[0], g[1], g[2], g[3]]);
    let d2 = u16::from_le_bytes([g[4], g[5]]);
    let d3 = u16::from_le_bytes([g[6], g[7]]);
    format!(
        "{d1:08x}-{d2:04x}-{d3:04x}-{:02x}{:02x}-{}",
        g[8],
        g[9],
        g[10..]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

fn view_acl(a: &AclState) -> Option<Vec<AceView>> {
    match a {
        AclState::Present(a) => Some(
            a.aces
                .iter()
                .map(|e| AceView {
                    ace_type: e.ace_type,
                    flags: e.flags,
                    mask: e.mask,
                    sid: e.sids.first().map(|s| s.sid.clone()),
                    object_type: e.object_type.as_ref().map(guid_string),
                    inherited_object_type: e.inherited_object_type.as_ref().map(guid_string),
                })
                .collect(),
        ),
        _ => None,
    }
}

/// Parses (and validates) a descriptor into a [`DescriptorView`].
pub fn parse_descriptor(sd: &[u8]) -> Result<DescriptorView> {
    let p = parse(sd)?;
    Ok(DescriptorView {
        control: p.control,
        owner: p.owner.map(|s| s.sid),
        group: p.group.map(|s| s.sid),
        dacl: view_acl(&p.dacl),
        sacl: view_acl(&p.sacl),
    })
}

/// SDDL alias of a well-known SID that does not depend on a domain.
fn sid_alias(sid: &Sid) -> Option<&'static str> {
    let subs = sid.sub_authorities();
    Some(match (sid.authority(), subs) {
        (1, [0]) => "WD",
        (3, [0]) => "CO",
        (3, [1]) => "CG",
        (3, [4]) => "OW",
        (5, [2]) => "NU",
        (5, [4]) => "IU",
        (5, [6]) => "SU",
        (5, [7]) => "AN",
        (5, [9]) => "ED",
        (5, [10]) => "PS",
        (5, [11]) => "AU",
        (5, [12]) => "RC",
        (5, [18]) => "SY",
        (5, [19]) => "LS",
        (5, [20]) => "NS",
        (5, [33]) => "WR",
        (5, [84, 0, 0, 0, 0, 0]) => "UD",
        (5, [32, rid]) => match rid {
            544 => "BA",
            545 => "BU",
            546 => "BG",
            547 => "PU",
            548 => "AO",
            549 => "SO",
            550 => "PO",
            551 => "BO",
            552 => "RE",
            554 => "RU",
            555 => "RD",
            556 => "NO",
            558 => "MU",
            559 => "LU",
            568 => "IS",
            569 => "CY",
            573 => "ER",
            574 => "CD",
            575 => "RA",
            576 => "ES",
            577 => "MS",
            578 => "HA",
            579 => "AA",
            580 => "RM",
            _ => return None,
        },
        (15, [2, 1]) => "AC",
        (16, [4096]) => "LW",
        (16, [8192]) => "ME",
        (16, [8448]) => "MP",
        (16, [12288]) => "HI",
        (16, [16384]) => "SI",
        _ => return None,
    })
}

fn sddl_sid(sid: &Sid) -> String {
    sid_alias(sid).map_or_else(|| sid.to_string(), str::to_string)
}

fn sddl_ace_type(t: u8) -> String {
    let s = match t {
        0x00 => "A",
        0x01 => "D",
        0x02 => "AU",
        0x03 => "AL",
        0x05 => "OA",
        0x06 => "OD",
        0x07 => "OU",
        0x08 => "OL",
        0x09 => "XA",
        0x0A => "XD",
        0x0B => "ZA",
        0x0D => "XU",
        0x11 => "ML",
        0x12 => "RA",
        0x13 => "SP",
        0x14 => "TL",
        0x15 => "FL",
        _ => return format!("{t:#04x}"),
    };
    s.to_string()
}

fn sddl_ace_flags(f: u8) -> String {
    let mut s = String::new();
    let mut rest = f;
    for (bit, name) in [
        (0x01, "OI"),
        (0x02, "CI"),
        (0x04, "NP"),
        (0x08, "IO"),
        (0x10, "ID"),
        (0x40, "SA"),
        (0x80, "FA"),
    ] {
        if f & bit != 0 {
            s.push_str(name);
            rest &= !bit;
        }
    }
    if rest != 0 {
        s.push_str(&format!("{rest:#04x}"));
    }
    s
}

fn sddl_rights(mask: u32, mandatory_label: bool) -> String {
    if mandatory_label {
        let mut s = String::new();
        for (bit, name) in [(0x2, "NR"), (0x1, "NW"), (0x4, "NX")] {
            if mask & bit != 0 {
                s.push_str(name);
            }
        }
        if mask & !7 == 0 {
            return s;
        }
        return format!("{mask:#x}");
    }
    for (m, name) in [
        (0x001F_01FF, "FA"),
        (0x0012_0089, "FR"),
        (0x0012_0116, "FW"),
        (0x0012_00A0, "FX"),
        (0x000F_003F, "KA"),
        (0x0002_0019, "KR"),
        (0x0002_0006, "KW"),
    ] {
        if mask == m {
            return name.to_string();
        }
    }
    let letters = [
        (0x1000_0000, "GA"),
        (0x8000_0000, "GR"),
        (0x4000_0000, "GW"),
        (0x2000_0000, "GX"),
        (0x0000_0001, "CC"),
        (0x0000_0002, "DC"),
        (0x0000_0004, "LC"),
        (0x0000_0008, "SW"),
        (0x0000_0010, "RP"),
        (0x0000_0020, "WP"),
        (0x0000_0040, "DT"),
        (0x0000_0080, "LO"),
        (0x0000_0100, "CR"),
        (0x0001_0000, "SD"),
        (0x0002_0000, "RC"),
        (0x0004_0000, "WD"),
        (0x0008_0000, "WO"),
    ];
    let covered: u32 = letters.iter().map(|(b, _)| *b).fold(0, |a, b| a | b);
    if mask == 0 || mask & !covered != 0 {
        return format!("{mask:#x}");
    }
    letters
        .iter()
        .filter(|(b, _)| mask & b != 0)
        .map(|(_, n)| *n)
        .collect()
}

fn sddl_acl(
    out: &mut String,
    tag: &str,
    flags: String,
    present: bool,
    aces: &Option<Vec<AceView>>,
) {
    if !present {
        return;
    }
    out.push_str(tag);
    out.push_str(&flags);
    match aces {
        None => out.push_str("NO_ACCESS_CONTROL"),
        Some(aces) => {
            for a in aces {
                out.push('(');
                out.push_str(&sddl_ace_type(a.ace_type));
                out.push(';');
                out.push_str(&sddl_ace_flags(a.flags));
                out.push(';');
                out.push_str(&sddl_rights(a.mask, a.ace_type == 0x11));
                out.push(';');
                out.push_str(a.object_type.as_deref().unwrap_or(""));
                out.push(';');
                out.push_str(a.inherited_object_type.as_deref().unwrap_or(""));
                out.push(';');
                if let Some(s) = &a.sid {
                    out.push_str(&sddl_sid(s));
                }
                out.push(')');
            }
        }
    }
}

/// Renders a descriptor in SDDL (`O:BAG:SYD:P(A;CI;KA;;;SY)…`), with the
/// standard aliases for well-known SIDs, ACE types, flags and access masks;
/// masks without an alias are shown as `0x…` and domain SIDs numerically.
/// Conditional expressions are not rendered.
pub fn to_sddl(view: &DescriptorView) -> String {
    let mut s = String::new();
    if let Some(o) = &view.owner {
        s.push_str("O:");
        s.push_str(&sddl_sid(o));
    }
    if let Some(g) = &view.group {
        s.push_str("G:");
        s.push_str(&sddl_sid(g));
    }
    let flags = |p: u16, ar: u16, ai: u16| {
        let mut f = String::new();
        for (bit, name) in [(p, "P"), (ar, "AR"), (ai, "AI")] {
            if view.control & bit != 0 {
                f.push_str(name);
            }
        }
        f
    };
    sddl_acl(
        &mut s,
        "D:",
        flags(
            SE_DACL_PROTECTED,
            SE_DACL_AUTO_INHERIT_REQ,
            SE_DACL_AUTO_INHERITED,
        ),
        view.control & SE_DACL_PRESENT != 0,
        &view.dacl,
    );
    sddl_acl(
        &mut s,
        "S:",
        flags(
            SE_SACL_PROTECTED,
            SE_SACL_AUTO_INHERIT_REQ,
            SE_SACL_AUTO_INHERITED,
        ),
        view.control & SE_SACL_PRESENT != 0,
        &view.sacl,
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bytes::i32_at;
    use proptest::prelude::*;

    fn sid(s: &str) -> Sid {
        Sid::parse(s).unwrap()
    }

    fn sidb(s: &str) -> Vec<u8> {
        sid(s).to_bytes()
    }

    const D: &str = "S-1-5-21-3623811015-3361044348-30300820";

    /// An ACE with the given body, padded to a multiple of 4.
    fn ace(t: u8, flags: u8, mut body: Vec<u8>) -> Vec<u8> {
        while body.len() % 4 != 0 {
            body.push(0);
        }
        let mut v = vec![t, flags];
        v.extend(((4 + body.len()) as u16).to_le_bytes());
        v.extend(body);
        v
    }

    fn basic(t: u8, flags: u8, mask: u32, s: &str, app: &[u8]) -> Vec<u8> {
        let mut b = mask.to_le_bytes().to_vec();
        b.extend(sidb(s));
        b.extend_from_slice(app);
        ace(t, flags, b)
    }

    fn object(t: u8, mask: u32, g1: Option<[u8; 16]>, g2: Option<[u8; 16]>, s: &str) -> Vec<u8> {
        let mut b = mask.to_le_bytes().to_vec();
        let of = g1.is_some() as u32 | (g2.is_some() as u32) << 1;
        b.extend(of.to_le_bytes());
        for g in [g1, g2].into_iter().flatten() {
            b.extend(g);
        }
        b.extend(sidb(s));
        ace(t, 0x02, b)
    }

    fn acl(rev: u8, aces: &[Vec<u8>], slack: usize) -> Vec<u8> {
        let body: Vec<u8> = aces.concat();
        let size = 8 + body.len() + slack;
        let mut v = vec![rev, 0];
        v.extend((size as u16).to_le_bytes());
        v.extend((aces.len() as u16).to_le_bytes());
        v.extend([0, 0]);
        v.extend(body);
        v.extend(vec![0xEE; slack]);
        v
    }

    /// Descriptor with components in the order DACL, SACL, owner, group,
    /// a 4-byte gap after the DACL and 4 trailing bytes.
    fn descriptor(
        control: u16,
        owner: Option<&str>,
        group: Option<&str>,
        sacl: Option<Vec<u8>>,
        dacl: Option<Vec<u8>>,
    ) -> Vec<u8> {
        let mut v = vec![1, 0];
        v.extend(control.to_le_bytes());
        v.extend([0; 16]);
        let place = |v: &mut Vec<u8>, field: usize, bytes: Vec<u8>, gap: usize| {
            let off = v.len() as u32;
            v[field..field + 4].copy_from_slice(&off.to_le_bytes());
            v.extend(bytes);
            v.extend(vec![0xCC; gap]);
        };
        if let Some(d) = dacl {
            place(&mut v, 16, d, 4);
        }
        if let Some(s) = sacl {
            place(&mut v, 12, s, 0);
        }
        if let Some(o) = owner {
            place(&mut v, 4, sidb(o), 0);
        }
        if let Some(g) = group {
            place(&mut v, 8, sidb(g), 0);
        }
        v.extend([0xDD; 4]);
        v
    }

    /// `artx` Member_of{SID(a), SID(b)} && Member_of{SID(c)} plus padding.
    fn conditional(a: &str, b: &str, c: &str) -> Vec<u8> {
        let tok = |s: &str| {
            let b = sidb(s);
            let mut v = vec![0x51];
            v.extend((b.len() as u32).to_le_bytes());
            v.extend(b);
            v
        };
        let inner = [tok(a), tok(b)].concat();
        let mut v = b"artx".to_vec();
        v.push(0x50);
        v.extend((inner.len() as u32).to_le_bytes());
        v.extend(inner);
        v.push(0x89);
        // a unicode string literal and an integer, to be skipped
        v.push(0x10);
        v.extend(4u32.to_le_bytes());
        v.extend([b'x', 0, b'y', 0]);
        v.push(0x03);
        v.extend([7, 0, 0, 0, 0, 0, 0, 0, 1, 2]);
        v.push(0x80);
        v.push(0x50);
        let t = tok(c);
        v.extend((t.len() as u32).to_le_bytes());
        v.extend(t);
        v.push(0x89);
        v.push(0xA0);
        v.push(0xA0);
        v
    }

    const G1: [u8; 16] = [
        0x67, 0xE9, 0x36, 0x4D, 0x25, 0xE3, 0xCE, 0x11, 0xBF, 0xC1, 0x08, 0x00, 0x2B, 0xE1, 0x03,
        0x18,
    ];
    const G2: [u8; 16] = [0x11; 16];

    /// A descriptor exercising every place a SID can be.
    fn rich() -> Vec<u8> {
        let d = |rid: &str| format!("{D}-{rid}");
        let mut raw = vec![0x42, 0x43, 0x44];
        raw.extend(sidb(&d("7")));
        raw.push(0x45);
        let dacl = acl(
            4,
            &[
                basic(0, 0x02, 0xF003F, "S-1-5-18", &[]),
                basic(0, 0x02, 0xF003F, &d("1001"), &[]),
                object(5, 0x10, Some(G1), Some(G2), &d("1002")),
                object(6, 0x20, None, Some(G2), "S-1-5-32-544"),
                basic(
                    9,
                    0,
                    0x20019,
                    "S-1-1-0",
                    &conditional(&d("1003"), "S-1-5-32-545", D),
                ),
                basic(1, 0, 0x10000, &d("1004-5"), &[]),
            ],
            8,
        );
        let sacl = acl(
            4,
            &[
                basic(2, 0x40, 0x10000, &d("500"), &[]),
                basic(0x11, 0, 1, "S-1-16-12288", &[]),
                {
                    // callback object audit ACE, no GUIDs, opaque data
                    let mut b = 0x100u32.to_le_bytes().to_vec();
                    b.extend(0u32.to_le_bytes());
                    b.extend(sidb(&d("501")));
                    b.extend(&raw);
                    ace(0x0F, 0x80, b)
                },
                ace(0x30, 0, [vec![9, 9, 9, 9], sidb(D)].concat()),
            ],
            0,
        );
        descriptor(
            0x8014 | 0x1000,
            Some(&d("500")),
            Some(&d("513")),
            Some(sacl),
            Some(dacl),
        )
    }

    fn map_view(v: &DescriptorView, old: &Sid, new: &Sid) -> DescriptorView {
        let m = |s: &Option<Sid>| {
            s.as_ref()
                .map(|s| s.replace_prefix(old, new).unwrap_or(s.clone()))
        };
        let ml = |l: &Option<Vec<AceView>>| {
            l.as_ref().map(|l| {
                l.iter()
                    .map(|a| AceView {
                        sid: m(&a.sid),
                        ..a.clone()
                    })
                    .collect()
            })
        };
        DescriptorView {
            control: v.control,
            owner: m(&v.owner),
            group: m(&v.group),
            dacl: ml(&v.dacl),
            sacl: ml(&v.sacl),
        }
    }

    #[test]
    fn rich_descriptor_is_valid() {
        let sd = rich();
        validate_descriptor(&sd).unwrap();
        let v = parse_descriptor(&sd).unwrap();
        assert_eq!(v.dacl.as_ref().unwrap().len(), 6);
        assert_eq!(v.sacl.as_ref().unwrap().len(), 4);
        let oa = &v.dacl.as_ref().unwrap()[2];
        assert_eq!(
            oa.object_type.as_deref(),
            Some("4d36e967-e325-11ce-bfc1-08002be10318")
        );
        let sddl = to_sddl(&v);
        assert!(
            sddl.starts_with(&format!("O:{D}-500G:{D}-513D:P(A;CI;KA;;;SY)(A;CI;KA;;;{D}-1001)(OA;CI;RP;4d36e967-e325-11ce-bfc1-08002be10318;11111111-1111-1111-1111-111111111111;{D}-1002)")),
            "{sddl}"
        );
        assert!(sddl.contains("(XA;;KR;;;WD)"), "{sddl}");
        assert!(sddl.contains("S:(AU;SA;SD;;;"), "{sddl}");
        assert!(sddl.contains("(ML;;NW;;;HI)"), "{sddl}");
    }

    /// A DACL whose slack (20 bytes) holds a stale copy of a domain SID
    /// with its header overwritten: `15000000` + the three sub-authorities.
    fn stale_slack_descriptor(domain: &str, owner: &str) -> Vec<u8> {
        let mut dacl = acl(2, &[basic(0, 0x02, 0xF003F, "S-1-5-18", &[])], 20);
        let stale = &sidb(domain)[4..];
        let n = dacl.len();
        dacl[n - 20..n - 20 + stale.len()].copy_from_slice(stale);
        descriptor(0x8004, Some(owner), Some("S-1-5-18"), None, Some(dacl))
    }

    #[test]
    fn slack_zeroed_meaning_kept() {
        let sd = rich();
        let (out, n) = zero_descriptor_slack(&sd).unwrap().unwrap();
        assert_eq!(out.len(), sd.len());
        // 8 bytes of DACL slack, the 4-byte gap after the DACL, 4 trailing
        // bytes, SACL slack if any: all were non-zero.
        assert!(n >= 16, "{n}");
        assert_eq!(&out[out.len() - 4..], &[0; 4]);
        assert!(!out.windows(4).any(|w| w == [0xEE; 4] || w == [0xCC; 4]));
        assert_eq!(
            parse_descriptor(&out).unwrap(),
            parse_descriptor(&sd).unwrap()
        );
        // Application data (conditional and opaque) is kept byte for byte.
        let p = parse(&sd).unwrap();
        for a in [&p.dacl, &p.sacl] {
            let AclState::Present(a) = a else { panic!() };
            for ace in &a.aces {
                if let Some((st, en, _)) = &ace.app {
                    assert_eq!(&out[*st..*en], &sd[*st..*en]);
                }
            }
            assert_eq!(&out[a.off..a.aces_end], &sd[a.off..a.aces_end]);
        }
        assert!(zero_descriptor_slack(&out).unwrap().is_none());
    }

    #[test]
    fn domain_rewrite_clears_stale_slack() {
        let old = sid(D);
        let new = sid("S-1-5-21-1-22-4000000000");
        // Owner in the old domain: SIDs rewritten and slack zeroed.
        let sd = stale_slack_descriptor(D, &format!("{D}-1001"));
        let acl_size = u16::from_le_bytes([sd[22], sd[23]]);
        assert_eq!(sid_scan::find_domain_sub_authorities(&sd, &old).len(), 2);
        let r = rewrite_descriptor_domain(&sd, &old, &new).unwrap().unwrap();
        assert_eq!(r.hits.len(), 1);
        assert!(r.slack_bytes >= 16);
        assert!(sid_scan::find_domain_sub_authorities(&r.descriptor, &old).is_empty());
        assert_eq!(r.descriptor.len(), sd.len());
        // AclSize is kept (Windows accepts more than the ACEs use).
        assert_eq!(
            u16::from_le_bytes([r.descriptor[22], r.descriptor[23]]),
            acl_size
        );
        let v = parse_descriptor(&r.descriptor).unwrap();
        assert_eq!(v.owner, Some(new.with_rid(1001)));
        // No SID of the domain, but its sub-authorities in the slack.
        let sd = stale_slack_descriptor(D, "S-1-5-32-544");
        assert!(rewrite_descriptor_sids(&sd, &old, &new).unwrap().is_none());
        let r = rewrite_descriptor_domain(&sd, &old, &new).unwrap().unwrap();
        assert!(r.hits.is_empty());
        assert!(sid_scan::find_domain_sub_authorities(&r.descriptor, &old).is_empty());
        assert_eq!(
            parse_descriptor(&r.descriptor).unwrap(),
            parse_descriptor(&sd).unwrap()
        );
        // Another domain's remnant is none of this rewrite's business.
        let sd = stale_slack_descriptor("S-1-5-21-7-8-9", "S-1-5-32-544");
        assert!(
            rewrite_descriptor_domain(&sd, &old, &new)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn rewrite_same_length() {
        let sd = rich();
        let old = sid(D);
        let new = sid("S-1-5-21-1-22-4000000000");
        let (out, hits) = rewrite_descriptor_sids(&sd, &old, &new).unwrap().unwrap();
        assert_eq!(out.len(), sd.len());
        let locs: Vec<SdLocation> = hits.iter().map(|h| h.location).collect();
        use SdLocation::*;
        let mut expect = vec![
            Owner,
            Group,
            Dacl { ace: 1 },
            Dacl { ace: 2 },
            DaclAppData { ace: 4 },
            DaclAppData { ace: 4 },
            Dacl { ace: 5 },
            Sacl { ace: 0 },
            Sacl { ace: 2 },
            SaclAppData { ace: 2 },
            SaclAppData { ace: 3 },
        ];
        let mut got = locs.clone();
        let key = |l: &SdLocation| format!("{l:?}");
        expect.sort_by_key(key);
        got.sort_by_key(key);
        assert_eq!(got, expect);
        // Every hit now holds the new SID with the old RIDs; all other
        // bytes are unchanged.
        let mut touched = vec![false; sd.len()];
        for h in &hits {
            let (before, n) = Sid::from_bytes(&sd[h.offset..]).unwrap();
            let (after, m) = Sid::from_bytes(&out[h.offset..]).unwrap();
            assert_eq!(n, m);
            assert_eq!(after, before.replace_prefix(&old, &new).unwrap());
            touched[h.offset..h.offset + n]
                .iter_mut()
                .for_each(|t| *t = true);
        }
        for i in 0..sd.len() {
            if !touched[i] {
                assert_eq!(sd[i], out[i], "byte {i:#x} changed");
            }
        }
        assert_eq!(
            parse_descriptor(&out).unwrap(),
            map_view(&parse_descriptor(&sd).unwrap(), &old, &new)
        );
        // Nothing of the old domain is left in binary form.
        assert!(sid_scan::find_domain_sid(&out, &old).is_empty());
        // Back again gives the original.
        let (back, _) = rewrite_descriptor_sids(&out, &new, &old).unwrap().unwrap();
        assert_eq!(back, sd);
        // Nothing to do.
        assert!(rewrite_descriptor_sids(&out, &old, &new).unwrap().is_none());
    }

    #[test]
    fn rewrite_changes_length() {
        let sd = rich();
        let old = sid(D);
        for new in [
            sid("S-1-5-21-9-9"),
            sid("S-1-5-21-1-2-3-4"),
            sid("S-1-5-21"),
        ] {
            let (out, hits) = rewrite_descriptor_sids(&sd, &old, &new).unwrap().unwrap();
            validate_descriptor(&out).unwrap();
            // the opaque ones (SACL entries 2 and 3 app data) stay
            assert_eq!(hits.len(), 9);
            assert_eq!(
                out.len() as isize - sd.len() as isize,
                9 * 4 * (new.sub_authorities().len() as isize - 4)
            );
            assert_eq!(
                parse_descriptor(&out).unwrap(),
                map_view(&parse_descriptor(&sd).unwrap(), &old, &new)
            );
            // The conditional expression SIDs follow.
            let p = parse(&out).unwrap();
            let AclState::Present(dacl) = &p.dacl else {
                panic!()
            };
            let Some((_, _, AppData::Conditional(sids))) = &dacl.aces[4].app else {
                panic!("conditional data not parsed")
            };
            let got: Vec<String> = sids.iter().map(|s| s.sid.to_string()).collect();
            assert_eq!(
                got,
                [
                    format!("{new}-1003"),
                    "S-1-5-32-545".to_string(),
                    new.to_string()
                ]
            );
            // slack and trailing bytes kept
            assert_eq!(&out[out.len() - 4..], &[0xDD; 4]);
            assert_eq!(
                &out[dacl.off + dacl.size - 8..dacl.off + dacl.size],
                &[0xEE; 8]
            );
            // And back again restores the original exactly.
            let (back, _) = rewrite_descriptor_sids(&out, &new, &old).unwrap().unwrap();
            assert_eq!(back, sd);
        }
    }

    #[test]
    fn rewrite_without_matches_and_overlaps() {
        let sd = descriptor(
            0x8004,
            Some("S-1-5-32-544"),
            Some("S-1-5-18"),
            None,
            Some(acl(2, &[basic(0, 2, 0xF003F, "S-1-5-18", &[])], 0)),
        );
        assert!(
            rewrite_descriptor_sids(&sd, &sid(D), &sid("S-1-5-21-1-2-3"))
                .unwrap()
                .is_none()
        );
        // owner and group share one SID: fine in place, refused when sizes change
        let mut sd = descriptor(0x8000, Some(&format!("{D}-500")), None, None, None);
        let o = u32_at(&sd, 4).unwrap();
        sd[8..12].copy_from_slice(&o.to_le_bytes());
        let (out, hits) = rewrite_descriptor_sids(&sd, &sid(D), &sid("S-1-5-21-1-2-3"))
            .unwrap()
            .unwrap();
        assert_eq!(hits.len(), 2);
        assert_eq!(
            parse_descriptor(&out).unwrap().group.unwrap().to_string(),
            "S-1-5-21-1-2-3-500"
        );
        assert!(matches!(
            rewrite_descriptor_sids(&sd, &sid(D), &sid("S-1-5-21-1-2")),
            Err(HiveError::InvalidSecurityDescriptor {
                what: "component layout",
                ..
            })
        ));
    }

    fn what_of(sd: &[u8]) -> &'static str {
        match validate_descriptor(sd) {
            Err(HiveError::InvalidSecurityDescriptor { what, .. }) => what,
            Err(e) => panic!("unexpected {e}"),
            Ok(()) => "valid",
        }
    }

    #[test]
    fn corrupted_descriptors() {
        // A plain Windows-like descriptor: DACL at 0x14, owner, group.
        let dacl = acl(
            2,
            &[
                basic(0, 2, 0xF003F, "S-1-5-32-544", &[]),
                basic(0, 2, 0x20019, "S-1-5-32-545", &[]),
            ],
            0,
        );
        let good = descriptor(
            0x8004,
            Some("S-1-5-32-544"),
            Some(&format!("{D}-513")),
            None,
            Some(dacl),
        );
        assert_eq!(what_of(&good), "valid");
        let owner = u32_at(&good, 4).unwrap() as usize;
        let group = u32_at(&good, 8).unwrap() as usize;
        let d = 0x14;
        let first_ace = d + 8;
        let second_ace = first_ace + 24;
        let set32 =
            |sd: &mut Vec<u8>, at: usize, v: u32| sd[at..at + 4].copy_from_slice(&v.to_le_bytes());
        let set16 =
            |sd: &mut Vec<u8>, at: usize, v: u16| sd[at..at + 2].copy_from_slice(&v.to_le_bytes());
        type Mutation = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("descriptor length", Box::new(|s| s.truncate(19))),
            ("descriptor length", Box::new(|s| s.clear())),
            ("revision", Box::new(|s| s[0] = 2)),
            ("control", Box::new(|s| s[3] &= 0x7F)),
            (
                "owner offset",
                Box::new(move |s| set32(s, 4, owner as u32 + 2)),
            ),
            ("owner offset", Box::new(move |s| set32(s, 4, 8))),
            (
                "owner offset",
                Box::new(move |s| {
                    let l = s.len() as u32;
                    set32(s, 4, l)
                }),
            ),
            ("owner offset", Box::new(move |s| set32(s, 4, u32::MAX - 3))),
            ("owner SID", Box::new(move |s| s[owner] = 2)),
            ("owner SID", Box::new(move |s| s[owner + 1] = 16)),
            ("group SID", Box::new(move |s| s.truncate(group + 20))),
            ("group SID", Box::new(move |s| s[group + 1] = 15)),
            (
                "DACL offset",
                Box::new(move |s| {
                    let l = s.len() as u32 + 4;
                    set32(s, 16, l)
                }),
            ),
            ("DACL offset", Box::new(move |s| set32(s, 16, 0x16))),
            (
                "SACL offset",
                Box::new(move |s| {
                    s[2] |= 0x10;
                    set32(s, 12, 3)
                }),
            ),
            ("ACL revision", Box::new(move |s| s[d] = 1)),
            ("ACL revision", Box::new(move |s| s[d] = 5)),
            ("ACL size", Box::new(move |s| set16(s, d + 2, 6))),
            ("ACL size", Box::new(move |s| set16(s, d + 2, 57))),
            ("ACL size", Box::new(move |s| set16(s, d + 2, 0xFFF0))),
            ("ACE count", Box::new(move |s| set16(s, d + 4, 3))),
            ("ACE size", Box::new(move |s| set16(s, first_ace + 2, 22))),
            ("ACE size", Box::new(move |s| set16(s, first_ace + 2, 2))),
            ("ACE size", Box::new(move |s| set16(s, second_ace + 2, 28))),
            ("ACE size", Box::new(move |s| set16(s, first_ace + 2, 12))),
            ("ACE SID", Box::new(move |s| s[first_ace + 9] = 6)),
            ("ACE SID", Box::new(move |s| s[second_ace + 8] = 0)),
            ("ACL revision", Box::new(move |s| s[first_ace] = 5)),
        ];
        for (i, (what, m)) in cases.iter().enumerate() {
            let mut sd = good.clone();
            m(&mut sd);
            assert_eq!(what_of(&sd), *what, "case {i}");
            assert!(parse_descriptor(&sd).is_err());
            assert!(rewrite_descriptor_sids(&sd, &sid(D), &sid("S-1-5-21-1-2-3")).is_err());
        }
        // Object ACE whose GUID flags claim more than the ACE holds.
        let mut a = object(5, 1, None, None, "S-1-5-18");
        a[8] = 3;
        let sd = descriptor(0x8004, None, None, None, Some(acl(4, &[a], 0)));
        assert!(matches!(what_of(&sd), "object ACE size" | "object ACE SID"));
        // A SID-less DACL entry of an unknown type is fine; so is a NULL DACL
        // and an ACL with no entries.
        let sd = descriptor(
            0x8004,
            None,
            None,
            None,
            Some(acl(2, &[ace(0x40, 0, vec![1, 2, 3, 4])], 4)),
        );
        assert_eq!(what_of(&sd), "valid");
        let sd = descriptor(0x8004, None, None, None, None);
        assert_eq!(what_of(&sd), "valid");
        assert_eq!(
            to_sddl(&parse_descriptor(&sd).unwrap()),
            "D:NO_ACCESS_CONTROL"
        );
        let sd = descriptor(0x8004, None, None, None, Some(acl(2, &[], 0)));
        assert_eq!(to_sddl(&parse_descriptor(&sd).unwrap()), "D:");
    }

    #[test]
    fn sddl_typical() {
        let dacl = acl(
            2,
            &[
                basic(0, 0x02, 0xF003F, "S-1-5-32-544", &[]),
                basic(0, 0x02, 0xF003F, "S-1-5-18", &[]),
                basic(0, 0x12, 0x20019, "S-1-5-32-545", &[]),
                basic(0, 0x0A, 0x10000000, "S-1-3-0", &[]),
                basic(0, 0x02, 0x20019 | 0x100000, "S-1-15-2-1", &[]),
                basic(1, 0x01, 0x3, "S-1-5-5-0-1234", &[]),
            ],
            0,
        );
        let sd = descriptor(
            0x8004 | 0x1000 | 0x400,
            Some("S-1-5-32-544"),
            Some("S-1-5-18"),
            None,
            Some(dacl),
        );
        assert_eq!(
            to_sddl(&parse_descriptor(&sd).unwrap()),
            "O:BAG:SYD:PAI(A;CI;KA;;;BA)(A;CI;KA;;;SY)(A;CIID;KR;;;BU)(A;CIIO;GA;;;CO)(A;CI;0x120019;;;AC)(D;OI;CCDC;;;S-1-5-5-0-1234)"
        );
    }

    /// Descriptors of all sk cells of a hive, found by walking its bins.
    fn sk_descriptors(hive: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut bin = 4096;
        while hive.get(bin..bin + 4) == Some(b"hbin") {
            let size = u32_at(hive, bin + 8).unwrap_or(0) as usize;
            if size < 32 || bin + size > hive.len() {
                break;
            }
            let mut c = bin + 32;
            while c + 4 <= bin + size {
                let cs = i32_at(hive, c).unwrap();
                let len = cs.unsigned_abs() as usize;
                if len < 8 || c + len > bin + size {
                    break;
                }
                if cs < 0 && hive.get(c + 4..c + 6) == Some(b"sk") {
                    let dl = u32_at(hive, c + 20).unwrap() as usize;
                    assert!(24 + dl <= len, "descriptor longer than its cell at {c:#x}");
                    out.push(hive[c + 24..c + 24 + dl].to_vec());
                }
                c += len;
            }
            bin += size;
        }
        out
    }

    fn collect_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                collect_files(&p, out);
            } else if !p.to_string_lossy().to_ascii_lowercase().contains(".log") {
                out.push(p);
            }
        }
    }

    #[test]
    fn real_hive_descriptors() {
        let corpus = reseal_testkit::corpus_dir();
        if !reseal_testkit::require(corpus.is_some(), "the shared corpus") {
            return;
        }
        let root = corpus.unwrap_or_default();
        let mut total = 0;
        let mut rewritten = 0;
        let mut files = Vec::new();
        for dir in [
            "DFIRArtifactMuseum/Windows/Registry",
            "aiowinreg/tests/testdata",
            "EricZimmerman-Registry/Registry.Test/Hives",
        ] {
            collect_files(&root.join(dir), &mut files);
        }
        files.push(root.join("notatin/NTUSER.DAT"));
        files.push(root.join("nt-hive/testdata/testhive"));
        files.sort();
        for p in files {
            let p = p.display().to_string();
            // Deliberately damaged hives are not for this test.
            if p.contains("NoRoot") || p.contains("Bad") || p.contains("NotAHive") {
                continue;
            }
            let Ok(hive) = std::fs::read(&p) else {
                continue;
            };
            if !hive.starts_with(b"regf") {
                continue;
            }
            for sd in sk_descriptors(&hive) {
                total += 1;
                validate_descriptor(&sd).unwrap_or_else(|e| panic!("{p}: {e}"));
                let v = parse_descriptor(&sd).unwrap();
                let sddl = to_sddl(&v);
                assert!(sddl.contains("D:"), "{p}: {sddl}");
                // Rewrite every machine domain that appears.
                let mut domains: Vec<Sid> = [v.owner.clone(), v.group.clone()]
                    .into_iter()
                    .chain(v.dacl.iter().flatten().map(|a| a.sid.clone()))
                    .chain(v.sacl.iter().flatten().map(|a| a.sid.clone()))
                    .flatten()
                    .filter(|s| {
                        s.authority() == 5
                            && s.sub_authorities().len() >= 4
                            && s.sub_authorities()[0] == 21
                    })
                    .map(|s| Sid::new(5, &s.sub_authorities()[..4]).unwrap())
                    .collect();
                domains.dedup();
                for d in domains {
                    let new = Sid::random_machine_domain([7; 12]);
                    let (out, hits) = rewrite_descriptor_sids(&sd, &d, &new).unwrap().unwrap();
                    assert!(!hits.is_empty());
                    assert_eq!(out.len(), sd.len());
                    assert!(sid_scan::find_domain_sid(&out, &d).is_empty());
                    assert_eq!(parse_descriptor(&out).unwrap(), map_view(&v, &d, &new));
                    rewritten += 1;
                }
            }
        }
        eprintln!("{total} real descriptors validated, {rewritten} rewritten");
        if root.exists() {
            assert!(total > 100);
            assert!(rewritten > 10);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        #[test]
        fn mutations_never_panic(edits in proptest::collection::vec((any::<u16>(), any::<u8>()), 1..6), cut in any::<u16>()) {
            let mut sd = rich();
            for (at, v) in edits {
                let i = at as usize % sd.len();
                sd[i] = v;
            }
            if cut % 4 == 0 {
                sd.truncate(cut as usize % (sd.len() + 1));
            }
            let _ = validate_descriptor(&sd);
            if let Ok(Some((out, _))) = zero_descriptor_slack(&sd) {
                prop_assert!(validate_descriptor(&out).is_ok());
            }
            let _ = rewrite_descriptor_domain(&sd, &sid(D), &sid("S-1-5-21-1-2-3"));
            if let Ok(v) = parse_descriptor(&sd) {
                let _ = to_sddl(&v);
            }
            for new in ["S-1-5-21-1-2-3", "S-1-5-21-1"] {
                if let Ok(Some((out, _))) = rewrite_descriptor_sids(&sd, &sid(D), &sid(new)) {
                    prop_assert!(validate_descriptor(&out).is_ok());
                }
            }
        }
    }
}
