//! Authoring crate for Stagecraft phase plugins: implement [`Phase`], export it with
//! [`export_phase!`], and build with `cargo build --target wasm32-wasip2 --release`.
//!
//! ```ignore
//! use stagecraft_plugin_sdk::{export_phase, Context, Error, Info, Phase, Report};
//!
//! struct Hello;
//!
//! impl Phase for Hello {
//!     fn describe() -> Info {
//!         Info::new("hello", env!("CARGO_PKG_VERSION"), "says hello")
//!     }
//!     fn run(ctx: &Context) -> Result<Report, Error> {
//!         let who = ctx.config_or("who", "world");
//!         stagecraft_plugin_sdk::log::info(&format!("hello, {who}"));
//!         Ok(Report::completed(format!("greeted {who}")).output("who", who))
//!     }
//! }
//!
//! export_phase!(Hello);
//! ```

// The generated export glue names the runtime through this crate's own path, so that plugin
// crates need only depend on the SDK (not on wit-bindgen as well).
extern crate self as stagecraft_plugin_sdk;

#[doc(hidden)]
pub use wit_bindgen::rt as __rt;

/// The raw wit-bindgen bindings of `wit/phase.wit` (world `phase-plugin`). Prefer the typed
/// wrappers of this crate; these are here for what they do not cover.
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "phase-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_phase_plugin",
        default_bindings_module: "stagecraft_plugin_sdk::bindings",
        runtime_path: "stagecraft_plugin_sdk::__rt",
        // The WASI interfaces wasi:http uses (wit/deps/) are generated here too.
        generate_all,
    });
}

use bindings::exports::stagecraft::phase::phase as wit_phase;
use bindings::stagecraft::phase::host as wit_host;
use bindings::stagecraft::phase::types as wit;

pub use wit::Operation;

/// What a plugin says about itself (`describe()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub name: String,
    pub version: String,
    pub description: String,
    /// The phases this plugin is meant for; empty means any.
    pub phases: Vec<String>,
}

impl Info {
    pub fn new(name: &str, version: &str, description: &str) -> Info {
        Info {
            name: name.to_string(),
            version: version.to_string(),
            description: description.to_string(),
            phases: Vec::new(),
        }
    }

    /// Restrict the plugin to the named phases (shown by `stagecraft plugin check`).
    pub fn phases(mut self, phases: &[&str]) -> Info {
        self.phases = phases.iter().map(|p| p.to_string()).collect();
        self
    }
}

/// The release this phase belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub id: String,
    pub environment: String,
    pub version: String,
    pub commit: String,
    pub previous_id: Option<String>,
}

/// For a rollback: the earlier release being redeployed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackTarget {
    pub release_id: String,
    pub version: String,
    pub commit: String,
}

/// Everything a phase is told, with lookups for the common questions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub phase: String,
    pub operation: Operation,
    pub release: Release,
    pub rollback_target: Option<RollbackTarget>,
    pub config: Vec<(String, String)>,
    pub vars: Vec<(String, String)>,
    pub earlier_outputs: Vec<(String, Vec<(String, String)>)>,
}

impl Context {
    /// A value of the phase's `config` table.
    pub fn config(&self, key: &str) -> Option<&str> {
        lookup(&self.config, key)
    }

    /// A config value, or `default` when the manifest does not set it.
    pub fn config_or(&self, key: &str, default: &str) -> String {
        self.config(key).unwrap_or(default).to_string()
    }

    /// A config value the plugin cannot work without: a missing key is a phase error that says
    /// which key to add to the manifest.
    pub fn require_config(&self, key: &str) -> Result<&str, Error> {
        self.config(key).ok_or_else(|| {
            Error::new(format!(
                "config.{key} is not set: add `{key} = \"...\"` to this phase's config in stagecraft.toml"
            ))
        })
    }

    /// A value of the environment's `vars` table.
    pub fn var(&self, name: &str) -> Option<&str> {
        lookup(&self.vars, name)
    }

    /// An output that an earlier phase of this release reported.
    pub fn earlier_output(&self, phase: &str, key: &str) -> Option<&str> {
        self.earlier_outputs
            .iter()
            .find(|(p, _)| p == phase)
            .and_then(|(_, outputs)| lookup(outputs, key))
    }

    /// True for `stagecraft rollback`.
    pub fn is_rollback(&self) -> bool {
        matches!(self.operation, Operation::Rollback)
    }

    /// The version this run puts in place: the rollback target's on a rollback (equal to the
    /// release's own version there), else the release's.
    pub fn target_version(&self) -> &str {
        match &self.rollback_target {
            Some(target) => &target.version,
            None => &self.release.version,
        }
    }

    /// Replace `{{version}}`, `{{environment}}`, `{{release_id}}`, `{{phase}}`, `{{commit}}`,
    /// `{{operation}}` (`deploy` or `rollback`), `{{rollback_target}}` (the redeployed release's
    /// id, empty on a deploy) and `{{var.NAME}}` in `text`. Unknown placeholders are left as
    /// written.
    pub fn substitute(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            match after.find("}}") {
                Some(end) => {
                    let name = after[..end].trim();
                    match self.placeholder(name) {
                        Some(value) => out.push_str(&value),
                        None => out.push_str(&rest[start..start + 2 + end + 2]),
                    }
                    rest = &after[end + 2..];
                }
                None => {
                    out.push_str(&rest[start..]);
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out
    }

    fn placeholder(&self, name: &str) -> Option<String> {
        match name {
            "version" => Some(self.target_version().to_string()),
            "environment" => Some(self.release.environment.clone()),
            "release_id" => Some(self.release.id.clone()),
            "phase" => Some(self.phase.clone()),
            "operation" => Some(
                if self.is_rollback() {
                    "rollback"
                } else {
                    "deploy"
                }
                .to_string(),
            ),
            // The release being redeployed; empty on a deploy.
            "rollback_target" => Some(
                self.rollback_target
                    .as_ref()
                    .map_or_else(String::new, |t| t.release_id.clone()),
            ),
            "commit" => Some(match &self.rollback_target {
                Some(target) => target.commit.clone(),
                None => self.release.commit.clone(),
            }),
            _ => name
                .strip_prefix("var.")
                .and_then(|var| self.var(var))
                .map(str::to_string),
        }
    }
}

fn lookup<'a>(map: &'a [(String, String)], key: &str) -> Option<&'a str> {
    map.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// How the phase ended when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Skipped(String),
}

/// What a successful phase returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub outcome: Outcome,
    pub summary: String,
    pub outputs: Vec<(String, String)>,
}

impl Report {
    /// The phase did its work; `summary` is one line for humans.
    pub fn completed(summary: impl Into<String>) -> Report {
        Report {
            outcome: Outcome::Completed,
            summary: summary.into(),
            outputs: Vec::new(),
        }
    }

    /// Nothing to do; `reason` says why.
    pub fn skipped(reason: impl Into<String>) -> Report {
        let reason = reason.into();
        Report {
            outcome: Outcome::Skipped(reason.clone()),
            summary: reason,
            outputs: Vec::new(),
        }
    }

    /// Add (or replace) an output later phases can read with `earlier_output`.
    pub fn output(mut self, key: impl Into<String>, value: impl Into<String>) -> Report {
        let key = key.into();
        let value = value.into();
        match self.outputs.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.outputs.push((key, value)),
        }
        self
    }
}

/// Why the phase failed: one line, plus optional details (a command's stderr tail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub message: String,
    pub details: Option<String>,
}

impl Error {
    pub fn new(message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Error {
        self.details = Some(details.into());
        self
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<String> for Error {
    fn from(message: String) -> Error {
        Error::new(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Error {
        Error::new(message)
    }
}

/// A deploy phase written in Rust. Export it with [`export_phase!`].
pub trait Phase {
    /// Name, version, description, supported phases. Must not have side effects.
    fn describe() -> Info;
    /// Do the phase's work for one release.
    fn run(ctx: &Context) -> Result<Report, Error>;
}

/// Structured log lines, shown live and kept (capped) in the phase log.
pub mod http;

pub mod log {
    use super::wit_host::{self, LogLevel};

    pub fn trace(message: &str) {
        wit_host::log(LogLevel::Trace, message)
    }
    pub fn debug(message: &str) {
        wit_host::log(LogLevel::Debug, message)
    }
    pub fn info(message: &str) {
        wit_host::log(LogLevel::Info, message)
    }
    pub fn warn(message: &str) {
        wit_host::log(LogLevel::Warn, message)
    }
    pub fn error(message: &str) {
        wit_host::log(LogLevel::Error, message)
    }
}

/// The result of a finished host program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// None when the program was killed by a signal.
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }
}

/// Run a host program named in the phase's `exec` grant (looked up on PATH, run in the project
/// root). `Err` says why it could not run: not granted, not found, or killed at the deadline.
pub fn exec(program: &str, args: &[&str]) -> Result<ExecOutput, String> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    wit_host::exec(program, &args).map(|r| ExecOutput {
        exit_code: r.exit_code,
        stdout: r.stdout,
        stderr: r.stderr,
    })
}

/// Glue between [`Phase`] and the generated export trait; used by [`export_phase!`].
#[doc(hidden)]
pub struct PhaseExport<T>(std::marker::PhantomData<T>);

impl<T: Phase> wit_phase::Guest for PhaseExport<T> {
    fn describe() -> wit::PluginInfo {
        let info = T::describe();
        wit::PluginInfo {
            name: info.name,
            version: info.version,
            description: info.description,
            phases: info.phases,
        }
    }

    fn run(context: wit::PhaseContext) -> Result<wit::PhaseReport, wit::PhaseError> {
        let ctx = Context {
            phase: context.phase,
            operation: context.operation,
            release: Release {
                id: context.release.id,
                environment: context.release.environment,
                version: context.release.version,
                commit: context.release.commit,
                previous_id: context.release.previous_id,
            },
            rollback_target: context.rollback_target.map(|t| RollbackTarget {
                release_id: t.release_id,
                version: t.version,
                commit: t.commit,
            }),
            config: context.config,
            vars: context.vars,
            earlier_outputs: context
                .earlier_outputs
                .into_iter()
                .map(|o| (o.phase, o.outputs))
                .collect(),
        };
        match T::run(&ctx) {
            Ok(report) => Ok(wit::PhaseReport {
                outcome: match report.outcome {
                    Outcome::Completed => wit::Outcome::Completed,
                    Outcome::Skipped(reason) => wit::Outcome::Skipped(reason),
                },
                summary: report.summary,
                outputs: report.outputs,
            }),
            Err(err) => Err(wit::PhaseError {
                message: err.message,
                details: err.details,
            }),
        }
    }
}

/// Export a type implementing [`Phase`] as this component's `phase` interface. Use it once, at
/// the crate root of a `cdylib`.
#[macro_export]
macro_rules! export_phase {
    ($ty:ty) => {
        type __StagecraftPhaseExport = $crate::PhaseExport<$ty>;
        $crate::bindings::__export_phase_plugin!(__StagecraftPhaseExport with_types_in $crate::bindings);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            phase: "rollout".into(),
            operation: Operation::Deploy,
            release: Release {
                id: "rel-1".into(),
                environment: "prod".into(),
                version: "v2".into(),
                commit: "abc".into(),
                previous_id: None,
            },
            rollback_target: None,
            config: vec![("dest".into(), "out".into())],
            vars: vec![("region".into(), "eu".into())],
            earlier_outputs: vec![("build".into(), vec![("digest".into(), "sha".into())])],
        }
    }

    #[test]
    fn substitutes_known_placeholders_and_keeps_unknown_ones() {
        let c = ctx();
        assert_eq!(
            c.substitute("{{version}}-{{ environment }}/{{release_id}}/{{phase}}/{{commit}}"),
            "v2-prod/rel-1/rollout/abc"
        );
        assert_eq!(
            c.substitute("{{var.region}} {{var.nope}} {{x"),
            "eu {{var.nope}} {{x"
        );
    }

    #[test]
    fn rollback_substitutes_the_target_version() {
        let mut c = ctx();
        c.operation = Operation::Rollback;
        c.rollback_target = Some(RollbackTarget {
            release_id: "rel-0".into(),
            version: "v1".into(),
            commit: "old".into(),
        });
        assert_eq!(c.substitute("{{version}}@{{commit}}"), "v1@old");
        assert_eq!(
            c.substitute("{{operation}} to {{rollback_target}}"),
            "rollback to rel-0"
        );
        assert_eq!(
            ctx().substitute("{{operation}}[{{rollback_target}}]"),
            "deploy[]"
        );
    }

    #[test]
    fn lookups() {
        let c = ctx();
        assert_eq!(c.config("dest"), Some("out"));
        assert_eq!(c.config_or("missing", "d"), "d");
        assert!(c
            .require_config("missing")
            .unwrap_err()
            .message
            .contains("config.missing"));
        assert_eq!(c.earlier_output("build", "digest"), Some("sha"));
        assert_eq!(c.earlier_output("push", "digest"), None);
        let r = Report::completed("ok").output("a", "1").output("a", "2");
        assert_eq!(r.outputs, vec![("a".to_string(), "2".to_string())]);
    }
}
