//! Benchmark: what recording a plan in every release, and keeping the components releases ran,
//! cost. Prints Markdown tables for docs/performance.md ("Plans").
//!
//! 1. State size: ten deploys of a six-phase manifest (an exec build with config and grants, a
//!    rollout with a net grant, noop elsewhere); the state file as written, against the same
//!    releases with their plans removed (serialized as the file backend writes them).
//! 2. Components: what the component store holds after those deploys.
//! 3. Deploy time at 10 releases, when `STAGECRAFT_BASELINE_BIN` names a stagecraft built before
//!    plans were recorded (commit 0134191): the same deploy, over a history held at 10 releases
//!    (`history_max = 10`), by that binary and by this one, interleaved (which goes first
//!    alternates), 30 times each after 10
//!    deploys of warm-up; the medians and their ratio.
//!
//! Run: `cargo build -p stagecraft && cargo run -p stagecraft-tests --bin bench-plans`, with
//! `STAGECRAFT_BASELINE_BIN=<path>` for the deploy time (docs/performance.md says how to build
//! it).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use stagecraft_tests::stagecraft_bin;

const RELEASES: usize = 10;
const TIMED: usize = 30;

const MANIFEST: &str = r#"[environments.prod]

[phases.build]
plugin = "builtin:exec"
config = { command = "true {{version}}" }
timeout = "5m"
[phases.build.grants]
exec = ["true"]
read = ["src"]
write = ["dist"]
env = ["HOME"]

[phases.push]
plugin = "builtin:noop"

[phases.migrate_pre]
plugin = "builtin:noop"

[phases.rollout]
plugin = "builtin:noop"
[phases.rollout.grants]
net = ["https://registry.example.com", "https://*.api.example.com"]

[phases.migrate_post]
plugin = "builtin:noop"

[phases.finalize]
plugin = "builtin:noop"

[state]
history_max = 10
"#;

/// A project with the manifest, and a compiled-component cache of its own.
struct Project {
    dir: tempfile::TempDir,
    cache: tempfile::TempDir,
    binary: PathBuf,
    deploys: usize,
}

impl Project {
    fn new(binary: PathBuf) -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::create_dir_all(dir.path().join("dist")).unwrap();
        std::fs::write(dir.path().join("stagecraft.toml"), MANIFEST).unwrap();
        Project {
            dir,
            cache: tempfile::tempdir().unwrap(),
            binary,
            deploys: 0,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// One deploy of the next version; how long it took.
    fn deploy(&mut self) -> Duration {
        self.deploys += 1;
        let started = Instant::now();
        let status = Command::new(&self.binary)
            .args(["deploy", "--env", "prod", "--version"])
            .arg(format!("v{}", self.deploys))
            .current_dir(self.path())
            .env("STAGECRAFT_CACHE_DIR", self.cache.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        let took = started.elapsed();
        assert!(
            status.success(),
            "deploy v{} by {}",
            self.deploys,
            self.binary.display()
        );
        took
    }
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let mut current = Project::new(stagecraft_bin());
    for _ in 0..RELEASES {
        current.deploy();
    }
    state_size(&current);
    components(&current);
    match std::env::var_os("STAGECRAFT_BASELINE_BIN") {
        Some(baseline) => deploy_time(current, Project::new(PathBuf::from(baseline))),
        None => println!(
            "\n(Deploy time not measured: set STAGECRAFT_BASELINE_BIN to a stagecraft built before \
             plans, see docs/performance.md.)"
        ),
    }
}

fn state_size(project: &Project) {
    let path = project.path().join(".stagecraft/releases.json");
    let written = std::fs::read(&path).unwrap().len();
    let mut state: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let releases = state["releases"].as_array_mut().unwrap();
    assert_eq!(releases.len(), RELEASES);
    let one_plan = serde_json::to_vec(&releases[0]["plan"]).unwrap().len();
    for release in releases.iter_mut() {
        assert!(release.as_object_mut().unwrap().remove("plan").is_some());
    }
    // The file backend writes serde_json's pretty text, plans on one line each: without plans,
    // that is exactly this.
    let without = serde_json::to_vec_pretty(&state).unwrap().len() + 1;
    let per_release = (written - without) as f64 / RELEASES as f64;

    println!("| state after {RELEASES} six-phase deploys | bytes | per release |");
    println!("| --- | --- | --- |");
    println!(
        "| with plans, as written | {written} | {:.0} |",
        written as f64 / RELEASES as f64
    );
    println!(
        "| the same releases without plans | {without} | {:.0} |",
        without as f64 / RELEASES as f64
    );
    println!(
        "| plans | {} | {per_release:.0} ({:.2} KiB) |",
        written - without,
        per_release / 1024.0
    );
    println!("| one plan, compact JSON | {one_plan} | |");
}

fn components(project: &Project) {
    let dir = project.path().join(".stagecraft/releases.components");
    let files: Vec<u64> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .collect();
    println!(
        "\nComponents kept after {RELEASES} deploys running 2 distinct components in 6 phases: \
         {} files, {} bytes in all.",
        files.len(),
        files.iter().sum::<u64>()
    );
}

fn deploy_time(mut current: Project, mut baseline: Project) {
    for _ in 0..RELEASES {
        baseline.deploy();
    }
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    // Which goes first alternates, so neither always runs on a CPU the other just warmed.
    for round in 0..TIMED {
        if round % 2 == 0 {
            theirs.push(baseline.deploy());
            ours.push(current.deploy());
        } else {
            ours.push(current.deploy());
            theirs.push(baseline.deploy());
        }
    }
    let (ours, theirs) = (median(ours), median(theirs));
    println!("\n| deploy at {RELEASES} releases (median of {TIMED}) | ms | ratio |");
    println!("| --- | --- | --- |");
    println!(
        "| before plans (baseline binary) | {:.1} | 1.00 |",
        theirs.as_secs_f64() * 1e3
    );
    println!(
        "| with plans and kept components | {:.1} | {:.2} |",
        ours.as_secs_f64() * 1e3,
        ours.as_secs_f64() / theirs.as_secs_f64()
    );
}
