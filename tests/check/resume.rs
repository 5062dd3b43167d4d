//! What `check` says about resuming walrelay's own slot: not when its
//! publication was dropped (a new snapshot is needed), and not an
//! unfinished snapshot when no slot is free for the resume's temporary one.

use std::time::Duration;

use crate::harness::{self, exec, pair, shared, Cluster, Options};
use crate::{check_cmd, check_json, check_pair, mentions, WELL_FORMED};

#[tokio::test]
async fn a_dropped_publication_needs_a_new_snapshot() {
    let pair = pair("check_pub_dropped").await;
    let source = pair.source().await;
    exec(&source, WELL_FORMED).await;
    let mut snapshot = pair.walrelay();
    snapshot.args(["snapshot", "--jobs", "1"]);
    harness::run(snapshot).await.assert_success();
    exec(&source, "INSERT INTO items VALUES (1001, 'streamed')").await;
    let mut stream = pair.walrelay();
    stream.args(["stream", "--stop-after", "2s"]);
    harness::run(stream).await.assert_success();

    exec(&source, &format!("DROP PUBLICATION {}", pair.publication)).await;
    exec(&source, "INSERT INTO items VALUES (1002, 'lost')").await;
    let checked = check_pair(&pair).await;
    let f = checked.expect("publication_missing", "blocker");
    mentions(
        "publication_missing problem",
        &f.problem,
        &[&pair.publication],
    );
    mentions("publication_missing problem", &f.problem, &["new snapshot"]);
    mentions("publication_missing problem", &f.problem, &["recreating"]);
    assert!(
        f.fix.contains("walrelay cleanup --yes") && f.fix.contains("walrelay snapshot"),
        "the fix is cleanup, then a new snapshot: {f:?}"
    );
    // Nothing may promise that the slot resumes.
    checked.expect_none("slot_exists", "warning");

    // The stream's own error says the same.
    let mut stream = pair.walrelay();
    stream.args(["stream", "--stop-after", "60s"]);
    let run = harness::run_with_timeout(stream, Duration::from_secs(90)).await;
    run.assert_failure();
    let out = run.output();
    for words in ["cleanup --yes", "new snapshot", "recreating"] {
        assert!(
            out.contains(words),
            "stream's error should say {words:?}:\n{run}"
        );
    }
    assert!(pair.slot_exists().await, "check must not drop the slot");
    exec(
        &source,
        &format!("SELECT pg_drop_replication_slot('{}')", pair.slot),
    )
    .await;
}

#[tokio::test]
async fn resuming_a_snapshot_without_a_free_slot_is_a_blocker() {
    let cluster = Cluster::start(
        Options::source()
            .label("resume_slots")
            .set("max_replication_slots", "1"),
    );
    let db = cluster.create_database("check_resume").await;
    exec(&cluster.connect(&db).await, WELL_FORMED).await;
    let target_db = shared().target.create_database("check_resume").await;
    let (source, target) = (cluster.url(&db), shared().target.url(&target_db));
    let slot = "walrelay_resume_test";
    let mut snapshot = check_cmd(&source, &target, slot);
    snapshot.args(["snapshot", "--jobs", "1"]);
    harness::run(snapshot).await.assert_success();

    // An interrupted copy: the resume needs a temporary slot beside ours.
    let admin = shared().target.connect(&target_db).await;
    exec(&admin, "UPDATE walrelay.snapshot SET phase = 'copy'").await;
    let checked = check_json(check_cmd(&source, &target, slot)).await;
    let f = checked.expect("resume_slot", "blocker");
    mentions("resume_slot problem", &f.problem, &["temporary slot"]);
    mentions("resume_slot fix", &f.fix, &["max_replication_slots"]);

    // A finished snapshot streams from the slot it has: no free slot needed.
    exec(&admin, "UPDATE walrelay.snapshot SET phase = 'done'").await;
    let checked = check_json(check_cmd(&source, &target, slot)).await;
    checked.expect_none("resume_slot", "blocker");
    checked.expect_none("replication_slots", "blocker");
    checked.expect("slot_exists", "warning");
}
