//! `walrelay cutover` says "safe to switch" only when nothing can still
//! write: without a fence, writes to the selected tables after the marker
//! make it "not safe"; with one, so do a prepared transaction, a session
//! the fence left running (`--fence-list-only`) and writes by a session
//! that only calls itself walrelay. Ctrl-C during a fenced cutover undoes
//! the fence, and the report says whether the source is really fenced.
//! `walrelay run` bound beyond loopback needs a token for `POST /cutover`.

mod harness;
mod stream_support;

use std::time::Duration;

use harness::{exec, Pair};
use stream_support::Stream;

const SCHEMA: &str = "
CREATE TABLE items (id bigserial PRIMARY KEY, v text NOT NULL);
CREATE TABLE quiet (id int PRIMARY KEY);
INSERT INTO items (v) SELECT 'item ' || g FROM generate_series(1, 100) g;
INSERT INTO quiet SELECT generate_series(1, 10);
";

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

/// `POST path` on 127.0.0.1:port with optional headers: (status, body).
fn http_post(port: u16, path: &str, headers: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    write!(
        conn,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
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
