//! The error kinds a caller branches on, and the exit code each one maps to.
//!
//! Errors travel as `anyhow::Error` with context added at each boundary; the root cause is one
//! of these types when the exit code matters. Anything else is an internal error (exit 3).
//!
//! This module is at the bottom of the crate: it imports nothing from it, and every other
//! module may use it.

use std::fmt;

/// The documented exit codes of every command (spec/cli.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Ok = 0,
    /// Invalid input or configuration: bad flags, unknown environment, bad manifest, invalid
    /// rollback target.
    Invalid = 1,
    /// A phase failed: plugin error, trap, or a limit.
    PhaseFailed = 2,
    /// State or internal error: unreadable or corrupt state, lease wait exceeded, I/O.
    State = 3,
}

/// How a process stopped from outside `main` ends: see [`stop_process`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// With one of the documented codes.
    Code(ExitCode),
    /// As the signal would have ended it: 128 + its number (the shell's convention).
    Signal(i32),
}

/// End the process now, from a thread other than main's. Every exit code is otherwise decided
/// by `cli::main`, from the error a command returns; this is the one other way out, for the two
/// cases where waiting for main to return would let something run that must not:
///
/// - SIGINT/SIGTERM during a release, once the interruption is recorded
///   (`pipeline/interrupt.rs`): main may be inside a guest, a program's wait or a compile, and
///   the record says nothing more ran;
/// - a lost PostgreSQL lease (`state/heartbeat.rs`): another deploy may start at once, so nothing
///   of this one may run on.
pub fn stop_process(how: Stop) -> ! {
    let code = match how {
        Stop::Code(code) => code as i32,
        Stop::Signal(signal) => 128 + signal,
    };
    crate::output::progress::close_live_line();
    std::process::exit(code)
}

/// Invalid input or configuration (exit 1). The message is shown to the user as is.
#[derive(Debug)]
pub struct InputError(pub String);

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for InputError {}

/// Shorthand for returning an [`InputError`].
pub fn input_error(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(InputError(message.into()))
}

/// A phase failed (exit 2). The release record already says which and why.
#[derive(Debug)]
pub struct PhaseFailed {
    pub release_id: String,
    pub phase: String,
    pub reason: String,
}

impl fmt::Display for PhaseFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "release {} failed in phase {}: {}",
            self.release_id, self.phase, self.reason
        )
    }
}
impl std::error::Error for PhaseFailed {}

/// A failed phase and what stagecraft did about it (an automatic rollback, or why there was
/// none): exit 2 like [`PhaseFailed`], which it keeps as its source.
#[derive(Debug, thiserror::Error)]
#[error("{failed}; {then}")]
pub struct PhaseFailedThen {
    #[source]
    pub failed: PhaseFailed,
    pub then: String,
}

/// A state failure (exit 3): unreadable, corrupt or newer state, I/O, a lease not acquired in
/// time. The message says what happened, where, and what to do next; `source` keeps the
/// underlying I/O or database error, for callers that branch on it (a full disk, a lost
/// connection).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StateError {
    pub message: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl StateError {
    pub fn new(message: impl Into<String>) -> Self {
        StateError {
            message: message.into(),
            source: None,
        }
    }

    /// A state failure caused by `source`; the message quotes what a user needs of it
    /// ([`describe`] prints the message, not the source again).
    pub fn caused_by(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StateError {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
}

/// `err` and its causes, joined with ": " (as `{err:#}` does), except what a message already
/// says: a [`StateError`]'s message is whole (it quotes what a user needs of its source, in
/// its own words), so its source is not printed again, and no cause whose text what came
/// before already quotes is repeated.
pub fn describe(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let line = cause.to_string();
        if !line.is_empty() && !text.contains(&line) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&line);
        }
        if cause.is::<StateError>() {
            break;
        }
    }
    text
}

/// The innermost cause a person reads: a [`StateError`]'s message (whole, see [`describe`]),
/// else the root cause.
pub fn root_message(err: &anyhow::Error) -> String {
    err.chain()
        .find(|cause| cause.is::<StateError>())
        .unwrap_or_else(|| err.root_cause())
        .to_string()
}

/// The exit code for an error: the first typed cause in its chain decides.
pub fn exit_code_for(err: &anyhow::Error) -> ExitCode {
    for cause in err.chain() {
        if cause.is::<InputError>() || cause.is::<clap::Error>() {
            return ExitCode::Invalid;
        }
        if cause.is::<PhaseFailed>() {
            return ExitCode::PhaseFailed;
        }
        if cause.is::<StateError>() {
            return ExitCode::State;
        }
    }
    ExitCode::State
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_disk() -> std::io::Error {
        std::io::Error::from(std::io::ErrorKind::StorageFull)
    }

    #[test]
    fn a_state_error_keeps_its_source_and_is_printed_once() {
        let io = full_disk();
        let message = format!("cannot write state file x: {io}; nothing was committed");
        let err = anyhow::Error::new(StateError::caused_by(message.clone(), io))
            .context("deploy of prod");
        assert_eq!(describe(&err), format!("deploy of prod: {message}"));
        assert_eq!(root_message(&err), message);
        let kept = err
            .chain()
            .find_map(|c| c.downcast_ref::<std::io::Error>())
            .expect("the I/O error is kept");
        assert_eq!(kept.kind(), std::io::ErrorKind::StorageFull);
        assert_eq!(exit_code_for(&err), ExitCode::State);
    }

    #[test]
    fn other_causes_are_joined_unless_already_quoted() {
        let err = anyhow::Error::new(full_disk()).context("writing the report");
        assert_eq!(
            describe(&err),
            format!("writing the report: {}", full_disk())
        );
        let quoted = anyhow::Error::new(full_disk()).context(format!("saving: {}", full_disk()));
        assert_eq!(describe(&quoted), format!("saving: {}", full_disk()));
    }
}
