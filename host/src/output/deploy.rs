//! What deploy and rollback print while they run, and their final record.
//!
//! stdout carries the deterministic part: one line per phase as it finishes (durations only
//! with `--verbose`), or, with `--json`, only the final release record. stderr carries plugin logs
//! tagged with phase and plugin, and what the command is waiting on (progress.rs): live on a
//! terminal, plain lines elsewhere. Every piece of plugin text, and every value that came from the
//! user or from state, is printed through [`escape_controls`], so a phase is always exactly one
//! line and no plugin writes escape sequences to the terminal.

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use super::progress::{Clock, Progress};
use super::terminal::escape_controls;
use crate::pipeline::Events;
use crate::plugin::{LogLevel, LogSink};
use crate::state::{LeaseHolder, LeaseWaitObserver, PhaseDetail, PhaseStatus, Release};

/// Width of the phase-name column.
const PHASE_WIDTH: usize = 13;

/// Renders pipeline events on the console.
pub struct ConsoleEvents {
    verbose: bool,
    json: bool,
    progress: Progress,
    /// Serializes writes from the pipeline thread and plugin log callbacks.
    lock: Mutex<()>,
}

impl ConsoleEvents {
    /// `live`: draw progress in place on stderr ([`super::progress::live_wanted`]).
    pub fn new(verbose: bool, json: bool, live: bool) -> Self {
        ConsoleEvents {
            verbose,
            json,
            progress: Progress::new(live),
            lock: Mutex::new(()),
        }
    }
}

/// The progress prefix of a phase: its name in the phase column, as in the result lines.
fn phase_prefix(phase: &str) -> String {
    format!("  {:<PHASE_WIDTH$} ", escape_controls(phase))
}

/// One phase's line: name, status, and what happened (escaped: always one line).
pub fn phase_line(phase: &str, status: PhaseStatus, detail: &PhaseDetail, verbose: bool) -> String {
    let what = escape_controls(
        detail
            .error
            .as_deref()
            .or(detail.summary.as_deref())
            .unwrap_or(""),
    );
    let phase = escape_controls(phase);
    let mut line = format!("  {phase:<PHASE_WIDTH$} {:<10}{what}", status.as_str());
    if verbose {
        if let Some(ms) = detail.duration_ms {
            line.push_str(&format!(" ({ms} ms)"));
        }
    }
    line.trim_end().to_string()
}

// Output errors are ignored on purpose while a release runs: a closed stdout (a pipe to
// `head`) must never abort a deploy half-way. The state file is the record.
impl Events for ConsoleEvents {
    fn plugin_compiling(&self, phase: &str, plugin: &str, cached_afterwards: bool) {
        let _g = self.lock.lock();
        let plugin = escape_controls(plugin);
        let why = if cached_afterwards {
            "first use, cached afterwards"
        } else {
            "not cached: no usable cache directory"
        };
        let message = format!(
            "compiling {plugin} for phase {} ({why})",
            escape_controls(phase)
        );
        let plain = format!("{message}...");
        self.progress
            .begin("", &message, Clock::Elapsed, Some(plain.as_str()));
    }

    fn plugin_loaded(&self, phase: &str, plugin: &str, cached: bool, took: Duration) {
        let _g = self.lock.lock();
        self.progress.end();
        if self.verbose {
            let how = if cached {
                "loaded from cache"
            } else {
                "compiled"
            };
            let _ = writeln!(
                std::io::stderr(),
                "[{} {}] {how} in {:.1} ms",
                escape_controls(phase),
                escape_controls(plugin),
                took.as_secs_f64() * 1000.0
            );
        }
    }

    fn release_created(&self, release: &Release) {
        if self.json {
            return;
        }
        let _g = self.lock.lock();
        let what = match release.operation() {
            crate::state::Operation::Deploy => "deploy",
            crate::state::Operation::Rollback => "rollback",
        };
        let _ = writeln!(
            std::io::stdout(),
            "Release {}: {what} {} to {}",
            release.id,
            escape_controls(&release.version),
            escape_controls(&release.environment)
        );
    }

    fn phase_started(&self, phase: &str, plugin: &str) {
        let _g = self.lock.lock();
        let message = format!("running {}", escape_controls(plugin));
        self.progress
            .begin(&phase_prefix(phase), &message, Clock::Elapsed, None);
    }

    fn phase_finished(&self, phase: &str, status: PhaseStatus, detail: &PhaseDetail) {
        let _g = self.lock.lock();
        self.progress.end();
        if !self.json {
            let _ = writeln!(
                std::io::stdout(),
                "{}",
                phase_line(phase, status, detail, self.verbose)
            );
        }
    }

    fn log_sink(&self, phase: &str, plugin: &str) -> Box<dyn LogSink + '_> {
        Box::new(ConsoleSink {
            events: self,
            tag: format!("[{} {}]", escape_controls(phase), escape_controls(plugin)),
        })
    }

    fn warning(&self, message: &str) {
        let _g = self.lock.lock();
        super::progress::eprint_above(&format!("warning: {message}"));
    }
}

/// A wait for the environment's lease: who holds it and how long this command will wait.
impl LeaseWaitObserver for ConsoleEvents {
    fn waiting(&self, env: &str, holder: Option<&LeaseHolder>, wait: Duration, left: Duration) {
        let _g = self.lock.lock();
        let who = match holder {
            // A holder's Display escapes what it read from the lease record.
            Some(h) => h.to_string(),
            None => "another process (it has not recorded its details yet)".to_string(),
        };
        let env = escape_controls(env);
        let message = format!("waiting for the lease on \"{env}\", held by {who}");
        let plain = format!(
            "Waiting up to {} (--lock-wait) for the lease on \"{env}\", held by {who}...",
            crate::manifest::units::format_duration(wait)
        );
        self.progress
            .begin("", &message, Clock::Countdown(left), Some(plain.as_str()));
    }

    fn wait_ended(&self) {
        let _g = self.lock.lock();
        self.progress.end();
    }
}

struct ConsoleSink<'a> {
    events: &'a ConsoleEvents,
    tag: String,
}

impl LogSink for ConsoleSink<'_> {
    fn log(&self, level: LogLevel, message: &str) {
        if level < LogLevel::Info && !self.events.verbose {
            return;
        }
        let _g = self.events.lock.lock();
        self.events.progress.above(|| {
            let mut err = std::io::stderr().lock();
            // One terminal line per line of the message, each tagged, so a forged line is still
            // visibly part of the log; anything else a terminal would act on is shown escaped.
            for line in message.lines() {
                let _ = writeln!(
                    err,
                    "{} {}: {}",
                    self.tag,
                    level.as_str(),
                    escape_controls(line)
                );
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_lines_are_aligned_and_durations_only_verbose() {
        let detail = PhaseDetail {
            summary: Some("rendered 3 files".into()),
            duration_ms: Some(12),
            ..PhaseDetail::default()
        };
        assert_eq!(
            phase_line("build", PhaseStatus::Completed, &detail, false),
            "  build         completed rendered 3 files"
        );
        assert_eq!(
            phase_line("build", PhaseStatus::Completed, &detail, true),
            "  build         completed rendered 3 files (12 ms)"
        );
        let failed = PhaseDetail {
            error: Some("boom".into()),
            ..PhaseDetail::default()
        };
        assert_eq!(
            phase_line("push", PhaseStatus::Failed, &failed, false),
            "  push          failed    boom"
        );
    }

    #[test]
    fn a_phase_line_is_one_line_whatever_the_plugin_said() {
        let detail = PhaseDetail {
            summary: Some("\x1b[2Jdone\r  rollout       completed\n\u{202e}x".into()),
            ..PhaseDetail::default()
        };
        let line = phase_line("build", PhaseStatus::Completed, &detail, false);
        assert_eq!(
            line,
            "  build         completed \\x1b[2Jdone\\r  rollout       completed\\n\\u{202e}x"
        );
    }
}
