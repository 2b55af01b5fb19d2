//! {{name}}: a Stagecraft deploy phase written in Rust.
//!
//! `run` gets the phase's context (release, config, vars, earlier phases' outputs) and returns
//! a report, or a `PhaseError` that fails the phase with its message.

wit_bindgen::generate!({ world: "phase-plugin", path: "wit" });

use exports::stagecraft::phase::phase::Guest;
use stagecraft::phase::host::{log, LogLevel};
use stagecraft::phase::types::{
    Operation, Outcome, PhaseContext, PhaseError, PhaseReport, PluginInfo,
};

struct Plugin;

impl Guest for Plugin {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "{{name}}".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Greets config.target; nothing to do on a rollback.".into(),
            phases: Vec::new(),
        }
    }

    fn run(ctx: PhaseContext) -> Result<PhaseReport, PhaseError> {
        let target = ctx
            .config
            .iter()
            .find(|(key, _)| key == "target")
            .map(|(_, value)| value.trim().to_string())
            .unwrap_or_default();
        if target.is_empty() {
            return Err(PhaseError {
                message: "config.target is missing: set it in this phase's config, \
                          e.g. config = { target = \"world\" }"
                    .into(),
                details: None,
            });
        }
        if ctx.operation == Operation::Rollback {
            return Ok(PhaseReport {
                outcome: Outcome::Skipped("nothing to undo on a rollback".into()),
                summary: format!("skipped for rollback to {}", ctx.release.version),
                outputs: Vec::new(),
            });
        }
        let greeting = format!("hello, {target}");
        log(
            LogLevel::Info,
            &format!("{greeting} (phase {}, {})", ctx.phase, ctx.release.version),
        );
        Ok(PhaseReport {
            outcome: Outcome::Completed,
            summary: format!("greeted {target} for {}", ctx.release.version),
            outputs: vec![
                ("greeting".into(), greeting),
                ("version".into(), ctx.release.version.clone()),
            ],
        })
    }
}

export!(Plugin);
