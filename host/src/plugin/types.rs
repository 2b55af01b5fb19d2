//! Host-side mirrors of the WIT types, plus the sandbox description (grants and limits).
//! The rest of the host speaks these; only the plugin module touches generated bindings.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

/// Where a plugin comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PluginSource {
    /// `builtin:<name>`: a component embedded in the binary.
    Builtin(String),
    /// A `.wasm` file (already resolved against the project root).
    File(PathBuf),
    /// A component the state keeps (a rollback running its target's recorded plan), already
    /// checked against its digest; `name` is the plugin as the plan records it.
    Stored {
        name: String,
        bytes: std::sync::Arc<[u8]>,
    },
}

impl std::fmt::Display for PluginSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PluginSource::Builtin(name) => write!(f, "builtin:{name}"),
            PluginSource::File(path) => write!(f, "{}", path.display()),
            PluginSource::Stored { name, .. } => f.write_str(name),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Deploy,
    Rollback,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReleaseInfo {
    pub id: String,
    pub environment: String,
    pub version: String,
    pub commit: String,
    pub previous_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RollbackTarget {
    pub release_id: String,
    pub version: String,
    pub commit: String,
}

/// What a phase is told (WIT `phase-context`). Maps are sorted by key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PhaseContext {
    pub phase: String,
    pub operation: Operation,
    pub release: ReleaseInfo,
    pub rollback_target: Option<RollbackTarget>,
    pub config: BTreeMap<String, String>,
    pub vars: BTreeMap<String, String>,
    /// (phase, outputs) of earlier completed phases, in pipeline order.
    pub earlier_outputs: Vec<(String, BTreeMap<String, String>)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "reason")]
pub enum Outcome {
    Completed,
    Skipped(String),
}

/// What a successful run returned (WIT `phase-report`), already checked against the host's bounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PhaseReport {
    pub outcome: Outcome,
    pub summary: String,
    pub outputs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    pub phases: Vec<String>,
}

/// Which budget tripped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    Timeout,
    Memory,
    /// Outputs map too large (entries or bytes).
    Outputs,
}

impl LimitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Timeout => "timeout",
            LimitKind::Memory => "memory",
            LimitKind::Outputs => "outputs",
        }
    }
}

/// Why a run failed. `Display` is the one line recorded as the phase's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhaseFailure {
    /// The plugin returned `err(phase-error)` (a Python exception, a thrown JS error, ...).
    Guest {
        message: String,
        details: Option<String>,
    },
    /// A budget tripped; `value` is the configured limit as the user wrote it (`30s`, `256MiB`).
    Limit { limit: LimitKind, value: String },
    /// The guest trapped (panic, unreachable, stack overflow); the message says which.
    Trap(String),
    /// The component could not be loaded or instantiated, or is not a phase plugin.
    Load(String),
    /// A grant could not be opened when the phase started (missing, or a symbolic link now
    /// stands in its path); the message names the grant.
    Grant(String),
}

impl std::fmt::Display for PhaseFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PhaseFailure::Guest { message, .. } => write!(f, "{message}"),
            PhaseFailure::Limit { limit, value } => {
                write!(f, "{} limit of {value} exceeded", limit.as_str())
            }
            PhaseFailure::Trap(msg) => write!(f, "plugin crashed: {msg}"),
            PhaseFailure::Load(msg) => write!(f, "plugin could not be loaded: {msg}"),
            PhaseFailure::Grant(msg) => write!(f, "{msg}"),
        }
    }
}

/// What a phase may touch. Everything defaults to nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Host directories (preopened read-only) or files (for exec'd programs) that may be read;
    /// absolute, resolved against the project root.
    pub read: Vec<PathBuf>,
    /// Host directories (preopened read-write) or files that may be written.
    pub write: Vec<PathBuf>,
    /// Environment variable names passed through from the host's environment.
    pub env: Vec<String>,
    /// Program names the plugin may run through `host.exec`, confined to these grants.
    pub exec: Vec<String>,
    /// Program names the plugin may run unconfined (the manifest's `exec_unconfined`): they
    /// reach everything this user can. Still killed with everything they start when the phase
    /// ends.
    pub exec_unconfined: Vec<String>,
    /// Origins reachable through `wasi:http`, and the ports exec'd programs may connect to.
    pub net: Vec<super::net::NetGrant>,
}

/// Per-phase budgets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub timeout: Duration,
    /// As the user wrote it, for messages.
    pub timeout_text: String,
    pub memory_bytes: u64,
    pub memory_text: String,
    /// Bytes of log (host `log` calls plus stdout/stderr) kept; the rest is dropped, with a note.
    pub log_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(600),
            timeout_text: "10m".into(),
            memory_bytes: 512 << 20,
            memory_text: "512MiB".into(),
            log_bytes: 1 << 20,
        }
    }
}

/// The sandbox one phase run gets.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// The manifest's directory: `exec` runs here; relative grants resolve against it.
    pub project_root: PathBuf,
    pub grants: Grants,
    pub limits: Limits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// Where a running plugin's log lines (host `log` calls, and its stdout/stderr as `info`/`warn`)
/// go as they happen. The host has already tagged nothing: the sink knows its phase and plugin.
pub trait LogSink: Send + Sync {
    fn log(&self, level: LogLevel, message: &str);
}

/// A sink that drops everything (conformance checks, `plugin check`).
pub struct NullSink;

impl LogSink for NullSink {
    fn log(&self, _: LogLevel, _: &str) {}
}
