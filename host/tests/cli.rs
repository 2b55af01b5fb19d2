//! The binary's front door: help, version and usage errors. (Also makes `cargo test` build the
//! `stagecraft` binary that the end-to-end tests in tests/ drive.)

use std::process::Command;

fn stagecraft(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_stagecraft"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_and_version_exit_0() {
    let (code, stdout, _) = stagecraft(&["--help"]);
    assert_eq!(code, 0);
    for cmd in [
        "deploy",
        "rollback",
        "releases",
        "plugin",
        "init",
        "completions",
    ] {
        assert!(stdout.contains(cmd), "--help lists {cmd}: {stdout}");
    }
    let (code, stdout, _) = stagecraft(&["--version"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("stagecraft "), "{stdout}");
}

#[test]
fn usage_errors_exit_1_not_clap_default_2() {
    let (code, _, stderr) = stagecraft(&["deploy", "--no-such-flag"]);
    assert_eq!(code, 1, "{stderr}");
    let (code, _, stderr) = stagecraft(&["no-such-command"]);
    assert_eq!(code, 1, "{stderr}");
    let (code, _, stderr) = stagecraft(&[]);
    assert_eq!(code, 1, "a missing command is a usage error: {stderr}");
}
