//! A slot that the source's `max_slot_wal_keep_size` invalidates while the
//! snapshot copies makes the copy worthless (the stream can never start at
//! its consistent point): the snapshot stops at once with an error naming
//! the slot, instead of copying on and reporting success.

use std::time::Duration;

use crate::harness::{self, exec, value, Client, Cluster, Options, Pair};

/// A pair on a dedicated source (its own settings) and the shared target.
pub(crate) async fn pair_on(source: &Cluster, name: &str) -> Pair {
    let target = &harness::shared().target;
    let source_db = source.create_database(name).await;
    let target_db = target.create_database(name).await;
    let n = harness::unique();
    Pair {
        name: name.into(),
        source_url: source.url(&source_db),
        target_url: target.url(&target_db),
        slot: format!("slot_{}_{n}", harness::sanitize(name)),
        publication: format!("pub_{}_{n}", harness::sanitize(name)),
        source_db,
        target_db,
    }
}

/// A source whose slots may hold at most 64 MB of WAL, checkpointing often.
pub(crate) fn capped_source(label: &str) -> Cluster {
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
pub(crate) async fn slow_copy_tables(pair: &Pair, rows: u32, slow_every: u32) {
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
pub(crate) async fn write_wal(source: &Client) {
    exec(
        source,
        "INSERT INTO filler (pad) SELECT repeat(md5(g::text), 30) FROM generate_series(1, 15000) g;
         DELETE FROM filler;
         SELECT pg_switch_wal();
         CHECKPOINT;",
    )
    .await;
}

/// The slot's `wal_status`, `missing` when it is gone.
pub(crate) async fn wal_status(source: &Client, slot: &str) -> String {
    value(
        source,
        &format!(
            "SELECT coalesce((SELECT coalesce(wal_status, 'none') FROM pg_replication_slots
                              WHERE slot_name = '{slot}'), 'missing')"
        ),
    )
    .await
}

#[tokio::test]
async fn a_slot_lost_while_copying_stops_the_snapshot_naming_the_slot() {
    let cluster = capped_source("slot-lost");
    let pair = pair_on(&cluster, "snap_slot_lost").await;
    // 4000 rows, 2000 of them slowed by 20 ms: about 40 s of copying.
    slow_copy_tables(&pair, 4000, 2).await;
    let mut cmd = pair.walrelay();
    cmd.args(["--table", "public.items", "snapshot", "--schema", "skip"])
        .args(["--jobs", "1", "--chunk-pages", "2"]);
    let mut snapshot = harness::spawn(cmd);
    let source = pair.source().await;
    let target = pair.target().await;
    harness::wait_for(Duration::from_secs(60), "the copy to start", || {
        let target = &target;
        let exited = snapshot.exited();
        async move {
            if exited {
                return Some(());
            }
            if value(target, "SELECT to_regclass('walrelay.chunks') IS NOT NULL").await != "t" {
                return None;
            }
            let copying = value(
                target,
                "SELECT EXISTS (SELECT 1 FROM walrelay.snapshot WHERE phase = 'copy')",
            )
            .await;
            (copying == "t").then_some(())
        }
    })
    .await;
    // Write WAL until the cap invalidates the slot.
    let mut status = String::new();
    for _ in 0..40 {
        if snapshot.exited() {
            break;
        }
        write_wal(&source).await;
        status = wal_status(&source, &pair.slot).await;
        if status == "lost" || status == "missing" {
            break;
        }
    }
    assert!(
        status == "lost" || status == "missing",
        "the slot was never invalidated (wal_status {status}): the test does not test anything"
    );
    // The copy had well over 20 s left: it must stop long before that.
    let run = snapshot.finish(Duration::from_secs(20)).await;
    run.assert_failure();
    let stderr = run.stderr.to_lowercase();
    for word in [&pair.slot, "max_slot_wal_keep_size", "cleanup"] {
        assert!(
            stderr.contains(word),
            "stderr should mention {word:?}:\n{run}"
        );
    }
    let copied: i64 = value(&target, "SELECT count(*) FROM items")
        .await
        .parse()
        .unwrap();
    assert!(
        copied < 4000,
        "the copy went on to the end after the slot was lost:\n{run}"
    );
}
