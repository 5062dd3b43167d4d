//! The source monitor against a real source: the WAL position, and the
//! slot's health (absent, then reserved and inactive), sampled until told
//! to stop.

mod harness;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use walrelay::monitor::{self, slot_health};
use walrelay::pg::connect::{connect, install_crypto_provider};
use walrelay::pg::conninfo::ConnInfo;
use walrelay::status::StatusBoard;

#[tokio::test]
async fn monitor_samples_the_source_position_and_slot_health() {
    install_crypto_provider();
    let pair = harness::pair("monitor").await;
    let info = ConnInfo::parse(&pair.source_url).expect("conninfo");
    let client = connect(&info, "walrelay-test").await.expect("connect");

    let missing = monitor::sample(&client, &pair.slot).await.expect("sample");
    assert!(missing.source_lsn.0 > 0, "a source position is read");
    assert!(missing.slot.is_none(), "no slot yet");

    client
        .execute(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&pair.slot],
        )
        .await
        .expect("create slot");
    let health = slot_health(&client, &pair.slot).await.expect("sample");
    let board = Arc::new(StatusBoard::default());
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(monitor::run(
        info,
        pair.slot.clone(),
        board.clone(),
        Duration::from_millis(100),
        rx,
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    tx.send(true).expect("stop");
    task.await.expect("monitor task");
    client
        .execute("SELECT pg_drop_replication_slot($1)", &[&pair.slot])
        .await
        .expect("drop slot");

    let health = health.expect("the slot exists");
    assert!(!health.active, "nobody streams the slot");
    assert!(health.retained_bytes.is_some());
    assert_eq!(health.wal_status.as_deref(), Some("reserved"));
    assert!(
        board.source_lsn.load(Ordering::Relaxed) >= missing.source_lsn.0,
        "the running monitor published the source position"
    );
}
