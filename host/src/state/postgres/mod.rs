//! The PostgreSQL backend: the same `StateStore` semantics as the file backend, for teams that
//! deploy from many machines against one history.
//!
//! - The schema is created and upgraded by versioned migrations ([`MIGRATIONS`]) on first use,
//!   under a transaction-scoped advisory lock, so processes starting at once cannot race.
//! - A transaction scoped to one environment (every deploy's, rollback's and recovery's) locks
//!   that environment's row and reads and writes only the releases it needs, through indexes
//!   (commit.rs): its cost does not grow with the history, and other environments commit in
//!   parallel. A whole-state transaction (`state migrate`) locks the one store row
//!   (`stagecraft_store`, `FOR UPDATE`), which waits for every other transaction.
//! - A lease is a session advisory lock held on a connection of its own, which the [`Lease`]
//!   guard owns: it ends with the guard or with the session, so a killed runner never leaves it
//!   behind. The holder is recorded in `stagecraft_environments` and named in "busy" errors.
//! - Before every commit, the leases this store holds are checked to still be held by their
//!   sessions; a deploy whose lease connection died stops instead of writing without it.
//! - A lease also has a heartbeat (heartbeat.rs): a holder that cannot renew it kills its
//!   phase's programs and exits, and a new holder waits out a recent heartbeat before it
//!   recovers, so a lost session never lets two deploys of one environment overlap.
//!
//! - Components releases ran live in `stagecraft_components` (components.rs), by sha256.
//! - Phase logs live in `stagecraft_phase_logs` (logs.rs), removed with their release by a
//!   foreign key.
//!
//! Schema, semantics and errors are specified in spec/state-postgres.md.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postgres::error::SqlState;
use postgres::{Client, Config, IsolationLevel};
use serde_json::Value;

mod commit;
mod components;
mod lease;
mod logs;
mod read;
mod schema;
mod url;

use commit::Conn;

pub use schema::{latest_schema_version, MIGRATIONS};
pub use url::{is_postgres_url, redact_url};

use lease::HeldLease;
use url::TlsSettings;

use super::check_environment_name;
use super::{
    Lease, State, StateError, StateStore, Unsealable, Window, DEFAULT_COMMIT_WAIT, FORMAT_VERSION,
};
use crate::error::input_error;

/// The environment variable read for the URL when the manifest names no other.
pub const DATABASE_URL_ENV: &str = "STAGECRAFT_DATABASE_URL";

/// Serialization failures and deadlocks are retried this many times before giving up.
const MAX_ATTEMPTS: u32 = 10;
/// How many times a scoped commit may lose the race for a release id before it gives up.
const MAX_ID_CONFLICTS: u32 = 1000;

/// Release state in a PostgreSQL database. See the module docs.
pub struct PgStore {
    config: Config,
    /// TLS as the URL's `sslmode` and `sslrootcert` ask (see [`TlsSettings`]); `None` when no
    /// connection can use it (Unix sockets only, or `sslmode=disable`).
    tls: Option<postgres_native_tls::MakeTlsConnector>,
    /// The URL without its password.
    location: String,
    /// Where the URL came from (`--state-url`, `$STAGECRAFT_DATABASE_URL`), for messages.
    source: String,
    /// Idle connections for reads and transactions (leases get connections of their own).
    pool: Mutex<Vec<Conn>>,
    schema_ready: AtomicBool,
    leases: Arc<Mutex<Vec<HeldLease>>>,
    next_lease_id: AtomicU64,
    /// How long a commit waits for the store row (another transaction's commit).
    commit_wait: Mutex<Duration>,
}

/// Why a transaction attempt failed.
enum TxError {
    /// The closure's own error: returned unchanged.
    Closure(anyhow::Error),
    /// A database error while doing the named step.
    Db(&'static str, postgres::Error),
    /// Anything else, already worded for people.
    Other(anyhow::Error),
    /// A scoped commit allocated a release id, but another commit recorded a higher one first:
    /// try again with the new highest.
    IdTaken,
}

impl PgStore {
    /// A store for the database at `url`, which came from `source` (named in errors). Connects
    /// nothing yet; a malformed URL is an input error.
    pub fn open(url: &str, source: &str) -> anyhow::Result<PgStore> {
        let location = redact_url(url);
        let (tls_settings, url) = TlsSettings::take_from(url);
        let url = url.as_str();
        let mut config = Config::from_str(url).map_err(|e| {
            input_error(format!(
                "invalid PostgreSQL URL {location} (from {source}): {}; expected \
                 postgres://user@host:port/database?option=value&...",
                with_causes(&e)
            ))
        })?;
        // Loading the system's trust store costs tens of milliseconds (OpenSSL parses every
        // root certificate), more than the rest of a connection: only when TLS can be used at
        // all, that is over TCP and without sslmode=disable.
        let tcp = config
            .get_hosts()
            .iter()
            .any(|host| matches!(host, postgres::config::Host::Tcp(_)));
        let tls = if tcp && config.get_ssl_mode() != postgres::config::SslMode::Disable {
            Some(tls_settings.connector().map_err(|why| {
                input_error(format!(
                    "cannot set up TLS for PostgreSQL at {location} (from {source}): {why}"
                ))
            })?)
        } else {
            None
        };
        // Defaults a long-running deploy needs, unless the URL sets its own: bounded connects,
        // and TCP keepalives so a vanished server (or network) is noticed in about a minute
        // instead of the kernel's two hours.
        if !url.contains("connect_timeout") {
            config.connect_timeout(Duration::from_secs(10));
        }
        if !url.contains("keepalives_idle") {
            config.keepalives_idle(Duration::from_secs(30));
        }
        if !url.contains("keepalives_interval") {
            config.keepalives_interval(Duration::from_secs(10));
        }
        if !url.contains("keepalives_retries") {
            config.keepalives_retries(3);
        }
        if config.get_application_name().is_none() {
            config.application_name("stagecraft");
        }
        Ok(PgStore {
            config,
            tls,
            location,
            source: source.to_string(),
            pool: Mutex::new(Vec::new()),
            schema_ready: AtomicBool::new(false),
            leases: Arc::new(Mutex::new(Vec::new())),
            next_lease_id: AtomicU64::new(0),
            commit_wait: Mutex::new(DEFAULT_COMMIT_WAIT),
        })
    }

    fn connect(&self) -> anyhow::Result<Client> {
        let connected = match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(postgres::NoTls),
        };
        connected.map_err(|e| {
            let why = match e.as_db_error() {
                Some(db) => match *db.code() {
                    SqlState::INVALID_PASSWORD | SqlState::INVALID_AUTHORIZATION_SPECIFICATION => {
                        format!(
                            "the server refused the login: {}; check the user name and \
                             password in the URL given by {}",
                            db.message(),
                            self.source
                        )
                    }
                    SqlState::INVALID_CATALOG_NAME => format!(
                        "{}; create the database (createdb) or fix the URL given by {}",
                        db.message(),
                        self.source
                    ),
                    _ => format!(
                        "{}; check the server and the URL given by {}",
                        db.message(),
                        self.source
                    ),
                },
                None => format!(
                    "{}; check that the server is running and reachable, and the URL given \
                     by {}",
                    with_causes(&e),
                    self.source
                ),
            };
            StateError::new(format!(
                "cannot connect to PostgreSQL at {}: {why}",
                self.location
            ))
            .into()
        })
    }

    /// An idle pooled connection (and `true`), or a new one.
    fn client(&self) -> anyhow::Result<(Conn, bool)> {
        let pooled = self.pool.lock().expect("pool lock").pop();
        match pooled {
            Some(c) if !c.client.is_closed() => Ok((c, true)),
            _ => Ok((Conn::new(self.connect()?), false)),
        }
    }

    fn give_back(&self, conn: Conn) {
        if !conn.client.is_closed() {
            self.pool.lock().expect("pool lock").push(conn);
        }
    }

    /// A database error worded for people: what failed, where, and what to do next.
    fn db_error(&self, doing: &str, e: postgres::Error) -> anyhow::Error {
        let loc = &self.location;
        let message = match e.as_db_error() {
            Some(db) => match *db.code() {
                SqlState::ADMIN_SHUTDOWN
                | SqlState::CRASH_SHUTDOWN
                | SqlState::CANNOT_CONNECT_NOW => format!(
                    "PostgreSQL at {loc} shut down or restarted while {doing} ({}); nothing \
                     was committed; retry when the server is back",
                    db.message()
                ),
                SqlState::INSUFFICIENT_PRIVILEGE => format!(
                    "PostgreSQL at {loc} refused {doing}: {}; the user in the URL given by {} \
                     needs to own the stagecraft tables (and may create tables on first use)",
                    db.message(),
                    self.source
                ),
                _ => format!(
                    "PostgreSQL at {loc} failed while {doing}: {}; nothing was committed",
                    db.message()
                ),
            },
            None if doing == "committing" => format!(
                "lost the connection to PostgreSQL at {loc} while committing ({}); the commit \
                 may or may not have been applied: check with `stagecraft releases list`",
                with_causes(&e)
            ),
            None => format!(
                "lost the connection to PostgreSQL at {loc} while {doing} ({}); nothing was \
                 committed; check that the server is running, then retry",
                with_causes(&e)
            ),
        };
        StateError::caused_by(message, e).into()
    }

    /// How long a commit waits for a lock (`--lock-wait`, else [`DEFAULT_COMMIT_WAIT`]).
    fn commit_wait(&self) -> Duration {
        *self.commit_wait.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One attempt: lock, read fresh, apply `f`, validate, write what changed, check the
    /// leases, commit.
    fn try_commit(
        &self,
        conn: &mut Conn,
        f: &mut dyn FnMut(&mut State) -> anyhow::Result<bool>,
    ) -> Result<(), TxError> {
        // Bounded like the file backend's commit lock: a transaction that holds the store row
        // and never ends (a stopped process) must not hang every deploy.
        let (mut tx, prepared) = self.begin(conn)?;
        let (before, env_serials) = self
            .load(&mut tx, true)
            .map_err(|e| self.lock_waited(e, "the store row (stagecraft_store)"))?;
        let mut state = before.clone();
        if !f(&mut state).map_err(TxError::Closure)? {
            return Ok(()); // Dropping `tx` rolls back; nothing was written.
        }
        let too_large = |e: String| {
            TxError::Other(StateError::new(format!("state database {}: {e}", self.location)).into())
        };
        state.seal_for_commit().map_err(|e| match e {
            Unsealable::Invalid(e) => self.invalid_state(e),
            Unsealable::SerialFull(e) => too_large(e),
        })?;
        let serial = i64::try_from(state.serial).map_err(|_| {
            too_large(format!(
                "serial is {}, the largest number the database holds, so it cannot count \
                 another commit; nothing was written",
                state.serial - 1
            ))
        })?;
        commit::write_changes(&mut tx, prepared, &before, &state, false)
            .map_err(|e| TxError::Db("writing releases", e))?;
        // The store row counts what the environments' serials do not (see `load`); a state
        // that sets a smaller serial (a migration's copy) takes it over whole.
        let serial = if serial >= env_serials {
            serial - env_serials
        } else {
            tx.execute(
                "UPDATE stagecraft_environments SET serial = 0 WHERE serial <> 0",
                &[],
            )
            .map_err(|e| TxError::Db("writing the environments", e))?;
            serial
        };
        tx.execute(
            "UPDATE stagecraft_store
             SET format_version = $1, lineage = $2, serial = $3, last_release_id = $4, extra = $5
             WHERE id = 1",
            &[
                &(FORMAT_VERSION as i32),
                &state.lineage,
                &serial,
                &state.last_release_id.as_ref().map(|id| id.as_str()),
                &Value::Object(state.extra.clone()),
            ],
        )
        .map_err(|e| TxError::Db("writing the store row", e))?;
        self.check_leases(&mut tx)?;
        tx.commit().map_err(|e| TxError::Db("committing", e))
    }

    /// Lock, read fresh, apply `f`, and commit if `f` says something changed; retried on
    /// serialization failures and deadlocks.
    fn commit_with(
        &self,
        f: &mut dyn FnMut(&mut State) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        self.retrying(&mut |client| self.try_commit(client, f))
    }

    /// Run `attempt` (one database transaction) on a pooled connection until it commits or
    /// fails for good: a serialization failure, a deadlock or an id allocated by another commit
    /// first is tried again, a pooled connection the server closed is replaced once.
    fn retrying(
        &self,
        attempt: &mut dyn FnMut(&mut Conn) -> Result<(), TxError>,
    ) -> anyhow::Result<()> {
        let (mut client, mut pooled) = self.client()?;
        self.ensure_schema(&mut client.client, true)?;
        let mut tries = 1;
        let mut conflicts = 0;
        loop {
            match attempt(&mut client) {
                Ok(()) => {
                    self.give_back(client);
                    return Ok(());
                }
                // An idle pooled connection the server closed (a restart, an idle timeout)
                // fails on first use, before anything could commit: retry once on a new one.
                Err(TxError::Db(doing, e))
                    if pooled && doing != "committing" && connection_gone(&e) =>
                {
                    client = Conn::new(self.connect()?);
                    pooled = false;
                }
                Err(TxError::Db(_, e))
                    if tries < MAX_ATTEMPTS
                        && matches!(
                            e.code(),
                            Some(&SqlState::T_R_SERIALIZATION_FAILURE)
                                | Some(&SqlState::T_R_DEADLOCK_DETECTED)
                        ) =>
                {
                    tries += 1;
                }
                // Another commit got its id in first: every such retry follows a commit that
                // made progress, so only a bound against bugs is needed.
                Err(TxError::IdTaken) if conflicts < MAX_ID_CONFLICTS => conflicts += 1,
                Err(e) => {
                    self.give_back(client);
                    return Err(self.tx_error(e));
                }
            }
        }
    }

    /// A failed transaction as the command's error.
    fn tx_error(&self, e: TxError) -> anyhow::Error {
        match e {
            TxError::Closure(e) | TxError::Other(e) => e,
            TxError::Db(doing, e) => self.db_error(doing, e),
            TxError::IdTaken => StateError::new(format!(
                "cannot commit to PostgreSQL at {}: {MAX_ID_CONFLICTS} attempts in a row lost \
                 the race for a release id to other commits; nothing was written, try again",
                self.location
            ))
            .into(),
        }
    }
}

/// Whether `e` means the connection itself is gone (rather than a statement failing on it).
fn connection_gone(e: &postgres::Error) -> bool {
    e.is_closed()
        || matches!(
            e.code(),
            Some(&SqlState::ADMIN_SHUTDOWN)
                | Some(&SqlState::CRASH_SHUTDOWN)
                | Some(&SqlState::IDLE_SESSION_TIMEOUT)
        )
        || (e.as_db_error().is_none() && std::error::Error::source(e).is_some())
}

/// An error and its causes on one line ("error connecting to server: Connection refused").
fn with_causes(e: &postgres::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

impl StateStore for PgStore {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn describe(&self) -> String {
        format!("state database {}", self.location)
    }

    fn set_lock_wait(&self, wait: Duration) {
        *self.commit_wait.lock().unwrap_or_else(|p| p.into_inner()) = wait; // see commit_wait
    }

    fn read(&self) -> anyhow::Result<State> {
        let (mut conn, pooled) = self.client()?;
        if !self.ensure_schema(&mut conn.client, false)? {
            self.give_back(conn);
            return Ok(State::default());
        }
        let read_once = |client: &mut Client| -> Result<State, TxError> {
            let mut tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .map_err(|e| TxError::Db("starting a read", e))?;
            let (state, _) = self.load(&mut tx, false)?;
            tx.commit()
                .map_err(|e| TxError::Db("finishing a read", e))?;
            Ok(state)
        };
        let mut result = read_once(&mut conn.client);
        if let Err(TxError::Db(_, e)) = &result {
            // As in commit_with: a pooled connection the server closed while idle.
            if pooled && connection_gone(e) {
                conn = Conn::new(self.connect()?);
                result = read_once(&mut conn.client);
            }
        }
        self.give_back(conn);
        result.map_err(|e| self.tx_error(e))
    }

    fn transact_if_changed_dyn(
        &self,
        f: &mut dyn FnMut(&mut State) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        self.commit_with(f)
    }

    fn transact_env_dyn(
        &self,
        env: &str,
        window: Window<'_>,
        f: &mut dyn FnMut(&mut State) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        check_environment_name(env)?;
        self.commit_env_with(env, window, f)
    }

    fn lease_observed(
        &self,
        env: &str,
        wait: Duration,
        observer: &dyn crate::state::LeaseWaitObserver,
    ) -> anyhow::Result<Lease> {
        self.take_lease(env, wait, observer)
    }

    fn lease_status(&self, env: &str) -> anyhow::Result<crate::state::LeaseStatus> {
        self.read_lease_status(env)
    }

    fn write_phase_log(
        &self,
        release: &super::ReleaseId,
        log: &super::PhaseLog,
    ) -> anyhow::Result<()> {
        self.write_log(release, log)
    }

    fn phase_logs(&self, release: &super::ReleaseId) -> anyhow::Result<Vec<super::PhaseLog>> {
        self.read_logs(release)
    }

    fn sweep_phase_logs(&self) -> anyhow::Result<usize> {
        self.sweep_logs()
    }

    fn missing_components(&self, digests: &[String]) -> anyhow::Result<Vec<String>> {
        self.missing(digests)
    }

    fn put_component(&self, digest: &str, bytes: &[u8]) -> anyhow::Result<()> {
        self.put(digest, bytes)
    }

    fn component(&self, digest: &str) -> anyhow::Result<Option<Vec<u8>>> {
        self.get(digest)
    }

    fn sweep_components(&self) -> anyhow::Result<usize> {
        self.sweep_unused()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.0, i as i32 + 1);
        }
        assert_eq!(latest_schema_version(), MIGRATIONS.len() as i32);
    }

    #[test]
    fn a_malformed_url_is_an_input_error_without_the_password() {
        let err = PgStore::open("postgres://u:topsecret@h:notaport/db", "--state-url")
            .err()
            .unwrap();
        let message = err.to_string();
        assert!(!message.contains("topsecret"), "{message}");
        assert!(message.contains("--state-url"), "{message}");
        assert_eq!(
            crate::error::exit_code_for(&err),
            crate::error::ExitCode::Invalid
        );
    }
}
