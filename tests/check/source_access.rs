//! Source findings about the role and the tables: a role without
//! REPLICATION, a table it cannot read, row-level security it cannot bypass,
//! and tables without a usable replica identity.

use crate::harness::{exec, pair};
use crate::{check_cmd, check_json, check_pair, mentions, WELL_FORMED};

#[tokio::test]
async fn a_role_without_replication_is_a_blocker() {
    let pair = pair("check_role").await;
    let source = pair.source().await;
    exec(&source, WELL_FORMED).await;
    let cluster = pair.source_cluster();
    let (role, password) = cluster.create_role("norepl", "NOREPLICATION").await;
    exec(
        &source,
        &format!("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"),
    )
    .await;
    let url = cluster.url_as(&role, &password, &pair.source_db);
    let checked = check_json(check_cmd(&url, &pair.target_url, &pair.slot)).await;
    let f = checked.expect("replication_role", "blocker");
    mentions("replication_role fix", &f.fix, &["REPLICATION"]);

    // With REPLICATION the same role passes that check.
    exec(&source, &format!("ALTER ROLE {role} REPLICATION")).await;
    let checked = check_json(check_cmd(&url, &pair.target_url, &pair.slot)).await;
    checked.expect_none("replication_role", "blocker");
    checked.expect_none("table_read", "blocker");
}

#[tokio::test]
async fn an_unreadable_table_is_a_blocker() {
    let pair = pair("check_read").await;
    let source = pair.source().await;
    exec(
        &source,
        "CREATE TABLE readable (id int PRIMARY KEY); CREATE TABLE secret (id int PRIMARY KEY);",
    )
    .await;
    let cluster = pair.source_cluster();
    let (role, password) = cluster.create_role("reader", "REPLICATION").await;
    exec(&source, &format!("GRANT SELECT ON readable TO {role}")).await;
    let url = cluster.url_as(&role, &password, &pair.source_db);
    let checked = check_json(check_cmd(&url, &pair.target_url, &pair.slot)).await;
    let f = checked.expect_about("table_read", "blocker", "secret");
    mentions("table_read fix", &f.fix, &["GRANT SELECT", "exclude"]);
    checked.expect_none_about("table_read", "blocker", "readable");

    // Excluding the table removes the blocker.
    let mut cmd = check_cmd(&url, &pair.target_url, &pair.slot);
    cmd.args(["--exclude-table", "public.secret"]);
    let checked = check_json(cmd).await;
    checked.expect_none("table_read", "blocker");
}

#[tokio::test]
async fn row_level_security_without_bypass_is_a_blocker() {
    let pair = pair("check_rls").await;
    let source = pair.source().await;
    exec(
        &source,
        "CREATE TABLE tenant_rows (id int PRIMARY KEY, tenant text);
         INSERT INTO tenant_rows VALUES (1, 'a'), (2, 'b');
         ALTER TABLE tenant_rows ENABLE ROW LEVEL SECURITY;
         CREATE POLICY only_a ON tenant_rows USING (tenant = 'a');
         CREATE TABLE open_rows (id int PRIMARY KEY);",
    )
    .await;
    let cluster = pair.source_cluster();
    let (role, password) = cluster.create_role("rls", "REPLICATION").await;
    exec(
        &source,
        &format!("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"),
    )
    .await;
    let url = cluster.url_as(&role, &password, &pair.source_db);
    let checked = check_json(check_cmd(&url, &pair.target_url, &pair.slot)).await;
    let f = checked.expect_about("row_security", "blocker", "tenant_rows");
    mentions(
        "row_security fix",
        &f.fix,
        &["BYPASSRLS", "ROW LEVEL SECURITY"],
    );
    checked.expect_none_about("row_security", "blocker", "open_rows");

    exec(&source, &format!("ALTER ROLE {role} BYPASSRLS")).await;
    let checked = check_json(check_cmd(&url, &pair.target_url, &pair.slot)).await;
    checked.expect_none("row_security", "blocker");
}

#[tokio::test]
async fn replica_identity_blockers_name_the_table_and_the_fix() {
    let pair = pair("check_identity").await;
    exec(
        &pair.source().await,
        "CREATE TABLE with_pk (id int PRIMARY KEY);
         CREATE TABLE no_pk (a int, b text);
         CREATE TABLE ident_nothing (id int PRIMARY KEY);
         ALTER TABLE ident_nothing REPLICA IDENTITY NOTHING;
         CREATE TABLE ident_index_gone (a int NOT NULL);
         CREATE UNIQUE INDEX ident_index_gone_a ON ident_index_gone (a);
         ALTER TABLE ident_index_gone REPLICA IDENTITY USING INDEX ident_index_gone_a;
         DROP INDEX ident_index_gone_a;
         CREATE TABLE ident_full (a int, b text);
         ALTER TABLE ident_full REPLICA IDENTITY FULL;
         CREATE TABLE ident_index (a int NOT NULL);
         CREATE UNIQUE INDEX ident_index_a ON ident_index (a);
         ALTER TABLE ident_index REPLICA IDENTITY USING INDEX ident_index_a;",
    )
    .await;
    let checked = check_pair(&pair).await;
    assert_eq!(checked.run.code, Some(1));
    for table in ["no_pk", "ident_nothing", "ident_index_gone"] {
        let f = checked.expect_about("replica_identity", "blocker", table);
        assert!(
            f.fix.contains("ALTER TABLE")
                && f.fix.contains("REPLICA IDENTITY")
                && f.fix.contains(table),
            "the fix for {table} should be the exact ALTER TABLE … REPLICA IDENTITY: {f:?}"
        );
    }
    for table in ["with_pk", "ident_full", "ident_index"] {
        // `ident_index` is a prefix of `ident_index_gone`: match the subject exactly.
        let wrong: Vec<_> = checked
            .all("replica_identity", "blocker")
            .into_iter()
            .filter(|f| {
                f.subject == table
                    || f.subject == format!("public.{table}")
                    || f.subject == format!("\"public\".\"{table}\"")
            })
            .collect();
        assert!(
            wrong.is_empty(),
            "{table} has a usable replica identity: {wrong:?}"
        );
    }
    assert_eq!(
        checked.all("replica_identity", "blocker").len(),
        3,
        "{}",
        checked.list()
    );
}

#[tokio::test]
async fn a_role_that_cannot_create_the_publication_is_a_blocker() {
    let pair = pair("check_pub_priv").await;
    let source = pair.source().await;
    exec(
        &source,
        "CREATE TABLE owned_elsewhere (id int PRIMARY KEY); CREATE TABLE also_elsewhere (id int PRIMARY KEY);",
    )
    .await;
    let cluster = pair.source_cluster();
    let (role, password) = cluster.create_role("nopub", "REPLICATION").await;
    exec(
        &source,
        &format!("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"),
    )
    .await;
    let url = cluster.url_as(&role, &password, &pair.source_db);
    let with_publication = || {
        let mut cmd = check_cmd(&url, &pair.target_url, &pair.slot);
        cmd.args(["--publication", &pair.publication]);
        cmd
    };
    let checked = check_json(with_publication()).await;
    let f = checked.expect("publication_privilege", "blocker");
    for table in ["owned_elsewhere", "also_elsewhere"] {
        assert!(
            f.problem.contains(table),
            "the tables not owned are named: {f:?}"
        );
    }
    mentions(
        "publication_privilege problem",
        &f.problem,
        &["CREATE on database"],
    );
    assert!(
        f.fix.contains("CREATE PUBLICATION")
            && f.fix.contains(&format!("{}\" FOR TABLE", pair.publication))
            && f.fix
                .contains(&format!("--publication {}", pair.publication)),
        "the fix prints the statement for the owner and names --publication: {f:?}"
    );

    // Once the owner has created it, walrelay need not: no blocker.
    exec(
        &source,
        &format!(
            "CREATE PUBLICATION {} FOR TABLE owned_elsewhere, also_elsewhere",
            pair.publication
        ),
    )
    .await;
    let checked = check_json(with_publication()).await;
    checked.expect_none("publication_privilege", "blocker");
    exec(&source, &format!("DROP PUBLICATION {}", pair.publication)).await;
}

/// An existing publication with a row filter: `snapshot` refuses it, and
/// check says so before, with the fix.
#[tokio::test]
async fn a_publication_with_row_filters_is_a_blocker() {
    let pair = pair("check_pub_filtered").await;
    let source = pair.source().await;
    exec(&source, WELL_FORMED).await;
    exec(
        &source,
        &format!(
            "CREATE PUBLICATION {} FOR TABLE items WHERE (id > 10)",
            pair.publication
        ),
    )
    .await;
    let checked = check_pair(&pair).await;
    let f = checked.expect("publication_filtered", "blocker");
    mentions(
        "publication_filtered",
        &format!("{} {}", f.problem, f.fix),
        &[
            &pair.publication,
            "public.items (row filter)",
            "--publication",
        ],
    );
    exec(
        &source,
        &format!("ALTER PUBLICATION {} SET TABLE items", pair.publication),
    )
    .await;
    check_pair(&pair)
        .await
        .expect_none("publication_filtered", "blocker");
}

/// Whether the stream can capture schema changes (walrelay's event
/// trigger): a superuser can, a role that is no superuser cannot, and
/// `check` says what the stream then does.
#[tokio::test]
async fn ddl_capture_says_whether_schema_changes_are_followed() {
    let pair = pair("check_ddl_capture").await;
    let source = pair.source().await;
    exec(&source, WELL_FORMED).await;
    let checked = check_json(check_cmd(&pair.source_url, &pair.target_url, &pair.slot)).await;
    let f = checked.expect("ddl_capture", "ok");
    mentions("ddl_capture", &f.problem, &["event trigger", "followed"]);

    let cluster = pair.source_cluster();
    let (role, password) = cluster.create_role("noddl", "REPLICATION").await;
    exec(
        &source,
        &format!("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"),
    )
    .await;
    let url = cluster.url_as(&role, &password, &pair.source_db);
    let checked = check_json(check_cmd(&url, &pair.target_url, &pair.slot)).await;
    let f = checked.expect("ddl_capture", "warning");
    mentions("ddl_capture", &f.problem, &["superuser", "not captured"]);
}
