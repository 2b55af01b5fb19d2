//! The schema: versioned migrations, applied in order on first use (see
//! [`super::PgStore`]'s `migrate`), and the one step SQL cannot do.

use std::sync::atomic::Ordering;

use postgres::{Client, Transaction};

use super::PgStore;

use crate::state::{Release, StateError};

/// The schema's versions, applied in order, each in the same transaction as its row in
/// `stagecraft_schema`. Never edit a shipped migration: add the next one.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "store row, releases, environments with lease holders",
        "CREATE TABLE stagecraft_store (
         id smallint PRIMARY KEY CHECK (id = 1),
         format_version integer,
         lineage text,
         serial bigint NOT NULL DEFAULT 0,
         last_release_id text,
         extra jsonb NOT NULL DEFAULT '{}'::jsonb
     );
     INSERT INTO stagecraft_store (id) VALUES (1);
     CREATE TABLE stagecraft_releases (
         id text PRIMARY KEY,
         environment text NOT NULL,
         position bigint NOT NULL,
         record jsonb NOT NULL,
         CONSTRAINT stagecraft_releases_position_key UNIQUE (position)
             DEFERRABLE INITIALLY DEFERRED
     );
     CREATE INDEX stagecraft_releases_environment ON stagecraft_releases (environment);
     CREATE TABLE stagecraft_environments (
         name text PRIMARY KEY,
         lock_key integer GENERATED ALWAYS AS IDENTITY UNIQUE,
         holder jsonb,
         holder_backend_pid integer
     );",
    ),
    (
        2,
        "lease heartbeats",
        "ALTER TABLE stagecraft_environments ADD COLUMN heartbeat_at timestamptz;",
    ),
    (
        3,
        "environment-scoped commits: unfinished flag, id indexes, position sequence, \
         per-environment serial",
        "ALTER TABLE stagecraft_releases ADD COLUMN unfinished boolean NOT NULL DEFAULT false;
     CREATE INDEX stagecraft_releases_environment_id
         ON stagecraft_releases (environment, id COLLATE \"C\");
     CREATE INDEX stagecraft_releases_unfinished
         ON stagecraft_releases (environment) WHERE unfinished;
     DROP INDEX stagecraft_releases_environment;
     CREATE SEQUENCE stagecraft_release_position;
     SELECT setval('stagecraft_release_position',
                   (SELECT coalesce(max(position), 0) + 1 FROM stagecraft_releases), false);
     CREATE INDEX stagecraft_releases_id_c ON stagecraft_releases (id COLLATE \"C\");
     ALTER TABLE stagecraft_environments ADD COLUMN serial bigint NOT NULL DEFAULT 0;",
    ),
    (
        4,
        "phase logs, removed with their release",
        "CREATE TABLE stagecraft_phase_logs (
         release_id text NOT NULL
             REFERENCES stagecraft_releases (id) ON DELETE CASCADE,
         phase text NOT NULL,
         log text NOT NULL,
         PRIMARY KEY (release_id, phase)
     );",
    ),
    (
        5,
        "components releases ran, by sha256",
        "CREATE TABLE stagecraft_components (
         digest text PRIMARY KEY CHECK (digest ~ '^[0-9a-f]{64}$'),
         bytes bytea NOT NULL
     );",
    ),
];

/// The newest schema version this build knows.
pub fn latest_schema_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// What a migration needs besides its SQL, in the same transaction: version 3 flags the
/// releases left unfinished, by the same rule the host uses ([`Release::is_unfinished`]).
pub(super) fn after_migration(
    tx: &mut Transaction<'_>,
    version: i32,
) -> Result<(), postgres::Error> {
    if version != 3 {
        return Ok(());
    }
    let rows = tx.query("SELECT id, record FROM stagecraft_releases", &[])?;
    for row in rows {
        let id: String = row.get(0);
        let record: serde_json::Value = row.get(1);
        // A record that does not parse is reported by the first read, as before the upgrade.
        if let Ok(release) = serde_json::from_value::<Release>(record) {
            if release.is_unfinished() {
                tx.execute(
                    "UPDATE stagecraft_releases SET unfinished = true WHERE id = $1",
                    &[&id],
                )?;
            }
        }
    }
    Ok(())
}
/// First key of the advisory lock that serializes migrations ("SCMG").
const MIGRATION_LOCK_CLASS: i32 = 0x5343_4D47;

impl PgStore {
    /// Bring the schema to [`latest_schema_version`], or with `create` false, say whether it
    /// exists at all (reads create nothing). A newer schema is refused.
    pub(super) fn ensure_schema(&self, client: &mut Client, create: bool) -> anyhow::Result<bool> {
        if self.schema_ready.load(Ordering::Acquire) {
            return Ok(true);
        }
        let current =
            schema_version(client).map_err(|e| self.db_error("reading the schema version", e))?;
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

    pub(super) fn newer_schema_error(&self, version: i32) -> anyhow::Error {
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
    pub(super) fn migrate(&self, client: &mut Client) -> anyhow::Result<()> {
        let doing = "migrating the schema";
        let err = |e: postgres::Error| self.db_error(doing, e);
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
            after_migration(&mut tx, *version).map_err(err)?;
            tx.execute(
                "INSERT INTO stagecraft_schema (version, description) VALUES ($1, $2)",
                &[version, description],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }
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
