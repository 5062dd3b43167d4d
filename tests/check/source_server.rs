//! Source findings about the server: `wal_level`, no free replication slot
//! or WAL sender, open and prepared transactions, a small
//! `max_slot_wal_keep_size`. Most run on a dedicated cluster with the
//! setting at hand.

use std::process::Command;
use std::time::Duration;

use crate::harness::{self, exec, pair, shared, Cluster, Daemon, Options};
use crate::{check_cmd, check_json, check_pair, mentions, WELL_FORMED};

#[tokio::test]
async fn wal_level_replica_is_a_blocker() {
    // The shared target cluster runs with wal_level=replica: use it as source.
    let pair = pair("check_wal_level").await;
    let target = pair.target_cluster();
    exec(&pair.target().await, WELL_FORMED).await;
    let other_target = target.create_database("check_wal_level_t").await;
    let checked = check_json(check_cmd(
        &pair.target_url,
        &target.url(&other_target),
        &pair.slot,
    ))
    .await;
    let f = checked.expect("wal_level", "blocker");
    mentions("wal_level fix", &f.fix, &["wal_level"]);
    mentions("wal_level fix", &f.fix, &["logical"]);
}

/// A fresh database with a well-formed table on a dedicated cluster, and a
/// target database on the shared target.
async fn dedicated(cluster: &Cluster, name: &str) -> (String, String) {
    let db = cluster.create_database(name).await;
    exec(&cluster.connect(&db).await, WELL_FORMED).await;
    let target = shared().target.create_database(name).await;
    (cluster.url(&db), shared().target.url(&target))
}

#[tokio::test]
async fn no_free_replication_slot_is_a_blocker() {
    let cluster = Cluster::start(
        Options::source()
            .label("slots")
            .set("max_replication_slots", "1"),
    );
    let (source, target) = dedicated(&cluster, "check_slots").await;
    exec(
        &cluster.connect("postgres").await,
        "SELECT pg_create_logical_replication_slot('someone_elses', 'pgoutput')",
    )
    .await;
    let checked = check_json(check_cmd(&source, &target, "walrelay_test")).await;
    let f = checked.expect("replication_slots", "blocker");
    mentions("replication_slots fix", &f.fix, &["max_replication_slots"]);
    checked.expect_none("wal_senders", "blocker");
}

#[tokio::test]
async fn no_free_wal_sender_is_a_blocker() {
    let cluster = Cluster::start(
        Options::source()
            .label("senders")
            .set("max_wal_senders", "1"),
    );
    let (source, target) = dedicated(&cluster, "check_senders").await;
    // Occupy the only WAL sender with a physical streaming client.
    let wal_dir = tempfile::tempdir().expect("tempdir");
    let mut receiver = Command::new(harness::pg_bin("pg_receivewal"));
    receiver
        .arg("-D")
        .arg(wal_dir.path())
        .arg("-d")
        .arg(cluster.url("postgres"))
        .arg("--no-loop");
    let _receiver = Daemon::spawn(receiver);
    let admin = cluster.connect("postgres").await;
    harness::wait_for(Duration::from_secs(30), "pg_receivewal to stream", || {
        let admin = &admin;
        async move {
            let n = harness::value(admin, "SELECT count(*) FROM pg_stat_replication").await;
            (n == "1").then_some(())
        }
    })
    .await;
    let checked = check_json(check_cmd(&source, &target, "walrelay_test")).await;
    let f = checked.expect("wal_senders", "blocker");
    mentions("wal_senders fix", &f.fix, &["max_wal_senders"]);
    // The connection is direct: calling it a pooler would send the user
    // looking for the wrong problem.
    checked.expect_none("pooler", "blocker");
}

#[tokio::test]
async fn open_and_prepared_transactions_are_warnings() {
    // Slot creation waits for them cluster-wide: keep them off the shared source.
    let cluster = Cluster::start(Options::source().label("xacts"));
    let (source, target) = dedicated(&cluster, "check_xacts").await;
    let db = source.rsplit('/').next().unwrap().to_string();
    let holder = cluster.connect(&db).await;
    exec(
        &holder,
        "BEGIN; INSERT INTO items VALUES (1000, 'open'); SELECT pg_current_xact_id();",
    )
    .await;
    let preparer = cluster.connect(&db).await;
    exec(
        &preparer,
        "BEGIN; INSERT INTO items VALUES (1001, 'prepared'); PREPARE TRANSACTION 'walrelay_test_gid';",
    )
    .await;
    let checked = check_json(check_cmd(&source, &target, "walrelay_test")).await;
    let f = checked.expect("prepared_xacts", "warning");
    mentions(
        "prepared_xacts",
        &format!("{} {}", f.problem, f.fix),
        &["walrelay_test_gid"],
    );
    mentions(
        "prepared_xacts fix",
        &f.fix,
        &["COMMIT PREPARED", "ROLLBACK PREPARED"],
    );
    // Slot creation waits for every transaction holding an xid, however young.
    checked.expect("long_xacts", "warning");
    assert_eq!(
        checked.run.code,
        Some(0),
        "warnings alone must not fail check:\n{}",
        checked.list()
    );
    // A role without pg_read_all_stats sees the transaction but not its
    // start: still a warning, never a crash on the hidden value.
    let (role, password) = cluster.create_role("xviewer", "REPLICATION").await;
    let viewer = cluster.url_as(&role, &password, &db);
    let checked = check_json(check_cmd(&viewer, &target, "walrelay_test")).await;
    checked.expect("long_xacts", "warning");
    exec(&preparer, "ROLLBACK PREPARED 'walrelay_test_gid'").await;
    exec(&holder, "ROLLBACK").await;
    let checked = check_json(check_cmd(&source, &target, "walrelay_test")).await;
    checked.expect_none("prepared_xacts", "warning");
    checked.expect_none("long_xacts", "warning");
}

#[tokio::test]
async fn a_prepared_transaction_of_a_dropped_role_is_a_warning() {
    // pg_prepared_xacts shows owner NULL once the role is gone: still the
    // warning, never a crash on the missing name.
    let cluster = Cluster::start(Options::source().label("orphan_xact"));
    let (source, target) = dedicated(&cluster, "check_orphan_xact").await;
    let db = source.rsplit('/').next().unwrap().to_string();
    let (role, password) = cluster.create_role("xorphan", "").await;
    let admin = cluster.connect(&db).await;
    exec(&admin, &format!("GRANT INSERT ON items TO {role}")).await;
    let preparer = harness::connect(&cluster.url_as(&role, &password, &db)).await;
    exec(
        &preparer,
        "BEGIN; INSERT INTO items VALUES (1002, 'orphan'); PREPARE TRANSACTION 'walrelay_orphan_gid';",
    )
    .await;
    exec(
        &admin,
        &format!("REVOKE ALL ON items FROM {role}; DROP ROLE {role}"),
    )
    .await;
    let checked = check_json(check_cmd(&source, &target, "walrelay_test")).await;
    let f = checked.expect("prepared_xacts", "warning");
    mentions("prepared_xacts", &f.problem, &["walrelay_orphan_gid"]);
    exec(&admin, "ROLLBACK PREPARED 'walrelay_orphan_gid'").await;
}

/// Any cap can be outrun by a long copy or a target outage: a large one is
/// a warning too, pointing at the spool.
#[tokio::test]
async fn any_max_slot_wal_keep_size_is_a_warning_pointing_at_the_spool() {
    let cluster = Cluster::start(
        Options::source()
            .label("walkeep_large")
            .set("max_slot_wal_keep_size", "100GB"),
    );
    let (source, target) = dedicated(&cluster, "check_walkeep_large").await;
    let checked = check_json(check_cmd(&source, &target, "walrelay_test")).await;
    let f = checked.expect("wal_keep_size", "warning");
    mentions("wal_keep_size problem", &f.problem, &["102400 MB"]);
    mentions("wal_keep_size fix", &f.fix, &["--spool-dir"]);
}

#[tokio::test]
async fn a_small_max_slot_wal_keep_size_is_a_warning() {
    let cluster = Cluster::start(
        Options::source()
            .label("walkeep")
            .set("max_slot_wal_keep_size", "1MB"),
    );
    let (source, target) = dedicated(&cluster, "check_walkeep").await;
    let checked = check_json(check_cmd(&source, &target, "walrelay_test")).await;
    let f = checked.expect("wal_keep_size", "warning");
    mentions(
        "wal_keep_size fix",
        &f.fix,
        &["max_slot_wal_keep_size", "--spool-dir"],
    );
    // The shared source has no limit (-1): no warning there.
    let pair = pair("check_walkeep_none").await;
    exec(&pair.source().await, WELL_FORMED).await;
    check_pair(&pair)
        .await
        .expect_none("wal_keep_size", "warning");
}
