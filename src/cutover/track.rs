//! The rows changed on the source since a point, read back from the WAL,
//! so the final verification compares those rather than every row.
//!
//! Cutover creates a temporary logical slot (pgoutput, the stream's
//! publication) before its pre-fence verification pass starts. Every change
//! committed after the slot's consistent point is then read with
//! `pg_logical_slot_get_binary_changes` (consuming: each drain returns what
//! is new since the last one) and decoded by `walrelay-proto`, keeping only
//! the table and the key of each row: for an Insert the new row's key, for
//! an Update the new key and the old one when it changed (the `K` or `O`
//! image), for a Delete the old key. A TRUNCATE, a key that cannot be read
//! (NULL, unchanged TOAST) or a table without a key makes the table
//! "compare whole". Values other than keys are dropped as soon as the key
//! is cut out of them, never logged.
//!
//! The slot is temporary: the server drops it when this session ends,
//! whether cutover finishes, fails or is killed, so it cannot retain WAL
//! past the cutover. Its session is one of walrelay's (exempt from the
//! fence).

use std::collections::HashMap;

use bytes::Bytes;
use futures_util::{pin_mut, TryStreamExt};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;
use walrelay_proto::{decode, Cell, DecodeContext, DecodeError, Lsn, Message, Relation, TupleData};

use crate::config::Config;
use crate::migration::MigrationPlan;
use crate::pg::catalog::quote_ident;
use crate::pg::connect::{self, safe_error_text};
use crate::verify::plan;
use crate::verify::touched::Touched;

/// Changes asked for per call (the server finishes the transaction that
/// crosses it); rows are streamed, so this bounds server work per call,
/// not client memory.
const PAGE: i32 = 50_000;

/// Why changes could not be tracked (cutover then verifies in full).
#[derive(Debug, thiserror::Error)]
pub enum TrackError {
    #[error(transparent)]
    Connect(#[from] connect::ConnectError),
    #[error("{what}: {message}")]
    Sql { what: &'static str, message: String },
    #[error("decoding a change: {0}")]
    Decode(#[from] DecodeError),
    #[error("reading the keys: {0}")]
    Keys(#[from] crate::verify::VerifyError),
}

fn sql(what: &'static str) -> impl Fn(tokio_postgres::Error) -> TrackError {
    move |err| TrackError::Sql {
        what,
        message: safe_error_text(&err),
    }
}

/// A published table as the change stream names it.
struct Rel {
    /// `schema.name`.
    table: String,
    /// Positions of the verification key's columns in the row images;
    /// `None`: the table is compared whole.
    key: Option<Vec<usize>>,
}

/// A temporary slot and what it has decoded so far.
pub struct Tracker {
    client: Client,
    slot: String,
    publication: String,
    /// Verification key columns by table OID (tables with a key only).
    keys: HashMap<u32, Vec<String>>,
    relations: HashMap<u32, Rel>,
    max_keys: usize,
}

impl Tracker {
    /// Creates the temporary slot; changes committed from now on are tracked.
    pub async fn start(
        config: &Config,
        migration: &MigrationPlan,
        max_keys: usize,
    ) -> Result<Tracker, TrackError> {
        let client = connect::connect(&config.source, super::APPLICATION).await?;
        let keys = plan::key_columns(&client, &migration.table_oids()).await?;
        // Named after this session's backend: unique on the server while
        // the session (and so the temporary slot) lives.
        let backend: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .map_err(sql("reading the session's pid"))?
            .get(0);
        let slot = slot_name(&config.slot, backend.unsigned_abs());
        client
            .query_one(
                "SELECT lsn FROM pg_create_logical_replication_slot($1, 'pgoutput', true)",
                &[&slot],
            )
            .await
            .map_err(sql("creating the temporary slot that tracks changes"))?;
        Ok(Tracker {
            client,
            slot,
            publication: migration.publication.clone(),
            keys,
            relations: HashMap::new(),
            max_keys,
        })
    }

    /// What changed since the last drain (since the start, the first time),
    /// up to `upto` (an LSN) or to the end of the WAL.
    pub async fn drain(&mut self, upto: Option<Lsn>) -> Result<Touched, TrackError> {
        let mut touched = Touched::new(self.max_keys);
        let publications = quote_ident(&self.publication);
        loop {
            let params: [&(dyn ToSql + Sync); 4] = [&self.slot, &upto, &PAGE, &publications];
            let rows = self
                .client
                .query_raw(
                    "SELECT data FROM pg_logical_slot_get_binary_changes($1, $2, $3, \
                     'proto_version', '1', 'publication_names', $4)",
                    params,
                )
                .await
                .map_err(sql("reading changes from the temporary slot"))?;
            pin_mut!(rows);
            let mut seen = 0;
            while let Some(row) = rows
                .try_next()
                .await
                .map_err(sql("reading changes from the temporary slot"))?
            {
                seen += 1;
                let data = Bytes::from(row.get::<_, Vec<u8>>(0));
                self.observe(&decode(&data, DecodeContext::default())?, &mut touched);
            }
            if seen < PAGE as usize {
                return Ok(touched);
            }
        }
    }

    fn observe(&mut self, message: &Message, touched: &mut Touched) {
        match message {
            Message::Relation(r) => {
                let rel = self.relation(r);
                self.relations.insert(r.id, rel);
            }
            Message::Insert(m) => self.touch(m.relation_id, &m.new, touched),
            Message::Update(m) => {
                if let Some(old) = &m.old {
                    self.touch(m.relation_id, old.tuple(), touched);
                }
                self.touch(m.relation_id, &m.new, touched);
            }
            Message::Delete(m) => self.touch(m.relation_id, m.old.tuple(), touched),
            Message::Truncate(m) => {
                for id in &m.relation_ids {
                    if let Some(rel) = self.relations.get(id) {
                        touched.add_whole(&rel.table);
                    }
                }
            }
            _ => {}
        }
    }

    fn relation(&self, r: &Relation) -> Rel {
        let key = self.keys.get(&r.id).and_then(|names| {
            names
                .iter()
                .map(|n| r.columns.iter().position(|c| &c.name == n))
                .collect::<Option<Vec<usize>>>()
        });
        Rel {
            table: format!("{}.{}", r.namespace, r.name),
            key,
        }
    }

    fn touch(&self, relation: u32, tuple: &TupleData, touched: &mut Touched) {
        // pgoutput sends a Relation before the first change of each table.
        let Some(rel) = self.relations.get(&relation) else {
            return;
        };
        match rel.key.as_deref().and_then(|k| key_of(tuple, k)) {
            Some(key) => touched.add_key(&rel.table, key),
            None => touched.add_whole(&rel.table),
        }
    }

    /// Drops the slot now (the server would at the session's end anyway).
    pub async fn close(self) {
        if let Err(err) = self
            .client
            .execute("SELECT pg_drop_replication_slot($1)", &[&self.slot])
            .await
        {
            tracing::debug!(slot = %self.slot, error = %safe_error_text(&err), "temporary slot not dropped; it goes with the session");
        }
    }
}

/// The key cells of a row image as text; `None` when one is not there.
fn key_of(tuple: &TupleData, positions: &[usize]) -> Option<Vec<String>> {
    positions
        .iter()
        .map(|&i| match tuple.cells.get(i)? {
            Cell::Text(bytes) => String::from_utf8(bytes.to_vec()).ok(),
            _ => None,
        })
        .collect()
}

/// `{slot}_cutover_{pid}`, cut to PostgreSQL's 63-byte name limit.
fn slot_name(slot: &str, pid: u32) -> String {
    let suffix = format!("_cutover_{pid}");
    let keep = slot.len().min(63 - suffix.len());
    format!("{}{suffix}", &slot[..keep])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_slot_names_fit_postgres_names() {
        assert_eq!(slot_name("walrelay", 42), "walrelay_cutover_42");
        let long = "s".repeat(80);
        let name = slot_name(&long, 4_000_000);
        assert_eq!(name.len(), 63);
        assert!(name.ends_with("_cutover_4000000"));
    }

    #[test]
    fn a_key_is_cut_from_text_cells_and_missing_when_not_sent() {
        let tuple = TupleData {
            cells: vec![
                Cell::Text(Bytes::from_static(b"7")),
                Cell::Text(Bytes::from_static(b"payload")),
                Cell::UnchangedToast,
                Cell::Null,
            ],
        };
        assert_eq!(key_of(&tuple, &[0]), Some(vec!["7".to_string()]));
        assert_eq!(key_of(&tuple, &[2]), None);
        assert_eq!(key_of(&tuple, &[3]), None);
        assert_eq!(key_of(&tuple, &[9]), None);
    }
}
