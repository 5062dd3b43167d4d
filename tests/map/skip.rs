//! `--schema skip` with a map: the target's tables must have the mapped
//! shape (target names, renamed columns, a hashed column text, excluded
//! columns absent), and the copy fills them through the map.

use crate::harness::{self, exec};
use crate::{assert_mapped, map_file, with_map, MAP, SCHEMA};

const MAPPED_TARGET: &str = "
CREATE TABLE public.comments (id bigint PRIMARY KEY, content text NOT NULL, email text,
    author text, internal_note text);
CREATE SCHEMA archive;
CREATE TABLE archive.people (id bigint PRIMARY KEY, state text NOT NULL, insurance_info text,
    ssn text, deleted_at timestamptz);
CREATE TABLE public.plain (id int PRIMARY KEY, v text);
";

#[tokio::test]
async fn schema_skip_checks_the_mapped_shape_then_copies_through_the_map() {
    let pair = harness::pair("map_skip").await;
    let source = pair.source().await;
    let target = pair.target().await;
    exec(&source, SCHEMA).await;
    exec(&target, MAPPED_TARGET).await;
    let (_dir, map) = map_file(MAP);

    let refused = harness::run(with_map(&pair, &map, &["snapshot", "--schema", "skip"])).await;
    refused.assert_failure();
    assert!(
        refused
            .stderr
            .contains("public.comments.internal_note: excluded by the map"),
        "{refused}"
    );
    assert!(!pair.slot_exists().await);

    exec(
        &target,
        "ALTER TABLE public.comments DROP COLUMN internal_note",
    )
    .await;
    harness::run(with_map(&pair, &map, &["snapshot", "--schema", "skip"]))
        .await
        .assert_success();
    assert_mapped(
        &source,
        &target,
        "after a snapshot into the operator's mapped tables",
    )
    .await;
}
