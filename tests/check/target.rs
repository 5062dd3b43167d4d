//! Target findings: a role that cannot create schemas, tables it cannot
//! write, and a `session_replication_role` it may not set.

use crate::harness::{exec, pair};
use crate::{check_cmd, check_json, check_pair, mentions, WELL_FORMED};

#[tokio::test]
async fn a_target_role_that_cannot_create_schemas_is_a_blocker() {
    let pair = pair("check_tgt_schema").await;
    exec(&pair.source().await, WELL_FORMED).await;
    let target = pair.target_cluster();
    let (role, password) = target.create_role("noschema", "").await;
    let url = target.url_as(&role, &password, &pair.target_db);
    let checked = check_json(check_cmd(&pair.source_url, &url, &pair.slot)).await;
    let f = checked.expect("target_create_schema", "blocker");
    mentions("target_create_schema fix", &f.fix, &["GRANT CREATE"]);

    exec(
        &pair.target().await,
        &format!("GRANT CREATE ON DATABASE {} TO {role}", pair.target_db),
    )
    .await;
    let checked = check_json(check_cmd(&pair.source_url, &url, &pair.slot)).await;
    checked.expect_none("target_create_schema", "blocker");
}

#[tokio::test]
async fn target_tables_the_role_cannot_write_are_blockers() {
    let pair = pair("check_tgt_write").await;
    exec(&pair.source().await, WELL_FORMED).await;
    let target = pair.target_cluster();
    let admin = pair.target().await;
    // The table exists on the target (as with --schema skip), owned by
    // someone else; the role may create schemas but not write there.
    exec(
        &admin,
        "CREATE TABLE items (id bigint PRIMARY KEY, name text)",
    )
    .await;
    let (role, password) = target.create_role("nowrite", "").await;
    exec(
        &admin,
        &format!(
            "GRANT CREATE ON DATABASE {db} TO {role}; GRANT USAGE ON SCHEMA public TO {role}; \
             GRANT SELECT ON items TO {role};",
            db = pair.target_db
        ),
    )
    .await;
    let url = target.url_as(&role, &password, &pair.target_db);
    let checked = check_json(check_cmd(&pair.source_url, &url, &pair.slot)).await;
    let f = checked.expect_about("target_write", "blocker", "items");
    mentions("target_write fix", &f.fix, &["GRANT"]);
    checked.expect_none("target_create_schema", "blocker");

    exec(
        &admin,
        &format!("GRANT INSERT, UPDATE, DELETE, TRUNCATE ON items TO {role}"),
    )
    .await;
    let checked = check_json(check_cmd(&pair.source_url, &url, &pair.slot)).await;
    checked.expect_none("target_write", "blocker");
}

#[tokio::test]
async fn session_replication_role_not_permitted_is_a_warning() {
    let pair = pair("check_srr").await;
    exec(&pair.source().await, WELL_FORMED).await;
    let target = pair.target_cluster();
    let (role, password) = target.create_role("owner", "").await;
    let admin = pair.target().await;
    exec(
        &admin,
        &format!("ALTER DATABASE {} OWNER TO {role}", pair.target_db),
    )
    .await;
    let url = target.url_as(&role, &password, &pair.target_db);
    let checked = check_json(check_cmd(&pair.source_url, &url, &pair.slot)).await;
    let f = checked.expect("session_replication_role", "warning");
    mentions(
        "session_replication_role fix",
        &f.fix,
        &["superuser", "GRANT SET"],
    );
    assert_eq!(
        checked.run.code,
        Some(0),
        "a database owner is a usable target; warnings alone must not fail check:\n{}",
        checked.list()
    );

    // PostgreSQL 15+: the parameter privilege makes it permitted.
    exec(
        &admin,
        &format!("GRANT SET ON PARAMETER session_replication_role TO {role}"),
    )
    .await;
    let checked = check_json(check_cmd(&pair.source_url, &url, &pair.slot)).await;
    checked.expect_none("session_replication_role", "warning");
}

#[tokio::test]
async fn a_read_only_target_database_is_a_blocker() {
    let pair = pair("check_tgt_read_only").await;
    exec(&pair.source().await, WELL_FORMED).await;
    let admin = pair.target().await;
    exec(
        &admin,
        &format!(
            "ALTER DATABASE {} SET default_transaction_read_only = on",
            pair.target_db
        ),
    )
    .await;
    let checked = check_pair(&pair).await;
    let f = checked.expect("target_read_only", "blocker");
    mentions(
        "target_read_only problem",
        &f.problem,
        &["default_transaction_read_only"],
    );
    assert!(
        f.fix.contains("ALTER DATABASE") && f.fix.contains("default_transaction_read_only = off"),
        "the fix should be the ALTER DATABASE statement: {f:?}"
    );

    exec(
        &admin,
        &format!(
            "ALTER DATABASE {} RESET default_transaction_read_only",
            pair.target_db
        ),
    )
    .await;
    let checked = check_pair(&pair).await;
    checked.expect_none("target_read_only", "blocker");
}
