//! The post-data step resumes (indexes and constraints already built are
//! left alone), a stop signal leaves no `pg_restore` behind, and slot
//! creation says what it waits for.

use std::time::Duration;

use crate::harness::{self, exec, pair, value};
use crate::{drop_slot, snapshot};

/// Pids of `pg_restore` processes whose command line names `db`.
fn pg_restores_for(db: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            text.contains("pg_restore") && text.contains(db)
        })
        .collect()
}

#[tokio::test]
async fn post_data_interrupted_after_the_primary_key_resumes() {
    let pair = pair("snap_postdata_resume").await;
    let source = pair.source().await;
    exec(
        &source,
        "CREATE TABLE parent (id int PRIMARY KEY, v text UNIQUE);
         CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent(id));
         CREATE INDEX child_parent ON child (parent_id);
         CREATE FUNCTION noop() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';
         CREATE TRIGGER child_noop BEFORE INSERT ON child FOR EACH ROW EXECUTE FUNCTION noop();
         INSERT INTO parent SELECT g, 'v' || g FROM generate_series(1, 100) g;
         INSERT INTO child SELECT g, g FROM generate_series(1, 100) g;",
    )
    .await;
    snapshot(&pair, &[]).await.assert_success();
    let target = pair.target().await;
    // What a kill during the post-data step leaves: some of it built (here
    // all of it, then the child's index and foreign key lost again), the
    // phase still post_data.
    exec(
        &target,
        &format!(
            "DROP INDEX child_parent;
             ALTER TABLE child DROP CONSTRAINT child_parent_id_fkey;
             UPDATE walrelay.snapshot SET phase = 'post_data', finished_at = NULL
             WHERE slot_name = '{}'",
            pair.slot
        ),
    )
    .await;
    let again = snapshot(&pair, &[]).await;
    again.assert_success();
    let objects = value(
        &target,
        "SELECT string_agg(name, ',' ORDER BY name) FROM (
             SELECT conname::text AS name FROM pg_constraint
             WHERE conrelid IN ('parent'::regclass, 'child'::regclass)
             UNION ALL
             SELECT indexrelid::regclass::text FROM pg_index
             WHERE indrelid IN ('parent'::regclass, 'child'::regclass)
             UNION ALL
             SELECT tgname::text FROM pg_trigger
             WHERE tgrelid = 'child'::regclass AND NOT tgisinternal) o",
    )
    .await;
    assert_eq!(
        objects,
        "child_noop,child_parent,child_parent_id_fkey,child_pkey,child_pkey,parent_pkey,parent_pkey,parent_v_key,parent_v_key",
        "each index, constraint and trigger exactly once after the resume:\n{again}"
    );
    assert_eq!(
        value(
            &target,
            &format!(
                "SELECT phase FROM walrelay.snapshot WHERE slot_name = '{}'",
                pair.slot
            )
        )
        .await,
        "done"
    );
    drop_slot(&pair).await;
}

#[tokio::test]
async fn sigterm_during_post_data_leaves_no_pg_restore() {
    let pair = pair("snap_postdata_sigterm").await;
    let source = pair.source().await;
    // An index whose build takes half a minute on the target only (where
    // the database setting makes each row sleep): on the shared source, a
    // long transaction would stall every other test's slot creation.
    exec(
        &source,
        "CREATE FUNCTION slow(x int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
           BEGIN
             IF current_setting('walrelay_test.slow', true) = 'on' THEN
               PERFORM pg_sleep(0.01);
             END IF;
             RETURN x;
           END $$;
         CREATE TABLE big (id int PRIMARY KEY, n int);
         INSERT INTO big SELECT g, g FROM generate_series(1, 3000) g;
         CREATE INDEX big_slow ON big (slow(n));",
    )
    .await;
    exec(
        &pair.target().await,
        &format!(
            "ALTER DATABASE {} SET walrelay_test.slow = 'on'",
            pair.target_db
        ),
    )
    .await;
    let mut cmd = pair.walrelay();
    cmd.args(["snapshot", "--jobs", "1"]);
    let mut running = harness::spawn(cmd);
    let db = pair.target_db.clone();
    let building = harness::wait_for(Duration::from_secs(240), "pg_restore running", || {
        let exited = running.exited();
        let db = db.clone();
        async move {
            if exited {
                return Some(false);
            }
            (!pg_restores_for(&db).is_empty()).then_some(true)
        }
    })
    .await;
    assert!(building, "the snapshot ended before its post-data step");
    // Let it reach the slow index rather than the quick pre-data step.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = running.child.id().expect("walrelay pid") as i32;
    // SAFETY: signalling a child this test started and still owns.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let run = running.finish(Duration::from_secs(20)).await;
    let left = harness::wait_for(Duration::from_secs(5), "no pg_restore left", || {
        let db = db.clone();
        async move { pg_restores_for(&db).is_empty().then_some(true) }
    })
    .await;
    assert!(
        left,
        "pg_restore {:?} outlived walrelay:\n{run}",
        pg_restores_for(&db)
    );
    drop_slot(&pair).await;
}

#[tokio::test]
async fn slot_creation_names_the_prepared_transaction_it_waits_for() {
    let pair = pair("snap_wait_prepared").await;
    let source = pair.source().await;
    exec(&source, "CREATE TABLE t (id int PRIMARY KEY)").await;
    exec(
        &source,
        "BEGIN; INSERT INTO t VALUES (1); PREPARE TRANSACTION 'held'",
    )
    .await;
    let mut cmd = pair.walrelay();
    cmd.arg("snapshot");
    let mut running = harness::spawn(cmd);
    tokio::time::sleep(Duration::from_secs(12)).await;
    let waited = !running.exited();
    // Held any longer, it would stall every other test's slot creation on
    // this shared source server.
    exec(&source, "ROLLBACK PREPARED 'held'").await;
    let run = running.finish(Duration::from_secs(60)).await;
    assert!(waited, "the snapshot did not wait for 'held':\n{run}");
    run.assert_success();
    assert!(
        run.stderr.contains("held"),
        "stderr should name the prepared transaction 'held':\n{run}"
    );
    drop_slot(&pair).await;
}
