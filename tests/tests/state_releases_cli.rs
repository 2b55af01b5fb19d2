//! `stagecraft releases list|show` through the real binary: columns, ordering, N/A fields, the
//! JSON shape, messages, exit codes, and where the state file is looked for.

mod state_common;

use std::path::Path;

use serde_json::{json, Value};
use stagecraft::state::{FileStore, Operation, PhaseDetail, PhaseStatus, ReleaseId, StateStoreExt};
use stagecraft_tests::{run, stagecraft};
use state_common::*;

use PhaseStatus::*;

/// The sha256 recorded for the rollback's build plugin.
const DIGEST: &str = "3b4f3b4f3b4f3b4f3b4f3b4f3b4f3b4f3b4f3b4f3b4f3b4f3b4f3b4f3b4f3b4f";

/// prod: a completed deploy, a failed one, and a rollback to the first; staging: one running.
fn seed(path: &Path) {
    let store = FileStore::open(path.to_path_buf()).unwrap();
    store
        .transact(|s| {
            let mut r1 = release("rel-20261120-100000000", "prod", "v1.0.0", &all(Completed));
            r1.commit_sha = "3f2c1a9".into();
            let mut r2 = release(
                "rel-20261121-110000500",
                "prod",
                "v1.1.0",
                &[
                    ("build", Completed),
                    ("push", Completed),
                    ("migrate_pre", Completed),
                    ("rollout", Failed),
                    ("migrate_post", Skipped),
                    ("finalize", Skipped),
                ],
            );
            r2.previous_id = Some(r1.id.clone());
            r2.phase_details.insert(
                "rollout".into(),
                PhaseDetail {
                    error: Some("health check failed: http://127.0.0.1:8080 returned 503".into()),
                    limit: None,
                    ..Default::default()
                },
            );
            r2.phase_details.insert(
                "migrate_post".into(),
                PhaseDetail {
                    summary: Some("skipped: rollout failed".into()),
                    ..Default::default()
                },
            );
            let mut r3 = release("rel-20261122-120000000", "prod", "v1.0.0", &all(Completed));
            r3.operation = Some(Operation::Rollback);
            r3.rollback_target = Some(r1.id.clone());
            r3.previous_id = Some(r2.id.clone());
            r3.commit_sha = "3f2c1a9".into();
            r3.phase_details.insert(
                "build".into(),
                PhaseDetail {
                    summary: Some("built dist/app-v1.0.0.tar.gz".into()),
                    plugin: Some("builtin:exec".into()),
                    plugin_digest: Some(DIGEST.into()),
                    duration_ms: Some(1520),
                    outputs: [("artifact".to_string(), "dist/app-v1.0.0.tar.gz".to_string())]
                        .into(),
                    ..Default::default()
                },
            );
            let mut s1 = release(
                "rel-20261121-090000000",
                "staging",
                "v1.1.0-rc1",
                &[("build", Completed), ("push", Running)],
            );
            s1.phases.insert("migrate_pre".into(), Pending);
            s.releases.extend([r2, s1, r3, r1].map(Into::into));
            s.last_release_id = Some(ReleaseId::parse("rel-20261122-120000000").unwrap());
            Ok(())
        })
        .unwrap();
}

fn project() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".stagecraft/releases.json");
    seed(&path);
    (dir, path.to_str().unwrap().to_string())
}

#[test]
fn list_shows_every_environment_grouped_and_newest_first() {
    let (dir, _) = project();
    let out = run(dir.path(), &["releases", "list"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout,
        "\
RELEASE ID              ENVIRONMENT  VERSION     TIMESTAMP            STATUS     OPERATION  LIVE
rel-20261122-120000000  prod         v1.0.0      2026-11-22 12:00:00  completed  rollback   *
rel-20261121-110000500  prod         v1.1.0      2026-11-21 11:00:00  failed     deploy
rel-20261120-100000000  prod         v1.0.0      2026-11-20 10:00:00  completed  deploy
rel-20261121-090000000  staging      v1.1.0-rc1  2026-11-21 09:00:00  running    deploy
"
    );
    assert_eq!(out.stderr, "");
}

#[test]
fn list_for_one_environment_leaves_out_the_environment_column() {
    let (dir, _) = project();
    let out = run(dir.path(), &["releases", "list", "--env", "prod"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout,
        "\
RELEASE ID              VERSION  TIMESTAMP            STATUS     OPERATION  LIVE
rel-20261122-120000000  v1.0.0   2026-11-22 12:00:00  completed  rollback   *
rel-20261121-110000500  v1.1.0   2026-11-21 11:00:00  failed     deploy
rel-20261120-100000000  v1.0.0   2026-11-20 10:00:00  completed  deploy
"
    );
    // An environment neither declared nor in the history is a typo: said so, exit 1.
    let typo = run(dir.path(), &["releases", "list", "-e", "prdo"]);
    assert_eq!(typo.code, 1, "{typo:?}");
    assert!(
        typo.stderr
            .starts_with("Error: unknown environment \"prdo\": the manifest does not declare it")
            && typo
                .stderr
                .contains("(environments: prod, staging). Did you mean \"prod\"?"),
        "{}",
        typo.stderr
    );
    // One the manifest declares is just empty.
    std::fs::write(
        dir.path().join("stagecraft.toml"),
        "[environments.prod]\n[environments.qa]\n[phases.build]\nplugin = \"builtin:noop\"\n",
    )
    .unwrap();
    let none = run(dir.path(), &["releases", "list", "-e", "qa"]);
    assert_eq!(
        (none.code, none.stdout.as_str()),
        (0, "No releases found\n")
    );
    let none = run(dir.path(), &["releases", "list", "-e", "qa", "--json"]);
    assert_eq!((none.code, none.stdout.as_str()), (0, "[]\n"));
}

/// A state file named by hand that is not there is refused, not read as an empty history.
#[test]
fn a_named_state_file_that_does_not_exist_is_refused() {
    let (dir, _) = project();
    let out = run(
        dir.path(),
        &["releases", "list", "--state-file", "nope.json"],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("nope.json (from --state-file) does not exist; check the path."),
        "{}",
        out.stderr
    );
    assert!(!dir.path().join("nope.json").exists());
}

#[test]
fn list_json_is_an_array_of_releases_with_their_status() {
    let (dir, _) = project();
    let out = run(dir.path(), &["releases", "list", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let rows = v.as_array().unwrap();
    let summary: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap(),
                r["environment"].as_str().unwrap(),
                r["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("rel-20261122-120000000", "prod", "completed"),
            ("rel-20261121-110000500", "prod", "failed"),
            ("rel-20261120-100000000", "prod", "completed"),
            ("rel-20261121-090000000", "staging", "running"),
        ]
    );
    // Every release object has the same keys, whatever the record held.
    for r in rows {
        let keys: Vec<&String> = r.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "id",
                "environment",
                "version",
                "commit_sha",
                "timestamp",
                "previous_id",
                "operation",
                "rollback_target",
                "status",
                "live",
                "created_by",
                "message",
                "auto_rollback_of",
                "auto_rolled_back_by",
                "phases",
                "plan",
                "plan_of"
            ]
        );
    }
}

#[test]
fn show_prints_the_fields_and_each_phase_in_pipeline_order() {
    let (dir, _) = project();
    let out = run(dir.path(), &["releases", "show", "rel-20261121-110000500"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout,
        "\
Release ID:       rel-20261121-110000500
Environment:      prod
Version:          v1.1.0
Commit SHA:       N/A
Timestamp:        2026-11-21 11:00:00 UTC
Previous Release: rel-20261120-100000000
Operation:        deploy
Rolled Back By:   rel-20261122-120000000 (to rel-20261120-100000000)
Status:           failed

Phases:
  PHASE         STATUS     DETAIL
  build         completed
  push          completed
  migrate_pre   completed
  rollout       failed     error: health check failed: http://127.0.0.1:8080 returned 503
  migrate_post  skipped    summary: skipped: rollout failed
  finalize      skipped
"
    );
    let first = run(dir.path(), &["releases", "show", "rel-20261120-100000000"]);
    assert!(
        first.stdout.contains("Commit SHA:       3f2c1a9\n"),
        "{first:?}"
    );
    assert!(
        first.stdout.contains("Previous Release: N/A\n"),
        "{first:?}"
    );
    assert!(!first.stdout.contains("Rolled Back To"), "{first:?}");
    // Rolled back from by none: the rollback replaced the failed release, not this one.
    assert!(!first.stdout.contains("Rolled Back By"), "{first:?}");
    assert!(
        first.stdout.contains("Status:           completed\n"),
        "{first:?}"
    );
}

#[test]
fn show_names_the_rollback_target_of_a_rollback() {
    let (dir, _) = project();
    let out = run(dir.path(), &["releases", "show", "rel-20261122-120000000"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains(
            "Operation:        rollback\nRolled Back To:   rel-20261120-100000000 (v1.0.0)\n\
             Status:           completed (live)\n"
        ),
        "{out:?}"
    );
    // Duration, plugin, short digest, summary and outputs per phase; columns no phase fills
    // are left out.
    assert!(
        out.stdout.ends_with(
            "\
Phases:
  PHASE         STATUS     DURATION  PLUGIN        DIGEST        DETAIL
  build         completed  1.5s      builtin:exec  3b4f3b4f3b4f  summary: built dist/app-v1.0.0.tar.gz
                                                                 output: artifact = dist/app-v1.0.0.tar.gz
  push          completed
  migrate_pre   completed
  rollout       completed
  migrate_post  completed
  finalize      completed
"
        ),
        "{}",
        out.stdout
    );
    let verbose = run(
        dir.path(),
        &["releases", "show", "-v", "rel-20261122-120000000"],
    );
    assert!(
        verbose.stdout.contains(&format!("  {DIGEST}  ")),
        "{verbose:?}"
    );
}

#[test]
fn show_json_is_one_stable_object() {
    let (dir, _) = project();
    let out = run(
        dir.path(),
        &["releases", "show", "rel-20261122-120000000", "--json"],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["operation"], "rollback");
    assert_eq!(v["rollback_target"], "rel-20261120-100000000");
    assert_eq!(v["previous_id"], "rel-20261121-110000500");
    assert_eq!(v["timestamp"], "2026-11-22T12:00:00.000Z");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["live"], true);
    assert_eq!(
        v["phases"][0],
        json!({
            "name": "build",
            "status": "completed",
            "summary": "built dist/app-v1.0.0.tar.gz",
            "error": null,
            "limit": null,
            "plugin": "builtin:exec",
            "plugin_digest": DIGEST,
            "started_at": null,
            "finished_at": null,
            "duration_ms": 1520,
            "outputs": {"artifact": "dist/app-v1.0.0.tar.gz"}
        })
    );
    let names: Vec<&str> = v["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, stagecraft::state::CANONICAL_PHASES);
}

#[test]
fn an_unknown_release_is_bad_input() {
    let (dir, _) = project();
    for id in ["rel-20990101-000000000", "not-an-id"] {
        let out = run(dir.path(), &["releases", "show", id]);
        assert_eq!(out.code, 1, "{out:?}");
        assert_eq!(out.stderr, format!("Error: release not found: {id}\n"));
        assert_eq!(out.stdout, "");
    }
    let usage = run(dir.path(), &["releases", "show"]);
    assert_eq!(usage.code, 1, "usage errors exit 1: {usage:?}");
    let usage = run(dir.path(), &["releases", "list", "--bogus"]);
    assert_eq!(usage.code, 1, "{usage:?}");
}

#[test]
fn the_original_fixture_lists_and_shows_unchanged() {
    let fixture = stagecraft_tests::workspace_root().join("tests/fixtures/v1-releases.json");
    let before = std::fs::read(&fixture).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let f = fixture.to_str().unwrap();
    let out = run(dir.path(), &["releases", "list", "--state-file", f]);
    assert_eq!(out.code, 0, "{out:?}");
    // +02:00 and fractional timestamps are shown in UTC; a record without phases is pending.
    assert_eq!(
        out.stdout,
        "\
RELEASE ID              ENVIRONMENT  VERSION  TIMESTAMP            STATUS     OPERATION  LIVE
rel-20240303-080000456  prod         v1.1.0   2024-03-03 08:00:00  failed     deploy
rel-20240302-090000123  prod         v1.0.0   2024-03-02 09:00:00  completed  deploy     *
rel-20240304-070000     staging      v1.2.0   2024-03-04 07:00:00  pending    deploy
rel-20240301-101500     staging      v1.0.0   2024-03-01 10:15:00  completed  deploy     *
"
    );
    let out = run(
        dir.path(),
        &["releases", "show", "rel-20240304-070000", "--state-file", f],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with(
        "\
Release ID:       rel-20240304-070000
Environment:      staging
Version:          v1.2.0
Commit SHA:       N/A
Timestamp:        2024-03-04 07:00:00 UTC
Previous Release: rel-20240301-101500
Operation:        deploy
Status:           pending
"
    ));
    assert!(out.stdout.ends_with("  finalize      pending\n"), "{out:?}");
    let out = run(
        dir.path(),
        &[
            "releases",
            "show",
            "rel-20240302-090000123",
            "--json",
            "--state-file",
            f,
        ],
    );
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        v["timestamp"], "2024-03-02T09:00:00.123456789Z",
        "kept as written"
    );
    assert_eq!(v["commit_sha"], "");
    assert_eq!(
        std::fs::read(&fixture).unwrap(),
        before,
        "reading changed the fixture"
    );
}

#[test]
fn the_state_file_flag_beats_the_environment_variable_which_beats_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // Three stores, one release each, told apart by environment.
    for (rel, env) in [
        (".stagecraft/releases.json", "default"),
        ("from-env/state.json", "fromenv"),
        ("from-flag.json", "fromflag"),
    ] {
        let store = FileStore::open(root.join(rel)).unwrap();
        store
            .transact(|s| {
                s.releases
                    .push(release("rel-20261125-060000000", env, "v1", &all(Completed)).into());
                Ok(())
            })
            .unwrap();
    }
    let env_of = |out: &stagecraft_tests::Run| -> String {
        assert_eq!(out.code, 0, "{out:?}");
        let v: Value = serde_json::from_str(&out.stdout).unwrap();
        v[0]["environment"].as_str().unwrap().to_string()
    };
    let list = |extra: &[&str], state_env: Option<&str>| {
        let mut cmd = stagecraft(root);
        cmd.args(["releases", "list", "--json"]).args(extra);
        if let Some(value) = state_env {
            cmd.env("STAGECRAFT_STATE_FILE", value);
        }
        stagecraft_tests::Run::from(cmd.output().unwrap())
    };
    assert_eq!(env_of(&list(&[], None)), "default");
    // Relative paths are relative to the working directory.
    assert_eq!(env_of(&list(&[], Some("from-env/state.json"))), "fromenv");
    assert_eq!(
        env_of(&list(
            &["--state-file", "from-flag.json"],
            Some("from-env/state.json")
        )),
        "fromflag"
    );
    // --config moves the project root (and so the default path) to the manifest's directory,
    // and the manifest itself is not needed to read history.
    let sub = tempfile::tempdir().unwrap();
    let config = root.join("stagecraft.toml");
    let out = stagecraft(sub.path())
        .args([
            "releases",
            "list",
            "--json",
            "--config",
            config.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(env_of(&out.into()), "default");
    let elsewhere = run(sub.path(), &["releases", "list"]);
    assert_eq!(elsewhere.stdout, "No releases found\n");
}

#[test]
fn a_corrupt_file_is_a_state_error() {
    let (dir, path) = project();
    std::fs::write(&path, "{\"releases\": [").unwrap();
    let out = run(dir.path(), &["releases", "list"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("is truncated"), "{out:?}");
    let out = run(
        dir.path(),
        &["releases", "show", "rel-20261120-100000000", "--json"],
    );
    assert_eq!(out.code, 3, "{out:?}");
}

/// Columns are aligned by display width (a CJK character takes two terminal columns), and on a
/// pipe no value is cut, however long.
#[test]
fn columns_align_by_display_width_and_a_pipe_gets_every_value_whole() {
    let dir = tempfile::tempdir().unwrap();
    let long = format!("v{}", "9".repeat(69));
    let store = FileStore::open(dir.path().join(".stagecraft/releases.json")).unwrap();
    store
        .transact(|s| {
            s.releases.extend(
                [
                    release(
                        "rel-20261120-100000000",
                        "prod",
                        "v5-日本語",
                        &all(Completed),
                    ),
                    release("rel-20261121-100000000", "prod", &long, &all(Completed)),
                    release("rel-20261122-100000000", "prod", "v6", &all(Completed)),
                ]
                .map(Into::into),
            );
            Ok(())
        })
        .unwrap();
    let out = run(dir.path(), &["releases", "list", "--env", "prod"]);
    assert_eq!(out.code, 0, "{out:?}");
    // Display width of what precedes `needle`: the CJK characters here take two columns.
    let column = |line: &str, needle: &str| -> usize {
        let at = line
            .find(needle)
            .unwrap_or_else(|| panic!("{needle} in {line:?}"));
        line[..at]
            .chars()
            .map(|c| {
                if ('\u{3040}'..='\u{9fff}').contains(&c) {
                    2
                } else {
                    1
                }
            })
            .sum()
    };
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", out.stdout);
    let timestamp = column(lines[0], "TIMESTAMP");
    for (line, stamp) in lines[1..]
        .iter()
        .zip(["2026-11-22", "2026-11-21", "2026-11-20"])
    {
        assert_eq!(column(line, stamp), timestamp, "\n{}", out.stdout);
    }
    assert!(lines[2].contains(&format!("  {long}  ")), "{}", out.stdout);
    assert!(lines[3].contains("  v5-日本語  "), "{}", out.stdout);
    assert!(!out.stdout.contains('…'), "nothing is cut on a pipe");
}
