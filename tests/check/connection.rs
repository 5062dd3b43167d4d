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

/// Without a password in the URLs, the password comes from the file named
/// by `PGPASSFILE`, as libpq (and walrelay's `pg_dump` children) read it;
/// the same file readable by others is ignored, as libpq ignores it.
#[tokio::test]
async fn a_password_file_supplies_a_missing_password_like_libpq() {
    use std::os::unix::fs::PermissionsExt;
    let pair = pair("check_pgpass").await;
    exec(&pair.source().await, WELL_FORMED).await;
    let (source, target) = (pair.source_cluster(), pair.target_cluster());
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("pgpass");
    let escape = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
    let line = |c: &harness::Cluster, db: &str| {
        format!(
            "127.0.0.1:{}:{db}:postgres:{}\n",
            c.port,
            escape(&c.password)
        )
    };
    let text = format!(
        "{}{}",
        line(source, &pair.source_db),
        line(target, &pair.target_db)
    );
    std::fs::write(&file, text).expect("write the password file");
    let no_password =
        |c: &harness::Cluster, db: &str| format!("postgresql://postgres@127.0.0.1:{}/{db}", c.port);
    let checked_with_mode = |mode: u32| {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let mut cmd = check_cmd(
            &no_password(source, &pair.source_db),
            &no_password(target, &pair.target_db),
            &pair.slot,
        );
        cmd.env("PGPASSFILE", &file).env_remove("PGPASSWORD");
        check_json(cmd)
    };
    let checked = checked_with_mode(0o600).await;
    checked.expect("source_connect", "ok");
    checked.expect("target_connect", "ok");
    let checked = checked_with_mode(0o644).await;
    checked.expect("source_connect", "blocker");
    mentions(
        "ignored file",
        &checked.run.stderr,
        &["group or world access"],
    );
}

/// An empty `--target` or `WALRELAY_TARGET` is refused by name instead of
/// silently meaning localhost:5432/postgres.
#[tokio::test]
async fn an_empty_target_is_refused_not_taken_for_localhost() {
    let pair = pair("check_empty_target").await;
    let mut by_flag = harness::walrelay();
    by_flag.args(["--source", &pair.source_url, "--target", "", "check"]);
    let mut by_env = harness::walrelay();
    by_env
        .args(["--source", &pair.source_url, "check"])
        .env("WALRELAY_TARGET", "  ");
    for cmd in [by_flag, by_env] {
        let run = harness::run(cmd).await;
        run.assert_failure();
        mentions("refusal", &run.stderr, &["target connection string: empty"]);
    }
}

/// A listener on 127.0.0.1 that accepts connections and never answers.
async fn silent_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    port
}

#[tokio::test]
async fn a_server_that_accepts_but_never_answers_times_out_naming_the_host() {
    let pair = pair("check_silent").await;
    let port = silent_server().await;
    let silent = format!("postgres://u@127.0.0.1:{port}/db?connect_timeout=2");
    let host = format!("127.0.0.1:{port}");

    let started = std::time::Instant::now();
    let run = harness::run_with_timeout(
        {
            let mut cmd = check_cmd(&silent, &pair.target_url, &pair.slot);
            cmd.args(["check", "--json"]);
            cmd
        },
        std::time::Duration::from_secs(30),
    )
    .await;
    let took = started.elapsed();
    assert!(took.as_secs_f64() < 6.0, "check took {took:?}:\n{run}");
    assert_eq!(run.code, Some(1), "{run}");
    let report: crate::Report = serde_json::from_str(&run.stdout).expect("a JSON report");
    let f = report
        .findings
        .iter()
        .find(|f| f.code == "source_connect" && f.severity == "blocker")
        .unwrap_or_else(|| panic!("no source_connect blocker:\n{run}"));
    mentions("silent source", &f.problem, &[&host]);
    mentions("silent source", &f.problem, &["connect_timeout"]);

    let started = std::time::Instant::now();
    let mut cmd = harness::walrelay();
    cmd.args([
        "--source", &silent, "--target", &silent, "--slot", &pair.slot, "status",
    ]);
    let run = harness::run_with_timeout(cmd, std::time::Duration::from_secs(30)).await;
    let took = started.elapsed();
    assert!(took.as_secs_f64() < 6.0, "status took {took:?}:\n{run}");
    assert_ne!(run.code, Some(0), "{run}");
    assert!(
        run.output().contains(&host),
        "status should name {host}:\n{run}"
    );
}
