//! Connection findings: an unreachable end, a wrong password or a missing
//! database on either side, and a pooler in front of the source that lets
//! SQL through but not replication.

use crate::harness::{self, exec, pair, Bouncer};
use crate::{check_cmd, check_json, mentions, WELL_FORMED};

#[tokio::test]
async fn unreachable_wrong_password_or_missing_database_on_the_source() {
    let pair = pair("check_src_conn").await;
    let cluster = pair.source_cluster();
    let nobody = harness::free_port();
    let cases = [
        (
            "unreachable",
            format!(
                "postgresql://postgres:{}@127.0.0.1:{nobody}/{}",
                cluster.password, pair.source_db
            ),
        ),
        (
            "wrong password",
            cluster.url_as("postgres", "wrong-password", &pair.source_db),
        ),
        ("missing database", cluster.url("no_such_database")),
    ];
    for (case, url) in cases {
        let checked = check_json(check_cmd(&url, &pair.target_url, &pair.slot)).await;
        let f = checked.expect("source_connect", "blocker");
        assert_eq!(checked.run.code, Some(1), "{case}: {}", checked.run);
        match case {
            "unreachable" => mentions(case, &f.problem, &[&nobody.to_string(), "refused"]),
            "wrong password" => mentions(case, &f.problem, &["password", "authentication"]),
            _ => mentions(case, &f.problem, &["no_such_database", "does not exist"]),
        }
    }
}

#[tokio::test]
async fn unreachable_wrong_password_or_missing_database_on_the_target() {
    let pair = pair("check_tgt_conn").await;
    exec(&pair.source().await, WELL_FORMED).await;
    let cluster = pair.target_cluster();
    let nobody = harness::free_port();
    let cases = [
        (
            "unreachable",
            format!(
                "postgresql://postgres:{}@127.0.0.1:{nobody}/{}",
                cluster.password, pair.target_db
            ),
        ),
        (
            "wrong password",
            cluster.url_as("postgres", "wrong-password", &pair.target_db),
        ),
        ("missing database", cluster.url("no_such_database")),
    ];
    for (case, url) in cases {
        let checked = check_json(check_cmd(&pair.source_url, &url, &pair.slot)).await;
        let f = checked.expect("target_connect", "blocker");
        assert_eq!(checked.run.code, Some(1), "{case}: {}", checked.run);
        match case {
            "unreachable" => mentions(case, &f.problem, &[&nobody.to_string(), "refused"]),
            "wrong password" => mentions(case, &f.problem, &["password", "authentication"]),
            _ => mentions(case, &f.problem, &["no_such_database", "does not exist"]),
        }
        // The source side was still checked.
        checked.expect("wal_level", "ok");
    }
}

#[tokio::test]
async fn a_pooler_in_front_of_the_source_is_a_blocker() {
    let pair = pair("check_pooler").await;
    exec(&pair.source().await, WELL_FORMED).await;
    let cluster = pair.source_cluster();
    let bouncer = Bouncer::start(cluster, &[("postgres", &cluster.password)]);
    let url = bouncer.url_as("postgres", &cluster.password, &pair.source_db);
    // Ordinary SQL goes through the pooler...
    let client = harness::connect(&url).await;
    assert_eq!(harness::value(&client, "SELECT 1").await, "1");
    // ...but replication does not.
    let checked = check_json(check_cmd(&url, &pair.target_url, &pair.slot)).await;
    let f = checked.expect("pooler", "blocker");
    mentions("pooler fix", &f.fix, &["direct"]);
    // Through the pooler, the source itself is reachable and logical.
    checked.expect("source_connect", "ok");
    drop(bouncer);
}
