//! Every refusal for a missing privilege names it and the statement that
//! grants it, before anything is created where it can be known first.

use super::*;

const APP: &str = "CREATE TABLE items (id bigserial PRIMARY KEY, v text);
                   INSERT INTO items (v) SELECT 'v' || g FROM generate_series(1, 10) g;";

async fn snapshot(cloud: &Cloud) -> harness::Run {
    let mut cmd = cloud.pair.walrelay();
    cmd.args(["snapshot", "--table", "public.*"]);
    let run = harness::run(cmd).await;
    assert_eq!(run.code, Some(1), "{run}");
    run
}

#[tokio::test]
async fn a_source_role_without_replication_is_told_the_grant_before_anything_exists() {
    let cloud = Cloud::new("refuse_replication", true).await;
    cloud.source_app(APP).await;
    exec(
        &cloud.source().await,
        &format!("ALTER ROLE {} NOREPLICATION", cloud.source_role),
    )
    .await;
    let run = snapshot(&cloud).await;
    let grant = format!("ALTER ROLE \"{}\" REPLICATION;", cloud.source_role);
    assert!(run.stderr.contains(&grant), "{run}");
    assert!(!cloud.pair.publication_exists().await, "{run}");
}

#[tokio::test]
async fn a_target_role_without_create_is_told_the_grant() {
    let cloud = Cloud::new("refuse_create", true).await;
    cloud.source_app(APP).await;
    exec(
        &cloud.target().await,
        &format!(
            "ALTER DATABASE {db} OWNER TO postgres; REVOKE CREATE ON DATABASE {db} FROM PUBLIC;",
            db = cloud.admin.target_db
        ),
    )
    .await;
    let run = snapshot(&cloud).await;
    let grant = format!(
        "GRANT CREATE ON DATABASE \"{}\" TO \"{}\";",
        cloud.admin.target_db, cloud.target_role
    );
    assert!(run.stderr.contains(&grant), "{run}");
    assert!(!cloud.pair.publication_exists().await, "{run}");
}

#[tokio::test]
async fn a_publication_the_role_cannot_create_is_told_the_grant() {
    let cloud = Cloud::new("refuse_publication", true).await;
    // The tables belong to someone else; the role may read them.
    exec(
        &cloud.source().await,
        &format!("{APP} GRANT SELECT ON items TO {};", cloud.source_role),
    )
    .await;
    let run = snapshot(&cloud).await;
    assert!(
        run.stderr.contains("creating publication")
            && run
                .stderr
                .contains(&format!("ALTER TABLE … OWNER TO \"{}\"", cloud.source_role))
            && run.stderr.contains("CREATE PUBLICATION"),
        "{run}"
    );
    assert!(!cloud.pair.slot_exists().await, "{run}");
}

#[tokio::test]
async fn a_fence_by_a_role_that_does_not_own_the_database_is_told_the_grant() {
    let cloud = Cloud::new("refuse_fence", true).await;
    cloud.source_app(APP).await;
    let mut cmd = cloud.pair.walrelay();
    cmd.args(["snapshot", "--table", "public.*"]);
    harness::run(cmd).await.assert_success();
    let mut cmd = cloud.pair.walrelay();
    cmd.args(["stream", "--table", "public.*", "--stop-after", "120s"]);
    let mut stream = stream_support::Stream::spawn(cmd);
    stream_support::catch_up(&cloud.pair, &mut stream).await;
    exec(
        &cloud.source().await,
        &format!("ALTER DATABASE {} OWNER TO postgres", cloud.admin.source_db),
    )
    .await;
    let mut cmd = cloud.pair.walrelay();
    cmd.args(["cutover", "--table", "public.*", "--fence"]);
    let run = harness::run(cmd).await;
    assert_eq!(run.code, Some(1), "{run}");
    let grant = format!(
        "ALTER DATABASE \"{}\" OWNER TO \"{}\";",
        cloud.admin.source_db, cloud.source_role
    );
    assert!(run.stderr.contains(&grant), "{run}");
    stream.stop().await;
}

#[tokio::test]
async fn check_names_a_sequence_cutover_could_not_read_with_its_grant() {
    let cloud = Cloud::new("refuse_sequence", true).await;
    cloud.source_app(APP).await;
    // A sequence of another owner that the application's default uses.
    exec(
        &cloud.source().await,
        &format!(
            "CREATE SEQUENCE public.ticket_no;
             GRANT USAGE ON SEQUENCE public.ticket_no TO {role};
             ALTER TABLE items ADD COLUMN ticket bigint DEFAULT nextval('public.ticket_no');",
            role = cloud.source_role
        ),
    )
    .await;
    let mut cmd = cloud.pair.walrelay();
    cmd.args(["check", "--table", "public.*"]);
    let run = harness::run(cmd).await;
    assert_eq!(run.code, Some(1), "{run}");
    let grant = format!(
        "GRANT SELECT ON SEQUENCE \"public\".\"ticket_no\" TO \"{}\";",
        cloud.source_role
    );
    assert!(
        run.stdout.contains("[sequence_read] public.ticket_no") && run.stdout.contains(&grant),
        "{run}"
    );
}
