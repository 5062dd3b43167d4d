//! Errors are classified by SQLSTATE and the catalog, never by the server's
//! words: with both servers speaking German (`lc_messages = de_DE.UTF-8`),
//! a wrong password, a missing database, a missing privilege, a slot held by
//! another consumer and a lost slot still get their English hint or
//! decision and the right exit code. Each cluster is first shown to really
//! answer in German, so the tests cannot pass vacuously.

#[path = "harness/mod.rs"]
mod harness;
#[path = "stream_support/mod.rs"]
mod stream_support;

use std::process::Command;
use std::time::Duration;

use harness::{exec, Client, Cluster, Options, Pair, Run};
use serde_json::Value;
use stream_support::{catch_up, drop_slot, setup, Stream};

const LOCALE: &str = "de_DE.UTF-8";

/// A dedicated cluster whose server messages are German.
async fn german(options: Options, label: &str) -> Cluster {
    harness::ensure_locale(LOCALE);
    let cluster = Cluster::start(options.label(label).set("lc_messages", LOCALE));
    assert_speaks_german(&cluster.connect("postgres").await).await;
    cluster
}

async fn assert_speaks_german(client: &Client) {
    let err = client
        .simple_query("SELECT 1/0")
        .await
        .expect_err("division by zero");
    let text = harness::error_text(&err);
    assert!(
        text.contains("Division durch Null"),
        "the server should answer in German: {text}"
    );
}

/// `walrelay --source S --target T --slot … --publication … ARGS` for `pair`'s names.
fn walrelay(source: &str, target: &str, pair: &Pair, args: &[&str]) -> Command {
    let mut cmd = harness::walrelay();
    cmd.args(["--source", source, "--target", target])
        .args(["--slot", &pair.slot, "--publication", &pair.publication])
        .args(args);
    cmd
}

/// The finding with this code and severity from `check --json`.
async fn check_finding(cmd: Command, code: &str, severity: &str) -> (Run, Value) {
    let run = harness::run(cmd).await;
    let report: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("check --json did not print a report ({e}):\n{run}"));
    let finding = report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["code"] == code && f["severity"] == severity)
        .cloned()
        .unwrap_or_else(|| panic!("no {severity} {code}:\n{run}"));
    (run, finding)
}

fn field<'a>(finding: &'a Value, name: &str) -> &'a str {
    finding[name].as_str().unwrap_or_default()
}

/// A `stream` that must stop by itself with exit 1 (a definite error),
/// not retry: it gets a minute.
async fn stream_stops(cmd: Command, why: &str) -> Run {
    let run = harness::run_with_timeout(cmd, Duration::from_secs(60)).await;
    assert_eq!(
        run.code,
        Some(1),
        "{why}: the stream must stop with exit 1:\n{run}"
    );
    run
}

fn mentions(run: &Run, words: &[&str]) {
    for word in words {
        assert!(
            run.stderr.contains(word),
            "the output should mention {word:?}:\n{run}"
        );
    }
}

#[tokio::test]
async fn german_servers_wrong_password_missing_database_and_missing_privilege_are_classified() {
    let source = german(Options::source(), "de-source").await;
    let target = german(Options::target(), "de-target").await;
    let pair = stream_support::pair_on(&source, &target, "de_errors").await;
    setup(&pair, "CREATE TABLE t (id int PRIMARY KEY, v text);", "").await;

    // A wrong password: the hint, and a stream that stops instead of retrying.
    let wrong = source.url_as("postgres", "wrong-password", &pair.source_db);
    let (run, f) = check_finding(
        walrelay(&wrong, &pair.target_url, &pair, &["check", "--json"]),
        "source_connect",
        "blocker",
    )
    .await;
    assert!(
        field(&f, "problem").contains("Passwort"),
        "German server text expected: {f}\n{run}"
    );
    assert!(field(&f, "fix").contains("user and password"), "{f}");
    let wrong = target.url_as("postgres", "wrong-password", &pair.target_db);
    // The cause is printed once, not again for each error that wraps it.
    let run = harness::run(walrelay(&pair.source_url, &wrong, &pair, &["status"])).await;
    assert_ne!(run.code, Some(0), "{run}");
    assert_eq!(
        run.stderr.matches("Passwort-Authentifizierung").count(),
        1,
        "the server's message once:\n{run}"
    );
    stream_stops(
        walrelay(&pair.source_url, &wrong, &pair, &["stream"]),
        "wrong password",
    )
    .await;

    // A missing database.
    let missing = target.url("no_such_database");
    let (run, f) = check_finding(
        walrelay(&pair.source_url, &missing, &pair, &["check", "--json"]),
        "target_connect",
        "blocker",
    )
    .await;
    assert!(
        field(&f, "problem").contains("existiert nicht"),
        "German server text expected: {f}\n{run}"
    );
    assert!(field(&f, "fix").contains("database name"), "{f}");
    stream_stops(
        walrelay(&pair.source_url, &missing, &pair, &["stream"]),
        "missing database",
    )
    .await;

    // A target role that may not read walrelay's state: the resume point
    // cannot be read, which retrying does not fix.
    let (role, password) = target.create_role("de_noaccess", "NOSUPERUSER").await;
    let unprivileged = target.url_as(&role, &password, &pair.target_db);
    let run = stream_stops(
        walrelay(&pair.source_url, &unprivileged, &pair, &["stream"]),
        "missing privilege on the target",
    )
    .await;
    mentions(&run, &["Berechtigung", "42501"]);

    // A source role without REPLICATION: found in the catalog, not in the
    // walsender's German refusal.
    let (role, password) = source.create_role("de_norepl", "NOSUPERUSER").await;
    exec(
        &source.connect(&pair.source_db).await,
        &format!("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"),
    )
    .await;
    let no_replication = source.url_as(&role, &password, &pair.source_db);
    let run = stream_stops(
        walrelay(&no_replication, &pair.target_url, &pair, &["stream"]),
        "a source role without REPLICATION",
    )
    .await;
    mentions(&run, &["REPLICATION"]);
    drop_slot(&pair).await;
}

#[tokio::test]
async fn german_source_slot_held_by_another_stream_exits_1_naming_its_pid() {
    let source = german(Options::source(), "de-held-source").await;
    let target = german(Options::target(), "de-held-target").await;
    let pair = stream_support::pair_on(&source, &target, "de_held").await;
    setup(&pair, "CREATE TABLE t (id int PRIMARY KEY, v text);", "").await;
    let mut first = Stream::start(&pair, &[]);
    exec(&pair.source().await, "INSERT INTO t VALUES (1, 'a')").await;
    catch_up(&pair, &mut first).await;
    let sql = pair.source().await;
    let pid = harness::value(
        &sql,
        &format!(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = '{}'",
            pair.slot
        ),
    )
    .await;
    // The server's own words for this condition are German.
    let err = sql
        .simple_query(&format!("SELECT pg_drop_replication_slot('{}')", pair.slot))
        .await
        .expect_err("the slot is active");
    let text = harness::error_text(&err);
    assert!(
        !text.contains("is active") && text.contains(&pid),
        "German server text expected: {text}"
    );

    let run = stream_stops(pair.walrelay_stream(), "a held slot").await;
    mentions(
        &run,
        &[&format!("pid {pid}"), "another consumer", &pair.slot],
    );
    first.stop().await;
    drop_slot(&pair).await;
}

#[tokio::test]
async fn german_source_lost_slot_stops_the_stream_saying_a_new_snapshot_is_needed() {
    let source = german(
        Options::source()
            .set("max_slot_wal_keep_size", "1MB")
            .set("min_wal_size", "32MB")
            .set("max_wal_size", "32MB"),
        "de-lost-source",
    )
    .await;
    let target = german(Options::target(), "de-lost-target").await;
    let pair = stream_support::pair_on(&source, &target, "de_lost").await;
    setup(&pair, "CREATE TABLE t (id int PRIMARY KEY, v text);", "").await;
    lose_slot(&pair).await;
    let run = stream_stops(pair.walrelay_stream(), "a lost slot").await;
    mentions(&run, &[&pair.slot, "wal_status = lost", "new snapshot"]);
    // `check` must not promise that anything resumes from it.
    let mut cmd = pair.walrelay();
    cmd.args(["check", "--json"]);
    let checked = harness::run(cmd).await;
    assert_eq!(
        checked.code,
        Some(1),
        "a lost slot is a blocker:\n{checked}"
    );
    assert!(
        checked.stdout.contains("\"slot_lost\"") && !checked.stdout.contains("resumes it"),
        "check should report the lost slot, not a resume:\n{checked}"
    );
}

/// Writes WAL past `max_slot_wal_keep_size` until a checkpoint invalidates
/// the (idle) slot.
async fn lose_slot(pair: &Pair) {
    let source = pair.source().await;
    let status = format!(
        "SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = '{}'",
        pair.slot
    );
    for round in 0..40 {
        if harness::value(&source, &status).await == "lost" {
            return;
        }
        exec(
            &source,
            &format!(
                "INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series({0} * 10000 + 1, ({0} + 1) * 10000) g;
                 SELECT pg_switch_wal(); CHECKPOINT;",
                round
            ),
        )
        .await;
    }
    panic!(
        "the slot was not invalidated: {}",
        harness::value(&source, &status).await
    );
}

trait StreamCommand {
    fn walrelay_stream(&self) -> Command;
}

impl StreamCommand for Pair {
    /// `walrelay … stream --stop-after 120s`.
    fn walrelay_stream(&self) -> Command {
        let mut cmd = self.walrelay();
        cmd.args(["stream", "--stop-after", "120s"]);
        cmd
    }
}
