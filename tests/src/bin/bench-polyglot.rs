//! Benchmark: the cost of a Rust, a Python and a JavaScript phase plugin, measured in one run.
//!
//! Per language: the cold compile of the component, a warm load from the on-disk
//! compiled-component cache (a fresh host, as in a new `stagecraft` process), instantiate +
//! `describe()` (the host's fixed cost of one phase run), instantiate + `run()` of the example
//! (with its real work), and a six-phase deploy through the binary whose phases all use that
//! language's plugin: the plugin loading time `--verbose` reports on the first deploy (empty
//! cache) and on the second. Prints a Markdown table for docs/performance.md.
//!
//! Run (after `cargo build -p stagecraft` and `scripts/build-polyglot-plugins`):
//!
//!     cargo run -p stagecraft-tests --bin bench-polyglot

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use stagecraft::plugin::*;
use stagecraft_tests::bench::{deploy_context, median};
use stagecraft_tests::{polyglot_plugin, wasm_plugins_dir};

const WARM_LOADS: usize = 20;
const DESCRIBES: usize = 200;
const RUNS: usize = 50;
const PHASES: [&str; 6] = [
    "build",
    "push",
    "migrate_pre",
    "rollout",
    "migrate_post",
    "finalize",
];

/// One language's plugin: the component and how to run it in a project.
struct Subject {
    language: &'static str,
    plugin: &'static str,
    wasm: PathBuf,
    /// The phase config for a phase writing/reading `<dir>`.
    config: fn(&str) -> BTreeMap<String, String>,
    /// Prepare `<project>/<dir>` and return the phase's grants.
    grants: fn(&Path, &str) -> Grants,
}

fn subjects() -> Vec<Subject> {
    vec![
        Subject {
            language: "Rust",
            plugin: "builtin noop",
            wasm: wasm_plugins_dir().join("builtin/noop.wasm"),
            config: |_| BTreeMap::new(),
            grants: |_, _| Grants::default(),
        },
        Subject {
            language: "Python",
            plugin: "examples/changelog-py",
            wasm: polyglot_plugin("examples", "changelog-py"),
            config: |dir| BTreeMap::from([("dir".to_string(), dir.to_string())]),
            grants: |_, dir| Grants {
                write: vec![PathBuf::from(dir)],
                ..Grants::default()
            },
        },
        Subject {
            language: "JavaScript",
            plugin: "examples/verify-site-js",
            wasm: polyglot_plugin("examples", "verify-site-js"),
            config: |dir| BTreeMap::from([("site".to_string(), dir.to_string())]),
            grants: |project, dir| {
                let site = project.join(dir);
                std::fs::create_dir_all(&site).unwrap();
                std::fs::write(site.join("index.html"), "<p>version v1</p>").unwrap();
                Grants {
                    read: vec![PathBuf::from(dir)],
                    ..Grants::default()
                }
            },
        },
    ]
}

struct Row {
    language: &'static str,
    plugin: &'static str,
    size: u64,
    cold: Duration,
    warm: Duration,
    describe: Duration,
    run: Duration,
    first_deploy_load: Duration,
    second_deploy_load: Duration,
}

fn main() {
    let mut rows = Vec::new();
    for subject in subjects() {
        eprintln!(
            "bench-polyglot: {} ({})",
            subject.language,
            subject.wasm.display()
        );
        rows.push(measure(&subject));
    }

    println!("| language (plugin) | component | cold compile | warm load | instantiate + describe() | instantiate + run() | six-phase deploy: plugin loading, 1st run | 2nd run | 1st / 2nd |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in &rows {
        println!(
            "| {} ({}) | {:.1} MB | {} | {} | {} | {} | {} | {} | {:.0}x |",
            r.language,
            r.plugin,
            r.size as f64 / 1e6,
            ms(r.cold),
            ms(r.warm),
            ms(r.describe),
            ms(r.run),
            ms(r.first_deploy_load),
            ms(r.second_deploy_load),
            r.first_deploy_load.as_secs_f64() / r.second_deploy_load.as_secs_f64().max(1e-6),
        );
    }
}

fn measure(s: &Subject) -> Row {
    let source = PluginSource::File(s.wasm.clone());
    let size = std::fs::metadata(&s.wasm).unwrap().len();

    // Cold: an empty cache directory.
    let cache = tempfile::tempdir().unwrap();
    let host = PluginHost::new(Some(cache.path().to_path_buf())).unwrap();
    let loaded = host.load(&source).unwrap();
    assert!(!loaded.was_cached(), "the first load must compile");
    let cold = loaded.load_time();

    // Warm: a fresh host each time (no in-memory hit), the same cache directory.
    let mut warm = Vec::new();
    for _ in 0..WARM_LOADS {
        let host = PluginHost::new(Some(cache.path().to_path_buf())).unwrap();
        let loaded = host.load(&source).unwrap();
        assert!(loaded.was_cached(), "a warm load must come from the cache");
        warm.push(loaded.load_time());
    }

    let mut describes = Vec::new();
    for _ in 0..DESCRIBES {
        let start = Instant::now();
        host.describe(&loaded).unwrap();
        describes.push(start.elapsed());
    }

    let project = tempfile::tempdir().unwrap();
    let sandbox = Sandbox {
        project_root: project.path().to_path_buf(),
        grants: (s.grants)(project.path(), "area"),
        limits: Limits::default(),
    };
    let ctx = deploy_context("migrate_pre", (s.config)("area"));
    let mut runs = Vec::new();
    for i in 0..RUNS {
        let mut ctx = ctx.clone();
        // A new release each time, so the changelog does real work rather than skip.
        ctx.release.id = format!("rel-20260101-1200{i:05}");
        let run = host.run(&loaded, &ctx, &sandbox, &NullSink);
        assert!(run.result.is_ok(), "{:?}", run.result);
        runs.push(run.duration);
    }

    let (first, second) = deploy_twice(s);
    Row {
        language: s.language,
        plugin: s.plugin,
        size,
        cold,
        warm: median(&mut warm),
        describe: median(&mut describes),
        run: median(&mut runs),
        first_deploy_load: first,
        second_deploy_load: second,
    }
}

/// Two six-phase deploys through the binary with an empty cache; the plugin loading time each
/// reports under --verbose (summed over the phases).
fn deploy_twice(s: &Subject) -> (Duration, Duration) {
    let project = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut manifest = String::from("[environments.prod]\n");
    for (i, phase) in PHASES.iter().enumerate() {
        let dir = format!("area{i}");
        let grants = (s.grants)(project.path(), &dir);
        manifest.push_str(&format!(
            "[phases.{phase}]\nplugin = \"{}\"\nconfig = {{ {} }}\n[phases.{phase}.grants]\n\
             read = {:?}\nwrite = {:?}\n",
            s.wasm.display(),
            (s.config)(&dir)
                .iter()
                .map(|(k, v)| format!("{k} = {v:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            grants
                .read
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>(),
            grants
                .write
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>(),
        ));
    }
    std::fs::write(project.path().join("stagecraft.toml"), manifest).unwrap();
    let bin = std::env::current_exe()
        .unwrap()
        .with_file_name("stagecraft");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p stagecraft` first",
        bin.display()
    );
    let deploy = |version: &str| -> Duration {
        let out = std::process::Command::new(&bin)
            .current_dir(project.path())
            .env("STAGECRAFT_CACHE_DIR", cache.path())
            .args(["deploy", "--env", "prod", "--version", version, "--verbose"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "deploy failed:\n{stderr}");
        let loads: Vec<Duration> = stderr
            .lines()
            .filter_map(|l| {
                let (_, rest) = l
                    .split_once("] compiled in ")
                    .or_else(|| l.split_once("] loaded from cache in "))?;
                let ms: f64 = rest.strip_suffix(" ms")?.parse().ok()?;
                Some(Duration::from_secs_f64(ms / 1000.0))
            })
            .collect();
        assert_eq!(
            loads.len(),
            PHASES.len(),
            "one load line per phase:\n{stderr}"
        );
        loads.iter().sum()
    };
    let first = deploy("v1");
    let second = deploy("v2");
    (first, second)
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 1.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{:.0} µs", ms * 1000.0)
    }
}
