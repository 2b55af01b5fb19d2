//! Components in `stagecraft_components`: one row per sha256 holding the component's bytes (see
//! state/components.rs). A sweep locks the table against the check a deploy makes after
//! creating its release (`FOR KEY SHARE` holds a lock the sweep's `EXCLUSIVE` one conflicts
//! with), so it decides what is unused from every release committed before that check. It takes
//! the lock only when free (`NOWAIT`), and otherwise removes nothing this time.

use postgres::error::SqlState;

use super::{PgStore, TxError};
use crate::state::components::{check_digest, verify, DamagedComponent};
use crate::state::StateError;

impl PgStore {
    /// [`crate::state::StateStore::missing_components`] for PostgreSQL: one transaction that
    /// locks the rows it finds against a sweep until it ends.
    pub(super) fn missing(&self, digests: &[String]) -> anyhow::Result<Vec<String>> {
        for digest in digests {
            check_digest(digest)?;
        }
        let found = self.on_connection(false, &mut |client| {
            let mut tx = client
                .transaction()
                .map_err(|e| TxError::Db("looking for components", e))?;
            let rows = tx
                .query(
                    "SELECT digest FROM stagecraft_components WHERE digest = ANY($1)
                     FOR KEY SHARE",
                    &[&digests],
                )
                .map_err(|e| TxError::Db("looking for components", e))?;
            tx.commit()
                .map_err(|e| TxError::Db("looking for components", e))?;
            Ok(rows
                .iter()
                .map(|row| row.get::<_, String>(0))
                .collect::<Vec<_>>())
        })?;
        let found = found.unwrap_or_default();
        Ok(digests
            .iter()
            .filter(|d| !found.contains(d))
            .cloned()
            .collect())
    }

    /// [`crate::state::StateStore::put_component`] for PostgreSQL: one insert, nothing when the
    /// row is there.
    pub(super) fn put(&self, digest: &str, bytes: &[u8]) -> anyhow::Result<()> {
        check_digest(digest)?;
        verify(digest, bytes).map_err(|why| {
            StateError::new(format!("refusing to keep component {digest}: {why}"))
        })?;
        self.on_connection(true, &mut |client| {
            client
                .execute(
                    "INSERT INTO stagecraft_components (digest, bytes) VALUES ($1, $2)
                     ON CONFLICT (digest) DO NOTHING",
                    &[&digest, &bytes],
                )
                .map(drop)
                .map_err(|e| TxError::Db("keeping a component", e))
        })
        .map(drop)
    }

    /// [`crate::state::StateStore::component`] for PostgreSQL.
    pub(super) fn get(&self, digest: &str) -> anyhow::Result<Option<Vec<u8>>> {
        check_digest(digest)?;
        let row = self.on_connection(false, &mut |client| {
            client
                .query_opt(
                    "SELECT bytes FROM stagecraft_components WHERE digest = $1",
                    &[&digest],
                )
                .map_err(|e| TxError::Db("reading a component", e))
        })?;
        let Some(bytes) = row.flatten().map(|row| row.get::<_, Vec<u8>>(0)) else {
            return Ok(None);
        };
        verify(digest, &bytes).map_err(|why| {
            DamagedComponent::error(
                digest,
                format!(
                    "component {digest} in PostgreSQL at {} is damaged ({why}); delete its row \
                     from stagecraft_components: the next deploy that uses it keeps it again",
                    self.location
                ),
            )
        })?;
        Ok(Some(bytes))
    }

    /// [`crate::state::StateStore::sweep_components`] for PostgreSQL: the table locked first, so
    /// the delete's snapshot holds every release whose deploy checked its components.
    pub(super) fn sweep_unused(&self) -> anyhow::Result<usize> {
        let swept = self.on_connection(false, &mut |client| {
            let mut tx = client
                .transaction()
                .map_err(|e| TxError::Db("removing unused components", e))?;
            // Never waits: a sweep queued for the lock would make every deploy's check queue
            // behind it. Busy now, it removes nothing; a later one will.
            match tx.batch_execute("LOCK TABLE stagecraft_components IN EXCLUSIVE MODE NOWAIT") {
                Ok(()) => {}
                Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => return Ok(0),
                Err(e) => return Err(TxError::Db("locking the components", e)),
            }
            let swept = tx
                .execute(
                    "WITH used AS (
                         SELECT DISTINCT phase->>'digest' AS digest
                         FROM stagecraft_releases r,
                              jsonb_array_elements(
                                  CASE WHEN jsonb_typeof(r.record->'plan'->'phases') = 'array'
                                       THEN r.record->'plan'->'phases'
                                       ELSE '[]'::jsonb END) phase)
                     DELETE FROM stagecraft_components c
                     WHERE NOT EXISTS (SELECT 1 FROM used u WHERE u.digest = c.digest)",
                    &[],
                )
                .map_err(|e| TxError::Db("removing unused components", e))?;
            tx.commit()
                .map_err(|e| TxError::Db("removing unused components", e))?;
            Ok(swept)
        })?;
        Ok(swept.unwrap_or(0) as usize)
    }
}
