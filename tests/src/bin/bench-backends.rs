//! Benchmark: what a commit costs on the file and PostgreSQL state backends as the history grows
//! (10, 10,000 and 100,000 releases), with one writer process and with eight writers on eight
//! environments, and what a six-phase deploy through the binary costs on each, in one run.
//!
//! Each commit is a deploy's first one, through the transaction a deploy uses
//! (`transact_env`): allocate an id and append a release to the writer's environment. The file
//! backend is also measured through a whole-state `transact`, the protocol every commit used
//! before transactions were scoped, so the two rows compare the old and new paths. PostgreSQL runs
//! with its default durability (fsync, synchronous commit) on a Unix socket. Prints Markdown
//! tables for docs/performance.md.
//!
//! Run: `cargo build -p stagecraft && cargo run -p stagecraft-tests --bin bench-backends`

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stagecraft::state::{
    PhaseStatus, ReleaseId, State, StateStoreExt, StoreTarget, Timestamp, Window, CANONICAL_PHASES,
};
use stagecraft_tests::bench::{median, ms, noop_project};
use stagecraft_tests::pg::PgServer;

const HISTORIES: [usize; 3] = [10, 10_000, 100_000];
const WRITERS: [usize; 2] = [1, 8];
/// Commits per row on PostgreSQL, whose commit does not grow with the history (each row adds
/// this many releases to it); a file's commit does, so its rows make fewer: 400 keep a file of
/// 10 releases small, and one of 100,000 takes a tenth of a second per commit.
const COMMITS: usize = 2000;
const FILE_COMMITS: usize = 400;
const FEW_COMMITS: usize = 16;
const DEPLOYS: usize = 15;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("preload") {
        // `bench-backends preload <store> <n>`: the history a row starts from, for a look at a
        // store outside a run (EXPLAIN, pg_stat_activity).
        preload(&args[2], args[3].parse().unwrap());
        return;
    }
    if args.get(1).map(String::as_str) == Some("writer") {
        writer(&args[2], args[3].parse().unwrap(), &args[4], &args[5]);
        return;
    }
    let server = PgServer::start_durable();
    let files = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    // `BENCH_HISTORIES=10` for a quick look; the documented figures use all three.
    let histories: Vec<usize> = match std::env::var("BENCH_HISTORIES") {
        Ok(list) => list.split(',').map(|n| n.trim().parse().unwrap()).collect(),
        Err(_) => HISTORIES.to_vec(),
    };
    // Untimed warm-up on scratch stores: the first writers of a run otherwise pay for the new
    // server's first WAL segments and a cold page cache, and the first row reads slow.
    let scratch = files.path().join("warm-up/releases.json");
    let scratch = scratch.to_str().unwrap().to_string();
    for spec in [scratch, server.create_database("warm_up")] {
        run_writers(&spec, 8, COMMITS / 8, "env");
    }
    for (n, history) in histories.into_iter().enumerate() {
        let file = files
            .path()
            .join(format!("h{n}/releases.json"))
            .to_str()
            .unwrap()
            .to_string();
        let pg = server.create_database(&format!("bench{n}"));
        for (backend, spec) in [("file", &file), ("postgres", &pg)] {
            if !wanted(backend) {
                continue;
            }
            let took = Instant::now();
            preload(spec, history);
            if backend == "postgres" {
                // Steady state, as autovacuum and the checkpointer keep a real database: the
                // planner knows the table, and the preload's writes are on disk, not flushed
                // in the middle of the measurement.
                settle(&server, &format!("bench{n}"));
            }
            eprintln!(
                "{backend}: {history} releases loaded in {:.1}s",
                took.elapsed().as_secs_f64()
            );
            let modes: &[&str] = if backend == "file" {
                &["env", "whole"]
            } else {
                &["env"]
            };
            for mode in modes {
                for writers in WRITERS {
                    let commits = match (backend, history) {
                        ("file", 10) => FILE_COMMITS,
                        ("file", _) => FEW_COMMITS,
                        _ => COMMITS,
                    };
                    let path = if *mode == "env" {
                        "scoped"
                    } else {
                        "whole-state"
                    };
                    let measured = run_writers(spec, writers, commits / writers, mode);
                    rows.push(row(
                        &format!("{backend} | {path} | {history}"),
                        writers,
                        measured,
                    ));
                }
            }
        }
    }
    if wanted("postgres") {
        // What this machine's PostgreSQL gives eight writers over one at all: the simplest
        // durable commit, one autocommitted row insert per round trip, through the same client
        // library. The scoped commit's ratio is read against this one.
        let spec = server.create_database("baseline");
        server
            .client("baseline")
            .batch_execute("CREATE TABLE baseline (id bigserial PRIMARY KEY, environment text)")
            .unwrap();
        for writers in WRITERS {
            let measured = run_writers(&spec, writers, COMMITS / writers, "baseline");
            rows.push(row(
                "postgres | one-row insert (baseline) | -",
                writers,
                measured,
            ));
        }
    }
    println!("| backend | transaction | releases in history | writer processes (one environment each) | commits | p50 commit (ms) | p99 commit (ms) | commits/s (all writers) |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for row in rows {
        println!("{row}");
    }

    // A six-phase no-op deploy through the binary on each backend, 10 releases in the history.
    println!();
    println!("| backend | six-phase `deploy` (median of {DEPLOYS}, ms) |");
    println!("| --- | ---: |");
    let project = tempfile::tempdir().unwrap();
    noop_project(project.path());
    let file = project.path().join("deploy-state/releases.json");
    let pg = server.create_database("deploys");
    let mut medians = Vec::new();
    for (backend, flag, spec) in [
        ("file", "--state-file", file.to_str().unwrap().to_string()),
        ("postgres", "--state-url", pg),
    ] {
        preload(&spec, 10);
        if backend == "postgres" {
            settle(&server, "deploys");
        }
        let mut times: Vec<Duration> = (0..DEPLOYS)
            .map(|i| deploy(project.path(), flag, &spec, i))
            .collect();
        let took = ms(median(&mut times));
        println!("| {backend} | {took:.1} |");
        medians.push(took);
    }
    println!(
        "\nPostgreSQL deploy / file deploy: {:.2}x",
        medians[1] / medians[0]
    );
}

/// A table row: `what` (backend, transaction, history), the writers, and what
/// [`run_writers`] measured (wall time, latencies); printed as it is made.
fn row(what: &str, writers: usize, (wall, mut latencies): (f64, Vec<u64>)) -> String {
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    let row = format!(
        "| {what} | {writers} | {} | {:.2} | {:.2} | {:.0} |",
        latencies.len(),
        pct(0.5),
        pct(0.99),
        latencies.len() as f64 / wall,
    );
    eprintln!("{row}");
    row
}

/// Whether `backend` is measured: `BENCH_BACKENDS=postgres` (or `file`) for a look at one.
fn wanted(backend: &str) -> bool {
    std::env::var("BENCH_BACKENDS")
        .map_or(true, |list| list.split(',').any(|b| b.trim() == backend))
}

/// `VACUUM ANALYZE` and `CHECKPOINT` on database `db`.
fn settle(server: &PgServer, db: &str) {
    let mut client = server.client(db);
    client.batch_execute("VACUUM ANALYZE").unwrap();
    client.batch_execute("CHECKPOINT").unwrap();
}

/// One `stagecraft deploy` of the no-op project, timed.
fn deploy(project: &std::path::Path, flag: &str, spec: &str, i: usize) -> Duration {
    let started = Instant::now();
    let out = Command::new(stagecraft_tests::stagecraft_bin())
        .current_dir(project)
        .args([
            flag,
            spec,
            "deploy",
            "--env",
            "prod",
            "--version",
            &format!("v{i}"),
        ])
        .env("STAGECRAFT_CACHE_DIR", stagecraft_tests::shared_cache_dir())
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(out.status.success(), "{out:?}");
    took
}

/// A history of `n` completed releases over ten environments (the eight writers' and two
/// more), one a second up to now (as a
/// real history is spread over time, so its ids do not run ahead of the clock), written in one
/// whole-state commit. Built directly: `push_release` looks at every release, which would make
/// a long preload quadratic.
fn preload(spec: &str, n: usize) {
    let store = StoreTarget::parse(spec, "bench").open().unwrap();
    let now = Timestamp::now().datetime();
    let template = {
        let mut state = State::default();
        append_at(&mut state, "template", now);
        let mut release = (*state.releases[0]).clone();
        for status in release.phases.values_mut() {
            *status = PhaseStatus::Completed;
        }
        release
    };
    store
        .transact(|state| {
            let mut newest: std::collections::HashMap<String, ReleaseId> = Default::default();
            for i in 0..n {
                let at = now - time::Duration::seconds((n - i) as i64);
                // The writers' own environments hold most of it, as a deploy appends to a
                // long history of its environment.
                let env = match i % 10 {
                    k @ 0..8 => format!("w{k}"),
                    k => format!("old{k}"),
                };
                let mut release = template.clone();
                release.id = ReleaseId::at(at);
                release.timestamp = Timestamp::from_datetime(at);
                release.previous_id = newest.insert(env.clone(), release.id.clone());
                release.environment = env;
                state.last_release_id = Some(release.id.clone());
                state.releases.push(Arc::new(release));
            }
            Ok(())
        })
        .unwrap();
}

/// Start `writers` processes (writer `i` on environment `w<i>`), release them together, and
/// collect every commit's latency (µs) and the wall time (s) from release to the last exit.
fn run_writers(spec: &str, writers: usize, each: usize, mode: &str) -> (f64, Vec<u64>) {
    let exe = std::env::current_exe().unwrap();
    let mut children: Vec<_> = (0..writers)
        .map(|i| {
            Command::new(&exe)
                .args(["writer", spec, &each.to_string(), &format!("w{i}"), mode])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Each writer opens its store and says "ready" before anyone starts.
    let mut outs: Vec<_> = children
        .iter_mut()
        .map(|c| std::io::BufReader::new(c.stdout.take().unwrap()))
        .collect();
    for out in &mut outs {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line, "ready\n");
    }
    let start = Instant::now();
    for child in &mut children {
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    }
    let mut latencies = Vec::new();
    for (child, out) in children.iter_mut().zip(outs) {
        for line in out.lines() {
            latencies.push(line.unwrap().parse::<u64>().unwrap());
        }
        assert!(child.wait().unwrap().success());
    }
    (start.elapsed().as_secs_f64(), latencies)
}

/// One writer process: `n` commits to `env` (`mode` `env`: scoped, `whole`: whole-state), each
/// timed, printed in µs after the last.
fn writer(spec: &str, n: usize, env: &str, mode: &str) {
    if mode == "baseline" {
        return baseline_writer(spec, n, env);
    }
    let store = StoreTarget::parse(spec, "bench").open().unwrap();
    // Connect (and migrate) before the clock starts.
    store
        .transact_env_if_changed(env, Window::Recent(&[]), |_| Ok(((), false)))
        .unwrap();
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        if mode == "env" {
            store
                .transact_env(env, Window::Recent(&[]), |state| {
                    append(state, env);
                    Ok(())
                })
                .unwrap();
        } else {
            store
                .transact(|state| {
                    append(state, env);
                    Ok(())
                })
                .unwrap();
        }
        times.push(t.elapsed().as_micros() as u64);
    }
    let mut out = std::io::stdout().lock();
    for t in times {
        writeln!(out, "{t}").unwrap();
    }
}

/// One baseline writer process: `n` autocommitted one-row inserts, each timed, printed in µs
/// after the last.
fn baseline_writer(url: &str, n: usize, env: &str) {
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let insert = client
        .prepare("INSERT INTO baseline (environment) VALUES ($1)")
        .unwrap();
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    let times: Vec<u64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            client.execute(&insert, &[&env]).unwrap();
            t.elapsed().as_micros() as u64
        })
        .collect();
    let mut out = std::io::stdout().lock();
    for t in times {
        writeln!(out, "{t}").unwrap();
    }
}

/// A writer's commit: a new release, written as deployed (what a deploy's first commit
/// writes, with its phases already completed), so that the environment's window stays what a
/// deploy sees, its newest release, instead of gaining an unfinished release per commit.
fn append(state: &mut State, env: &str) {
    append_at(state, env, Timestamp::now().datetime());
    let release = state.releases.last_mut().expect("just appended");
    for status in Arc::make_mut(release).phases.values_mut() {
        *status = PhaseStatus::Completed;
    }
}

fn append_at(state: &mut State, env: &str, at: time::OffsetDateTime) {
    let phases: Vec<String> = CANONICAL_PHASES.iter().map(|p| p.to_string()).collect();
    state
        .push_release(
            env,
            "v1.2.3",
            "3f2c1a9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a",
            &phases,
            at,
        )
        .expect("a release id is left");
}
