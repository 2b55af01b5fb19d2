//! Outgoing HTTP from Python and JavaScript phases, end to end: http-probe-py (on the
//! `stagecraft_http` helper the Python template ships) and http-probe-js (on `fetch`) reach the
//! origins of their `net` grant, and are refused every other one with a message naming the grant
//! to add; against servers on 127.0.0.1 that each test starts and stops.
//!
//! The components are built by scripts/build-polyglot-plugins (scripts/test runs it first).

use std::path::Path;

use stagecraft_tests::http::{
    deploy_v1 as deploy, net_project, rollout_phase as rollout, TestServer,
};
use stagecraft_tests::polyglot_plugin;

fn project(plugin: &Path, config: &str, net: &[String]) -> tempfile::TempDir {
    net_project(plugin, config, net, "")
}

/// `plugin` (an http-probe) reaches a granted origin, reports every status (a 503 is a response,
/// not an error), sends a request body, and is refused a server on another port.
fn reaches_the_granted_origin_only(plugin: &Path) {
    let granted = TestServer::start();
    let other = TestServer::start();

    let urls = format!("{} {}", granted.url("/ok"), granted.url("/status/503"));
    let dir = project(plugin, &format!("urls = {urls:?}"), &[granted.origin()]);
    let out = deploy(dir.path());
    assert_eq!(out.code, 0, "{out:?}");
    let phase = rollout(dir.path());
    assert_eq!(phase["status"], "completed", "{phase:#}");
    assert_eq!(phase["outputs"]["status.0"], "200", "{phase:#}");
    assert_eq!(phase["outputs"]["bytes.0"], "26", "{phase:#}");
    assert_eq!(phase["outputs"]["status.1"], "503", "{phase:#}");
    let seen = granted.seen_for("/ok");
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, "GET");
    assert_eq!(
        seen[0].header("host"),
        Some(format!("127.0.0.1:{}", granted.port()).as_str())
    );
    assert_eq!(granted.seen_for("/status/503").len(), 1);

    // A body larger than one write the guest makes (4 KiB) arrives whole, and so does the echo.
    let dir = project(
        plugin,
        &format!(
            "urls = {:?}, method = \"POST\", send_bytes = \"10000\"",
            granted.url("/echo")
        ),
        &[granted.origin()],
    );
    let out = deploy(dir.path());
    assert_eq!(out.code, 0, "{out:?}");
    let phase = rollout(dir.path());
    assert_eq!(phase["outputs"]["status.0"], "200", "{phase:#}");
    assert_eq!(phase["outputs"]["bytes.0"], "10000", "{phase:#}");
    let seen = granted.seen_for("/echo");
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!((seen[0].method.as_str(), seen[0].body_len), ("POST", 10000));

    // The other server is on the same address, another port: not granted.
    let dir = project(
        plugin,
        &format!("urls = {:?}", other.url("/ok")),
        &[granted.origin()],
    );
    let out = deploy(dir.path());
    assert_eq!(out.code, 2, "{out:?}");
    let want = format!(
        "network access refused: http://127.0.0.1:{port} is not in this phase's net grant; add \
         \"http://127.0.0.1:{port}\" to the phase's [phases.<name>.grants] net to allow it",
        port = other.port()
    );
    assert!(
        out.stderr
            .contains(&format!("failed in phase rollout: {}: ", other.url("/ok"))),
        "the plugin's own error names the URL: {out:?}"
    );
    assert!(out.stderr.contains(&want), "{out:?}");
    let phase = rollout(dir.path());
    assert_eq!(phase["status"], "failed", "{phase:#}");
    assert!(
        phase["error"].as_str().unwrap_or_default().contains(&want),
        "{phase:#}"
    );
    assert!(other.seen().is_empty(), "{:?}", other.seen());
}

#[test]
fn a_python_phase_reaches_its_granted_origin_and_is_refused_another() {
    reaches_the_granted_origin_only(&polyglot_plugin("fixtures", "http-probe-py"));
}

#[test]
fn a_javascript_phase_fetches_from_its_granted_origin_and_is_refused_another() {
    reaches_the_granted_origin_only(&polyglot_plugin("fixtures", "http-probe-js"));
}
