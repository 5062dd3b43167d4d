//! The slot already exists: someone else's is a blocker (and kept), walrelay's
//! own resumable one left by `snapshot` is a warning.

use crate::harness::{self, exec, pair};
use crate::{check_pair, mentions, WELL_FORMED};

#[tokio::test]
async fn someone_elses_slot_is_a_blocker() {
    let pair = pair("check_foreign_slot").await;
    let source = pair.source().await;
    exec(&source, WELL_FORMED).await;
    exec(
        &source,
        &format!(
            "SELECT pg_create_logical_replication_slot('{}', 'pgoutput')",
            pair.slot
        ),
    )
    .await;
    let checked = check_pair(&pair).await;
    let f = checked.expect("slot_exists", "blocker");
    mentions(
        "slot_exists fix",
        &f.fix,
        &["pg_drop_replication_slot", "--slot"],
    );
    assert!(pair.slot_exists().await, "check must not drop the slot");
    exec(
        &source,
        &format!("SELECT pg_drop_replication_slot('{}')", pair.slot),
    )
    .await;
}

#[tokio::test]
async fn walrelays_own_resumable_slot_is_a_warning() {
    let pair = pair("check_own_slot").await;
    exec(&pair.source().await, WELL_FORMED).await;
    let mut snapshot = pair.walrelay();
    snapshot.args(["snapshot", "--jobs", "1"]);
    harness::run(snapshot).await.assert_success();
    assert!(pair.slot_exists().await, "snapshot leaves the slot");
    let checked = check_pair(&pair).await;
    checked.expect("slot_exists", "warning");
    checked.expect_none("slot_exists", "blocker");
    assert_eq!(checked.run.code, Some(0), "{}", checked.list());
    exec(
        &pair.source().await,
        &format!("SELECT pg_drop_replication_slot('{}')", pair.slot),
    )
    .await;
}
