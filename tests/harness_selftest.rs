//! The harness itself: clusters come up with the right settings, databases
//! are fresh, SCRAM logins work and wrong passwords do not.

mod harness;

use harness::{column, connect, pair, shared, try_connect, value, Cluster, Options};

#[tokio::test]
async fn source_is_logical_and_target_is_not() {
    let shared = shared();
    let source = shared.source.connect("postgres").await;
    let target = shared.target.connect("postgres").await;
    assert_eq!(value(&source, "SHOW wal_level").await, "logical");
    assert_eq!(value(&target, "SHOW wal_level").await, "replica");
    for setting in ["max_replication_slots", "max_wal_senders"] {
        let n: i64 = value(&source, &format!("SHOW {setting}"))
            .await
            .parse()
            .unwrap();
        assert!(n >= 10, "{setting} = {n}");
    }
    assert_eq!(value(&source, "SHOW wal_sender_timeout").await, "10s");
    assert_eq!(value(&source, "SHOW max_prepared_transactions").await, "10");
    assert_eq!(value(&source, "SHOW listen_addresses").await, "127.0.0.1");
    assert_eq!(
        value(&source, "SHOW password_encryption").await,
        "scram-sha-256"
    );
    assert_ne!(shared.source.port, shared.target.port);
}

#[tokio::test]
async fn pairs_are_fresh_and_distinct() {
    let a = pair("selftest").await;
    let b = pair("selftest").await;
    assert_ne!(a.source_db, b.source_db);
    assert_ne!(a.target_db, b.target_db);
    assert_ne!(a.slot, b.slot);
    assert_ne!(a.publication, b.publication);
    let sa = a.source().await;
    harness::exec(&sa, "CREATE TABLE only_in_a (id int)").await;
    let sb = b.source().await;
    let tables = column(
        &sb,
        "SELECT relname FROM pg_class WHERE relname = 'only_in_a'",
    )
    .await;
    assert!(tables.is_empty(), "databases are shared: {tables:?}");
    assert_eq!(value(&sa, "SELECT current_database()").await, a.source_db);
    assert_eq!(
        value(&a.target().await, "SELECT current_database()").await,
        a.target_db
    );
}

#[tokio::test]
async fn scram_login_works_and_a_wrong_password_fails() {
    let shared = shared();
    let admin = shared.source.connect("postgres").await;
    // The superuser's password is stored as a SCRAM verifier.
    let stored = value(
        &admin,
        "SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'",
    )
    .await;
    assert!(stored.starts_with("SCRAM-SHA-256$"), "{stored}");
    let (role, password) = shared.source.create_role("selftest_login", "").await;
    let url = shared.source.url_as(&role, &password, "postgres");
    let client = connect(&url).await;
    assert_eq!(value(&client, "SELECT current_user").await, role);

    let wrong = shared.source.url_as(&role, "not-the-password", "postgres");
    let err = match try_connect(&wrong).await {
        Ok(_) => panic!("a wrong password was accepted"),
        Err(e) => harness::error_text(&e),
    };
    assert!(err.contains("password authentication failed"), "{err}");
    let wrong_super = shared.target.url_as("postgres", "nope", "postgres");
    assert!(try_connect(&wrong_super).await.is_err());
}

#[tokio::test]
async fn dedicated_cluster_takes_custom_settings_and_goes_away() {
    let cluster = Cluster::start(
        Options::target()
            .label("selftest")
            .set("max_replication_slots", "1"),
    );
    let data = cluster.data_dir();
    assert!(data.join("postmaster.pid").exists());
    let client = cluster.connect("postgres").await;
    assert_eq!(value(&client, "SHOW max_replication_slots").await, "1");
    assert_eq!(value(&client, "SHOW wal_level").await, "replica");
    drop(client);
    let url = cluster.url("postgres");
    drop(cluster);
    assert!(!data.exists(), "{} left behind", data.display());
    assert!(try_connect(&url).await.is_err(), "server still running");
}

#[test]
fn wait_until_polls_and_times_out() {
    let mut n = 0;
    harness::wait_until(std::time::Duration::from_secs(5), "three polls", || {
        n += 1;
        n == 3
    });
    assert_eq!(n, 3);
    let timed_out = std::panic::catch_unwind(|| {
        harness::wait_until(
            std::time::Duration::from_millis(50),
            "something that never happens",
            || false,
        )
    });
    assert!(timed_out.is_err());
}

#[tokio::test]
async fn comparisons_detect_differences() {
    let p = pair("selftest_compare").await;
    let (s, t) = (p.source().await, p.target().await);
    let ddl = "CREATE TABLE c (id int PRIMARY KEY, v float8, j json);";
    harness::exec(&s, ddl).await;
    harness::exec(&t, ddl).await;
    harness::exec(
        &s,
        "INSERT INTO c VALUES (1, 0.1, '{\"a\": 1}'), (2, 'NaN', null)",
    )
    .await;
    harness::exec(
        &t,
        "INSERT INTO c VALUES (1, 0.1, '{\"a\": 1}'), (2, 'NaN', null)",
    )
    .await;
    harness::assert_same_rows(&s, &t, "c", "id", 2).await;
    assert_eq!(
        harness::schema_fingerprint(&s).await,
        harness::schema_fingerprint(&t).await
    );

    // A value that differs only in JSON whitespace is a difference.
    harness::exec(&t, "UPDATE c SET j = '{\"a\":1}' WHERE id = 1").await;
    let (s_url, t_url) = (p.source_url.clone(), p.target_url.clone());
    let differs = tokio::spawn(async move {
        let (s, t) = (connect(&s_url).await, connect(&t_url).await);
        harness::assert_same_rows(&s, &t, "c", "id", 0).await;
    })
    .await;
    assert!(
        differs.is_err_and(|e| e.is_panic()),
        "a changed row went unnoticed"
    );

    // A missing row is a difference.
    harness::exec(
        &t,
        "UPDATE c SET j = '{\"a\": 1}' WHERE id = 1; DELETE FROM c WHERE id = 2",
    )
    .await;
    let (s_url, t_url) = (p.source_url.clone(), p.target_url.clone());
    let differs = tokio::spawn(async move {
        let (s, t) = (connect(&s_url).await, connect(&t_url).await);
        harness::assert_same_rows(&s, &t, "c", "id", 0).await;
    })
    .await;
    assert!(
        differs.is_err_and(|e| e.is_panic()),
        "a missing row went unnoticed"
    );

    // An index, a constraint or a sequence only on one side is a difference.
    for extra in [
        "CREATE INDEX c_v ON c (v)",
        "ALTER TABLE c ADD CONSTRAINT c_v_positive CHECK (v > 0)",
        "CREATE SEQUENCE c_seq INCREMENT 7",
    ] {
        let t2 = p.target().await;
        harness::exec(&t2, &format!("BEGIN; {extra}")).await;
        assert_ne!(
            harness::schema_fingerprint(&s).await,
            harness::schema_fingerprint(&t2).await,
            "{extra} went unnoticed"
        );
        harness::exec(&t2, "ROLLBACK").await;
    }
}

#[test]
fn a_missing_pgbouncer_is_named_with_how_to_get_it() {
    let empty = tempfile::tempdir().unwrap();
    let missing = harness::find_pgbouncer(&[empty.path().to_path_buf()]).unwrap_err();
    for words in [
        "pgbouncer not found",
        "scripts/test",
        "apt-get install pgbouncer",
    ] {
        assert!(missing.contains(words), "{words:?} missing: {missing}");
    }
    std::fs::write(empty.path().join("pgbouncer"), "").unwrap();
    assert_eq!(
        harness::find_pgbouncer(&[empty.path().to_path_buf()]).unwrap(),
        empty.path().join("pgbouncer")
    );
}

/// The major version `postgres --version` of `bindir` reports.
fn major_of(bindir: &std::path::Path) -> u32 {
    let out = std::process::Command::new(bindir.join("postgres"))
        .arg("--version")
        .output()
        .expect("postgres --version");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_whitespace()
        .last()
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("no version in {text:?}"))
}

#[tokio::test]
async fn a_cluster_runs_the_major_version_asked_for() {
    // This machine's default, and every version `scripts/test` fetched.
    let mut majors = vec![major_of(harness::bindir())];
    let fetched = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).with_file_name("pg-versions");
    for entry in std::fs::read_dir(fetched).into_iter().flatten().flatten() {
        if let Some(major) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
            majors.push(major);
        }
    }
    for major in majors {
        let cluster = Cluster::start(Options::source().label("version").version(major));
        let client = cluster.connect("postgres").await;
        let num: i64 = value(&client, "SHOW server_version_num")
            .await
            .parse()
            .unwrap();
        assert_eq!(num / 10000, i64::from(major));
        assert_eq!(value(&client, "SHOW wal_level").await, "logical");
    }
}

#[test]
fn a_missing_major_version_says_how_to_get_it() {
    let missing = harness::version_bindir(9).unwrap_err();
    for words in [
        "PostgreSQL 9 not found",
        "WALRELAY_TEST_PG_MAJORS=9 scripts/test",
    ] {
        assert!(missing.contains(words), "{words:?} missing: {missing}");
    }
}
