//! Benchmark: what outgoing HTTP costs a phase. In one run, against one local server:
//!
//! - a phase making one GET through `wasi:http` (the http-probe fixture, run by the plugin host
//!   in a fresh store, as a deploy runs it), against `curl` doing the same GET as a process, and
//!   against a phase that makes no request (builtin:noop);
//! - a six-phase `stagecraft deploy` whose last phase is `builtin:http-check` against the same
//!   deploy with `builtin:noop` there.
//!
//! Prints a Markdown table for docs/performance.md ("Outgoing HTTP").
//!
//! Run: `cargo build -p stagecraft && cargo run -p stagecraft-tests --bin bench-net`

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use stagecraft::plugin::net::NetGrant;
use stagecraft::plugin::{
    Grants, Limits, NullSink, PhaseContext, PluginHost, PluginSource, Sandbox,
};
use stagecraft_tests::bench::{deploy_context, median, ms, timed};
use stagecraft_tests::http::TestServer;
use stagecraft_tests::{stagecraft, wasm_plugins_dir};

const RUNS: usize = 200;
const DEPLOYS: usize = 30;

fn main() {
    let server = TestServer::start();
    let url = server.url("/ok");

    // One request from a phase, in a fresh store each time (compiled once, from the cache).
    let cache = tempfile::tempdir().unwrap();
    let host = PluginHost::new(Some(cache.path().to_path_buf())).unwrap();
    let probe = host
        .load(&PluginSource::File(
            wasm_plugins_dir().join("fixtures/http-probe.wasm"),
        ))
        .expect("the http-probe fixture loads");
    let noop = host
        .load(&PluginSource::Builtin("noop".into()))
        .expect("builtin:noop loads");
    let sandbox = Sandbox {
        project_root: std::env::temp_dir(),
        grants: Grants {
            net: vec![NetGrant::parse(&server.origin()).unwrap()],
            ..Grants::default()
        },
        limits: Limits::default(),
    };
    let ctx = context(&url);
    let mut phase = Vec::new();
    for _ in 0..RUNS {
        let (took, run) = timed(|| host.run(&probe, &ctx, &sandbox, &NullSink));
        let report = run.result.expect("the request succeeds");
        assert_eq!(report.outputs["status.0"], "200");
        phase.push(took);
    }
    let mut bare = Vec::new();
    for _ in 0..RUNS {
        let (took, run) = timed(|| host.run(&noop, &ctx, &sandbox, &NullSink));
        run.result.expect("noop completes");
        bare.push(took);
    }
    let mut curl = Vec::new();
    for _ in 0..RUNS {
        let (took, out) = timed(|| {
            Command::new("curl")
                .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", &url])
                .output()
                .expect("run curl")
        });
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
        curl.push(took);
    }

    // Six-phase deploys, the last phase http-check or noop.
    let with_check = project(Some(&url));
    let without = project(None);
    let mut checked = Vec::new();
    let mut unchecked = Vec::new();
    for n in 0..=DEPLOYS {
        let (a, ok_a) = timed(|| deploy(with_check.path(), n));
        let (b, ok_b) = timed(|| deploy(without.path(), n));
        assert!(ok_a && ok_b, "every deploy succeeds");
        // The first deploy of each compiles its plugins into the shared cache.
        if n > 0 {
            checked.push(a);
            unchecked.push(b);
        }
    }
    let requests = server.seen_for("/ok").len();
    assert_eq!(
        requests,
        2 * RUNS + DEPLOYS + 1,
        "every phase, curl and check made its request"
    );

    let phase = ms(median(&mut phase));
    let bare = ms(median(&mut bare));
    let curl = ms(median(&mut curl));
    let checked = ms(median(&mut checked));
    let unchecked = ms(median(&mut unchecked));
    println!("| measurement | median | ratio |");
    println!("| --- | --- | --- |");
    println!(
        "| phase making one GET through wasi:http (fresh store, instantiate, request, report) | {phase:.2} ms | {:.2} of curl |",
        phase / curl
    );
    println!("| `curl` making the same GET as a process | {curl:.2} ms | 1 |");
    println!(
        "| phase making no request (builtin:noop), for reference | {bare:.2} ms | {:.2} of curl |",
        bare / curl
    );
    println!(
        "| 6-phase deploy, last phase `builtin:http-check` | {checked:.1} ms | {:.2} of without |",
        checked / unchecked
    );
    println!("| the same deploy, last phase `builtin:noop` | {unchecked:.1} ms | 1 |");
    println!(
        "\nMedians of {RUNS} phase runs, {RUNS} curl runs and {DEPLOYS} deploys of each kind \
         (after one that fills the compiled-component cache), against one server on 127.0.0.1."
    );
}

fn context(url: &str) -> PhaseContext {
    deploy_context(
        "verify",
        BTreeMap::from([("urls".to_string(), url.to_string())]),
    )
}

/// The canonical six phases, all noop but the last: http-check of `url`, or noop.
fn project(url: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut manifest = String::from("[environments.prod]\n");
    for phase in ["build", "push", "migrate_pre", "rollout", "migrate_post"] {
        manifest.push_str(&format!("[phases.{phase}]\nplugin = \"builtin:noop\"\n"));
    }
    match url {
        Some(url) => {
            let origin = url.trim_end_matches("/ok");
            manifest.push_str(&format!(
                "[phases.finalize]\nplugin = \"builtin:http-check\"\n\
                 config = {{ url = {url:?} }}\n[phases.finalize.grants]\nnet = [{origin:?}]\n"
            ));
        }
        None => manifest.push_str("[phases.finalize]\nplugin = \"builtin:noop\"\n"),
    }
    std::fs::write(dir.path().join("stagecraft.toml"), manifest).unwrap();
    dir
}

fn deploy(dir: &Path, n: usize) -> bool {
    stagecraft(dir)
        .args(["deploy", "--env", "prod", "--version", &format!("v{n}")])
        .output()
        .expect("run stagecraft")
        .status
        .success()
}
