//! What `check` reports on a sound setup (no blockers, nothing created) and
//! how its human output prints each problem with its fix.

use crate::harness::{self, exec, pair};
use crate::{check_pair, WELL_FORMED};

#[tokio::test]
async fn a_sound_setup_has_no_blockers() {
    let pair = pair("check_sound").await;
    exec(&pair.source().await, WELL_FORMED).await;
    let checked = check_pair(&pair).await;
    assert!(
        checked.blockers().is_empty(),
        "blockers on a sound setup:\n{}\n{}",
        checked.list(),
        checked.run
    );
    assert_eq!(checked.run.code, Some(0));
    checked.expect("wal_level", "ok");
    // Nothing was created by a check.
    assert!(!pair.slot_exists().await, "check created the slot");
    assert!(
        !pair.publication_exists().await,
        "check created the publication"
    );
}

#[tokio::test]
async fn human_output_prints_each_problem_and_fix() {
    let pair = pair("check_human").await;
    exec(
        &pair.source().await,
        "CREATE TABLE no_key (a int, b text); INSERT INTO no_key VALUES (1, 'x');",
    )
    .await;
    let json = check_pair(&pair).await;
    let blocker = json.expect_about("replica_identity", "blocker", "no_key");

    let mut cmd = pair.walrelay();
    cmd.arg("check");
    let human = harness::run(cmd).await;
    assert_eq!(human.code, Some(1), "{human}");
    assert!(
        human.stdout.contains(&blocker.problem) && human.stdout.contains(&blocker.fix),
        "human output lacks the problem/fix of {blocker:?}:\n{human}"
    );
    assert!(
        human.stdout.contains("replica_identity") || human.stdout.contains("no_key"),
        "{human}"
    );
}
