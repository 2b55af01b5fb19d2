//! Benchmark: commit latency and throughput of the file and PostgreSQL state backends, with 1
//! and with 8 concurrent writer processes, on a small and on a long history, in one run. Each
//! commit is what a deploy's first commit does: allocate an id and append a release. PostgreSQL
//! runs with its default durability (fsync, synchronous commit) on a Unix socket, beside the
//! file backend's fsync'd rename. Prints a Markdown table for docs/performance.md.
//!
//! Run: `cargo run -p stagecraft-tests --bin bench-backends`

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use stagecraft::state::{
    PhaseStatus, State, StateStoreExt, StoreTarget, Timestamp, CANONICAL_PHASES,
};
use stagecraft_tests::pg::PgServer;

/// Commits per configuration, split between the writer processes.
const COMMITS: usize = 400;
const HISTORIES: [usize; 2] = [10, 1000];
const WRITERS: [usize; 2] = [1, 8];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("writer") {
        writer(&args[2], args[3].parse().unwrap());
        return;
    }
    let server = PgServer::start_durable();
    let files = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    let mut db = 0;
    for history in HISTORIES {
        for writers in WRITERS {
            for backend in ["file", "postgres"] {
                db += 1;
                let spec = match backend {
                    "file" => files
                        .path()
                        .join(format!("run{db}/releases.json"))
                        .to_str()
                        .unwrap()
                        .to_string(),
                    _ => server.create_database(&format!("bench{db}")),
                };
                preload(&spec, history);
                let (wall, mut latencies) = run_writers(&spec, writers, COMMITS / writers);
                latencies.sort_unstable();
                let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
                rows.push(format!(
                    "| {backend} | {history} | {writers} | {:.2} | {:.2} | {:.2} | {:.0} |",
                    pct(0.5) as f64 / 1000.0,
                    pct(0.99) as f64 / 1000.0,
                    latencies.iter().sum::<u64>() as f64 / latencies.len() as f64 / 1000.0,
                    latencies.len() as f64 / wall,
                ));
                eprintln!("{}", rows.last().unwrap());
            }
        }
    }
    println!("| backend | releases in history | writer processes | p50 commit (ms) | p99 commit (ms) | mean commit (ms) | commits/s (all writers) |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for row in rows {
        println!("{row}");
    }
}

/// A history of `n` completed releases, written in one commit.
fn preload(spec: &str, n: usize) {
    let store = StoreTarget::parse(spec, "bench").open().unwrap();
    store
        .transact(|state| {
            for i in 0..n {
                append(state, if i % 2 == 0 { "prod" } else { "staging" });
                let last = Arc::make_mut(state.releases.last_mut().unwrap());
                for status in last.phases.values_mut() {
                    *status = PhaseStatus::Completed;
                }
            }
            Ok(())
        })
        .unwrap();
}

/// Start `writers` processes, release them together, and collect every commit's latency (µs)
/// and the wall time (s) from release to the last exit.
fn run_writers(spec: &str, writers: usize, each: usize) -> (f64, Vec<u64>) {
    let exe = std::env::current_exe().unwrap();
    let mut children: Vec<_> = (0..writers)
        .map(|_| {
            Command::new(&exe)
                .args(["writer", spec, &each.to_string()])
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

/// One writer process: `n` commits, each timed, printed in µs after the last.
fn writer(spec: &str, n: usize) {
    let store = StoreTarget::parse(spec, "bench").open().unwrap();
    // Connect (and migrate) before the clock starts.
    store.read().unwrap();
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        store
            .transact(|state| {
                append(state, "prod");
                Ok(())
            })
            .unwrap();
        times.push(t.elapsed().as_micros() as u64);
    }
    let mut out = std::io::stdout().lock();
    for t in times {
        writeln!(out, "{t}").unwrap();
    }
}

fn append(state: &mut State, env: &str) {
    let phases: Vec<String> = CANONICAL_PHASES.iter().map(|p| p.to_string()).collect();
    state
        .push_release(
            env,
            "v1.2.3",
            "3f2c1a9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a",
            &phases,
            Timestamp::now().datetime(),
        )
        .expect("a release id is left");
}
