//! `walrelay stream` / `run` as a long-running process: idle keepalives,
//! columns added on the source, reconnecting after the source, the target
//! or the walsender went away, a slow (locked) target, and the lag it
//! reports over HTTP. Every wait is on the target's checkpoint with a
//! deadline; restarts use dedicated clusters, never the shared ones.
//!
//! One test binary, split by behaviour: `lag` (keepalives, lag over
//! HTTP), `reconnect` (restarts, terminated sessions, backoff),
//! `stop_resume` (exit flags, signals, resuming exactly), `columns`
//! (columns added on the source) and `errors` (definite errors, exit 1).
//! The writers and probes they share are here.

#[path = "../harness/mod.rs"]
mod harness;
#[path = "../stream_support/mod.rs"]
mod stream_support;

mod column_defaults;
mod columns;
mod ddl;
mod errors;
mod lag;
mod reconnect;
mod stop_resume;

use std::time::{Duration, Instant};

use harness::{exec, Client};
use stream_support::{http_get, Stream};

/// Inserts rows `from..=to` into `table (id, v)` in transactions of `per_txn` rows.
async fn insert_rows(source: &Client, table: &str, from: i64, to: i64, per_txn: i64) {
    let mut sql = String::new();
    let mut start = from;
    while start <= to {
        let end = (start + per_txn - 1).min(to);
        sql.push_str(&format!(
            "BEGIN; INSERT INTO {table} SELECT g, 'v' || g FROM generate_series({start}, {end}) g; COMMIT;\n"
        ));
        start = end + 1;
    }
    exec(source, &sql).await;
}

/// Some updates and deletes too, in a few transactions.
async fn churn(source: &Client, table: &str, modulo: i64) {
    exec(
        source,
        &format!(
            "BEGIN; UPDATE {table} SET v = v || '+' WHERE id % {modulo} = 1; COMMIT;
             BEGIN; DELETE FROM {table} WHERE id % {modulo} = 2; COMMIT;
             BEGIN; UPDATE {table} SET id = -id WHERE id % {modulo} = 3; COMMIT;"
        ),
    )
    .await;
}

/// The pid of the target backend of walrelay's apply session (only one
/// waiting on a lock, if asked); panics with the stream's output if it
/// exits first.
async fn apply_backend(target: &Client, stream: &mut Stream, waiting_on_lock: bool) -> String {
    let sql = format!(
        "SELECT pid::text FROM pg_stat_activity
         WHERE application_name = 'walrelay-apply' AND datname = current_database() {}",
        if waiting_on_lock {
            "AND wait_event_type = 'Lock'"
        } else {
            ""
        }
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(pid) = harness::rows(target, &sql)
            .await
            .first()
            .and_then(|r| r[0].clone())
        {
            return pid;
        }
        if let Some(run) = stream.if_exited().await {
            panic!("the stream exited:\n{run}");
        }
        assert!(
            Instant::now() < deadline,
            "no apply session on the target after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn status(port: u16) -> serde_json::Value {
    let (code, body) = http_get(port, "/status").expect("GET /status");
    assert_eq!(code, 200, "/status: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/status is not JSON ({e}): {body}"))
}
