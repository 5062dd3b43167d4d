//! A PostgreSQL 14 source cannot filter its publication: the map's
//! exclusions are refused, naming them, unless `--allow-unfiltered-stream`;
//! then walrelay drops them in its process. Its row filters stay refused.

use crate::harness::{self, exec, rows, Cluster, Options};
use crate::stream_support::{catch_up, pair_on, Stream};
use crate::{map_file, with_map};

const MAP14: &str = r#"
[[table]]
source = "public.dispatch_comment"
target = "public.comments"
rename = { text = "content" }
exclude = ["internal_note"]
mask = { email = "hash" }
"#;

const SCHEMA14: &str = "
CREATE TABLE dispatch_comment (id bigint PRIMARY KEY, text text NOT NULL,
    internal_note text NOT NULL, email text, author text);
INSERT INTO dispatch_comment
    SELECT g, 'comment ' || g, 'secret-note-' || g, 'secret' || g || '@example.com', 'a'
    FROM generate_series(1, 100) g;
";

#[tokio::test]
async fn a_pg14_source_refuses_exclusions_unless_the_unfiltered_stream_is_allowed() {
    let source = Cluster::start(Options::source().version(14).label("map14"));
    let pair = pair_on(&source, &harness::shared().target, "map_pg14").await;
    let src = pair.source().await;
    exec(&src, SCHEMA14).await;

    let (_dir, filtered) = map_file(&format!("{MAP14}where = \"id > 5\"\n"));
    let run = harness::run(with_map(
        &pair,
        &filtered,
        &["snapshot", "--allow-unfiltered-stream"],
    ))
    .await;
    run.assert_failure();
    assert!(run.stderr.contains("row filters need 15+"), "{run}");

    let (_dir, map) = map_file(MAP14);
    let refused = harness::run(with_map(&pair, &map, &["snapshot"])).await;
    refused.assert_failure();
    assert!(
        refused
            .stderr
            .contains("public.dispatch_comment (internal_note)")
            && refused.stderr.contains("--allow-unfiltered-stream"),
        "{refused}"
    );
    assert!(!pair.slot_exists().await);

    let allowed = harness::run(with_map(
        &pair,
        &map,
        &["snapshot", "--allow-unfiltered-stream"],
    ))
    .await;
    allowed.assert_success();
    assert!(allowed.stderr.contains("cross the wire"), "{allowed}");
    let mut stream = Stream::start(
        &pair,
        &["--map", map.to_str().unwrap(), "--allow-unfiltered-stream"],
    );
    exec(
        &src,
        "INSERT INTO dispatch_comment VALUES (500, 'late', 'secret-late', 'secret@late', 'b');
         UPDATE dispatch_comment SET text = 'changed', internal_note = 'secret-x' WHERE id = 7;
         DELETE FROM dispatch_comment WHERE id = 8;",
    )
    .await;
    catch_up(&pair, &mut stream).await;
    let want = rows(
        &src,
        "SELECT id::text, text, encode(sha256(convert_to(email, 'UTF8')), 'hex'), author FROM dispatch_comment ORDER BY id",
    )
    .await;
    let target = pair.target().await;
    let got = rows(
        &target,
        "SELECT id::text, content, email, author FROM public.comments ORDER BY id",
    )
    .await;
    assert_eq!(want, got);
    let run = stream.stop().await;
    assert!(!run.output().contains("secret"), "{run}");
}
