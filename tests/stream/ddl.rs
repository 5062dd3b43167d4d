//! Schema changes on the source while the stream runs under a writer,
//! captured by walrelay's event trigger (the harness connects as a
//! superuser, so the stream installs it): each followed on the target at
//! its place (target equals source after, row by row, and columns, types,
//! defaults, indexes and constraints compare equal), tables created on the
//! source brought in from a consistent point, and what cannot be followed
//! stopping the stream naming the statement, with nothing after it applied.
//! Without the trigger (a source role that is no superuser), a table the
//! source gains is still found by the catalog check.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::harness::{self, exec, schema_fingerprint};
use crate::stream_support::{assert_mentions, assert_same, catch_up, drop_slot, prepare, Stream};

/// Inserts into `table (id, v)` one small transaction after another until stopped.
struct Writer {
    stop: Arc<AtomicBool>,
    rows: Arc<AtomicI64>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(url: &str, table: &'static str, first_id: i64) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let rows = Arc::new(AtomicI64::new(0));
        let (url, s, r) = (url.to_string(), Arc::clone(&stop), Arc::clone(&rows));
        let task = tokio::spawn(async move {
            let client = harness::connect(&url).await;
            let mut id = first_id;
            while !s.load(Ordering::Relaxed) {
                client
                    .batch_execute(&format!(
                        "INSERT INTO {table} (id, v) VALUES ({id}, 'w{id}'), ({}, 'w{id}')",
                        id + 1
                    ))
                    .await
                    .expect("the writer's insert");
                id += 2;
                r.fetch_add(2, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        Writer { stop, rows, task }
    }

    async fn finish(self) -> i64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the writer");
        self.rows.load(Ordering::Relaxed)
    }
}

async fn assert_same_schema(pair: &crate::harness::Pair) {
    let source = schema_fingerprint(&pair.source().await).await;
    let target = schema_fingerprint(&pair.target().await).await;
    assert_eq!(
        source, target,
        "the target's schema should equal the source's"
    );
}

/// Every kind of schema change walrelay follows, mid-stream, each followed
/// by rows that need it, while a writer keeps inserting.
#[tokio::test]
async fn each_schema_change_is_followed_under_a_writer() {
    let pair = prepare(
        "ddl_follow_all",
        "CREATE TABLE t (id bigint PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g;
         CREATE TABLE u (id int PRIMARY KEY, a text, b int CONSTRAINT b_positive CHECK (b > 0));
         INSERT INTO u SELECT g, 'a' || g, g FROM generate_series(1, 50) g;
         CREATE TABLE gone (id int PRIMARY KEY);
         INSERT INTO gone VALUES (1);",
        "",
    )
    .await;
    let source = pair.source().await;
    let mut stream = Stream::start(&pair, &["--new-table-check", "1s"]);
    catch_up(&pair, &mut stream).await;
    let writer = Writer::start(&pair.source_url, "t", 1_000);
    let steps = [
        // ADD COLUMN with a constant default, then another default: the
        // rows that existed hold 'v', new ones 'w'; and a volatile default
        // on an empty table's column is followed through the stored value.
        "ALTER TABLE t ADD COLUMN c text DEFAULT 'v'; ALTER TABLE t ALTER COLUMN c SET DEFAULT 'w'",
        "BEGIN; ALTER TABLE u ADD COLUMN d numeric DEFAULT 1.5 NOT NULL; INSERT INTO u VALUES (51, 'x', 51, 2.5); COMMIT",
        "ALTER TABLE u RENAME COLUMN a TO a2; INSERT INTO u (id, a2, b) VALUES (52, 'y', 52)",
        "ALTER TABLE u ALTER COLUMN b TYPE bigint; INSERT INTO u (id, a2, b) VALUES (53, 'z', 5000000000)",
        "ALTER TABLE u ALTER COLUMN b SET DEFAULT 7; ALTER TABLE u ALTER COLUMN b SET NOT NULL; INSERT INTO u (id, a2) VALUES (54, 'q')",
        "ALTER TABLE u ALTER COLUMN b DROP DEFAULT; ALTER TABLE u ALTER COLUMN a2 SET NOT NULL; ALTER TABLE u ALTER COLUMN a2 DROP NOT NULL",
        "ALTER TABLE u DROP COLUMN d; UPDATE u SET a2 = a2 || '!' WHERE id % 5 = 0",
        "ALTER TABLE u DROP CONSTRAINT b_positive; INSERT INTO u (id, a2, b) VALUES (56, 'neg', -1)",
        // A volatile default: every existing row got its own value; the
        // table (under the writer) is emptied and copied again.
        "ALTER TABLE t ADD COLUMN r float8 DEFAULT random(); INSERT INTO t (id, v) VALUES (-1, 'same txn')",
        "CREATE INDEX u_b ON u (b); CREATE UNIQUE INDEX t_c_id ON t (c, id); CREATE INDEX u_a2 ON u (a2); DROP INDEX u_a2",
        "ALTER TABLE u RENAME TO u2; INSERT INTO u2 (id, a2, b) VALUES (55, 'r', 55); DELETE FROM u2 WHERE id = 3",
        "CREATE TABLE n (id int PRIMARY KEY, v text); INSERT INTO n SELECT g, 'n' || g FROM generate_series(1, 500) g",
        "INSERT INTO n SELECT g, 'm' || g FROM generate_series(501, 600) g; UPDATE n SET v = v || '+' WHERE id % 7 = 0",
        "DROP TABLE gone",
    ];
    for step in steps {
        exec(&source, step).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The new table's rows keep changing after it was brought in.
    tokio::time::sleep(Duration::from_secs(2)).await;
    exec(
        &source,
        "UPDATE n SET v = v || '#' WHERE id % 3 = 0; DELETE FROM n WHERE id % 11 = 0",
    )
    .await;
    let written = writer.finish().await;
    assert!(written > 0, "the writer wrote nothing");
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "t", "id", 100).await;
    assert_same(&pair, "u2", "id", 50).await;
    assert_same(&pair, "n", "id", 500).await;
    assert_same_schema(&pair).await;
    let run = stream.stop().await;
    assert_mentions(
        &run,
        &[
            "followed a schema change",
            "copied a table the source gained",
        ],
    );
    drop_slot(&pair).await;
}

/// A type change with its own USING expression: the source's rewritten rows
/// are not streamed and a cast on the target could differ. The stream stops
/// naming the statement, and nothing of that transaction or after it is
/// applied.
#[tokio::test]
async fn a_change_that_cannot_be_followed_stops_naming_the_statement() {
    let pair = prepare(
        "ddl_unfollowable",
        "CREATE TABLE t (id bigint PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 20) g;",
        "",
    )
    .await;
    let source = pair.source().await;
    let mut stream = Stream::start(&pair, &[]);
    catch_up(&pair, &mut stream).await;
    exec(
        &source,
        "BEGIN; INSERT INTO t VALUES (21, 'secret_v1'); ALTER TABLE t ALTER COLUMN v TYPE int USING length(v); COMMIT;
         INSERT INTO t VALUES (22, 42);",
    )
    .await;
    let run = stream.wait(Duration::from_secs(60)).await;
    run.assert_failure();
    assert_mentions(
        &run,
        &[
            "ALTER TABLE public.t",
            "USING",
            "does not follow",
            "nothing from that transaction on was applied",
        ],
    );
    crate::stream_support::assert_not_mentioned(&run, &["secret_v1", "secret_v2"]);
    let target = pair.target().await;
    assert_eq!(
        harness::value(&target, "SELECT count(*) FROM t WHERE id > 20").await,
        "0",
        "nothing of the stopped transaction or after it"
    );
    drop_slot(&pair).await;
}

/// `--ddl stop`: a schema change the target lacks stops the stream naming
/// it; once the operator made the target match, a restart goes on.
#[tokio::test]
async fn ddl_stop_stops_on_a_change_and_goes_on_once_the_target_matches() {
    let pair = prepare(
        "ddl_stop_mode",
        "CREATE TABLE t (id bigint PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 20) g;",
        "",
    )
    .await;
    let source = pair.source().await;
    let mut stream = Stream::start(&pair, &["--ddl", "stop"]);
    catch_up(&pair, &mut stream).await;
    exec(
        &source,
        "ALTER TABLE t ADD COLUMN c int; INSERT INTO t VALUES (21, 'x', 1)",
    )
    .await;
    let run = stream.wait(Duration::from_secs(60)).await;
    run.assert_failure();
    assert_mentions(
        &run,
        &[
            "ALTER TABLE public.t",
            "ADD COLUMN \"c\" integer",
            "--ddl stop",
        ],
    );
    exec(&pair.target().await, "ALTER TABLE t ADD COLUMN c int").await;
    let mut stream = Stream::start(&pair, &["--ddl", "stop"]);
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "t", "id", 21).await;
    stream.stop().await;
    drop_slot(&pair).await;
}

/// A source role that is no superuser cannot install the event trigger:
/// the stream says so and goes on; a table created on the source is still
/// found (catalog check), published, copied and streamed, under writers on
/// it and on another table.
#[tokio::test]
async fn without_the_trigger_a_new_table_is_found_by_the_catalog_check() {
    let admin = harness::pair("ddl_no_trigger").await;
    let (role, password) = admin
        .source_cluster()
        .create_role("ddl_app", "REPLICATION NOSUPERUSER")
        .await;
    exec(
        &admin.source().await,
        &format!(
            "ALTER DATABASE {db} OWNER TO {role}; ALTER SCHEMA public OWNER TO {role};",
            db = admin.source_db
        ),
    )
    .await;
    let mut pair = admin.clone();
    pair.source_url = admin
        .source_cluster()
        .url_as(&role, &password, &admin.source_db);
    let app = harness::connect(&pair.source_url).await;
    exec(
        &app,
        "CREATE TABLE t (id bigint PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 20) g;",
    )
    .await;
    crate::stream_support::snapshot(&pair, &[]).await;
    let mut stream = Stream::start(&pair, &["--new-table-check", "1s", "--auto-add-columns"]);
    catch_up(&pair, &mut stream).await;
    let writer = Writer::start(&pair.source_url, "t", 1_000);
    exec(
        &app,
        "CREATE TABLE n (id int PRIMARY KEY, v text); INSERT INTO n SELECT g, 'n' || g FROM generate_series(1, 300) g;",
    )
    .await;
    // Writing to the new table while it is found, published and copied: its
    // changes are in the copy or streamed, never both, never neither.
    let on_n = Writer::start(&pair.source_url, "n", 10_000);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(on_n.finish().await > 0, "the writer on n wrote nothing");
    exec(
        &app,
        "UPDATE n SET v = v || '+' WHERE id % 4 = 0; INSERT INTO n VALUES (301, 'late')",
    )
    .await;
    writer.finish().await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "t", "id", 20).await;
    assert_same(&pair, "n", "id", 301).await;
    let run = stream.stop().await;
    assert_mentions(
        &run,
        &["cannot be captured", "copied a table the source gained"],
    );
    drop_slot(&pair).await;
}

/// Without the trigger's message (`--ddl off`, as where it cannot be
/// installed), a renamed column looks like one dropped and one added: the
/// stream stops saying so instead of adding an empty column.
#[tokio::test]
async fn without_the_trigger_a_rename_stops_as_ambiguous() {
    let pair = prepare(
        "ddl_rename_ambiguous",
        "CREATE TABLE t (id bigint PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 20) g;",
        "",
    )
    .await;
    let source = pair.source().await;
    let mut stream = Stream::start(&pair, &["--ddl", "off", "--auto-add-columns"]);
    catch_up(&pair, &mut stream).await;
    exec(
        &source,
        "ALTER TABLE t RENAME COLUMN v TO content; INSERT INTO t VALUES (21, 'x')",
    )
    .await;
    let run = stream.wait(Duration::from_secs(60)).await;
    run.assert_failure();
    assert_mentions(
        &run,
        &["public.t", "content", "no longer has", "v", "rename"],
    );
    drop_slot(&pair).await;
}

/// The operator's own publication (`--publication`, created by them) is
/// never changed: a table the source gains is reported with the statement to
/// run, and brought in once the operator published it.
#[tokio::test]
async fn a_new_table_is_brought_in_through_an_operators_publication_only_once_they_add_it() {
    let pair = crate::harness::pair("ddl_operator_publication").await;
    let source = pair.source().await;
    exec(
        &source,
        &format!(
            "CREATE TABLE t (id bigint PRIMARY KEY, v text);
             INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 20) g;
             CREATE PUBLICATION {} FOR TABLE t;",
            pair.publication
        ),
    )
    .await;
    crate::stream_support::snapshot(&pair, &[]).await;
    let mut stream = Stream::start(&pair, &["--new-table-check", "1s"]);
    catch_up(&pair, &mut stream).await;
    exec(&source, "CREATE TABLE n (id int PRIMARY KEY, v text); INSERT INTO n SELECT g, 'n' || g FROM generate_series(1, 100) g").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    catch_up(&pair, &mut stream).await;
    let target = pair.target().await;
    assert_eq!(
        harness::value(&target, "SELECT (to_regclass('public.n') IS NULL)::text").await,
        "true",
        "nothing is brought in through a publication walrelay may not change"
    );
    let published = harness::value(
        &source,
        &format!(
            "SELECT count(*) FROM pg_publication_tables WHERE pubname = '{}'",
            pair.publication
        ),
    )
    .await;
    assert_eq!(
        published, "1",
        "the operator's publication is left as it is"
    );
    exec(
        &source,
        &format!("ALTER PUBLICATION {} ADD TABLE n", pair.publication),
    )
    .await;
    exec(&source, "INSERT INTO n VALUES (101, 'after')").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "n", "id", 101).await;
    let run = stream.stop().await;
    assert_mentions(
        &run,
        &[
            "not walrelay's",
            "ALTER PUBLICATION",
            "copied a table the source gained",
        ],
    );
    drop_slot(&pair).await;
}
