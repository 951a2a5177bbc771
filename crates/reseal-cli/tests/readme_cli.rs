//! The README's command list ("## Commands") says what the binary does:
//! the same commands as `reseal --help` and `reseal hive --help`, and for
//! each command exactly the flags its `--help` lists (global flags on their
//! own line).

use std::collections::BTreeSet;
use std::process::Command;

use reseal_testkit::workspace_root;

fn help(path: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_reseal"))
        .args(path)
        .arg("--help")
        .output()
        .unwrap();
    assert!(o.status.success(), "{path:?} --help");
    String::from_utf8(o.stdout).unwrap()
}

/// The commands listed under `Commands:` in a help text (without `help`).
fn commands(help: &str) -> BTreeSet<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// The long flags under `Options:` in a help text (without --help and
/// --version).
fn flags(help: &str) -> BTreeSet<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Options:"))
        .skip(1)
        .filter_map(|l| {
            let t = l.trim_start();
            let t = t
                .strip_prefix('-')
                .filter(|r| !r.starts_with('-'))
                .map(|r| r.get(3..).unwrap_or(""))
                .unwrap_or(t);
            t.strip_prefix("--")
                .map(|r| r.split([' ', '.', '<']).next().unwrap_or("").to_string())
        })
        .filter(|f| !f.is_empty() && f != "help" && f != "version")
        .collect()
}

/// The long flags named on one README line.
fn line_flags(line: &str) -> BTreeSet<String> {
    line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter_map(|w| w.strip_prefix("--"))
        .filter(|f| !f.is_empty())
        .map(str::to_string)
        .collect()
}

/// The README's command list: one entry per `reseal ...` line, with its
/// continuation lines joined and comments dropped.
fn readme_commands() -> Vec<String> {
    let text = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let section = text
        .split("\n## Commands\n")
        .nth(1)
        .expect("README has a ## Commands section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a sh block in ## Commands");
    let mut out: Vec<String> = Vec::new();
    for line in block.lines() {
        let line = line.split(" # ").next().unwrap_or("").trim_end();
        if line.starts_with("reseal ") {
            out.push(line.to_string());
        } else if line.starts_with(' ') {
            if let Some(last) = out.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
            }
        }
    }
    out
}

#[test]
fn readme_command_list_matches_help() {
    let top = help(&[]);
    let top_commands = commands(&top);
    let hive_commands = commands(&help(&["hive"]));
    let global = flags(&top);
    assert_eq!(
        global,
        ["log-file", "quiet", "verbose"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );

    let mut seen_top = BTreeSet::new();
    let mut seen_hive = BTreeSet::new();
    let mut seen_global = false;
    for line in readme_commands() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let first = words.get(1).copied().unwrap_or("");
        if first.starts_with('[') {
            // The global flags' line.
            assert_eq!(line_flags(&line), global, "{line}");
            seen_global = true;
            continue;
        }
        assert!(
            top_commands.contains(first),
            "README lists `{first}`, which --help does not: {line}"
        );
        let mut path = vec![first];
        if first == "hive" {
            let sub = words.get(2).copied().unwrap_or("");
            assert!(
                hive_commands.contains(sub),
                "README lists `hive {sub}`: {line}"
            );
            seen_hive.insert(sub.to_string());
            path.push(sub);
        } else {
            seen_top.insert(first.to_string());
        }
        let wanted: BTreeSet<String> = flags(&help(&path)).difference(&global).cloned().collect();
        assert_eq!(
            line_flags(&line),
            wanted,
            "README's `reseal {}` line and its --help differ",
            path.join(" ")
        );
    }
    seen_top.insert("hive".to_string());
    assert_eq!(seen_top, top_commands, "commands missing from the README");
    assert_eq!(
        seen_hive, hive_commands,
        "hive commands missing from the README"
    );
    assert!(seen_global, "the README lists no global flags");
}

#[test]
fn readme_names_the_files_it_points_to() {
    let text = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    for path in text
        .split(|c: char| c.is_whitespace() || matches!(c, '`' | '(' | ')' | '[' | ']' | ','))
        .filter(|w| w.starts_with("docs/") && !w.ends_with('/'))
        .map(|w| w.trim_end_matches(['.', ':', ';']))
    {
        assert!(
            workspace_root().join(path).is_file(),
            "README names {path}, which does not exist"
        );
    }
}
