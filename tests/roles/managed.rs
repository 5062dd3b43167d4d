//! The managed schemas of both ends are left alone.

use super::*;

/// A Supabase-style application in `public`: citext from `extensions`, a
/// row-level security policy calling `auth.uid()`, a cascading foreign key
/// and a user trigger.
const APP: &str = "
CREATE TABLE profiles (id bigserial PRIMARY KEY, user_id uuid NOT NULL,
    email extensions.citext NOT NULL UNIQUE,
    token text NOT NULL DEFAULT encode(extensions.gen_random_bytes(8), 'hex'),
    updated_at timestamptz NOT NULL DEFAULT now());
ALTER TABLE profiles ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_profile ON profiles USING (user_id = auth.uid());
CREATE TABLE todos (id bigserial PRIMARY KEY,
    profile_id bigint NOT NULL REFERENCES profiles(id) ON DELETE CASCADE,
    title text NOT NULL, done boolean NOT NULL DEFAULT false);
CREATE FUNCTION trim_title() RETURNS trigger LANGUAGE plpgsql
    AS $$ BEGIN NEW.title := btrim(NEW.title); RETURN NEW; END $$;
CREATE TRIGGER todos_trim BEFORE INSERT OR UPDATE ON todos
    FOR EACH ROW EXECUTE FUNCTION trim_title();
INSERT INTO profiles (user_id, email)
    SELECT gen_random_uuid(), 'User' || g || '@Example.com' FROM generate_series(1, 100) g;
INSERT INTO todos (profile_id, title) SELECT 1 + g % 100, ' todo ' || g FROM generate_series(1, 300) g;
";

/// One application transaction: a new profile with todos, a todo done,
/// and every tenth time a profile deleted (its todos cascade).
fn app_step(session: usize, i: u64) -> String {
    let mut sql = format!(
        "BEGIN;
         WITH p AS (INSERT INTO profiles (user_id, email)
                    VALUES (gen_random_uuid(), 'w{session}_{i}@example.com') RETURNING id)
         INSERT INTO todos (profile_id, title) SELECT id, 'task ' || g FROM p, generate_series(1, 3) g;
         UPDATE todos SET done = true, title = title || ' ' WHERE id = (SELECT min(id) FROM todos WHERE NOT done);
         UPDATE profiles SET updated_at = now() WHERE id = (SELECT max(id) FROM profiles);"
    );
    if i % 10 == 0 {
        sql.push_str("DELETE FROM profiles WHERE id = (SELECT min(id) FROM profiles);");
    }
    sql.push_str("COMMIT;");
    sql
}

async fn managed_end_to_end(name: &str, replication_role: bool) {
    let cloud = Cloud::new(name, replication_role).await;
    cloud.source_app(APP).await;
    let selection = ["--table", "public.*"];
    let run = check(&cloud, &selection).await;
    let left = run
        .stdout
        .lines()
        .find(|l| l.contains("[managed_schemas]"))
        .unwrap_or_else(|| panic!("check should name the schemas left alone:\n{run}"));
    for schema in MANAGED.iter().chain(&["extensions"]) {
        assert!(
            left.contains(&format!("{schema} (owner")),
            "{schema} not named:\n{run}"
        );
    }
    if replication_role {
        assert!(!run.stdout.contains("apply_enforced"), "{run}");
    } else {
        // What an apply with triggers and foreign keys acting costs, and
        // the statement that avoids it.
        let grant = format!(
            "GRANT SET ON PARAMETER session_replication_role TO \"{}\"",
            cloud.target_role
        );
        for words in [
            &grant[..],
            "[apply_enforced]",
            "user triggers fire on the target for public.todos (todos_trim)",
            "ON DELETE CASCADE acts on the target: public.todos from public.profiles",
        ] {
            assert!(
                run.stdout.contains(words),
                "check should say {words:?}:\n{run}"
            );
        }
    }
    let writers = Writers::start(&cloud.pair.source_url, 2, app_step).await;
    migrate(
        &cloud,
        &selection,
        writers,
        &[("profiles", "id"), ("todos", "id")],
    )
    .await;
    // The target's managed schemas are as they were: their tables, owners
    // and contents; no event trigger came along.
    let target = cloud.target().await;
    assert_eq!(
        harness::column(&target, "SELECT email FROM auth.users").await,
        ["target@example.com"]
    );
    let owners = harness::column(
        &target,
        "SELECT nspname || ' ' || pg_get_userbyid(nspowner) FROM pg_namespace
         WHERE nspname IN ('auth', 'storage', 'graphql', 'realtime', 'vault', 'supabase_functions')
         ORDER BY 1",
    )
    .await;
    assert_eq!(owners.len(), MANAGED.len());
    for line in &owners {
        assert!(line.ends_with(&cloud.service_role), "{owners:?}");
    }
    assert_eq!(
        harness::value(&target, "SELECT count(*) FROM pg_event_trigger").await,
        "0"
    );
    // Cleanup as the same roles.
    let mut cleanup = cloud.pair.walrelay();
    cleanup.args(["cleanup", "--yes"]);
    harness::run(cleanup).await.assert_success();
    assert!(!cloud.pair.slot_exists().await);
    assert!(!cloud.pair.publication_exists().await);
    // The application's policy calls the target's auth.uid().
    assert_eq!(
        harness::value(
            &target,
            "SELECT count(*) FROM pg_policy WHERE polname = 'own_profile'"
        )
        .await,
        "1"
    );
}

#[tokio::test]
async fn managed_schemas_with_replication_role_granted() {
    managed_end_to_end("managed_grant", true).await;
}

#[tokio::test]
async fn managed_schemas_without_replication_role() {
    managed_end_to_end("managed_nogrant", false).await;
}
