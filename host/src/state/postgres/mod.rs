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
//! Schema, semantics and errors are specified in spec/state-postgres.md.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postgres::error::SqlState;
use postgres::{Client, Config, IsolationLevel, Transaction};
use serde_json::Value;

mod commit;
mod schema;

use commit::Conn;

pub use schema::{latest_schema_version, MIGRATIONS};

use super::file::check_environment_name;
use super::heartbeat::{self, Heartbeat, LEASE_BOUND, MARGIN};
use super::{
    busy_error, Lease, LeaseHolder, Release, ReleaseId, State, StateError, StateStore, Window,
    DEFAULT_COMMIT_WAIT, FORMAT_VERSION,
};
use crate::error::input_error;

/// The environment variable read for the URL when the manifest names no other.
pub const DATABASE_URL_ENV: &str = "STAGECRAFT_DATABASE_URL";

/// First key of every advisory lock this backend takes on a lease ("SCLE"); the second key is
/// the environment's `lock_key`.
const LEASE_LOCK_CLASS: i32 = 0x5343_4C45;
/// First key of the advisory lock that serializes migrations ("SCMG").
const MIGRATION_LOCK_CLASS: i32 = 0x5343_4D47;

/// Serialization failures and deadlocks are retried this many times before giving up.
const MAX_ATTEMPTS: u32 = 10;
/// How many times a scoped commit may lose the race for a release id before it gives up.
const MAX_ID_CONFLICTS: u32 = 1000;

/// Whether a `--state-url` / `state migrate --to` value names PostgreSQL rather than a file.
pub fn is_postgres_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// `url` without its password, for messages: the userinfo password and any `password=`
/// parameter (URL query or key=value form) are removed.
pub fn redact_url(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let (scheme, rest) = url.split_at(scheme_end + 3);
        let (authority_and_path, query) = match rest.find('?') {
            Some(q) => (&rest[..q], Some(&rest[q + 1..])),
            None => (rest, None),
        };
        let authority_end = authority_and_path
            .find('/')
            .unwrap_or(authority_and_path.len());
        let (authority, path) = authority_and_path.split_at(authority_end);
        let authority = match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                let user = userinfo.split(':').next().unwrap_or("");
                format!("{user}@{}", &authority[at + 1..])
            }
            None => authority.to_string(),
        };
        let mut out = format!("{scheme}{authority}{path}");
        if let Some(query) = query {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|p| !p.is_empty() && !p.starts_with("password="))
                .collect();
            if !kept.is_empty() {
                out.push('?');
                out.push_str(&kept.join("&"));
            }
        }
        out
    } else {
        url.split_whitespace()
            .filter(|p| !p.starts_with("password="))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// How much of the server's certificate to check, as libpq's `sslmode` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    /// `prefer`, `require` (without `sslrootcert`): encrypt, trust any certificate.
    Nothing,
    /// `verify-ca`, or `require` with `sslrootcert`: the chain must lead to a trusted root.
    Chain,
    /// `verify-full`: the chain, and the certificate must name the host.
    ChainAndHost,
}

/// The libpq TLS parameters the `postgres` crate does not know (`sslmode=verify-ca`,
/// `verify-full`, `sslrootcert`), taken out of the URL before it parses the rest. Its own
/// `sslmode` (`disable`, `prefer`, `require`) decides whether TLS is used at all.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TlsSettings {
    verify: Verify,
    root_cert: Option<String>,
}

impl TlsSettings {
    /// The settings, and the URL with `verify-*` turned into `require` and `sslrootcert`
    /// removed. A key=value conninfo string is treated the same way.
    fn take_from(url: &str) -> (TlsSettings, String) {
        let mut mode = String::from("prefer");
        let mut root_cert = None;
        let rewrite =
            |pair: &str, mode: &mut String, root: &mut Option<String>| -> Option<String> {
                if let Some(v) = pair.strip_prefix("sslrootcert=") {
                    *root = Some(percent_decode(v));
                    return None;
                }
                if let Some(v) = pair.strip_prefix("sslmode=") {
                    *mode = v.to_string();
                    if v == "verify-ca" || v == "verify-full" {
                        return Some("sslmode=require".to_string());
                    }
                }
                Some(pair.to_string())
            };
        let rewritten = if is_postgres_url(url) {
            match url.split_once('?') {
                Some((base, query)) => {
                    let kept: Vec<String> = query
                        .split('&')
                        .filter_map(|p| rewrite(p, &mut mode, &mut root_cert))
                        .collect();
                    if kept.is_empty() {
                        base.to_string()
                    } else {
                        format!("{base}?{}", kept.join("&"))
                    }
                }
                None => url.to_string(),
            }
        } else {
            url.split_whitespace()
                .filter_map(|p| rewrite(p, &mut mode, &mut root_cert))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let verify = match mode.as_str() {
            "verify-full" => Verify::ChainAndHost,
            "verify-ca" => Verify::Chain,
            "require" if root_cert.is_some() => Verify::Chain,
            _ => Verify::Nothing,
        };
        (TlsSettings { verify, root_cert }, rewritten)
    }

    fn connector(&self) -> Result<postgres_native_tls::MakeTlsConnector, String> {
        let mut builder = native_tls::TlsConnector::builder();
        match self.verify {
            Verify::Nothing => {
                builder
                    .danger_accept_invalid_certs(true)
                    .danger_accept_invalid_hostnames(true);
            }
            Verify::Chain => {
                builder.danger_accept_invalid_hostnames(true);
            }
            Verify::ChainAndHost => {}
        }
        if let Some(path) = &self.root_cert {
            let pem =
                std::fs::read(path).map_err(|e| format!("cannot read sslrootcert {path}: {e}"))?;
            let cert = native_tls::Certificate::from_pem(&pem)
                .map_err(|e| format!("sslrootcert {path} is not a PEM certificate: {e}"))?;
            // Like libpq: the given root is the only one trusted.
            builder
                .add_root_certificate(cert)
                .disable_built_in_roots(true);
        }
        let connector = builder.build().map_err(|e| e.to_string())?;
        Ok(postgres_native_tls::MakeTlsConnector::new(connector))
    }
}

/// `%XX` escapes decoded (a path given in a URL query).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

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

/// A lease taken through this store, checked before each of its commits.
#[derive(Clone)]
struct HeldLease {
    id: u64,
    env: String,
    lock_key: i32,
    backend_pid: i32,
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
    fn db_error(&self, doing: &str, e: &postgres::Error) -> anyhow::Error {
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
                with_causes(e)
            ),
            None => format!(
                "lost the connection to PostgreSQL at {loc} while {doing} ({}); nothing was \
                 committed; check that the server is running, then retry",
                with_causes(e)
            ),
        };
        StateError::new(message).into()
    }

    /// Bring the schema to [`latest_schema_version`], or with `create` false, say whether it
    /// exists at all (reads create nothing). A newer schema is refused.
    fn ensure_schema(&self, client: &mut Client, create: bool) -> anyhow::Result<bool> {
        if self.schema_ready.load(Ordering::Acquire) {
            return Ok(true);
        }
        let current =
            schema_version(client).map_err(|e| self.db_error("reading the schema version", &e))?;
        if current.is_some_and(|v| v > latest_schema_version()) {
            return Err(self.newer_schema_error(current.unwrap_or_default()));
        }
        if current == Some(latest_schema_version()) {
            self.schema_ready.store(true, Ordering::Release);
            return Ok(true);
        }
        if current.is_none() && !create {
            return Ok(false);
        }
        self.migrate(client)?;
        self.schema_ready.store(true, Ordering::Release);
        Ok(true)
    }

    fn newer_schema_error(&self, version: i32) -> anyhow::Error {
        StateError::new(format!(
            "the stagecraft schema in PostgreSQL at {} is version {version}, but this \
             stagecraft knows at most {}; upgrade stagecraft",
            self.location,
            latest_schema_version()
        ))
        .into()
    }

    /// Apply every missing migration in one transaction under the migration lock, so that
    /// processes starting at once apply each exactly once.
    fn migrate(&self, client: &mut Client) -> anyhow::Result<()> {
        let doing = "migrating the schema";
        let err = |e: postgres::Error| self.db_error(doing, &e);
        let mut tx = client.transaction().map_err(err)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, 0)",
            &[&MIGRATION_LOCK_CLASS],
        )
        .map_err(err)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS stagecraft_schema (
                 version integer PRIMARY KEY,
                 description text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .map_err(err)?;
        let current: i32 = tx
            .query_one(
                "SELECT coalesce(max(version), 0) FROM stagecraft_schema",
                &[],
            )
            .map_err(err)?
            .get(0);
        if current > latest_schema_version() {
            return Err(self.newer_schema_error(current));
        }
        for (version, description, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
            tx.batch_execute(sql).map_err(err)?;
            schema::after_migration(&mut tx, *version).map_err(err)?;
            tx.execute(
                "INSERT INTO stagecraft_schema (version, description) VALUES ($1, $2)",
                &[version, description],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// How long a commit waits for a lock (`--lock-wait`, else [`DEFAULT_COMMIT_WAIT`]).
    fn commit_wait(&self) -> Duration {
        *self.commit_wait.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The whole state as of `tx`'s snapshot; `for_update` locks the store row first. Its
    /// `serial` counts every commit: the store row's (whole-state commits) plus each
    /// environment's (scoped commits), whose sum is returned too.
    fn load(&self, tx: &mut Transaction<'_>, for_update: bool) -> Result<(State, i64), TxError> {
        let lock = if for_update { "FOR UPDATE" } else { "" };
        let mut state = self.load_header(tx, lock)?;
        let env_serials: i64 = tx
            .query_one(
                "SELECT coalesce(sum(serial), 0)::bigint FROM stagecraft_environments",
                &[],
            )
            .map_err(|e| TxError::Db("reading the environments", e))?
            .get(0);
        state.serial = state
            .serial
            .checked_add(u64::try_from(env_serials).unwrap_or(0))
            .ok_or_else(|| self.corrupt(format!("serial overflows with {env_serials}")))?;
        let rows = tx
            .query(
                "SELECT id, record FROM stagecraft_releases ORDER BY position",
                &[],
            )
            .map_err(|e| TxError::Db("reading the releases", e))?;
        state.releases = self.parse_releases(rows.iter().map(|r| (r.get(0), r.get(1))))?;
        // Scoped commits issue ids without moving the stored last_release_id (see commit.rs):
        // a recorded one reads as the highest issued. (None stays None, as a history copied
        // from an original file has it.)
        if state.last_release_id.is_some() {
            state.last_release_id = state.highest_release_id();
        }
        Ok((state, env_serials))
    }

    /// The store row as a state without releases, locked as `lock` says (`FOR UPDATE`,
    /// `FOR KEY SHARE` or nothing).
    fn load_header(&self, tx: &mut Transaction<'_>, lock: &str) -> Result<State, TxError> {
        let sql = format!(
            "SELECT format_version, lineage, serial, last_release_id, extra
             FROM stagecraft_store WHERE id = 1 {lock}"
        );
        let row = tx
            .query_one(&sql, &[])
            .map_err(|e| TxError::Db("reading the store row", e))?;
        self.parse_header(&row)
    }

    /// A store row (its first five columns) as a state without releases.
    fn parse_header(&self, row: &postgres::Row) -> Result<State, TxError> {
        let format_version: Option<i32> = row.get(0);
        let serial: i64 = row.get(2);
        let last_release_id: Option<String> = row.get(3);
        let extra: Value = row.get(4);
        let format_version = match format_version {
            None => None,
            Some(v) if v >= 0 && v as u32 <= FORMAT_VERSION => Some(v as u32),
            Some(v) => {
                return Err(TxError::Other(
                    StateError::new(format!(
                        "the state in PostgreSQL at {} has format_version {v}, but this \
                         stagecraft reads at most {FORMAT_VERSION}; upgrade stagecraft",
                        self.location
                    ))
                    .into(),
                ))
            }
        };
        let last_release_id = match last_release_id {
            Some(id) => Some(
                ReleaseId::parse(&id).map_err(|e| self.corrupt(format!("last_release_id: {e}")))?,
            ),
            None => None,
        };
        let extra = match extra {
            Value::Object(map) => map,
            other => return Err(self.corrupt(format!("extra is {other}, not an object"))),
        };
        Ok(State {
            format_version,
            lineage: row.get(1),
            serial: u64::try_from(serial).map_err(|_| self.corrupt(format!("serial {serial}")))?,
            last_release_id,
            releases: Vec::new(),
            extra,
        })
    }

    /// Release rows (id, record) as releases, in the order given.
    fn parse_releases(
        &self,
        rows: impl Iterator<Item = (String, Value)>,
    ) -> Result<Vec<Arc<Release>>, TxError> {
        rows.map(|(id, record)| {
            serde_json::from_value::<Release>(record)
                .map(Arc::new)
                .map_err(|e| self.corrupt(format!("release {id}: {e}")))
        })
        .collect()
    }

    /// A row that does not match the state format.
    fn corrupt(&self, what: String) -> TxError {
        TxError::Other(
            StateError::new(format!(
                "the stagecraft tables in PostgreSQL at {} do not match the state format: \
                 {what}; restore the database from a backup, or fix the row by hand",
                self.location
            ))
            .into(),
        )
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
        state.validate().map_err(|e| self.invalid_state(e))?;
        state.format_version = Some(FORMAT_VERSION);
        if state.lineage.is_none() {
            state.lineage = Some(uuid::Uuid::new_v4().to_string());
        }
        let too_large = |e: String| {
            TxError::Other(StateError::new(format!("state database {}: {e}", self.location)).into())
        };
        state.serial = state.next_serial().map_err(too_large)?;
        let serial = i64::try_from(state.serial).map_err(|_| {
            too_large(format!(
                "serial is {}, the largest number the database holds, so it cannot count \
                 another commit; nothing was written",
                state.serial - 1
            ))
        })?;
        commit::write_changes(&mut tx, prepared, &before, &state)
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

    /// Every lease taken through this store must still be held by its session: if its
    /// connection died (server restart, dropped network), another deploy may already hold the
    /// environment, so this commit must not happen.
    fn check_leases(&self, tx: &mut Transaction<'_>) -> Result<(), TxError> {
        let held: Vec<HeldLease> = self.leases.lock().expect("lease registry").clone();
        for lease in held {
            let still_held: bool = tx
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks
                         WHERE locktype = 'advisory' AND granted AND pid = $1
                           AND database = (SELECT oid FROM pg_database
                                           WHERE datname = current_database())
                           AND classid::bigint = $2 AND objid::bigint = $3 AND objsubid = 2)",
                    &[
                        &lease.backend_pid,
                        &i64::from(LEASE_LOCK_CLASS),
                        &i64::from(lease.lock_key),
                    ],
                )
                .map_err(|e| TxError::Db("checking the lease", e))?
                .get(0);
            if !still_held {
                return Err(TxError::Other(
                    StateError::new(format!(
                        "lost the lease on environment \"{}\": its connection to PostgreSQL at \
                         {} ended (the server restarted or the connection dropped); refusing \
                         to commit without it, nothing was written. The next deploy of \"{}\" \
                         marks this release interrupted",
                        lease.env, self.location, lease.env
                    ))
                    .into(),
                ));
            }
        }
        Ok(())
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
            TxError::Db(doing, e) => self.db_error(doing, &e),
            TxError::IdTaken => StateError::new(format!(
                "cannot commit to PostgreSQL at {}: {MAX_ID_CONFLICTS} attempts in a row lost \
                 the race for a release id to other commits; nothing was written, try again",
                self.location
            ))
            .into(),
        }
    }

    /// The recorded holder of `env`'s lease, if the session that recorded it still holds it.
    fn current_holder(&self, client: &mut Client, env: &str, lock_key: i32) -> Option<LeaseHolder> {
        let row = client
            .query_opt(
                "SELECT e.holder FROM stagecraft_environments e
                 WHERE e.name = $1 AND EXISTS (
                     SELECT 1 FROM pg_locks l
                     WHERE l.locktype = 'advisory' AND l.granted AND l.pid = e.holder_backend_pid
                       AND l.database = (SELECT oid FROM pg_database
                                         WHERE datname = current_database())
                       AND l.classid::bigint = $2 AND l.objid::bigint = $3 AND l.objsubid = 2)",
                &[&env, &i64::from(LEASE_LOCK_CLASS), &i64::from(lock_key)],
            )
            .ok()??;
        let holder: Option<Value> = row.get(0);
        serde_json::from_value(holder?).ok()
    }

    /// Just after taking `env`'s advisory lock: if the previous holder's heartbeat is recent (it
    /// lost its session, but its process may still be running its phase), wait until it must
    /// have stopped, on the database's clock (see heartbeat.rs), unless that process is visibly
    /// gone (same host, pid not running). A holder that let go cleanly left no heartbeat.
    fn wait_out_previous_holder(&self, client: &mut Client, env: &str) -> anyhow::Result<()> {
        let bound = (LEASE_BOUND + MARGIN).as_secs_f64();
        let err = |e: postgres::Error| self.db_error("reading the previous lease holder", &e);
        let mut said = false;
        loop {
            let row = client
                .query_one(
                    "SELECT holder, extract(epoch FROM
                         (heartbeat_at + make_interval(secs => $2) - clock_timestamp()))::float8
                     FROM stagecraft_environments WHERE name = $1",
                    &[&env, &bound],
                )
                .map_err(err)?;
            let holder: Option<LeaseHolder> = row
                .get::<_, Option<Value>>(0)
                .and_then(|h| serde_json::from_value(h).ok());
            let left: Option<f64> = row.get(1);
            let Some(left) = left.filter(|l| *l > 0.0) else {
                return Ok(());
            };
            let here = LeaseHolder::current().host;
            if let Some(h) = &holder {
                if h.host == here && !heartbeat::running_here(h.pid) {
                    return Ok(());
                }
            }
            if !said {
                let who =
                    holder.map_or_else(|| "its previous holder".to_string(), |h| h.to_string());
                eprintln!(
                    "The lease on environment \"{env}\" was lost by {who} moments ago; waiting \
                     up to {left:.0}s for it to stop its phase before recovering its release..."
                );
                said = true;
            }
            std::thread::sleep(Duration::from_secs_f64(left.min(0.25)));
        }
    }

    /// Take the advisory lock on `client`'s session, waiting at most `wait`.
    fn acquire(
        &self,
        client: &mut Client,
        env: &str,
        lock_key: i32,
        wait: Duration,
    ) -> anyhow::Result<()> {
        let err = |e: postgres::Error| self.db_error("taking the lease", &e);
        let got: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock($1, $2)",
                &[&LEASE_LOCK_CLASS, &lock_key],
            )
            .map_err(err)?
            .get(0);
        if got {
            return Ok(());
        }
        if wait.is_zero() {
            return Err(busy_error(env, self.current_holder(client, env, lock_key)));
        }
        // Wait in the server's lock queue (woken the moment the holder lets go), bounded by
        // lock_timeout; 0 would mean "forever", hence at least 1 ms.
        let ms = wait.as_millis().clamp(1, i32::MAX as u128);
        client
            .batch_execute(&format!("SET lock_timeout = {ms}"))
            .map_err(err)?;
        let waited = client.execute(
            "SELECT pg_advisory_lock($1, $2)",
            &[&LEASE_LOCK_CLASS, &lock_key],
        );
        let _ = client.batch_execute("RESET lock_timeout");
        match waited {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                Err(busy_error(env, self.current_holder(client, env, lock_key)))
            }
            Err(e) => Err(err(e)),
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

/// The schema version recorded in the database, or `None` when no stagecraft schema exists.
fn schema_version(client: &mut Client) -> Result<Option<i32>, postgres::Error> {
    let exists: bool = client
        .query_one("SELECT to_regclass('stagecraft_schema') IS NOT NULL", &[])?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let version: Option<i32> = client
        .query_one("SELECT max(version) FROM stagecraft_schema", &[])?
        .get(0);
    Ok(Some(version.unwrap_or(0)))
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

    fn lease(&self, env: &str, wait: Duration) -> anyhow::Result<Lease> {
        check_environment_name(env)?;
        // A connection of its own: the advisory lock lives exactly as long as this session.
        let mut client = self.connect()?;
        self.ensure_schema(&mut client, true)?;
        let err = |e: postgres::Error| self.db_error("taking the lease", &e);
        // The server notices a vanished runner through keepalives on its side of the socket
        // too (ignored on Unix sockets, where the kernel tells it at once).
        client
            .batch_execute(
                "SET tcp_keepalives_idle = 30; SET tcp_keepalives_interval = 10; \
                 SET tcp_keepalives_count = 3",
            )
            .map_err(err)?;
        client
            .execute(
                "INSERT INTO stagecraft_environments (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
                &[&env],
            )
            .map_err(err)?;
        let lock_key: i32 = client
            .query_one(
                "SELECT lock_key FROM stagecraft_environments WHERE name = $1",
                &[&env],
            )
            .map_err(err)?
            .get(0);
        self.acquire(&mut client, env, lock_key, wait)?;
        self.wait_out_previous_holder(&mut client, env)?;
        let holder = serde_json::to_value(LeaseHolder::current()).expect("holder serializes");
        let backend_pid: i32 = client
            .query_one(
                "UPDATE stagecraft_environments
                 SET holder = $2, holder_backend_pid = pg_backend_pid(),
                     heartbeat_at = clock_timestamp()
                 WHERE name = $1 RETURNING holder_backend_pid",
                &[&env, &holder],
            )
            .map_err(err)?
            .get(0);
        let id = self.next_lease_id.fetch_add(1, Ordering::Relaxed);
        self.leases.lock().expect("lease registry").push(HeldLease {
            id,
            env: env.to_string(),
            lock_key,
            backend_pid,
        });
        let client = Arc::new(Mutex::new(client));
        let heartbeat = {
            let (client, env, location) = (client.clone(), env.to_string(), self.location.clone());
            let lost_env = env.clone();
            Heartbeat::start(
                move || {
                    let mut client = client.lock().unwrap_or_else(|p| p.into_inner());
                    match client.execute(
                        "UPDATE stagecraft_environments SET heartbeat_at = clock_timestamp()
                         WHERE name = $1 AND holder_backend_pid = pg_backend_pid()",
                        &[&env],
                    ) {
                        Ok(1) => Ok(()),
                        Ok(_) => Err("its session no longer holds the environment".to_string()),
                        Err(e) => Err(with_causes(&e)),
                    }
                },
                move |why| {
                    format!(
                        "lost the lease on environment \"{lost_env}\": its connection to \
                         PostgreSQL at {location} ended or stopped answering ({why}), so \
                         another deploy may take the environment. Stopped the running phase \
                         and every program it started, and exited; nothing was written after \
                         that. The next deploy of \"{lost_env}\" marks this release interrupted"
                    )
                },
            )
        };
        let guard = PgLeaseGuard {
            client: Some(client),
            heartbeat: Some(heartbeat),
            env: env.to_string(),
            lock_key,
            id,
            registry: self.leases.clone(),
        };
        // We hold the lease, so no live process can be running a release of `env`: anything
        // left `running` belongs to a process that died. (On error the guard lets go.)
        self.commit_env_with(env, Window::Recent(&[]), &mut |state| {
            Ok(!state.recover_interrupted(env).is_empty())
        })?;
        Ok(Lease::new(env, Box::new(guard)))
    }
}

/// Owns the lease's session. Dropping it clears the holder and unlocks; if the process dies
/// instead, the server ends the session and the lock with it.
struct PgLeaseGuard {
    client: Option<Arc<Mutex<Client>>>,
    /// Renews the lease until dropped (first, before the session lets go).
    heartbeat: Option<Heartbeat>,
    env: String,
    lock_key: i32,
    id: u64,
    registry: Arc<Mutex<Vec<HeldLease>>>,
}

impl super::LeaseGuard for PgLeaseGuard {}

impl Drop for PgLeaseGuard {
    fn drop(&mut self) {
        if let Ok(mut leases) = self.registry.lock() {
            leases.retain(|l| l.id != self.id);
        }
        drop(self.heartbeat.take());
        if let Some(client) = self.client.take() {
            let mut client = client.lock().unwrap_or_else(|p| p.into_inner());
            if !client.is_closed() {
                let _ = client.execute(
                    "UPDATE stagecraft_environments
                     SET holder = NULL, holder_backend_pid = NULL, heartbeat_at = NULL
                     WHERE name = $1 AND holder_backend_pid = pg_backend_pid()",
                    &[&self.env],
                );
                let _ = client.execute(
                    "SELECT pg_advisory_unlock($1, $2)",
                    &[&LEASE_LOCK_CLASS, &self.lock_key],
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_survive_redaction() {
        assert_eq!(
            redact_url("postgres://deploy:s3cret@db.example:5432/releases?sslmode=require"),
            "postgres://deploy@db.example:5432/releases?sslmode=require"
        );
        assert_eq!(
            redact_url("postgresql://u:p%40ss@h/db?password=x&application_name=a"),
            "postgresql://u@h/db?application_name=a"
        );
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
        assert_eq!(
            redact_url("host=/tmp user=u password=hunter2 dbname=d"),
            "host=/tmp user=u dbname=d"
        );
    }

    #[test]
    fn tls_parameters_the_client_library_does_not_know_are_taken_out() {
        let (tls, url) = TlsSettings::take_from(
            "postgres://u:p@h/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=3",
        );
        assert_eq!(url, "postgres://u:p@h/db?sslmode=require&connect_timeout=3");
        assert_eq!(tls.verify, Verify::ChainAndHost);
        assert_eq!(tls.root_cert.as_deref(), Some("/etc/ca.pem"));
        let (tls, url) = TlsSettings::take_from("postgres://h/db?sslmode=verify-ca");
        assert_eq!(
            (tls.verify, url.as_str()),
            (Verify::Chain, "postgres://h/db?sslmode=require")
        );
        let (tls, _) = TlsSettings::take_from("postgres://h/db?sslmode=require&sslrootcert=ca.pem");
        assert_eq!(
            tls.verify,
            Verify::Chain,
            "libpq: require with a root checks the chain"
        );
        let (tls, url) = TlsSettings::take_from("postgres://h/db?sslmode=require");
        assert_eq!(
            (tls.verify, url.as_str()),
            (Verify::Nothing, "postgres://h/db?sslmode=require")
        );
        let (tls, url) = TlsSettings::take_from("host=h sslmode=verify-full dbname=d");
        assert_eq!(
            (tls.verify, url.as_str()),
            (Verify::ChainAndHost, "host=h sslmode=require dbname=d")
        );
    }

    #[test]
    fn urls_are_told_from_paths() {
        assert!(is_postgres_url("postgres://h/db"));
        assert!(is_postgres_url("postgresql://h/db"));
        assert!(!is_postgres_url("state/releases.json"));
        assert!(!is_postgres_url("postgres.json"));
    }

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
