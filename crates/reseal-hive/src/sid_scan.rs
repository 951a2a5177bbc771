//! Finding and replacing a domain SID inside arbitrary data and names.
//!
//! A machine SID `S-1-5-21-A-B-C` shows up in value data in three shapes:
//! as a binary SID (possibly an account SID `…-RID`, at any byte offset
//! because it is often embedded in a larger record), as a UTF-16LE string
//! and, more rarely, as an ASCII/UTF-8 string. This module finds all three
//! with a rare-byte prefilter (a vectorisable byte search) followed by an
//! exact comparison, so that it can run over every value of a large hive.
//!
//! Matching rules:
//! * binary: revision 1, a sub-authority count at least the old SID's (and
//!   at most 15), the old authority and the old sub-authorities as a
//!   prefix, and the whole SID (8 + 4·count bytes) inside the data;
//! * strings: `S-1-<authority>-<sub>…` of the old SID, the `S` in either
//!   case, not preceded by an ASCII letter or digit (unless that is the end
//!   of a URL escape `%HH`, as in `…%5CS-1-5-21-…` in an encoded path) and
//!   not followed by a decimal digit (so `…-C5` is another SID, while
//!   `…-C-1001`, `…-C-1001-MergedResources` and `…-C\0` match). Such a
//!   string may be the whole text or part of a longer one
//!   ([`is_embedded`] tells which).
//!
//! After a rewrite, [`find_domain_sub_authorities`] looks for what is left
//! in any shape: the bytes of the domain's own sub-authorities (`A`, `B`,
//! `C` of `S-1-5-21-A-B-C`, 12 bytes) wherever they are, which also finds
//! SIDs whose header was overwritten (the `15000000`+A+B+C form left in the
//! slack of an ACL).

use serde::Serialize;

use crate::sid::{MAX_SUB_AUTHORITIES, Sid};

/// Which encoding of a SID was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum SidForm {
    /// Binary SID (MS-DTYP 2.4.2.2).
    Binary,
    /// UTF-16LE string `S-1-…`.
    Utf16,
    /// ASCII/UTF-8 string `S-1-…`.
    Ascii,
}

/// One occurrence of the domain SID in a blob.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct BlobHit {
    /// Byte offset in the searched data of the SID's first byte (the
    /// revision byte of a binary SID, the `S` of a string).
    pub offset: usize,
    /// Its encoding.
    pub form: SidForm,
}

/// An occurrence plus what replacing it needs.
#[derive(Clone, Debug)]
struct Match {
    hit: BlobHit,
    /// End (exclusive) of the bytes that encode the old domain part.
    end: usize,
    /// For binary hits: the sub-authority count found in the data.
    count: u8,
}

/// How common a byte value is in registry data (lower is rarer); used to
/// pick the bytes of a needle that the prefilter searches for.
fn commonness(b: u8) -> u8 {
    match b {
        0x00 => 255,
        0xFF => 200,
        0x01..=0x1F => 120,
        b' ' | b'a'..=b'z' | b'A'..=b'Z' => 100,
        // '0' is the most frequent digit, '9' the least
        b'0'..=b'9' => 90 - (b - b'0'),
        0x21..=0x7F => 80,
        _ => 10,
    }
}

/// A byte string with two precomputed rare bytes for the prefilter.
struct Needle {
    bytes: Vec<u8>,
    /// Index of the rarest byte.
    i1: usize,
    /// Index of the rarest byte with another value (or `i1`).
    i2: usize,
}

/// Width of one prefilter block.
const BLOCK: usize = 32;

impl Needle {
    fn new(bytes: Vec<u8>) -> Needle {
        let rarest = |skip: Option<u8>| {
            let mut best: Option<usize> = None;
            for (i, &b) in bytes.iter().enumerate() {
                if Some(b) == skip {
                    continue;
                }
                if best.is_none_or(|j| commonness(b) < commonness(bytes[j])) {
                    best = Some(i);
                }
            }
            best
        };
        let i1 = rarest(None).unwrap_or(0);
        let i2 = rarest(bytes.get(i1).copied()).unwrap_or(i1);
        Needle { bytes, i1, i2 }
    }

    /// Calls `f` with the start of every (possibly overlapping) occurrence;
    /// `f` returns where the search resumes (at least start + 1).
    fn for_each(&self, hay: &[u8], mut f: impl FnMut(usize) -> usize) {
        let n = self.bytes.len();
        if n == 0 || hay.len() < n {
            return;
        }
        // Only positions where the whole needle fits are candidates.
        let last_start = hay.len() - n;
        let mut from = 0;
        while let Some(start) = self.candidate(hay, from, last_start) {
            if hay[start..start + n] == self.bytes[..] {
                from = f(start).max(start + 1);
            } else {
                from = start + 1;
            }
        }
    }

    /// First start in `from..=last` where both rare bytes are in place.
    ///
    /// Blocks of 32 starts are tested with a branch-free OR of byte
    /// comparisons, which the compiler turns into vector instructions; only
    /// a block that contains a candidate is looked at one by one.
    fn candidate(&self, hay: &[u8], from: usize, last: usize) -> Option<usize> {
        let (a, b) = (self.bytes[self.i1], self.bytes[self.i2]);
        let (ia, ib) = (self.i1, self.i2);
        let mut s = from;
        while s + BLOCK <= last + 1 {
            let wa = &hay[s + ia..s + ia + BLOCK];
            let wb = &hay[s + ib..s + ib + BLOCK];
            let any = wa
                .iter()
                .zip(wb)
                .fold(false, |acc, (&x, &y)| acc | ((x == a) & (y == b)));
            if any {
                let j = wa.iter().zip(wb).position(|(&x, &y)| x == a && y == b);
                return j.map(|j| s + j);
            }
            s += BLOCK;
        }
        (s..=last).find(|&s| hay[s + ia] == a && hay[s + ib] == b)
    }
}

/// Whether the characters before a SID's `S` join it to a preceding word
/// or number, which makes it not a SID: `before[0]` is the character right
/// before the `S`, `before[1]` and `before[2]` the two before that (`None`
/// past the start). An ASCII letter or digit joins, unless it ends a URL
/// escape `%HH` (which stands for a separator such as `%5C`, `\`).
fn joins_before(before: [Option<u32>; 3]) -> bool {
    let is = |c: Option<u32>, f: fn(&u8) -> bool| c.is_some_and(|c| c < 0x80 && f(&(c as u8)));
    if !is(before[0], u8::is_ascii_alphanumeric) {
        return false;
    }
    let escape = before[2] == Some(u32::from(b'%'))
        && is(before[1], u8::is_ascii_hexdigit)
        && is(before[0], u8::is_ascii_hexdigit);
    !escape
}

/// Precomputed needles for one old domain SID.
struct Searcher {
    sub_count: usize,
    /// Authority (6 bytes) + sub-authorities of the old SID.
    binary: Needle,
    /// `-1-<authority>-…` (the string form without the leading `S`).
    ascii: Needle,
    /// The same in UTF-16LE.
    utf16: Needle,
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

fn string_tail(sid: &Sid) -> String {
    // Display always starts with "S"; keep the rest.
    let s = sid.to_string();
    s[1..].to_string()
}

impl Searcher {
    fn new(old: &Sid) -> Searcher {
        let bin = old.to_bytes();
        let tail = string_tail(old);
        Searcher {
            sub_count: old.sub_authorities().len(),
            binary: Needle::new(bin[2..].to_vec()),
            ascii: Needle::new(tail.as_bytes().to_vec()),
            utf16: Needle::new(utf16le(&tail)),
        }
    }

    fn find(&self, data: &[u8]) -> Vec<Match> {
        let mut out = Vec::new();
        // Binary: the needle starts at the authority, 2 bytes into the SID.
        let n = self.sub_count;
        self.binary.for_each(data, |s| {
            if s < 2 || data[s - 2] != 1 {
                return s + 1;
            }
            let count = data[s - 1] as usize;
            let start = s - 2;
            if count < n || count > MAX_SUB_AUTHORITIES || start + 8 + 4 * count > data.len() {
                return s + 1;
            }
            out.push(Match {
                hit: BlobHit {
                    offset: start,
                    form: SidForm::Binary,
                },
                end: start + 8 + 4 * n,
                count: count as u8,
            });
            start + 8 + 4 * n
        });
        let len = self.ascii.bytes.len();
        self.ascii.for_each(data, |s| {
            if s < 1 || !matches!(data[s - 1], b'S' | b's') {
                return s + 1;
            }
            // `S` at s - 1; the three bytes before it.
            let at = |k: usize| {
                s.checked_sub(k)
                    .and_then(|i| data.get(i))
                    .map(|&b| u32::from(b))
            };
            if joins_before([at(2), at(3), at(4)]) {
                return s + 1;
            }
            if data.get(s + len).is_some_and(|c| c.is_ascii_digit()) {
                return s + 1;
            }
            out.push(Match {
                hit: BlobHit {
                    offset: s - 1,
                    form: SidForm::Ascii,
                },
                end: s + len,
                count: 0,
            });
            s + len
        });
        let len = self.utf16.bytes.len();
        self.utf16.for_each(data, |s| {
            let unit = |i: usize| -> Option<u16> {
                Some(u16::from_le_bytes([*data.get(i)?, *data.get(i + 1)?]))
            };
            let is_ascii = |u: u16, f: fn(&u8) -> bool| u < 0x80 && f(&(u as u8));
            if s < 2 || !matches!(unit(s - 2), Some(0x53 | 0x73)) {
                return s + 1;
            }
            // `S` at s - 2; the three units before it.
            let at = |k: usize| s.checked_sub(k).and_then(unit).map(u32::from);
            if joins_before([at(4), at(6), at(8)]) {
                return s + 1;
            }
            if unit(s + len).is_some_and(|u| is_ascii(u, u8::is_ascii_digit)) {
                return s + 1;
            }
            out.push(Match {
                hit: BlobHit {
                    offset: s - 2,
                    form: SidForm::Utf16,
                },
                end: s + len,
                count: 0,
            });
            s + len
        });
        out.sort_by_key(|m| m.hit.offset);
        // Drop anything overlapping an earlier match (cannot happen with
        // real SIDs, but keeps replacement well defined on any input).
        let mut end = 0;
        out.retain(|m| {
            let keep = m.hit.offset >= end;
            if keep {
                end = m.end;
            }
            keep
        });
        out
    }
}

/// Finds every occurrence of `old_domain` — the SID itself or the SID
/// followed by more sub-authorities (RIDs) — in `data`, in binary form at
/// any offset and in UTF-16LE and ASCII string forms (see the module
/// documentation for the exact rules). Hits are sorted by offset and never
/// overlap.
pub fn find_domain_sid(data: &[u8], old_domain: &Sid) -> Vec<BlobHit> {
    Searcher::new(old_domain)
        .find(data)
        .into_iter()
        .map(|m| m.hit)
        .collect()
}

/// Replaces every occurrence found by [`find_domain_sid`] with `new_domain`,
/// keeping trailing RIDs, the case of the leading `S` and everything else.
///
/// String forms change length when the decimal numbers do; binary SIDs
/// change length only when the two SIDs have different sub-authority
/// counts (never for machine SIDs). A binary SID whose count would exceed 15
/// after the replacement is left alone. Returns `None` when nothing was
/// replaced; otherwise the new data and the hits, with offsets in the
/// *original* data.
pub fn replace_domain_sid(
    data: &[u8],
    old_domain: &Sid,
    new_domain: &Sid,
) -> Option<(Vec<u8>, Vec<BlobHit>)> {
    DomainSidReplacer::new(old_domain, new_domain).replace(data)
}

/// Replaces the string form of `old_domain` (followed or not by RIDs) in a
/// key or value name given as UTF-16 code units, with the same boundary
/// rules as [`find_domain_sid`]. `None` when the name does not contain it.
pub fn replace_domain_sid_in_units(
    name: &[u16],
    old_domain: &Sid,
    new_domain: &Sid,
) -> Option<Vec<u16>> {
    DomainSidReplacer::new(old_domain, new_domain).replace_in_units(name)
}

/// Whether a string-form hit of [`find_domain_sid`] is part of a longer
/// text rather than a whole string of its own: the whole string runs from
/// the start of `data` or a NUL to the end or a NUL (in the hit's encoding)
/// and is a SID (the domain, or the domain and RIDs). Binary hits are never
/// embedded.
pub fn is_embedded(data: &[u8], hit: &BlobHit) -> bool {
    let text: Option<String> = match hit.form {
        SidForm::Binary => return false,
        SidForm::Ascii => {
            let start = hit.offset;
            if start > 0 && data.get(start - 1) != Some(&0) {
                return true;
            }
            let rest = data.get(start..).unwrap_or(&[]);
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            std::str::from_utf8(&rest[..end]).ok().map(str::to_string)
        }
        SidForm::Utf16 => {
            let start = hit.offset;
            if start >= 2 && data.get(start - 2..start) != Some(&[0, 0][..]) {
                return true;
            }
            let units: Vec<u16> = data
                .get(start..)
                .unwrap_or(&[])
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&u| u != 0)
                .collect();
            String::from_utf16(&units).ok()
        }
    };
    text.is_none_or(|t| Sid::parse(&t).is_err())
}

/// Whether a key or value name that holds the domain SID holds more than a
/// SID (see [`is_embedded`]): `S-1-5-21-A-B-C-1001` is a whole name,
/// `S-1-5-21-A-B-C-1001_Classes` or `…%5CS-1-5-21-A-B-C-1001-x.pri` are not.
pub fn name_is_embedded(name: &[u16]) -> bool {
    !String::from_utf16(name).is_ok_and(|t| Sid::parse(&t).is_ok())
}

/// Which remnant of a domain's sub-authorities was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RemnantForm {
    /// The domain's sub-authorities after the leading 21 (`A`, `B`, `C`:
    /// 12 bytes, little-endian) without the `21` before them.
    SubAuthorities,
    /// The same preceded by the 32-bit `21` (`15000000`+A+B+C, 16 bytes):
    /// a SID of the domain, possibly with its header overwritten.
    WithLeading21,
}

/// One remnant found by [`find_domain_sub_authorities`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Remnant {
    /// Byte offset of the first byte of the remnant (of the `15000000` for
    /// [`RemnantForm::WithLeading21`]).
    pub offset: usize,
    /// Its shape.
    pub form: RemnantForm,
}

/// The bytes that identify `domain` in binary form wherever they appear:
/// for a machine domain `S-1-5-21-A-B-C` the sub-authorities A, B and C
/// (12 bytes, little-endian; the leading 21 is shared by every such
/// domain), for any other SID all of its sub-authorities. Empty for a SID
/// without any.
pub fn sub_authority_bytes(domain: &Sid) -> Vec<u8> {
    let subs = domain.sub_authorities();
    let unique = match subs {
        [21, rest @ ..] if !rest.is_empty() => rest,
        _ => subs,
    };
    unique.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Finds every occurrence of the domain's identifying sub-authority bytes
/// ([`sub_authority_bytes`]) in `data`, at any offset and whatever precedes
/// them: whole binary SIDs of the domain, and also pieces of them that no
/// SID parser sees (a SID whose revision and count bytes were overwritten,
/// stale bytes in the slack of an ACL). The check after a rewrite uses it:
/// nothing of the old domain may be left in any shape.
pub fn find_domain_sub_authorities(data: &[u8], domain: &Sid) -> Vec<Remnant> {
    let bytes = sub_authority_bytes(domain);
    if bytes.is_empty() {
        return Vec::new();
    }
    let lead = domain.sub_authorities().first() == Some(&21) && domain.sub_authorities().len() > 1;
    let mut out = Vec::new();
    Needle::new(bytes).for_each(data, |s| {
        let with21 = lead && s >= 4 && data.get(s - 4..s) == Some(&21u32.to_le_bytes()[..]);
        out.push(if with21 {
            Remnant {
                offset: s - 4,
                form: RemnantForm::WithLeading21,
            }
        } else {
            Remnant {
                offset: s,
                form: RemnantForm::SubAuthorities,
            }
        });
        s + 1
    });
    out
}

/// A prepared search-and-replace of one domain SID by another, for running
/// over many blobs and names (the needles are built once).
pub struct DomainSidReplacer {
    searcher: Searcher,
    old_n: usize,
    new_n: usize,
    new_bin: Vec<u8>,
    new_ascii: Vec<u8>,
    new_utf16: Vec<u8>,
    old_units: Vec<u16>,
    new_units: Vec<u16>,
}

impl DomainSidReplacer {
    /// Prepares replacing `old_domain` by `new_domain`.
    pub fn new(old_domain: &Sid, new_domain: &Sid) -> DomainSidReplacer {
        let new_tail = string_tail(new_domain);
        DomainSidReplacer {
            searcher: Searcher::new(old_domain),
            old_n: old_domain.sub_authorities().len(),
            new_n: new_domain.sub_authorities().len(),
            new_bin: new_domain.to_bytes(),
            new_ascii: new_tail.as_bytes().to_vec(),
            new_utf16: utf16le(&new_tail),
            old_units: string_tail(old_domain).encode_utf16().collect(),
            new_units: new_tail.encode_utf16().collect(),
        }
    }

    /// Like [`find_domain_sid`].
    pub fn find(&self, data: &[u8]) -> Vec<BlobHit> {
        self.searcher
            .find(data)
            .into_iter()
            .map(|m| m.hit)
            .collect()
    }

    /// Like [`replace_domain_sid`].
    pub fn replace(&self, data: &[u8]) -> Option<(Vec<u8>, Vec<BlobHit>)> {
        let matches = self.searcher.find(data);
        if matches.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(data.len() + 16 * matches.len());
        let mut hits = Vec::with_capacity(matches.len());
        let mut pos = 0;
        for m in matches {
            let start = m.hit.offset;
            match m.hit.form {
                SidForm::Binary => {
                    let count = m.count as usize - self.old_n + self.new_n;
                    if count > MAX_SUB_AUTHORITIES {
                        continue;
                    }
                    out.extend_from_slice(&data[pos..start]);
                    out.push(1);
                    out.push(count as u8);
                    out.extend_from_slice(&self.new_bin[2..]);
                }
                SidForm::Ascii => {
                    // Keep the original 'S' or 's'.
                    out.extend_from_slice(&data[pos..start + 1]);
                    out.extend_from_slice(&self.new_ascii);
                }
                SidForm::Utf16 => {
                    out.extend_from_slice(&data[pos..start + 2]);
                    out.extend_from_slice(&self.new_utf16);
                }
            }
            pos = m.end;
            hits.push(m.hit);
        }
        if hits.is_empty() {
            return None;
        }
        out.extend_from_slice(&data[pos..]);
        Some((out, hits))
    }

    /// Like [`replace_domain_sid_in_units`].
    pub fn replace_in_units(&self, name: &[u16]) -> Option<Vec<u16>> {
        let needle = &self.old_units;
        let repl = &self.new_units;
        let is_digit = |u: u16| u < 0x80 && (u as u8).is_ascii_digit();
        let mut out: Option<Vec<u16>> = None;
        let mut copied = 0;
        let mut i = 1;
        while i + needle.len() <= name.len() {
            let ok = matches!(name[i - 1], 0x53 | 0x73)
                && name[i..i + needle.len()] == needle[..]
                && !joins_before([2, 3, 4].map(|k| {
                    i.checked_sub(k)
                        .and_then(|j| name.get(j))
                        .map(|&u| u32::from(u))
                }))
                && !name.get(i + needle.len()).is_some_and(|&u| is_digit(u));
            if ok {
                let o = out.get_or_insert_with(|| Vec::with_capacity(name.len() + 8));
                o.extend_from_slice(&name[copied..i]);
                o.extend_from_slice(repl);
                i += needle.len();
                copied = i;
            } else {
                i += 1;
            }
        }
        let mut o = out?;
        o.extend_from_slice(&name[copied..]);
        Some(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sid(s: &str) -> Sid {
        Sid::parse(s).unwrap()
    }

    fn old() -> Sid {
        sid("S-1-5-21-3623811015-3361044348-30300820")
    }

    fn new_long() -> Sid {
        sid("S-1-5-21-4000000000-4000000001-4000000002")
    }

    fn new_short() -> Sid {
        sid("S-1-5-21-1-2-3")
    }

    fn u16s(s: &str) -> Vec<u8> {
        utf16le(s)
    }

    #[test]
    fn prefilter_matches_naive() {
        let hay: Vec<u8> = (0..300u32).map(|i| (i * 7 % 13) as u8).collect();
        for needle in [
            vec![0u8],
            vec![5, 12],
            vec![7, 1, 8],
            vec![3; 4],
            vec![1, 8, 2, 9, 3],
        ] {
            let nd = Needle::new(needle.clone());
            let mut got = Vec::new();
            nd.for_each(&hay, |s| {
                got.push(s);
                s + 1
            });
            let naive: Vec<usize> = hay
                .windows(needle.len())
                .enumerate()
                .filter(|(_, w)| *w == &needle[..])
                .map(|(i, _)| i)
                .collect();
            assert_eq!(got, naive, "{needle:?}");
            for len in 0..40 {
                let mut got = Vec::new();
                nd.for_each(&hay[..len], |s| {
                    got.push(s);
                    s + 1
                });
                assert!(got.iter().all(|&s| s + needle.len() <= len));
            }
        }
    }

    #[test]
    fn binary_hits_at_odd_offsets() {
        let d = old();
        for off in [0usize, 1, 3, 5, 7, 13] {
            let mut data = vec![0xAAu8; off];
            data.extend_from_slice(&d.with_rid(1001).to_bytes());
            data.extend_from_slice(&[0x11; 3]);
            data.extend_from_slice(&d.to_bytes());
            let hits = find_domain_sid(&data, &d);
            assert_eq!(
                hits,
                vec![
                    BlobHit {
                        offset: off,
                        form: SidForm::Binary
                    },
                    BlobHit {
                        offset: off + 31,
                        form: SidForm::Binary
                    }
                ]
            );
            let (out, h2) = replace_domain_sid(&data, &d, &new_short()).unwrap();
            assert_eq!(h2, hits);
            assert_eq!(out.len(), data.len());
            assert_eq!(&out[..off], &data[..off]);
            assert_eq!(
                Sid::from_bytes(&out[off..]).unwrap().0,
                new_short().with_rid(1001)
            );
            assert_eq!(Sid::from_bytes(&out[off + 31..]).unwrap().0, new_short());
            assert!(find_domain_sid(&out, &d).is_empty());
        }
    }

    #[test]
    fn binary_rejects() {
        let d = old();
        // truncated account SID (count says 5, only the domain part present)
        let mut b = d.with_rid(500).to_bytes();
        b.truncate(24);
        assert!(find_domain_sid(&b, &d).is_empty());
        // wrong revision
        let mut b = d.to_bytes();
        b[0] = 2;
        assert!(find_domain_sid(&b, &d).is_empty());
        // count smaller than the domain's
        let mut b = d.to_bytes();
        b[1] = 3;
        b.extend_from_slice(&[0; 4]);
        assert!(find_domain_sid(&b, &d).is_empty());
        // other domain, other authority, well-known SIDs
        let mut data = sid("S-1-5-21-3623811015-3361044348-30300821").to_bytes();
        data.extend(sid("S-1-6-21-3623811015-3361044348-30300820").to_bytes());
        data.extend(sid("S-1-5-32-544").to_bytes());
        data.extend(sid("S-1-5-18").to_bytes());
        data.extend(sid("S-1-5-21-3623811015-3361044348").to_bytes());
        assert!(find_domain_sid(&data, &d).is_empty());
        assert!(replace_domain_sid(&data, &d, &new_long()).is_none());
    }

    #[test]
    fn string_hits() {
        let d = old();
        let s = "x=S-1-5-21-3623811015-3361044348-30300820-1001;s-1-5-21-3623811015-3361044348-30300820\0";
        let hits = find_domain_sid(s.as_bytes(), &d);
        assert_eq!(
            hits,
            vec![
                BlobHit {
                    offset: 2,
                    form: SidForm::Ascii
                },
                BlobHit {
                    offset: 47,
                    form: SidForm::Ascii
                }
            ]
        );
        let mut data = vec![7u8]; // odd start
        data.extend(u16s(s));
        let hits = find_domain_sid(&data, &d);
        assert_eq!(
            hits,
            vec![
                BlobHit {
                    offset: 5,
                    form: SidForm::Utf16
                },
                BlobHit {
                    offset: 95,
                    form: SidForm::Utf16
                }
            ]
        );
    }

    #[test]
    fn string_boundaries() {
        let d = old();
        let base = "S-1-5-21-3623811015-3361044348-30300820";
        for (text, expect) in [
            (base.to_string(), true),
            (format!("{base}-500"), true),
            (format!("\\{base}\\x"), true),
            (format!("{base}5"), false),
            (format!("{base}0-500"), false),
            (format!("A{base}"), false),
            (format!("9{base}"), false),
            (format!("_{base}"), true),
            (format!("{base}x"), true),
            (
                format!("C:%5CProgram Files%5Cx%5C{base}-1001-MergedResources-1.pri"),
                true,
            ),
            (format!("%5c{base}"), true),
            (format!("%2F{base}-500"), true),
            (format!("x5C{base}"), false),
            (format!("%GC{base}"), false),
            (format!("%5{base}"), false),
            (format!("5C{base}"), false),
            ("S-1-5-21-3623811015-3361044348-3030082".to_string(), false),
            ("S-1-5-21-3623811015-3361044348-30300821".to_string(), false),
            (
                "S-1-5-21-13623811015-3361044348-30300820".to_string(),
                false,
            ),
            ("S-1-5-32-544".to_string(), false),
            ("S-1-5-18".to_string(), false),
            ("S-1-5-21-3623811015-3361044348".to_string(), false),
            ("-1-5-21-3623811015-3361044348-30300820".to_string(), false),
            ("X-1-5-21-3623811015-3361044348-30300820".to_string(), false),
        ] {
            let a = find_domain_sid(text.as_bytes(), &d);
            assert_eq!(a.len(), expect as usize, "ascii {text:?}");
            let u = find_domain_sid(&u16s(&text), &d);
            assert_eq!(u.len(), expect as usize, "utf16 {text:?}");
            let units: Vec<u16> = text.encode_utf16().collect();
            assert_eq!(
                replace_domain_sid_in_units(&units, &d, &new_short()).is_some(),
                expect,
                "units {text:?}"
            );
        }
    }

    #[test]
    fn replace_changes_string_lengths() {
        let d = old();
        let text = "p=S-1-5-21-3623811015-3361044348-30300820-1001|s-1-5-21-3623811015-3361044348-30300820";
        for new in [new_short(), new_long()] {
            let nt = new.to_string();
            let expect = format!("p={nt}-1001|s{}", &nt[1..]);
            let (out, hits) = replace_domain_sid(text.as_bytes(), &d, &new).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), expect);
            assert_eq!(hits.len(), 2);
            let (out, hits) = replace_domain_sid(&u16s(text), &d, &new).unwrap();
            assert_eq!(out, u16s(&expect));
            assert_eq!(hits.len(), 2);
            let units: Vec<u16> = text.encode_utf16().collect();
            let out = replace_domain_sid_in_units(&units, &d, &new).unwrap();
            assert_eq!(String::from_utf16(&out).unwrap(), expect);
        }
        let units: Vec<u16> = "S-1-5-18".encode_utf16().collect();
        assert_eq!(replace_domain_sid_in_units(&units, &d, &new_short()), None);
        assert_eq!(replace_domain_sid_in_units(&[], &d, &new_short()), None);
    }

    #[test]
    fn mixed_forms_and_binary_length_change() {
        let d = old();
        let mut data = b"S-1-5-21-3623811015-3361044348-30300820-500 ".to_vec();
        data.extend(d.with_rid(500).to_bytes());
        data.extend(u16s("S-1-5-21-3623811015-3361044348-30300820"));
        let forms: Vec<_> = find_domain_sid(&data, &d).iter().map(|h| h.form).collect();
        assert_eq!(forms, [SidForm::Ascii, SidForm::Binary, SidForm::Utf16]);
        // a new domain with a different sub-authority count
        let other = sid("S-1-5-21-9-9");
        let (out, hits) = replace_domain_sid(&data, &d, &other).unwrap();
        assert_eq!(hits.len(), 3);
        assert!(find_domain_sid(&out, &d).is_empty());
        assert_eq!(find_domain_sid(&out, &other).len(), 3);
        let bin_at = "S-1-5-21-9-9-500 ".len();
        assert_eq!(
            Sid::from_bytes(&out[bin_at..]).unwrap().0.to_string(),
            "S-1-5-21-9-9-500"
        );
    }

    #[test]
    fn tiny_and_empty_inputs() {
        let d = old();
        for n in 0..40 {
            let data = vec![b'S'; n];
            assert!(find_domain_sid(&data, &d).is_empty());
            let data = vec![1u8; n];
            assert!(find_domain_sid(&data, &d).is_empty());
        }
        let zero = sid("S-1-5");
        let hits = find_domain_sid(b"S-1-5-18 S-1-5", &zero);
        assert_eq!(hits.len(), 2);
    }

    #[test]
    fn url_encoded_path_in_all_forms() {
        let d = old();
        let new = new_short();
        let text = "C:%5CProgram Files%5CWindowsApps%5CPkg_1.0_x64__8wekyb3d8bbwe%5Cmicrosoft.system.package.metadata%5CS-1-5-21-3623811015-3361044348-30300820-1001-MergedResources-1.pri";
        let expect = text.replace("S-1-5-21-3623811015-3361044348-30300820", &new.to_string());
        let units: Vec<u16> = text.encode_utf16().collect();
        let out = replace_domain_sid_in_units(&units, &d, &new).unwrap();
        assert_eq!(String::from_utf16(&out).unwrap(), expect);
        assert!(name_is_embedded(&units));
        let (out, hits) = replace_domain_sid(&u16s(text), &d, &new).unwrap();
        assert_eq!(out, u16s(&expect));
        assert_eq!(hits.len(), 1);
        let (out, _) = replace_domain_sid(text.as_bytes(), &d, &new).unwrap();
        assert_eq!(out, expect.as_bytes());
    }

    #[test]
    fn embedded_or_whole() {
        let d = old();
        let whole = "S-1-5-21-3623811015-3361044348-30300820-1001";
        for (data, embedded) in [
            (u16s(whole), false),
            ([u16s(whole), vec![0, 0]].concat(), false),
            (
                [u16s("a"), vec![0, 0], u16s(whole), vec![0, 0, 0, 0]].concat(),
                false,
            ),
            (u16s(&format!("{whole}_Classes")), true),
            (u16s(&format!("x\\{whole}")), true),
            (whole.as_bytes().to_vec(), false),
            (
                [b"a\0".to_vec(), whole.as_bytes().to_vec(), vec![0]].concat(),
                false,
            ),
            (format!("p={whole};").into_bytes(), true),
        ] {
            let hits = find_domain_sid(&data, &d);
            assert_eq!(hits.len(), 1, "{data:?}");
            assert_eq!(is_embedded(&data, &hits[0]), embedded, "{data:?}");
        }
        let bin = d.with_rid(500).to_bytes();
        assert!(!is_embedded(&bin, &find_domain_sid(&bin, &d)[0]));
        let name = |s: &str| s.encode_utf16().collect::<Vec<u16>>();
        assert!(!name_is_embedded(&name(whole)));
        assert!(name_is_embedded(&name(&format!("{whole}_Classes"))));
    }

    #[test]
    fn sub_authority_remnants() {
        let d = old();
        let subs = sub_authority_bytes(&d);
        assert_eq!(subs.len(), 12);
        assert_eq!(&subs[..4], &3623811015u32.to_le_bytes());
        // A whole SID, a SID with its header overwritten, and the bare
        // sub-authorities at an odd offset.
        let mut data = d.with_rid(1001).to_bytes();
        let mut broken = d.to_bytes();
        broken[..8].copy_from_slice(&[0xAB; 8]);
        let at_broken = data.len();
        data.extend(&broken);
        data.push(7);
        let at_bare = data.len();
        data.extend(&subs);
        data.extend([0u8; 3]);
        let got = find_domain_sub_authorities(&data, &d);
        assert_eq!(
            got,
            vec![
                Remnant {
                    offset: 8,
                    form: RemnantForm::WithLeading21
                },
                Remnant {
                    offset: at_broken + 8,
                    form: RemnantForm::WithLeading21
                },
                Remnant {
                    offset: at_bare,
                    form: RemnantForm::SubAuthorities
                },
            ]
        );
        // Only whole SIDs are seen by the SID search.
        assert_eq!(find_domain_sid(&data, &d).len(), 1);
        // After a replacement of the whole SID, the remnants stay.
        let (out, _) = replace_domain_sid(&data, &d, &new_short()).unwrap();
        assert_eq!(find_domain_sub_authorities(&out, &d).len(), 2);
        assert!(find_domain_sub_authorities(&data[..11], &d).is_empty());
        assert!(find_domain_sub_authorities(&data, &sid("S-1-5")).is_empty());
        // A SID outside the 21 family: all its sub-authorities.
        assert_eq!(sub_authority_bytes(&sid("S-1-5-32-544")).len(), 8);
    }

    #[derive(Debug, Clone)]
    enum Ins {
        Bin(Option<u32>),
        Ascii(Option<u32>),
        Utf16(Option<u32>),
    }

    fn ins_strategy() -> impl Strategy<Value = Ins> {
        let rid = proptest::option::of(any::<u32>());
        prop_oneof![
            rid.clone().prop_map(Ins::Bin),
            rid.clone().prop_map(Ins::Ascii),
            rid.prop_map(Ins::Utf16),
        ]
    }

    fn domain_strategy() -> impl Strategy<Value = Sid> {
        any::<[u8; 12]>().prop_map(Sid::random_machine_domain)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn find_reports_inserted(
            d in domain_strategy(),
            nd in domain_strategy(),
            parts in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..64), ins_strategy()), 0..12),
            tail in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            prop_assume!(d != nd);
            let mut data = Vec::new();
            let mut expect = Vec::new();
            for (filler, ins) in &parts {
                data.extend_from_slice(filler);
                match ins {
                    Ins::Bin(rid) => {
                        let s = rid.map_or(d.clone(), |r| d.with_rid(r));
                        expect.push(BlobHit { offset: data.len(), form: SidForm::Binary });
                        data.extend(s.to_bytes());
                    }
                    Ins::Ascii(rid) => {
                        let s = rid.map_or(d.clone(), |r| d.with_rid(r));
                        data.push(b' ');
                        expect.push(BlobHit { offset: data.len(), form: SidForm::Ascii });
                        data.extend(s.to_string().bytes());
                        data.push(b' ');
                    }
                    Ins::Utf16(rid) => {
                        let s = rid.map_or(d.clone(), |r| d.with_rid(r));
                        data.extend([b' ', 0]);
                        expect.push(BlobHit { offset: data.len(), form: SidForm::Utf16 });
                        data.extend(u16s(&s.to_string()));
                        data.extend([b' ', 0]);
                    }
                }
            }
            data.extend_from_slice(&tail);
            let hits = find_domain_sid(&data, &d);
            prop_assert_eq!(&hits, &expect);
            match replace_domain_sid(&data, &d, &nd) {
                None => prop_assert!(expect.is_empty()),
                Some((out, h)) => {
                    prop_assert_eq!(&h, &expect);
                    prop_assert!(find_domain_sid(&out, &d).is_empty());
                    prop_assert_eq!(find_domain_sid(&out, &nd).len(), expect.len());
                }
            }
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..200), d in domain_strategy()) {
            let _ = find_domain_sid(&data, &d);
            let _ = replace_domain_sid(&data, &d, &Sid::random_machine_domain([1; 12]));
            let units: Vec<u16> = data.chunks(2).map(|c| c[0] as u16 | (*c.get(1).unwrap_or(&0) as u16) << 8).collect();
            let _ = replace_domain_sid_in_units(&units, &d, &Sid::random_machine_domain([1; 12]));
        }
    }

    /// Throughput on a large synthetic blob; run with
    /// `cargo test --release -p reseal-hive --lib scan_throughput -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn scan_throughput() {
        let d = old();
        // A mix resembling hive data: UTF-16 text with digits, GUID strings,
        // zeros, small integers, pseudo-random binary and a few SIDs.
        let mut data = Vec::with_capacity(64 << 20);
        let mut x: u64 = 0x9E3779B97F4A7C15;
        let mut n = 0u64;
        while data.len() < 64 << 20 {
            n += 1;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match x % 8 {
                0 => data.extend(u16s("C:\\Windows\\System32\\drivers\\etc 1234-5678 ")),
                1 => data.extend(u16s("{4D36E967-E325-11CE-BFC1-08002BE10318}")),
                2 => data.extend([0u8; 48]),
                3 => data.extend(x.to_le_bytes()),
                4 => data.extend(u16s("S-1-5-21-1-2-3-1001 S-1-5-18 S-1-5-32-544")),
                5 => data.extend(b"ascii text 0123456789 S-1-5-80-12-34"),
                6 if n % 4096 == 0 => data.extend(d.with_rid(500).to_bytes()),
                _ => data.extend((x >> 8).to_le_bytes()),
            }
        }
        measure("synthetic, digit- and SID-heavy", &data, &d);
        // Real hives from the test corpus, repeated to the same size.
        let root = reseal_testkit::corpus_dir().unwrap_or_default();
        let mut real = Vec::new();
        for p in [
            "DFIRArtifactMuseum/Windows/Registry/Win10/BelkasoftCTF_InsiderThreat/DEFAULT",
            "DFIRArtifactMuseum/Windows/Registry/Win10/BelkasoftCTF_InsiderThreat/SAM",
            "DFIRArtifactMuseum/Windows/Registry/Win10/BelkasoftCTF_InsiderThreat/SECURITY",
            "DFIRArtifactMuseum/Windows/Registry/Win10/RathbunVM/DEFAULT",
            "notatin/NTUSER.DAT",
        ] {
            if let Ok(b) = std::fs::read(root.join(p)) {
                real.extend(b);
            }
        }
        if !real.is_empty() {
            let one = real.clone();
            while real.len() < 64 << 20 {
                real.extend_from_slice(&one);
            }
            measure("real hives", &real, &d);
        }
    }

    fn measure(label: &str, data: &[u8], d: &Sid) {
        let t = std::time::Instant::now();
        let rounds = 5;
        let mut total = 0;
        for _ in 0..rounds {
            total += find_domain_sid(data, d).len();
        }
        let secs = t.elapsed().as_secs_f64();
        let mb = (data.len() * rounds) as f64 / (1024.0 * 1024.0);
        println!(
            "scan {label}: {:.0} MiB/s ({} hits per round, {} MiB blob)",
            mb / secs,
            total / rounds,
            data.len() >> 20
        );
    }
}
