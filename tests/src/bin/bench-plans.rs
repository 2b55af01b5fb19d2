//! Benchmark: what recording a plan in every release costs the state. Ten deploys of a
//! six-phase manifest (an exec build with config and grants, a rollout with a net grant, noop
//! elsewhere); then the state file as written, against the same releases with their plans
//! removed (both re-serialized the same way, as the file backend writes: pretty JSON).
//! Prints a Markdown table for docs/performance.md ("Plans").
//!
//! Run: `cargo build -p stagecraft && cargo run -p stagecraft-tests --bin bench-plans`

use std::process::{Command, Stdio};

use serde_json::Value;
use stagecraft_tests::stagecraft_bin;

const RELEASES: usize = 10;

const MANIFEST: &str = r#"[environments.prod]

[phases.build]
plugin = "builtin:exec"
config = { command = "make dist VERSION={{version}}" }
timeout = "5m"
[phases.build.grants]
exec = ["make"]
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
"#;

fn main() {
    let project = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(project.path().join("src")).unwrap();
    std::fs::write(project.path().join("stagecraft.toml"), MANIFEST).unwrap();
    // `make` would need a Makefile; the build runs `true` under the same grants instead.
    let manifest = MANIFEST.replace("make dist VERSION={{version}}", "true {{version}}");
    let manifest = manifest.replace("exec = [\"make\"]", "exec = [\"true\"]");
    std::fs::write(project.path().join("stagecraft.toml"), manifest).unwrap();
    for n in 1..=RELEASES {
        let status = Command::new(stagecraft_bin())
            .args(["deploy", "--env", "prod", "--version", &format!("v{n}")])
            .current_dir(project.path())
            .env("STAGECRAFT_CACHE_DIR", cache.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "deploy v{n}");
    }
    let path = project.path().join(".stagecraft/releases.json");
    let written = std::fs::read(&path).unwrap();
    let mut state: Value = serde_json::from_slice(&written).unwrap();
    let with = serde_json::to_vec_pretty(&state).unwrap().len();
    let releases = state["releases"].as_array_mut().unwrap();
    assert_eq!(releases.len(), RELEASES);
    let one_plan = serde_json::to_vec(&releases[0]["plan"]).unwrap().len();
    for release in releases.iter_mut() {
        assert!(release.as_object_mut().unwrap().remove("plan").is_some());
    }
    let without = serde_json::to_vec_pretty(&state).unwrap().len();
    let per_release = (with - without) as f64 / RELEASES as f64;

    println!("| state after {RELEASES} six-phase deploys | bytes | per release |");
    println!("| --- | --- | --- |");
    println!(
        "| with plans (as written) | {with} | {:.0} |",
        with as f64 / RELEASES as f64
    );
    println!(
        "| the same releases without plans | {without} | {:.0} |",
        without as f64 / RELEASES as f64
    );
    println!(
        "| plan, pretty as in the file | {} | {per_release:.0} ({:.2} KiB) |",
        with - without,
        per_release / 1024.0
    );
    println!("| one plan, compact JSON (as PostgreSQL's jsonb keeps it, before its own encoding) | {one_plan} | |");
    println!(
        "\nThe file as stagecraft wrote it is {} bytes (re-serialized: {with}).",
        written.len()
    );
}
