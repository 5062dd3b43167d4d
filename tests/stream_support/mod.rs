//! Helpers for the stream, apply and crash integration tests (`mod
//! stream_support;` next to `mod harness;`): a snapshot-then-stream setup,
//! a `walrelay stream` process with a time limit, waiting on the target's
//! checkpoint, the slot invariant, `pg_ctl` on dedicated clusters, a tiny
//! HTTP client and a seeded RNG.
//!
//! Waiting is always on the checkpoint (`walrelay.progress.applied_lsn`)
//! reaching a source position read after the writes, with a deadline.
#![allow(dead_code)]

use std::ffi::CString;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{self, exec, rows, Client, Cluster, Pair, Run, Running};

/// Every `walrelay stream` started here stops by itself after this long
/// (`--stop-after`), and is killed a little later if it did not.
pub const STREAM_LIMIT: Duration = Duration::from_secs(300);

/// How long a test waits for the checkpoint to reach a position.
pub const CATCH_UP: Duration = Duration::from_secs(90);

/// How long a SIGTERMed stream may take to exit.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// LSNs
// ---------------------------------------------------------------------------

/// `"16/B374D848"` → its 64-bit position.
pub fn parse_lsn(text: &str) -> u64 {
    let (hi, lo) = text
        .trim()
        .split_once('/')
        .unwrap_or_else(|| panic!("not an LSN: {text:?}"));
    let hi = u64::from_str_radix(hi, 16).unwrap_or_else(|_| panic!("not an LSN: {text:?}"));
    let lo = u64::from_str_radix(lo, 16).unwrap_or_else(|_| panic!("not an LSN: {text:?}"));
    (hi << 32) | lo
}

/// The 64-bit position as PostgreSQL prints it.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// The source's WAL insert position: past the end of every commit record
/// written so far (`pg_current_wal_lsn()` is the *write* position, which
/// under the harness's `synchronous_commit = off` can lag behind commits
/// already acknowledged to the client).
pub async fn source_lsn(source: &Client) -> u64 {
    parse_lsn(&harness::value(source, "SELECT pg_current_wal_insert_lsn()::text").await)
}

/// `walrelay.progress.applied_lsn` of `slot`, if the row exists.
pub async fn applied_lsn(target: &Client, slot: &str) -> Option<u64> {
    let found = rows(
        target,
        &format!(
            "SELECT applied_lsn::text FROM walrelay.progress WHERE slot_name = '{}'",
            slot
        ),
    )
    .await;
    found.first().and_then(|r| r[0].as_deref()).map(parse_lsn)
}

/// The checkpoint the stream resumes from: `walrelay.progress`, or the
/// snapshot's consistent point before the first checkpoint.
pub async fn resume_lsn(target: &Client, slot: &str) -> u64 {
    if let Some(lsn) = applied_lsn(target, slot).await {
        return lsn;
    }
    parse_lsn(
        &harness::value(
            target,
            &format!(
                "SELECT consistent_lsn::text FROM walrelay.snapshot WHERE slot_name = '{slot}'"
            ),
        )
        .await,
    )
}

/// The slot's `confirmed_flush_lsn` (the view is cluster-wide: any
/// database of the source cluster does).
pub async fn confirmed_flush(source: &Client, slot: &str) -> u64 {
    let text = harness::value(
        source,
        &format!(
            "SELECT coalesce(confirmed_flush_lsn::text, '0/0') FROM pg_replication_slots WHERE slot_name = '{slot}'"
        ),
    )
    .await;
    parse_lsn(&text)
}

/// The invariant of the whole design: the slot is never acknowledged past
/// what the target committed. `confirmed_flush` is read first: the
/// checkpoint only grows, so a later read of it can only make the check
/// easier for a correct implementation, never hide a violation that held
/// at the first read.
pub async fn assert_slot_not_ahead(pair: &Pair, when: &str) -> (u64, u64) {
    let source = pair.source().await;
    let target = pair.target().await;
    let confirmed = confirmed_flush(&source, &pair.slot).await;
    let applied = resume_lsn(&target, &pair.slot).await;
    assert!(
        confirmed <= applied,
        "{when}: the slot's confirmed_flush_lsn {} is past the target's applied_lsn {}: \
         changes acknowledged to the source were never committed on the target",
        format_lsn(confirmed),
        format_lsn(applied)
    );
    (confirmed, applied)
}

// ---------------------------------------------------------------------------
// Setting up: databases, schema, snapshot
// ---------------------------------------------------------------------------

/// Fresh databases on the shared clusters with `source_sql` run on the
/// source and `target_sql` on the target (before the snapshot, e.g. types
/// that shift OIDs), then `walrelay snapshot` (which copies the schema).
pub async fn prepare(name: &str, source_sql: &str, target_sql: &str) -> Pair {
    let pair = harness::pair(name).await;
    setup(&pair, source_sql, target_sql).await;
    pair
}

/// A pair on given clusters (dedicated ones for restart tests).
pub async fn pair_on(source: &Cluster, target: &Cluster, name: &str) -> Pair {
    let source_db = source.create_database(name).await;
    let target_db = target.create_database(name).await;
    let n = harness::unique();
    Pair {
        name: name.into(),
        source_url: source.url(&source_db),
        target_url: target.url(&target_db),
        slot: format!("slot_{}_{n}", harness::sanitize(name)),
        publication: format!("pub_{}_{n}", harness::sanitize(name)),
        source_db,
        target_db,
    }
}

/// Runs the SQL on both sides, then the snapshot.
pub async fn setup(pair: &Pair, source_sql: &str, target_sql: &str) {
    exec(&pair.source().await, source_sql).await;
    if !target_sql.trim().is_empty() {
        exec(&pair.target().await, target_sql).await;
    }
    snapshot(pair, &[]).await;
}

/// `walrelay snapshot ARGS`, which must succeed.
pub async fn snapshot(pair: &Pair, args: &[&str]) -> Run {
    let mut cmd = pair.walrelay();
    cmd.arg("snapshot").args(args);
    let run = harness::run(cmd).await;
    run.assert_success();
    run
}

/// Drops the pair's slot (when no session uses it any more).
pub async fn drop_slot(pair: &Pair) {
    let source = pair.source().await;
    exec(
        &source,
        &format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE slot_name = '{}' AND NOT active",
            pair.slot
        ),
    )
    .await;
}

// ---------------------------------------------------------------------------
// A walrelay process
// ---------------------------------------------------------------------------

/// A running `walrelay stream` (or `run`), killed when dropped.
pub struct Stream {
    running: Option<Running>,
    pub pid: u32,
}

impl Stream {
    /// `walrelay … stream --stop-after STREAM_LIMIT ARGS`.
    pub fn start(pair: &Pair, args: &[&str]) -> Stream {
        let mut cmd = pair.walrelay();
        cmd.arg("stream")
            .arg("--stop-after")
            .arg(format!("{}s", STREAM_LIMIT.as_secs()))
            .args(args);
        Stream::spawn(cmd)
    }

    /// Starts any walrelay command (it should carry its own time limit).
    pub fn spawn(cmd: Command) -> Stream {
        let running = harness::spawn(cmd);
        let pid = running.child.id().expect("pid of a just-started process");
        Stream {
            running: Some(running),
            pid,
        }
    }

    fn running(&mut self) -> &mut Running {
        self.running
            .as_mut()
            .expect("the process was already collected")
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        self.running().exited()
    }

    /// If it has exited: what it printed and its exit code.
    pub async fn if_exited(&mut self) -> Option<Run> {
        if self.exited() {
            Some(self.running.take().unwrap().kill().await)
        } else {
            None
        }
    }

    /// SIGTERM, then waits for a clean exit (code 0).
    pub async fn stop(mut self) -> Run {
        self.signal(libc::SIGTERM);
        let run = self.running.take().unwrap().finish(STOP_TIMEOUT).await;
        assert_eq!(
            run.code,
            Some(0),
            "SIGTERM should stop the stream cleanly with exit code 0:\n{run}"
        );
        run
    }

    /// SIGKILL, and what it printed.
    pub async fn kill(mut self) -> Run {
        self.running.take().unwrap().kill().await
    }

    /// Waits for the process to exit by itself (killed and panicking after `timeout`).
    pub async fn wait(mut self, timeout: Duration) -> Run {
        self.running.take().unwrap().finish(timeout).await
    }

    /// Sends a signal to the process.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) of a child we started and have not reaped.
        unsafe {
            libc::kill(self.pid as libc::pid_t, signal);
        }
    }

    /// The process's peak resident set size so far (`VmHWM`), in kB.
    pub fn peak_rss_kb(&self) -> Option<u64> {
        proc_status_kb(self.pid, "VmHWM:")
    }

    /// The current resident set size (`VmRSS`), in kB.
    pub fn rss_kb(&self) -> Option<u64> {
        proc_status_kb(self.pid, "VmRSS:")
    }

    /// Kills the process and panics with `why` and its output.
    pub async fn fail(mut self, why: &str) -> ! {
        let run = self.running.take().unwrap().kill().await;
        panic!("{why}\n{run}");
    }
}

fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Waits until the target's checkpoint for the pair's slot reaches `lsn`.
/// Panics (with the stream's output) when the stream exits first or the
/// deadline passes.
pub async fn wait_applied(pair: &Pair, stream: &mut Stream, lsn: u64, timeout: Duration) {
    let target = pair.target().await;
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(10);
    loop {
        let applied = applied_lsn_tolerant(&target, &pair.slot).await;
        if applied.is_some_and(|a| a >= lsn) {
            return;
        }
        if let Some(run) = stream.if_exited().await {
            panic!(
                "the stream exited before the checkpoint reached {} (applied: {}):\n{run}",
                format_lsn(lsn),
                applied.map(format_lsn).unwrap_or_else(|| "none".into())
            );
        }
        if Instant::now() >= deadline {
            let run = stream.running.take().unwrap().kill().await;
            panic!(
                "timed out after {timeout:?} waiting for the checkpoint to reach {} (applied: {}):\n{run}",
                format_lsn(lsn),
                applied.map(format_lsn).unwrap_or_else(|| "none".into())
            );
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// `applied_lsn`, or `None` when the state table is not there yet.
async fn applied_lsn_tolerant(target: &Client, slot: &str) -> Option<u64> {
    let messages = target
        .simple_query(&format!(
            "SELECT applied_lsn::text FROM walrelay.progress WHERE slot_name = '{slot}'"
        ))
        .await
        .ok()?;
    messages.into_iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(parse_lsn),
        _ => None,
    })
}

/// Waits until the target has applied everything the source wrote so far.
pub async fn catch_up(pair: &Pair, stream: &mut Stream) -> u64 {
    let lsn = source_lsn(&pair.source().await).await;
    wait_applied(pair, stream, lsn, CATCH_UP).await;
    lsn
}

/// Asserts stderr mentions every word (case-insensitive).
pub fn assert_mentions(run: &Run, words: &[&str]) {
    let lower = run.stderr.to_lowercase();
    for word in words {
        assert!(
            lower.contains(&word.to_lowercase()),
            "the output should mention {word:?}:\n{run}"
        );
    }
}

/// Asserts the output contains none of `secrets`.
pub fn assert_not_mentioned(run: &Run, secrets: &[&str]) {
    let all = run.output();
    for secret in secrets {
        assert!(
            !all.contains(secret),
            "the output must not contain the row value {secret:?}:\n{run}"
        );
    }
}

// ---------------------------------------------------------------------------
// Comparing tables
// ---------------------------------------------------------------------------

/// Row-by-row equality of `table` on both sides, ordered by `order_by`.
pub async fn assert_same(pair: &Pair, table: &str, order_by: &str, min_rows: usize) {
    harness::assert_same_rows(
        &pair.source().await,
        &pair.target().await,
        table,
        order_by,
        min_rows,
    )
    .await;
}

/// Equality of `table` as a multiset of rows (for tables without a key).
pub async fn assert_same_multiset(pair: &Pair, table: &str, min_rows: usize) {
    assert_same(pair, table, "md5(t::text)", min_rows).await;
}

/// The rows of a query on the target, for precise expectations.
pub async fn target_rows(pair: &Pair, sql: &str) -> Vec<Vec<Option<String>>> {
    rows(&pair.target().await, sql).await
}

// ---------------------------------------------------------------------------
// Dedicated clusters: pg_ctl as the server user
// ---------------------------------------------------------------------------

/// `pg_ctl ARGS -D DATA` as the user the servers run as (`postgres` when
/// the tests run as root).
pub fn pg_ctl(cluster: &Cluster, args: &[&str]) -> Output {
    let data = cluster.data_dir();
    let base = data.parent().expect("cluster base dir").to_path_buf();
    let mut cmd = Command::new(harness::pg_bin("pg_ctl"));
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let name = CString::new("postgres").unwrap();
        // SAFETY: a valid C string; the entry is read at once.
        let pw = unsafe { libc::getpwnam(name.as_ptr()) };
        assert!(!pw.is_null(), "no OS user postgres");
        // SAFETY: pw is non-null.
        let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
        cmd.uid(uid).gid(gid);
    }
    for var in ["PGDATA", "PGHOST", "PGPORT", "PGUSER", "PGPASSWORD"] {
        cmd.env_remove(var);
    }
    cmd.current_dir(&base)
        .stdin(Stdio::null())
        .args(args)
        .arg("-D")
        .arg(&data);
    cmd.output().expect("run pg_ctl")
}

/// `pg_ctl restart -m immediate` (a crash and recovery) on the same port.
pub fn restart_immediate(cluster: &Cluster) {
    let log = cluster
        .data_dir()
        .parent()
        .unwrap()
        .join("server.log")
        .display()
        .to_string();
    let port = format!("-p {}", cluster.port);
    let out = pg_ctl(
        cluster,
        &[
            "restart",
            "-m",
            "immediate",
            "-w",
            "-t",
            "60",
            "-l",
            &log,
            "-o",
            &port,
        ],
    );
    assert!(
        out.status.success(),
        "pg_ctl restart failed: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        cluster.log_tail(30)
    );
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// `GET path` on 127.0.0.1:port: (status code, body), or `None` when
/// nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some((code, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The value of an unlabelled metric line `name VALUE` in Prometheus text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok()).flatten()
    })
}

// ---------------------------------------------------------------------------
// Randomness
// ---------------------------------------------------------------------------

/// xorshift64*: small, seeded, reproducible.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// The seed: `WALRELAY_TEST_SEED` when set (to replay a failure), else
/// the clock.
pub fn seed() -> u64 {
    std::env::var("WALRELAY_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

/// `pg_ctl stop -m immediate` (the cluster is down until [`start_again`]).
pub fn stop_immediate(cluster: &Cluster) {
    let out = pg_ctl(cluster, &["stop", "-m", "immediate", "-w", "-t", "60"]);
    assert!(
        out.status.success(),
        "pg_ctl stop failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `pg_ctl start` of a stopped cluster on its port.
pub fn start_again(cluster: &Cluster) {
    let log = cluster
        .data_dir()
        .parent()
        .unwrap()
        .join("server.log")
        .display()
        .to_string();
    let port = format!("-p {}", cluster.port);
    let out = pg_ctl(
        cluster,
        &["start", "-w", "-t", "60", "-l", &log, "-o", &port],
    );
    assert!(
        out.status.success(),
        "pg_ctl start failed: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        cluster.log_tail(30)
    );
}
