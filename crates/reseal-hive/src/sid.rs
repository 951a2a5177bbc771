//! Security identifiers: parsing, formatting, binary form.
//!
//! A SID is revision 1, a 48-bit identifier authority and up to 15 32-bit
//! sub-authorities. Its binary form (MS-DTYP 2.4.2.2) is
//! `revision u8 | count u8 | authority 6 bytes big-endian | count × u32 LE`,
//! 8 + 4·count bytes. Its string form (MS-DTYP 2.4.2.1) is
//! `S-1-<authority>-<sub>-<sub>…`, the authority in decimal when it fits in
//! 32 bits and as `0x` + 12 hexadecimal digits otherwise.
//!
//! The machine ("account domain") SID of a Windows installation is
//! `S-1-5-21-x-y-z`; local accounts are that SID plus one RID.

use std::fmt;
use std::str::FromStr;

use crate::error::{HiveError, Result};

/// The only SID revision in use.
pub const SID_REVISION: u8 = 1;
/// Maximum number of sub-authorities in a SID.
pub const MAX_SUB_AUTHORITIES: usize = 15;
/// Largest identifier authority (48 bits).
pub const MAX_AUTHORITY: u64 = (1 << 48) - 1;

/// A security identifier (revision 1).
///
/// Ordering compares the authority first, then the sub-authorities
/// lexicographically.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Sid {
    authority: u64,
    subs: Vec<u32>,
}

fn sid_err(text: &str, reason: &'static str) -> HiveError {
    HiveError::InvalidSid {
        text: text.to_string(),
        reason,
    }
}

/// Parses an unsigned number: decimal, or hexadecimal after `0x`/`0X`.
/// Returns `None` on empty input, stray characters or a value above `max`.
fn parse_number(s: &str, max: u64) -> std::result::Result<u64, &'static str> {
    let (digits, radix) = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => (h, 16),
        None => (s, 10),
    };
    if digits.is_empty() {
        return Err("empty number");
    }
    let mut v: u64 = 0;
    for c in digits.chars() {
        let d = c.to_digit(radix).ok_or("not a number")? as u64;
        v = v
            .checked_mul(radix as u64)
            .and_then(|v| v.checked_add(d))
            .filter(|v| *v <= max)
            .ok_or("number too large")?;
    }
    Ok(v)
}

impl Sid {
    /// Builds a SID from its authority and sub-authorities.
    ///
    /// Fails when the authority exceeds 48 bits or there are more than 15
    /// sub-authorities.
    pub fn new(authority: u64, subs: &[u32]) -> Result<Sid> {
        if authority > MAX_AUTHORITY {
            return Err(sid_err(
                &format!("authority {authority}"),
                "identifier authority exceeds 48 bits",
            ));
        }
        if subs.len() > MAX_SUB_AUTHORITIES {
            return Err(sid_err(
                &format!("{} sub-authorities", subs.len()),
                "more than 15 sub-authorities",
            ));
        }
        Ok(Sid {
            authority,
            subs: subs.to_vec(),
        })
    }

    /// Parses the string form `S-1-<authority>(-<sub>)*`.
    ///
    /// The leading `S` may be lower case; the authority may be decimal (up
    /// to 2^32-1 by convention, accepted up to 2^48-1) or `0x` followed by
    /// hexadecimal digits; sub-authorities are decimal (a `0x` prefix is
    /// accepted too). Errors are [`HiveError::InvalidSid`].
    pub fn parse(s: &str) -> Result<Sid> {
        let rest = s
            .strip_prefix("S-")
            .or_else(|| s.strip_prefix("s-"))
            .ok_or_else(|| sid_err(s, "does not start with \"S-\""))?;
        let mut parts = rest.split('-');
        let rev = parts.next().unwrap_or("");
        match parse_number(rev, u8::MAX as u64) {
            Ok(1) => {}
            Ok(_) => return Err(sid_err(s, "revision is not 1")),
            Err(r) => return Err(sid_err(s, r)),
        }
        let auth = parts
            .next()
            .ok_or_else(|| sid_err(s, "missing identifier authority"))?;
        let authority = parse_number(auth, MAX_AUTHORITY).map_err(|r| sid_err(s, r))?;
        let mut subs = Vec::new();
        for p in parts {
            if subs.len() == MAX_SUB_AUTHORITIES {
                return Err(sid_err(s, "more than 15 sub-authorities"));
            }
            let v = parse_number(p, u32::MAX as u64).map_err(|r| sid_err(s, r))?;
            subs.push(v as u32);
        }
        Ok(Sid { authority, subs })
    }

    /// Reads a binary SID at the start of `b`; returns it and the number of
    /// bytes it occupies (8 + 4·count). `None` when the revision is not 1,
    /// the count exceeds 15 or `b` is too short.
    pub fn from_bytes(b: &[u8]) -> Option<(Sid, usize)> {
        let (&rev, rest) = b.split_first()?;
        let (&count, _) = rest.split_first()?;
        if rev != SID_REVISION || count as usize > MAX_SUB_AUTHORITIES {
            return None;
        }
        let len = 8 + 4 * count as usize;
        let body = b.get(..len)?;
        let mut authority = 0u64;
        for &x in &body[2..8] {
            authority = (authority << 8) | x as u64;
        }
        let subs = body[8..]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Some((Sid { authority, subs }, len))
    }

    /// Length of the binary form in bytes (8 + 4·count).
    pub fn byte_len(&self) -> usize {
        8 + 4 * self.subs.len()
    }

    /// The binary form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.byte_len());
        v.push(SID_REVISION);
        v.push(self.subs.len() as u8);
        v.extend_from_slice(&self.authority.to_be_bytes()[2..8]);
        for s in &self.subs {
            v.extend_from_slice(&s.to_le_bytes());
        }
        v
    }

    /// The 48-bit identifier authority (5 for NT Authority).
    pub fn authority(&self) -> u64 {
        self.authority
    }

    /// The sub-authorities, in order.
    pub fn sub_authorities(&self) -> &[u32] {
        &self.subs
    }

    /// The last sub-authority (the RID of an account SID), if any.
    pub fn rid(&self) -> Option<u32> {
        self.subs.last().copied()
    }

    /// True for a machine or domain SID `S-1-5-21-a-b-c` exactly (authority
    /// 5, four sub-authorities, the first being 21).
    pub fn is_machine_domain(&self) -> bool {
        self.authority == 5 && self.subs.len() == 4 && self.subs[0] == 21
    }

    /// This SID with `rid` appended. A SID that already has 15
    /// sub-authorities cannot grow; then its last sub-authority is replaced
    /// by `rid` instead.
    pub fn with_rid(&self, rid: u32) -> Sid {
        let mut subs = self.subs.clone();
        if subs.len() == MAX_SUB_AUTHORITIES {
            subs.pop();
        }
        subs.push(rid);
        Sid {
            authority: self.authority,
            subs,
        }
    }

    /// True when this SID is `domain` itself or `domain` plus exactly one
    /// RID.
    pub fn is_in_domain(&self, domain: &Sid) -> bool {
        self.authority == domain.authority
            && (self.subs.len() == domain.subs.len() || self.subs.len() == domain.subs.len() + 1)
            && self.subs.starts_with(&domain.subs)
    }

    /// True when this SID is `prefix` followed by any number (including
    /// zero) of further sub-authorities.
    pub fn starts_with(&self, prefix: &Sid) -> bool {
        self.authority == prefix.authority && self.subs.starts_with(&prefix.subs)
    }

    /// If this SID starts with `old` (see [`Sid::starts_with`]), the same SID
    /// with that prefix replaced by `new` (trailing RIDs kept). `None` when
    /// it does not start with `old` or the result would have more than 15
    /// sub-authorities.
    pub fn replace_prefix(&self, old: &Sid, new: &Sid) -> Option<Sid> {
        if !self.starts_with(old) {
            return None;
        }
        let tail = &self.subs[old.subs.len()..];
        if new.subs.len() + tail.len() > MAX_SUB_AUTHORITIES {
            return None;
        }
        let mut subs = new.subs.clone();
        subs.extend_from_slice(tail);
        Some(Sid {
            authority: new.authority,
            subs,
        })
    }

    /// A new machine domain SID `S-1-5-21-x-y-z`, x, y and z being the
    /// three little-endian 32-bit words of `rng_bytes` (the caller supplies
    /// the randomness).
    pub fn random_machine_domain(rng_bytes: [u8; 12]) -> Sid {
        let w = |i: usize| {
            u32::from_le_bytes([
                rng_bytes[i],
                rng_bytes[i + 1],
                rng_bytes[i + 2],
                rng_bytes[i + 3],
            ])
        };
        Sid {
            authority: 5,
            subs: vec![21, w(0), w(4), w(8)],
        }
    }
}

impl fmt::Display for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.authority > u32::MAX as u64 {
            write!(f, "S-1-0x{:012X}", self.authority)?;
        } else {
            write!(f, "S-1-{}", self.authority)?;
        }
        for s in &self.subs {
            write!(f, "-{s}")?;
        }
        Ok(())
    }
}

impl FromStr for Sid {
    type Err = HiveError;
    fn from_str(s: &str) -> Result<Sid> {
        Sid::parse(s)
    }
}

impl serde::Serialize for Sid {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_format_round_trip() {
        for s in [
            "S-1-5-21-1-2-3",
            "S-1-5-18",
            "S-1-5-32-544",
            "S-1-1-0",
            "S-1-5",
            "S-1-0",
            "S-1-16-12288",
            "S-1-5-21-4294967295-0-1234567890-1001",
            "S-1-15-2-1",
            "S-1-0x123456789ABC-1-2",
            "S-1-4294967295",
            "S-1-5-1-2-3-4-5-6-7-8-9-10-11-12-13-14-15",
        ] {
            let sid = Sid::parse(s).unwrap();
            assert_eq!(sid.to_string(), s);
            let (back, used) = Sid::from_bytes(&sid.to_bytes()).unwrap();
            assert_eq!(back, sid);
            assert_eq!(used, sid.byte_len());
            assert_eq!(s.parse::<Sid>().unwrap(), sid);
        }
    }

    #[test]
    fn parse_variants() {
        let a = Sid::parse("s-1-5-21-10-20-30").unwrap();
        assert_eq!(a.to_string(), "S-1-5-21-10-20-30");
        let h = Sid::parse("S-1-0x000000000005-21-10-20-30").unwrap();
        assert_eq!(h, a);
        assert_eq!(Sid::parse("S-1-0x5-18").unwrap().to_string(), "S-1-5-18");
        // 2^32 and above are shown in hex
        let big = Sid::parse("S-1-4294967296-1").unwrap();
        assert_eq!(big.to_string(), "S-1-0x000100000000-1");
        assert_eq!(Sid::parse("S-1-0x000100000000-1").unwrap(), big);
        assert_eq!(a.authority(), 5);
        assert_eq!(a.sub_authorities(), &[21, 10, 20, 30]);
    }

    #[test]
    fn parse_rejects() {
        for s in [
            "",
            "S",
            "S-",
            "S-1",
            "S-1-",
            "S-2-5-18",
            "S-1-5-",
            "S-1-5--1",
            "S-1-5-18-",
            "X-1-5-18",
            "S-1-5-18 ",
            " S-1-5-18",
            "S-1-5-+18",
            "S-1-5--18",
            "S-1-5-4294967296",
            "S-1-5-99999999999999999999999",
            "S-1-281474976710656-1",
            "S-1-0x1000000000000-1",
            "S-1-0x-1",
            "S-1-5-1x",
            "S-1-5-١",
            "S-1-5-1-2-3-4-5-6-7-8-9-10-11-12-13-14-15-16",
            "garbage",
            "S-1-5-0xZZ",
        ] {
            match Sid::parse(s) {
                Err(HiveError::InvalidSid { text, .. }) => assert_eq!(text, s),
                other => panic!("{s:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn new_limits() {
        assert!(Sid::new(5, &[1; 15]).is_ok());
        assert!(Sid::new(5, &[1; 16]).is_err());
        assert!(Sid::new(MAX_AUTHORITY, &[]).is_ok());
        assert!(Sid::new(MAX_AUTHORITY + 1, &[]).is_err());
    }

    #[test]
    fn binary_form() {
        let sid = Sid::parse("S-1-5-21-1-2-3-1001").unwrap();
        let b = sid.to_bytes();
        assert_eq!(
            b,
            [
                1, 5, 0, 0, 0, 0, 0, 5, 21, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0xE9, 3,
                0, 0
            ]
        );
        // trailing bytes ignored, length reported
        let mut longer = b.clone();
        longer.extend_from_slice(&[9, 9, 9]);
        assert_eq!(Sid::from_bytes(&longer), Some((sid.clone(), 28)));
        // truncated, bad revision, too many sub-authorities, empty
        for n in 0..b.len() {
            assert_eq!(Sid::from_bytes(&b[..n]), None);
        }
        let mut bad = b.clone();
        bad[0] = 2;
        assert_eq!(Sid::from_bytes(&bad), None);
        let mut bad = vec![1, 16, 0, 0, 0, 0, 0, 5];
        bad.extend_from_slice(&[0; 64]);
        assert_eq!(Sid::from_bytes(&bad), None);
        // zero sub-authorities
        assert_eq!(
            Sid::from_bytes(&[1, 0, 0, 0, 0, 0, 0, 5])
                .unwrap()
                .0
                .to_string(),
            "S-1-5"
        );
        // big authority
        let big = Sid::parse("S-1-0xA1B2C3D4E5F6-7").unwrap();
        assert_eq!(&big.to_bytes()[2..8], &[0xA1, 0xB2, 0xC3, 0xD4, 0xE5, 0xF6]);
    }

    #[test]
    fn domain_helpers() {
        let d = Sid::parse("S-1-5-21-1-2-3").unwrap();
        assert!(d.is_machine_domain());
        assert!(
            !Sid::parse("S-1-5-21-1-2-3-500")
                .unwrap()
                .is_machine_domain()
        );
        assert!(!Sid::parse("S-1-5-32-544").unwrap().is_machine_domain());
        assert!(!Sid::parse("S-1-5-22-1-2-3").unwrap().is_machine_domain());
        let admin = d.with_rid(500);
        assert_eq!(admin.to_string(), "S-1-5-21-1-2-3-500");
        assert_eq!(admin.rid(), Some(500));
        assert!(admin.is_in_domain(&d));
        assert!(d.is_in_domain(&d));
        assert!(!admin.with_rid(7).is_in_domain(&d));
        assert!(admin.with_rid(7).starts_with(&d));
        assert!(!Sid::parse("S-1-5-21-1-2-4-500").unwrap().is_in_domain(&d));
        assert!(!Sid::parse("S-1-5-21-1-2").unwrap().is_in_domain(&d));
        assert!(!Sid::parse("S-1-6-21-1-2-3").unwrap().is_in_domain(&d));
        let n = Sid::parse("S-1-5-21-7-8-9").unwrap();
        assert_eq!(
            admin.replace_prefix(&d, &n).unwrap().to_string(),
            "S-1-5-21-7-8-9-500"
        );
        assert_eq!(Sid::parse("S-1-5-18").unwrap().replace_prefix(&d, &n), None);
        let full = Sid::new(5, &[1; 15]).unwrap();
        assert_eq!(full.with_rid(9).sub_authorities().len(), 15);
        assert_eq!(full.with_rid(9).rid(), Some(9));
        let r = Sid::random_machine_domain([1, 0, 0, 0, 2, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
        assert_eq!(r.to_string(), "S-1-5-21-1-2-4294967295");
        assert!(r.is_machine_domain());
    }

    #[test]
    fn serializes_as_string() {
        let d = Sid::parse("S-1-5-21-1-2-3").unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"S-1-5-21-1-2-3\"");
    }
}
