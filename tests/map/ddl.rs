//! A schema change on a mapped table: the target has the map's shape, which
//! the source's new shape cannot be compared with, so the stream stops,
//! naming the table and what to do, with nothing of that transaction (or
//! after it) applied, instead of changing the target table by the source's
//! names.

use std::time::Duration;

use crate::harness::{self, exec, value};
use crate::stream_support::{assert_not_mentioned, Stream};
use crate::{map_file, with_map, MAP, SCHEMA};

#[tokio::test]
async fn a_schema_change_on_a_mapped_table_stops_the_stream_naming_it() {
    let pair = harness::pair("map_ddl").await;
    let source = pair.source().await;
    let target = pair.target().await;
    exec(&source, SCHEMA).await;
    let (_dir, map) = map_file(MAP);
    harness::run(with_map(&pair, &map, &["snapshot"]))
        .await
        .assert_success();
    // Streamed first, so the event trigger is installed before the change.
    let stream = Stream::start(&pair, &["--map", map.to_str().unwrap()]);
    exec(
        &source,
        "INSERT INTO dispatch_comment VALUES (1001, 'before', 'secret-note', 'secret@x', 'a')",
    )
    .await;
    harness::wait_for(
        Duration::from_secs(60),
        "the row before the change",
        || async {
            (value(
                &target,
                "SELECT count(*) FROM public.comments WHERE id = 1001",
            )
            .await
                == "1")
                .then_some(())
        },
    )
    .await;
    exec(
        &source,
        "BEGIN;
         ALTER TABLE dispatch_comment ADD COLUMN extra int;
         INSERT INTO dispatch_comment VALUES (1002, 'with the change', 'secret-note', 'secret@y', 'a', 7);
         COMMIT;
         INSERT INTO dispatch_comment VALUES (1003, 'after', 'secret-note', 'secret@z', 'a', 8);",
    )
    .await;
    let run = stream.wait(Duration::from_secs(60)).await;
    assert_eq!(run.code, Some(1), "the stream must stop:\n{run}");
    let out = run.output();
    for expected in ["public.dispatch_comment", "--map", "--ddl off"] {
        assert!(out.contains(expected), "{expected:?} not named:\n{run}");
    }
    assert_not_mentioned(&run, &["secret"]);
    assert_eq!(
        value(
            &target,
            "SELECT count(*) FROM public.comments WHERE id > 1001"
        )
        .await,
        "0",
        "nothing of the change's transaction or after it is applied"
    );
    assert_eq!(
        value(
            &target,
            "SELECT count(*) FROM information_schema.columns \
             WHERE table_name IN ('comments', 'dispatch_comment') AND column_name = 'extra'"
        )
        .await,
        "0",
        "no table changed by the source's names"
    );
}
