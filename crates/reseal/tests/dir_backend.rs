//! Behaviour of the directory backend: case-insensitive lookup, refusal of
//! unsafe paths and links, reads, and all-or-nothing commits (checked by
//! failing every primitive step of a realistic commit in turn).
#![cfg(unix)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;

use reseal::ResealError;
use reseal::backend::dir::DirBackend;
use reseal::backend::memory::MemoryBackend;
use reseal::backend::{Backend, FileChange};

/// Everything observable about a tree: per relative path, its kind, mode
/// and contents (files), or link target (symlinks).
type State = BTreeMap<String, (char, u32, Vec<u8>)>;

fn state(root: &Path) -> State {
    let mut out = State::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut State) {
    for e in fs::read_dir(dir).expect("read_dir") {
        let e = e.expect("entry");
        let p = e.path();
        let rel = p
            .strip_prefix(root)
            .expect("prefix")
            .to_string_lossy()
            .into_owned();
        let m = fs::symlink_metadata(&p).expect("lstat");
        let mode = m.permissions().mode();
        if m.file_type().is_symlink() {
            let t = fs::read_link(&p).expect("readlink");
            out.insert(rel, ('l', 0, t.to_string_lossy().into_owned().into_bytes()));
        } else if m.is_dir() {
            out.insert(rel, ('d', mode, Vec::new()));
            walk(root, &p, out);
        } else {
            out.insert(rel, ('f', mode, fs::read(&p).expect("read")));
        }
    }
}

/// Names the backend uses for temporary files and backups.
fn leftovers(root: &Path) -> Vec<String> {
    state(root)
        .into_keys()
        .filter(|k| k.contains(".reseal-"))
        .collect()
}

fn put(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    fs::write(p, data).expect("write");
}

fn set_mode(root: &Path, rel: &str, mode: u32) {
    fs::set_permissions(root.join(rel), fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A small Windows-like tree.
fn sample() -> tempfile::TempDir {
    let t = tempfile::tempdir().expect("tempdir");
    let r = t.path();
    put(r, "Windows/System32/config/SYSTEM", b"regf system");
    put(r, "Windows/System32/config/SYSTEM.LOG1", b"log one");
    put(r, "Windows/System32/config/SYSTEM.LOG2", b"log two");
    put(r, "Windows/System32/config/SOFTWARE", b"regf software");
    put(r, "Windows/System32/config/SAM", b"regf sam");
    put(r, "Windows/Panther/setupact.log", b"setup log");
    put(r, "Windows/Panther/UnattendGC/setupact.log", b"gc log");
    put(r, "Windows/Panther/empty.txt", b"");
    put(r, "Windows/Logs/CBS/CBS.log", b"cbs");
    put(r, "Windows/debug/netsetup.log", b"netsetup");
    put(r, "Users/Default/NTUSER.DAT", b"regf default");
    fs::create_dir_all(r.join("Windows/Temp")).expect("mkdir");
    set_mode(r, "Windows/System32/config/SYSTEM", 0o640);
    set_mode(r, "Windows/System32/config/SYSTEM.LOG1", 0o600);
    set_mode(r, "Windows/System32/config/SOFTWARE", 0o604);
    t
}

fn write(path: &str, data: &[u8]) -> FileChange {
    FileChange::Write {
        path: path.into(),
        data: data.to_vec(),
    }
}
fn truncate(path: &str) -> FileChange {
    FileChange::Truncate { path: path.into() }
}
fn delete(path: &str) -> FileChange {
    FileChange::Delete { path: path.into() }
}
fn delete_tree(path: &str) -> FileChange {
    FileChange::DeleteTree { path: path.into() }
}

fn is_unsafe<T: std::fmt::Debug>(r: reseal::Result<T>) -> bool {
    matches!(r, Err(ResealError::UnsafePath { .. }))
}

#[test]
fn open_requires_an_existing_directory() {
    let t = sample();
    assert!(DirBackend::open(&t.path().join("missing")).is_err());
    assert!(DirBackend::open(&t.path().join("Windows/System32/config/SYSTEM")).is_err());
    let b = DirBackend::open(&t.path().join("Windows/../Windows")).expect("open");
    assert_eq!(
        b.root(),
        fs::canonicalize(t.path().join("Windows")).expect("canon")
    );
}

#[test]
fn lookup_is_case_insensitive_per_component() {
    let t = sample();
    let b = DirBackend::open(t.path()).expect("open");
    for p in [
        r"windows\SYSTEM32\Config\system",
        r"Windows\System32\config\SYSTEM",
        "WINDOWS/system32/CONFIG/System",
        r"Windows\\System32\.\config\SYSTEM\",
    ] {
        assert_eq!(b.read(p).expect(p), b"regf system", "{p}");
        assert!(b.exists(p) && !b.is_dir(p), "{p}");
    }
    assert!(b.is_dir(r"windows\system32") && b.is_dir("") && b.exists(""));
    assert!(!b.exists(r"Windows\System32\config\NOPE"));
    assert!(matches!(
        b.read(r"windows\nope\SYSTEM"),
        Err(ResealError::NotFound { .. })
    ));
    // A file in the middle of a path is "not found", not a crash.
    assert!(matches!(
        b.read(r"Windows\System32\config\SYSTEM\x"),
        Err(ResealError::NotFound { .. })
    ));
}

#[test]
fn lookup_folds_non_ascii_and_prefers_exact_then_sorted() {
    let t = tempfile::tempdir().expect("tempdir");
    let r = t.path();
    put(r, "Äpfel/Ünïcode.txt", b"u");
    put(r, "dup/File", b"mixed");
    put(r, "dup/FILE", b"upper");
    let b = DirBackend::open(r).expect("open");
    assert_eq!(b.read(r"äPFEL\üNÏCODE.TXT").expect("fold"), b"u");
    // Exact match wins over other case variants.
    assert_eq!(b.read(r"dup\File").expect("exact"), b"mixed");
    assert_eq!(b.read(r"dup\FILE").expect("exact"), b"upper");
    // Otherwise the first in byte order: "FILE" < "File".
    assert_eq!(b.read(r"dup\file").expect("sorted"), b"upper");
}

#[test]
fn unsafe_paths_are_refused() {
    let t = sample();
    let outside = tempfile::tempdir().expect("tempdir");
    put(outside.path(), "secret", b"outside");
    symlink(outside.path(), t.path().join("Windows/escape")).expect("symlink");
    symlink("/etc/hostname", t.path().join("Windows/host")).expect("symlink");
    symlink("nowhere/at/all", t.path().join("Windows/dangling")).expect("symlink");
    let mut b = DirBackend::open(t.path()).expect("open");
    let bad = [
        r"..\x",
        r"Windows\..\..\x",
        "Windows/../Windows",
        r"C:\Windows",
        "c:Windows",
        r"\Windows",
        "/etc/passwd",
        r"\\server\share\x",
        r"Windows\System32\config\SYSTEM:stream",
        "Windows\0x",
        r"Windows\escape\secret",
        r"windows\ESCAPE",
        r"Windows\host",
        r"Windows\dangling",
    ];
    let before = state(t.path());
    let outside_before = state(outside.path());
    for p in bad {
        assert!(is_unsafe(b.read(p)), "read {p:?}");
        assert!(is_unsafe(b.read_head(p, 4)), "read_head {p:?}");
        assert!(!b.exists(p) && !b.is_dir(p), "exists {p:?}");
        for c in [
            write(p, b"x"),
            truncate(p),
            delete(p),
            delete_tree(p),
            write(&format!("{p}\\new"), b"x"),
        ] {
            // Even after a harmless first change, nothing is applied.
            let r = b.commit(&[write("Windows/ok.txt", b"ok"), c.clone()]);
            assert!(is_unsafe(r), "commit {c:?}");
        }
    }
    assert!(is_unsafe(b.list(r"Windows\escape")));
    assert!(is_unsafe(b.list(r"..")));
    assert_eq!(state(t.path()), before);
    assert_eq!(state(outside.path()), outside_before);
}

#[test]
fn links_inside_the_root_are_read_but_never_written_through() {
    let t = sample();
    let r = t.path();
    symlink("Users", r.join("Documents and Settings")).expect("symlink");
    symlink("SYSTEM", r.join("Windows/System32/config/SYSTEM.link")).expect("symlink");
    let mut b = DirBackend::open(r).expect("open");
    assert_eq!(
        b.read(r"documents and settings\Default\ntuser.dat")
            .expect("through link"),
        b"regf default"
    );
    assert_eq!(
        b.read(r"Windows\System32\config\system.link")
            .expect("file link"),
        b"regf system"
    );
    let listed = b.list("").expect("list");
    let link = listed
        .iter()
        .find(|e| e.name == "Documents and Settings")
        .expect("link listed");
    assert!(link.is_dir);

    let before = state(r);
    for c in [
        write(r"Windows\System32\config\SYSTEM.link", b"new"),
        truncate(r"Windows\System32\config\system.LINK"),
        delete(r"Windows\System32\config\SYSTEM.link"),
        delete_tree("Documents and Settings"),
    ] {
        assert!(is_unsafe(b.commit(std::slice::from_ref(&c))), "{c:?}");
    }
    assert_eq!(state(r), before);

    // A link in the middle of the path is followed when it stays inside.
    b.commit(&[write(
        r"Documents and Settings\Default\new.txt",
        b"via link",
    )])
    .expect("commit");
    assert_eq!(
        fs::read(r.join("Users/Default/new.txt")).expect("read"),
        b"via link"
    );
}

#[test]
fn listing() {
    let t = sample();
    let b = DirBackend::open(t.path()).expect("open");
    let l = b.list(r"WINDOWS\panther").expect("list");
    let names: Vec<(&str, bool, u64)> = l
        .iter()
        .map(|e| (e.name.as_str(), e.is_dir, e.size))
        .collect();
    assert_eq!(
        names,
        [
            ("UnattendGC", true, 0),
            ("empty.txt", false, 0),
            ("setupact.log", false, 9)
        ]
    );
    let root: Vec<String> = b
        .list("")
        .expect("root")
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(root, ["Users", "Windows"]);
    assert!(matches!(
        b.list(r"Windows\missing"),
        Err(ResealError::NotFound { .. })
    ));
    assert!(matches!(
        b.list(r"Windows\Panther\setupact.log"),
        Err(ResealError::NotFound { .. })
    ));
    assert!(b.list(r"Windows\Temp").expect("empty").is_empty());
}

#[test]
fn read_head_does_not_read_the_whole_file() {
    let t = sample();
    let p = t.path().join("pagefile.sys");
    fs::write(&p, b"PAGEHEADER").expect("write");
    let f = fs::OpenOptions::new().write(true).open(&p).expect("open");
    f.set_len(4 << 30).expect("sparse 4 GiB");
    drop(f);
    let b = DirBackend::open(t.path()).expect("open");
    assert_eq!(b.read_head("PAGEFILE.SYS", 4).expect("head"), b"PAGE");
    assert_eq!(b.read_head("pagefile.sys", 0).expect("head"), b"");
    let l = b.list("").expect("list");
    assert!(
        l.iter()
            .any(|e| e.name == "pagefile.sys" && e.size == 4 << 30)
    );
    // A length beyond the file gives the whole (small) file.
    assert_eq!(
        b.read_head(r"windows\panther\setupact.log", usize::MAX)
            .expect("head"),
        b"setup log"
    );
    assert!(b.read_head("Windows", 4).is_err());
}

#[test]
fn commit_applies_each_kind_of_change() {
    let t = sample();
    let r = t.path();
    let log1 = r.join("Windows/System32/config/SYSTEM.LOG1");
    let log1_ino = fs::metadata(&log1).expect("meta").ino();
    let mut b = DirBackend::open(r).expect("open");
    assert!(b.exists(r"windows\panther\setupact.log"));
    b.commit(&[
        // Replace, by a path in another case: the stored name is kept.
        write(r"windows\system32\CONFIG\system", b"new system"),
        // New file in new directories.
        write(r"Windows\Setup\Scripts\SetupComplete.cmd", b"@echo off"),
        truncate(r"Windows\System32\config\system.log1"),
        truncate(r"Windows\System32\config\SYSTEM.LOG9"),
        delete(r"windows\debug\NETSETUP.LOG"),
        delete(r"Windows\debug\absent.log"),
        delete_tree(r"windows\PANTHER"),
        delete_tree(r"Windows\NoSuchDir"),
        delete_tree(r"Windows\Logs\CBS\CBS.log"),
    ])
    .expect("commit");
    let c = r.join("Windows/System32/config");
    assert_eq!(fs::read(c.join("SYSTEM")).expect("read"), b"new system");
    assert!(!c.join("system").exists());
    assert_eq!(
        fs::metadata(c.join("SYSTEM"))
            .expect("m")
            .permissions()
            .mode()
            & 0o7777,
        0o640
    );
    let m = fs::metadata(&log1).expect("log1");
    assert_eq!(
        (m.len(), m.ino(), m.permissions().mode() & 0o7777),
        (0, log1_ino, 0o600)
    );
    assert_eq!(
        fs::read(r.join("Windows/Setup/Scripts/SetupComplete.cmd")).expect("new"),
        b"@echo off"
    );
    assert!(!r.join("Windows/debug/netsetup.log").exists());
    assert!(r.join("Windows/debug").is_dir());
    assert!(!r.join("Windows/Panther").exists());
    assert!(!r.join("Windows/Logs/CBS/CBS.log").exists());
    assert!(!c.join("SYSTEM.LOG9").exists());
    assert!(leftovers(r).is_empty(), "{:?}", leftovers(r));
    // The backend sees the new tree (listings are not stale).
    assert!(!b.exists(r"windows\panther\setupact.log"));
    assert!(b.is_dir(r"WINDOWS\SETUP\scripts"));
}

#[test]
fn commit_applies_changes_in_order() {
    let t = sample();
    let r = t.path();
    let mut b = DirBackend::open(r).expect("open");
    b.commit(&[
        write(r"Windows\a.txt", b"first"),
        write(r"WINDOWS\A.TXT", b"second"),
        write(r"Windows\b.txt", b"b"),
        delete(r"windows\b.txt"),
        delete(r"Windows\System32\config\SAM"),
        write(r"Windows\System32\config\SAM", b"back"),
        delete_tree(r"Windows\Panther"),
        write(r"windows\panther\unattend.xml", b"<unattend/>"),
        write(r"Windows\Logs\CBS\CBS.log", b"longer contents"),
        truncate(r"Windows\Logs\CBS\CBS.log"),
        // Written, then gone with its directory.
        write(r"Windows\Temp\x.tmp", b"x"),
        delete_tree(r"Windows\Temp"),
        write(r"Users\Default\NTUSER.DAT", b"one"),
        delete_tree(r"Users\Default"),
        write(r"Users\Default\NTUSER.DAT", b"two"),
        write(r"Users\Default\NTUSER.DAT", b"three"),
    ])
    .expect("commit");
    let w = r.join("Windows");
    assert_eq!(fs::read(w.join("a.txt")).expect("a"), b"second");
    assert!(!w.join("b.txt").exists());
    assert_eq!(
        fs::read(w.join("System32/config/SAM")).expect("sam"),
        b"back"
    );
    // The directory is made anew with the case the write gave.
    assert!(!w.join("Panther").exists());
    let panther: Vec<String> = fs::read_dir(w.join("panther"))
        .expect("panther")
        .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(panther, ["unattend.xml"]);
    assert_eq!(fs::read(w.join("Logs/CBS/CBS.log")).expect("cbs"), b"");
    assert!(!w.join("Temp").exists());
    let default = r.join("Users/Default");
    assert_eq!(fs::read(default.join("NTUSER.DAT")).expect("dat"), b"three");
    assert_eq!(fs::read_dir(default).expect("dir").count(), 1);
    assert!(leftovers(r).is_empty(), "{:?}", leftovers(r));
}

#[test]
fn impossible_changes_fail_and_change_nothing() {
    let t = sample();
    let r = t.path();
    let mut b = DirBackend::open(r).expect("open");
    let before = state(r);
    let long = "x".repeat(300);
    for c in [
        write(r"Windows\Panther", b"onto a directory"),
        truncate(r"Windows\Panther"),
        delete(r"Windows\Panther"),
        write(r"Windows\Panther\setupact.log\inside", b"under a file"),
        write(&format!(r"Windows\{long}"), b"name too long"),
        write(&format!(r"Windows\new\{long}\x"), b"name too long"),
    ] {
        let r2 = b.commit(&[
            write(r"Windows\System32\config\SYSTEM", b"changed"),
            truncate(r"Windows\System32\config\SYSTEM.LOG1"),
            delete_tree(r"Windows\Logs"),
            c.clone(),
        ]);
        assert!(
            matches!(r2, Err(ResealError::CommitFailed { .. })),
            "{c:?}: {r2:?}"
        );
        assert_eq!(state(r), before, "{c:?}");
    }
}

/// The changes a generalization run typically makes.
fn realistic_changes() -> Vec<FileChange> {
    vec![
        write(
            r"windows\system32\config\SYSTEM",
            b"regf system, generalized",
        ),
        write(
            r"Windows\System32\config\software",
            b"regf software, generalized",
        ),
        truncate(r"Windows\System32\config\SYSTEM.LOG1"),
        truncate(r"Windows\System32\config\system.log2"),
        delete(r"Windows\debug\netsetup.log"),
        delete(r"Windows\debug\absent.log"),
        delete_tree(r"Windows\Panther"),
        delete_tree(r"Windows\Logs"),
        write(r"Windows\Panther\unattend.xml", b"<unattend/>"),
        write(r"Windows\Setup\Scripts\new\SetupComplete.cmd", b"@echo off"),
        write(r"Users\Default\NTUSER.DAT", b"regf default, generalized"),
        write(r"Users\Default\NTUSER.DAT", b"regf default, twice"),
        write(r"Windows\Temp\x.tmp", b"x"),
        delete_tree(r"Windows\TEMP"),
        write(r"Windows\Temp\new\y.tmp", b"y"),
    ]
}

/// Upper-cased path -> contents of every file in the tree.
fn files_folded(root: &Path) -> BTreeMap<String, Vec<u8>> {
    state(root)
        .into_iter()
        .filter(|(_, (k, _, _))| *k == 'f')
        .map(|(p, (_, _, d))| (p.replace('/', "\\").to_uppercase(), d))
        .collect()
}

#[test]
fn every_failed_step_leaves_the_tree_byte_identical() {
    let t = sample();
    let r = t.path();
    let changes = realistic_changes();

    // What the in-memory backend makes of the same changes.
    let mut mem = MemoryBackend::new();
    for (p, d) in files_folded(r) {
        mem.insert(&p, d);
    }
    mem.commit(&changes).expect("memory commit");
    let expected: BTreeMap<String, Vec<u8>> = mem
        .paths()
        .into_iter()
        .map(|p| {
            let d = mem.read(&p).expect("read");
            (p.to_uppercase(), d)
        })
        .collect();

    let mut b = DirBackend::open(r).expect("open");
    let before = state(r);
    let mut n = 0;
    loop {
        b.set_fail_after(Some(n));
        match b.commit(&changes) {
            Err(ResealError::CommitFailed { message, .. }) => {
                assert!(message.contains("injected"), "step {n}: {message}");
                assert!(!message.contains("ROLLBACK INCOMPLETE"), "{message}");
                assert_eq!(state(r), before, "step {n}");
                assert!(leftovers(r).is_empty(), "step {n}: {:?}", leftovers(r));
                assert_eq!(b.last_commit_steps(), n + 1);
                // The backend still reads the old tree.
                assert_eq!(
                    b.read(r"Windows\Panther\setupact.log").expect("read"),
                    b"setup log"
                );
            }
            Err(e) => panic!("step {n}: unexpected error {e}"),
            Ok(()) => break,
        }
        n += 1;
        assert!(n < 1000, "the commit never succeeded");
    }
    assert_eq!(n, b.last_commit_steps());
    eprintln!("{n} primitive steps, each failed once and rolled back");
    assert!(n > 20, "only {n} steps");
    assert!(leftovers(r).is_empty(), "{:?}", leftovers(r));
    assert_eq!(files_folded(r), expected);
    let after = state(r);
    assert_eq!(after["Windows/System32/config/SYSTEM"].1 & 0o7777, 0o640);
    assert_eq!(after["Windows/System32/config/SOFTWARE"].1 & 0o7777, 0o604);
    assert_eq!(
        after["Windows/System32/config/SYSTEM.LOG1"].1 & 0o7777,
        0o600
    );
    assert!(after.contains_key("Windows/Temp/new"));
    assert!(!after.contains_key("Windows/Temp/x.tmp"));
}

#[test]
fn odd_inputs_never_panic() {
    let t = sample();
    let mut b = DirBackend::open(t.path()).expect("open");
    let long = "y".repeat(5000);
    let inputs = [
        "",
        ".",
        "\\",
        "/",
        "\\\\",
        "..",
        "...",
        " ",
        "a\\",
        "İ",
        "ß",
        "\u{fffd}",
        "Windows\\ ",
        &long,
    ];
    for p in inputs {
        let _ = b.read(p);
        let _ = b.read_head(p, usize::MAX);
        let _ = b.list(p);
        let _ = b.exists(p);
        let _ = b.is_dir(p);
        let _ = b.commit(&[delete(p)]);
        let _ = b.commit(&[truncate(p)]);
    }
    assert!(b.commit(&[write("", b"x")]).is_err());
    assert!(b.commit(&[delete_tree(".")]).is_err());
    assert!(b.exists(r"Windows\System32\config\SYSTEM"));
    assert!(leftovers(t.path()).is_empty());
}

/// Changes with renames: a folder with files (into a new parent), a file,
/// a change of case, writes before and after into the renamed folder, and a
/// missing source.
fn rename_changes() -> Vec<FileChange> {
    let rename = |from: &str, to: &str| FileChange::Rename {
        from: from.into(),
        to: to.into(),
    };
    vec![
        write(r"Windows\Panther\setupact.log", b"replaced before the move"),
        rename(r"Windows\Panther", r"Windows\Moved\Panther2"),
        write(r"Windows\Moved\Panther2\new.txt", b"written after the move"),
        rename(
            r"Windows\debug\netsetup.log",
            r"Windows\debug\NETSETUP-OLD.log",
        ),
        rename(r"Windows\Logs", r"Windows\LOGS"),
        rename(r"Windows\absent", r"Windows\absent2"),
        write(r"Windows\System32\config\SYSTEM", b"regf system, new"),
    ]
}

#[test]
fn rename_moves_trees_and_refuses_overwrites() {
    let t = sample();
    let r = t.path();
    let mut b = DirBackend::open(r).expect("open");
    b.commit(&rename_changes()).expect("commit");
    assert_eq!(
        fs::read(r.join("Windows/Moved/Panther2/setupact.log")).expect("read"),
        b"replaced before the move"
    );
    assert_eq!(
        fs::read(r.join("Windows/Moved/Panther2/UnattendGC/setupact.log")).expect("read"),
        b"gc log"
    );
    assert!(r.join("Windows/Moved/Panther2/new.txt").is_file());
    assert!(!r.join("Windows/Panther").exists());
    assert!(r.join("Windows/debug/NETSETUP-OLD.log").is_file());
    assert!(r.join("Windows/LOGS/CBS/CBS.log").is_file());
    assert!(!r.join("Windows/Logs").exists());
    assert!(leftovers(r).is_empty(), "{:?}", leftovers(r));

    // Onto an existing entry, or into itself: refused, nothing changed.
    let before = state(r);
    for (from, to) in [
        (r"Windows\LOGS", r"Windows\debug"),
        (r"Windows\LOGS", r"Windows\LOGS\CBS\inner"),
        (
            r"Windows\debug\NETSETUP-OLD.log",
            r"Windows\System32\config\SYSTEM",
        ),
    ] {
        let c = [
            write(r"Windows\Temp\x", b"x"),
            FileChange::Rename {
                from: from.into(),
                to: to.into(),
            },
        ];
        let e = b.commit(&c);
        assert!(matches!(e, Err(ResealError::CommitFailed { .. })), "{e:?}");
        assert_eq!(state(r), before, "{from} -> {to}");
        let mut mem = MemoryBackend::new();
        mem.insert(r"Windows\LOGS\CBS\CBS.log", b"cbs".to_vec());
        mem.insert(r"Windows\debug\x", b"x".to_vec());
        mem.insert(r"Windows\debug\NETSETUP-OLD.log", b"n".to_vec());
        mem.insert(r"Windows\System32\config\SYSTEM", b"s".to_vec());
        if !to.contains("inner") {
            assert!(mem.commit(&c).is_err(), "memory: {from} -> {to}");
            assert!(!mem.exists(r"Windows\Temp\x"));
        }
    }
}

#[test]
fn every_failed_step_of_a_rename_commit_rolls_back() {
    let t = sample();
    let r = t.path();
    let changes = rename_changes();
    let mut mem = MemoryBackend::new();
    for (p, d) in files_folded(r) {
        mem.insert(&p, d);
    }
    mem.commit(&changes).expect("memory commit");
    let expected: BTreeMap<String, Vec<u8>> = mem
        .paths()
        .into_iter()
        .map(|p| {
            let d = mem.read(&p).expect("read");
            (p.to_uppercase(), d)
        })
        .collect();
    let mut b = DirBackend::open(r).expect("open");
    let before = state(r);
    let mut n = 0;
    loop {
        b.set_fail_after(Some(n));
        match b.commit(&changes) {
            Err(ResealError::CommitFailed { message, .. }) => {
                assert!(message.contains("injected"), "step {n}: {message}");
                assert!(!message.contains("ROLLBACK INCOMPLETE"), "{message}");
                assert_eq!(state(r), before, "step {n}");
                assert!(leftovers(r).is_empty(), "step {n}: {:?}", leftovers(r));
            }
            Err(e) => panic!("step {n}: unexpected error {e}"),
            Ok(()) => break,
        }
        n += 1;
        assert!(n < 1000, "the commit never succeeded");
    }
    assert!(n > 10, "only {n} steps");
    assert!(leftovers(r).is_empty(), "{:?}", leftovers(r));
    assert_eq!(files_folded(r), expected);
}

/// The journal a commit on `root` keeps beside it.
fn journal_of(root: &Path) -> std::path::PathBuf {
    let name = root.file_name().expect("name").to_string_lossy();
    root.parent()
        .expect("parent")
        .join(format!(".{name}.reseal-journal"))
}

#[test]
fn a_kill_at_every_step_is_finished_or_undone_by_the_next_open() {
    let changes = realistic_changes();
    let reference = sample();
    let mut b = DirBackend::open(reference.path()).expect("open");
    b.commit(&changes).expect("commit");
    let after = state(reference.path());
    let steps = b.last_commit_steps();
    assert!(
        !journal_of(reference.path()).exists(),
        "a finished commit leaves no journal"
    );
    let (mut finished, mut undone) = (0, 0);
    for n in 0..steps {
        let t = sample();
        let r = t.path();
        let before = state(r);
        let mut b = DirBackend::open(r).expect("open");
        b.set_kill_after(Some(n));
        let e = b.commit(&changes).expect_err("killed");
        assert!(e.to_string().contains("simulated kill"), "step {n}: {e}");
        drop(b);
        assert!(journal_of(r).is_file(), "step {n}: the journal is left");
        let b = DirBackend::open(r).expect("reopen");
        let now = state(r);
        match b.recovery().expect("recovered") {
            reseal::backend::dir::Recovery::Finished { .. } => {
                finished += 1;
                assert_eq!(now, after, "step {n}: rolled forward");
            }
            reseal::backend::dir::Recovery::Undone { .. } => {
                undone += 1;
                assert_eq!(now, before, "step {n}: rolled back");
            }
        }
        assert!(leftovers(r).is_empty(), "step {n}: {:?}", leftovers(r));
        assert!(!journal_of(r).exists(), "step {n}: journal removed");
        // The next commit runs as usual.
        let mut b = b;
        b.commit(&changes).expect("commit after recovery");
        assert_eq!(state(r), after, "step {n}: re-run");
    }
    assert_eq!(finished, 1, "only a kill after the last step rolls forward");
    assert_eq!(undone, steps - 1);
}
