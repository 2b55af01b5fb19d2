//! The error kinds a caller branches on, and the exit code each one maps to.
//!
//! Errors travel as `anyhow::Error` with context added at each boundary; the root cause is one
//! of these types when the exit code matters. Anything else is an internal error (exit 3).

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

/// The exit code for an error: the first typed cause in its chain decides.
pub fn exit_code_for(err: &anyhow::Error) -> ExitCode {
    for cause in err.chain() {
        if cause.is::<InputError>() || cause.is::<clap::Error>() {
            return ExitCode::Invalid;
        }
        if cause.is::<PhaseFailed>() {
            return ExitCode::PhaseFailed;
        }
        if cause.is::<crate::state::StateError>() {
            return ExitCode::State;
        }
    }
    ExitCode::State
}
