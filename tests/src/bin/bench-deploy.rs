//! Benchmark: a six-phase `builtin:noop` deploy end to end (warm compiled-component cache),
//! beside the state commits it needs alone (the fsync floor) and beside the same six phases run
//! as six `/bin/true` processes. Prints a Markdown table for docs/performance.md.
//!
//! Run: `cargo run -p stagecraft-tests --bin bench-deploy` (after `cargo build -p stagecraft`).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use stagecraft::state::CANONICAL_PHASES as PHASES;
use stagecraft_tests::bench::{fsync_floor, median, ms, noop_project, time};
use stagecraft_tests::stagecraft_bin;

const ROUNDS: usize = 40;

fn main() {
    let bin = stagecraft_bin();
    let project = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    noop_project(project.path());

    let deploy = |version: &str| {
        let status = Command::new(&bin)
            .args(["deploy", "--env", "prod", "--version", version])
            .current_dir(project.path())
            .env("STAGECRAFT_CACHE_DIR", cache.path())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "deploy failed");
    };
    // Cold: compiles the six components (one per builtin:noop use, the same component).
    let cold = time(|| deploy("v0"));
    let mut deploys = Vec::new();
    for i in 1..=ROUNDS {
        deploys.push(time(|| deploy(&format!("v{i}"))));
    }

    // The commits one deploy makes: create + (running, finished) per phase.
    let commits = 1 + 2 * PHASES.len();
    let size = std::fs::metadata(project.path().join(".stagecraft/releases.json"))
        .unwrap()
        .len();
    let floor_dir = tempfile::tempdir().unwrap();
    let payload = vec![b'x'; size as usize];
    let mut floors = Vec::new();
    for _ in 0..ROUNDS {
        floors.push(time(|| {
            for _ in 0..commits {
                fsync_floor(floor_dir.path(), &payload);
            }
        }));
    }

    let mut spawns = Vec::new();
    for _ in 0..ROUNDS {
        spawns.push(time(|| {
            for _ in PHASES {
                let s = Command::new("/bin/true").status().unwrap();
                assert!(s.success());
            }
        }));
    }

    let deploy_ms = ms(median(&mut deploys));
    let floor_ms = ms(median(&mut floors));
    let spawn_ms = ms(median(&mut spawns));
    let process_ms = process_start(&bin);
    println!("Six-phase builtin:noop deploy, median of {ROUNDS} runs (state file {size} bytes at the end)\n");
    println!("| what | median | ratio to the deploy |");
    println!("| --- | --- | --- |");
    println!("| `stagecraft deploy` end to end, warm cache | {deploy_ms:.2} ms | 1.00 |");
    println!(
        "| first deploy, cold cache (one run) | {:.2} ms | {:.2} |",
        ms(cold),
        ms(cold) / deploy_ms
    );
    println!("| its {commits} state commits alone (write + fsync + rename + dir fsync, {size} B) | {floor_ms:.2} ms | {:.2} |", floor_ms / deploy_ms);
    println!(
        "| six `/bin/true` processes | {spawn_ms:.2} ms | {:.2} |",
        spawn_ms / deploy_ms
    );
    println!(
        "| `stagecraft --version` (process start alone) | {process_ms:.2} ms | {:.2} |",
        process_ms / deploy_ms
    );
    let _ = std::io::stdout().flush();
}

fn process_start(bin: &Path) -> f64 {
    let mut v: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            time(|| {
                assert!(Command::new(bin)
                    .arg("--version")
                    .stdout(Stdio::null())
                    .status()
                    .unwrap()
                    .success())
            })
        })
        .collect();
    ms(median(&mut v))
}
