//! Shared set-up for the plugin tests: where build.rs put the fixture components, a plugin host
//! with a private cache, standard contexts, a project directory with a state file next to it.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use stagecraft::plugin::*;

/// `<target>/wasm-plugins`, where host/build.rs copies built-ins and fixtures.
pub fn wasm_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // <target>/<profile>/deps/<test>
    exe.ancestors()
        .nth(3)
        .expect("target dir")
        .join("wasm-plugins")
}

pub fn fixture(name: &str) -> PathBuf {
    let path = wasm_dir().join("fixtures").join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build the host first (cargo build -p stagecraft)",
        path.display()
    );
    path
}

pub fn hostile() -> PluginSource {
    PluginSource::File(fixture("hostile"))
}

/// A host with its own cache directory (kept for the life of the returned TempDir).
pub fn host() -> (PluginHost, tempfile::TempDir) {
    let cache = tempfile::tempdir().unwrap();
    let host = PluginHost::new(Some(cache.path().to_path_buf())).unwrap();
    (host, cache)
}

/// The shared test cache (faster: fixtures compile once per test run).
pub fn shared_host() -> PluginHost {
    PluginHost::new(Some(stagecraft_tests::shared_cache_dir())).unwrap()
}

pub fn context(phase: &str, config: &[(&str, &str)]) -> PhaseContext {
    PhaseContext {
        phase: phase.to_string(),
        operation: Operation::Deploy,
        release: ReleaseInfo {
            id: "rel-20260101-000000000".into(),
            environment: "prod".into(),
            version: "v2".into(),
            commit: "c0ffee".into(),
            previous_id: None,
        },
        rollback_target: None,
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        vars: BTreeMap::from([("region".to_string(), "eu".to_string())]),
        earlier_outputs: Vec::new(),
    }
}

/// A project root inside a temp dir, with a state directory *next to* the project holding a
/// state file, its lock and backup (so escapes have something to aim at).
pub struct Project {
    pub dir: tempfile::TempDir,
}

pub const STATE_BYTES: &[u8] = b"{\"format\": 2, \"releases\": [\"precious\"]}\n";

impl Project {
    pub fn new() -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("project")).unwrap();
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        for name in ["releases.json", "releases.json.lock", "releases.json.bak"] {
            std::fs::write(dir.path().join("state").join(name), STATE_BYTES).unwrap();
        }
        Project { dir }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("project")
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.path().join("state/releases.json")
    }

    /// Every protected file still has its original bytes and nothing new appeared beside them.
    pub fn assert_state_untouched(&self) {
        let dir = self.dir.path().join("state");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec!["releases.json", "releases.json.bak", "releases.json.lock"]
        );
        for name in names {
            assert_eq!(
                std::fs::read(dir.join(&name)).unwrap(),
                STATE_BYTES,
                "{name} changed"
            );
        }
    }

    pub fn sandbox(&self, grants: Grants) -> Sandbox {
        Sandbox {
            project_root: self.root(),
            grants,
            limits: Limits::default(),
        }
    }
}

/// A sink that remembers every line.
#[derive(Default)]
pub struct Lines(pub Mutex<Vec<(LogLevel, String)>>);

impl LogSink for Lines {
    fn log(&self, level: LogLevel, message: &str) {
        self.0.lock().unwrap().push((level, message.to_string()));
    }
}

impl Lines {
    pub fn all(&self) -> Vec<(LogLevel, String)> {
        self.0.lock().unwrap().clone()
    }
    pub fn text(&self) -> String {
        self.all()
            .iter()
            .map(|(_, m)| m.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

pub fn short_timeout(ms: u64) -> Limits {
    Limits {
        timeout: Duration::from_millis(ms),
        timeout_text: format!("{ms}ms"),
        ..Limits::default()
    }
}

pub fn grants_rw(read: &[&str], write: &[&str]) -> Grants {
    Grants {
        read: read.iter().map(PathBuf::from).collect(),
        write: write.iter().map(PathBuf::from).collect(),
        ..Grants::default()
    }
}

/// Run the hostile fixture in `mode` with extra config.
pub fn run_hostile(
    host: &PluginHost,
    sandbox: &Sandbox,
    config: &[(&str, &str)],
) -> (PhaseRun, Lines) {
    let plugin = host.load(&hostile()).expect("load hostile fixture");
    let ctx = context("build", config);
    let lines = Lines::default();
    let run = host.run(&plugin, &ctx, sandbox, &lines);
    (run, lines)
}

pub fn failure(run: &PhaseRun) -> String {
    match &run.result {
        Ok(report) => panic!("expected a failed phase, got {report:?}"),
        Err(failure) => failure.to_string(),
    }
}

pub fn is_file(path: &Path) -> bool {
    path.is_file()
}
