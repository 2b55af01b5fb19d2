//! Writing: the transaction preamble both commit kinds share, the commit scoped to one
//! environment, and the row writes.
//!
//! A scoped commit (`transact_env`) locks only its environment and reads and writes only the
//! rows it needs, so its cost does not grow with the history and commits on different
//! environments run in parallel:
//!
//! 1. the store row `FOR KEY SHARE`: only a whole-state commit (`FOR UPDATE`) waits for it, or
//!    makes it wait;
//! 2. the environment's row, created if needed, its `serial` counted up (this locks it: scoped
//!    commits of one environment take turns);
//! 3. the window's releases through indexes: the newest by id, the unfinished ones (a partial
//!    index), and those named;
//! 4. the closure, which allocates ids after the highest of `last_release_id` and every
//!    release's id (an index lookup), and after its environment's newest;
//! 5. each new id claimed with a transaction-scoped advisory lock, without waiting: a commit
//!    that finds its id claimed by another in flight (two environments in the same millisecond,
//!    or ids that ran ahead of the clock), or already committed (the primary key), runs again
//!    at once, allocating after it. Ids stay unique, and increase within every environment;
//!    then one insert or update per release it added or changed, one delete for those it
//!    removed. The store row is never written, so commits on different environments never
//!    wait for each other;
//! 6. the leases this store holds are checked, and the transaction commits.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::{Client, Statement, Transaction};

use super::{PgStore, TxError};
use crate::state::{Release, ReleaseId, State, StateError, Window, FORMAT_VERSION};

/// The advisory lock class (`pg_try_advisory_xact_lock(class, hashtext(id))`) that claims a
/// new release id for the transaction inserting it ("SCID").
const RELEASE_ID_LOCK_CLASS: i32 = 0x5343_4944;

/// A pooled connection, with the statements prepared on it (a commit runs the same few
/// statements every time: prepared once, each is one round trip and no planning after) and the
/// `lock_timeout` it was given.
pub(super) struct Conn {
    pub(super) client: Client,
    prepared: Prepared,
    lock_timeout: Option<Duration>,
}

impl Conn {
    pub(super) fn new(client: Client) -> Conn {
        Conn {
            client,
            prepared: Prepared(HashMap::new()),
            lock_timeout: None,
        }
    }
}

/// Statements prepared on one connection, by their text.
pub(super) struct Prepared(HashMap<&'static str, Statement>);

impl Prepared {
    /// `sql` prepared on `tx`'s connection (once; it outlives the transaction).
    fn get(
        &mut self,
        tx: &mut Transaction<'_>,
        sql: &'static str,
    ) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.0.get(sql) {
            return Ok(statement.clone());
        }
        let statement = tx.prepare(sql)?;
        self.0.insert(sql, statement.clone());
        Ok(statement)
    }
}

impl PgStore {
    /// A transaction whose lock waits end after the commit wait (`--lock-wait`).
    pub(super) fn begin<'c>(
        &self,
        conn: &'c mut Conn,
    ) -> Result<(Transaction<'c>, &'c mut Prepared), TxError> {
        // Set on the pooled connection whenever it changes: it only runs commits and reads.
        let wait = self.commit_wait();
        if conn.lock_timeout != Some(wait) {
            conn.client
                .batch_execute(&format!(
                    "SET lock_timeout = {}",
                    wait.as_millis().clamp(1, i32::MAX as u128)
                ))
                .map_err(|e| TxError::Db("starting a transaction", e))?;
            conn.lock_timeout = Some(wait);
        }
        let tx = conn
            .client
            .transaction()
            .map_err(|e| TxError::Db("starting a transaction", e))?;
        Ok((tx, &mut conn.prepared))
    }

    /// A state that breaks an invariant (`State::validate`'s reason) as the commit's error.
    pub(super) fn invalid_state(&self, why: String) -> TxError {
        TxError::Other(
            StateError::new(format!(
                "refusing to commit an invalid state to {}: {why}; nothing was written",
                self.location
            ))
            .into(),
        )
    }

    /// `err` as the commit's error: a lock not had within the commit wait names what was
    /// locked and what to do; anything else is unchanged.
    pub(super) fn lock_waited(&self, err: TxError, what: &str) -> TxError {
        match err {
            TxError::Db(_, e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => TxError::Other(
                StateError::new(format!(
                    "cannot commit to PostgreSQL at {}: another transaction held {what} for \
                         more than {}s. A commit takes milliseconds, so that transaction is \
                         probably stuck (a stopped process, an open session): find it in \
                         pg_stat_activity and end it, or wait longer with --lock-wait \
                         <seconds>; nothing was written",
                    self.location,
                    self.commit_wait().as_secs_f64()
                ))
                .into(),
            ),
            other => other,
        }
    }

    /// Lock `env`, read its `window`, apply `f`, and commit what it changed (see the module
    /// documentation); retried like every commit.
    pub(super) fn commit_env_with(
        &self,
        env: &str,
        window: Window<'_>,
        f: &mut dyn FnMut(&mut State) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        // The highest id this commit found taken by another: the next attempt allocates after.
        let mut taken = None;
        self.retrying(&mut |client| self.try_commit_env(client, env, window, &mut taken, f))
    }

    fn try_commit_env(
        &self,
        conn: &mut Conn,
        env: &str,
        window: Window<'_>,
        taken: &mut Option<ReleaseId>,
        f: &mut dyn FnMut(&mut State) -> anyhow::Result<bool>,
    ) -> Result<(), TxError> {
        let (mut tx, prepared) = self.begin(conn)?;
        // The store row, and the highest id issued in any environment (an index lookup):
        // allocation follows it. Scoped commits do not move last_release_id; the highest
        // release always stays (retention keeps every environment's current release).
        let header = prepared
            .get(
                &mut tx,
                "SELECT format_version, lineage, serial, last_release_id, extra,
                        (SELECT max(id COLLATE \"C\") FROM stagecraft_releases)
                 FROM stagecraft_store WHERE id = 1 FOR KEY SHARE",
            )
            .and_then(|statement| tx.query_one(&statement, &[]))
            .map_err(|e| {
                self.lock_waited(
                    TxError::Db("reading the store row", e),
                    "the store row (stagecraft_store)",
                )
            })?;
        let mut before = self.parse_header(&header)?;
        let highest: Option<String> = header.get(5);
        if let Some(highest) = highest {
            let highest =
                ReleaseId::parse(&highest).map_err(|e| self.corrupt(format!("release id: {e}")))?;
            before.last_release_id = before.last_release_id.max(Some(highest));
        }
        before.last_release_id = before.last_release_id.max(taken.clone());
        prepared
            .get(
                &mut tx,
                "INSERT INTO stagecraft_environments (name, serial) VALUES ($1, 1)
                 ON CONFLICT (name) DO UPDATE SET serial = stagecraft_environments.serial + 1",
            )
            .and_then(|statement| tx.execute(&statement, &[&env]))
            .map_err(|e| {
                self.lock_waited(
                    TxError::Db("locking the environment", e),
                    &format!("environment \"{env}\" (its row in stagecraft_environments)"),
                )
            })?;
        before.releases = self.load_window(&mut tx, prepared, env, window)?;
        let mut after = before.clone();
        if !f(&mut after).map_err(TxError::Closure)? {
            return Ok(()); // Dropping `tx` rolls back; nothing was written.
        }
        // The same checks as a whole-state commit, on what this one can see. An id that
        // another environment holds cannot get this far: the insert below fails on it.
        after
            .check_window(env, &before)
            .map_err(|e| TxError::Other(e.into()))?;
        after.validate().map_err(|e| self.invalid_state(e))?;
        // A new id another commit in flight also picked (ids that ran ahead of the clock, or
        // the same millisecond) is claimed with a transaction-scoped advisory lock, without
        // waiting: whoever does not get it runs again at once, after it.
        let new_ids: Vec<&ReleaseId> = after
            .releases
            .iter()
            .map(|r| &r.id)
            .filter(|id| !before.releases.iter().any(|r| r.id == **id))
            .collect();
        for id in new_ids {
            let claimed: bool = prepared
                .get(
                    &mut tx,
                    "SELECT pg_try_advisory_xact_lock($1, hashtext($2))",
                )
                .and_then(|statement| {
                    tx.query_one(&statement, &[&RELEASE_ID_LOCK_CLASS, &id.as_str()])
                })
                .map_err(|e| TxError::Db("allocating a release id", e))?
                .get(0);
            if !claimed {
                *taken = taken.clone().max(Some(id.clone()));
                return Err(TxError::IdTaken);
            }
        }
        write_changes(&mut tx, prepared, &before, &after).map_err(|e| {
            if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                // Committed by another environment since this attempt read the highest id.
                *taken = taken.clone().max(after.last_release_id.clone());
                TxError::IdTaken
            } else {
                TxError::Db("writing releases", e)
            }
        })?;
        if before.format_version != Some(FORMAT_VERSION) || before.lineage.is_none() {
            // The first commit to a new database.
            tx.execute(
                "UPDATE stagecraft_store
                 SET format_version = $1, lineage = coalesce(lineage, $2) WHERE id = 1",
                &[&(FORMAT_VERSION as i32), &uuid::Uuid::new_v4().to_string()],
            )
            .map_err(|e| TxError::Db("writing the store row", e))?;
        }
        self.check_leases(&mut tx)?;
        tx.commit().map_err(|e| TxError::Db("committing", e))
    }

    /// `env`'s releases that `window` names, in history order.
    fn load_window(
        &self,
        tx: &mut Transaction<'_>,
        prepared: &mut Prepared,
        env: &str,
        window: Window<'_>,
    ) -> Result<Vec<Arc<Release>>, TxError> {
        let rows = match window {
            Window::Whole => prepared
                .get(
                    tx,
                    "SELECT id, record, position FROM stagecraft_releases
                     WHERE environment = $1 ORDER BY position",
                )
                .and_then(|statement| tx.query(&statement, &[&env])),
            Window::Recent(ids) => {
                let ids: Vec<&str> = ids.iter().map(|id| id.as_str()).collect();
                prepared
                    .get(
                        tx,
                        "SELECT DISTINCT ON (position) id, record, position FROM (
                         (SELECT id, record, position FROM stagecraft_releases
                          WHERE environment = $1 ORDER BY id COLLATE \"C\" DESC LIMIT 1)
                         UNION ALL
                         SELECT id, record, position FROM stagecraft_releases
                         WHERE environment = $1 AND unfinished
                         UNION ALL
                         SELECT id, record, position FROM stagecraft_releases
                         WHERE environment = $1 AND id = ANY($2)
                     ) AS window_rows ORDER BY position",
                    )
                    .and_then(|statement| tx.query(&statement, &[&env, &ids]))
            }
        }
        .map_err(|e| TxError::Db("reading the releases", e))?;
        self.parse_releases(rows.iter().map(|r| (r.get(0), r.get(1))))
    }
}

/// Write the difference between `before` and `after` (a whole state, or one environment's
/// window): deleted releases go, changed ones are rewritten in place, new ones are inserted
/// after every existing one (their position from a sequence, so that commits on different
/// environments never compete for one). Appending a release writes one row. A reordered
/// whole state is written in its new order.
pub(super) fn write_changes(
    tx: &mut Transaction<'_>,
    prepared: &mut Prepared,
    before: &State,
    after: &State,
) -> Result<(), postgres::Error> {
    let old: HashMap<&str, &Arc<Release>> =
        before.releases.iter().map(|r| (r.id.as_str(), r)).collect();
    let kept: HashSet<&str> = after.releases.iter().map(|r| r.id.as_str()).collect();
    let gone: Vec<&str> = old
        .keys()
        .copied()
        .filter(|id| !kept.contains(id))
        .collect();
    if !gone.is_empty() {
        let delete = prepared.get(tx, "DELETE FROM stagecraft_releases WHERE id = ANY($1)")?;
        tx.execute(&delete, &[&gone])?;
    }
    // A whole-state transaction may reorder the history (no operation does, but the file keeps
    // any order, so this backend does too): then every release takes a new position, in order.
    let kept_before = before
        .releases
        .iter()
        .map(|r| r.id.as_str())
        .filter(|id| kept.contains(id));
    let kept_after = after
        .releases
        .iter()
        .map(|r| r.id.as_str())
        .filter(|id| old.contains_key(id));
    let reordered = !kept_before.eq(kept_after);
    for release in &after.releases {
        let previous = old.get(release.id.as_str());
        // Still the same shared release (see `State::releases`), or equal to it.
        let unchanged = previous.is_some_and(|p| Arc::ptr_eq(p, release) || ***p == **release);
        if reordered && previous.is_some() {
            let moved = prepared.get(
                tx,
                "UPDATE stagecraft_releases SET position = nextval('stagecraft_release_position')
                 WHERE id = $1",
            )?;
            tx.execute(&moved, &[&release.id.as_str()])?;
        }
        if unchanged {
            continue;
        }
        let record = serde_json::to_value(release).expect("a release serializes");
        let params: [&(dyn postgres::types::ToSql + Sync); 4] = [
            &release.id.as_str(),
            &release.environment,
            &record,
            &release.is_unfinished(),
        ];
        let sql = if previous.is_some() {
            "UPDATE stagecraft_releases
             SET environment = $2, record = $3, unfinished = $4 WHERE id = $1"
        } else {
            // Never an upsert: a new id that exists (it cannot, ids are allocated past every
            // one issued) must fail the commit, not overwrite another release.
            "INSERT INTO stagecraft_releases (id, environment, position, record, unfinished)
             VALUES ($1, $2, nextval('stagecraft_release_position'), $3, $4)"
        };
        let statement = prepared.get(tx, sql)?;
        tx.execute(&statement, &params)?;
    }
    Ok(())
}
