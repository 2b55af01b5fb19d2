//! Flags shared by several commands are taken only where they apply (spec/cli.md, "Flags shared
//! by several commands"): the state flags by the commands that read or write state, `--config`
//! where a manifest is read or written, `--verbose` where it changes what is printed.

use stagecraft_tests::project::Project;
use stagecraft_tests::{run, workspace_root};

fn help(args: &[&str]) -> String {
    let mut args = args.to_vec();
    args.push("--help");
    let out = run(&workspace_root(), &args);
    assert_eq!(out.code, 0, "{args:?}: {out:?}");
    out.stdout
}

#[test]
fn commands_without_state_do_not_offer_the_state_flags() {
    for command in [&["init"][..], &["completions"], &["plugin", "new"]] {
        let text = help(command);
        for flag in ["--state-url", "--state-file"] {
            assert!(
                !text.contains(flag),
                "{command:?} --help offers {flag}:\n{text}"
            );
        }
    }
    for command in [&["completions"][..], &["plugin", "new"]] {
        let text = help(command);
        for flag in ["--config", "--verbose"] {
            assert!(
                !text.contains(flag),
                "{command:?} --help offers {flag}:\n{text}"
            );
        }
    }
    assert!(help(&["init"]).contains("--config <PATH>"));
    assert!(!help(&["init"]).contains("--verbose"));
    for command in [
        &["deploy"][..],
        &["rollback"],
        &["status"],
        &["releases", "list"],
        &["releases", "show"],
        &["releases", "prune"],
        &["state", "migrate"],
    ] {
        let text = help(command);
        for flag in [
            "--state-url <URL>",
            "--state-file <PATH>",
            "--config <PATH>",
        ] {
            assert!(
                text.contains(flag),
                "{command:?} --help lacks {flag}:\n{text}"
            );
        }
    }
    for command in [
        &["deploy"][..],
        &["rollback"],
        &["plugin", "check"],
        &["plugin", "test"],
    ] {
        assert!(help(command).contains("-v, --verbose"), "{command:?}");
    }
    assert!(!help(&["status"]).contains("--verbose"));
}

#[test]
fn a_state_flag_where_it_does_not_apply_is_a_usage_error_that_says_where_it_goes() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["init", "--state-url", "postgres://db/x"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(
            "note: --state-url is a flag of deploy, rollback, plan, status, releases and state, given \
             after the command name"
        ),
        "{out:?}"
    );
    assert!(!dir.path().join("stagecraft.toml").exists());
    let out = run(dir.path(), &["--state-file", "x.json", "releases", "list"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("note: --state-file is a flag of"),
        "{out:?}"
    );
}

#[test]
fn the_commands_that_read_or_write_state_take_the_state_flags() {
    let project = Project::file();
    project.deploy("prod", "v1");
    let state = project.store_spec();
    let moved = project.path().join("moved.json");
    std::fs::rename(&state, &moved).unwrap();
    let moved = moved.to_str().unwrap();
    let out = project.run(&["releases", "list", "--json", "--state-file", moved]);
    let listed: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let id = listed[0]["id"].as_str().unwrap();
    // Nothing at the default path now: a command that ignored the flag would see no release.
    for args in [
        &["releases", "list", "--state-file", moved][..],
        &["releases", "--state-file", moved, "list"],
        &["status", "--env", "prod", "--state-file", moved],
        &["releases", "show", "--state-file", moved, "--json", id],
    ] {
        let out = project.run(args);
        assert_eq!(out.code, 0, "{args:?}: {out:?}");
        assert!(out.stdout.contains("v1"), "{args:?}: {out:?}");
    }
    let out = project.run(&[
        "deploy",
        "--env",
        "prod",
        "--version",
        "v2",
        "--state-file",
        moved,
        "-v",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = project.run(&[
        "rollback",
        "--env",
        "prod",
        "--to-previous",
        "--state-file",
        moved,
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        !std::path::Path::new(&state).exists(),
        "the default file was written"
    );
    let copy = project.path().join("copy.json");
    let out = project.run(&[
        "state",
        "migrate",
        "--state-file",
        moved,
        "--to",
        copy.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("Migrated 3 releases"), "{out:?}");
}
