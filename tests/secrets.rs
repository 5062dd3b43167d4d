//! No password ever reaches stdout or stderr: `check` and `snapshot`, with
//! passing and failing connections, text and JSON logs at debug level,
//! URLs (percent-encoded) and keyword/value strings, flags and variables.

mod harness;

use std::process::Command;

use harness::{exec, pair, Pair, Run};

/// A distinctive password with characters that need percent-encoding.
fn canary(n: u64) -> (String, String) {
    let plain = format!("Zq7!Canary#S3cret-{n}");
    let encoded = plain.replace('!', "%21").replace('#', "%23");
    (plain, encoded)
}

fn assert_no_secret(run: &Run, secrets: &[&str]) {
    let all = run.output();
    for secret in secrets {
        assert!(
            !all.contains(secret),
            "the password {secret:?} was printed:\n{run}"
        );
    }
    // The distinctive core of the canary, in any form.
    assert!(
        !all.contains("Canary#S3cret") && !all.contains("Canary%23S3cret"),
        "the password was printed:\n{run}"
    );
}

/// A login superuser with the canary password on both clusters.
async fn canary_role(pair: &Pair) -> (String, String, String) {
    let n = harness::unique();
    let (plain, encoded) = canary(n);
    let role = format!("canary_{n}");
    for cluster in [pair.source_cluster(), pair.target_cluster()] {
        exec(
            &cluster.connect("postgres").await,
            &format!("CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{plain}'"),
        )
        .await;
    }
    (role, plain, encoded)
}

fn url(port: u16, user: &str, encoded_password: &str, db: &str) -> String {
    format!("postgresql://{user}:{encoded_password}@127.0.0.1:{port}/{db}")
}

fn keyword_value(port: u16, user: &str, password: &str, db: &str) -> String {
    format!("host=127.0.0.1 port={port} user={user} password='{password}' dbname={db}")
}

fn debug_walrelay() -> Command {
    let mut cmd = harness::walrelay();
    cmd.env("WALRELAY_LOG", "debug");
    cmd
}

#[tokio::test]
async fn check_never_prints_the_password() {
    let pair = pair("secret_check").await;
    exec(
        &pair.source().await,
        "CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items VALUES (1);",
    )
    .await;
    let (role, plain, encoded) = canary_role(&pair).await;
    let sp = pair.source_cluster().port;
    let tp = pair.target_cluster().port;
    let source_url = url(sp, &role, &encoded, &pair.source_db);
    let target_url = url(tp, &role, &encoded, &pair.target_db);
    let secrets = [plain.as_str(), encoded.as_str()];

    // Passing, URLs as flags, text logs.
    let mut cmd = debug_walrelay();
    cmd.args(["--source", &source_url, "--target", &target_url])
        .args(["--slot", &pair.slot, "check"]);
    let run = harness::run(cmd).await;
    run.assert_success();
    assert_no_secret(&run, &secrets);

    // Passing, keyword/value strings in the environment, JSON report and logs.
    let mut cmd = debug_walrelay();
    cmd.env(
        "WALRELAY_SOURCE",
        keyword_value(sp, &role, &plain, &pair.source_db),
    )
    .env(
        "WALRELAY_TARGET",
        keyword_value(tp, &role, &plain, &pair.target_db),
    )
    .args([
        "--log-format",
        "json",
        "--slot",
        &pair.slot,
        "check",
        "--json",
    ]);
    let run = harness::run(cmd).await;
    run.assert_success();
    assert_no_secret(&run, &secrets);

    // Failing: a wrong (distinctive) password on the source.
    let (wrong_plain, wrong_encoded) = canary(harness::unique() + 1_000_000);
    let mut cmd = debug_walrelay();
    cmd.args([
        "--source",
        &url(sp, &role, &wrong_encoded, &pair.source_db),
        "--target",
        &target_url,
        "--slot",
        &pair.slot,
        "check",
    ]);
    let run = harness::run(cmd).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert_no_secret(&run, &[&plain, &encoded, &wrong_plain, &wrong_encoded]);

    // Failing: nothing listens there.
    let nobody = harness::free_port();
    let mut cmd = debug_walrelay();
    cmd.args([
        "--source",
        &source_url,
        "--target",
        &keyword_value(nobody, &role, &plain, &pair.target_db),
        "--log-format",
        "json",
        "--slot",
        &pair.slot,
        "check",
        "--json",
    ]);
    let run = harness::run(cmd).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert_no_secret(&run, &secrets);
}

#[tokio::test]
async fn snapshot_never_prints_the_password() {
    let pair = pair("secret_snapshot").await;
    exec(
        &pair.source().await,
        "CREATE TABLE items (id int PRIMARY KEY, v text);
         INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 100) g;",
    )
    .await;
    let (role, plain, encoded) = canary_role(&pair).await;
    let sp = pair.source_cluster().port;
    let tp = pair.target_cluster().port;
    let source_url = url(sp, &role, &encoded, &pair.source_db);
    let target_url = url(tp, &role, &encoded, &pair.target_db);
    let secrets = [plain.as_str(), encoded.as_str()];
    let globals = |cmd: &mut Command, source: &str, target: &str| {
        cmd.args(["--source", source, "--target", target]).args([
            "--slot",
            &pair.slot,
            "--publication",
            &pair.publication,
        ]);
    };

    // Failing first (nothing may be left half-done), then passing.
    let (wrong_plain, wrong_encoded) = canary(harness::unique() + 2_000_000);
    let mut cmd = debug_walrelay();
    globals(
        &mut cmd,
        &source_url,
        &url(tp, &role, &wrong_encoded, &pair.target_db),
    );
    cmd.arg("snapshot");
    let run = harness::run(cmd).await;
    run.assert_failure();
    assert_no_secret(&run, &[&plain, &encoded, &wrong_plain, &wrong_encoded]);

    let nobody = harness::free_port();
    let mut cmd = debug_walrelay();
    globals(
        &mut cmd,
        &keyword_value(nobody, &role, &plain, &pair.source_db),
        &target_url,
    );
    cmd.args(["--log-format", "json", "snapshot"]);
    let run = harness::run(cmd).await;
    run.assert_failure();
    assert_no_secret(&run, &secrets);

    let mut cmd = debug_walrelay();
    globals(&mut cmd, &source_url, &target_url);
    cmd.args(["--log-format", "json", "snapshot", "--jobs", "2"]);
    let run = harness::run(cmd).await;
    run.assert_success();
    assert_no_secret(&run, &secrets);
    harness::assert_same_rows(
        &pair.source().await,
        &pair.target().await,
        "items",
        "id",
        100,
    )
    .await;
    exec(
        &pair.source_cluster().connect("postgres").await,
        &format!("SELECT pg_drop_replication_slot('{}')", pair.slot),
    )
    .await;
}
