//! A source whose slots may hold little WAL, a copy the target slows down,
//! and a writer that fills WAL: how a snapshot outlasts the source's
//! `max_slot_wal_keep_size` (the slot-lost and spool tests).

use super::cluster::{Cluster, Options};
use super::shared::Pair;
use super::sql::{exec, value};
use super::Client;

/// A source whose slots may hold at most 64 MB of WAL, checkpointing often.
pub fn capped_source(label: &str) -> Cluster {
    Cluster::start(
        Options::source()
            .label(label)
            .set("max_slot_wal_keep_size", "64MB")
            .set("max_wal_size", "64MB")
            .set("min_wal_size", "32MB"),
    )
}

/// `items` on the source; on the target the same table (for `--schema
/// skip`) with an `ENABLE ALWAYS` trigger that sleeps on every `slow_every`th
/// row, so the copy takes about `rows / slow_every × 20 ms`.
pub async fn slow_copy_tables(pair: &Pair, rows: u32, slow_every: u32) {
    exec(
        &pair.source().await,
        &format!(
            "CREATE TABLE items (id int PRIMARY KEY, pad text);
             INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, {rows}) g;
             CREATE TABLE filler (id bigserial PRIMARY KEY, pad text);"
        ),
    )
    .await;
    exec(
        &pair.target().await,
        &format!(
            "CREATE TABLE items (id int PRIMARY KEY, pad text);
             CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN PERFORM pg_sleep(0.02); RETURN NEW; END $$;
             CREATE TRIGGER slow BEFORE INSERT ON items FOR EACH ROW
               WHEN (NEW.id % {slow_every} = 0) EXECUTE FUNCTION slow_insert();
             ALTER TABLE items ENABLE ALWAYS TRIGGER slow;"
        ),
    )
    .await;
}

/// About 20 MB of WAL in an unpublished table, a WAL switch and a checkpoint
/// (which is when the server invalidates slots past the cap).
pub async fn write_wal(source: &Client) {
    write_wal_rows(source, 15000).await;
}

/// [`write_wal`] with `rows` rows of about 1 kB (inserted, then deleted).
pub async fn write_wal_rows(source: &Client, rows: u32) {
    exec(
        source,
        &format!(
            "INSERT INTO filler (pad) SELECT repeat(md5(g::text), 30) FROM generate_series(1, {rows}) g;
             DELETE FROM filler;
             SELECT pg_switch_wal();
             CHECKPOINT;"
        ),
    )
    .await;
}

/// The slot's `wal_status`, `missing` when it is gone.
pub async fn wal_status(source: &Client, slot: &str) -> String {
    value(
        source,
        &format!(
            "SELECT coalesce((SELECT coalesce(wal_status, 'none') FROM pg_replication_slots
                              WHERE slot_name = '{slot}'), 'missing')"
        ),
    )
    .await
}
