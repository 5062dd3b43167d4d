//! Progress of the post-data step: index builds on the target are read
//! with their table and phase, so a long build does not look like a hang.

use std::time::Duration;

use crate::harness::{self, exec};

/// The post-data step's progress watcher reads the target's index builds:
/// a CREATE INDEX on a few million rows is seen with its table and phase.
#[tokio::test]
async fn index_builds_in_progress_are_read_by_table_and_phase() {
    let pair = harness::pair("build_progress").await;
    let target = pair.target().await;
    exec(
        &target,
        "CREATE TABLE big (id int, note text);
         INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 3000000) g;",
    )
    .await;
    let watcher = pair.target().await;
    let seen = tokio::spawn(async move {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            let builds = walrelay::snapshot::build_progress::builds(&watcher)
                .await
                .expect("progress query");
            // The counts are set a moment after the phase starts: wait for
            // a sample that has them.
            if let Some(b) = builds.into_iter().find(|b| {
                b.table == "public.big"
                    && b.phase.starts_with("building index")
                    && b.percent().is_some()
            }) {
                return Some(b);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    });
    exec(&target, "CREATE INDEX big_note_idx ON big (note)").await;
    let build = seen
        .await
        .unwrap()
        .expect("the index build was never seen in progress with its counts");
    assert!(
        (0.0..=100.0).contains(&build.percent().unwrap()),
        "{build:?}"
    );
    assert_eq!(
        build.index, None,
        "a non-concurrent build has no index OID yet"
    );
    assert!(
        walrelay::snapshot::build_progress::builds(&target)
            .await
            .expect("progress query")
            .is_empty(),
        "nothing is in progress once the build returned"
    );
}
