//! Grants are the only way out of the sandbox: each grant kind works as documented, everything
//! not granted is refused with a reason, and no path, link or rename reaches the state file.

mod plugin_support;

use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use plugin_support::*;
use stagecraft::plugin::*;

fn fs_op(host: &PluginHost, sandbox: &Sandbox, op: &str, path: &str, to: &str) -> PhaseRun {
    run_hostile(
        host,
        sandbox,
        &[("mode", "fs"), ("op", op), ("path", path), ("to", to)],
    )
    .0
}

#[test]
fn read_grant_is_visible_at_its_project_relative_path_and_read_only() {
    let host = shared_host();
    let project = Project::new();
    std::fs::create_dir_all(project.root().join("public")).unwrap();
    std::fs::write(project.root().join("public/index.html"), "hello").unwrap();
    let sandbox = project.sandbox(grants_rw(&["public"], &[]));

    let run = fs_op(&host, &sandbox, "read", "public/index.html", "");
    assert_eq!(run.result.unwrap().outputs["content"], "hello");

    let run = fs_op(&host, &sandbox, "write", "public/index.html", "");
    let msg = failure(&run);
    assert!(msg.starts_with("write public/index.html refused"), "{msg}");
    assert_eq!(
        std::fs::read_to_string(project.root().join("public/index.html")).unwrap(),
        "hello"
    );

    // Nothing else of the project is visible.
    std::fs::write(project.root().join("secret.txt"), "s").unwrap();
    let msg = failure(&fs_op(&host, &sandbox, "read", "secret.txt", ""));
    assert!(msg.contains("refused"), "{msg}");
}

#[test]
fn write_grant_is_read_write_and_created_when_missing() {
    let host = shared_host();
    let project = Project::new();
    let sandbox = project.sandbox(grants_rw(&[], &["dist/site"]));
    let run = fs_op(&host, &sandbox, "write", "dist/site/out.txt", "");
    assert!(run.result.is_ok(), "{:?}", run.result);
    assert_eq!(
        std::fs::read_to_string(project.root().join("dist/site/out.txt")).unwrap(),
        "written by hostile"
    );
    let run = fs_op(&host, &sandbox, "read", "dist/site/out.txt", "");
    assert_eq!(run.result.unwrap().outputs["content"], "written by hostile");
    // The parent of a write grant is not writable.
    let msg = failure(&fs_op(&host, &sandbox, "write", "dist/other.txt", ""));
    assert!(msg.contains("refused"), "{msg}");
}

#[test]
fn project_root_grant_is_dot_and_absolute_grants_keep_their_path() {
    let host = shared_host();
    let project = Project::new();
    std::fs::write(project.root().join("a.txt"), "root file").unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("b.txt"), "outside file").unwrap();
    let grants = Grants {
        read: vec![PathBuf::from("."), outside.path().to_path_buf()],
        ..Grants::default()
    };
    let sandbox = project.sandbox(grants);
    let run = fs_op(&host, &sandbox, "read", "a.txt", "");
    assert_eq!(run.result.unwrap().outputs["content"], "root file");
    let run = fs_op(&host, &sandbox, "read", "./a.txt", "");
    assert_eq!(run.result.unwrap().outputs["content"], "root file");
    let abs = outside.path().join("b.txt").display().to_string();
    let run = fs_op(&host, &sandbox, "read", &abs, "");
    assert_eq!(run.result.unwrap().outputs["content"], "outside file");
}

#[test]
fn a_missing_read_grant_fails_the_phase_naming_it() {
    let host = shared_host();
    let project = Project::new();
    let sandbox = project.sandbox(grants_rw(&["nope"], &[]));
    let msg = failure(&fs_op(&host, &sandbox, "read", "nope/x", ""));
    assert!(msg.contains("read grant") && msg.contains("nope"), "{msg}");
}

/// Every way the fixture knows to reach the state file, with the widest grant a project can
/// get (the whole project root, read-write) and a symlink planted in it by the "user".
#[test]
fn no_escape_reaches_the_state_file() {
    let host = shared_host();
    let project = Project::new();
    let root = project.root();
    let state = project.state_file();
    let state_abs = state.display().to_string();
    let state_dir = state.parent().unwrap().to_path_buf();
    std::fs::write(root.join("inside.txt"), "inside").unwrap();
    std::os::unix::fs::symlink(&state, root.join("evil")).unwrap();
    std::os::unix::fs::symlink(&state_dir, root.join("evildir")).unwrap();
    std::os::unix::fs::symlink("../state/releases.json", root.join("evilrel")).unwrap();
    let sandbox = project.sandbox(grants_rw(&[], &["."]));
    assert!(check_grants(&sandbox.grants, &root, std::slice::from_ref(&state)).is_ok());

    let lock = state_dir.join("releases.json.lock").display().to_string();
    let attempts: Vec<(&str, String, String)> = vec![
        ("read", "../state/releases.json".into(), String::new()),
        ("write", "../state/releases.json".into(), String::new()),
        ("append", "../state/releases.json".into(), String::new()),
        ("delete", "../state/releases.json".into(), String::new()),
        (
            "rename",
            "../state/releases.json".into(),
            "stolen.json".into(),
        ),
        (
            "rename",
            "inside.txt".into(),
            "../state/releases.json".into(),
        ),
        (
            "hardlink",
            "../state/releases.json".into(),
            "linked.json".into(),
        ),
        (
            "symlink",
            "../state/releases.json".into(),
            "made-link".into(),
        ),
        ("read", state_abs.clone(), String::new()),
        ("write", state_abs.clone(), String::new()),
        ("delete", lock.clone(), String::new()),
        ("symlink", state_abs.clone(), "made-abs-link".into()),
        ("read", "./../state/releases.json.bak".into(), String::new()),
        ("read", "evil".into(), String::new()),
        ("write", "evil".into(), String::new()),
        ("append", "evil".into(), String::new()),
        ("read", "evilrel".into(), String::new()),
        ("write", "evilrel".into(), String::new()),
        ("read", "evildir/releases.json".into(), String::new()),
        ("write", "evildir/releases.json".into(), String::new()),
        ("delete", "evildir/releases.json".into(), String::new()),
        (
            "rename",
            "evildir/releases.json".into(),
            "stolen2.json".into(),
        ),
        ("list", "evildir".into(), String::new()),
        ("list", "..".into(), String::new()),
    ];
    for (op, path, to) in &attempts {
        let run = fs_op(&host, &sandbox, op, path, to);
        let msg = match &run.result {
            Ok(report) => panic!("{op} {path} {to} escaped the sandbox: {report:?}"),
            Err(failure) => failure.to_string(),
        };
        assert!(
            msg.contains("refused") && msg.contains(op),
            "{op} {path}: {msg}"
        );
        project.assert_state_untouched();
    }
    // A hard link to the planted symlink is a link to the symlink itself (linkat does not follow
    // it), so it may be made, but it leads nowhere either.
    let _ = fs_op(&host, &sandbox, "hardlink", "evil", "linked2.json");
    for op in ["read", "write", "append"] {
        let msg = failure(&fs_op(&host, &sandbox, op, "linked2.json", ""));
        assert!(
            msg.contains("refused"),
            "{op} through a hard-linked symlink: {msg}"
        );
    }
    project.assert_state_untouched();
    // The operations failed without leaving anything behind in the grant either.
    for name in ["stolen.json", "linked.json", "stolen2.json"] {
        assert!(!root.join(name).exists(), "{name}");
    }
    assert_eq!(
        std::fs::read_to_string(root.join("inside.txt")).unwrap(),
        "inside"
    );
}

#[test]
fn env_grant_passes_only_listed_variables() {
    // A name no other test uses, set once for this process.
    const NAME: &str = "STAGECRAFT_FIXTURE_SECRET_ENV";
    unsafe { std::env::set_var(NAME, "s3cret") };
    let host = shared_host();
    let project = Project::new();
    let (run, _) = run_hostile(
        &host,
        &project.sandbox(Grants::default()),
        &[("mode", "env"), ("var", NAME)],
    );
    let msg = failure(&run);
    assert!(msg.contains(NAME) && msg.contains("not granted"), "{msg}");

    let grants = Grants {
        env: vec![NAME.to_string()],
        ..Grants::default()
    };
    let (run, _) = run_hostile(
        &host,
        &project.sandbox(grants.clone()),
        &[("mode", "env"), ("var", NAME)],
    );
    assert_eq!(run.result.unwrap().outputs["value"], "s3cret");
    // HOME is set for the host but never granted.
    let (run, _) = run_hostile(
        &host,
        &project.sandbox(grants),
        &[("mode", "env"), ("var", "PATH")],
    );
    assert!(run.result.is_err());
}

#[test]
fn sockets_are_refused_naming_the_missing_network_grant() {
    let host = shared_host();
    let project = Project::new();
    let (run, lines) = run_hostile(
        &host,
        &project.sandbox(Grants::default()),
        &[("mode", "socket"), ("addr", "127.0.0.1:9")],
    );
    let msg = failure(&run);
    assert!(
        msg.contains("a phase has no sockets; it reaches the network through wasi:http"),
        "{msg}"
    );
    assert!(msg.contains("127.0.0.1:9"), "{msg}");
    assert!(lines.text().contains("network access refused"));
}

#[test]
fn exec_runs_only_granted_programs_in_the_project_root() {
    let host = shared_host();
    let project = Project::new();
    let (run, lines) = run_hostile(
        &host,
        &project.sandbox(Grants::default()),
        &[("mode", "exec"), ("program", "sh")],
    );
    let msg = failure(&run);
    assert!(
        msg.contains("`sh`") && msg.contains("not in this phase's exec grant"),
        "{msg}"
    );
    assert!(msg.contains("granted: none"), "{msg}");
    // Said once: a plugin that returns the refusal as its error does not get it appended again.
    assert_eq!(
        msg.matches("not in this phase's exec grant").count(),
        1,
        "{msg}"
    );
    assert!(lines.text().contains("exec of `sh` refused"));

    let grants = Grants {
        exec: vec!["pwd".into(), "env".into()],
        ..Grants::default()
    };
    let (run, _) = run_hostile(
        &host,
        &project.sandbox(grants.clone()),
        &[("mode", "exec"), ("program", "sh")],
    );
    assert!(failure(&run).contains("granted: pwd, env"));
    // A path is never a granted name.
    let (run, _) = run_hostile(
        &host,
        &project.sandbox(grants.clone()),
        &[("mode", "exec"), ("program", "/usr/bin/env"), ("args", "")],
    );
    assert!(failure(&run).contains("not in this phase's exec grant"));

    let (run, _) = run_hostile(
        &host,
        &project.sandbox(grants.clone()),
        &[("mode", "exec"), ("program", "pwd"), ("args", "-P")],
    );
    let report = run.result.unwrap();
    assert_eq!(
        PathBuf::from(report.outputs["stdout"].trim()),
        project.root().canonicalize().unwrap()
    );
}

#[test]
fn exec_gets_only_granted_environment_plus_path() {
    const NAME: &str = "STAGECRAFT_FIXTURE_EXEC_ENV";
    unsafe { std::env::set_var(NAME, "granted-value") };
    let host = shared_host();
    let project = Project::new();
    let grants = Grants {
        exec: vec!["env".into()],
        env: vec![NAME.into()],
        ..Grants::default()
    };
    let (run, _) = run_hostile(
        &host,
        &project.sandbox(grants),
        &[("mode", "exec"), ("program", "env"), ("args", "")],
    );
    let stdout = run.result.unwrap().outputs["stdout"].clone();
    let mut names: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    names.sort();
    names.retain(|n| *n != "STAGECRAFT_LEASE");
    // TMPDIR is the phase's private temp dir (confined programs can write nowhere else).
    assert_eq!(names, vec!["PATH", NAME, "TMPDIR"], "{stdout}");
    assert!(
        stdout.contains("TMPDIR=/") && stdout.contains("stagecraft-exec-"),
        "{stdout}"
    );
    assert!(stdout.contains("granted-value"));
}

#[test]
fn exec_is_killed_at_the_phase_deadline() {
    let host = shared_host();
    let project = Project::new();
    let grants = Grants {
        exec: vec!["sleep".into()],
        ..Grants::default()
    };
    let mut sandbox = project.sandbox(grants);
    sandbox.limits = short_timeout(300);
    let (run, _) = run_hostile(
        &host,
        &sandbox,
        &[("mode", "exec"), ("program", "sleep"), ("args", "600")],
    );
    assert_eq!(failure(&run), "timeout limit of 300ms exceeded");
}

/// A guest waiting in a WASI call (here an `open` of a FIFO nobody writes to, which blocks in the
/// kernel) cannot be interrupted by the epoch deadline; the host drops the whole run instead.
#[test]
fn a_guest_blocked_in_a_wasi_call_fails_at_the_phase_deadline() {
    let host = shared_host();
    let project = Project::new();
    std::fs::create_dir_all(project.root().join("dist")).unwrap();
    let fifo = project.root().join("dist/never-written.fifo");
    stagecraft_tests::make_fifo(&fifo);
    let mut sandbox = project.sandbox(grants_rw(&[], &["dist"]));
    sandbox.limits = short_timeout(300);
    let run = fs_op(&host, &sandbox, "read", "dist/never-written.fifo", "");
    assert_eq!(failure(&run), "timeout limit of 300ms exceeded");
    // The open the guest started is still blocked on the host's blocking pool: a writer lets
    // it finish (a non-blocking open fails at once if it has not reached the kernel yet).
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(&fifo);
}

#[test]
fn grants_exposing_the_state_file_are_refused_with_the_path() {
    let project = Project::new();
    let root = project.root();
    let state = project.state_file();
    let protected = vec![
        state.clone(),
        state.with_extension("json.lock"),
        state.with_extension("json.bak"),
    ];
    assert!(check_grants(&grants_rw(&["."], &["dist"]), &root, &protected).is_ok());
    for bad in ["..", "../state", "../state/releases.json", "../state/sub"] {
        let err = check_grants(&grants_rw(&[bad], &[]), &root, &protected).unwrap_err();
        assert!(err.contains(bad), "{bad}: {err}");
        assert!(err.contains("read grant"), "{err}");
        let err = check_grants(&grants_rw(&[], &[bad]), &root, &protected).unwrap_err();
        assert!(err.contains("write grant"), "{err}");
    }
}
