//! A child process for the state tests: commits, hammers, holds leases and gets killed, through
//! the same `stagecraft` library the CLI uses. Progress goes to stdout, one line per event, so
//! the parent synchronizes on lines instead of sleeping.
//!
//! `<store>` is a state file path or a postgres:// URL: the same modes run against either backend.
//!
//! Usage:
//!   state-worker add <store> <env> <version>        one release, prints its id
//!   state-worker hammer <store> <threads> <txns> <tag>
//!       waits for a line on stdin, then each thread (own store instance) increments its own
//!       counter `counters.<tag>-<thread>` <txns> times, one transaction each
//!   state-worker commit-loop <store>
//!       forever: append the next number to `sequence` and add a release; prints `committed N`
//!   state-worker lease <store> <env> [wait-ms]
//!       takes the lease, prints `leased <env>`, holds it until stdin closes
//!   state-worker deploy-hang <store> <env>
//!       takes the lease, adds a release whose `build` is running, prints `running <id>`, and
//!       waits on stdin: a deploy caught mid-phase, for the parent to kill
//!   state-worker commit-hang <store>
//!       inside a transaction (holding the commit lock), prints `in commit` and waits on stdin;
//!       then commits the state as it was

use std::io::{BufRead, Write};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use anyhow::{anyhow, bail};
use serde_json::Value;
use stagecraft::state::{
    PhaseStatus, State, StateStoreExt, StoreTarget, Timestamp, CANONICAL_PHASES,
};

fn main() {
    if let Err(e) = run() {
        eprintln!("state-worker: {e:#}");
        std::process::exit(match stagecraft::error::exit_code_for(&e) {
            stagecraft::error::ExitCode::Ok => 0,
            code => code as i32,
        });
    }
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> anyhow::Result<&str> {
        args.get(i)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("missing argument {i}"))
    };
    let store = || StoreTarget::parse(&args[1], "the state-worker's store argument").open();
    match arg(0)? {
        "add" => {
            let (env, version) = (arg(2)?.to_string(), arg(3)?.to_string());
            let id = store()?.transact(|state| Ok(add_release(state, &env, &version)))?;
            println!("{id}");
        }
        "hammer" => {
            let threads: usize = arg(2)?.parse()?;
            let txns: usize = arg(3)?.parse()?;
            let tag = arg(4)?.to_string();
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            let barrier = Arc::new(Barrier::new(threads));
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (barrier, key) = (barrier.clone(), format!("{tag}-{t}"));
                    let store = store();
                    std::thread::spawn(move || -> anyhow::Result<()> {
                        let store = store?;
                        barrier.wait();
                        for _ in 0..txns {
                            store.transact(|state| increment(state, &key))?;
                        }
                        Ok(())
                    })
                })
                .collect();
            for h in handles {
                h.join()
                    .map_err(|_| anyhow!("a hammer thread panicked"))??;
            }
            println!("done");
        }
        "commit-loop" => {
            let store = store()?;
            let mut out = std::io::stdout().lock();
            loop {
                let n = store.transact(|state| {
                    let seq = state
                        .extra
                        .entry("sequence")
                        .or_insert_with(|| Value::Array(Vec::new()));
                    let Value::Array(items) = seq else {
                        bail!("`sequence` is not an array");
                    };
                    let n = items.len() as u64 + 1;
                    items.push(Value::from(n));
                    add_release(state, "prod", &format!("v{n}"));
                    Ok(n)
                })?;
                writeln!(out, "committed {n}")?;
                out.flush()?;
            }
        }
        "lease" => {
            let wait = Duration::from_millis(args.get(3).map_or(Ok(0), |s| s.parse())?);
            let lease = store()?.lease(arg(2)?, wait)?;
            println!("leased {}", lease.environment());
            std::io::stdout().flush()?;
            // Hold the lease until the parent closes our stdin (or kills us).
            let mut sink = String::new();
            while std::io::stdin().lock().read_line(&mut sink)? > 0 {}
            drop(lease);
        }
        "deploy-hang" => {
            let env = arg(2)?.to_string();
            let store = store()?;
            let lease = store.lease(&env, Duration::ZERO)?;
            let id = store.transact(|state| {
                let id = add_release(state, &env, "v-hang");
                let release = state.get_mut(&id).expect("just added");
                release.phases.insert("build".into(), PhaseStatus::Running);
                Ok(id)
            })?;
            println!("running {id}");
            std::io::stdout().flush()?;
            let mut sink = String::new();
            while std::io::stdin().lock().read_line(&mut sink)? > 0 {}
            drop(lease);
        }
        "commit-hang" => {
            store()?.transact(|_| {
                println!("in commit");
                std::io::stdout().flush()?;
                let mut sink = String::new();
                while std::io::stdin().lock().read_line(&mut sink)? > 0 {}
                Ok(())
            })?;
        }
        other => bail!("unknown mode {other:?}"),
    }
    Ok(())
}

fn add_release(state: &mut State, env: &str, version: &str) -> String {
    let phases: Vec<String> = CANONICAL_PHASES.iter().map(|p| p.to_string()).collect();
    let now = Timestamp::now().datetime();
    state
        .push_release(env, version, "", &phases, now)
        .expect("a release id is left")
        .id
        .to_string()
}

fn increment(state: &mut State, key: &str) -> anyhow::Result<()> {
    let counters = state
        .extra
        .entry("counters")
        .or_insert_with(|| Value::Object(Default::default()));
    let Value::Object(map) = counters else {
        bail!("`counters` is not an object");
    };
    let next = map.get(key).and_then(Value::as_u64).unwrap_or(0) + 1;
    map.insert(key.to_string(), Value::from(next));
    Ok(())
}
