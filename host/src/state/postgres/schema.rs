//! The schema: versioned migrations, applied in order on first use (see
//! [`super::PgStore`]'s `migrate`), and the one step SQL cannot do.

use postgres::Transaction;

use crate::state::Release;

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
