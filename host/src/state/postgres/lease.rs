//! Leases: a session advisory lock on a connection of the lease's own, the holder recorded in
//! `stagecraft_environments`, the heartbeat that renews it, and the check every commit makes
//! that the leases its store holds are still held (spec/state-postgres.md, "Leases").

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postgres::error::SqlState;
use postgres::{Client, GenericClient};
use serde_json::Value;

use super::{with_causes, PgStore, TxError};
use crate::state::check_environment_name;
use crate::state::heartbeat::{self, Heartbeat, LEASE_BOUND, MARGIN};
use crate::state::{busy_error, Lease, LeaseGuard, LeaseHolder, LeaseStatus, StateError, Window};

/// First key of every advisory lock this backend takes on a lease ("SCLE"); the second key is
/// the environment's `lock_key`.
const LEASE_LOCK_CLASS: i32 = 0x5343_4C45;

/// A lease taken through this store, checked before each of its commits.
#[derive(Clone)]
pub(super) struct HeldLease {
    id: u64,
    env: String,
    lock_key: i32,
    backend_pid: i32,
}

impl PgStore {
    /// Every lease taken through this store must still be held by its session: if its
    /// connection died (server restart, dropped network), another deploy may already hold the
    /// environment, so this commit must not happen.
    pub(super) fn check_leases(&self, tx: &mut impl GenericClient) -> Result<(), TxError> {
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

    /// [`StateStore::lease_status`]: held when a session holds `env`'s advisory lock (a
    /// look at `pg_locks`, which takes nothing). A database without the schema has no lease.
    pub(super) fn read_lease_status(&self, env: &str) -> anyhow::Result<LeaseStatus> {
        check_environment_name(env)?;
        let mut client = self.connect()?;
        if !self.ensure_schema(&mut client, false)? {
            return Ok(LeaseStatus::Free);
        }
        // One look at pg_locks: whether a session holds the lock, and the recorded holder when
        // that session is the one that recorded it (as `current_holder` reads it).
        let row = client
            .query_opt(
                "SELECT bool_or(l.pid IS NOT NULL),
                        (array_agg(e.holder) FILTER (WHERE l.pid = e.holder_backend_pid))[1]
                 FROM stagecraft_environments e
                 LEFT JOIN pg_locks l
                   ON l.locktype = 'advisory' AND l.granted
                  AND l.database = (SELECT oid FROM pg_database
                                    WHERE datname = current_database())
                  AND l.classid::bigint = $2 AND l.objid::bigint = e.lock_key
                  AND l.objsubid = 2
                 WHERE e.name = $1",
                &[&env, &i64::from(LEASE_LOCK_CLASS)],
            )
            .map_err(|e| self.db_error("reading the lease", e))?;
        let held: Option<bool> = row.as_ref().and_then(|r| r.get(0));
        Ok(match held {
            Some(true) => {
                let holder: Option<Value> = row.and_then(|r| r.get(1));
                LeaseStatus::Held(holder.and_then(|h| serde_json::from_value(h).ok()))
            }
            _ => LeaseStatus::Free,
        })
    }

    /// The recorded holder of `env`'s lease, if the session that recorded it still holds it.
    pub(super) fn current_holder(
        &self,
        client: &mut Client,
        env: &str,
        lock_key: i32,
    ) -> Option<LeaseHolder> {
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
    pub(super) fn wait_out_previous_holder(
        &self,
        client: &mut Client,
        env: &str,
    ) -> anyhow::Result<()> {
        let bound = (LEASE_BOUND + MARGIN).as_secs_f64();
        let err = |e: postgres::Error| self.db_error("reading the previous lease holder", e);
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
                crate::output::progress::eprint_above(&format!(
                    "The lease on environment \"{env}\" was lost by {who} moments ago; waiting \
                     up to {left:.0}s for it to stop its phase before recovering its release..."
                ));
                said = true;
            }
            std::thread::sleep(Duration::from_secs_f64(left.min(0.25)));
        }
    }

    /// Take the advisory lock on `client`'s session, waiting at most `wait`.
    pub(super) fn acquire(
        &self,
        client: &mut Client,
        env: &str,
        lock_key: i32,
        wait: Duration,
        observer: &dyn crate::state::LeaseWaitObserver,
    ) -> anyhow::Result<()> {
        let err = |e: postgres::Error| self.db_error("taking the lease", e);
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
        let holder = self.current_holder(client, env, lock_key);
        if wait.is_zero() {
            return Err(busy_error(env, holder, wait));
        }
        // The server's queue cannot say who holds the lock while this session waits in it, so
        // the observer hears of the holder seen now, once.
        let mut waiting = crate::state::WaitEnd::new(observer, wait);
        waiting.waiting(env, holder.as_ref(), wait);
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
            Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => Err(busy_error(
                env,
                self.current_holder(client, env, lock_key),
                wait,
            )),
            Err(e) => Err(err(e)),
        }
    }

    /// Take `env`'s lease (`StateStore::lease`): see the module documentation.
    pub(super) fn take_lease(
        &self,
        env: &str,
        wait: Duration,
        observer: &dyn crate::state::LeaseWaitObserver,
    ) -> anyhow::Result<Lease> {
        check_environment_name(env)?;
        // A connection of its own: the advisory lock lives exactly as long as this session.
        let mut client = self.connect()?;
        self.ensure_schema(&mut client, true)?;
        let err = |e: postgres::Error| self.db_error("taking the lease", e);
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
        self.acquire(&mut client, env, lock_key, wait, observer)?;
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

impl LeaseGuard for PgLeaseGuard {}

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
