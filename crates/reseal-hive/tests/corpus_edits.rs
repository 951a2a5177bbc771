//! Edit batches on real hives, verified by independent readers: each reader
//! dumps the recovered original, the intended changes are applied to that
//! dump (a model written here, independent of the crate's reader), and the
//! reader's dump of the saved file must equal it. The saved file must also
//! pass `check()`.
//!
//! Hives: regipy SYSTEM_B (dirty, replayed from its logs; the largest), and
//! the Win10 RathbunVM SAM (clean), SECURITY and NTUSER.DAT (dirty, replayed).
//! Skips with a notice when the corpus or a reader is absent.

mod common;
mod corpus_support;

use common::{Dump, corpus_dir, missing, notice, utf16le};
use corpus_support::{Reader, assert_dumps_equal, readers, stage};
use reseal_hive::Hive;
use reseal_hive::regfile::parse_reg;
use std::path::Path;

/// One intended change, applied both to the hive (by the engine) and to a
/// reader's dump of the original (by [`Model`]).
#[derive(Debug, Clone)]
enum Edit {
    /// Create a key and any missing parents.
    CreateKey(&'static str),
    /// Delete a key and its subtree.
    DeleteKey(&'static str),
    /// Set a value (create or replace); the key must exist.
    SetValue(&'static str, &'static str, u32, Vec<u8>),
    /// Delete a value that exists.
    DeleteValue(&'static str, &'static str),
    /// Rename the key at a path to a new name.
    RenameKey(&'static str, &'static str),
    /// Import `.reg` text (encoded as UTF-16LE with a BOM) with a path
    /// prefix; its effect on the model is given separately.
    Import {
        text: String,
        prefix: Option<&'static str>,
        effect: Vec<Edit>,
    },
}

fn ci_eq(a: &str, b: &str) -> bool {
    a.chars()
        .flat_map(char::to_uppercase)
        .eq(b.chars().flat_map(char::to_uppercase))
}

/// A reader's dump with the changes applied, Windows-style: names compare
/// case-insensitively, an existing name keeps its stored case.
struct Model(Dump);

impl Model {
    /// The stored path of the key at `path` (compared case-insensitively).
    fn find(&self, path: &str) -> Option<String> {
        let want: Vec<&str> = path.split('\\').filter(|c| !c.is_empty()).collect();
        self.0
            .keys
            .keys()
            .find(|k| {
                let have: Vec<&str> = k.split('\\').filter(|c| !c.is_empty()).collect();
                have.len() == want.len() && have.iter().zip(&want).all(|(a, b)| ci_eq(a, b))
            })
            .cloned()
    }

    fn has_prefix(key: &str, prefix: &str) -> bool {
        key == prefix
            || (key.len() > prefix.len()
                && key.starts_with(prefix)
                && key.as_bytes()[prefix.len()] == b'\\')
    }

    fn apply(&mut self, e: &Edit) {
        match e {
            Edit::CreateKey(p) => {
                let mut cur = String::new();
                for comp in p.split('\\') {
                    let next = if cur.is_empty() {
                        comp.to_string()
                    } else {
                        format!("{cur}\\{comp}")
                    };
                    cur = match self.find(&next) {
                        Some(found) => found,
                        None => {
                            self.0.keys.insert(next.clone(), Default::default());
                            next
                        }
                    };
                }
            }
            Edit::DeleteKey(p) => {
                let at = self.find(p).unwrap_or_else(|| panic!("model: no key {p}"));
                self.0.keys.retain(|k, _| !Self::has_prefix(k, &at));
            }
            Edit::SetValue(p, name, ty, data) => {
                let at = self.find(p).unwrap_or_else(|| panic!("model: no key {p}"));
                let vals = &mut self.0.keys.get_mut(&at).unwrap().values;
                let stored = vals
                    .keys()
                    .find(|n| ci_eq(n, name))
                    .cloned()
                    .unwrap_or_else(|| name.to_string());
                vals.insert(stored, (*ty, data.clone()));
            }
            Edit::DeleteValue(p, name) => {
                let at = self.find(p).unwrap_or_else(|| panic!("model: no key {p}"));
                let vals = &mut self.0.keys.get_mut(&at).unwrap().values;
                let stored = vals
                    .keys()
                    .find(|n| ci_eq(n, name))
                    .cloned()
                    .unwrap_or_else(|| panic!("model: no value {name:?} in {p}"));
                vals.remove(&stored);
            }
            Edit::RenameKey(p, new) => {
                let at = self.find(p).unwrap_or_else(|| panic!("model: no key {p}"));
                let to = match at.rfind('\\') {
                    Some(i) => format!("{}\\{new}", &at[..i]),
                    None => new.to_string(),
                };
                let moved: Vec<String> = self
                    .0
                    .keys
                    .keys()
                    .filter(|k| Self::has_prefix(k, &at))
                    .cloned()
                    .collect();
                for k in moved {
                    let v = self.0.keys.remove(&k).unwrap();
                    self.0.keys.insert(format!("{to}{}", &k[at.len()..]), v);
                }
            }
            Edit::Import { effect, .. } => {
                for e in effect {
                    self.apply(e);
                }
            }
        }
    }
}

fn apply_to_hive(h: &mut Hive, e: &Edit) {
    let r = match e {
        Edit::CreateKey(p) => h.create_key(p).map(drop),
        Edit::DeleteKey(p) => h.delete_key(p),
        Edit::SetValue(p, n, t, d) => h.set_value(p, n, *t, d),
        Edit::DeleteValue(p, n) => h.delete_value(p, n),
        Edit::RenameKey(p, n) => h.rename_key(p, n).map(drop),
        Edit::Import { text, prefix, .. } => {
            let mut bytes = vec![0xFF, 0xFE];
            bytes.extend(utf16le(text));
            let doc = parse_reg("edits.reg", &bytes).expect("parse .reg");
            h.import_reg(&doc, *prefix).map(drop)
        }
    };
    r.unwrap_or_else(|err| panic!("{e:?}: {err}"));
}

fn sz(s: &str) -> Vec<u8> {
    let mut v = utf16le(s);
    v.extend([0, 0]);
    v
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

/// The big batch, parametrised by a few paths that exist in the hive.
struct Targets {
    /// Where the new keys go (below the root).
    base: &'static str,
    /// A large existing subtree to delete.
    delete_subtree: &'static str,
    /// An existing key with subkeys, renamed to a much longer name.
    rename_long: (&'static str, &'static str),
    /// An existing key renamed with a change of case only.
    rename_case: (&'static str, &'static str),
    /// An existing value to delete.
    delete_value: (&'static str, &'static str),
    /// An existing value whose data is replaced by big data.
    grow_value: (&'static str, &'static str),
    /// The `.reg` root prefix mapped to this hive's root.
    reg_prefix: &'static str,
    /// An existing key the `.reg` file deletes.
    reg_delete: &'static str,
    /// An existing key the `.reg` file adds a value to.
    reg_touch: &'static str,
}

fn big_batch(t: &Targets) -> Vec<Edit> {
    let b = t.base;
    let deep = leak(format!("{b}\\Äpfel\\日本\\ß"));
    let apfel = leak(format!("{b}\\Äpfel"));
    let nihon = leak(format!("{b}\\Äpfel\\日本"));
    let emoji = leak(format!("{b}\\\u{1F600} smile \u{10437}\\inner"));
    let import_key = leak(format!("{b}\\imported\\Sub Key"));
    let pre = t.reg_prefix;
    let text = format!(
        "Windows Registry Editor Version 5.00\r\n\r\n\
         [{pre}\\{import_key}]\r\n\
         \"String\"=\"Grüße 日本\"\r\n\
         \"Dword\"=dword:0000002a\r\n\
         @=\"default\"\r\n\
         \"Multi\"=hex(7):61,00,00,00,62,00,00,00,00,00\r\n\
         \"Bin\"=hex:01,02,03,04,05\r\n\
         \"Odd\"=hex(100000):09,08,07\r\n\r\n\
         [{pre}\\{import_key}]\r\n\
         \"Bin\"=-\r\n\r\n\
         [-{pre}\\{}]\r\n\r\n\
         [{pre}\\{}]\r\n\
         \"resealImported\"=\"x\"\r\n",
        t.reg_delete, t.reg_touch
    );
    let effect = vec![
        Edit::CreateKey(import_key),
        Edit::SetValue(import_key, "String", 1, sz("Grüße 日本")),
        Edit::SetValue(import_key, "Dword", 4, 42u32.to_le_bytes().to_vec()),
        Edit::SetValue(import_key, "", 1, sz("default")),
        Edit::SetValue(
            import_key,
            "Multi",
            7,
            vec![0x61, 0, 0, 0, 0x62, 0, 0, 0, 0, 0],
        ),
        Edit::SetValue(import_key, "Odd", 0x100000, vec![9, 8, 7]),
        Edit::DeleteKey(t.reg_delete),
        Edit::SetValue(t.reg_touch, "resealImported", 1, sz("x")),
    ];
    vec![
        Edit::CreateKey(deep),
        Edit::CreateKey(emoji),
        Edit::SetValue(apfel, "big", 3, pattern(100_000, 1)),
        Edit::SetValue(apfel, "just over one segment", 3, pattern(16_345, 2)),
        Edit::SetValue(nihon, "odd type", 0x100000, vec![1, 2, 3]),
        Edit::SetValue(nihon, "odd type, 8 bytes", 0x100000, pattern(8, 3)),
        Edit::SetValue(nihon, "empty", 0x100000, Vec::new()),
        Edit::SetValue(emoji, "名前 \u{1F600}", 1, sz("Äpfel 日本 \u{1F600}")),
        Edit::SetValue(t.grow_value.0, t.grow_value.1, 3, pattern(40_000, 4)),
        Edit::DeleteKey(t.delete_subtree),
        Edit::DeleteValue(t.delete_value.0, t.delete_value.1),
        Edit::RenameKey(t.rename_long.0, t.rename_long.1),
        Edit::RenameKey(t.rename_case.0, t.rename_case.1),
        // Replace big data by small data again.
        Edit::SetValue(apfel, "just over one segment", 4, vec![7, 0, 0, 0]),
        Edit::Import {
            text,
            prefix: Some(pre),
            effect,
        },
    ]
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Dumps `path` with every reader, the readers running concurrently.
fn dump_all(tools: &[Reader], path: &Path) -> Vec<(Reader, Result<Dump, String>)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = tools
            .iter()
            .map(|&r| (r, s.spawn(move || r.dump(path))))
            .collect();
        handles
            .into_iter()
            .map(|(r, h)| (r, h.join().expect("reader thread panicked")))
            .collect()
    })
}

/// Opens `rel` (replaying its logs), dumps the recovered original with each
/// reader, applies `edits`, saves, and compares. Returns (original file
/// length, saved file length).
fn run_batch(rel: &str, edits: &[Edit], wanted: &[Reader]) -> Option<(u64, u64)> {
    let corpus = corpus_dir().or_else(|| {
        missing("the corpus (set RESEAL_CORPUS)");
        None
    })?;
    let tools = readers(wanted);
    let t0 = std::time::Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let staged = stage(&corpus.join(rel), &tmp.path().join("in"));
    let mut hive = Hive::open(&staged.hive).unwrap_or_else(|e| panic!("{rel}: open: {e}"));
    let name = staged.hive.file_name().unwrap().to_owned();
    let orig = tmp.path().join("original");
    std::fs::create_dir_all(&orig).unwrap();
    let orig = orig.join(&name);
    std::fs::write(&orig, hive.to_bytes()).unwrap();

    let mut models = Vec::new();
    for (r, dump) in dump_all(&tools, &orig) {
        match dump {
            Ok(d) => models.push((r, Model(d))),
            Err(e) => notice(&format!(
                "{rel}: {r:?} cannot read the original, not compared: {}",
                e.lines().last().unwrap_or("")
            )),
        }
    }
    for e in edits {
        apply_to_hive(&mut hive, e);
        for (_, m) in &mut models {
            m.apply(e);
        }
    }
    let out_dir = tmp.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join(&name);
    hive.save_to(&out)
        .unwrap_or_else(|e| panic!("{rel}: save_to: {e}"));
    let saved = std::fs::read(&out).unwrap();
    let report = Hive::open(&out)
        .unwrap_or_else(|e| panic!("{rel}: reopen: {e}"))
        .check();
    assert!(
        report.is_clean(),
        "{rel}: check of the edited hive: {:?}",
        report.errors().take(8).collect::<Vec<_>>()
    );
    let compared: Vec<Reader> = models.iter().map(|(r, _)| *r).collect();
    for ((r, m), (_, actual)) in models.iter().zip(dump_all(&compared, &out)) {
        let actual =
            actual.unwrap_or_else(|e| panic!("{rel}: {r:?} cannot read the edited hive: {e}"));
        assert_dumps_equal(*r, &m.0, &actual, rel);
    }
    eprintln!("{rel}: edited and compared in {:.1?}", t0.elapsed());
    Some((std::fs::metadata(&orig).unwrap().len(), saved.len() as u64))
}

const ALL: &[Reader] = &[
    Reader::Hivex,
    Reader::Regfexport,
    Reader::Regipy,
    Reader::Dissect,
];

#[test]
fn system_b_big_batch() {
    let t = Targets {
        base: "reseal-test",
        delete_subtree: "ControlSet001\\Enum",
        rename_long: (
            "ControlSet001\\Control\\Nls",
            "Nls, renamed to a name long enough that the key node must move",
        ),
        rename_case: ("Select", "SELECT"),
        delete_value: ("Select", "LastKnownGood"),
        grow_value: ("ControlSet001\\Control", "SystemStartOptions"),
        reg_prefix: "HKEY_LOCAL_MACHINE\\SYSTEM",
        reg_delete: "ControlSet001\\Services\\Tcpip",
        reg_touch: "ControlSet001\\Control\\Session Manager",
    };
    // The Python readers are exercised on the other hives (with the same
    // kinds of edits); two readers keep the largest hive within the time
    // budget of the debug-mode suite.
    let readers = &[Reader::Hivex, Reader::Regfexport];
    run_batch(
        "regipy/regipy_tests/data/SYSTEM_B.xz",
        &big_batch(&t),
        readers,
    );
}

#[test]
fn rathbun_security_big_batch() {
    let t = Targets {
        base: "Policy\\reseal-test",
        delete_subtree: "Policy\\Accounts",
        rename_long: (
            "Policy\\Secrets",
            "Secrets, renamed to a name long enough that the key node must move",
        ),
        rename_case: ("Policy\\PolAdtEv", "POLADTEV"),
        delete_value: ("Policy\\PolAcDmN", ""),
        grow_value: ("Policy\\PolAcDmS", ""),
        reg_prefix: "HKEY_LOCAL_MACHINE\\SECURITY",
        reg_delete: "Cache",
        reg_touch: "RXACT",
    };
    run_batch(
        "DFIRArtifactMuseum/Windows/Registry/Win10/RathbunVM/SECURITY",
        &big_batch(&t),
        ALL,
    );
}

#[test]
fn rathbun_ntuser_big_batch() {
    let t = Targets {
        base: "Software\\reseal-test",
        delete_subtree: "Software\\Microsoft\\Windows\\CurrentVersion\\Explorer",
        rename_long: (
            "Control Panel",
            "Control Panel, renamed to a name long enough that the key node must move",
        ),
        rename_case: ("Environment", "ENVIRONMENT"),
        delete_value: ("Environment", "TEMP"),
        grow_value: ("Environment", "Path"),
        reg_prefix: "HKEY_CURRENT_USER",
        reg_delete: "Keyboard Layout",
        reg_touch: "Console",
    };
    run_batch(
        "DFIRArtifactMuseum/Windows/Registry/Win10/RathbunVM/NTUSER.DAT",
        &big_batch(&t),
        ALL,
    );
}

/// A batch that fits in the free space of the SAM: the file keeps its length.
#[test]
fn rathbun_sam_small_batch_keeps_file_length() {
    let edits = vec![
        Edit::CreateKey("SAM\\reseal\\Äpfel\\日本\\ß"),
        Edit::CreateKey("SAM\\reseal\\\u{1F600}"),
        Edit::SetValue("SAM\\reseal\\Äpfel", "odd", 0x100000, vec![5, 6, 7]),
        Edit::SetValue("SAM\\reseal\\\u{1F600}", "s", 1, sz("ß\u{1F600}")),
        Edit::RenameKey("SAM\\Domains\\Account\\Users\\Names", "NAMES"),
        Edit::RenameKey("SAM\\reseal\\Äpfel\\日本", "日本語の長い名前に変更したキー"),
        Edit::DeleteValue("SAM\\Domains\\Builtin", "V"),
        Edit::Import {
            text: "Windows Registry Editor Version 5.00\r\n\r\n\
                   [\\SAM\\reseal\\imp]\r\n\"d\"=dword:00000001\r\n"
                .to_string(),
            prefix: None,
            effect: vec![
                Edit::CreateKey("SAM\\reseal\\imp"),
                Edit::SetValue("SAM\\reseal\\imp", "d", 4, vec![1, 0, 0, 0]),
            ],
        },
    ];
    let Some((before, after)) = run_batch(
        "DFIRArtifactMuseum/Windows/Registry/Win10/RathbunVM/SAM",
        &edits,
        ALL,
    ) else {
        return;
    };
    assert_eq!(before, after, "the SAM grew although the edits fit");
}

#[test]
fn model_paths_are_case_insensitive() {
    let mut m = Model(Dump::default());
    m.apply(&Edit::CreateKey("A\\b"));
    m.apply(&Edit::CreateKey("a\\B\\c"));
    m.apply(&Edit::RenameKey("a\\b", "Bee"));
    assert_eq!(
        m.0.keys.keys().cloned().collect::<Vec<_>>(),
        ["A", "A\\Bee", "A\\Bee\\c"]
    );
}
