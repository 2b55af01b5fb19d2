//! How `releases logs` prints: per phase, in pipeline order, a header line and then each kept
//! line as `time level message`, every value escaped (a log line is always one terminal line);
//! or one JSON object for machines (spec/cli.md, "releases logs").

use serde::Serialize;

use super::terminal::escape_controls;
use crate::state::{LogCut, LogLine, PhaseLog, Release};

/// What one phase's log shows: the log and, from the release record, how the phase ended.
pub struct ShownLog<'a> {
    pub log: &'a PhaseLog,
    pub release: &'a Release,
}

impl ShownLog<'_> {
    fn plugin(&self) -> Option<&str> {
        self.release
            .phase_details
            .get(&self.log.phase)
            .and_then(|d| d.plugin.as_deref())
    }
}

/// The text view: `=== build: completed (builtin:exec) ===`, then the lines.
pub fn logs_text(logs: &[ShownLog<'_>]) -> String {
    let mut out = String::new();
    for (i, shown) in logs.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let phase = escape_controls(&shown.log.phase);
        let status = shown.release.status_of(&shown.log.phase);
        let plugin = shown
            .plugin()
            .map(|p| format!(" ({})", escape_controls(p)))
            .unwrap_or_default();
        out.push_str(&format!("=== {phase}: {}{plugin} ===\n", status.as_str()));
        if shown.log.lines.is_empty() {
            out.push_str("(nothing logged)\n");
        }
        for line in &shown.log.lines {
            out.push_str(&format!(
                "{} {:<5} {}\n",
                escape_controls(&line.time),
                escape_controls(&line.level),
                escape_controls(&line.message)
            ));
        }
    }
    out
}

/// What `releases logs` says when nothing is kept: for the release, or for one phase of it.
pub fn no_logs_text(release: &Release, phase: Option<&str>) -> String {
    match phase {
        Some(phase) => format!(
            "Phase {} of release {} has no kept log (it did not run a plugin, or it ran \
             before stagecraft kept phase logs)\n",
            escape_controls(phase),
            release.id
        ),
        None => format!(
            "Release {} has no kept logs (none of its phases ran a plugin, or it ran before \
             stagecraft kept phase logs)\n",
            release.id
        ),
    }
}

#[derive(Serialize)]
struct JsonLogs<'a> {
    release_id: &'a str,
    phases: Vec<JsonPhase<'a>>,
}

#[derive(Serialize)]
struct JsonPhase<'a> {
    name: &'a str,
    status: &'static str,
    plugin: Option<&'a str>,
    lines: &'a [LogLine],
    cut: Option<&'a LogCut>,
}

/// `releases logs --json`: `{"release_id": ..., "phases": [{name, status, plugin, lines, cut}]}`,
/// phases in pipeline order (none when nothing is kept).
pub fn logs_json(release: &Release, logs: &[ShownLog<'_>]) -> String {
    let doc = JsonLogs {
        release_id: release.id.as_str(),
        phases: logs
            .iter()
            .map(|shown| JsonPhase {
                name: &shown.log.phase,
                status: release.status_of(&shown.log.phase).as_str(),
                plugin: shown.plugin(),
                lines: &shown.log.lines,
                cut: shown.log.cut.as_ref(),
            })
            .collect(),
    };
    let mut text = serde_json::to_string_pretty(&doc).expect("logs serialize");
    text.push('\n');
    text
}
