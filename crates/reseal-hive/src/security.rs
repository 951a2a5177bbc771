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

fn hex_bytes(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" ")
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

fn component_sid(sd: &[u8], field: usize, what: &'static str) -> Result<Option<SidAt>> {
    let off = u32_at(sd, field).unwrap_or(0) as usize;
    if off == 0 {
        return Ok(None);
    }
    check_offset(sd, off, field, what, 8)?;
    sid_in(sd, off, sd.len(), what).map(Some)
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
        mask: if size >= 8 { u32_at(sd, p + 4).unwrap_or(0) } else { 0 },
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
            return Err(bad(p + 8, "compound ACE type", "1 (impersonation)", ct.to_string()));
        }
        let server = sid_in(sd, p + 12, end, "compound ACE server SID")?;
        let client = sid_in(sd, server.off + server.len, end, "compound ACE client SID")?;
        sid_end = client.off + client.len;
        ace.sids.push(server);
        ace.sids.push(client);
    } else {
        // Unknown type: opaque.
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
        return Err(bad(off + 2, "ACL size", "an even number, at least 8", size.to_string()));
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
    let owner = component_sid(sd, 4, "owner offset")?;
    let group = component_sid(sd, 8, "group offset")?;
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

fn acl_edits(
    sd: &[u8],
    acl: &AclInfo,
    dacl: bool,
    old: &Sid,
    new: &Sid,
    out: &mut Vec<Edit>,
) {
    for (i, ace) in acl.aces.iter().enumerate() {
        let i = i as u16;
        let (loc, app_loc) = if dacl {
            (SdLocation::Dacl { ace: i }, SdLocation::DaclAppData { ace: i })
        } else {
            (SdLocation::Sacl { ace: i }, SdLocation::SaclAppData { ace: i })
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

fn push_edit(s: &SidAt, location: SdLocation, raw: bool, old: &Sid, new: &Sid, out: &mut Vec<Edit>) {
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
    for (s, loc) in [(&parsed.owner, SdLocation::Owner), (&parsed.group, SdLocation::Group)] {
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

fn replacement<'a>(edits: &'a [Edit], off: usize) -> Option<&'a [u8]> {
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
    bad(offset, what, "at most 65535 after the rewrite", n.to_string())
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
            bad(*start, "conditional expression", "a token stream", "unparsable tokens")
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
        g[10..].iter().map(|b| format!("{b:02x}")).collect::<String>()
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

fn sddl_acl(out: &mut String, tag: &str, flags: String, present: bool, aces: &Option<Vec<AceView>>) {
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
        flags(SE_DACL_PROTECTED, SE_DACL_AUTO_INHERIT_REQ, SE_DACL_AUTO_INHERITED),
        view.control & SE_DACL_PRESENT != 0,
        &view.dacl,
    );
    sddl_acl(
        &mut s,
        "S:",
        flags(SE_SACL_PROTECTED, SE_SACL_AUTO_INHERIT_REQ, SE_SACL_AUTO_INHERITED),
        view.control & SE_SACL_PRESENT != 0,
        &view.sacl,
    );
    s
}
