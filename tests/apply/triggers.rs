//! Target triggers: they do not fire under `session_replication_role =
//! replica`; where that role is not permitted, changes apply one by one in
//! source order and the triggers fire.

use crate::harness::{self, exec};
use crate::stream_support::{
    assert_mentions, assert_not_mentioned, assert_same, assert_same_multiset, catch_up, drop_slot,
    prepare, target_rows, Stream,
};

#[tokio::test]
async fn target_triggers_do_not_fire() {
    let pair = prepare(
        "apply_triggers",
        "CREATE TABLE tr (id int PRIMARY KEY, v text);
         INSERT INTO tr VALUES (1, 'a'), (2, 'b');",
        "",
    )
    .await;
    exec(
        &pair.target().await,
        "CREATE TABLE public.fired (op text);
         CREATE FUNCTION public.note() RETURNS trigger LANGUAGE plpgsql AS
           $$BEGIN INSERT INTO public.fired VALUES (TG_OP); RETURN NULL; END$$;
         CREATE TRIGGER tr_note AFTER INSERT OR UPDATE OR DELETE ON public.tr
           FOR EACH ROW EXECUTE FUNCTION public.note();
         CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS
           $$BEGIN RAISE EXCEPTION 'trigger fired'; END$$;
         CREATE TRIGGER tr_refuse BEFORE INSERT OR UPDATE OR DELETE ON public.tr
           FOR EACH ROW EXECUTE FUNCTION public.refuse();",
    )
    .await;
    let mut stream = Stream::start(&pair, &[]);
    exec(
        &pair.source().await,
        "INSERT INTO tr VALUES (3, 'c'); UPDATE tr SET v = 'changed' WHERE id = 1; DELETE FROM tr WHERE id = 2;",
    )
    .await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "tr", "id", 2).await;
    let fired = target_rows(&pair, "SELECT count(*) FROM public.fired").await;
    assert_eq!(fired[0][0].as_deref(), Some("0"), "a target trigger fired");
    stream.stop().await;
    drop_slot(&pair).await;
}

/// Where `session_replication_role = replica` is not permitted (a target
/// role without superuser), changes are applied one by one in source order
/// and target triggers fire (what `check` warns about).
#[tokio::test]
async fn without_replica_role_changes_apply_one_by_one_and_triggers_fire() {
    let pair = prepare(
        "apply_no_replica_role",
        "CREATE TABLE t (id int PRIMARY KEY, v text, n int);
         INSERT INTO t SELECT g, 'v' || g, g FROM generate_series(1, 100) g;
         CREATE TABLE f (a int, b text, j json);
         ALTER TABLE f REPLICA IDENTITY FULL;
         INSERT INTO f VALUES (1, 'x', '{}'), (1, 'x', '{}'), (2, NULL, NULL);",
        "",
    )
    .await;
    let target_cluster = pair.target_cluster();
    let (role, password) = target_cluster.create_role("applier", "NOSUPERUSER").await;
    let target = pair.target().await;
    exec(
        &target,
        &format!(
            "GRANT USAGE ON SCHEMA public, walrelay TO {role};
             GRANT ALL ON ALL TABLES IN SCHEMA public, walrelay TO {role};
             CREATE TABLE public.fired (op text);
             GRANT ALL ON public.fired TO {role};
             CREATE FUNCTION public.note() RETURNS trigger LANGUAGE plpgsql AS
               $$BEGIN INSERT INTO public.fired VALUES (TG_OP); RETURN NULL; END$$;
             CREATE TRIGGER t_note AFTER INSERT OR UPDATE OR DELETE ON public.t
               FOR EACH ROW EXECUTE FUNCTION public.note();"
        ),
    )
    .await;
    let mut cmd = harness::walrelay();
    cmd.arg("--source")
        .arg(&pair.source_url)
        .arg("--target")
        .arg(target_cluster.url_as(&role, &password, &pair.target_db))
        .args(["--slot", &pair.slot, "--publication", &pair.publication])
        .args(["stream", "--stop-after", "300s"]);
    let mut stream = Stream::spawn(cmd);
    exec(
        &pair.source().await,
        "INSERT INTO t SELECT g, 'new', g FROM generate_series(101, 150) g;
         UPDATE t SET v = 'changed' WHERE id % 3 = 0;
         DELETE FROM t WHERE id % 5 = 0;
         UPDATE t SET id = id + 1000 WHERE id % 7 = 0;
         UPDATE f SET b = 'y' WHERE ctid = (SELECT ctid FROM f WHERE a = 1 LIMIT 1);
         DELETE FROM f WHERE a = 2;",
    )
    .await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "t", "id", 100).await;
    assert_same_multiset(&pair, "f", 2).await;
    let fired: u64 = harness::value(&target, "SELECT count(*)::text FROM public.fired")
        .await
        .parse()
        .unwrap();
    assert!(fired > 0, "without the replica role, target triggers fire");
    let run = stream.stop().await;
    assert_mentions(&run, &["session_replication_role"]);
    drop_slot(&pair).await;
}

/// A target trigger enabled for replicas that returns NULL skips a change,
/// as it does under native replication, which goes on: walrelay logs the
/// skipped change by table and key column names and goes on too (also with
/// inserts skipped among set-wise ones). A row that is really missing is
/// still drift and stops the stream.
#[tokio::test]
async fn a_change_skipped_by_a_replica_trigger_is_logged_and_the_stream_goes_on() {
    let pair = prepare(
        "apply_trigger_skips",
        "CREATE TABLE st (id int PRIMARY KEY, v text);
         INSERT INTO st SELECT g, 'v' || g FROM generate_series(1, 20) g;",
        "",
    )
    .await;
    exec(
        &pair.target().await,
        "CREATE FUNCTION public.skip_odd() RETURNS trigger LANGUAGE plpgsql AS
           $$BEGIN
               IF TG_OP = 'DELETE' THEN
                 RETURN CASE WHEN OLD.id % 2 = 1 THEN NULL ELSE OLD END;
               END IF;
               RETURN CASE WHEN NEW.id % 2 = 1 THEN NULL ELSE NEW END;
             END$$;
         CREATE TRIGGER st_skip BEFORE INSERT OR UPDATE OR DELETE ON public.st
           FOR EACH ROW EXECUTE FUNCTION public.skip_odd();
         ALTER TABLE public.st ENABLE REPLICA TRIGGER st_skip;",
    )
    .await;
    let mut stream = Stream::start(&pair, &[]);
    let source = pair.source().await;
    exec(
        &source,
        "INSERT INTO st SELECT g, 'new' FROM generate_series(1000, 1019) g;
         UPDATE st SET v = 'changed' WHERE id <= 10;
         DELETE FROM st WHERE id > 15 AND id <= 20;
         BEGIN;
         INSERT INTO st SELECT g, 'new' FROM generate_series(2000, 2009) g;
         UPDATE st SET v = 'changed too' WHERE id IN (11, 12, 2000);
         COMMIT;",
    )
    .await;
    catch_up(&pair, &mut stream).await;
    let mut expected: Vec<String> = Vec::new();
    for id in 1..=20 {
        let v = match id {
            16 | 18 | 20 => continue,
            2 | 4 | 6 | 8 | 10 => "changed".to_string(),
            12 => "changed too".to_string(),
            _ => format!("v{id}"),
        };
        expected.push(format!("{id}:{v}"));
    }
    for id in (1000..1020).chain(2000..2010).filter(|id| id % 2 == 0) {
        let v = if id == 2000 { "changed too" } else { "new" };
        expected.push(format!("{id}:{v}"));
    }
    let got = target_rows(&pair, "SELECT id || ':' || v FROM st ORDER BY id").await;
    let got: Vec<String> = got.into_iter().map(|r| r[0].clone().unwrap()).collect();
    assert_eq!(
        got, expected,
        "the target trigger decides, as under native replication"
    );
    // A row that is not there is drift, trigger or not.
    exec(&pair.target().await, "DELETE FROM public.st WHERE id = 2").await;
    exec(&source, "UPDATE st SET v = 'after drift' WHERE id = 2").await;
    let run = stream.wait(std::time::Duration::from_secs(60)).await;
    assert_ne!(run.code, Some(0), "drift must stop the stream:\n{run}");
    assert_mentions(&run, &["trigger skipped", "st", "drifted"]);
    assert_not_mentioned(&run, &["changed", "after drift"]);
    drop_slot(&pair).await;
}
