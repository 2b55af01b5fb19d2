//! End-to-end: deploy and rollback through the built binary, with built-in plugins.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;
use stagecraft_tests::{blocking_manifest, run, stagecraft, workspace_root, BlockedDeploy, Run};

/// A temporary project with a manifest.
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new(manifest: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("stagecraft.toml"), manifest).unwrap();
        Project { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn state_file(&self) -> PathBuf {
        self.path().join(".stagecraft/releases.json")
    }

    fn run(&self, args: &[&str]) -> Run {
        run(self.path(), args)
    }

    fn releases(&self, env: &str) -> Vec<Value> {
        let out = self.run(&["releases", "list", "--env", env, "--json"]);
        assert_eq!(out.code, 0, "{out:?}");
        serde_json::from_str::<Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    fn show(&self, id: &str) -> Value {
        let out = self.run(&["releases", "show", id, "--json"]);
        assert_eq!(out.code, 0, "{out:?}");
        serde_json::from_str(&out.stdout).unwrap()
    }

    fn deploy_json(&self, args: &[&str]) -> (Run, Value) {
        let mut all = vec!["deploy", "--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        let record = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
        (out, record)
    }
}

const PHASES: [&str; 6] = [
    "build",
    "push",
    "migrate_pre",
    "rollout",
    "migrate_post",
    "finalize",
];

/// Every canonical phase on builtin:noop, environments prod and staging.
fn noop_manifest() -> String {
    let mut m = String::from("[environments.prod]\n[environments.staging]\n");
    for p in PHASES {
        m.push_str(&format!("[phases.{p}]\nplugin = \"builtin:noop\"\n"));
    }
    m
}

/// A phase of a release as `--json` prints it (phases are an array in pipeline order).
fn phase<'v>(record: &'v Value, name: &str) -> &'v Value {
    record["phases"]
        .as_array()
        .and_then(|phases| phases.iter().find(|p| p["name"] == name))
        .unwrap_or(&Value::Null)
}

fn status(record: &Value, name: &str) -> String {
    phase(record, name)["status"]
        .as_str()
        .unwrap_or("<absent>")
        .to_string()
}

#[test]
fn deploy_runs_every_phase_and_records_the_release() {
    let p = Project::new(&noop_manifest());
    let out = p.run(&[
        "deploy",
        "--env",
        "prod",
        "--version",
        " v1 ",
        "--commit",
        "abc123",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let releases = p.releases("prod");
    assert_eq!(releases.len(), 1);
    let r = &releases[0];
    assert_eq!(r["version"], "v1", "surrounding spaces are trimmed");
    assert_eq!(r["commit_sha"], "abc123");
    assert_eq!(r["operation"], "deploy");
    assert_eq!(r["status"], "completed");
    for phase in PHASES {
        assert_eq!(status(r, phase), "completed", "{phase}");
    }
    // Deterministic human output: the release line, one line per phase, the result line.
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 8, "{out:?}");
    assert!(
        lines[1].starts_with("  build         completed "),
        "{out:?}"
    );
    assert!(
        lines[7].starts_with("Deployed v1 to prod (release rel-"),
        "{out:?}"
    );
    assert!(
        !out.stdout.contains(" ms)"),
        "no durations without --verbose: {out:?}"
    );
}

#[test]
fn unconfigured_phases_are_skipped_and_json_is_the_final_record() {
    let p = Project::new("[environments.prod]\n[phases.rollout]\nplugin = \"builtin:noop\"\n");
    let (out, record) = p.deploy_json(&["--env", "prod", "--version", "v1"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(status(&record, "build"), "skipped");
    assert_eq!(phase(&record, "build")["summary"], "no plugin configured");
    assert_eq!(status(&record, "rollout"), "completed");
    assert_eq!(record["status"], "completed");
    assert_eq!(
        p.show(record["id"].as_str().unwrap())["phases"],
        record["phases"]
    );
}

#[test]
fn bad_input_exits_1_and_writes_nothing() {
    let p = Project::new(&noop_manifest());
    let cases: &[(&[&str], &str)] = &[
        (
            &["deploy", "--version", "v1"],
            "no environment given; pass --env <name> or set STAGECRAFT_ENV",
        ),
        (
            &["deploy", "--env", "qa", "--version", "v1"],
            "unknown environment \"qa\"",
        ),
        (
            &["deploy", "--env", "prdo", "--version", "v1"],
            "; stagecraft.toml defines: prod, staging. Did you mean \"prod\"?",
        ),
        (
            &["deploy", "--env", "prod", "--version", "  "],
            "--version must not be empty",
        ),
        (&["deploy", "--env", "prod"], "no --version given and"),
        (
            &[
                "deploy",
                "--env",
                "prod",
                "--version",
                "v1",
                "--lock-wait",
                "-3",
            ],
            "--lock-wait \"-3\" is not a wait between 0 and a day",
        ),
        (
            &[
                "deploy",
                "--env",
                "prod",
                "--version",
                "v1",
                "--lock-wait",
                "abc",
            ],
            "--lock-wait \"abc\" is not a wait; write a duration such as \"30s\"",
        ),
        (&["deploy", "--bogus"], "unexpected argument '--bogus'"),
    ];
    for (args, message) in cases {
        let out = p.run(args);
        assert_eq!(out.code, 1, "{args:?}: {out:?}");
        assert!(
            out.stderr.contains(message),
            "{args:?}: expected {message:?} in {out:?}"
        );
    }
    assert!(
        !p.state_file().exists(),
        "bad input must not create the state file"
    );

    let missing = tempfile::tempdir().unwrap();
    let out = run(
        missing.path(),
        &["deploy", "--env", "prod", "--version", "v1"],
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("no stagecraft.toml in this directory; run `stagecraft init`"),
        "{out:?}"
    );
}

#[test]
fn stagecraft_env_supplies_the_environment_for_deploy_only() {
    let p = Project::new(&noop_manifest());
    let out = stagecraft(p.path())
        .args(["deploy", "--version", "v1"])
        .env("STAGECRAFT_ENV", "staging")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{:?}", Run::from(out));
    assert_eq!(p.releases("staging").len(), 1);
}

#[test]
fn version_defaults_to_git_head_in_a_work_tree() {
    let p = Project::new(&noop_manifest());
    let git = |args: &[&str]| {
        let ok = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(p.path())
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q"]);
    git(&["add", "stagecraft.toml"]);
    git(&["commit", "-qm", "init"]);
    let head = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(p.path())
        .output()
        .unwrap();
    let head = String::from_utf8(head.stdout).unwrap().trim().to_string();
    let (out, record) = p.deploy_json(&["--env", "prod"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(record["version"], head.as_str());
    assert_eq!(record["commit_sha"], head.as_str());
}

#[test]
fn dry_run_writes_nothing_and_runs_no_plugin() {
    let manifest = "[environments.prod]\n\
        [phases.build]\nplugin = \"builtin:exec\"\nconfig = { command = \"touch out/ran-build\" }\n\
        [phases.build.grants]\nexec = [\"touch\"]\nwrite = [\"out\"]\n";
    let p = Project::new(manifest);
    let out = p.run(&["deploy", "--env", "prod", "--version", "v1", "--dry-run"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("Dry run: nothing is written and no plugin runs."),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("  build         builtin:exec"),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains("  push          skipped (no plugin configured)"),
        "{out:?}"
    );
    assert!(!p.state_file().exists(), "dry run created the state file");
    assert!(
        !p.path().join(".stagecraft").exists(),
        "dry run created the state directory"
    );
    assert!(
        !p.path().join("out/ran-build").exists(),
        "dry run ran a plugin"
    );
    // The plan as JSON names each phase with `name`, as `releases show --json` does.
    let out = p.run(&[
        "deploy",
        "--env",
        "prod",
        "--version",
        "v1",
        "--dry-run",
        "--json",
    ]);
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(plan["phases"][0]["name"], "build", "{plan}");
    assert_eq!(plan["phases"][0]["plugin"], "builtin:exec", "{plan}");

    // With history present, dry runs leave the state file's bytes unchanged.
    let out = p.run(&["deploy", "--env", "prod", "--version", "v1"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        p.path().join("out/ran-build").exists(),
        "the real deploy runs the plugin"
    );
    std::fs::remove_file(p.path().join("out/ran-build")).unwrap();
    let before = std::fs::read(p.state_file()).unwrap();
    for args in [
        &["deploy", "--env", "prod", "--version", "v2", "--dry-run"][..],
        &[
            "deploy",
            "--env",
            "prod",
            "--version",
            "v2",
            "--dry-run",
            "--json",
        ][..],
    ] {
        let out = p.run(args);
        assert_eq!(out.code, 0, "{out:?}");
    }
    assert_eq!(
        std::fs::read(p.state_file()).unwrap(),
        before,
        "a dry run wrote state"
    );
    assert!(
        !p.path().join("out/ran-build").exists(),
        "a dry run ran a plugin"
    );

    let out = p.run(&["deploy", "--env", "prod", "--version", "v2"]);
    assert_eq!(out.code, 0, "{out:?}");
    let after_v2 = std::fs::read(p.state_file()).unwrap();
    let out = p.run(&["rollback", "--env", "prod", "--to-previous", "--dry-run"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("Rollback target: rel-"), "{out:?}");
    assert!(out.stdout.contains("Version:         v1"), "{out:?}");
    assert_eq!(
        std::fs::read(p.state_file()).unwrap(),
        after_v2,
        "a rollback dry run wrote state"
    );
}

/// A manifest where `failing` runs `false` through builtin:exec and every other phase is noop.
fn failing_manifest(failing: &str) -> String {
    let mut m = String::from("[environments.prod]\n");
    for p in PHASES {
        if p == failing {
            m.push_str(&format!(
                "[phases.{p}]\nplugin = \"builtin:exec\"\nconfig = {{ command = \"false\" }}\n\
                 [phases.{p}.grants]\nexec = [\"false\"]\n"
            ));
        } else {
            m.push_str(&format!("[phases.{p}]\nplugin = \"builtin:noop\"\n"));
        }
    }
    m
}

#[test]
fn a_failure_in_each_phase_fails_it_skips_later_ones_and_exits_2() {
    for (i, failing) in PHASES.iter().enumerate() {
        let p = Project::new(&failing_manifest(failing));
        let (out, record) = p.deploy_json(&["--env", "prod", "--version", "v1"]);
        assert_eq!(out.code, 2, "{failing}: {out:?}");
        assert!(
            out.stderr.contains(&format!("failed in phase {failing}")),
            "{out:?}"
        );
        for (j, phase) in PHASES.iter().enumerate() {
            let expected = match j.cmp(&i) {
                std::cmp::Ordering::Less => "completed",
                std::cmp::Ordering::Equal => "failed",
                std::cmp::Ordering::Greater => "skipped",
            };
            assert_eq!(
                status(&record, phase),
                expected,
                "{phase} when {failing} fails"
            );
        }
        assert_eq!(record["status"], "failed");
        // What a fresh reader sees matches what the deploy printed.
        assert_eq!(
            p.show(record["id"].as_str().unwrap())["phases"],
            record["phases"]
        );
    }
}

#[test]
fn every_rollback_error_message_and_exit_code() {
    let p = Project::new(&noop_manifest());
    let rb = |args: &[&str]| {
        let mut all = vec!["rollback"];
        all.extend_from_slice(args);
        p.run(&all)
    };
    let expect = |out: Run, code: i32, message: &str| {
        assert_eq!(out.code, code, "{message}: {out:?}");
        assert!(
            out.stderr.contains(message),
            "expected {message:?}: {out:?}"
        );
    };
    expect(
        rb(&["--env", "prod"]),
        1,
        "rollback target required; use --to-previous, --to-release, or --to-version",
    );
    expect(
        rb(&["--env", "prod", "--to-previous", "--to-version", "v1"]),
        1,
        "only one rollback target flag may be specified",
    );
    expect(
        rb(&["--env", "prod", "--to-previous"]),
        1,
        "no current release found for environment \"prod\"",
    );

    let deploy = |env: &str, v: &str| {
        let (out, record) = p.deploy_json(&["--env", env, "--version", v]);
        assert_eq!(out.code, 0, "{out:?}");
        record["id"].as_str().unwrap().to_string()
    };
    let first = deploy("prod", "v1");
    expect(
        rb(&["--env", "prod", "--to-previous"]),
        1,
        "no previous release to rollback to",
    );
    expect(
        rb(&["--env", "prod", "--to-release", "rel-20000101-000000000"]),
        1,
        "rollback target not found: \"rel-20000101-000000000\"",
    );
    expect(
        rb(&["--env", "prod", "--to-release", &first]),
        1,
        &format!("cannot rollback to current release \"{first}\""),
    );
    let staging = deploy("staging", "v9");
    deploy("staging", "v10");
    expect(
        rb(&["--env", "prod", "--to-release", &staging]),
        1,
        &format!("release \"{staging}\" belongs to environment \"staging\", not \"prod\""),
    );
    expect(
        rb(&["--env", "prod", "--to-version", "v7"]),
        1,
        "no release found with version \"v7\" in environment \"prod\"",
    );

    // A failed release is not a rollback target, and the message names each phase's status.
    std::fs::write(
        p.path().join("stagecraft.toml"),
        failing_manifest("rollout"),
    )
    .unwrap();
    // The failing manifest grants `false`: widened since v1, so approved.
    let (out, failed) = p.deploy_json(&["--env", "prod", "--version", "v2", "--approve-grants"]);
    assert_eq!(out.code, 2, "{out:?}");
    let failed_id = failed["id"].as_str().unwrap().to_string();
    std::fs::write(p.path().join("stagecraft.toml"), noop_manifest()).unwrap();
    deploy("prod", "v3");
    expect(
        rb(&["--env", "prod", "--to-previous"]),
        1,
        &format!(
            "rollback target \"{failed_id}\" is not fully deployed (phases: build=completed, \
             push=completed, migrate_pre=completed, rollout=failed, migrate_post=skipped, \
             finalize=skipped)"
        ),
    );
    // ... and names the way out: the last fully deployed release before the current one.
    expect(
        rb(&["--env", "prod", "--to-previous"]),
        1,
        &format!(
            "The last fully deployed release of prod is {first} (v1): stagecraft rollback \
             --env prod --to-release {first}"
        ),
    );
    // The environment is required for rollback even when STAGECRAFT_ENV is set.
    let out: Run = stagecraft(p.path())
        .args(["rollback", "--to-version", "v1"])
        .env("STAGECRAFT_ENV", "prod")
        .output()
        .unwrap()
        .into();
    expect(out, 1, "no environment given; pass --env <name>");

    // And a valid one works, and records its target.
    let out = rb(&["--env", "prod", "--to-version", "v1", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let record: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(record["operation"], "rollback");
    assert_eq!(record["rollback_target"], first.as_str());
    assert_eq!(record["version"], "v1");
}

#[test]
fn plugins_are_told_the_operation_and_the_rollback_target() {
    // builtin:exec substitutes the context into its command; `touch` leaves the proof on disk.
    let p = Project::new(
        "[environments.prod]\n\
         [phases.rollout]\nplugin = \"builtin:exec\"\n\
         config = { command = \"touch out/seen-{{operation}}-{{version}}-{{rollback_target}}\" }\n\
         [phases.rollout.grants]\nexec = [\"touch\"]\nwrite = [\"out\"]\n",
    );
    let (out, v1) = p.deploy_json(&["--env", "prod", "--version", "v1"]);
    assert_eq!(out.code, 0, "{out:?}");
    let (out, _) = p.deploy_json(&["--env", "prod", "--version", "v2"]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = p.run(&["rollback", "--env", "prod", "--to-previous"]);
    assert_eq!(out.code, 0, "{out:?}");

    let v1_id = v1["id"].as_str().unwrap();
    let mut seen: Vec<String> = std::fs::read_dir(p.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("seen-"))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            "seen-deploy-v1-".to_string(),
            "seen-deploy-v2-".to_string(),
            format!("seen-rollback-v1-{v1_id}"),
        ]
    );
}

#[test]
fn after_a_rollback_a_fresh_reader_sees_every_phase_completed_50_times() {
    // The original tool's flaky regression: phases read back as pending after a rollback.
    let p = Project::new(&noop_manifest());
    for round in 0..50 {
        let v = format!("v{round}");
        let out = p.run(&["deploy", "--env", "prod", "--version", &v]);
        assert_eq!(out.code, 0, "{out:?}");
        if round == 0 {
            continue;
        }
        let out = p.run(&["rollback", "--env", "prod", "--to-previous", "--json"]);
        assert_eq!(out.code, 0, "round {round}: {out:?}");
        let id = serde_json::from_str::<Value>(&out.stdout).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let fresh = p.show(&id);
        for phase in PHASES {
            assert_eq!(
                status(&fresh, phase),
                "completed",
                "round {round}: {phase} of {id}"
            );
        }
    }
}

/// `stagecraft deploy --env <env> --version <version>` in `p`.
fn deploy_cmd(p: &Project, env: &str, version: &str) -> std::process::Command {
    let mut cmd = stagecraft(p.path());
    cmd.args(["deploy", "--env", env, "--version", version]);
    cmd
}

#[test]
fn a_killed_deploy_is_marked_interrupted_by_the_next_one() {
    let p = Project::new(&blocking_manifest(&["prod"]));
    let mut blocked = BlockedDeploy::start(deploy_cmd(&p, "prod", "v1"), p.path(), "v1");
    blocked.child.kill().unwrap(); // SIGKILL
    blocked.child.wait().unwrap();
    blocked.release_gate(); // let an orphaned `cat` exit

    let running = &p.releases("prod")[0];
    assert_eq!(
        status(running, "build"),
        "running",
        "a killed process leaves its phase running"
    );

    std::fs::write(p.path().join("gates/gate-v2.fifo"), "").unwrap(); // a plain file: no blocking
    let (out, record) = p.deploy_json(&["--env", "prod", "--version", "v2"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(record["status"], "completed");
    let old = p.show(running["id"].as_str().unwrap());
    assert_eq!(status(&old, "build"), "failed");
    assert_eq!(
        phase(&old, "build")["error"],
        "interrupted: the process running build exited"
    );
    assert_eq!(status(&old, "finalize"), "skipped");
}

#[test]
fn sigint_marks_the_running_phase_failed_at_once() {
    let p = Project::new(&blocking_manifest(&["prod"]));
    let mut blocked = BlockedDeploy::start(deploy_cmd(&p, "prod", "v1"), p.path(), "v1");
    let pid = rustix::process::Pid::from_raw(blocked.child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let code = blocked.child.wait().unwrap().code();
    let stderr = blocked.rest_of_stderr();
    blocked.release_gate();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("Interrupted by SIGINT: phase build of release"),
        "{stderr}"
    );
    let record = &p.releases("prod")[0];
    assert_eq!(status(record, "build"), "failed");
    assert_eq!(
        phase(record, "build")["error"],
        "interrupted: received SIGINT during build"
    );
    assert_eq!(status(record, "finalize"), "skipped");
}

#[test]
fn a_second_deploy_of_the_same_environment_waits_or_names_the_holder() {
    let p = Project::new(&blocking_manifest(&["prod", "staging"]));
    let mut first = BlockedDeploy::start(deploy_cmd(&p, "prod", "v1"), p.path(), "v1");

    let busy = p.run(&["deploy", "--env", "prod", "--version", "v2"]);
    assert_eq!(busy.code, 3, "{busy:?}");
    let pid = first.child.id();
    assert!(
        busy.stderr.contains(&format!("pid {pid}")),
        "the error names the holder: {busy:?}"
    );
    assert!(busy.stderr.contains("--lock-wait"), "{busy:?}");

    // With --lock-wait, a deploy waits for the lease, then runs (its build reads a plain file).
    std::fs::write(p.path().join("gates/gate-v3.fifo"), "").unwrap();
    let waiter = stagecraft(p.path())
        .args([
            "deploy",
            "--env",
            "prod",
            "--version",
            "v3",
            "--lock-wait",
            "10m",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    first.release_gate();
    assert_eq!(
        first.child.wait().unwrap().code(),
        Some(0),
        "{}",
        first.rest_of_stderr()
    );
    let out: Run = waiter.wait_with_output().map(Into::into).unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    let versions: Vec<String> = p
        .releases("prod")
        .iter()
        .map(|r| r["version"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(versions, ["v3", "v1"], "the refused deploy left no release");
}

#[test]
fn eight_concurrent_deploys_on_eight_environments_all_complete() {
    let envs: Vec<String> = (0..8).map(|i| format!("env{i}")).collect();
    let mut m = String::new();
    for e in &envs {
        m.push_str(&format!("[environments.{e}]\n"));
    }
    for p in PHASES {
        m.push_str(&format!("[phases.{p}]\nplugin = \"builtin:noop\"\n"));
    }
    let p = Project::new(&m);
    let children: Vec<_> = envs
        .iter()
        .map(|e| {
            stagecraft(p.path())
                .args(["deploy", "--env", e, "--version", "v1"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out: Run = child.wait_with_output().unwrap().into();
        assert_eq!(out.code, 0, "{out:?}");
    }
    for e in &envs {
        let releases = p.releases(e);
        assert_eq!(releases.len(), 1, "{e}");
        for phase in PHASES {
            assert_eq!(status(&releases[0], phase), "completed", "{e} {phase}");
        }
    }
}

#[test]
fn a_grant_exposing_the_state_is_refused_when_the_manifest_loads() {
    let manifest = "[environments.prod]\n[phases.build]\nplugin = \"builtin:noop\"\n\
                    [phases.build.grants]\nwrite = [\".stagecraft\"]\n";
    let p = Project::new(manifest);
    let out = p.run(&["deploy", "--env", "prod", "--version", "v1"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("stagecraft.toml:5:10: phase build:"),
        "{out:?}"
    );
    assert!(!p.state_file().exists());
    let out = p.run(&["deploy", "--env", "prod", "--version", "v1", "--dry-run"]);
    assert_eq!(out.code, 1, "dry run checks grants too: {out:?}");
}

#[test]
fn init_writes_a_starter_that_deploys_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["init"]);
    assert_eq!(out.code, 0, "{out:?}");
    let written = std::fs::read(dir.path().join("stagecraft.toml")).unwrap();
    let out = run(dir.path(), &["init"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("stagecraft.toml already exists"),
        "{out:?}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("stagecraft.toml")).unwrap(),
        written
    );
    let out = run(
        dir.path(),
        &["deploy", "--env", "staging", "--version", "v1"],
    );
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn help_has_examples_and_completions_generate() {
    for cmd in ["deploy", "rollback", "init", "completions"] {
        let out = run(&workspace_root(), &[cmd, "--help"]);
        assert_eq!(out.code, 0, "{out:?}");
        assert!(out.stdout.contains("Examples:"), "{cmd} --help: {out:?}");
    }
    let out = run(&workspace_root(), &["completions", "bash"]);
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("stagecraft"), "{out:?}");
    let out = run(&workspace_root(), &["completions", "tcsh"]);
    assert_eq!(out.code, 1, "{out:?}");
}

#[test]
fn the_quickstart_deploys_rolls_back_and_serves_the_right_version() {
    let src = workspace_root().join("examples/quickstart");
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&src, dir.path());
    let cwd = dir.path();
    let current = cwd.join("public/current/index.html");
    for v in ["v1", "v2"] {
        let out = run(cwd, &["deploy", "--env", "local", "--version", v]);
        assert_eq!(out.code, 0, "{out:?}");
        assert!(std::fs::read_to_string(&current)
            .unwrap()
            .contains(&format!("version {v}")));
    }
    let out = run(cwd, &["rollback", "--env", "local", "--to-previous"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(std::fs::read_to_string(&current)
        .unwrap()
        .contains("version v1"));
    let out = run(cwd, &["releases", "list"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout.lines().filter(|l| l.starts_with("rel-")).count(),
        3,
        "{out:?}"
    );
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == ".stagecraft" || name == "public" {
            continue; // state and output of a local run of the example
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
