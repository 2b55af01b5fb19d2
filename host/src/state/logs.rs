//! Phase logs: what a phase logged while it ran, kept with its release where the backend keeps
//! the history (spec/state.md, "Phase logs"). The pipeline bounds a log before it is kept; a
//! store keeps what it is given, replaces it when the same phase is written again, and removes
//! it with its release.

use serde::{Deserialize, Serialize};

/// A stored phase log larger than this is damaged (or not ours): the pipeline never writes one
/// above its bound of 256 KiB of text, which JSON escaping can at most make six times larger.
pub const MAX_STORED_LOG_BYTES: u64 = 8 << 20;

/// One phase's kept log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseLog {
    /// The phase (`[a-z][a-z0-9_]*`).
    pub phase: String,
    /// The kept lines, oldest first. When lines were cut, the last one is the note that says so.
    pub lines: Vec<LogLine>,
    /// What was cut to keep the log within its bound; absent when nothing was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut: Option<LogCut>,
}

/// One line of a phase's log, as the console showed it: unescaped here, escaped when printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// When the host received it, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// `trace`, `debug`, `info`, `warn` or `error` (stdout is `info`, stderr `warn`).
    pub level: String,
    pub message: String,
}

/// The lines cut from the start of a phase's log so that its end could be kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogCut {
    /// How many lines were cut.
    pub lines: u64,
    /// Their message bytes.
    pub bytes: u64,
    /// The bound the kept log fits in, in bytes (message bytes plus a per-line cost).
    pub bound: u64,
    /// Why the bound is what it is, in words.
    pub why: String,
}

impl PhaseLog {
    /// The stored form: one JSON document.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a phase log serializes")
    }

    /// Parse a stored log; the error says what is wrong with it.
    pub fn from_json(bytes: &[u8]) -> Result<PhaseLog, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("not a stagecraft phase log: {e}"))
    }
}

/// Whether `phase` can name a stored log (the manifest's phase-name rule, which also makes it
/// a safe file name); anything else is refused before it becomes a file name or a row.
pub fn storable_phase_name(phase: &str) -> bool {
    crate::manifest::valid_phase_name(phase)
}

impl PhaseLog {
    /// Refuses a log whose phase name could not be stored ([`storable_phase_name`]): the one
    /// check both backends make before writing.
    pub fn check_storable(&self) -> anyhow::Result<()> {
        if storable_phase_name(&self.phase) {
            return Ok(());
        }
        Err(super::StateError::new(format!(
            "refusing to keep a log for phase {:?}: not a phase name",
            self.phase
        ))
        .into())
    }
}
