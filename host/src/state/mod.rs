//! Release state: the model, the one transactional API every mutation goes through, and its
//! backends. No code outside this module opens the state file.

mod file;
mod model;
mod ops;

pub use file::{
    check_environment_name, parse_state, resolve_state_path, FileStore, DEFAULT_STATE_PATH,
    STATE_FILE_ENV,
};
pub use model::*;

use std::path::{Path, PathBuf};
use std::time::Duration;

/// A state failure (exit 3): unreadable, corrupt or newer state, I/O, a lease not acquired in
/// time. The message says what happened, where, and what to do next.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StateError {
    pub message: String,
}

impl StateError {
    pub fn new(message: impl Into<String>) -> Self {
        StateError {
            message: message.into(),
        }
    }
}

/// Who holds an environment's lease, as recorded beside the lock and named in "busy" errors.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LeaseHolder {
    pub pid: u32,
    pub host: String,
    pub user: String,
    pub command: String,
    /// RFC 3339, UTC.
    pub since: String,
}

impl LeaseHolder {
    /// The current process.
    pub fn current() -> Self {
        let command = std::env::args().collect::<Vec<_>>().join(" ");
        LeaseHolder {
            pid: std::process::id(),
            host: rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned(),
            user: std::env::var("USER")
                .or_else(|_| std::env::var("LOGNAME"))
                .unwrap_or_else(|_| format!("uid {}", rustix::process::getuid().as_raw())),
            command,
            since: Timestamp::now().as_str().to_string(),
        }
    }
}

impl std::fmt::Display for LeaseHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} on {} (user {}, command `{}`, since {})",
            self.pid, self.host, self.user, self.command, self.since
        )
    }
}

/// An exclusive per-environment lease. Dropping it releases it; so does the holder's death.
pub struct Lease {
    env: String,
    _guard: Box<dyn Send>,
}

impl Lease {
    pub fn new(env: impl Into<String>, guard: Box<dyn Send>) -> Self {
        Lease {
            env: env.into(),
            _guard: guard,
        }
    }

    pub fn environment(&self) -> &str {
        &self.env
    }
}

/// The one transactional API over release state.
pub trait StateStore: Send + Sync {
    /// Where the state lives, for messages (`.stagecraft/releases.json`, `postgres://host/db`).
    fn location(&self) -> String;

    /// A fresh, consistent snapshot; never a stale cache. A store that does not exist yet reads
    /// as an empty state and is not created.
    fn read(&self) -> anyhow::Result<State>;

    /// Lock, read fresh, apply `f`, validate, commit durably, unlock. All or nothing: if `f`
    /// returns an error, nothing is written and that error is returned unchanged. `f` must be a
    /// pure function of the state it is given, because a backend may call it again.
    fn transact_dyn(
        &self,
        f: &mut dyn FnMut(&mut State) -> anyhow::Result<()>,
    ) -> anyhow::Result<()>;

    /// Take `env`'s exclusive lease, waiting at most `wait`. On success, releases of `env` left
    /// `running` by a dead process have been marked failed ("interrupted") in one transaction.
    /// On timeout: a [`StateError`] naming the holder.
    fn lease(&self, env: &str, wait: Duration) -> anyhow::Result<Lease>;
}

/// Typed convenience over [`StateStore::transact_dyn`].
pub trait StateStoreExt: StateStore {
    fn transact<T>(&self, mut f: impl FnMut(&mut State) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let mut out = None;
        self.transact_dyn(&mut |state| {
            out = Some(f(state)?);
            Ok(())
        })?;
        Ok(out.expect("transact_dyn returned Ok without running the closure"))
    }
}

impl<S: StateStore + ?Sized> StateStoreExt for S {}

/// The store the CLI works with: the file backend at the path chosen by `--state-file`,
/// `STAGECRAFT_STATE_FILE` or the project's `.stagecraft/releases.json` (see
/// [`resolve_state_path`]). Opening creates nothing.
pub fn open_store(flag: Option<&Path>, project_root: &Path) -> anyhow::Result<Box<dyn StateStore>> {
    let path = resolve_state_path(flag, project_root);
    Ok(Box::new(FileStore::open(path)?))
}

/// How the CLI chose the store's location (for the file backend).
#[derive(Debug, Clone)]
pub struct StateLocation {
    /// `--state-file`, if given.
    pub flag: Option<PathBuf>,
    /// The project root (the manifest's directory, or the working directory).
    pub project_root: PathBuf,
}
