//! Target triggers: they do not fire under `session_replication_role =
//! replica`; where that role is not permitted, changes apply one by one in
//! source order and the triggers fire.

use crate::harness::{self, exec};
use crate::stream_support::{
    assert_mentions, assert_same, assert_same_multiset, catch_up, drop_slot, prepare, target_rows,
    Stream,
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
