//! Hostile directory roots: special files, oversized hives and logs,
//! missing or misplaced hives, hard links and symbolic links. Every case is
//! built here from the synthetic root; each run must refuse (naming the
//! path) or handle the oddity, never read without bound, hang, succeed
//! without the hives it needs, or write outside the root.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use reseal::backend::Backend;
use reseal::backend::dir::DirBackend;
use reseal::discover::load_install;
use reseal::generalize::generalize;
use reseal::hives::{self, HIVE_MAX_BYTES, HiveId};
use reseal::options::GeneralizeOptions;
use reseal::report::{Outcome, RunReport};
use reseal_testkit::build_windows_root;

const CONFIG: &str = r"Windows\System32\config";

fn host(root: &Path, image_path: &str) -> PathBuf {
    image_path
        .split('\\')
        .fold(root.to_path_buf(), |p, c| p.join(c))
}

fn config(root: &Path, name: &str) -> PathBuf {
    host(root, &format!(r"{CONFIG}\{name}"))
}

/// A fresh synthetic root in `tmp/name`.
fn fresh_root(tmp: &Path, name: &str) -> PathBuf {
    let root = tmp.join(name);
    build_windows_root(&root, None).unwrap();
    root
}

fn mkfifo(p: &Path) {
    let _ = fs::remove_file(p);
    let st = std::process::Command::new("mkfifo")
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success(), "mkfifo {}", p.display());
}

/// Every entry of a tree by relative path: a regular file's bytes (only its
/// length above 64 MiB), a link's target, or the kind of a special file. It
/// never opens a special file.
fn tree_state(root: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            let meta = fs::symlink_metadata(&p).unwrap();
            let ft = meta.file_type();
            let v = if ft.is_symlink() {
                format!("link {}", fs::read_link(&p).unwrap().display())
            } else if ft.is_dir() {
                walk(root, &p, out);
                "dir".to_string()
            } else if !ft.is_file() {
                format!("special {ft:?}")
            } else if meta.len() > 64 << 20 {
                format!("big {}", meta.len())
            } else {
                format!("file {:?}", fs::read(&p).unwrap())
            };
            out.insert(rel, v);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Runs generalize and returns its report (a run that errors is returned as
/// the error's text).
fn run(root: &Path) -> Result<RunReport, String> {
    let mut b = DirBackend::open(root).unwrap();
    generalize(&mut b, &GeneralizeOptions::default()).map_err(|e| e.to_string())
}

/// Asserts the run refused with a finding whose message contains every
/// word of `needles`, and that the tree is unchanged.
fn assert_refused(root: &Path, needles: &[&str]) {
    let before = tree_state(root);
    let report = run(root).expect("the run should be refused, not fail");
    assert_eq!(report.outcome, Outcome::Refused, "{report:#?}");
    let messages: Vec<&str> = report
        .installs
        .iter()
        .flat_map(|i| i.findings.iter().map(|f| f.message.as_str()))
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| needles.iter().all(|n| m.contains(n))),
        "no finding mentions {needles:?}: {messages:#?}"
    );
    assert!(before == tree_state(root), "the tree changed");
}

/// The directory backend reads only regular files: `/dev/zero`,
/// `/dev/urandom` and `/dev/null` (character devices reached through a
/// root of `/`) are refused by both `read` and `read_head`, with an error
/// naming the path and the kind of file, instead of being read forever.
#[test]
fn devices_are_refused_by_the_directory_backend() {
    let b = DirBackend::open(Path::new("/")).unwrap();
    for dev in ["dev/zero", "dev/urandom", "dev/null"] {
        if !Path::new("/").join(dev).exists() {
            continue;
        }
        for err in [
            b.read(dev).unwrap_err(),
            b.read_head(dev, 1 << 20).unwrap_err(),
        ] {
            let msg = err.to_string();
            assert!(
                msg.contains(dev) && msg.contains("character device"),
                "{dev}: {msg}"
            );
        }
        // Loading it as a hive is a load error, not an unbounded read.
        let e = hives::load(&b, HiveId::Sam, dev).unwrap_err();
        assert!(e.message.contains("character device"), "{}", e.message);
    }
}

/// A FIFO as SYSTEM or SOFTWARE, or as a .LOG1 beside them, is refused
/// (the run would otherwise wait forever for a writer).
#[test]
fn fifos_as_hives_or_logs_are_refused_without_hanging() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, name) in ["SYSTEM", "SOFTWARE", "SAM.LOG1", "SOFTWARE.LOG1"]
        .iter()
        .enumerate()
    {
        let root = fresh_root(tmp.path(), &format!("r{i}"));
        mkfifo(&config(&root, name));
        assert_refused(&root, &[name, "FIFO"]);
    }
}

/// A character device as SOFTWARE or as SYSTEM.LOG1 (made with mknod, which
/// needs root; the backend-level test above covers devices otherwise).
#[test]
fn character_devices_as_hives_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let probe = tmp.path().join("probe");
    let can = std::process::Command::new("mknod")
        .args([probe.as_os_str(), "c".as_ref(), "1".as_ref(), "5".as_ref()])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !can {
        eprintln!(
            "mknod is not permitted here; covered by devices_are_refused_by_the_directory_backend"
        );
        return;
    }
    for (i, name) in ["SOFTWARE", "SYSTEM.LOG1"].iter().enumerate() {
        let root = fresh_root(tmp.path(), &format!("r{i}"));
        let p = config(&root, name);
        fs::remove_file(&p).unwrap();
        fs::rename(&probe, &p).unwrap();
        assert_refused(&root, &[name, "character device"]);
        let st = std::process::Command::new("mknod")
            .args([probe.as_os_str(), "c".as_ref(), "1".as_ref(), "5".as_ref()])
            .status()
            .unwrap();
        assert!(st.success());
    }
}

/// The base block of the synthetic SYSTEM with its hive-bins size set to
/// `bins`.
fn base_block_claiming(root: &Path, bins: u32) -> Vec<u8> {
    let mut head = fs::read(config(root, "SYSTEM")).unwrap();
    head.truncate(4096);
    head[0x28..0x2c].copy_from_slice(&bins.to_le_bytes());
    head
}

/// A 2 GiB SYSTEM (sparse) is refused before it is read, with the size and
/// the limit in the message; so is a small SYSTEM whose base block claims
/// more than the limit.
#[test]
fn oversized_hives_are_refused_before_reading() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fresh_root(tmp.path(), "big");
    let head = base_block_claiming(&root, 0x7fff_f000);
    let f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(config(&root, "SYSTEM"))
        .unwrap();
    use std::io::Write;
    (&f).write_all(&head).unwrap();
    f.set_len(2 << 30).unwrap();
    drop(f);
    assert_refused(&root, &["SYSTEM", &(2u64 << 30).to_string(), "limit"]);

    let root = fresh_root(tmp.path(), "claims");
    let mut head = base_block_claiming(&root, 0x7fff_f000);
    head.resize(8192, 0);
    fs::write(config(&root, "SYSTEM"), &head).unwrap();
    let b = DirBackend::open(&root).unwrap();
    let e = hives::load(&b, HiveId::System, &format!(r"{CONFIG}\SYSTEM")).unwrap_err();
    assert!(
        e.message.contains("claims") && e.message.contains(&HIVE_MAX_BYTES.to_string()),
        "{}",
        e.message
    );
}

/// A sparse 2 GiB SOFTWARE.LOG1 beside a small hive is over the log limit
/// and refused unread.
#[test]
fn oversized_logs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fresh_root(tmp.path(), "log");
    let log = config(&root, "SOFTWARE.LOG1");
    let f = fs::OpenOptions::new().write(true).open(&log).unwrap();
    f.set_len(2 << 30).unwrap();
    drop(f);
    let sw_len = fs::metadata(config(&root, "SOFTWARE")).unwrap().len();
    assert!(hives::log_limit(sw_len) < 2 << 30);
    assert_refused(&root, &["SOFTWARE.LOG1", "transaction log", "limit"]);
}

/// Sanity: the untouched synthetic root loads every machine hive (so the
/// refusals above come from the hostile file alone).
#[test]
fn the_plain_root_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fresh_root(tmp.path(), "plain");
    let b = DirBackend::open(&root).unwrap();
    let install = load_install(&b, "Windows");
    assert!(install.load_errors.is_empty(), "{:?}", install.load_errors);
    for (id, _) in HiveId::MACHINE {
        assert!(install.loaded(&id).is_some(), "{id:?}");
    }
}

/// An answer file given on the command line is read only when it is a
/// regular file under the limit: a FIFO, `/dev/zero` or an oversized file
/// is refused by name without being read.
#[test]
fn answer_files_must_be_small_regular_files() {
    use reseal::backend::dir::read_regular_file;
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("unattend.xml");
    mkfifo(&fifo);
    let e = read_regular_file(&fifo, 1 << 20, "the answer file").unwrap_err();
    assert!(e.to_string().contains("FIFO"), "{e}");
    assert!(e.to_string().contains("unattend.xml"), "{e}");
    let e = read_regular_file(Path::new("/dev/zero"), 1 << 20, "the answer file").unwrap_err();
    assert!(e.to_string().contains("character device"), "{e}");
    let big = tmp.path().join("big.xml");
    fs::write(&big, vec![b' '; 2048]).unwrap();
    let e = read_regular_file(&big, 1024, "the answer file").unwrap_err();
    assert!(e.to_string().contains("over the limit"), "{e}");
    assert_eq!(read_regular_file(&big, 4096, "x").unwrap().len(), 2048);
}

/// Every machine hive a run needs (SYSTEM aside, which marks the install)
/// that is missing, a directory, unreadable, or a link leaving the root is
/// a refusal naming the path, and the RegBack copy stays.
#[test]
fn missing_or_misplaced_machine_hives_refuse_the_run() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside-SOFTWARE");
    fs::write(&outside, b"not a hive").unwrap();
    let root_user = fs::metadata("/proc/self")
        .map(|_| {
            std::process::Command::new("id")
                .arg("-u")
                .output()
                .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
        })
        .unwrap_or(false);
    let cases: Vec<(&str, &str, &str)> = vec![
        ("SOFTWARE", "missing", "not found"),
        ("SAM", "missing", "not found"),
        ("SECURITY", "missing", "not found"),
        ("SAM", "dir", "directory"),
        ("SECURITY", "dir", "directory"),
        ("SOFTWARE", "dir", "directory"),
        ("SOFTWARE", "link-out", "out of the image root"),
        ("SAM", "unreadable", "ermission"),
    ];
    for (i, (name, how, word)) in cases.into_iter().enumerate() {
        if how == "unreadable" && root_user {
            // Mode 000 does not stop root; the other cases still run.
            continue;
        }
        let root = fresh_root(tmp.path(), &format!("r{i}"));
        let p = config(&root, name);
        match how {
            "missing" => fs::remove_file(&p).unwrap(),
            "dir" => {
                fs::remove_file(&p).unwrap();
                fs::create_dir(&p).unwrap();
            }
            "link-out" => {
                fs::remove_file(&p).unwrap();
                std::os::unix::fs::symlink(&outside, &p).unwrap();
            }
            "unreadable" => fs::set_permissions(&p, fs::Permissions::from_mode(0o000)).unwrap(),
            _ => unreachable!(),
        }
        assert_refused(&root, &[&format!(r"config\{name}"), word]);
        assert!(
            config(&root, &format!(r"RegBack\{name}")).is_file(),
            "{name} {how}: the RegBack copy was deleted"
        );
    }
}

/// Names under Prefetch that hold `\`, `:`, `..` or control characters do
/// not make the run refuse: the addressable ones are handled as literal
/// names (deleted like any prefetch file), the others are left in place and
/// named in the report; nothing outside Prefetch is touched because of
/// them.
#[test]
fn odd_names_under_prefetch_are_handled_literally_or_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fresh_root(tmp.path(), "odd");
    let prefetch = host(&root, r"Windows\Prefetch");
    fs::create_dir_all(&prefetch).unwrap();
    // A decoy that `..\SYSTEM.pf` read as a path would reach.
    let decoy = host(&root, r"Windows\SYSTEM.pf");
    fs::write(&decoy, b"decoy").unwrap();
    let unaddressable = [r"..\SYSTEM.pf", r"a\b.pf", "c:d.pf"];
    let literal = ["..x.pf", "ctl\u{1}\u{7f}.pf", "APP-1234.pf"];
    for n in unaddressable.iter().chain(literal.iter()) {
        fs::write(prefetch.join(n), b"MAM\x04").unwrap();
    }
    let report = run(&root).expect("the run must not fail");
    assert_eq!(report.outcome, Outcome::Done, "{report:#?}");
    for n in unaddressable {
        assert!(prefetch.join(n).exists(), "{n:?} was removed");
    }
    for n in literal {
        assert!(!prefetch.join(n).exists(), "{n:?} was not deleted");
    }
    assert_eq!(fs::read(&decoy).unwrap(), b"decoy");
    let caveats: Vec<&str> = report
        .installs
        .iter()
        .flat_map(|i| i.not_done.iter().map(|n| n.message.as_str()))
        .collect();
    for n in unaddressable {
        assert!(
            caveats.iter().any(|c| c.contains(n)),
            "{n:?} is not reported: {caveats:#?}"
        );
    }
}

/// A `Users` folder that is a link leading out of the root is reported as a
/// refusal naming the profile, not a run that silently skips every profile.
#[test]
fn users_link_out_of_the_root_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fresh_root(tmp.path(), "users");
    let outside = tmp.path().join("outside-users");
    fs::rename(root.join("Users"), &outside).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("Users")).unwrap();
    assert_refused(&root, &["Users", "out of the image root"]);
    let b = DirBackend::open(&root).unwrap();
    let install = load_install(&b, "Windows");
    assert!(
        install
            .load_errors
            .iter()
            .any(|e| matches!(&e.id, HiveId::NtUser(d) if d.starts_with("Users"))),
        "{:?}",
        install.load_errors
    );
}

/// A hive or a .LOG1 hard-linked to a file outside the root is refused at
/// load time, and the outside file keeps its bytes (the run would otherwise
/// reset the log in place, truncating the shared inode).
#[test]
fn hard_linked_hives_and_logs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, name) in ["SYSTEM.LOG1", "SOFTWARE.LOG2", "SAM", "SOFTWARE"]
        .iter()
        .enumerate()
    {
        let root = fresh_root(tmp.path(), &format!("r{i}"));
        let outside = tmp.path().join(format!("precious-{i}"));
        let p = config(&root, name);
        // The outside file takes the hive's or log's bytes so that a run
        // reading it through the link would find a valid file.
        fs::copy(&p, &outside).unwrap();
        let mut original = fs::read(&outside).unwrap();
        if original.is_empty() {
            // An empty log would be truncated to the same empty state:
            // give it bytes so a truncation would show.
            original = b"outside data that must survive".to_vec();
            fs::write(&outside, &original).unwrap();
            fs::write(&p, b"").unwrap();
            fs::remove_file(&p).unwrap();
            fs::hard_link(&outside, &p).unwrap();
        } else {
            fs::remove_file(&p).unwrap();
            fs::hard_link(&outside, &p).unwrap();
        }
        let before = tree_state(&root);
        let report = run(&root).expect("refused, not failed");
        assert_eq!(report.outcome, Outcome::Refused, "{name}: {report:#?}");
        let messages: Vec<&str> = report
            .installs
            .iter()
            .flat_map(|i| i.findings.iter().map(|f| f.message.as_str()))
            .collect();
        assert!(
            messages
                .iter()
                .any(|m| m.contains(name) && m.contains("hard links")),
            "{name}: {messages:#?}"
        );
        assert_eq!(fs::read(&outside).unwrap(), original, "{name}");
        assert!(before == tree_state(&root), "{name}: the tree changed");
    }
}
