//! The write side of the disk backend: changes applied through
//! [`NtfsWriter`], and the read-back check of what they should have left.

use std::collections::BTreeMap;

use reseal_hive::Sid;
use reseal_hive::security::{rewrite_descriptor_domain, validate_descriptor};

use crate::Result;
use crate::backend::FileChange;
use crate::disk::BlockDevice;
use crate::ntfs3g::{NtfsWriter, SecurityRewrite};

/// Applies `changes` in order, then (when asked) rewrites every security
/// descriptor naming the old machine SID.
pub(super) fn apply<D: BlockDevice + 'static>(
    w: &mut NtfsWriter<D>,
    changes: &[FileChange],
    security: Option<&(Sid, Sid)>,
) -> Result<Option<SecurityRewrite>> {
    for c in changes {
        match c {
            FileChange::Write { path, data } => w.write_file(path, data)?,
            FileChange::Truncate { path } => w.truncate(path)?,
            FileChange::Delete { path } => w.delete(path)?,
            FileChange::DeleteTree { path } => w.delete_tree(path)?,
            FileChange::Rename { from, to } => w.rename(from, to)?,
        }
    }
    let Some((old, new)) = security else {
        return Ok(None);
    };
    let rewritten = w.rewrite_security(|sd| {
        // A descriptor Windows would not accept is left as it is.
        validate_descriptor(sd).ok()?;
        // SIDs rewritten and unused bytes (ACL slack, gaps) zeroed, so that
        // no stale copy of the old domain's sub-authorities is written back.
        rewrite_descriptor_domain(sd, old, new)
            .ok()
            .flatten()
            .map(|r| r.descriptor)
    })?;
    Ok(Some(rewritten))
}

/// What a path should be after the changes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect<'a> {
    /// A file with exactly these bytes.
    Data(&'a [u8]),
    /// Absent.
    Absent,
    /// Absent, or a file of length zero.
    EmptyOrAbsent,
}

fn key(path: &str) -> String {
    path.split(['\\', '/'])
        .filter(|c| !c.is_empty())
        .map(|c| c.to_lowercase())
        .collect::<Vec<_>>()
        .join("\\")
}

fn under(k: &str, dir: &str) -> bool {
    k.len() > dir.len() && k.starts_with(dir) && k.as_bytes()[dir.len()] == b'\\'
}

/// The state `changes` should leave, by lower-cased path (with the path as
/// given).
fn expected(changes: &[FileChange]) -> BTreeMap<String, (String, Expect<'_>)> {
    let mut m: BTreeMap<String, (String, Expect<'_>)> = BTreeMap::new();
    for c in changes {
        match c {
            FileChange::Write { path, data } => {
                m.insert(key(path), (path.clone(), Expect::Data(data)));
            }
            FileChange::Truncate { path } => {
                let e = match m.get(&key(path)) {
                    Some((_, Expect::Data(_))) => Expect::Data(&[]),
                    Some((_, Expect::Absent)) => Expect::Absent,
                    _ => Expect::EmptyOrAbsent,
                };
                m.insert(key(path), (path.clone(), e));
            }
            FileChange::Delete { path } | FileChange::DeleteTree { path } => {
                let k = key(path);
                m.retain(|x, _| !under(x, &k));
                m.insert(k, (path.clone(), Expect::Absent));
            }
            FileChange::Rename { from, to } => {
                let (fk, tk) = (key(from), key(to));
                if fk == tk {
                    continue;
                }
                let moved: Vec<(String, (String, Expect<'_>))> = m
                    .iter()
                    .filter(|(x, _)| under(x, &fk))
                    .map(|(x, v)| (x.clone(), v.clone()))
                    .collect();
                let own = m.get(&fk).map(|v| v.1.clone());
                m.retain(|x, _| !under(x, &fk));
                for (x, (p, e)) in moved {
                    let rest = &x[fk.len()..];
                    let np = format!("{to}{}", &p[p.len() - rest.len()..]);
                    m.insert(format!("{tk}{rest}"), (np, e));
                }
                match own {
                    // Renaming something that is absent does nothing.
                    Some(Expect::Absent) => {}
                    Some(e) => {
                        m.insert(tk, (to.clone(), e));
                        m.insert(fk, (from.clone(), Expect::Absent));
                    }
                    None => {
                        // The source was not touched before: whether it
                        // exists is not known here, only that the old name
                        // is gone.
                        m.insert(fk, (from.clone(), Expect::Absent));
                    }
                }
            }
        }
    }
    m
}

/// Checks the volume against what `changes` should leave. `read` gives
/// `None` for a missing path, `Some(None)` for a directory and
/// `Some(Some(bytes))` for a file. Returns the first mismatch.
pub(super) fn verify(
    changes: &[FileChange],
    mut read: impl FnMut(&str) -> Result<Option<Option<Vec<u8>>>>,
) -> std::result::Result<(), String> {
    for (path, e) in expected(changes).into_values() {
        let got = read(&path).map_err(|e| format!("{path}: {e}"))?;
        let ok = match (&e, &got) {
            (Expect::Data(d), Some(Some(b))) => b.as_slice() == *d,
            (Expect::Absent, None) => true,
            (Expect::EmptyOrAbsent, None) => true,
            (Expect::EmptyOrAbsent, Some(Some(b))) => b.is_empty(),
            _ => false,
        };
        if !ok {
            let found = match &got {
                None => "absent".to_string(),
                Some(None) => "a directory".to_string(),
                Some(Some(b)) => format!("a file of {} bytes", b.len()),
            };
            let want = match e {
                Expect::Data(d) => format!("a file of {} bytes with the written contents", d.len()),
                Expect::Absent => "absent".into(),
                Expect::EmptyOrAbsent => "empty or absent".into(),
            };
            return Err(format!("{path}: expected {want}, found {found}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(p: &str, d: &[u8]) -> FileChange {
        FileChange::Write {
            path: p.into(),
            data: d.to_vec(),
        }
    }

    #[test]
    fn expected_state_follows_renames_and_deletes() {
        let changes = vec![
            w("A\\x.txt", b"1"),
            w("A\\sub\\y.txt", b"2"),
            FileChange::Rename {
                from: "a".into(),
                to: "B".into(),
            },
            w("C\\z", b"3"),
            FileChange::DeleteTree { path: "c".into() },
            FileChange::Truncate {
                path: "log.LOG1".into(),
            },
        ];
        let m = expected(&changes);
        assert_eq!(m["b\\x.txt"], ("B\\x.txt".to_string(), Expect::Data(b"1")));
        assert_eq!(m["b\\sub\\y.txt"].1, Expect::Data(b"2"));
        assert_eq!(m["a"].1, Expect::Absent);
        assert!(!m.contains_key("a\\x.txt"));
        assert_eq!(m["c"].1, Expect::Absent);
        assert!(!m.contains_key("c\\z"));
        assert_eq!(m["log.log1"].1, Expect::EmptyOrAbsent);
    }

    #[test]
    fn verify_reports_the_first_mismatch() {
        let changes = vec![w("f", b"abc")];
        assert!(verify(&changes, |_| Ok(Some(Some(b"abc".to_vec())))).is_ok());
        let e = verify(&changes, |_| Ok(Some(Some(b"abd".to_vec())))).unwrap_err();
        assert!(e.contains("expected a file of 3 bytes"), "{e}");
        let e = verify(&changes, |_| Ok(None)).unwrap_err();
        assert!(e.contains("found absent"), "{e}");
    }
}
