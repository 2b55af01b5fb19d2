//! Writing: the transaction preamble both commit kinds share, the commit scoped to one
//! environment, and the row writes.
//!
//! A scoped commit (`transact_env`) locks only its environment and reads and writes only the
//! rows it needs, so its cost does not grow with the history and commits on different
//! environments run in parallel. Steps 1 to 3 are one round trip (a simple-query message of
//! statements prepared by name once per connection), and appending a release is three in all:
//!
//! 1. `BEGIN`, and the store row `FOR KEY SHARE`: only a whole-state commit (`FOR UPDATE`)
//!    waits for it, or makes it wait;
//! 2. the environment's row, created if needed, its `serial` counted up (this locks it: scoped
//!    commits of one environment take turns);
//! 3. the window's releases through indexes: the newest by id, the unfinished ones (a partial
//!    index), and those named;
//! 4. the closure, which allocates ids after the highest of `last_release_id` and every
//!    release's id (an index lookup), and after its environment's newest;
//! 5. the writes: each insert claims its new id with a transaction-scoped advisory lock in the
//!    same statement, without waiting. An id claimed by another commit in flight (two
//!    environments in the same millisecond, or ids that ran ahead of the clock) is skipped: the
//!    closure runs again in the same transaction, allocating after it. Ids stay unique, and
//!    increase within every environment. Then one update per release changed, one delete for
//!    those removed. The store row is never written, so commits on different environments
//!    never wait for each other;
//! 6. the leases this store holds are checked, and the transaction commits.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::{Client, GenericClient, SimpleQueryMessage, Statement, Transaction};

use super::read::Header;
use super::{PgStore, TxError, MAX_ID_CONFLICTS};
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
    /// Whether [`SCOPED_READS`] are prepared on this connection.
    reads_prepared: bool,
}

impl Conn {
    pub(super) fn new(client: Client) -> Conn {
        Conn {
            client,
            prepared: Prepared(HashMap::new()),
            lock_timeout: None,
            reads_prepared: false,
        }
    }
}

/// Statements prepared on one connection, by their text.
pub(super) struct Prepared(HashMap<&'static str, Statement>);

impl Prepared {
    /// `sql` prepared on `tx`'s connection (once; it outlives the transaction).
    fn get(
        &mut self,
        tx: &mut impl GenericClient,
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
        self.prepare_connection(conn)?;
        let tx = conn
            .client
            .transaction()
            .map_err(|e| TxError::Db("starting a transaction", e))?;
        Ok((tx, &mut conn.prepared))
    }

    /// Set the commit wait (`--lock-wait`) as the connection's `lock_timeout` whenever it
    /// changes (a pooled connection only runs commits and reads), and prepare
    /// [`SCOPED_READS`] once (after the schema is current: `retrying` ensures it first).
    fn prepare_connection(&self, conn: &mut Conn) -> Result<(), TxError> {
        let wait = self.commit_wait();
        let mut setup = String::new();
        if conn.lock_timeout != Some(wait) {
            setup += &format!(
                "SET lock_timeout = {};",
                wait.as_millis().clamp(1, i32::MAX as u128)
            );
        }
        if !conn.reads_prepared {
            // Every statement a commit runs has one good plan whatever its parameters (index
            // lookups by environment and id): planned once, not again for each environment.
            setup += "SET plan_cache_mode = force_generic_plan;";
            setup += SCOPED_READS;
        }
        if !setup.is_empty() {
            conn.client
                .batch_execute(&setup)
                .map_err(|e| TxError::Db("starting a transaction", e))?;
            conn.lock_timeout = Some(wait);
            conn.reads_prepared = true;
        }
        Ok(())
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
                         pg_stat_activity and end it, or wait longer with a larger \
                         --lock-wait (e.g. 60s); nothing was written",
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
        self.retrying(&mut |client| self.try_commit_env(client, env, window, f))
    }

    fn try_commit_env(
        &self,
        conn: &mut Conn,
        env: &str,
        window: Window<'_>,
        f: &mut dyn FnMut(&mut State) -> anyhow::Result<bool>,
    ) -> Result<(), TxError> {
        self.prepare_connection(conn)?;
        let Conn {
            client, prepared, ..
        } = conn;
        // An id committed since the last attempt read the highest is in this one's reads.
        let (mut tx, before) = self.read_scoped(client, env, window)?;
        let Some(_) = self.apply_and_write(&mut tx, prepared, env, &before, f)? else {
            return Ok(()); // Dropping `tx` rolls back; nothing was written.
        };
        if before.format_version != Some(FORMAT_VERSION) || before.lineage.is_none() {
            // The first commit to a new database.
            tx.client
                .execute(
                    "UPDATE stagecraft_store
                     SET format_version = $1, lineage = coalesce(lineage, $2) WHERE id = 1",
                    &[&(FORMAT_VERSION as i32), &uuid::Uuid::new_v4().to_string()],
                )
                .map_err(|e| TxError::Db("writing the store row", e))?;
        }
        self.check_leases(tx.client)?;
        tx.commit().map_err(|e| TxError::Db("committing", e))
    }

    /// `f` applied to a copy of `before`, checked, and what it changed written, with every
    /// release id it allocated claimed for this transaction; `None` when `f` changed nothing.
    ///
    /// An insert claims its id in the same statement, without waiting. Another commit in
    /// flight may have claimed it first (ids that ran ahead of the clock, or the same
    /// millisecond): then this attempt's inserts are taken back, a claim tries the id and the
    /// next ones in one round trip and takes the first that is free, and `f` runs again on the
    /// same `before`, allocating after the ones it lost. Only `f` runs again, not the reads:
    /// with eight writers a whole-transaction retry per lost id made commits take turns. An id
    /// committed since the reads (a unique violation) ends the attempt with `IdTaken`.
    fn apply_and_write(
        &self,
        tx: &mut ScopedTx<'_>,
        prepared: &mut Prepared,
        env: &str,
        before: &State,
        f: &mut dyn FnMut(&mut State) -> anyhow::Result<bool>,
    ) -> Result<Option<State>, TxError> {
        let mut floor = before.last_release_id.clone();
        for _ in 0..MAX_ID_CONFLICTS {
            let mut after = before.clone();
            after.last_release_id = floor.clone();
            if !f(&mut after).map_err(TxError::Closure)? {
                return Ok(None);
            }
            // The same checks as a whole-state commit, on what this one can see. An id that
            // another environment holds cannot get this far: the insert fails on it.
            after
                .check_window(env, before)
                .map_err(|e| TxError::Other(e.into()))?;
            after.validate().map_err(|e| self.invalid_state(e))?;
            let written =
                write_changes(tx.client, prepared, before, &after, true).map_err(|e| {
                    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                        TxError::IdTaken
                    } else {
                        TxError::Db("writing releases", e)
                    }
                })?;
            match written {
                Written::All => return Ok(Some(after)),
                Written::ClaimLost(id) => {
                    if let Claim::After(id) = claim_id(tx.client, prepared, &id)? {
                        floor = floor.max(Some(id));
                    }
                }
            }
        }
        Err(TxError::IdTaken)
    }

    /// The store row, with `last_release_id` raised to the highest id issued in any
    /// environment, and `env`'s releases that `window` names, in history order; `env`'s row is
    /// locked (steps 1 to 3 of the module documentation). One round trip: the three statements
    /// are [`SCOPED_READS`], run in order in one simple-query message, each with its own
    /// snapshot, so the window is read after the environment's lock is had.
    fn read_scoped<'c>(
        &self,
        client: &'c mut Client,
        env: &str,
        window: Window<'_>,
    ) -> Result<(ScopedTx<'c>, State), TxError> {
        let name = env;
        let env = sql_literal(env);
        let window = match window {
            Window::Whole => format!("EXECUTE stagecraft_window_whole({env})"),
            Window::Recent(ids) => {
                let ids: Vec<String> = ids.iter().map(|id| sql_literal(id.as_str())).collect();
                format!(
                    "EXECUTE stagecraft_window_recent({env}, ARRAY[{}]::text[])",
                    ids.join(", ")
                )
            }
        };
        let batch = format!(
            "BEGIN; EXECUTE stagecraft_store_row; EXECUTE stagecraft_lock_environment({env}); \
             {window}"
        );
        // Rolled back when dropped, on an error below too.
        let tx = ScopedTx { client, open: true };
        let messages = tx.client.simple_query(&batch).map_err(|e| {
            self.lock_waited(
                TxError::Db("reading the store row and the environment's releases", e),
                &format!(
                    "the store row (stagecraft_store) or environment \"{name}\" (its row \
                     in stagecraft_environments)"
                ),
            )
        })?;
        // Rows by statement: none (0: BEGIN), the store row (1), none (2: the lock), the
        // window (3).
        let mut statement = 0;
        let mut header = None;
        let mut rows = Vec::new();
        for message in messages {
            match message {
                SimpleQueryMessage::Row(row) if statement == 1 => header = Some(row),
                SimpleQueryMessage::Row(row) if statement == 3 => rows.push(row),
                SimpleQueryMessage::CommandComplete(_) => statement += 1,
                _ => {}
            }
        }
        let header = header.ok_or_else(|| self.corrupt("the store row is missing".into()))?;
        let text = |i: usize| header.get(i).map(str::to_string);
        let mut state = self.parse_header(Header {
            format_version: parse_column(text(0), "format_version", |v| v.parse().ok())
                .map_err(|e| self.corrupt(e))?,
            lineage: text(1),
            serial: parse_column(text(2), "serial", |v| v.parse().ok())
                .map_err(|e| self.corrupt(e))?
                .unwrap_or(0),
            last_release_id: text(3),
            extra: parse_column(text(4), "extra", |v| serde_json::from_str(v).ok())
                .map_err(|e| self.corrupt(e))?
                .unwrap_or_default(),
        })?;
        if let Some(highest) = header.get(5) {
            let highest =
                ReleaseId::parse(highest).map_err(|e| self.corrupt(format!("release id: {e}")))?;
            state.last_release_id = state.last_release_id.max(Some(highest));
        }
        state.releases = rows
            .iter()
            .map(|row| {
                let id = row.get(0).unwrap_or_default();
                let record = row.get(1).unwrap_or_default();
                serde_json::from_str::<Release>(record)
                    .map(Arc::new)
                    .map_err(|e| self.corrupt(format!("release {id}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok((tx, state))
    }
}

/// A scoped commit's transaction, begun in the same message as its reads
/// ([`PgStore::read_scoped`]); rolled back when dropped uncommitted.
struct ScopedTx<'c> {
    client: &'c mut Client,
    open: bool,
}

impl ScopedTx<'_> {
    /// A statement that failed returned its error where it ran, so the transaction is never
    /// aborted here (the server would answer `COMMIT` with a rollback).
    fn commit(mut self) -> Result<(), postgres::Error> {
        self.open = false;
        self.client.batch_execute("COMMIT")
    }
}

impl Drop for ScopedTx<'_> {
    fn drop(&mut self) {
        if self.open {
            // Nothing was committed; a broken connection has no transaction left to end.
            let _ = self.client.batch_execute("ROLLBACK");
        }
    }
}

/// The reads of a scoped commit, prepared by name (SQL `PREPARE`) once per connection so that
/// one simple-query message can run all three with nothing to plan: the store row `FOR KEY
/// SHARE` with the highest release id (an index lookup); the environment's row, created if
/// needed, its serial counted up (this locks it); and the window through indexes.
const SCOPED_READS: &str = "
    PREPARE stagecraft_store_row AS
        SELECT format_version, lineage, serial, last_release_id, extra,
               (SELECT max(id COLLATE \"C\") FROM stagecraft_releases)
        FROM stagecraft_store WHERE id = 1 FOR KEY SHARE;
    PREPARE stagecraft_lock_environment(text) AS
        INSERT INTO stagecraft_environments (name, serial) VALUES ($1, 1)
        ON CONFLICT (name) DO UPDATE SET serial = stagecraft_environments.serial + 1;
    PREPARE stagecraft_window_recent(text, text[]) AS
        SELECT DISTINCT ON (position) id, record, position FROM (
            (SELECT id, record, position FROM stagecraft_releases
             WHERE environment = $1 ORDER BY id COLLATE \"C\" DESC LIMIT 1)
            UNION ALL
            SELECT id, record, position FROM stagecraft_releases
            WHERE environment = $1 AND unfinished
            UNION ALL
            -- A join, so that each named id is one primary-key lookup: the generic plan of
            -- `environment = $1 AND id = ANY($2)` read the environment's whole index, and a
            -- commit grew with its history.
            SELECT r.id, r.record, r.position
            FROM unnest($2::text[]) AS named(id)
            JOIN stagecraft_releases r ON r.id = named.id
            WHERE r.environment = $1
        ) AS window_rows ORDER BY position;
    PREPARE stagecraft_window_whole(text) AS
        SELECT id, record FROM stagecraft_releases WHERE environment = $1 ORDER BY position;
";

/// `value` as an SQL string literal. Only an environment name (checked: lowercase letters,
/// digits, `-` and `_`) and release ids are ever quoted, never a release's contents; quotes are
/// doubled all the same (the server keeps `standard_conforming_strings` on, as since 9.1).
fn sql_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A text column parsed by `parse`, or a description of why it is not what it should be.
fn parse_column<T>(
    text: Option<String>,
    name: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<Option<T>, String> {
    match text {
        None => Ok(None),
        Some(text) => parse(&text)
            .map(Some)
            .ok_or_else(|| format!("{name} is {text:?}")),
    }
}

/// How many ids one claim tries: the id allocated and those after it.
const CLAIM_CANDIDATES: usize = 32;

/// What [`claim_id`] got.
enum Claim {
    /// The id asked for is now this transaction's.
    Claimed,
    /// It was taken: allocate after this id. When that is the one before the first free
    /// candidate, that candidate is already claimed for this transaction.
    After(ReleaseId),
}

/// Claim `id`, or the first free id of the [`CLAIM_CANDIDATES`] from it on, for this
/// transaction: an id is free when no release has it and no other transaction in flight claimed
/// it (a transaction-scoped advisory lock, taken without waiting), in one round trip.
fn claim_id(
    tx: &mut impl GenericClient,
    prepared: &mut Prepared,
    id: &ReleaseId,
) -> Result<Claim, TxError> {
    let mut ids = vec![id.clone()];
    while ids.len() < CLAIM_CANDIDATES {
        match ids.last().and_then(ReleaseId::next) {
            Some(next) => ids.push(next),
            None => break,
        }
    }
    let candidates: Vec<&str> = ids.iter().map(ReleaseId::as_str).collect();
    // A function scan yields in order and LIMIT stops it at the first row that passes, so at
    // most one id is claimed; an id a release has is skipped before it is locked.
    let claimed = prepared
        .get(
            tx,
            "SELECT id FROM unnest($1::text[]) AS candidate(id)
             WHERE NOT EXISTS (SELECT 1 FROM stagecraft_releases r WHERE r.id = candidate.id)
               AND pg_try_advisory_xact_lock($2, hashtext(candidate.id))
             LIMIT 1",
        )
        .and_then(|statement| tx.query_opt(&statement, &[&candidates, &RELEASE_ID_LOCK_CLASS]))
        .map_err(|e| TxError::Db("allocating a release id", e))?;
    let claimed: Option<String> = claimed.map(|row| row.get(0));
    let free = match claimed {
        Some(claimed) => ids.iter().position(|id| id.as_str() == claimed),
        None => None,
    };
    Ok(match free {
        Some(0) => Claim::Claimed,
        Some(k) => Claim::After(ids.swap_remove(k - 1)),
        None => Claim::After(ids.pop().expect("at least the id asked for")),
    })
}

/// What [`write_changes`] did.
pub(super) enum Written {
    /// Every change is written.
    All,
    /// Another commit in flight claimed this new release's id: nothing of this attempt is
    /// written (the releases it had inserted are deleted again).
    ClaimLost(ReleaseId),
}

/// Write the difference between `before` and `after` (a whole state, or one environment's
/// window): new releases are inserted first, after every existing one (their position from a
/// sequence, so that commits on different environments never compete for one), then deleted
/// releases go and changed ones are rewritten in place. Appending a release writes one row. A
/// reordered state is written in its new order.
///
/// With `claim`, each insert claims its id for the transaction in the same statement
/// (`pg_try_advisory_xact_lock`, without waiting) and inserts nothing when another transaction
/// holds the claim or a release committed since the reads has the id: [`Written::ClaimLost`].
pub(super) fn write_changes(
    tx: &mut impl GenericClient,
    prepared: &mut Prepared,
    before: &State,
    after: &State,
    claim: bool,
) -> Result<Written, postgres::Error> {
    let old: HashMap<&str, &Arc<Release>> =
        before.releases.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut inserted: Vec<&str> = Vec::new();
    for release in after
        .releases
        .iter()
        .filter(|r| !old.contains_key(r.id.as_str()))
    {
        let record = serde_json::to_value(release).expect("a release serializes");
        let (id, unfinished) = (release.id.as_str(), release.is_unfinished());
        // Never an upsert: a new id that exists (it cannot, ids are allocated past every one
        // issued) must fail the commit, not overwrite another release.
        let rows = if claim {
            let insert = prepared.get(
                tx,
                "INSERT INTO stagecraft_releases (id, environment, position, record, unfinished)
                 SELECT $1, $2, nextval('stagecraft_release_position'), $3, $4
                 WHERE NOT EXISTS (SELECT 1 FROM stagecraft_releases WHERE id = $1)
                   AND pg_try_advisory_xact_lock($5, hashtext($1))",
            )?;
            let class = RELEASE_ID_LOCK_CLASS;
            tx.execute(
                &insert,
                &[&id, &release.environment, &record, &unfinished, &class],
            )?
        } else {
            let insert = prepared.get(
                tx,
                "INSERT INTO stagecraft_releases (id, environment, position, record, unfinished)
                 VALUES ($1, $2, nextval('stagecraft_release_position'), $3, $4)",
            )?;
            tx.execute(&insert, &[&id, &release.environment, &record, &unfinished])?
        };
        if rows == 0 {
            if !inserted.is_empty() {
                let delete =
                    prepared.get(tx, "DELETE FROM stagecraft_releases WHERE id = ANY($1)")?;
                tx.execute(&delete, &[&inserted])?;
            }
            return Ok(Written::ClaimLost(release.id.clone()));
        }
        inserted.push(id);
    }
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
    // A transaction may reorder the history (no operation does, but the file keeps any order,
    // so this backend does too): then every release takes a new position, in order, the new
    // ones too.
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
        if reordered {
            let moved = prepared.get(
                tx,
                "UPDATE stagecraft_releases SET position = nextval('stagecraft_release_position')
                 WHERE id = $1",
            )?;
            tx.execute(&moved, &[&release.id.as_str()])?;
        }
        let Some(previous) = old.get(release.id.as_str()) else {
            continue; // Inserted above.
        };
        // Still the same shared release (see `State::releases`), or equal to it.
        if Arc::ptr_eq(previous, release) || ***previous == **release {
            continue;
        }
        let record = serde_json::to_value(release).expect("a release serializes");
        let update = prepared.get(
            tx,
            "UPDATE stagecraft_releases
             SET environment = $2, record = $3, unfinished = $4 WHERE id = $1",
        )?;
        tx.execute(
            &update,
            &[
                &release.id.as_str(),
                &release.environment,
                &record,
                &release.is_unfinished(),
            ],
        )?;
    }
    Ok(Written::All)
}
