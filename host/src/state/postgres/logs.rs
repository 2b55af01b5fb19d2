//! Phase logs in `stagecraft_phase_logs`: one row per release and phase holding the log's JSON
//! as text (a `jsonb` value cannot hold the NUL character a plugin may log). Its foreign key
//! removes a release's logs in the same transaction that removes the release.

use postgres::Client;

use super::{connection_gone, PgStore, TxError};
use crate::state::{PhaseLog, ReleaseId, StateError};

impl PgStore {
    /// Run `work` on a pooled connection whose schema is current (`create` false: `Ok(None)`
    /// when there is no schema yet), replacing a pooled connection the server closed once.
    pub(super) fn on_connection<T>(
        &self,
        create: bool,
        work: &mut dyn FnMut(&mut Client) -> Result<T, TxError>,
    ) -> anyhow::Result<Option<T>> {
        let (mut conn, pooled) = self.client()?;
        if !self.ensure_schema(&mut conn.client, create)? {
            self.give_back(conn);
            return Ok(None);
        }
        let mut result = work(&mut conn.client);
        if let Err(TxError::Db(_, e)) = &result {
            if pooled && connection_gone(e) {
                conn = super::Conn::new(self.connect()?);
                result = work(&mut conn.client);
            }
        }
        self.give_back(conn);
        result.map(Some).map_err(|e| self.tx_error(e))
    }

    /// [`crate::state::StateStore::write_phase_log`] for PostgreSQL: one upsert.
    pub(super) fn write_log(&self, release: &ReleaseId, log: &PhaseLog) -> anyhow::Result<()> {
        log.check_storable()?;
        let text = String::from_utf8(log.to_json()).expect("JSON is UTF-8");
        self.on_connection(true, &mut |client| {
            client
                .execute(
                    "INSERT INTO stagecraft_phase_logs (release_id, phase, log)
                     VALUES ($1, $2, $3)
                     ON CONFLICT (release_id, phase) DO UPDATE SET log = EXCLUDED.log",
                    &[&release.as_str(), &log.phase, &text],
                )
                .map(drop)
                .map_err(|e| TxError::Db("writing a phase log", e))
        })
        .map(drop)
    }

    /// [`crate::state::StateStore::phase_logs`] for PostgreSQL.
    pub(super) fn read_logs(&self, release: &ReleaseId) -> anyhow::Result<Vec<PhaseLog>> {
        let rows = self.on_connection(false, &mut |client| {
            client
                .query(
                    "SELECT phase, log FROM stagecraft_phase_logs WHERE release_id = $1",
                    &[&release.as_str()],
                )
                .map_err(|e| TxError::Db("reading phase logs", e))
        })?;
        let mut logs = Vec::new();
        for row in rows.unwrap_or_default() {
            let phase: String = row.get(0);
            let text: String = row.get(1);
            let log = PhaseLog::from_json(text.as_bytes())
                .ok()
                .filter(|log| log.phase == phase)
                .ok_or_else(|| {
                    StateError::new(format!(
                        "the log of phase {phase:?} of release {release} in PostgreSQL at {} \
                         is damaged; delete its row from stagecraft_phase_logs to read the \
                         others",
                        self.location
                    ))
                })?;
            logs.push(log);
        }
        Ok(logs)
    }

    /// [`crate::state::StateStore::sweep_phase_logs`] for PostgreSQL. The foreign key already
    /// removes a release's logs with it, so this finds nothing unless the constraint was
    /// dropped by hand.
    pub(super) fn sweep_logs(&self) -> anyhow::Result<usize> {
        let swept = self.on_connection(false, &mut |client| {
            client
                .execute(
                    "DELETE FROM stagecraft_phase_logs l WHERE NOT EXISTS
                     (SELECT 1 FROM stagecraft_releases r WHERE r.id = l.release_id)",
                    &[],
                )
                .map_err(|e| TxError::Db("removing logs of removed releases", e))
        })?;
        Ok(swept.unwrap_or(0) as usize)
    }
}
