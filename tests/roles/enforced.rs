//! An apply without `session_replication_role = replica`: the target's
//! foreign keys act, and the order walrelay applies in keeps them
//! satisfied; a missing row that no cascade explains is still drift.

use super::*;

const SCHEMA: &str = "
CREATE TABLE node (id int PRIMARY KEY,
    parent int REFERENCES node (id) DEFERRABLE INITIALLY IMMEDIATE);
CREATE TABLE clinic (id int PRIMARY KEY, name text);
CREATE TABLE ward (id int PRIMARY KEY, clinic_id int NOT NULL REFERENCES clinic (id) ON DELETE CASCADE);
CREATE TABLE bed (id int PRIMARY KEY, ward_id int NOT NULL REFERENCES ward (id) ON DELETE CASCADE);
INSERT INTO clinic SELECT g, 'clinic ' || g FROM generate_series(1, 3) g;
INSERT INTO ward SELECT g, 1 + g % 3 FROM generate_series(1, 12) g;
INSERT INTO bed SELECT g, 1 + g % 12 FROM generate_series(1, 60) g;
";

#[tokio::test]
async fn foreign_keys_act_on_the_target_and_stay_satisfied() {
    let cloud = Cloud::new("enforced", false).await;
    cloud.source_app(SCHEMA).await;
    let selection = ["--table", "public.*"];
    let mut snapshot = cloud.pair.walrelay();
    snapshot.arg("snapshot").args(selection);
    harness::run(snapshot).await.assert_success();
    let mut cmd = cloud.pair.walrelay();
    cmd.arg("stream")
        .args(selection)
        .args(["--stop-after", "120s"]);
    let mut stream = stream_support::Stream::spawn(cmd);
    // One statement whose rows satisfy a deferrable key only together (the
    // child row first), and a delete cascading over two levels, which the
    // source's WAL follows with its own deletes of the wards and beds.
    cloud
        .source_app(
            "INSERT INTO node VALUES (2, 1), (1, NULL), (3, 2);
             DELETE FROM clinic WHERE id = 1;
             BEGIN; DELETE FROM ward WHERE id = 2; UPDATE clinic SET name = 'renamed' WHERE id = 2; COMMIT;",
        )
        .await;
    stream_support::catch_up(&cloud.pair, &mut stream).await;
    for (table, order) in [
        ("node", "id"),
        ("clinic", "id"),
        ("ward", "id"),
        ("bed", "id"),
    ] {
        stream_support::assert_same(&cloud.admin, table, order, 1).await;
    }
    // A row gone from the target without a cascade is drift, as ever.
    exec(&cloud.target().await, "DELETE FROM bed WHERE id = 60").await;
    cloud.source_app("DELETE FROM bed WHERE id = 60").await;
    let run = stream.wait(std::time::Duration::from_secs(60)).await;
    assert_eq!(run.code, Some(1), "the stream should stop on drift:\n{run}");
    assert!(
        run.stderr.contains("delete on public.bed") && run.stderr.contains("found no row"),
        "{run}"
    );
}
