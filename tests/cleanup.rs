//! `walrelay cleanup` and the slot-exists refusal on a source server that
//! holds two migrations: slots are server-wide, so a slot name taken by one
//! database's migration must never be dropped (or advised to be dropped) by
//! the other database's commands.

mod harness;

use std::process::Command;

use harness::{exec, Pair};

const SCHEMA: &str = "CREATE TABLE items (id bigint PRIMARY KEY, v text);
     INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 10) g;";

/// `app`'s migration, snapshotted: its slot exists in database `app`.
async fn migrated(name: &str) -> Pair {
    let app = harness::pair(name).await;
    exec(&app.source().await, SCHEMA).await;
    let mut cmd = app.walrelay();
    cmd.arg("snapshot");
    harness::run(cmd).await.assert_success();
    assert!(
        app.slot_exists().await,
        "the snapshot should create the slot"
    );
    app
}

/// `walrelay` for `other`'s databases, with `slot` as its slot name.
fn walrelay_with_slot(other: &Pair, slot: &str) -> Command {
    let mut cmd = harness::walrelay();
    cmd.args([
        "--source",
        &other.source_url,
        "--target",
        &other.target_url,
        "--slot",
        slot,
        "--publication",
        &other.publication,
    ]);
    cmd
}

/// The operator of `app2` reuses the slot name of `app`'s running
/// migration (the default `walrelay` for both): `cleanup --yes` for `app2`
/// must leave `app`'s slot and publication alone, drop nothing, and say
/// whose the slot is and how to go on.
#[tokio::test]
async fn cleanup_leaves_the_slot_of_another_databases_migration() {
    let app = migrated("cleanup_app").await;
    let app2 = harness::pair("cleanup_app2").await;
    exec(&app2.source().await, SCHEMA).await;
    exec(&app2.target().await, "CREATE SCHEMA walrelay").await;

    let mut cmd = walrelay_with_slot(&app2, &app.slot);
    cmd.args(["cleanup", "--yes"]);
    let run = harness::run(cmd).await;
    run.assert_failure();
    assert!(
        app.slot_exists().await,
        "cleanup for {} dropped the slot of {}'s migration:\n{run}",
        app2.source_db,
        app.source_db
    );
    assert!(app.publication_exists().await, "{run}");
    let text = run.output();
    for word in [&app.source_db, "pgoutput", "--slot", "not active"] {
        assert!(
            text.contains(word),
            "the refusal should name {word:?}:\n{run}"
        );
    }
    assert_eq!(
        harness::value(
            &app2.target().await,
            "SELECT (to_regnamespace('walrelay') IS NOT NULL)::text"
        )
        .await,
        "true",
        "a refused cleanup must drop nothing:\n{run}"
    );
}

/// The snapshot of `app2` on a slot name `app`'s migration holds refuses
/// with whose slot it is and advises another `--slot`, never the cleanup
/// that would drop `app`'s slot.
#[tokio::test]
async fn slot_of_another_database_is_named_and_never_advised_for_cleanup() {
    let app = migrated("cleanup_slot_app").await;
    let app2 = harness::pair("cleanup_slot_app2").await;
    exec(&app2.source().await, SCHEMA).await;

    let mut cmd = walrelay_with_slot(&app2, &app.slot);
    cmd.arg("snapshot");
    let run = harness::run(cmd).await;
    run.assert_failure();
    let text = run.output();
    for advice in ["walrelay cleanup", "pg_drop_replication_slot"] {
        assert!(
            !text.contains(advice),
            "the refusal must not advise dropping {}'s slot ({advice}):\n{run}",
            app.source_db
        );
    }
    for word in [&app.source_db, "--slot"] {
        assert!(
            text.contains(word),
            "the refusal should name {word:?}:\n{run}"
        );
    }
    assert!(app.slot_exists().await, "{run}");
}

/// Cleanup still drops a slot of its own database (the guard is on the
/// database, not on every existing slot).
#[tokio::test]
async fn cleanup_drops_the_slot_of_its_own_database() {
    let app = migrated("cleanup_own").await;
    let mut cmd = app.walrelay();
    cmd.args(["cleanup", "--yes"]);
    harness::run(cmd).await.assert_success();
    assert!(!app.slot_exists().await, "the slot should be gone");
    assert!(!app.publication_exists().await);
}
