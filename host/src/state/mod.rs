//! Release state: the model, the one transactional API every mutation goes through, and its
//! backends. No code outside this module opens the state file.

mod components;
mod file;
mod heartbeat;
mod identity;
mod logs;
mod model;
mod ops;
mod plan;
mod postgres;
mod safe_files;
mod unique_keys;

pub use components::{
    is_component_digest, referenced_components, DamagedComponent, MAX_STORED_COMPONENT_BYTES,
};
pub use file::{parse_state, resolve_state_path, FileStore, DEFAULT_STATE_PATH, STATE_FILE_ENV};
pub use heartbeat::{lease_lost, LEASE_BOUND as PG_LEASE_BOUND};
pub use identity::{CiRun, Identity, CI_VARIABLES};
pub use logs::{storable_phase_name, LogCut, LogLine, PhaseLog, MAX_STORED_LOG_BYTES};
pub use model::*;
pub use ops::{EnvironmentSummary, IdsExhausted, KeptBecause, Retention, Unsealable};
pub use plan::{Plan, PlannedGrants, PlannedPhase};
pub use postgres::{
    is_postgres_url, latest_schema_version, redact_url, PgStore, DATABASE_URL_ENV, MIGRATIONS,
};

pub use crate::error::StateError;

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a commit waits for another process's commit (the file backend's commit lock) when
/// the command was given no `--lock-wait`. Commits take milliseconds; this only ends the wait
/// for one that never finishes (a stopped or hung process).
pub const DEFAULT_COMMIT_WAIT: Duration = Duration::from_secs(10);

/// Whether an environment's lease is held ([`StateStore::lease_status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseStatus {
    Free,
    /// Held; by whom, when the holder has recorded itself (it does right after locking).
    Held(Option<LeaseHolder>),
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
    /// Phase ends this holder could not record in the state (see [`Lease::leave_note`]), for
    /// the next holder's recovery to say what happened.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unrecorded: Vec<UnrecordedEnd>,
}

impl LeaseHolder {
    /// The current process.
    pub fn current() -> Self {
        let command = std::env::args().collect::<Vec<_>>().join(" ");
        LeaseHolder {
            pid: std::process::id(),
            host: host_name(),
            user: user_name(),
            command,
            since: Timestamp::now().as_str().to_string(),
            unrecorded: Vec::new(),
        }
    }
}

/// This machine's host name, as leases and releases record it.
pub(crate) fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// Who runs this process: `$USER`, else `$LOGNAME`, else `uid <n>`.
pub(crate) fn user_name() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid {}", rustix::process::getuid().as_raw()))
}

/// Shown escaped: a holder record is read back from a lease file or database row that another
/// process wrote, so its text could carry terminal controls or a forged line.
impl std::fmt::Display for LeaseHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::output::terminal::escape_controls as shown;
        write!(
            f,
            "pid {} on {} (user {}, command `{}`, since {})",
            self.pid,
            shown(&self.host),
            shown(&self.user),
            shown(&self.command),
            shown(&self.since)
        )
    }
}

/// A phase that ended but whose end could not be committed (a full disk, a lost connection):
/// what the lease holder leaves for the next holder, whose recovery then records what happened
/// instead of "the process running <phase> exited".
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UnrecordedEnd {
    pub release_id: String,
    pub phase: String,
    /// How the phase ended: `completed`, `skipped` or `failed`.
    pub status: PhaseStatus,
    /// Why its end could not be recorded, one line.
    pub error: String,
}

impl UnrecordedEnd {
    /// The error recovery records for the phase.
    pub fn recovery_message(&self) -> String {
        format!(
            "interrupted: {} {}, but the process could not record that ({}) and stopped",
            self.phase, self.status, self.error
        )
    }
}

impl std::fmt::Display for UnrecordedEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "phase {} of release {} {}, but recording that failed",
            self.phase, self.release_id, self.status
        )
    }
}

/// What keeps a lease held, and where its holder can leave notes for the next one.
pub trait LeaseGuard: Send {
    /// Leave `end` for the next holder of the lease. Backends that have nowhere to keep it
    /// (PostgreSQL, for now) drop it: recovery then says only that the process exited.
    fn leave_note(&self, _end: &UnrecordedEnd) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Nothing to hold: for stores whose leases need no resource (in-memory stores in tests).
impl LeaseGuard for () {}

/// An exclusive per-environment lease. Dropping it releases it; so does the holder's death.
pub struct Lease {
    env: String,
    guard: Box<dyn LeaseGuard>,
}

impl Lease {
    pub fn new(env: impl Into<String>, guard: Box<dyn LeaseGuard>) -> Self {
        Lease {
            env: env.into(),
            guard,
        }
    }

    pub fn environment(&self) -> &str {
        &self.env
    }

    /// Tell the next holder of this lease about a phase end that could not be committed (see
    /// [`UnrecordedEnd`]). Best effort by nature: the state could not be written either.
    pub fn leave_note(&self, end: &UnrecordedEnd) -> anyhow::Result<()> {
        self.guard.leave_note(end)
    }
}

/// The one transactional API over release state.
pub trait StateStore: Send + Sync {
    /// Where the state lives, for messages (`.stagecraft/releases.json`, `postgres://host/db`).
    fn location(&self) -> String;

    /// How messages name this store: `state file <path>`, `state database <url>`.
    fn describe(&self) -> String {
        format!("state {}", self.location())
    }

    /// A fresh, consistent snapshot; never a stale cache. A store that does not exist yet reads
    /// as an empty state and is not created.
    fn read(&self) -> anyhow::Result<State>;

    /// Lock, read fresh, apply `f`, validate, commit durably, unlock. All or nothing: if `f`
    /// returns an error, nothing is written and that error is returned unchanged. `f` must be a
    /// pure function of the state it is given, because a backend may call it again.
    fn transact_dyn(
        &self,
        f: &mut dyn FnMut(&mut State) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        self.transact_if_changed_dyn(&mut |state| f(state).map(|()| true))
    }

    /// A transaction on one environment: `f` sees only `env`'s releases that `window` names
    /// (plus the header: `last_release_id` for id allocation), may change them, remove them or
    /// add releases of `env`, and returns whether it changed anything. A release of another
    /// environment in what `f` leaves is refused and nothing is written. Release ids stay
    /// globally unique and increasing. Backends that can (PostgreSQL) read and write only those
    /// rows and lock only `env`, so transactions on different environments run in parallel and
    /// cost the same whatever the length of the history; the default runs it inside a
    /// whole-state transaction.
    fn transact_env_dyn(
        &self,
        env: &str,
        window: Window<'_>,
        f: &mut dyn FnMut(&mut State) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        self.transact_if_changed_dyn(&mut |state| state.scoped(env, window, &mut *f))
    }

    /// The transaction every other kind is built on: [`StateStore::transact_dyn`] for a change
    /// that may turn out to be none. `f` returns whether it changed anything, and when it did
    /// not nothing is written (no new serial).
    fn transact_if_changed_dyn(
        &self,
        f: &mut dyn FnMut(&mut State) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()>;

    /// Take `env`'s exclusive lease, waiting at most `wait`. On success, every release of `env`
    /// left unfinished (a phase `pending` or `running`) by a process that is gone has been
    /// finished in one transaction: the first unfinished phase `failed` ("interrupted"), the
    /// rest `skipped` (see [`State::recover_interrupted`]). On timeout: a [`StateError`] naming
    /// the holder.
    fn lease(&self, env: &str, wait: Duration) -> anyhow::Result<Lease> {
        self.lease_observed(env, wait, &Unobserved)
    }

    /// [`StateStore::lease`], telling `observer` when the lease turns out to be held by someone
    /// else and the wait begins (only with a `wait` above zero), and when the wait ends.
    fn lease_observed(
        &self,
        env: &str,
        wait: Duration,
        observer: &dyn LeaseWaitObserver,
    ) -> anyhow::Result<Lease>;

    /// Whether `env`'s lease is held right now, and by whom when the holder recorded itself.
    /// Reads only: creates nothing, takes nothing a deploy waits for.
    fn lease_status(&self, env: &str) -> anyhow::Result<LeaseStatus>;

    /// How long a commit may wait for another process's commit before it fails naming the
    /// holder (default [`DEFAULT_COMMIT_WAIT`]). Backends without such a lock ignore it.
    fn set_lock_wait(&self, _wait: Duration) {}

    /// Keep `log` as the log of its phase in `release`, replacing an earlier one: atomically
    /// (a reader finds the old log or the new one, never a part). The pipeline has bounded it.
    fn write_phase_log(&self, release: &ReleaseId, log: &PhaseLog) -> anyhow::Result<()>;

    /// The phase logs kept for `release`, in no particular order; none for a release that ran
    /// before logs were kept, or that does not exist. Reads only: creates nothing.
    fn phase_logs(&self, release: &ReleaseId) -> anyhow::Result<Vec<PhaseLog>>;

    /// Remove the logs of releases the history no longer holds (pruned, or replaced by
    /// `state migrate --replace`); returns how many releases' logs went. Logs of a release
    /// issued after the history was read (a deploy running meanwhile) are never touched.
    fn sweep_phase_logs(&self) -> anyhow::Result<usize>;

    /// Which of `digests` the component store does not hold (see components.rs). One the store
    /// holds is not removed by a sweep that began before this call returned unless that sweep
    /// also sees every release committed before this call began.
    fn missing_components(&self, digests: &[String]) -> anyhow::Result<Vec<String>>;

    /// Keep `bytes` as the component `digest` names (its sha256, checked): written whole or not
    /// at all, and once however often it is kept.
    fn put_component(&self, digest: &str, bytes: &[u8]) -> anyhow::Result<()>;

    /// The component `digest` names, checked against it; `None` when the store does not hold
    /// it. Reads only: creates nothing.
    fn component(&self, digest: &str) -> anyhow::Result<Option<Vec<u8>>>;

    /// Remove every component no release of the history names in its plan; returns how many
    /// went. Never one a release committed before the sweep names.
    fn sweep_components(&self) -> anyhow::Result<usize>;
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

    /// Typed [`StateStore::transact_env_dyn`] for a change that always changes something.
    fn transact_env<T>(
        &self,
        env: &str,
        window: Window<'_>,
        mut f: impl FnMut(&mut State) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        self.transact_env_if_changed(env, window, |state| Ok((f(state)?, true)))
    }

    /// Typed [`StateStore::transact_env_dyn`]: `f` returns its value and whether it changed
    /// the state.
    fn transact_env_if_changed<T>(
        &self,
        env: &str,
        window: Window<'_>,
        mut f: impl FnMut(&mut State) -> anyhow::Result<(T, bool)>,
    ) -> anyhow::Result<T> {
        let mut out = None;
        self.transact_env_dyn(env, window, &mut |state| {
            let (value, changed) = f(state)?;
            out = Some(value);
            Ok(changed)
        })?;
        Ok(out.expect("transact_env_dyn returned Ok without running the closure"))
    }

    /// Typed [`StateStore::transact_if_changed_dyn`]: `f` returns its value and whether it
    /// changed the state.
    fn transact_if_changed<T>(
        &self,
        mut f: impl FnMut(&mut State) -> anyhow::Result<(T, bool)>,
    ) -> anyhow::Result<T> {
        let mut out = None;
        self.transact_if_changed_dyn(&mut |state| {
            let (value, changed) = f(state)?;
            out = Some(value);
            Ok(changed)
        })?;
        Ok(out.expect("transact_if_changed_dyn returned Ok without running the closure"))
    }
}

impl<S: StateStore + ?Sized> StateStoreExt for S {}

/// Which of an environment's releases a scoped transaction ([`StateStore::transact_env_dyn`])
/// sees, besides those it adds.
#[derive(Debug, Clone, Copy)]
pub enum Window<'a> {
    /// The environment's current release, every release of it with a phase pending or running,
    /// and the releases named here (those of other environments are not loaded). Enough for a
    /// deploy, a rollback, recovery and the signal handler.
    Recent(&'a [ReleaseId]),
    /// Every release of the environment (retention).
    Whole,
}

/// The "busy" error every backend gives when `env`'s lease is held: who holds it, and what to do.
/// Without a wait it is the Go tool's message; after a wait (`--lock-wait`) that ran out it says
/// how long it waited instead of suggesting the flag that was already given.
pub fn busy_error(env: &str, holder: Option<LeaseHolder>, waited: Duration) -> anyhow::Error {
    let who = match holder {
        Some(h) => h.to_string(),
        None => "another process (it has not recorded its details yet)".to_string(),
    };
    let message = if waited.is_zero() {
        format!(
            "environment \"{env}\" is being deployed by {who}; wait for it, or pass \
             --lock-wait <duration> (e.g. --lock-wait 5m) to wait here"
        )
    } else {
        format!(
            "environment \"{env}\" is still being deployed by {who} after waiting {} for it; \
             try again when it finishes, or wait longer with a larger --lock-wait (e.g. \
             --lock-wait 5m)",
            crate::manifest::units::format_duration(waited)
        )
    };
    StateError::new(message).into()
}

/// Told about a wait for an environment's lease ([`StateStore::lease_observed`]), so a person
/// at a terminal sees who they are waiting for and how long is left, instead of silence.
pub trait LeaseWaitObserver {
    /// The lease is held by `holder` (`None`: it has not recorded itself yet) and this process
    /// waits for it `wait` in all, at most `left` from now. Called again when the holder changes.
    fn waiting(&self, env: &str, holder: Option<&LeaseHolder>, wait: Duration, left: Duration);
    /// The wait is over: the lease was taken, or the wait failed.
    fn wait_ended(&self);
}

/// A lease wait nobody watches ([`StateStore::lease`]).
pub struct Unobserved;

impl LeaseWaitObserver for Unobserved {
    fn waiting(&self, _: &str, _: Option<&LeaseHolder>, _: Duration, _: Duration) {}
    fn wait_ended(&self) {}
}

/// Calls [`LeaseWaitObserver::wait_ended`] when a wait that began is left, however it is left.
pub(crate) struct WaitEnd<'a> {
    observer: &'a dyn LeaseWaitObserver,
    wait: Duration,
    began: bool,
}

impl<'a> WaitEnd<'a> {
    /// A wait of `wait` in all, watched by `observer`.
    pub(crate) fn new(observer: &'a dyn LeaseWaitObserver, wait: Duration) -> Self {
        WaitEnd {
            observer,
            wait,
            began: false,
        }
    }

    /// Tell the observer who holds the lease (the first call begins the wait).
    pub(crate) fn waiting(&mut self, env: &str, holder: Option<&LeaseHolder>, left: Duration) {
        self.began = true;
        self.observer.waiting(env, holder, self.wait, left);
    }
}

impl Drop for WaitEnd<'_> {
    fn drop(&mut self) {
        if self.began {
            self.observer.wait_ended();
        }
    }
}

/// Where release state lives: a resolved choice of backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreTarget {
    /// The file backend at this path.
    File(PathBuf),
    /// PostgreSQL at `url`, which came from `source` (`--state-url`, `$VAR`), named in errors.
    Postgres { url: String, source: String },
}

impl StoreTarget {
    /// `--to`-style text: a postgres:// or postgresql:// URL, else a file path (relative paths
    /// against the working directory).
    pub fn parse(text: &str, source: &str) -> StoreTarget {
        if is_postgres_url(text) {
            StoreTarget::Postgres {
                url: text.to_string(),
                source: source.to_string(),
            }
        } else {
            StoreTarget::File(resolve_state_path(Some(Path::new(text)), Path::new(".")))
        }
    }

    /// Open the store. Creates nothing and connects nothing yet.
    pub fn open(&self) -> anyhow::Result<Box<dyn StateStore>> {
        Ok(match self {
            StoreTarget::File(path) => Box::new(FileStore::open(path.clone())?),
            StoreTarget::Postgres { url, source } => Box::new(PgStore::open(url, source)?),
        })
    }
}

/// What decides where state lives, as the CLI sees it.
#[derive(Debug, Clone)]
pub struct StoreSelection<'a> {
    /// `--state-url`.
    pub state_url: Option<&'a str>,
    /// `--state-file`.
    pub state_file: Option<&'a Path>,
    /// The manifest's `[state] url_env` when it says `backend = "postgres"`.
    pub manifest_url_env: Option<&'a str>,
    /// The project root (the manifest's directory, or the working directory).
    pub project_root: &'a Path,
}

/// The one precedence rule: `--state-url` beats `--state-file`, which beats the manifest's
/// `backend = "postgres"` (URL from the variable it names, never from the manifest), which
/// beats the file backend at `STAGECRAFT_STATE_FILE` or `.stagecraft/releases.json`.
pub fn resolve_target(sel: &StoreSelection<'_>) -> anyhow::Result<StoreTarget> {
    if let Some(url) = sel.state_url {
        if !is_postgres_url(url) {
            return Err(crate::error::input_error(format!(
                "--state-url {} is not a PostgreSQL URL; it must start with postgres:// or \
                 postgresql:// (use --state-file for a file)",
                redact_url(url)
            )));
        }
        return Ok(StoreTarget::Postgres {
            url: url.to_string(),
            source: "--state-url".to_string(),
        });
    }
    if let Some(path) = sel.state_file {
        return Ok(StoreTarget::File(resolve_state_path(
            Some(path),
            sel.project_root,
        )));
    }
    if let Some(var) = sel.manifest_url_env {
        return match std::env::var(var) {
            Ok(url) if !url.trim().is_empty() => Ok(StoreTarget::Postgres {
                url: url.trim().to_string(),
                source: format!("${var}"),
            }),
            _ => Err(crate::error::input_error(format!(
                "the manifest selects the postgres state backend, but the environment \
                 variable {var} is not set; export {var}=postgres://user@host/database (the \
                 URL is never read from the manifest), or pass --state-url"
            ))),
        };
    }
    Ok(StoreTarget::File(resolve_state_path(
        None,
        sel.project_root,
    )))
}

/// The store for a selection (see [`resolve_target`]). Opening creates nothing.
pub fn open_store(sel: &StoreSelection<'_>) -> anyhow::Result<Box<dyn StateStore>> {
    resolve_target(sel)?.open()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{exit_code_for, ExitCode};

    fn selection<'a>(
        url: Option<&'a str>,
        file: Option<&'a Path>,
        url_env: Option<&'a str>,
    ) -> StoreSelection<'a> {
        StoreSelection {
            state_url: url,
            state_file: file,
            manifest_url_env: url_env,
            project_root: Path::new("/proj"),
        }
    }

    const SET: &str = "STAGECRAFT_UNIT_TEST_URL_SET";
    const UNSET: &str = "STAGECRAFT_UNIT_TEST_URL_UNSET";

    #[test]
    fn the_flag_url_beats_the_file_flag_beats_the_manifest_beats_the_default() {
        std::env::set_var(SET, "postgres://from-env/db");
        let url = "postgres://u:pw@flag/db";
        let file = Path::new("/elsewhere/s.json");
        assert_eq!(
            resolve_target(&selection(Some(url), Some(file), Some(SET))).unwrap(),
            StoreTarget::Postgres {
                url: url.into(),
                source: "--state-url".into()
            }
        );
        assert_eq!(
            resolve_target(&selection(None, Some(file), Some(SET))).unwrap(),
            StoreTarget::File(file.to_path_buf())
        );
        assert_eq!(
            resolve_target(&selection(None, None, Some(SET))).unwrap(),
            StoreTarget::Postgres {
                url: "postgres://from-env/db".into(),
                source: format!("${SET}")
            }
        );
        if std::env::var_os(STATE_FILE_ENV).is_none() {
            assert_eq!(
                resolve_target(&selection(None, None, None)).unwrap(),
                StoreTarget::File(PathBuf::from("/proj/.stagecraft/releases.json"))
            );
        }
    }

    #[test]
    fn an_unset_url_variable_is_bad_input_naming_it() {
        std::env::remove_var(UNSET);
        let err = resolve_target(&selection(None, None, Some(UNSET))).unwrap_err();
        assert!(
            err.to_string().contains(&format!(
                "the environment variable {UNSET} is not set; export {UNSET}=postgres://"
            )),
            "{err}"
        );
        assert_eq!(exit_code_for(&err), ExitCode::Invalid);
    }

    #[test]
    fn a_state_url_must_be_a_postgres_url_and_is_named_without_its_password() {
        let err =
            resolve_target(&selection(Some("mysql://u:hunter2@h/db"), None, None)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--state-url mysql://u@h/db is not a PostgreSQL URL; it must start with postgres:// \
             or postgresql:// (use --state-file for a file)"
        );
        assert_eq!(exit_code_for(&err), ExitCode::Invalid);
    }

    #[test]
    fn migrate_destinations_are_urls_or_paths() {
        assert!(matches!(
            StoreTarget::parse("postgresql://h/db", "--to"),
            StoreTarget::Postgres { .. }
        ));
        assert_eq!(
            StoreTarget::parse("/abs/r.json", "--to"),
            StoreTarget::File(PathBuf::from("/abs/r.json"))
        );
    }
}
