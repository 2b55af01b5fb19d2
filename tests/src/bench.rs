//! What the benchmark binaries (`tests/src/bin/bench-*.rs`) share: timing, medians, and the
//! fsync floor that state commits are compared with. One copy, so every table in
//! docs/performance.md is measured the same way.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long `f` takes.
pub fn time(f: impl FnOnce()) -> Duration {
    timed(f).0
}

/// How long `f` takes, and what it returned.
pub fn timed<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let started = Instant::now();
    let out = f();
    (started.elapsed(), out)
}

/// The median of `samples` (the upper one of an even count). Sorts them.
pub fn median(samples: &mut [Duration]) -> Duration {
    assert!(!samples.is_empty(), "a median of no samples");
    samples.sort();
    samples[samples.len() / 2]
}

/// `d` in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A project in `dir` whose `prod` environment runs `builtin:noop` in each of the canonical
/// phases: a deploy with the least plugin work, so what is measured is the host.
pub fn noop_project(dir: &Path) {
    let mut manifest = String::from("[environments.prod]\n");
    for phase in stagecraft::state::CANONICAL_PHASES {
        manifest.push_str(&format!("[phases.{phase}]\nplugin = \"builtin:noop\"\n"));
    }
    std::fs::write(dir.join("stagecraft.toml"), manifest).unwrap();
}

/// The least one durable whole-file commit of `payload` can cost on this disk: write a temp
/// file in `dir`, fsync it, rename it over the previous one, fsync the directory.
pub fn fsync_floor(dir: &Path, payload: &[u8]) {
    let tmp = dir.join("floor.tmp");
    let mut f = std::fs::File::create(&tmp).unwrap();
    f.write_all(payload).unwrap();
    f.sync_all().unwrap();
    std::fs::rename(&tmp, dir.join("floor.json")).unwrap();
    std::fs::File::open(dir).unwrap().sync_all().unwrap();
}

/// A deploy's context for benchmarks that run a plugin directly: release
/// `rel-20260101-120000000` of `v1` to `bench`, no vars or earlier outputs.
pub fn deploy_context(
    phase: &str,
    config: std::collections::BTreeMap<String, String>,
) -> stagecraft::plugin::PhaseContext {
    use stagecraft::plugin::{Operation, PhaseContext, ReleaseInfo};
    PhaseContext {
        phase: phase.into(),
        operation: Operation::Deploy,
        release: ReleaseInfo {
            id: "rel-20260101-120000000".into(),
            environment: "bench".into(),
            version: "v1".into(),
            commit: String::new(),
            previous_id: None,
        },
        rollback_target: None,
        config,
        vars: std::collections::BTreeMap::new(),
        earlier_outputs: Vec::new(),
    }
}
