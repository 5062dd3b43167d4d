//! `walrelay stream` applying each kind of change (DESIGN.md → Apply rules)
//! against real clusters: snapshot, stream, write on the source, wait until
//! the target's checkpoint passes the source position read after the
//! writes, compare row by row.

mod harness;
mod stream_support;

use std::time::Duration;

use harness::exec;
use stream_support::{
    assert_mentions, assert_not_mentioned, assert_same, assert_same_multiset, catch_up, drop_slot,
    prepare, source_lsn, target_rows, Stream,
};

#[tokio::test]
async fn insert_update_delete_and_key_change_with_a_primary_key() {
    let pair = prepare(
        "apply_pk",
        "CREATE TABLE t (id int PRIMARY KEY, v text, n int);
         INSERT INTO t SELECT g, 'v' || g, g FROM generate_series(1, 100) g;
         CREATE TABLE c (a int, b text, v text, PRIMARY KEY (a, b));
         INSERT INTO c SELECT g % 10, 'k' || g, 'x' FROM generate_series(1, 50) g;",
        "",
    )
    .await;
    let mut stream = Stream::start(&pair, &[]);
    let source = pair.source().await;
    exec(
        &source,
        "INSERT INTO t SELECT g, 'new' || g, g FROM generate_series(101, 200) g;
         UPDATE t SET v = 'changed', n = NULL WHERE id % 7 = 0;
         DELETE FROM t WHERE id % 11 = 0;
         UPDATE t SET id = id + 1000 WHERE id % 10 = 0;
         UPDATE c SET b = b || '-moved', v = 'y' WHERE a = 3;
         DELETE FROM c WHERE a = 4;
         INSERT INTO c VALUES (99, 'new', NULL);",
    )
    .await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "t", "id", 150).await;
    assert_same(&pair, "c", "a, b", 40).await;
    let moved = target_rows(&pair, "SELECT count(*) FROM t WHERE id > 1000").await;
    assert_eq!(moved[0][0].as_deref(), Some("19"), "rows whose key changed");
    stream.stop().await;
    drop_slot(&pair).await;
}
