//! The file backend against what goes wrong in the field, through the real binary: releases a
//! killed process left unfinished, a clock that was ahead once, numbers at their limits, a
//! commit lock held by a stopped process, special files and symlinks at the state path, a root
//! run on a user's project. Each case either works or is a state error (exit 3) that names the
//! file, and never changes a byte it refuses.

mod state_common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use stagecraft_tests::{run, stagecraft, Run};
use state_common::*;

/// A project whose six phases all run builtin:noop, with environments prod and staging, and
/// its state at the default path.
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new() -> Project {
        let dir = tempfile::tempdir().unwrap();
        let mut m = String::from("[environments.prod]\n[environments.staging]\n");
        for p in stagecraft::state::CANONICAL_PHASES {
            m.push_str(&format!("[phases.{p}]\nplugin = \"builtin:noop\"\n"));
        }
        std::fs::write(dir.path().join("stagecraft.toml"), m).unwrap();
        Project { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn state_file(&self) -> PathBuf {
        self.path().join(".stagecraft/releases.json")
    }

    /// Write the state file by hand.
    fn seed(&self, json: &str) {
        std::fs::create_dir_all(self.path().join(".stagecraft")).unwrap();
        std::fs::write(self.state_file(), json).unwrap();
    }

    fn run(&self, args: &[&str]) -> Run {
        run(self.path(), args)
    }

    fn deploy(&self, env: &str, version: &str) -> Value {
        let out = self.run(&["deploy", "--env", env, "--version", version, "--json"]);
        assert_eq!(out.code, 0, "{out:?}");
        serde_json::from_str(&out.stdout).unwrap()
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
}

fn phase<'v>(record: &'v Value, name: &str) -> &'v Value {
    record["phases"]
        .as_array()
        .and_then(|phases| phases.iter().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("no phase {name} in {record}"))
}

/// A state file of releases given as (id, environment, version, timestamp, phases as JSON).
fn state_json(releases: &[(&str, &str, &str, &str, &str)]) -> String {
    let records: Vec<String> = releases
        .iter()
        .map(|(id, env, version, ts, phases)| {
            format!(
                r#"{{"id": "{id}", "environment": "{env}", "version": "{version}", "commit_sha": "", "timestamp": "{ts}", "phases": {phases}}}"#
            )
        })
        .collect();
    format!("{{\"releases\": [\n{}\n]}}\n", records.join(",\n"))
}

const DONE: &str = r#"{"build": "completed", "push": "completed", "migrate_pre": "completed", "rollout": "completed", "migrate_post": "completed", "finalize": "completed"}"#;

/// A deploy killed between two phases (push's end committed, migrate_pre's start not) left
/// phases `pending` that nothing finished: the next deploy finishes it as failed, so it is
/// neither stuck nor taken for a deployable previous release.
#[test]
fn a_release_killed_between_two_phases_is_finished_by_the_next_deploy() {
    let p = Project::new();
    let between = r#"{"build": "completed", "push": "completed", "migrate_pre": "pending", "rollout": "pending", "migrate_post": "pending", "finalize": "pending"}"#;
    p.seed(&state_json(&[
        (
            "rel-20261125-060000000",
            "prod",
            "v1",
            "2026-11-25T06:00:00Z",
            DONE,
        ),
        (
            "rel-20261125-060100000",
            "prod",
            "v2",
            "2026-11-25T06:01:00Z",
            between,
        ),
        (
            "rel-20261125-060200000",
            "staging",
            "v2",
            "2026-11-25T06:02:00Z",
            between,
        ),
    ]));
    let new = p.deploy("prod", "v3");
    assert_eq!(new["previous_id"], "rel-20261125-060100000");

    let stuck = p.show("rel-20261125-060100000");
    assert_eq!(stuck["status"], "failed");
    assert_eq!(phase(&stuck, "push")["status"], "completed");
    assert_eq!(phase(&stuck, "migrate_pre")["status"], "failed");
    assert_eq!(
        phase(&stuck, "migrate_pre")["error"],
        "interrupted: the process exited before migrate_pre started"
    );
    for later in ["rollout", "migrate_post", "finalize"] {
        assert_eq!(phase(&stuck, later)["status"], "skipped", "{later}");
    }
    // After a command that took prod's lease, nothing of prod is unfinished.
    for r in p.releases("prod") {
        assert!(r["status"] == "completed" || r["status"] == "failed", "{r}");
    }
    // Another environment's release is not prod's deploy's to finish.
    assert_eq!(p.show("rel-20261125-060200000")["status"], "pending");
    // The failed release is refused as a rollback target, naming what it did not do.
    let refused = p.run(&["rollback", "--env", "prod", "--to-previous"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains(
            "rollback target \"rel-20261125-060100000\" is not fully deployed (phases: \
             build=completed, push=completed, migrate_pre=failed, rollout=skipped"
        ),
        "{refused:?}"
    );
}

/// A clock that was a year ahead once stamped a release in the future; deploys after it must
/// still link to the release allocated just before them, and `--to-previous` must pick it.
#[test]
fn current_is_the_release_allocated_last_not_the_newest_timestamp() {
    let p = Project::new();
    let year = time_now_year() + 1;
    let id = format!("rel-{year}0101-000000000");
    let ts = format!("{year}-01-01T00:00:00Z");
    p.seed(&state_json(&[("rel-20261125-060000000", "prod", "v1", "2026-11-25T06:00:00Z", DONE)])
        .replace(
            "\n]}",
            &format!(
                ",\n{{\"id\": \"{id}\", \"environment\": \"prod\", \"version\": \"v-future\", \"timestamp\": \"{ts}\", \"phases\": {DONE}}}\n]}}"
            ),
        ));
    let v2 = p.deploy("prod", "v2");
    assert_eq!(v2["previous_id"], id.as_str());
    let v3 = p.deploy("prod", "v3");
    assert_eq!(
        v3["previous_id"], v2["id"],
        "v3 follows v2, whatever v-future's stamp"
    );
    let versions: Vec<Value> = p
        .releases("prod")
        .iter()
        .map(|r| r["version"].clone())
        .collect();
    assert_eq!(versions, ["v3", "v2", "v-future", "v1"]);
    let out = p.run(&["rollback", "--env", "prod", "--to-previous", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let rolled: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(rolled["version"], "v2");
    assert_eq!(rolled["rollback_target"], v2["id"]);
}

fn time_now_year() -> i32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Good enough for "next year": 365.2425 days a year from 1970.
    1970 + (secs / 31_556_952) as i32
}

/// Numbers at the end of their range are state errors naming the file and the field, never a
/// panic, and the file is left as it was.
#[test]
fn numbers_at_their_limits_are_state_errors_naming_the_field() {
    let good = state_json(&[(
        "rel-20261125-060000000",
        "prod",
        "v1",
        "2026-11-25T06:00:00Z",
        DONE,
    )]);
    let cases = [
        (
            good.replacen('{', "{\"serial\": 18446744073709551615,", 1),
            "serial",
        ),
        (
            good.replacen('{', "{\"last_release_id\": \"rel-99991231-235959999\",", 1),
            "last_release_id",
        ),
        (
            good.replace("rel-20261125-060000000", "rel-99991231-235959999"),
            "the id of release rel-99991231-235959999 (prod)",
        ),
    ];
    for (content, field) in cases {
        let p = Project::new();
        p.seed(&content);
        let out = p.run(&["deploy", "--env", "prod", "--version", "v2"]);
        assert_eq!(out.code, 3, "{field}: {out:?}");
        let path = p.state_file();
        assert!(
            out.stderr
                .contains(&format!("state file {}", path.display()))
                && out.stderr.contains(field),
            "{field}: {out:?}"
        );
        assert!(!out.stderr.contains("panicked"), "{out:?}");
        assert_eq!(bytes(&path).unwrap(), content.as_bytes(), "{field}");
        // Reading still works: only what cannot be counted further is refused.
        assert_eq!(p.run(&["releases", "list"]).code, 0, "{field}");
    }
}

/// A process that holds the state file's commit lock and never lets go (stopped, or here
/// blocked inside its transaction) makes a commit fail after `--lock-wait`, naming it; a long
/// wait says who it is waiting for while it waits.
#[test]
fn a_held_commit_lock_is_waited_for_within_lock_wait_and_named() {
    let p = Project::new();
    p.deploy("prod", "v1");
    let (mut holder, pid) = hold_commit_lock(&p.state_file());

    let mut deploy = stagecraft(p.path());
    deploy.args([
        "deploy",
        "--env",
        "staging",
        "--version",
        "v2",
        "--lock-wait",
        "1",
    ]);
    let out = run_bounded(deploy, Duration::from_secs(60));
    assert_eq!(out.code, 3, "{out:?}");
    let lock = format!("{}.lock", p.state_file().display());
    assert!(
        out.stderr
            .contains(&format!("the commit lock {lock} is held by pid {pid} on ")),
        "{out:?}"
    );
    assert!(
        out.stderr.contains("state-worker commit-hang"),
        "names the command: {out:?}"
    );
    assert!(
        out.stderr
            .contains("wait longer with a larger --lock-wait (e.g. 60s)"),
        "{out:?}"
    );

    // A longer wait says what it waits for, then succeeds when the holder lets go.
    let mut waiter = stagecraft(p.path())
        .args([
            "deploy",
            "--env",
            "staging",
            "--version",
            "v3",
            "--lock-wait",
            "600",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(waiter.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        let n = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert!(
            n > 0,
            "the waiting deploy ended before saying what it waits for"
        );
        if line.contains("Waiting for the commit lock") {
            break;
        }
    }
    assert!(line.contains(&format!("held by pid {pid} ")), "{line}");
    drop(holder.stdin.take());
    assert!(holder.wait().unwrap().success());
    assert!(waiter.wait().unwrap().success());
    assert_eq!(p.releases("staging")[0]["version"], "v3");
}

/// A state-worker inside a transaction on `path`, holding its commit lock until its stdin
/// closes; and its pid.
fn hold_commit_lock(path: &Path) -> (Child, u32) {
    let mut child = worker()
        .args(["commit-hang", path.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "in commit");
    let pid = child.id();
    (child, pid)
}

/// Run `cmd` and wait for it, failing (and killing it) if it has not ended after `limit`: a
/// guard against a hang, never a measure of speed.
fn run_bounded(mut cmd: Command, limit: Duration) -> Run {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap().into();
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out: Run = child.wait_with_output().unwrap().into();
            panic!("still running after {limit:?}, killed: {out:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A FIFO or a device at the state path is refused at once (reading one would block forever
/// or never end), by reads and commits alike, and left as it is.
#[test]
fn special_files_at_the_state_path_are_refused() {
    let p = Project::new();
    let fifo = p.path().join("state.fifo");
    stagecraft_tests::make_fifo(&fifo);
    for (path, kind) in [
        (fifo.as_path(), "a FIFO"),
        (Path::new("/dev/zero"), "a character device"),
    ] {
        for args in [
            vec!["releases", "list"],
            vec!["deploy", "--env", "prod", "--version", "v1"],
        ] {
            let mut cmd = stagecraft(p.path());
            // Reading /dev/zero to the end would take all memory; cap it so a regression
            // fails here instead of taking the machine down.
            cmd.args(&args)
                .args(["--state-file", path.to_str().unwrap()]);
            let out = run_bounded(limit_memory(cmd), Duration::from_secs(60));
            assert_eq!(out.code, 3, "{kind} {args:?}: {out:?}");
            assert!(
                out.stderr.contains(&format!(
                    "state file {} is {kind}, not a regular file",
                    path.display()
                )),
                "{out:?}"
            );
        }
    }
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo_type());
}

trait IsFifo {
    fn is_fifo_type(&self) -> bool;
}
impl IsFifo for std::fs::FileType {
    fn is_fifo_type(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_fifo(self)
    }
}

/// `cmd` under a 2 GiB address-space limit.
fn limit_memory(cmd: Command) -> Command {
    let mut line = format!(
        "ulimit -v 2097152; exec '{}'",
        cmd.get_program().to_str().unwrap()
    );
    for arg in cmd.get_args() {
        line.push_str(&format!(" '{}'", arg.to_str().unwrap()));
    }
    let mut sh = Command::new("sh");
    sh.args(["-c", &line]);
    if let Some(dir) = cmd.get_current_dir() {
        sh.current_dir(dir);
    }
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => sh.env(key, v),
            None => sh.env_remove(key),
        };
    }
    sh
}

/// A symlink at the state path is refused, not read through and then replaced by a regular
/// file (which left two histories that diverge): the message names its target and says to
/// pass the real path.
#[test]
fn a_symlinked_state_file_is_refused_and_left_as_it_is() {
    let p = Project::new();
    let elsewhere = p.path().join("shared/releases.json");
    std::fs::create_dir_all(elsewhere.parent().unwrap()).unwrap();
    let content = state_json(&[(
        "rel-20261125-060000000",
        "prod",
        "v1",
        "2026-11-25T06:00:00Z",
        DONE,
    )]);
    std::fs::write(&elsewhere, &content).unwrap();
    std::fs::create_dir_all(p.path().join(".stagecraft")).unwrap();
    std::os::unix::fs::symlink("../shared/releases.json", p.state_file()).unwrap();
    for args in [
        vec!["releases", "list"],
        vec!["deploy", "--env", "prod", "--version", "v2"],
    ] {
        let out = p.run(&args);
        assert_eq!(out.code, 3, "{args:?}: {out:?}");
        assert!(
            out.stderr.contains(&format!(
                "state file {} is a symbolic link (to ../shared/releases.json)",
                p.state_file().display()
            )) && out.stderr.contains("--state-file"),
            "{out:?}"
        );
    }
    assert!(std::fs::symlink_metadata(p.state_file())
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), content);
    // Given the real path, it works.
    let out = p.run(&[
        "deploy",
        "--env",
        "prod",
        "--version",
        "v2",
        "--state-file",
        elsewhere.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{out:?}");
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A deploy run as root on a user's project leaves every state file the user's, with the mode
/// it had: the user can deploy again afterwards.
#[test]
fn a_root_run_keeps_the_users_ownership_and_mode() {
    if !is_root() {
        eprintln!("not root: cannot run as another user; skipped");
        return;
    }
    const USER: u32 = 65534;
    let p = Project::new();
    p.deploy("prod", "v1");
    let state_dir = p.path().join(".stagecraft");
    // Hand the project to the user, with a group-readable state file; then remove what only a
    // lease creates, so the root run below creates it anew.
    chown_tree(p.path(), USER);
    std::fs::set_permissions(p.state_file(), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::remove_dir_all(state_dir.join("leases")).unwrap();
    std::fs::remove_file(state_dir.join("releases.json.bak")).unwrap();

    p.deploy("prod", "v2");
    let meta = std::fs::metadata(p.state_file()).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (USER, USER), "state file owner");
    assert_eq!(meta.mode() & 0o7777, 0o640, "state file mode");
    for entry in walk(&state_dir) {
        let meta = std::fs::symlink_metadata(&entry).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (USER, USER),
            "{} belongs to root",
            entry.display()
        );
    }
    let bak = std::fs::metadata(state_dir.join("releases.json.bak")).unwrap();
    assert_eq!(bak.mode() & 0o7777, 0o640, ".bak mode");

    // The user deploys again, as themselves.
    use std::os::unix::process::CommandExt;
    let mut as_user = stagecraft(p.path());
    as_user
        .args(["deploy", "--env", "prod", "--version", "v3"])
        .uid(USER)
        .gid(USER)
        .env("STAGECRAFT_CACHE_DIR", p.path().join("cache"));
    std::fs::set_permissions(p.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out: Run = as_user.output().unwrap().into();
    assert_eq!(out.code, 0, "{out:?}");
}

fn chown_tree(root: &Path, uid: u32) {
    for path in walk(root).into_iter().chain([root.to_path_buf()]) {
        std::os::unix::fs::lchown(&path, Some(uid), Some(uid)).unwrap();
    }
}

/// Every path under `root`, not `root` itself.
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        if std::fs::symlink_metadata(&path).unwrap().is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

/// A phase that ran to its end on a disk that filled up meanwhile: its end cannot be committed,
/// the deploy stops (exit 3) and leaves a note in its lease file (rewritten in place, so it
/// needs no new space), and the next deploy's recovery records what really happened instead of
/// "the process running build exited". Mounting a small tmpfs needs root.
#[test]
fn a_phase_end_lost_to_a_full_disk_is_recorded_as_what_happened() {
    if !is_root() {
        eprintln!("not root: cannot mount a tmpfs; skipped");
        return;
    }
    struct Mount(PathBuf);
    impl Drop for Mount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let p = tempfile::tempdir().unwrap();
    std::fs::write(
        p.path().join("stagecraft.toml"),
        stagecraft_tests::blocking_manifest(&["prod"]),
    )
    .unwrap();
    let mnt = p.path().join("full");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount tmpfs");
    let _mount = Mount(mnt.clone());
    let state = mnt.join("releases.json");
    let deploy = |version: &str| {
        let mut cmd = stagecraft(p.path());
        cmd.args(["deploy", "--env", "prod", "--version", version])
            .args(["--state-file", state.to_str().unwrap()]);
        cmd
    };

    let mut blocked = stagecraft_tests::BlockedDeploy::start(deploy("v1"), p.path(), "v1");
    // Fill the disk while build runs.
    let filler = mnt.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    blocked.release_gate();
    let code = blocked.child.wait().unwrap().code();
    let stderr = blocked.rest_of_stderr();
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("completed, but recording that failed")
            && stderr.contains("No space left on device"),
        "{stderr}"
    );

    std::fs::remove_file(&filler).unwrap();
    std::fs::write(p.path().join("gates/gate-v2.fifo"), "").unwrap();
    let out: Run = deploy("v2").output().unwrap().into();
    assert_eq!(out.code, 0, "{out:?}");
    let listed = run(
        p.path(),
        &[
            "releases",
            "list",
            "--json",
            "--state-file",
            state.to_str().unwrap(),
        ],
    );
    let releases: Value = serde_json::from_str(&listed.stdout).unwrap();
    let v1 = releases
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["version"] == "v1")
        .unwrap();
    let build = phase(v1, "build");
    assert_eq!(build["status"], "failed");
    let error = build["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!(
            "interrupted: build completed, but the process could not record that (cannot write \
             state file {} (writing the new version): No space left on device",
            state.display()
        )),
        "{error}"
    );
    assert_eq!(phase(v1, "finalize")["status"], "skipped");
}
