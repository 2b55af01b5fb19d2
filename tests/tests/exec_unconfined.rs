//! `exec_unconfined`: the manifest's named escape hatch. A program listed there runs without
//! Landlock and seccomp (it reads what the user can), is flagged loudly by `--dry-run`, and
//! still dies with everything it started when its phase ends.

use stagecraft_tests::hostile::ProcessMarker;
use stagecraft_tests::run;

fn project(manifest: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("stagecraft.toml"), manifest).unwrap();
    std::fs::write(dir.path().join("ungranted.txt"), "not granted to anyone").unwrap();
    dir
}

fn manifest(grant_key: &str, command: &str) -> String {
    format!(
        "[environments.prod]\n\
         [phases.build]\nplugin = \"builtin:exec\"\n\
         config = {{ command = {command:?} }}\n\
         [phases.build.grants]\n{grant_key} = [\"sh\", \"bash\"]\n"
    )
}

#[test]
fn an_unconfined_program_reads_what_a_confined_one_cannot() {
    let command = "sh -c 'cat ungranted.txt'";
    let confined = project(&manifest("exec", command));
    let out = run(
        confined.path(),
        &["deploy", "--env", "prod", "--version", "v1"],
    );
    assert_eq!(out.code, 2, "a failed phase: {out:?}");
    assert!(out.stderr.contains("Permission denied"), "{out:?}");
    assert!(!out.stdout.contains("not granted to anyone"), "{out:?}");

    let trusted = project(&manifest("exec_unconfined", command));
    let out = run(
        trusted.path(),
        &["deploy", "--env", "prod", "--version", "v1", "--verbose"],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("not granted to anyone"), "{out:?}");
}

#[test]
fn an_unconfined_program_still_dies_with_its_phase() {
    let marker = ProcessMarker::new();
    // bash, for `exec -a` (the marker in the command line); the first sleep is a background
    // job, the second leaves the process group and the session. Neither holds the output pipes,
    // so only killing them (not waiting for them) can make the check pass.
    let command = format!(
        "bash -c '(exec -a {m} sleep 300 >/dev/null 2>&1 &); setsid bash -c \"exec -a {m} sleep 301\" >/dev/null 2>&1 & sleep 0.2; echo started'",
        m = marker.marker
    );
    let dir = project(&manifest("exec_unconfined", &command));
    let out = run(dir.path(), &["deploy", "--env", "prod", "--version", "v1"]);
    marker.assert_none_left("after an exec_unconfined phase");
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn dry_run_flags_unconfined_programs_and_a_program_cannot_be_both() {
    let dir = project(&manifest("exec_unconfined", "sh -c true").replace(", \"bash\"", ""));
    let out = run(
        dir.path(),
        &["deploy", "--env", "prod", "--version", "v1", "--dry-run"],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("WARNING: runs `sh` UNCONFINED (exec_unconfined)"),
        "{out:?}"
    );
    let out = run(
        dir.path(),
        &[
            "deploy",
            "--env",
            "prod",
            "--version",
            "v1",
            "--dry-run",
            "--json",
        ],
    );
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(plan["phases"][0]["exec_unconfined"][0], "sh", "{plan}");

    let both = "[environments.prod]\n[phases.build]\nplugin = \"builtin:exec\"\n\
                config = { command = \"sh -c true\" }\n[phases.build.grants]\n\
                exec = [\"sh\"]\nexec_unconfined = [\"sh\"]\n";
    let dir = project(both);
    let out = run(
        dir.path(),
        &["deploy", "--env", "prod", "--version", "v1", "--dry-run"],
    );
    assert_eq!(out.code, 1, "a manifest error: {out:?}");
    assert!(
        out.stderr
            .contains("\"sh\" is in both exec and exec_unconfined"),
        "{out:?}"
    );
}
