//! Bad input refused before the copy, leaving nothing half-done: an
//! unreachable end, a wrong password or a missing database, a source without
//! `wal_level=logical`, and a slot walrelay did not create.

use crate::harness::{self, exec, pair, value};
use crate::{assert_mentions, assert_nothing_left, drop_slot, snapshot, snapshot_recorded};

#[tokio::test]
async fn unreachable_wrong_password_or_missing_database_leave_nothing() {
    let pair = pair("snap_conn").await;
    exec(
        &pair.source().await,
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);",
    )
    .await;
    let src = pair.source_cluster();
    let tgt = pair.target_cluster();
    let nobody = harness::free_port();
    let unreachable = |db: &str, password: &str| {
        format!("postgresql://postgres:{password}@127.0.0.1:{nobody}/{db}")
    };
    // Each case: the message must name the end (its word or its address)
    // and the reason.
    let src_end = |db: &str| vec!["source".to_string(), format!("/{db}")];
    let tgt_end = |db: &str| vec!["target".to_string(), format!("/{db}")];
    let refused = vec![nobody.to_string(), "refused".to_string()];
    let auth = vec!["password".to_string(), "authentication".to_string()];
    let missing = vec!["no_such_db".to_string()];
    let cases: Vec<(&str, String, String, Vec<Vec<String>>)> = vec![
        (
            "source unreachable",
            unreachable(&pair.source_db, &src.password),
            pair.target_url.clone(),
            vec![src_end(&pair.source_db), refused.clone()],
        ),
        (
            "source wrong password",
            src.url_as("postgres", "wrong-password", &pair.source_db),
            pair.target_url.clone(),
            vec![src_end(&pair.source_db), auth.clone()],
        ),
        (
            "source missing database",
            src.url("no_such_db"),
            pair.target_url.clone(),
            vec![src_end("no_such_db"), missing.clone()],
        ),
        (
            "target unreachable",
            pair.source_url.clone(),
            unreachable(&pair.target_db, &tgt.password),
            vec![tgt_end(&pair.target_db), refused],
        ),
        (
            "target wrong password",
            pair.source_url.clone(),
            tgt.url_as("postgres", "wrong-password", &pair.target_db),
            vec![tgt_end(&pair.target_db), auth],
        ),
        (
            "target missing database",
            pair.source_url.clone(),
            tgt.url("no_such_db"),
            vec![tgt_end("no_such_db"), missing],
        ),
    ];
    for (case, source_url, target_url, words) in cases {
        let mut cmd = harness::walrelay();
        cmd.args([
            "--source",
            &source_url,
            "--target",
            &target_url,
            "--slot",
            &pair.slot,
            "--publication",
            &pair.publication,
            "snapshot",
        ]);
        let run = harness::run(cmd).await;
        assert!(
            matches!(run.code, Some(c) if c != 0),
            "{case}: expected failure:\n{run}"
        );
        let stderr = run.stderr.to_lowercase();
        for group in &words {
            assert!(
                group.iter().any(|w| stderr.contains(&w.to_lowercase())),
                "{case}: stderr should mention one of {group:?}:\n{run}"
            );
        }
        assert!(
            !run.output().contains("wrong-password"),
            "{case}: the password was printed:\n{run}"
        );
        assert_nothing_left(&pair, &run).await;
    }
}

#[tokio::test]
async fn wal_level_replica_is_refused() {
    // The shared target cluster has wal_level=replica: use it as the source.
    let pair = pair("snap_wal_level").await;
    let tgt = pair.target_cluster();
    let as_source = pair.target().await;
    exec(
        &as_source,
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);",
    )
    .await;
    let other = tgt.create_database("snap_wal_level_t").await;
    let mut cmd = harness::walrelay();
    cmd.args([
        "--source",
        &pair.target_url,
        "--target",
        &tgt.url(&other),
        "--slot",
        &pair.slot,
        "--publication",
        &pair.publication,
        "snapshot",
    ]);
    let run = harness::run(cmd).await;
    run.assert_failure();
    assert_mentions(&run, &["wal_level", "logical"]);
    assert_eq!(
        value(
            &as_source,
            &format!(
                "SELECT count(*) FROM pg_publication WHERE pubname = '{}'",
                pair.publication
            )
        )
        .await,
        "0",
        "a publication was left behind:\n{run}"
    );
    assert!(!snapshot_recorded(&tgt.connect(&other).await, &pair.slot).await);
}

#[tokio::test]
async fn someone_elses_slot_is_refused_and_kept() {
    let pair = pair("snap_foreign_slot").await;
    let source = pair.source().await;
    exec(
        &source,
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);",
    )
    .await;
    exec(
        &source,
        &format!(
            "SELECT pg_create_logical_replication_slot('{}', 'pgoutput')",
            pair.slot
        ),
    )
    .await;
    let run = snapshot(&pair, &[]).await;
    run.assert_failure();
    assert_mentions(&run, &[&pair.slot]);
    let lower = run.stderr.to_lowercase();
    assert!(
        lower.contains("pg_drop_replication_slot") || lower.contains("--slot"),
        "the message should say how to clean up (drop the slot or pick another --slot):\n{run}"
    );
    assert!(
        pair.slot_exists().await,
        "walrelay dropped a slot that is not its own"
    );
    assert!(
        !pair.publication_exists().await,
        "publication left behind:\n{run}"
    );
    let target = pair.target().await;
    assert!(!snapshot_recorded(&target, &pair.slot).await);
    if value(&target, "SELECT to_regclass('public.t') IS NOT NULL").await == "t" {
        assert_eq!(
            value(&target, "SELECT count(*) FROM public.t").await,
            "0",
            "rows were copied:\n{run}"
        );
    }
    drop_slot(&pair).await;
}

#[tokio::test]
async fn every_table_without_a_usable_identity_is_named_with_its_fix() {
    let pair = pair("snap_no_identity").await;
    exec(
        &pair.source().await,
        "CREATE TABLE keyed (id int PRIMARY KEY);
         CREATE TABLE loose_a (v int);
         CREATE TABLE loose_b (v text);
         CREATE SCHEMA other;
         CREATE TABLE other.loose_c (v date);
         INSERT INTO loose_a VALUES (1);",
    )
    .await;
    let run = snapshot(&pair, &[]).await;
    run.assert_failure();
    for (schema, name) in [
        ("public", "loose_a"),
        ("public", "loose_b"),
        ("other", "loose_c"),
    ] {
        assert_mentions(
            &run,
            &[
                &format!("ALTER TABLE \"{schema}\".\"{name}\" REPLICA IDENTITY FULL"),
                &format!("--exclude-table {schema}.{name}"),
            ],
        );
    }
    assert!(
        !run.stderr.contains("keyed"),
        "a table with a primary key was named:\n{run}"
    );
    assert_nothing_left(&pair, &run).await;
}

/// The operator's own publication (`--publication`) with a row filter and a
/// column list: `SET TABLE` would drop them silently. Refused, naming what
/// it has and what to do, and the publication is left as it was. One
/// without them but with another table list is changed, and the log says so.
#[tokio::test]
async fn an_operators_publication_is_never_changed_silently() {
    let pair = pair("snap_user_pub").await;
    let source = pair.source().await;
    exec(
        &source,
        &format!(
            "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE u (id int PRIMARY KEY, v text);
             INSERT INTO t VALUES (1, 'a'), (2, 'b'); INSERT INTO u VALUES (1, 'a');
             CREATE PUBLICATION {} FOR TABLE t WHERE (id > 1), u (id);",
            pair.publication
        ),
    )
    .await;
    let published = format!(
        "SELECT string_agg(tablename || ':' || coalesce(rowfilter, '-') || ':' || attnames::text, ' ' ORDER BY tablename)
         FROM pg_publication_tables WHERE pubname = '{}'",
        pair.publication
    );
    let before = value(&source, &published).await;
    let run = snapshot(&pair, &[]).await;
    run.assert_failure();
    assert_mentions(
        &run,
        &[
            &pair.publication,
            "public.t (row filter)",
            "public.u (column list)",
            "--publication",
        ],
    );
    assert_eq!(
        value(&source, &published).await,
        before,
        "the publication was changed:\n{run}"
    );
    assert!(!pair.slot_exists().await, "slot left behind:\n{run}");
    assert!(!snapshot_recorded(&pair.target().await, &pair.slot).await);

    // Without filters, publishing only u: walrelay sets its list, and says so.
    exec(
        &source,
        &format!(
            "DROP PUBLICATION {0}; CREATE PUBLICATION {0} FOR TABLE u",
            pair.publication
        ),
    )
    .await;
    let run = snapshot(&pair, &[]).await;
    run.assert_success();
    assert_mentions(&run, &[&pair.publication, "SET TABLE"]);
    drop_slot(&pair).await;
}
