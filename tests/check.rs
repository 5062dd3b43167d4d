//! `walrelay check` against real clusters set up to show each finding.
//!
//! Findings are matched on `code` + `severity` from `check --json`; every
//! blocker or warning a test provokes must carry a non-empty `fix` that
//! names the remedy.

mod harness;

use std::process::Command;
use std::time::Duration;

use harness::{exec, pair, shared, Bouncer, Cluster, Daemon, Options, Pair, Run};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
struct Finding {
    code: String,
    severity: String,
    subject: String,
    problem: String,
    fix: String,
}

#[derive(Debug, Deserialize)]
struct Report {
    findings: Vec<Finding>,
}

struct Checked {
    run: Run,
    findings: Vec<Finding>,
}

impl Checked {
    fn list(&self) -> String {
        self.findings
            .iter()
            .map(|f| {
                format!(
                    "  {} {} [{}]: {} | fix: {}",
                    f.severity, f.code, f.subject, f.problem, f.fix
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// All findings with this code and severity.
    fn all(&self, code: &str, severity: &str) -> Vec<&Finding> {
        self.findings
            .iter()
            .filter(|f| f.code == code && f.severity == severity)
            .collect()
    }

    /// The one finding with this code and severity (panics listing all
    /// findings when there is none), checked to carry a fix.
    fn expect(&self, code: &str, severity: &str) -> &Finding {
        let found = self.all(code, severity);
        let Some(f) = found.first() else {
            panic!(
                "expected a {severity} `{code}`; findings:\n{}\n{}",
                self.list(),
                self.run
            );
        };
        assert!(
            severity == "ok" || (!f.problem.trim().is_empty() && !f.fix.trim().is_empty()),
            "{severity} `{code}` without problem or fix: {f:?}"
        );
        f
    }

    /// The finding about `subject` (a table name) with this code and severity.
    fn expect_about(&self, code: &str, severity: &str, subject: &str) -> &Finding {
        self.all(code, severity)
            .into_iter()
            .find(|f| f.subject.contains(subject) || f.problem.contains(subject))
            .unwrap_or_else(|| {
                panic!(
                    "expected a {severity} `{code}` about {subject}; findings:\n{}",
                    self.list()
                )
            })
    }

    fn expect_none(&self, code: &str, severity: &str) {
        let found = self.all(code, severity);
        assert!(
            found.is_empty(),
            "expected no {severity} `{code}`; findings:\n{}",
            self.list()
        );
    }

    fn expect_none_about(&self, code: &str, severity: &str, subject: &str) {
        let found: Vec<_> = self
            .all(code, severity)
            .into_iter()
            .filter(|f| f.subject.contains(subject) || f.problem.contains(subject))
            .collect();
        assert!(
            found.is_empty(),
            "expected no {severity} `{code}` about {subject}; findings:\n{}",
            self.list()
        );
    }

    fn blockers(&self) -> Vec<&Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == "blocker")
            .collect()
    }

    /// Exit status 1 with at least one blocker, 0 without any.
    fn assert_exit_matches_blockers(&self) {
        let expected = if self.blockers().is_empty() { 0 } else { 1 };
        assert_eq!(
            self.run.code,
            Some(expected),
            "exit code does not match the blockers:\n{}\n{}",
            self.list(),
            self.run
        );
    }
}

/// Asserts that `text` mentions one of `words` (case-insensitive).
fn mentions(what: &str, text: &str, words: &[&str]) {
    let lower = text.to_lowercase();
    assert!(
        words.iter().any(|w| lower.contains(&w.to_lowercase())),
        "{what} {text:?} should mention one of {words:?}"
    );
}

fn check_cmd(source: &str, target: &str, slot: &str) -> Command {
    let mut cmd = harness::walrelay();
    cmd.args(["--source", source, "--target", target, "--slot", slot]);
    cmd
}

/// Runs `check --json` and parses the report.
async fn check_json(mut cmd: Command) -> Checked {
    cmd.args(["check", "--json"]);
    let run = harness::run(cmd).await;
    let report: Report = serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
        panic!("check --json did not print a JSON report ({e}):\n{run}");
    });
    let checked = Checked {
        run,
        findings: report.findings,
    };
    checked.assert_exit_matches_blockers();
    checked
}

async fn check_pair(pair: &Pair) -> Checked {
    check_json(pair.walrelay()).await
}

const WELL_FORMED: &str = "CREATE TABLE items (id bigint PRIMARY KEY, name text);
     INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 100) g;";

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
    exec(&preparer, "ROLLBACK PREPARED 'walrelay_test_gid'").await;
    exec(&holder, "ROLLBACK").await;
    let checked = check_json(check_cmd(&source, &target, "walrelay_test")).await;
    checked.expect_none("prepared_xacts", "warning");
    checked.expect_none("long_xacts", "warning");
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
    mentions("wal_keep_size fix", &f.fix, &["max_slot_wal_keep_size"]);
    // The shared source has no limit (-1): no warning there.
    let pair = pair("check_walkeep_none").await;
    exec(&pair.source().await, WELL_FORMED).await;
    check_pair(&pair)
        .await
        .expect_none("wal_keep_size", "warning");
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
