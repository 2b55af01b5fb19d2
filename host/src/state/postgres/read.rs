//! Reading: the store row and releases as a [`State`], and what makes a row corrupt.

use std::sync::Arc;

use postgres::Transaction;
use serde_json::Value;

use super::{PgStore, TxError};
use crate::state::{Release, ReleaseId, State, StateError, FORMAT_VERSION};

/// The store row's columns.
pub(super) struct Header {
    pub(super) format_version: Option<i32>,
    pub(super) lineage: Option<String>,
    pub(super) serial: i64,
    pub(super) last_release_id: Option<String>,
    pub(super) extra: Value,
}

impl PgStore {
    /// The whole state as of `tx`'s snapshot; `for_update` locks the store row first. Its
    /// `serial` counts every commit: the store row's (whole-state commits) plus each
    /// environment's (scoped commits), whose sum is returned too.
    pub(super) fn load(
        &self,
        tx: &mut Transaction<'_>,
        for_update: bool,
    ) -> Result<(State, i64), TxError> {
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
    pub(super) fn load_header(
        &self,
        tx: &mut Transaction<'_>,
        lock: &str,
    ) -> Result<State, TxError> {
        let sql = format!(
            "SELECT format_version, lineage, serial, last_release_id, extra
             FROM stagecraft_store WHERE id = 1 {lock}"
        );
        let row = tx
            .query_one(&sql, &[])
            .map_err(|e| TxError::Db("reading the store row", e))?;
        self.parse_header(Header {
            format_version: row.get(0),
            lineage: row.get(1),
            serial: row.get(2),
            last_release_id: row.get(3),
            extra: row.get(4),
        })
    }

    /// A store row as a state without releases.
    pub(super) fn parse_header(&self, header: Header) -> Result<State, TxError> {
        let Header {
            format_version,
            lineage,
            serial,
            last_release_id,
            extra,
        } = header;
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
            lineage,
            serial: u64::try_from(serial).map_err(|_| self.corrupt(format!("serial {serial}")))?,
            last_release_id,
            releases: Vec::new(),
            extra,
        })
    }

    /// Release rows (id, record) as releases, in the order given.
    pub(super) fn parse_releases(
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
    pub(super) fn corrupt(&self, what: String) -> TxError {
        TxError::Other(
            StateError::new(format!(
                "the stagecraft tables in PostgreSQL at {} do not match the state format: \
                 {what}; restore the database from a backup, or fix the row by hand",
                self.location
            ))
            .into(),
        )
    }
}
