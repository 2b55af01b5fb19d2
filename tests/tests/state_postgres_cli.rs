//! End-to-end on PostgreSQL through the built binary: backend selection, deploy, rollback and
//! releases; a deploy killed or cut off from its server mid-phase; `state migrate` both ways.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use stagecraft_tests::pg::{PgServer, PASSWORD};
use stagecraft_tests::{stagecraft, workspace_root, BlockedDeploy, Run};

const URL_VAR: &str = "STAGECRAFT_DATABASE_URL";

/// A project whose manifest selects PostgreSQL, and the server its URL points at.
struct Project {
    dir: tempfile::TempDir,
    server: PgServer,
    url: String,
}

impl Project {
    /// `build` blocks reading `gates/gate-<version>.fifo` (a FIFO the test controls, or a plain file
    /// that lets it through), so a test decides when the phase ends without sleeping.
    fn new(db: &str) -> Project {
        let server = PgServer::start();
        let url = server.create_database(db);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("stagecraft.toml"),
            "[environments.prod]\n[environments.staging]\n\
             [phases.build]\nplugin = \"builtin:exec\"\n\
             config = { command = \"cat gates/gate-{{version}}.fifo\" }\n\
             [phases.build.grants]\nexec = [\"cat\"]\nread = [\"gates\"]\n\
             [phases.finalize]\nplugin = \"builtin:noop\"\n\
             [state]\nbackend = \"postgres\"\n",
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("gates")).unwrap();
        Project { dir, server, url }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `stagecraft` in the project with the database URL in the environment, as a team would
    /// run it.
    fn cmd(&self) -> Command {
        let mut cmd = stagecraft(self.path());
        cmd.env(URL_VAR, &self.url);
        cmd
    }

    fn run(&self, args: &[&str]) -> Run {
        self.cmd().args(args).output().unwrap().into()
    }

    /// Let `version`'s build through at once.
    fn open_gate(&self, version: &str) {
        std::fs::write(self.path().join(format!("gates/gate-{version}.fifo")), "").unwrap();
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
}

fn status<'a>(release: &'a Value, phase: &str) -> &'a str {
    release["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == phase)
        .unwrap_or_else(|| panic!("no phase {phase} in {release}"))["status"]
        .as_str()
        .unwrap()
}

/// `stagecraft deploy --env <env> --version <version>` in `p`, on its server.
fn deploy_cmd(p: &Project, env: &str, version: &str) -> Command {
    let mut cmd = p.cmd();
    cmd.args(["deploy", "--env", env, "--version", version]);
    cmd
}

#[test]
fn deploy_rollback_and_releases_run_on_postgres_chosen_by_the_manifest() {
    let p = Project::new("e2e");
    p.open_gate("v1");
    p.open_gate("v2");
    for version in ["v1", "v2"] {
        let out = p.run(&["deploy", "--env", "prod", "--version", version]);
        assert_eq!(out.code, 0, "{out:?}");
        assert!(
            out.stdout.contains(&format!("Deployed {version} to prod")),
            "{out:?}"
        );
    }
    let out = p.run(&["rollback", "--env", "prod", "--to-previous", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let rollback: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(rollback["version"], "v1");
    assert_eq!(rollback["operation"], "rollback");

    // Nothing went to the file backend.
    assert!(!p.path().join(".stagecraft").exists());
    let listed = p.run(&["releases", "list"]);
    assert_eq!(listed.code, 0, "{listed:?}");
    let rows: Vec<&str> = listed.stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{}", listed.stdout);
    let versions: Vec<&str> = rows
        .iter()
        .map(|r| r.split_whitespace().nth(2).unwrap())
        .collect();
    assert_eq!(versions, ["v1", "v2", "v1"]);
    let releases = p.releases("prod");
    assert_eq!(releases[0]["rollback_target"], releases[2]["id"]);
    for r in &releases {
        assert_eq!(status(r, "build"), "completed");
    }

    // --state-url reads the same history from anywhere, without a manifest.
    let elsewhere = tempfile::tempdir().unwrap();
    let out: Run = stagecraft(elsewhere.path())
        .args(["releases", "list", "--json", "--state-url", &p.url])
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&out.stdout).unwrap(),
        serde_json::from_str::<Value>(&p.run(&["releases", "list", "--json"]).stdout).unwrap()
    );
}

#[test]
fn the_url_comes_only_from_the_named_variable_and_flags_do_not_mix() {
    let p = Project::new("selection");
    // Unset variable: bad input naming it; nothing else is tried.
    let out: Run = stagecraft(p.path())
        .args(["releases", "list"])
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "the manifest selects the postgres state backend, but the environment variable \
             {URL_VAR} is not set"
        )),
        "{out:?}"
    );
    let out: Run = stagecraft(p.path())
        .args(["deploy", "--env", "prod", "--version", "v1"])
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains(URL_VAR), "{out:?}");

    // A manifest can name another variable.
    let manifest = std::fs::read_to_string(p.path().join("stagecraft.toml")).unwrap();
    std::fs::write(
        p.path().join("stagecraft.toml"),
        manifest.replace(
            "backend = \"postgres\"\n",
            "backend = \"postgres\"\nurl_env = \"TEAM_DB\"\n",
        ),
    )
    .unwrap();
    p.open_gate("v1");
    let out: Run = stagecraft(p.path())
        .env("TEAM_DB", &p.url)
        .args(["deploy", "--env", "prod", "--version", "v1"])
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 0, "{out:?}");

    let out = p.run(&[
        "releases",
        "list",
        "--state-url",
        &p.url,
        "--state-file",
        "x.json",
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("cannot be used with"), "{out:?}");
    let out = p.run(&["releases", "list", "--state-url", "mysql://h/db"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("is not a PostgreSQL URL"), "{out:?}");
}

#[test]
fn connection_failures_exit_3_naming_the_server_and_never_the_password() {
    let p = Project::new("failures");
    let wrong = p.server.url_with_password("failures", "wrong-secret-pw");
    let out = p.run(&["releases", "list", "--state-url", &wrong]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr
            .contains("the server refused the login: password authentication failed"),
        "{out:?}"
    );
    assert!(!out.stderr.contains("wrong-secret-pw"), "{out:?}");

    let unreachable = p.server.unreachable_url("failures");
    p.open_gate("v1");
    let out: Run = stagecraft(p.path())
        .env(URL_VAR, &unreachable)
        .args(["deploy", "--env", "prod", "--version", "v1"])
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr
            .contains("Error: cannot connect to PostgreSQL at postgres://postgres@"),
        "{out:?}"
    );
    assert!(
        out.stderr.contains(&format!("the URL given by ${URL_VAR}")),
        "{out:?}"
    );
    assert!(!out.stderr.contains(PASSWORD), "{out:?}");
    assert!(p.releases("prod").is_empty(), "nothing was written");
}

/// A deploying process killed with SIGKILL: its session ends with it, so the very next deploy
/// (no --lock-wait) gets the lease and marks the old release interrupted.
#[test]
fn a_killed_deploy_frees_the_lease_at_once_and_is_marked_interrupted() {
    let p = Project::new("killed");
    let mut blocked = BlockedDeploy::start(deploy_cmd(&p, "prod", "v1"), p.path(), "v1");
    blocked.child.kill().unwrap(); // SIGKILL
    blocked.child.wait().unwrap();
    blocked.release_gate(); // let the orphaned `cat` exit

    let running = p.releases("prod")[0].clone();
    assert_eq!(status(&running, "build"), "running");

    p.open_gate("v2");
    let out = p.run(&[
        "deploy",
        "--env",
        "prod",
        "--version",
        "v2",
        "--lock-wait",
        "0",
        "--json",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let releases = p.releases("prod");
    assert_eq!(releases[0]["version"], "v2");
    assert_eq!(releases[1]["id"], running["id"]);
    assert_eq!(status(&releases[1], "build"), "failed");
    assert_eq!(status(&releases[1], "finalize"), "skipped");
    let shown = p.run(&[
        "releases",
        "show",
        running["id"].as_str().unwrap(),
        "--json",
    ]);
    assert!(
        shown
            .stdout
            .contains("interrupted: the process running build exited"),
        "{shown:?}"
    );
}

/// The server restarts while a phase runs: the deploy's lease died with its session, so the
/// deploy stops with a clear exit-3 error instead of writing without it, and the next deploy
/// recovers the release.
#[test]
fn a_server_restart_mid_deploy_is_a_clear_state_error() {
    let mut p = Project::new("restart");
    let mut blocked = BlockedDeploy::start(deploy_cmd(&p, "prod", "v1"), p.path(), "v1");
    p.server.stop();
    p.server.start_again();
    blocked.release_gate();
    let code = blocked.child.wait().unwrap().code();
    let stderr = blocked.rest_of_stderr();
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("lost the lease on environment \"prod\": its connection to PostgreSQL at postgres://postgres@"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was written"), "{stderr}");
    assert!(!stderr.contains(PASSWORD), "{stderr}");

    let left = p.releases("prod")[0].clone();
    assert_eq!(
        status(&left, "build"),
        "running",
        "nothing after the restart was written"
    );
    p.open_gate("v2");
    let out = p.run(&["deploy", "--env", "prod", "--version", "v2"]);
    assert_eq!(out.code, 0, "{out:?}");
    let releases = p.releases("prod");
    assert_eq!(status(&releases[1], "build"), "failed");
}

/// file -> PostgreSQL -> file keeps every release, field and the order; a non-empty destination
/// is refused unless --replace.
#[test]
fn state_migrate_round_trips_file_to_postgres_to_file() {
    let p = Project::new("migrate");
    let fixture = workspace_root().join("tests/fixtures/v1-releases.json");
    let source = p.path().join("original.json");
    std::fs::copy(&fixture, &source).unwrap();
    let original: Value = serde_json::from_slice(&std::fs::read(&fixture).unwrap()).unwrap();
    let count = original["releases"].as_array().unwrap().len();

    let out = p.run(&[
        "state",
        "migrate",
        "--to",
        &p.url,
        "--state-file",
        source.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout,
        format!(
            "Migrated {count} releases from {} to {}\n",
            source.display(),
            stagecraft::state::redact_url(&p.url)
        )
    );
    assert!(!out.stdout.contains(PASSWORD));

    // Refused the second time: the destination is no longer empty.
    let again = p.run(&[
        "state",
        "migrate",
        "--to",
        &p.url,
        "--state-file",
        source.to_str().unwrap(),
    ]);
    assert_eq!(again.code, 1, "{again:?}");
    assert!(
        again.stderr.contains(&format!(
            "already holds a release history ({count} releases); pass --replace"
        )),
        "{again:?}"
    );

    // Back to a file, from the manifest's postgres store.
    let back = p.path().join("back.json");
    let out = p.run(&["state", "migrate", "--to", back.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    let copied: Value = serde_json::from_slice(&std::fs::read(&back).unwrap()).unwrap();
    // Every field of every release, known or not, in the original order. (A release without a
    // `phases` key gains an empty one, as on any write.)
    let (old, new) = (
        original["releases"].as_array().unwrap(),
        copied["releases"].as_array().unwrap(),
    );
    assert_eq!(old.len(), new.len());
    for (o, n) in old.iter().zip(new) {
        for (key, value) in o.as_object().unwrap() {
            assert_eq!(&n[key], value, "release {} field {key}", o["id"]);
        }
    }
    assert_eq!(
        copied["notes"], original["notes"],
        "unknown top-level fields"
    );
    assert!(copied["lineage"].as_str().is_some());

    // --replace overwrites a destination with history.
    p.open_gate("v9");
    let out = p.run(&["deploy", "--env", "staging", "--version", "v9"]);
    assert_eq!(out.code, 0, "{out:?}");
    let before = std::fs::read(&back).unwrap();
    let refused = p.run(&["state", "migrate", "--to", back.to_str().unwrap()]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert_eq!(
        std::fs::read(&back).unwrap(),
        before,
        "a refusal writes nothing"
    );
    let out = p.run(&[
        "state",
        "migrate",
        "--to",
        back.to_str().unwrap(),
        "--replace",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .starts_with(&format!("Migrated {} releases", count + 1)),
        "{out:?}"
    );
    let replaced: Value = serde_json::from_slice(&std::fs::read(&back).unwrap()).unwrap();
    assert_eq!(replaced["releases"].as_array().unwrap().len(), count + 1);
    assert!(
        replaced["serial"].as_u64().unwrap() > copied["serial"].as_u64().unwrap(),
        "the destination's serial never goes back"
    );
    assert_eq!(
        replaced["lineage"], copied["lineage"],
        "one history, one lineage"
    );
}

/// Issue 13: after a server restart during a slow phase, a second deploy used to take the
/// lease at once and mark the first interrupted while the first process and the program its
/// phase ran were still running. Now the first stops (it cannot renew its heartbeat: it kills
/// its phase's programs and exits 3) before the second recovers anything: the second, finding
/// a recent heartbeat, waits until that process is gone. No overlap, by construction.
#[test]
fn a_lost_lease_stops_its_holder_before_anyone_else_starts() {
    let mut p = Project::new("lost_lease_overlap");
    let mut first = BlockedDeploy::start(deploy_cmd(&p, "prod", "v1"), p.path(), "v1");
    p.server.stop();
    p.server.start_again();
    p.open_gate("v2");
    // Started at once: it may take the advisory lock before the first has noticed anything.
    let second: Run = deploy_cmd(&p, "prod", "v2")
        .args(["--lock-wait", "60"])
        .output()
        .unwrap()
        .into();
    assert_eq!(second.code, 0, "{second:?}");
    // By the time the second deploy ran its phases, the first process had stopped: its exit
    // is already there to collect, and the program its phase ran is gone too.
    let exited = first.child.try_wait().unwrap();
    let gate_readers = processes_reading("gate-v1.fifo");
    // Let a `cat` that is still there finish, so that a regression fails below, not hangs.
    first.release_gate();
    let exit = first.child.wait().unwrap();
    let stderr = first.rest_of_stderr();
    assert!(exited.is_some(), "the first deploy still ran: {stderr}");
    assert_eq!(gate_readers, Vec::<u32>::new(), "its `cat` still ran");
    assert_eq!(exit.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("lost the lease on environment \"prod\"")
            && stderr.contains("Stopped the running phase"),
        "{stderr}"
    );
    let releases = p.releases("prod");
    assert_eq!(status(&releases[1], "build"), "failed");
    assert_eq!(status(&releases[0], "build"), "completed");
}

/// Processes whose command line mentions `needle`.
fn processes_reading(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(needle) && pid != std::process::id() {
            found.push(pid);
        }
    }
    found
}
