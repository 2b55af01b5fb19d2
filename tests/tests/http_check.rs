//! `builtin:http-check` end to end, against a server on 127.0.0.1 that each test starts: it
//! passes, retries until the answer is right, fails with what it saw, and a failed check after
//! a rollout rolls the environment back automatically when the manifest asks for it.

use std::path::Path;

use serde_json::Value;
use stagecraft_tests::http::TestServer;
use stagecraft_tests::{run, Run};

/// A project whose pipeline is `rollout` (noop) then `verify` (http-check with `config`),
/// `verify` granted the server's origin; `deploy` is extra `[deploy]` settings.
fn project(server: &TestServer, config: &str, deploy: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("stagecraft.toml"),
        format!(
            "[environments.prod]\n[pipeline]\nphases = [\"rollout\", \"verify\"]\n\
             [deploy]\n{deploy}\n\
             [phases.rollout]\nplugin = \"builtin:noop\"\n\
             [phases.verify]\nplugin = \"builtin:http-check\"\nconfig = {{ {config} }}\n\
             [phases.verify.grants]\nnet = [{:?}]\n",
            server.origin()
        ),
    )
    .unwrap();
    dir
}

fn deploy(dir: &Path, version: &str) -> Run {
    run(dir, &["deploy", "--env", "prod", "--version", version])
}

/// The releases of `prod`, newest first.
fn releases(dir: &Path) -> Vec<Value> {
    let out = run(dir, &["releases", "list", "--env", "prod", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    serde_json::from_str::<Vec<Value>>(&out.stdout).unwrap()
}

fn verify_phase(release: &Value) -> Value {
    release["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "verify")
        .unwrap()
        .clone()
}

#[test]
fn a_healthy_answer_passes_on_the_first_attempt_and_records_status_and_latency() {
    let server = TestServer::start();
    let dir = project(
        &server,
        &format!("url = {:?}, body_contains = \"hello\"", server.url("/ok")),
        "",
    );
    let out = deploy(dir.path(), "v1");
    assert_eq!(out.code, 0, "{out:?}");
    let verify = verify_phase(&releases(dir.path())[0]);
    assert_eq!(verify["outputs"]["status"], "200", "{verify:#}");
    assert_eq!(verify["outputs"]["attempts"], "1", "{verify:#}");
    assert!(
        verify["outputs"]["latency_ms"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .is_ok(),
        "{verify:#}"
    );
    let summary = verify["summary"].as_str().unwrap();
    assert!(
        summary.starts_with(&format!(
            "GET {} answered 200 on the first attempt",
            server.url("/ok")
        )),
        "{summary}"
    );
}

#[test]
fn it_retries_until_the_service_is_ready() {
    let server = TestServer::start();
    let dir = project(
        &server,
        &format!(
            "url = {:?}, attempts = \"4\", backoff = \"1ms\"",
            server.url("/flaky/2")
        ),
        "",
    );
    let out = deploy(dir.path(), "v1");
    assert_eq!(out.code, 0, "{out:?}");
    let verify = verify_phase(&releases(dir.path())[0]);
    assert_eq!(verify["outputs"]["attempts"], "3", "{verify:#}");
    assert!(
        verify["summary"]
            .as_str()
            .unwrap()
            .contains("answered 200 after 3 attempts"),
        "{verify:#}"
    );
    assert_eq!(server.seen_for("/flaky/2").len(), 3);
    assert!(
        out.stdout
            .contains("attempt 1/4: status 503; retrying in 1 ms")
            || out
                .stderr
                .contains("attempt 1/4: status 503; retrying in 1 ms"),
        "{out:?}"
    );
}

#[test]
fn it_fails_with_what_it_last_saw_when_the_answer_never_comes_right() {
    let server = TestServer::start();
    let dir = project(
        &server,
        &format!(
            "url = {:?}, attempts = \"2\", backoff = \"1ms\"",
            server.url("/status/503")
        ),
        "",
    );
    let out = deploy(dir.path(), "v1");
    assert_eq!(out.code, 2, "{out:?}");
    let verify = verify_phase(&releases(dir.path())[0]);
    let error = verify["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!(
            "GET {} failed 2 attempts; last: status 503 (expected 2xx)",
            server.url("/status/503")
        )),
        "{error}"
    );
    // The body's start is kept with the failure, in the state file.
    let state = std::fs::read_to_string(dir.path().join(".stagecraft/releases.json")).unwrap();
    assert!(state.contains("\"last body: status 503\""), "{state}");
    assert_eq!(server.seen_for("/status/503").len(), 2);

    // A JSON field with the wrong value fails too.
    let dir = project(
        &server,
        &format!(
            "url = {:?}, json_field = \"build.version\", json_equals = \"{{{{version}}}}\", \
             attempts = \"1\"",
            server.url("/json")
        ),
        "",
    );
    let out = deploy(dir.path(), "v3");
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("but build.version is \"v2\", not \"v3\""),
        "{out:?}"
    );
}

#[test]
fn an_origin_outside_the_grant_fails_at_once_without_retrying() {
    let server = TestServer::start();
    let other = TestServer::start();
    let dir = project(
        &server,
        &format!(
            "url = {:?}, attempts = \"5\", backoff = \"1s\"",
            other.url("/ok")
        ),
        "",
    );
    let out = deploy(dir.path(), "v1");
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("is not in this phase's net grant"),
        "{out:?}"
    );
    assert!(!out.stderr.contains("retrying"), "{out:?}");
}

#[test]
fn a_failed_check_rolls_back_automatically_and_both_releases_say_so() {
    let server = TestServer::start();
    // /json reports version v2: deploying v2 passes, v3 fails its check.
    let dir = project(
        &server,
        &format!(
            "url = {:?}, json_field = \"build.version\", json_equals = \"{{{{version}}}}\", \
             attempts = \"1\"",
            server.url("/json")
        ),
        "on_failure = \"rollback\"",
    );
    assert_eq!(deploy(dir.path(), "v2").code, 0);
    let out = deploy(dir.path(), "v3");
    assert_eq!(out.code, 2, "{out:?}");

    let history = releases(dir.path());
    let versions: Vec<&str> = history
        .iter()
        .map(|r| r["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["v2", "v3", "v2"], "newest first");
    let (rollback, failed) = (&history[0], &history[1]);
    assert_eq!(rollback["operation"], "rollback");
    assert_eq!(rollback["status"], "completed");
    assert_eq!(rollback["auto_rollback_of"], failed["id"]);
    assert_eq!(failed["auto_rolled_back_by"], rollback["id"]);
    // The rollback's own check ran against the version it restored.
    assert_eq!(verify_phase(rollback)["outputs"]["status"], "200");

    let shown = run(
        dir.path(),
        &["releases", "show", failed["id"].as_str().unwrap()],
    );
    assert!(
        shown.stdout.contains(rollback["id"].as_str().unwrap()),
        "{shown:?}"
    );
}
