//! `walrelay cutover` says "safe to switch" only when nothing can still
//! write: without a fence, writes to the selected tables after the marker
//! make it "not safe"; with one, so do a prepared transaction, a session
//! the fence left running (`--fence-list-only`) and writes by a session
//! that only calls itself walrelay. Ctrl-C during a fenced cutover undoes
//! the fence, and the report says whether the source is really fenced.
//! `walrelay run` bound beyond loopback needs a token for `POST /cutover`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::harness::{self, exec, Pair};
use crate::stream_support::{self, catch_up, prepare, Stream};
use crate::{cutover, http_post, json};

const SCHEMA: &str = "
CREATE TABLE items (id bigserial PRIMARY KEY, v text NOT NULL);
CREATE TABLE quiet (id int PRIMARY KEY);
INSERT INTO items (v) SELECT 'item ' || g FROM generate_series(1, 100) g;
INSERT INTO quiet SELECT generate_series(1, 10);
";

/// Inserts into `items` on its own session until told to stop or the
/// session fails.
struct Writer {
    stop: Arc<AtomicBool>,
    writes: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    async fn start(url: &str) -> Writer {
        let client = harness::connect(url).await;
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(AtomicU64::new(0));
        let (s, w) = (Arc::clone(&stop), Arc::clone(&writes));
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                if client
                    .batch_execute("INSERT INTO items (v) VALUES ('w')")
                    .await
                    .is_err()
                {
                    return;
                }
                w.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        Writer { stop, writes, task }
    }

    /// Waits until it has written `n` more rows.
    async fn wrote(&self, n: u64) {
        let from = self.writes.load(Ordering::Relaxed);
        let writes = Arc::clone(&self.writes);
        harness::wait_for(Duration::from_secs(30), "the writer to write", || {
            let writes = Arc::clone(&writes);
            async move { (writes.load(Ordering::Relaxed) >= from + n).then_some(()) }
        })
        .await;
    }

    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.writes.load(Ordering::Relaxed)
    }
}

/// Whether the database carries `default_transaction_read_only = on`.
async fn fenced(pair: &Pair) -> bool {
    let admin = pair.source_cluster().connect("postgres").await;
    fenced_on(&admin, &pair.source_db).await
}

async fn fenced_on(admin: &harness::Client, db: &str) -> bool {
    let n: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase \
             WHERE d.datname = $1 AND s.setrole = 0 \
               AND 'default_transaction_read_only=on' = ANY (s.setconfig)",
            &[&db],
        )
        .await
        .expect("read pg_db_role_setting")
        .get(0);
    n > 0
}

fn with_application(url: &str, name: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}application_name={name}")
}

#[tokio::test]
async fn unfenced_cutover_while_the_application_writes_is_not_safe_and_names_the_tables() {
    let pair = prepare("safety_unfenced", SCHEMA, "").await;
    let mut stream = Stream::start(&pair, &[]);
    catch_up(&pair, &mut stream).await;
    let writer = Writer::start(&pair.source_url).await;
    writer.wrote(20).await;
    let run = harness::run(cutover(&pair, &["--json"])).await;
    writer.finish().await;
    assert_eq!(
        run.code,
        Some(1),
        "writes after the marker: not safe\n{run}"
    );
    let report = json(&run);
    assert_eq!(report["safe"], false, "{run}");
    let reasons = report["reasons"].to_string();
    assert!(
        reasons.contains("public.items") && !reasons.contains("public.quiet"),
        "the written table (and only it) is named:\n{run}"
    );
    assert!(
        reasons.contains("--fence") && reasons.contains("stop the application"),
        "the way out is given:\n{run}"
    );

    // Nothing writes any more: an unfenced cutover may say safe again.
    catch_up(&pair, &mut stream).await;
    let run = harness::run(cutover(&pair, &["--json"])).await;
    run.assert_success();
    assert_eq!(json(&run)["safe"], true, "{run}");
    stream.stop().await;
}

/// A prepared transaction holds an xid and could commit after the fence:
/// its own source cluster, so it never holds up other tests' slots.
#[tokio::test]
async fn a_transaction_prepared_before_the_fence_makes_the_cutover_not_safe() {
    let source_cluster = harness::Cluster::start(harness::Options::source().label("prepared"));
    let pair = stream_support::pair_on(
        &source_cluster,
        &harness::shared().target,
        "safety_prepared",
    )
    .await;
    stream_support::setup(&pair, SCHEMA, "").await;
    let mut stream = Stream::start(&pair, &[]);
    catch_up(&pair, &mut stream).await;
    let source = pair.source().await;
    exec(
        &source,
        "BEGIN; INSERT INTO items (v) VALUES ('prepared'); PREPARE TRANSACTION 'wr_pending';",
    )
    .await;
    let run = harness::run_with_timeout(
        cutover(&pair, &["--fence", "--json", "--timeout", "10s"]),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(run.code, Some(1), "{run}");
    let report = json(&run);
    assert_eq!(report["safe"], false, "{run}");
    let reasons = report["reasons"].to_string();
    assert!(
        reasons.contains("wr_pending") && reasons.contains("prepared"),
        "the prepared transaction is named:\n{run}"
    );
    exec(&source, "ROLLBACK PREPARED 'wr_pending'").await;
    let _ = harness::run(cutover(&pair, &["--unfence"])).await;
    stream.stop().await;
}

#[tokio::test]
async fn a_session_that_only_calls_itself_walrelay_and_writes_makes_the_fenced_cutover_not_safe() {
    let pair = prepare("safety_fake", SCHEMA, "").await;
    let mut stream = Stream::start(&pair, &[]);
    catch_up(&pair, &mut stream).await;
    // Connected before the fence: the database default does not reach it.
    let writer = Writer::start(&with_application(&pair.source_url, "walrelay-fake")).await;
    writer.wrote(20).await;
    let run = harness::run(cutover(&pair, &["--fence", "--json"])).await;
    let writes = writer.finish().await;
    assert!(writes > 20);
    assert_eq!(run.code, Some(1), "{run}");
    let report = json(&run);
    assert_eq!(report["safe"], false, "{run}");
    assert!(
        report["reasons"].to_string().contains("public.items"),
        "the table written after the marker is named:\n{run}"
    );
    harness::run(cutover(&pair, &["--unfence"]))
        .await
        .assert_success();
    stream.stop().await;
}

#[tokio::test]
async fn interrupting_a_fenced_cutover_before_the_verdict_undoes_the_fence() {
    let pair = prepare("safety_interrupt", SCHEMA, "").await;
    let mut stream = Stream::start(&pair, &[]);
    catch_up(&pair, &mut stream).await;
    stream.stop().await;
    // The stream is stopped: cutover fences, then waits at the marker.
    let mut cmd = cutover(
        &pair,
        &["--fence", "--timeout", "60s", "--max-lag-seconds", "100000"],
    );
    cmd.env("WALRELAY_LOG", "info");
    let mut running = harness::spawn(cmd);
    let pid = running.child.id().expect("pid");
    let admin = pair.source_cluster().connect("postgres").await;
    harness::wait_for(Duration::from_secs(60), "the fence", || {
        let (admin, db) = (&admin, &pair.source_db);
        async move { fenced_on(admin, db).await.then_some(()) }
    })
    .await;
    assert!(!running.exited(), "cutover should be waiting at the marker");
    // SAFETY: kill(2) of a child we started and have not reaped.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGINT);
    }
    let run = running.finish(Duration::from_secs(30)).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert!(!fenced(&pair).await, "the fence should be undone:\n{run}");
    assert!(
        run.stderr.contains("interrupted") && run.stderr.contains("writable again"),
        "stderr says what happened to the fence:\n{run}"
    );
    exec(
        &pair.source().await,
        "INSERT INTO items (v) VALUES ('writable again')",
    )
    .await;
}

#[tokio::test]
async fn a_report_on_an_already_fenced_source_says_fenced() {
    let pair = prepare("safety_already", SCHEMA, "").await;
    exec(
        &pair.source().await,
        &format!(
            "ALTER DATABASE {} SET default_transaction_read_only = on",
            pair.source_db
        ),
    )
    .await;
    let run = harness::run(cutover(&pair, &["--json", "--timeout", "2s"])).await;
    assert_eq!(
        json(&run)["fenced"],
        true,
        "the source is fenced, whoever fenced it:\n{run}"
    );
    harness::run(cutover(&pair, &["--unfence"]))
        .await
        .assert_success();
    let run = harness::run(cutover(&pair, &["--json", "--timeout", "2s"])).await;
    assert_eq!(json(&run)["fenced"], false, "{run}");
}

#[tokio::test]
async fn run_bound_beyond_loopback_without_a_token_refuses_to_start() {
    let pair = harness::pair("safety_http_open").await;
    let mut cmd = pair.walrelay();
    cmd.args([
        "run",
        "--http",
        &format!("0.0.0.0:{}", harness::free_port()),
        "--stop-after",
        "30s",
    ]);
    let run = harness::run(cmd).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert!(
        run.stderr.contains("--http-token") && run.stderr.contains("/cutover"),
        "the refusal names the token flag and the route:\n{run}"
    );
    assert!(
        !run.stderr.contains("snapshot"),
        "nothing should have started:\n{run}"
    );
}

#[tokio::test]
async fn post_cutover_needs_the_token_and_get_stays_open() {
    let pair = harness::pair("safety_http_token").await;
    exec(&pair.source().await, SCHEMA).await;
    let port = harness::free_port();
    let mut cmd = pair.walrelay();
    cmd.args(["run", "--http", &format!("127.0.0.1:{port}")])
        .args(["--stop-after", "120s"])
        .env("WALRELAY_HTTP_TOKEN", "s3cret-token");
    let mut stream = Stream::spawn(cmd);
    harness::wait_for(Duration::from_secs(60), "the HTTP endpoint", || async {
        matches!(stream_support::http_get(port, "/status"), Some((200, _))).then_some(())
    })
    .await;
    if let Some(run) = stream.if_exited().await {
        panic!("walrelay run exited:\n{run}");
    }
    let post = |headers: &'static str| {
        tokio::task::spawn_blocking(move || {
            http_post(port, "/cutover?fence=true&timeout=5s", headers).expect("answered")
        })
    };
    let (code, body) = post("").await.unwrap();
    assert_eq!(code, 401, "no token: {body}");
    let (code, body) = post("Authorization: Bearer wrong-token\r\n").await.unwrap();
    assert_eq!(code, 401, "wrong token: {body}");
    assert!(!fenced(&pair).await, "a refused request fences nothing");
    let (code, body) = tokio::task::spawn_blocking(move || {
        http_post(
            port,
            "/cutover?unfence=true",
            "Authorization: Bearer s3cret-token\r\n",
        )
        .expect("answered")
    })
    .await
    .unwrap();
    assert_eq!(code, 200, "the right token: {body}");
    stream.stop().await;
}
