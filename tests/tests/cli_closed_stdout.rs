//! Every command, run with its standard output closed by the reader (`stagecraft … | head -0`),
//! ends without a panic: a closed pipe ends the output, it is not a failure (exit 0 where the
//! command succeeded). Before, most commands exited 101 with "failed printing to stdout".

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use stagecraft_tests::{stagecraft, wasm_plugins_dir};

/// Run `stagecraft args` in `cwd` with a stdout pipe whose reading end is already closed.
fn with_closed_stdout(cwd: &Path, args: &[&str]) -> (i32, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut cmd: Command = stagecraft(cwd);
    let out = cmd
        .args(args)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn no_command_panics_on_a_closed_stdout() {
    let project = tempfile::tempdir().unwrap();
    let p = project.path();
    std::fs::write(
        p.join("stagecraft.toml"),
        "[environments.prod]\n[phases.build]\nplugin = \"builtin:noop\"\n",
    )
    .unwrap();
    let noop = wasm_plugins_dir().join("builtin/noop.wasm");
    let noop = noop.to_str().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let scaffold = tempfile::tempdir().unwrap();
    let scaffold_dir = scaffold.path().join("new-plugin");
    let scaffold_dir = scaffold_dir.to_str().unwrap();

    // Two real releases first, so that rollback and releases have something to show.
    for version in ["v1", "v2"] {
        let (code, stderr) =
            with_closed_stdout(p, &["deploy", "--env", "prod", "--version", version]);
        assert_eq!(code, 0, "deploy {version}: {stderr}");
    }
    let listed = stagecraft(p)
        .args(["releases", "list", "--json"])
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let id = listed[0]["id"].as_str().unwrap().to_string();
    let copy = empty.path().join("copy.json");
    let copy = copy.to_str().unwrap();
    let commands: Vec<(&Path, Vec<&str>)> = vec![
        (p, vec!["--help"]),
        (p, vec!["deploy", "--help"]),
        (
            p,
            vec!["deploy", "--env", "prod", "--version", "v3", "--dry-run"],
        ),
        (
            p,
            vec![
                "deploy",
                "--env",
                "prod",
                "--version",
                "v3",
                "--dry-run",
                "--json",
            ],
        ),
        (
            p,
            vec!["deploy", "--env", "prod", "--version", "v3", "--json"],
        ),
        (
            p,
            vec!["rollback", "--env", "prod", "--to-previous", "--dry-run"],
        ),
        (p, vec!["rollback", "--env", "prod", "--to-version", "v1"]),
        (p, vec!["releases", "list"]),
        (p, vec!["releases", "list", "--json"]),
        (p, vec!["releases", "show", &id]),
        (p, vec!["releases", "show", &id, "--json"]),
        (p, vec!["releases", "logs", &id]),
        (
            p,
            vec!["releases", "logs", &id, "--phase", "build", "--json"],
        ),
        (
            p,
            vec![
                "releases",
                "prune",
                "--env",
                "prod",
                "--keep",
                "1",
                "--dry-run",
            ],
        ),
        (p, vec!["state", "migrate", "--to", copy]),
        (p, vec!["status"]),
        (p, vec!["status", "--json"]),
        (p, vec!["plan", "--env", "prod", "--version", "v9"]),
        (
            p,
            vec!["plan", "--env", "prod", "--version", "v9", "--json"],
        ),
        (p, vec!["plugin", "check", noop]),
        (p, vec!["plugin", "check", noop, "--json"]),
        (p, vec!["plugin", "test", noop]),
        (p, vec!["plugin", "test", noop, "--json"]),
        (p, vec!["completions", "bash"]),
        (empty.path(), vec!["init"]),
        (p, vec!["plugin", "new", "--lang", "rust", scaffold_dir]),
    ];
    // A shell asking for completions.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = stagecraft(p)
        .env("COMPLETE", "fish")
        .args(["--", "stagecraft", "deploy", "--env", ""])
        .stdout(writer)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "completion: {out:?}");
    assert!(out.stderr.is_empty(), "completion: {out:?}");
    // Every command `--help` lists is in the sweep: a new command joins it or fails here.
    let swept: BTreeSet<String> = commands
        .iter()
        .map(|(_, args)| command_path(args))
        .collect();
    let missing: Vec<String> = every_command(p).difference(&swept).cloned().collect();
    assert!(
        missing.is_empty(),
        "commands missing from the closed-stdout sweep: {missing:?}"
    );
    for (cwd, args) in commands {
        let (code, stderr) = with_closed_stdout(cwd, &args);
        assert_ne!(code, 101, "{args:?} panicked: {stderr}");
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// The names a `--help` lists under "Commands:", without `help`.
fn listed_commands(cwd: &Path, args: &[&str]) -> Vec<String> {
    let out = stagecraft(cwd).args(args).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    help.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        // A command's line is indented two spaces; its wrapped description further.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

/// Every command path: `deploy`, `releases list`, `plugin new`, ...
fn every_command(cwd: &Path) -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    for command in listed_commands(cwd, &[]) {
        let subcommands = listed_commands(cwd, &[&command]);
        if subcommands.is_empty() {
            all.insert(command);
        } else {
            all.extend(
                subcommands
                    .into_iter()
                    .map(|sub| format!("{command} {sub}")),
            );
        }
    }
    assert!(all.contains("releases logs"), "{all:?}");
    all
}

/// The command a swept invocation runs: its leading words before any flag or value, as far as
/// the command tree goes (`releases show <id>` is `releases show`).
fn command_path(args: &[&str]) -> String {
    let words: Vec<&str> = args
        .iter()
        .take_while(|a| !a.starts_with('-'))
        .copied()
        .collect();
    match words.as_slice() {
        [group @ ("releases" | "plugin" | "state"), sub, ..] => format!("{group} {sub}"),
        [command, ..] => command.to_string(),
        [] => String::from("--help"),
    }
}
