//! End-to-end: each phase's log is kept with its release, bounded, printed by `releases logs`
//! and removed with its release by retention, on the file backend and on PostgreSQL
//! (spec/state.md and spec/state-postgres.md, "Phase logs"; spec/cli.md, "releases logs").

use std::path::{Path, PathBuf};

use serde_json::Value;
use stagecraft_tests::project::Project as HistoryProject;
use stagecraft_tests::{run, stagecraft, wasm_plugins_dir, workspace_root, BlockedDeploy, Run};

/// The bounds of spec/pipeline.md, as a user reads them there.
const PHASE_BOUND: u64 = 128 << 10;
const LINE_COST: u64 = 64;

/// A file-backend project: `build` runs `config` through builtin:exec (granted `programs`),
/// `rollout` is the hostile fixture logging three lines with terminal escapes.
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new(command: &str, programs: &[&str]) -> Project {
        let dir = tempfile::tempdir().unwrap();
        let hostile = wasm_plugins_dir().join("fixtures/hostile.wasm");
        assert!(
            hostile.exists(),
            "build the host first (cargo build -p stagecraft)"
        );
        let manifest = format!(
            "[environments.prod]\n\
             [phases.build]\nplugin = \"builtin:exec\"\nconfig = {{ command = {} }}\n\
             [phases.build.grants]\nexec = {}\n\
             [phases.rollout]\nplugin = {}\n\
             config = {{ mode = \"text\", field = \"log\", count = \"3\" }}\n",
            Value::from(command),
            Value::from(programs.to_vec()),
            Value::from(hostile.display().to_string()),
        );
        std::fs::write(dir.path().join("stagecraft.toml"), manifest).unwrap();
        Project { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn run(&self, args: &[&str]) -> Run {
        run(self.path(), args)
    }

    fn deploy(&self, version: &str) -> Run {
        self.run(&["deploy", "--env", "prod", "--version", version])
    }

    fn logs_dir(&self) -> PathBuf {
        self.path().join(".stagecraft/releases.logs")
    }

    fn newest(&self) -> String {
        newest(&self.run(&["releases", "list", "--json"]))
    }

    fn logs_json(&self, id: &str, more: &[&str]) -> Value {
        let mut args = vec!["releases", "logs", id, "--json"];
        args.extend(more);
        let out = self.run(&args);
        assert_eq!(out.code, 0, "{out:?}");
        serde_json::from_str(&out.stdout).unwrap()
    }
}

fn newest(list: &Run) -> String {
    assert_eq!(list.code, 0, "{list:?}");
    let list: Value = serde_json::from_str(&list.stdout).unwrap();
    list[0]["id"].as_str().unwrap().to_string()
}

fn messages(phase: &Value) -> Vec<&str> {
    phase["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect()
}

#[test]
fn a_deploys_phase_logs_are_printed_in_pipeline_order_escaped() {
    let p = Project::new("echo built {{version}}", &["echo"]);
    let out = p.deploy("v1");
    assert_eq!(out.code, 0, "{out:?}");
    let id = p.newest();

    let out = p.run(&["releases", "logs", &id]);
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0], "=== build: completed (builtin:exec) ===",
        "{out:?}"
    );
    assert!(
        lines[1].ends_with(" info  running echo built v1"),
        "{out:?}"
    );
    assert!(lines[2].ends_with(" info  built v1"), "{out:?}");
    assert_eq!(lines[3], "");
    assert!(lines[4].starts_with("=== rollout: completed ("), "{out:?}");
    // Stored as logged, shown escaped: no escape sequence reaches the terminal, and the forged
    // line is visibly a log line of its own.
    assert!(!out.stdout.contains('\x1b'), "{out:?}");
    assert!(
        lines[5].ends_with(" info  \\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mred"),
        "{out:?}"
    );
    assert!(lines[6].ends_with(" info    rollout       completed forged"));
    assert_eq!(lines.len(), 4 + 1 + 6, "{out:?}");

    let json = p.logs_json(&id, &[]);
    assert_eq!(json["release_id"], id.as_str());
    let phases = json["phases"].as_array().unwrap();
    let names: Vec<&str> = phases.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["build", "rollout"]);
    assert_eq!(phases[0]["status"], "completed");
    assert_eq!(phases[0]["plugin"], "builtin:exec");
    assert_eq!(messages(&phases[0]), ["running echo built v1", "built v1"]);
    assert_eq!(
        phases[1]["lines"][0]["message"],
        "\u{1b}]0;pwned\u{7}\u{1b}[2J\u{1b}[31mred"
    );
    assert_eq!(phases[1]["lines"][0]["level"], "info");
    assert!(phases[1]["cut"].is_null());

    // --phase narrows to one; --state-file and $STAGECRAFT_STATE_FILE find the same history
    // from anywhere.
    let state = p.path().join(".stagecraft/releases.json");
    let elsewhere = tempfile::tempdir().unwrap();
    let by_flag = run(
        elsewhere.path(),
        &[
            "releases",
            "--state-file",
            state.to_str().unwrap(),
            "logs",
            &id,
            "--phase",
            "build",
        ],
    );
    assert_eq!(by_flag.code, 0, "{by_flag:?}");
    assert_eq!(by_flag.stdout.lines().count(), 3, "{by_flag:?}");
    assert!(
        by_flag.stdout.starts_with("=== build: completed"),
        "{by_flag:?}"
    );
    let by_env: Run = stagecraft(elsewhere.path())
        .env("STAGECRAFT_STATE_FILE", &state)
        .args(["releases", "logs", &id, "--phase", "rollout"])
        .output()
        .unwrap()
        .into();
    assert_eq!(by_env.code, 0, "{by_env:?}");
    assert!(
        by_env.stdout.starts_with("=== rollout: completed"),
        "{by_env:?}"
    );
    assert!(!by_env.stdout.contains("build"), "{by_env:?}");
}

#[test]
fn a_failed_phase_keeps_its_log() {
    let p = Project::new("cat no-such-file", &["cat"]);
    let out = p.deploy("v1");
    assert_eq!(out.code, 2, "{out:?}");
    let json = p.logs_json(&p.newest(), &[]);
    let phases = json["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 1, "rollout never ran: {json}");
    assert_eq!(phases[0]["status"], "failed");
    let lines = messages(&phases[0]);
    assert_eq!(lines[0], "running cat no-such-file", "{json}");
    assert!(
        lines[1..].iter().any(|l| l.contains("no-such-file")),
        "cat's complaint on stderr is kept: {json}"
    );
}

#[test]
fn a_flood_keeps_its_end_within_the_bound_and_says_what_was_cut() {
    // 5000 lines cost about 345 KiB against a bound of 128 KiB, and stay well within the
    // per-run log budget, so every line reaches the keeper.
    let p = Project::new("seq 1 5000", &["seq"]);
    let out = p.deploy("v1");
    assert_eq!(out.code, 0, "{out:?}");
    let id = p.newest();
    let json = p.logs_json(&id, &["--phase", "build"]);
    let build = &json["phases"][0];
    let lines = messages(build);
    let kept_cost: u64 = lines.iter().map(|m| m.len() as u64 + LINE_COST).sum();
    assert!(kept_cost <= PHASE_BOUND, "{kept_cost} bytes kept");
    assert!(
        kept_cost > PHASE_BOUND - 1024,
        "the bound is used: {kept_cost}"
    );

    // The end is kept, whole and in order, and the last line says what was cut and why.
    let cut = &build["cut"];
    let (note, kept) = lines.split_last().unwrap();
    assert_eq!(*kept.last().unwrap(), "5000");
    let first: u64 = kept[0].parse().unwrap();
    for (i, line) in kept.iter().enumerate() {
        assert_eq!(*line, (first + i as u64).to_string());
    }
    // The cut lines are "running seq 1 5000" and 1 .. first-1.
    assert_eq!(cut["lines"], first);
    let cut_bytes: u64 = "running seq 1 5000".len() as u64
        + (1..first).map(|n| n.to_string().len() as u64).sum::<u64>();
    assert_eq!(cut["bytes"], cut_bytes);
    assert_eq!(cut["bound"], PHASE_BOUND);
    assert_eq!(
        *note,
        format!(
            "... {first} earlier lines ({cut_bytes} bytes) of this log cut: a phase keeps the \
             last 128KiB of its log"
        )
    );
    assert_eq!(build["lines"][lines.len() - 1]["level"], "warn");

    let text = p.run(&["releases", "logs", &id, "--phase", "build"]);
    assert!(
        text.stdout.lines().last().unwrap().ends_with(note),
        "{}",
        text.stdout.lines().last().unwrap()
    );
    // What is stored is bounded too, whatever the JSON around it.
    let stored = std::fs::metadata(p.logs_dir().join(&id).join("build.json")).unwrap();
    assert!(stored.len() < 2 * PHASE_BOUND, "{}", stored.len());
}

#[test]
fn an_interrupted_phase_keeps_its_log_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("stagecraft.toml"),
        "[environments.prod]\n[phases.build]\nplugin = \"builtin:exec\"\n\
         config = { command = \"cat gates/gate-{{version}}.fifo\" }\ntimeout = \"10m\"\n\
         [phases.build.grants]\nexec = [\"cat\"]\nread = [\"gates\"]\n",
    )
    .unwrap();
    let mut deploy = stagecraft(dir.path());
    deploy.args(["deploy", "--env", "prod", "--version", "v1"]);
    let mut blocked = BlockedDeploy::start(deploy, dir.path(), "v1");
    let pid = rustix::process::Pid::from_raw(blocked.child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let code = blocked.child.wait().unwrap().code();
    let stderr = blocked.rest_of_stderr();
    blocked.release_gate();
    assert_eq!(code, Some(2), "{stderr}");

    let id = newest(&run(dir.path(), &["releases", "list", "--json"]));
    let out = run(dir.path(), &["releases", "logs", &id, "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let json: Value = serde_json::from_str(&out.stdout).unwrap();
    let build = &json["phases"][0];
    assert_eq!(build["status"], "failed");
    let lines = messages(build);
    assert_eq!(lines[0], "running cat gates/gate-v1.fifo", "{json}");
    assert_eq!(
        *lines.last().unwrap(),
        "interrupted: received SIGINT",
        "{json}"
    );
}

#[test]
fn unknown_ids_and_phases_are_bad_input_and_no_logs_is_said_in_one_line() {
    let p = Project::new("echo hi", &["echo"]);
    assert_eq!(p.deploy("v1").code, 0);
    let id = p.newest();

    let out = p.run(&["releases", "logs", "rel-20200101-000000000"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("release not found: rel-20200101-000000000"),
        "{out:?}"
    );

    let out = p.run(&["releases", "logs", &id, "--phase", "rollot"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "release {id} has no phase \"rollot\" (its phases: build, push, migrate_pre, \
             rollout, migrate_post, finalize). Did you mean \"rollout\"?"
        )),
        "{out:?}"
    );

    // A phase that ran no plugin has nothing kept.
    let out = p.run(&["releases", "logs", &id, "--phase", "push"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.lines().count(), 1, "{out:?}");
    assert!(out
        .stdout
        .starts_with(&format!("Phase push of release {id} has no kept log")));
}

#[test]
fn a_history_written_by_the_go_tool_reads_with_no_logs() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("releases.json");
    std::fs::copy(
        workspace_root().join("tests/fixtures/v1-releases.json"),
        &state,
    )
    .unwrap();
    let before = std::fs::read(&state).unwrap();
    let args = |more: &[&str]| {
        let mut a = vec!["releases", "--state-file", state.to_str().unwrap(), "logs"];
        a.extend_from_slice(more);
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let out: Run = stagecraft(dir.path())
        .args(args(&["rel-20240301-101500"]))
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout,
        "Release rel-20240301-101500 has no kept logs (none of its phases ran a plugin, or it \
         ran before stagecraft kept phase logs)\n"
    );
    let out: Run = stagecraft(dir.path())
        .args(args(&["rel-20240301-101500", "--json"]))
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 0, "{out:?}");
    let json: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["phases"], Value::Array(vec![]));
    // Reading created nothing and changed nothing.
    assert_eq!(std::fs::read(&state).unwrap(), before);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn a_planted_symlink_is_not_followed_and_the_deploy_still_succeeds() {
    let p = Project::new("echo hi", &["echo"]);
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(p.path().join(".stagecraft")).unwrap();
    std::os::unix::fs::symlink(outside.path(), p.logs_dir()).unwrap();
    let out = p.deploy("v1");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr
            .contains("warning: could not keep the log of phase build of release"),
        "{out:?}"
    );
    assert!(out.stderr.contains("symbolic link"), "{out:?}");
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    let out = p.run(&["releases", "show", &p.newest(), "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let record: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(record["status"], "completed");
}

/// Deploys v1..v3 to prod, then prunes to one: v1 goes with its logs (v2 stays as the previous
/// release of v3). `count` says how many releases have logs kept.
fn pruning_removes_the_logs_of_removed_releases(p: &HistoryProject, count: &dyn Fn() -> usize) {
    for v in ["v1", "v2", "v3"] {
        p.deploy("prod", v);
    }
    let ids: Vec<String> = p.releases("prod").into_iter().map(|(id, _)| id).collect();
    let logs = |id: &str| -> Value {
        let out = p.run(&["releases", "logs", id, "--json"]);
        assert_eq!(out.code, 0, "{out:?}");
        serde_json::from_str(&out.stdout).unwrap()
    };
    let v1 = &ids[2];
    assert_eq!(
        messages(&logs(v1)["phases"][0]),
        ["running test v1 != bad"],
        "the build phase logs its command"
    );
    assert_eq!(count(), 3);

    let out = p.run(&["releases", "prune", "--env", "prod", "--keep", "1"]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = p.run(&["releases", "logs", v1]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains(&format!("release not found: {v1}")));
    assert_eq!(count(), 2, "the pruned release's logs are gone");
    assert_eq!(
        messages(&logs(&ids[0])["phases"][0]),
        ["running test v3 != bad"]
    );

    // history_max does the same after a deploy.
    p.write_manifest("history_max = 1");
    p.deploy("prod", "v4");
    assert_eq!(p.releases("prod").len(), 2);
    assert_eq!(count(), 2);
}

#[test]
fn pruning_removes_logs_with_their_release_on_the_file_backend() {
    let p = HistoryProject::file();
    let logs = p.path().join(".stagecraft/releases.logs");
    let count = || std::fs::read_dir(&logs).unwrap().count();
    pruning_removes_the_logs_of_removed_releases(&p, &count);
}

#[test]
fn pruning_removes_logs_with_their_release_on_postgres() {
    let p = HistoryProject::postgres("logs_prune");
    let (server, _) = p.postgres.as_ref().unwrap();
    let count = || {
        let mut db = server.client("logs_prune");
        let row = db
            .query_one(
                "SELECT count(DISTINCT release_id) FROM stagecraft_phase_logs",
                &[],
            )
            .unwrap();
        row.get::<_, i64>(0) as usize
    };
    pruning_removes_the_logs_of_removed_releases(&p, &count);
}

#[test]
fn logs_of_releases_gone_by_other_means_are_swept_by_the_next_prune() {
    let p = HistoryProject::file();
    p.deploy("prod", "v1");
    let logs = p.path().join(".stagecraft/releases.logs");
    // A release whose record is gone (a crash between the prune's commit and its sweep), and
    // one issued after anything this history knows (a deploy running meanwhile).
    std::fs::create_dir_all(logs.join("rel-20000101-000000000")).unwrap();
    std::fs::create_dir_all(logs.join("rel-99990101-000000000")).unwrap();
    std::fs::create_dir_all(logs.join("not-a-release")).unwrap();
    let out = p.run(&["releases", "prune", "--env", "prod", "--keep", "5"]);
    assert_eq!(out.code, 0, "{out:?}");
    let mut left: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    let id = &p.releases("prod")[0].0;
    assert_eq!(left, ["not-a-release", id, "rel-99990101-000000000"]);
}

#[test]
fn state_migrate_copies_logs_both_ways() {
    let p = HistoryProject::postgres("logs_migrate");
    p.deploy("prod", "v1");
    let id = p.releases("prod")[0].0.clone();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.json");
    let out = p.run(&["state", "migrate", "--to", copy.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("Copied the phase logs of 1 release"),
        "{out:?}"
    );
    let read = |args: &[&str]| -> Value {
        let out: Run = stagecraft(dir.path()).args(args).output().unwrap().into();
        assert_eq!(out.code, 0, "{out:?}");
        serde_json::from_str(&out.stdout).unwrap()
    };
    let from_file = read(&[
        "releases",
        "--state-file",
        copy.to_str().unwrap(),
        "logs",
        &id,
        "--json",
    ]);
    assert_eq!(
        messages(&from_file["phases"][0]),
        ["running test v1 != bad"]
    );

    // And back, to an empty database.
    let (server, _) = p.postgres.as_ref().unwrap();
    let back = server.create_database("logs_back");
    let out: Run = stagecraft(dir.path())
        .args([
            "state",
            "--state-file",
            copy.to_str().unwrap(),
            "migrate",
            "--to",
            &back,
        ])
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 0, "{out:?}");
    let from_db = read(&["releases", "--state-url", &back, "logs", &id, "--json"]);
    assert_eq!(from_db["phases"], from_file["phases"]);
}
