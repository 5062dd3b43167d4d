//! The way back: after `cutover --fence --reverse`, the application writes
//! on the target while both streamers run; the old source receives every
//! write once, nothing travels back to the target (the loop guard), `--reverse
//! verify` is clean, and `--reverse cutover --fence` switches back. A
//! reverse streamer killed under load resumes with nothing lost or doubled.
//!
//! Both directions read a logical slot, so these tests run on a dedicated
//! pair of `wal_level = logical` clusters, started once for the binary.

#[path = "harness/mod.rs"]
mod harness;
#[path = "stream_support/mod.rs"]
mod stream_support;

use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use harness::{exec, value, Client, Cluster, Options, Pair};
use stream_support::{
    assert_same, catch_up, pair_on, setup, source_lsn, wait_applied, Stream, CATCH_UP, STREAM_LIMIT,
};

const SCHEMA: &str = "
CREATE TABLE items (id bigserial PRIMARY KEY, v text NOT NULL, n int NOT NULL DEFAULT 0);
CREATE TABLE docs (id int PRIMARY KEY, title text, body text);
ALTER TABLE docs ALTER body SET STORAGE EXTERNAL;
CREATE TABLE notes (id int PRIMARY KEY, note text);
CREATE TABLE tags (k text NOT NULL, v text);
ALTER TABLE tags REPLICA IDENTITY FULL;
INSERT INTO items (v) SELECT 'item ' || g FROM generate_series(1, 100) g;
INSERT INTO docs SELECT g, 'doc ' || g, repeat(md5(g::text), 100) FROM generate_series(1, 20) g;
INSERT INTO notes SELECT g, 'note' FROM generate_series(1, 10) g;
INSERT INTO tags SELECT 'k' || g, 'v' FROM generate_series(1, 10) g;
CREATE TABLE events (id int GENERATED ALWAYS AS IDENTITY, at date NOT NULL, v text,
    PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO events (at, v) SELECT '2024-06-01'::date + g, 'e' || g FROM generate_series(1, 20) g;
";

/// Counts the rows walrelay's own sessions write into each table (an
/// `ENABLE ALWAYS` trigger fires under `session_replication_role =
/// replica` too). In a schema of its own: not selected, not compared.
const PROBE: &str = "
CREATE SCHEMA probe;
CREATE SEQUENCE probe.walrelay_writes;
CREATE FUNCTION probe.count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('application_name') LIKE 'walrelay%' THEN
    PERFORM nextval('probe.walrelay_writes');
  END IF;
  RETURN NULL;
END $$;
DO $$ DECLARE t text; BEGIN
  FOREACH t IN ARRAY ARRAY['items', 'docs', 'notes', 'tags'] LOOP
    EXECUTE format('CREATE TRIGGER probe AFTER INSERT OR UPDATE OR DELETE ON public.%I
                    FOR EACH ROW EXECUTE FUNCTION probe.count()', t);
    EXECUTE format('ALTER TABLE public.%I ENABLE ALWAYS TRIGGER probe', t);
  END LOOP;
END $$;
";

/// Installs [`PROBE`] (on the fenced old source too).
async fn install_probe(client: &Client) {
    exec(client, "SET default_transaction_read_only = off").await;
    exec(client, PROBE).await;
}

/// Rows walrelay's sessions wrote since the probe was installed.
async fn walrelay_writes(client: &Client) -> i64 {
    value(
        client,
        "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM probe.walrelay_writes",
    )
    .await
    .parse()
    .unwrap()
}

/// The dedicated clusters: both ends logical.
fn clusters() -> &'static (Cluster, Cluster) {
    static CLUSTERS: OnceLock<(Cluster, Cluster)> = OnceLock::new();
    CLUSTERS.get_or_init(|| {
        std::thread::scope(|s| {
            let old = s.spawn(|| Cluster::start(Options::source().label("rev_old")));
            let new = s.spawn(|| Cluster::start(Options::source().label("rev_new")));
            (old.join().unwrap(), new.join().unwrap())
        })
    })
}

/// A migrated pair: snapshot done, forward stream running and caught up.
async fn migrated(name: &str) -> (Pair, Stream) {
    let (old, new) = clusters();
    let pair = pair_on(old, new, name).await;
    setup(&pair, SCHEMA, "").await;
    let mut forward = Stream::start(&pair, &[]);
    catch_up(&pair, &mut forward).await;
    (pair, forward)
}

/// The reverse direction seen as a pair, for the waits and comparisons:
/// the target as the source, the old source as the target, the reverse slot.
fn mirrored(pair: &Pair) -> Pair {
    Pair {
        source_url: pair.target_url.clone(),
        target_url: pair.source_url.clone(),
        source_db: pair.target_db.clone(),
        target_db: pair.source_db.clone(),
        slot: format!("{}_reverse", pair.slot),
        publication: format!("{}_reverse", pair.publication),
        name: pair.name.clone(),
    }
}

fn reverse(pair: &Pair, command: &str) -> Command {
    let mut cmd = pair.walrelay();
    cmd.arg("--reverse").arg(command);
    cmd
}

fn reverse_stream(pair: &Pair) -> Stream {
    let mut cmd = reverse(pair, "stream");
    cmd.arg("--stop-after")
        .arg(format!("{}s", STREAM_LIMIT.as_secs()));
    Stream::spawn(cmd)
}

async fn prepare_way_back(pair: &Pair) -> harness::Run {
    let mut cmd = pair.walrelay();
    cmd.args(["cutover", "--fence", "--reverse"]);
    let run = harness::run(cmd).await;
    run.assert_success();
    assert!(run.stdout.contains("way back:"), "{run}");
    run
}

/// One application transaction on the target: an insert (nextval), an
/// update, a TOASTed document left as it is or rewritten, a delete, a
/// key-less row (REPLICA IDENTITY FULL), and now and then a TRUNCATE.
async fn app_write(target: &Client, i: u64) -> Result<(), tokio_postgres::Error> {
    let body = if i % 5 == 0 {
        format!(", body = repeat(md5('{i}'), 120)")
    } else {
        String::new()
    };
    let mut sql = format!(
        "BEGIN;
         INSERT INTO items (v) VALUES ('app {i}');
         UPDATE items SET n = n + 1, v = v || '+' WHERE id = (SELECT max(id) FROM items);
         UPDATE docs SET title = 'edited {i}'{body} WHERE id = {};
         UPDATE tags SET v = 'v{i}' WHERE k = 'k{}';
         INSERT INTO tags VALUES ('app{i}', 'x');
         INSERT INTO events (at, v) VALUES ('2024-03-01'::date + {}, 'app {i}');",
        1 + i % 20,
        1 + i % 10,
        i % 600
    );
    if i % 4 == 0 {
        // Moved to the next year's partition.
        sql.push_str(
            "UPDATE events SET at = at + 365 WHERE id = (SELECT min(id) FROM events WHERE at < '2025-01-01');",
        );
    }
    if i % 3 == 0 {
        sql.push_str("DELETE FROM items WHERE id = (SELECT min(id) FROM items);");
    }
    if i % 25 == 0 {
        sql.push_str(&format!(
            "TRUNCATE notes; INSERT INTO notes SELECT g, 'after truncate {i}' FROM generate_series(1, 5) g;"
        ));
    }
    sql.push_str("COMMIT;");
    target.batch_execute(&sql).await
}

async fn assert_all_same(pair: &Pair) {
    assert_same(pair, "items", "id", 50).await;
    assert_same(pair, "docs", "id", 20).await;
    assert_same(pair, "notes", "id", 5).await;
    assert_same(pair, "tags", "k, v", 10).await;
    assert_same(pair, "events", "id, at", 20).await;
}

#[tokio::test]
async fn the_way_back_carries_the_targets_writes_once_and_switches_back() {
    let (pair, mut forward) = migrated("way_back").await;
    let writer = pair.source().await;
    let target = pair.target().await;

    // The source's own writes, then the fenced cutover with the way back
    // (which ends the writer's session).
    for i in 0..50 {
        exec(
            &writer,
            &format!("UPDATE items SET n = n + 1 WHERE id = {}", 1 + i),
        )
        .await;
    }
    let first = prepare_way_back(&pair).await;
    assert!(first.stdout.contains("created"), "{first}");
    // Idempotent: a second run keeps the slot and its consistent point.
    let again = prepare_way_back(&pair).await;
    assert!(again.stdout.contains("kept (prepared before)"), "{again}");
    let old = pair.source().await;
    install_probe(&old).await;
    install_probe(&target).await;

    let back = mirrored(&pair);
    let mut reverse_streamer = reverse_stream(&pair);
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(4) {
        i += 1;
        app_write(&target, i).await.expect("application write");
    }
    // Everything the application wrote is on the old source, and the
    // forward streamer has read past what the reverse one applied there.
    catch_up(&back, &mut reverse_streamer).await;
    let old_end = source_lsn(&old).await;
    wait_applied(&pair, &mut forward, old_end, CATCH_UP).await;
    assert_all_same(&pair).await;
    assert!(!forward.exited(), "the forward streamer stopped");
    assert!(!reverse_streamer.exited(), "the reverse streamer stopped");
    let applied_back = walrelay_writes(&old).await;
    let echoed = walrelay_writes(&target).await;
    println!(
        "way back: {i} application transactions on the target, {applied_back} rows applied to the old source, {echoed} echoed"
    );
    // Set-wise batches net changes per key, so fewer rows than changes.
    assert!(
        applied_back >= i as i64,
        "{applied_back} rows applied back for {i} transactions"
    );
    assert_eq!(
        echoed, 0,
        "the forward streamer wrote the reverse direction's changes back into the target"
    );

    let verify = harness::run(reverse(&pair, "verify")).await;
    verify.assert_success();

    // The switch back under load: the application writes on the target
    // until the fence ends its session.
    let app = pair.target().await;
    let load = tokio::spawn(async move {
        let mut n = 0;
        // Paced like an application (the forward cutover tests' writer):
        // flat out on a shared 2-core machine, the lag gate may not pass.
        while app_write(&app, 100_000 + n).await.is_ok() {
            n += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        n
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let switch = {
        let mut cmd = reverse(&pair, "cutover");
        cmd.arg("--fence");
        harness::run(cmd).await
    };
    let under_load = load.await.unwrap();
    switch.assert_success();
    assert!(switch.stdout.contains("safe to switch back"), "{switch}");
    let freeze = switch
        .stdout
        .split("write freeze ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .expect("the write freeze is reported");
    println!("switch back under load ({under_load} application transactions during it): write freeze {freeze} s\n{}", switch.stdout);
    assert!(
        under_load > 10,
        "only {under_load} writes during the switch back"
    );
    // Everything the application wrote before the fence is on the old source.
    assert_all_same(&pair).await;

    // The old source takes writes again, its sequences at or above the
    // target's (whose sessions the fence ended).
    let fresh = pair.source().await;
    let target = pair.target().await;
    exec(&fresh, "INSERT INTO items (v) VALUES ('back home')").await;
    let (old_seq, new_seq): (i64, i64) = (
        value(&fresh, "SELECT last_value FROM items_id_seq")
            .await
            .parse()
            .unwrap(),
        value(&target, "SELECT last_value FROM items_id_seq")
            .await
            .parse()
            .unwrap(),
    );
    assert!(
        old_seq >= new_seq,
        "old source's sequence {old_seq} below the target's {new_seq}"
    );
    // The identity column's sequence too: a new row takes a fresh id.
    exec(
        &fresh,
        "INSERT INTO events (at, v) VALUES ('2025-02-01', 'back home')",
    )
    .await;
    let fresh_id = value(&fresh, "SELECT max(id) FROM events").await;
    let target_max = value(&target, "SELECT max(id) FROM events").await;
    assert!(
        fresh_id.parse::<i64>().unwrap() > target_max.parse::<i64>().unwrap(),
        "the old source's identity gave {fresh_id}, not above the target's {target_max}"
    );
    reverse_streamer.stop().await;
    forward.kill().await;
}

#[tokio::test]
async fn a_killed_reverse_streamer_resumes_with_nothing_lost_or_doubled() {
    let (pair, forward) = migrated("way_back_kill").await;
    prepare_way_back(&pair).await;
    forward.kill().await;
    let back = mirrored(&pair);
    let writer_target = pair.target().await;
    let writer = tokio::spawn(async move {
        let mut i = 0;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(6) {
            i += 1;
            app_write(&writer_target, i)
                .await
                .expect("application write");
        }
        i
    });
    // SIGKILLs of the streamer, and between them its walsender terminated
    // on the target (the streamer reconnects by itself).
    let (mut kills, mut walsenders) = (0, 0);
    let mut streamer = reverse_stream(&pair);
    let admin = pair.target().await;
    while !writer.is_finished() {
        tokio::time::sleep(Duration::from_millis(600 + 200 * kills)).await;
        let terminated = value(
            &admin,
            &format!(
                "SELECT count(pg_terminate_backend(active_pid)) FROM pg_replication_slots \
                 WHERE slot_name = '{}' AND active_pid IS NOT NULL",
                back.slot
            ),
        )
        .await;
        walsenders += terminated.parse::<u32>().unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        streamer.kill().await;
        kills += 1;
        streamer = reverse_stream(&pair);
    }
    let transactions = writer.await.unwrap();
    catch_up(&back, &mut streamer).await;
    assert_all_same(&pair).await;
    println!("{transactions} application transactions, the reverse streamer SIGKILLed {kills} times and its walsender terminated {walsenders} times: equal row by row");
    assert!(
        kills >= 3 && walsenders >= 1,
        "only {kills} kills, {walsenders} walsender terminations"
    );
    streamer.kill().await;

    // `--reverse run` resumes it too, its metrics labelled as the reverse direction.
    let port = harness::free_port();
    let mut cmd = reverse(&pair, "run");
    cmd.args([
        "--http",
        &format!("127.0.0.1:{port}"),
        "--verify-interval",
        "0s",
    ])
    .arg("--stop-after")
    .arg(format!("{}s", STREAM_LIMIT.as_secs()));
    let mut run = Stream::spawn(cmd);
    app_write(&pair.target().await, 1_000_000).await.unwrap();
    catch_up(&back, &mut run).await;
    assert_all_same(&pair).await;
    let (status, metrics) = stream_support::http_get(port, "/metrics").expect("metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains(r#"walrelay_transactions_applied_total{direction="reverse"}"#),
        "{metrics}"
    );
    // Drift on the old source (a row walrelay did not remove) is reported
    // by key by `--reverse verify`.
    let old = pair.source().await;
    exec(&old, "SET default_transaction_read_only = off").await;
    let key = value(&old, "SELECT min(id)::text FROM items").await;
    exec(&old, &format!("DELETE FROM items WHERE id = {key}")).await;
    let verify = harness::run(reverse(&pair, "verify")).await;
    verify.assert_failure();
    assert!(
        verify.stdout.contains("drift in public.items (keys only):")
            && verify.stdout.contains(&format!("({key})")),
        "{verify}"
    );
    run.stop().await;

    // Status and cleanup of the reverse direction touch only its own state.
    let status = harness::run(reverse(&pair, "status")).await;
    status.assert_success();
    assert!(status.stdout.contains(&back.slot), "{status}");
    let mut cleanup = reverse(&pair, "cleanup");
    cleanup.arg("--yes");
    harness::run(cleanup).await.assert_success();
    let left = value(
        &pair.target().await,
        &format!(
            "SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}') \
                  + (SELECT count(*) FROM pg_publication WHERE pubname = '{}')",
            back.slot, back.publication
        ),
    )
    .await;
    assert_eq!(left, "0", "the reverse slot or publication is left");
    let forward_state = value(
        &pair.target().await,
        &format!(
            "SELECT count(*) FROM walrelay.progress WHERE slot_name = '{}'",
            pair.slot
        ),
    )
    .await;
    assert_eq!(
        forward_state, "1",
        "the forward direction's checkpoint is gone"
    );
    let forward_slot = value(
        &pair.source().await,
        &format!(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}'",
            pair.slot
        ),
    )
    .await;
    assert_eq!(forward_slot, "1", "the forward slot is gone");
}

#[tokio::test]
async fn a_target_without_logical_wal_is_refused_before_anything_is_created() {
    static REPLICA: OnceLock<Cluster> = OnceLock::new();
    let replica = REPLICA.get_or_init(|| Cluster::start(Options::target().label("rev_replica")));
    let pair = pair_on(&clusters().0, replica, "way_back_replica").await;
    setup(&pair, SCHEMA, "").await;
    let mut forward = Stream::start(&pair, &[]);
    catch_up(&pair, &mut forward).await;
    let mut cmd = pair.walrelay();
    cmd.args(["cutover", "--fence", "--reverse"]);
    let run = harness::run(cmd).await;
    run.assert_failure();
    assert!(
        run.stdout.contains("safe to switch"),
        "the forward cutover ran:\n{run}"
    );
    stream_support::assert_mentions(&run, &["wal_level = logical", "cutover --fence --reverse"]);
    let target = pair.target().await;
    let created = value(
        &target,
        &format!(
            "SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE '%_reverse') \
                  + (SELECT count(*) FROM pg_publication WHERE pubname = '{}_reverse')",
            pair.publication
        ),
    )
    .await;
    assert_eq!(created, "0", "a slot or publication was created:\n{run}");
    forward.kill().await;
}

#[tokio::test]
async fn the_way_back_runs_from_postgresql_18_into_14() {
    let (old, new) = std::thread::scope(|s| {
        let old = s.spawn(|| Cluster::start(Options::source().version(14).label("rev_pg14")));
        let new = s.spawn(|| Cluster::start(Options::source().version(18).label("rev_pg18")));
        (old.join().unwrap(), new.join().unwrap())
    });
    let pair = pair_on(&old, &new, "way_back_14_18").await;
    exec(&pair.source().await, SCHEMA).await;
    let bindir = harness::client_bindir();
    stream_support::snapshot(&pair, &["--pg-bindir", bindir.to_str().unwrap()]).await;
    let mut forward = Stream::start(&pair, &[]);
    catch_up(&pair, &mut forward).await;
    prepare_way_back(&pair).await;
    let back = mirrored(&pair);
    let mut streamer = reverse_stream(&pair);
    let target = pair.target().await;
    for i in 0..300 {
        app_write(&target, i).await.expect("application write");
    }
    catch_up(&back, &mut streamer).await;
    let old_end = source_lsn(&pair.source().await).await;
    wait_applied(&pair, &mut forward, old_end, CATCH_UP).await;
    assert_all_same(&pair).await;
    let mut cmd = reverse(&pair, "cutover");
    cmd.arg("--fence");
    let switch = harness::run(cmd).await;
    switch.assert_success();
    assert!(switch.stdout.contains("safe to switch back"), "{switch}");
    streamer.stop().await;
    forward.kill().await;
}

/// The target (the reverse direction's source) crashed and restarted while the
/// application writes to it and both streamers run: each reconnects by
/// itself, and the old source ends equal to the target, row by row.
/// Clusters of its own, since a restart ends every session on them.
#[tokio::test]
async fn a_target_restart_under_load_loses_and_doubles_nothing_either_way() {
    let (old, new) = std::thread::scope(|s| {
        let old = s.spawn(|| Cluster::start(Options::source().label("rev_restart_old")));
        let new = s.spawn(|| Cluster::start(Options::source().label("rev_restart_new")));
        (old.join().unwrap(), new.join().unwrap())
    });
    let pair = pair_on(&old, &new, "way_back_restart").await;
    setup(&pair, SCHEMA, "").await;
    let mut forward = Stream::start(&pair, &[]);
    catch_up(&pair, &mut forward).await;
    prepare_way_back(&pair).await;
    let back = mirrored(&pair);
    let mut streamer = reverse_stream(&pair);
    let target_url = pair.target_url.clone();
    let writer = tokio::spawn(async move {
        let (mut written, mut failed) = (0u64, 0u64);
        let started = Instant::now();
        let mut client = None;
        while started.elapsed() < Duration::from_secs(8) {
            if client.is_none() {
                client = harness::try_connect(&target_url).await.ok();
            }
            let Some(c) = &client else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            match app_write(c, written + failed + 1).await {
                Ok(()) => written += 1,
                Err(_) => {
                    // The restart ended the session (the transaction, if
                    // any, was not committed): connect again.
                    failed += 1;
                    client = None;
                }
            }
        }
        (written, failed)
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A crash and recovery of the target, as `pg_ctl restart -m immediate`.
    stream_support::restart_immediate(&new);
    let (written, failed) = writer.await.unwrap();
    catch_up(&back, &mut streamer).await;
    if let Some(run) = forward.if_exited().await {
        panic!("the forward streamer stopped:\n{run}");
    }
    assert!(!streamer.exited(), "the reverse streamer stopped");
    assert_all_same(&pair).await;
    println!("target restarted under load: {written} application transactions committed ({failed} cut by the restart), equal row by row");
    assert!(
        written > 20 && failed >= 1,
        "{written} written, {failed} failed"
    );
    streamer.kill().await;
    forward.kill().await;
}

/// With the application's writes on the target but no reverse streamer to
/// carry them back, the switch back is refused: "safe to switch back" is
/// never printed, the old source stays fenced.
#[tokio::test]
async fn a_switch_back_without_the_reverse_stream_is_not_safe() {
    let (pair, forward) = migrated("way_back_unsafe").await;
    prepare_way_back(&pair).await;
    forward.kill().await;
    let target = pair.target().await;
    for i in 1..=5 {
        app_write(&target, i).await.expect("application write");
    }
    let mut cmd = reverse(&pair, "cutover");
    cmd.args(["--fence", "--timeout", "5s"]);
    let run = harness::run(cmd).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stdout.contains("NOT safe to switch back"), "{run}");
    assert!(
        !run.stdout
            .contains("switch back:         safe to switch back"),
        "{run}"
    );
    assert_eq!(
        value(&pair.source().await, "SHOW default_transaction_read_only").await,
        "on",
        "the old source stays fenced"
    );
}
