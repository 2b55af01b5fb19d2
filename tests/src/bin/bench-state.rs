//! Benchmark: the file backend's commit latency and `stagecraft releases list --json` at 10,
//! 1,000 and 10,000 releases, each commit beside its floor: writing, fsyncing and renaming a file
//! of the same size and fsyncing the directory, which any durable whole-file commit must pay.
//! Then `stagecraft deploy` and `rollback` through the binary on the same histories, beside the
//! floor of a deploy's commits. Prints two Markdown tables for docs/performance.md ("Release
//! state (file backend)").
//!
//! Run: `cargo build -p stagecraft && cargo run -p stagecraft-tests --bin bench-state`

use std::io::Write;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use stagecraft::state::{
    FileStore, PhaseDetail, PhaseStatus, Release, State, StateStore, StateStoreExt,
    CANONICAL_PHASES,
};
use stagecraft_tests::bench::{fsync_floor, median, ms, noop_project, time, timed};
use stagecraft_tests::{stagecraft, stagecraft_bin};

/// (releases in the file, commits measured, `releases list --json` runs measured, deploys and
/// rollbacks measured)
const SIZES: [(usize, usize, usize, usize); 3] =
    [(10, 200, 40, 20), (1_000, 100, 20, 10), (10_000, 30, 10, 5)];

/// The commits one deploy of six phases makes: create, then running and finished per phase.
const DEPLOY_COMMITS: usize = 13;

fn main() {
    // Fail now, not after seeding, if the binary has not been built.
    stagecraft_bin();
    let mut state_rows = Vec::new();
    let mut release_rows = Vec::new();
    for (count, commits, lists, releases) in SIZES {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("releases.json");
        let store = FileStore::open(path.clone()).unwrap();
        store
            .transact(|state| {
                seed(state, count);
                Ok(())
            })
            .unwrap();

        // A typical commit of a deploy: one phase of the newest release changes status. Each
        // commit is followed by one floor measurement, so both see the same disk conditions.
        let newest = store.read().unwrap().list_all()[0].id.clone();
        let size = std::fs::metadata(&path).unwrap().len();
        let floor_dir = tempfile::tempdir_in(dir.path()).unwrap();
        let payload = vec![b'x'; size as usize];
        let mut commit_times = Vec::new();
        let mut floor_times = Vec::new();
        for i in 0..commits {
            let status = if i % 2 == 0 {
                PhaseStatus::Running
            } else {
                PhaseStatus::Completed
            };
            commit_times.push(time(|| {
                store
                    .transact(|state| {
                        let release = state.get_mut(newest.as_str()).expect("seeded release");
                        release.phases.insert("finalize".into(), status);
                        Ok(())
                    })
                    .unwrap()
            }));
            floor_times.push(time(|| fsync_floor(floor_dir.path(), &payload)));
        }
        assert_eq!(
            store.read().unwrap().serial,
            1 + commits as u64,
            "every commit landed"
        );

        let mut list_times: Vec<Duration> = (0..lists).map(|_| list_json(&path, count)).collect();

        let commit_ms = ms(median(&mut commit_times));
        let floor_ms = ms(median(&mut floor_times));
        state_rows.push(format!(
            "| {count} | {} | {commit_ms:.2} ms | {floor_ms:.2} ms | {:.2}x | {:.2} ms |",
            human_size(size),
            commit_ms / floor_ms,
            ms(median(&mut list_times))
        ));
        release_rows.push(releases_on(&path, floor_dir.path(), count, releases));
        eprintln!("bench-state: {count} releases measured");
    }
    println!(
        "| releases | file size | commit (median) | floor: write + fsync + rename + dir fsync | \
         commit / floor | `releases list --json` (median) |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    println!("{}", state_rows.join("\n"));
    println!(
        "\nMedians of 200/100/30 commits and 40/20/10 `releases list --json` runs; each commit \
         is one `StateStore::transact` on the seeded file.\n"
    );
    println!(
        "| releases | `stagecraft deploy` (median) | `stagecraft rollback` (median) | \
         floor of its {DEPLOY_COMMITS} commits | deploy / floor |"
    );
    println!("| --- | --- | --- | --- | --- |");
    println!("{}", release_rows.join("\n"));
    println!(
        "\nMedians of 20/10/5 deploys and as many `rollback --to-previous` runs of six \
         builtin:noop phases through the binary on the same files, warm compiled-component cache."
    );
    let _ = std::io::stdout().flush();
}

/// `stagecraft deploy` and `stagecraft rollback --to-previous` of six `builtin:noop` phases on
/// the seeded history at `state_file`, `runs` of each, beside the floor of the commits a deploy
/// makes: one table row.
fn releases_on(state_file: &Path, floor_dir: &Path, count: usize, runs: usize) -> String {
    let project = tempfile::tempdir().unwrap();
    noop_project(project.path());
    let run = |args: &[&str]| run_timed(project.path(), state_file, args).0;
    // Fills the compiled-component cache.
    run(&["deploy", "--env", "prod", "--version", "warm-up"]);
    let mut deploys: Vec<Duration> = (0..runs)
        .map(|i| {
            run(&[
                "deploy",
                "--env",
                "prod",
                "--version",
                &format!("bench-{i}"),
            ])
        })
        .collect();
    let mut rollbacks: Vec<Duration> = (0..runs)
        .map(|_| run(&["rollback", "--env", "prod", "--to-previous"]))
        .collect();
    let payload = vec![b'x'; std::fs::metadata(state_file).unwrap().len() as usize];
    let mut floors: Vec<Duration> = (0..runs)
        .map(|_| {
            time(|| {
                for _ in 0..DEPLOY_COMMITS {
                    fsync_floor(floor_dir, &payload);
                }
            })
        })
        .collect();
    let deploy_ms = ms(median(&mut deploys));
    let floor_ms = ms(median(&mut floors));
    format!(
        "| {count} | {deploy_ms:.1} ms | {:.1} ms | {floor_ms:.1} ms | {:.2}x |",
        ms(median(&mut rollbacks)),
        deploy_ms / floor_ms
    )
}

/// `count` finished releases spread over three environments, shaped like real deploys: six
/// phases, each with plugin, digest, times, summary and an output.
fn seed(state: &mut State, count: usize) {
    let envs = ["prod", "staging", "dev"];
    let mut latest = std::collections::HashMap::new();
    for i in 0..count {
        // One release a minute from 2025-01-01T00:00Z (10,000 minutes is under a week).
        let (day, hour, minute) = (1 + i / 1440, (i / 60) % 24, i % 60);
        let id = format!("rel-202501{day:02}-{hour:02}{minute:02}00000");
        let stamp = format!("2025-01-{day:02}T{hour:02}:{minute:02}:00.000Z");
        let environment = envs[i % envs.len()].to_string();
        let previous_id = latest.insert(environment.clone(), id.clone());
        let mut release: Release = serde_json::from_value(serde_json::json!({
            "id": id,
            "environment": environment,
            "version": format!("v1.{i}.0"),
            "commit_sha": format!("{:040x}", i as u128 * 0x9e37_79b9_7f4a_7c15),
            "timestamp": stamp,
        }))
        .unwrap();
        release.previous_id = previous_id.map(|id: String| id.parse().unwrap());
        for phase in CANONICAL_PHASES {
            release
                .phases
                .insert(phase.to_string(), PhaseStatus::Completed);
            release.phase_details.insert(
                phase.to_string(),
                PhaseDetail {
                    plugin: Some("builtin:noop".into()),
                    plugin_digest: Some(format!("{:064x}", i)),
                    started_at: Some(stamp.clone()),
                    finished_at: Some(stamp.clone()),
                    duration_ms: Some(3),
                    summary: Some(format!("{phase} of v1.{i}.0: nothing to do")),
                    outputs: [("artifact".to_string(), format!("dist/v1.{i}.0.tar.gz"))]
                        .into_iter()
                        .collect(),
                    ..Default::default()
                },
            );
        }
        state.releases.push(release.into());
    }
}

/// How long `stagecraft releases list --json` takes, from spawning it to having all of its
/// output. Checking the output (parsing 30 MiB in this unoptimized crate) happens after, untimed.
fn list_json(state_file: &Path, expected: usize) -> Duration {
    let cwd = state_file.parent().expect("the state file's directory");
    let (took, out) = run_timed(cwd, state_file, &["releases", "list", "--json"]);
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.len(), expected);
    took
}

/// `stagecraft <args> --state-file <state_file>` in `cwd`, with the test harness's clean
/// environment: how long it took, from spawning it to having all of its output, and the output.
/// A failure stops the benchmark with the command's stderr.
fn run_timed(cwd: &Path, state_file: &Path, args: &[&str]) -> (Duration, Output) {
    let (took, out) = timed(|| {
        stagecraft(cwd)
            .args(args)
            .arg("--state-file")
            .arg(state_file)
            .output()
            .unwrap()
    });
    assert!(
        out.status.success(),
        "stagecraft {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (took, out)
}

fn human_size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
    } else {
        format!("{:.0} KiB", (bytes as f64 / 1024.0).max(1.0))
    }
}
