//! Benchmark: what running a Rust no-op phase (the built-in `noop` component) costs the plugin
//! host, cold (compile and cache), warm (load the cached compilation) and per run (instantiate
//! and call in a fresh store), against spawning `/bin/true` as a process. One run measures all
//! of them, so the ratios compare like with like. Prints a Markdown table for
//! docs/performance.md ("Plugin host").
//!
//! Run: `cargo build -p stagecraft && cargo run -p stagecraft-tests --bin bench-plugin-host`

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use stagecraft::plugin::{
    Grants, Limits, NullSink, Operation, Outcome, PhaseContext, PluginHost, PluginSource,
    ReleaseInfo, Sandbox,
};
use stagecraft_tests::bench::{median, ms, timed};

const COLD: usize = 10;
const WARM: usize = 200;
const RUNS: usize = 1_000;
const SPAWNS: usize = 500;
/// Phases of the exec rows, and execs in the longer of them.
const EXEC_PHASES: usize = 21;
const EXECS: usize = 41;

fn main() {
    let noop = noop_wasm();
    let source = PluginSource::File(noop.clone());
    let size = std::fs::metadata(&noop).unwrap().len();

    // Cold: a new host with an empty cache directory compiles the component and writes the
    // cache entry.
    let mut cold = Vec::new();
    for _ in 0..COLD {
        let cache = tempfile::tempdir().unwrap();
        let host = PluginHost::new(Some(cache.path().to_path_buf())).unwrap();
        let (took, loaded) = timed(|| host.load(&source).unwrap());
        assert!(!loaded.was_cached(), "an empty cache must compile");
        cold.push(took);
    }

    // Warm: a new host (as in a new `stagecraft` process) finds the compiled component on disk.
    let cache = tempfile::tempdir().unwrap();
    PluginHost::new(Some(cache.path().to_path_buf()))
        .unwrap()
        .load(&source)
        .unwrap();
    let mut warm = Vec::new();
    for _ in 0..WARM {
        let host = PluginHost::new(Some(cache.path().to_path_buf())).unwrap();
        let (took, loaded) = timed(|| host.load(&source).unwrap());
        assert!(loaded.was_cached(), "a populated cache must not compile");
        warm.push(took);
    }

    // Per run: a fresh store, instantiate, call run(), check the report.
    let host = PluginHost::new(Some(cache.path().to_path_buf())).unwrap();
    let loaded = host.load(&source).unwrap();
    let ctx = context();
    let sandbox = Sandbox {
        project_root: std::env::temp_dir(),
        grants: Grants::default(),
        limits: Limits::default(),
    };
    let mut runs = Vec::new();
    for _ in 0..RUNS {
        let (took, run) = timed(|| host.run(&loaded, &ctx, &sandbox, &NullSink));
        let report = run.result.expect("noop completes");
        assert_eq!(report.outcome, Outcome::Completed);
        runs.push(took);
    }

    // Exec: the hostile fixture's `exec-repeat` mode runs `true` through the host's exec,
    // confined (Landlock, namespaces, seccomp) or `exec_unconfined` (namespaces only). A phase
    // of EXECS execs minus a phase of one is the cost of EXECS - 1 execs, without the phase's
    // own setup (its grants, its ruleset, its private temp dir).
    let fixture =
        PluginSource::File(stagecraft_tests::wasm_plugins_dir().join("fixtures/hostile.wasm"));
    let hostile = host.load(&fixture).expect("the hostile fixture loads");
    let project = tempfile::tempdir().unwrap();
    let exec_sandbox = |confined: bool| Sandbox {
        project_root: project.path().to_path_buf(),
        grants: Grants {
            exec: if confined {
                vec!["true".into()]
            } else {
                Vec::new()
            },
            exec_unconfined: if confined {
                Vec::new()
            } else {
                vec!["true".into()]
            },
            ..Grants::default()
        },
        limits: Limits::default(),
    };
    let phase_of = |sandbox: &Sandbox, count: usize| {
        let mut ctx = context();
        ctx.config.insert("mode".into(), "exec-repeat".into());
        ctx.config.insert("count".into(), count.to_string());
        let mut times = Vec::new();
        for _ in 0..EXEC_PHASES {
            let (took, run) = timed(|| host.run(&hostile, &ctx, sandbox, &NullSink));
            let report = run.result.expect("every exec of `true` succeeds");
            assert_eq!(report.outcome, Outcome::Completed);
            times.push(took);
        }
        ms(median(&mut times))
    };
    let confined_one = phase_of(&exec_sandbox(true), 1);
    let confined_many = phase_of(&exec_sandbox(true), EXECS);
    let unconfined_one = phase_of(&exec_sandbox(false), 1);
    let unconfined_many = phase_of(&exec_sandbox(false), EXECS);
    let per_exec = |one: f64, many: f64| (many - one) / (EXECS - 1) as f64;
    let confined = per_exec(confined_one, confined_many);
    let unconfined = per_exec(unconfined_one, unconfined_many);

    let mut spawns = Vec::new();
    for _ in 0..SPAWNS {
        let (took, status) = timed(|| Command::new("/bin/true").status().unwrap());
        assert!(status.success());
        spawns.push(took);
    }

    // The same spawn collecting stdout and stderr through pipes, as `exec` must.
    let mut captured = Vec::new();
    for _ in 0..SPAWNS {
        let (took, out) = timed(|| Command::new("/bin/true").output().unwrap());
        assert!(out.status.success());
        captured.push(took);
    }

    let cold = ms(median(&mut cold));
    let warm = ms(median(&mut warm));
    let run = ms(median(&mut runs));
    let spawn = ms(median(&mut spawns));
    let captured = ms(median(&mut captured));
    println!(
        "Built-in `noop` ({} KiB component), medians in one run\n",
        size / 1024
    );
    println!("| what | iterations | median | ratio to spawning `/bin/true` |");
    println!("| --- | --- | --- | --- |");
    let row = |what: &str, n: &str, ms: f64| {
        println!("| {what} | {n} | {} | {:.3} |", show(ms), ms / spawn);
    };
    row(
        "cold: compile and write the cache entry",
        &COLD.to_string(),
        cold,
    );
    row("warm: load the cached compilation", &WARM.to_string(), warm);
    row(
        "run: fresh store, instantiate, call `run`",
        &RUNS.to_string(),
        run,
    );
    row(
        "warm phase in a new process: cached load + run",
        "sum of the medians",
        warm + run,
    );
    row("spawn and wait for `/bin/true`", &SPAWNS.to_string(), spawn);
    row(
        "phase that execs `true` once, confined (grants, ruleset, temp dir, one exec)",
        &EXEC_PHASES.to_string(),
        confined_one,
    );
    row(
        "one exec of `true`, confined: Landlock, user+PID namespaces, seccomp",
        &format!("{EXECS} per phase, {EXEC_PHASES} phases"),
        confined,
    );
    row(
        "one exec of `true`, `exec_unconfined`: user+PID namespaces only",
        &format!("{EXECS} per phase, {EXEC_PHASES} phases"),
        unconfined,
    );
    row(
        "spawn `/bin/true` capturing its stdout and stderr (`Command::output`)",
        &SPAWNS.to_string(),
        captured,
    );
    println!(
        "\nOne confined exec against an unconfined spawn that captures output as exec does: \
         {:.2}x (`exec_unconfined`: {:.2}x); against a bare spawn: {:.2}x.",
        confined / captured,
        unconfined / captured,
        confined / spawn
    );
    let _ = std::io::stdout().flush();
}

fn context() -> PhaseContext {
    PhaseContext {
        phase: "build".into(),
        operation: Operation::Deploy,
        release: ReleaseInfo {
            id: "rel-20260101-000000000".into(),
            environment: "prod".into(),
            version: "v2".into(),
            commit: "c0ffee".into(),
            previous_id: Some("rel-20251231-000000000".into()),
        },
        rollback_target: None,
        config: BTreeMap::new(),
        vars: BTreeMap::from([("url".to_string(), "http://127.0.0.1:8080".to_string())]),
        earlier_outputs: Vec::new(),
    }
}

/// `<target>/wasm-plugins/builtin/noop.wasm`, where host/build.rs puts the built-in.
fn noop_wasm() -> PathBuf {
    let path = stagecraft_tests::wasm_plugins_dir().join("builtin/noop.wasm");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p stagecraft` first",
        path.display()
    );
    path
}

fn show(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.0} µs", ms * 1000.0)
    } else {
        format!("{ms:.2} ms")
    }
}
