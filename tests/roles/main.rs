//! Non-superuser roles shaped like Supabase's and RDS's, and the managed
//! schemas such services keep on both ends (`auth`, `storage`,
//! `extensions`, …, each with its own owner), end to end: `check`,
//! snapshot, a stream under a writer, verify, `cutover --fence`, and a
//! row-by-row comparison. The source role has LOGIN REPLICATION BYPASSRLS
//! and owns the application's tables; the target role owns the
//! application's schema (the database) and has CREATEDB; neither is a
//! superuser. With `SET` on `session_replication_role` granted on the
//! target, or without it (triggers and foreign keys then act on the target).
//!
//! One test binary, split by behaviour:
//! * [`managed`]: the managed schemas are left alone on both ends;
//! * [`enforced`]: without the grant, foreign keys act and stay satisfied;
//! * [`refusals`]: a missing privilege is named with the statement that grants it;
//! * [`workloads`]: realistic applications (a Django-style schema, a
//!   `patients` table) writing during the snapshot and the stream.
//!
//! This file holds the environment they share.

#[path = "../harness/mod.rs"]
mod harness;
#[path = "../stream_support/mod.rs"]
mod stream_support;

mod enforced;
mod managed;
mod refusals;
mod workloads;

use harness::{exec, Client, Pair};

/// The schemas a managed service keeps for itself, each with its own owner
/// (a role walrelay's roles are not), as Supabase has them.
const MANAGED: &[&str] = &[
    "auth",
    "storage",
    "graphql",
    "realtime",
    "vault",
    "supabase_functions",
];

/// One test's databases with non-superuser roles on both ends.
struct Cloud {
    /// URLs of the walrelay roles (what walrelay is given).
    pair: Pair,
    /// Superuser URLs of the same databases (setting up, comparing).
    admin: Pair,
    source_role: String,
    target_role: String,
    /// The owner of the managed schemas (the same name on both clusters).
    service_role: String,
}

impl Cloud {
    /// Fresh databases with a Supabase-shaped environment on both ends;
    /// `replication_role` grants the target role `SET` on
    /// `session_replication_role`.
    async fn new(name: &str, replication_role: bool) -> Cloud {
        let admin = harness::pair(name).await;
        let (source_role, source_pw) = admin
            .source_cluster()
            .create_role("src_app", "REPLICATION BYPASSRLS NOSUPERUSER")
            .await;
        let (target_role, target_pw) = admin
            .target_cluster()
            .create_role("tgt_app", "CREATEDB NOSUPERUSER")
            .await;
        let service_role = format!("svc_admin_{}", harness::unique());
        for cluster in [admin.source_cluster(), admin.target_cluster()] {
            exec(
                &cluster.connect("postgres").await,
                &format!("CREATE ROLE {service_role} NOLOGIN"),
            )
            .await;
        }
        let source = admin.source().await;
        exec(&source, &managed_sql(&service_role, &source_role, "source")).await;
        // A database-wide hook as managed services install them (only a
        // superuser may create one), calling a function in `extensions`.
        exec(
            &source,
            "CREATE FUNCTION extensions.watch_ddl() RETURNS event_trigger LANGUAGE plpgsql
                 AS $$ BEGIN END $$;
             CREATE EVENT TRIGGER watch_ddl ON ddl_command_end
                 EXECUTE FUNCTION extensions.watch_ddl();",
        )
        .await;
        exec(
            &source,
            &format!(
                "ALTER SCHEMA public OWNER TO {source_role};
                 ALTER DATABASE {} OWNER TO {source_role};",
                admin.source_db
            ),
        )
        .await;
        let target = admin.target().await;
        exec(&target, &managed_sql(&service_role, &target_role, "target")).await;
        exec(
            &target,
            &format!("ALTER DATABASE {} OWNER TO {target_role};", admin.target_db),
        )
        .await;
        if replication_role {
            exec(
                &target,
                &format!("GRANT SET ON PARAMETER session_replication_role TO {target_role}"),
            )
            .await;
        }
        let mut pair = admin.clone();
        pair.source_url = admin
            .source_cluster()
            .url_as(&source_role, &source_pw, &admin.source_db);
        pair.target_url = admin
            .target_cluster()
            .url_as(&target_role, &target_pw, &admin.target_db);
        Cloud {
            pair,
            admin,
            source_role,
            target_role,
            service_role,
        }
    }

    /// Runs `sql` on the source as the application (the source role, which
    /// owns what it creates).
    async fn source_app(&self, sql: &str) {
        exec(&self.source_as_role().await, sql).await;
    }

    async fn source_as_role(&self) -> Client {
        harness::connect(&self.pair.source_url).await
    }

    async fn source(&self) -> Client {
        self.admin.source().await
    }

    async fn target(&self) -> Client {
        self.admin.target().await
    }
}

/// The managed schemas of one end, owned by `service`: `auth.users` with a
/// row-level security policy and `auth.uid()`, `storage.objects`,
/// `extensions` holding `citext` and `pgcrypto`; `app` gets USAGE on
/// `auth` and `extensions` as on Supabase. Each end's `auth.users` holds
/// its own user (`end`).
fn managed_sql(service: &str, app: &str, end: &str) -> String {
    let mut sql = String::new();
    for schema in MANAGED {
        sql.push_str(&format!(
            "CREATE SCHEMA {schema} AUTHORIZATION {service};\n"
        ));
    }
    sql.push_str(&format!(
        "SET ROLE {service};
         CREATE TABLE auth.users (id uuid PRIMARY KEY, email text NOT NULL);
         CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE
             AS $$ SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $$;
         ALTER TABLE auth.users ENABLE ROW LEVEL SECURITY;
         CREATE POLICY users_self ON auth.users USING (id = auth.uid());
         CREATE TABLE storage.objects (id bigserial PRIMARY KEY, name text);
         CREATE TABLE realtime.messages (id bigserial PRIMARY KEY, topic text);
         INSERT INTO auth.users VALUES (gen_random_uuid(), '{end}@example.com');
         RESET ROLE;
         CREATE SCHEMA extensions;
         CREATE EXTENSION citext SCHEMA extensions;
         CREATE EXTENSION pgcrypto SCHEMA extensions;
         GRANT USAGE ON SCHEMA auth, extensions TO {app};
         GRANT EXECUTE ON FUNCTION auth.uid() TO {app};
        "
    ));
    sql
}

/// Application sessions writing until told to stop or cut off (the fence
/// ends them): each runs `step(i)` for i = 1, 2, … as one simple query.
struct Writers {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(u64, String)>>,
}

impl Writers {
    async fn start<F>(url: &str, sessions: usize, step: F) -> Writers
    where
        F: Fn(usize, u64) -> String + Send + Sync + 'static,
    {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let step = std::sync::Arc::new(step);
        let mut tasks = Vec::new();
        for session in 0..sessions {
            let client = harness::connect(url).await;
            let (stop, step) = (stop.clone(), step.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    if let Err(err) = client.batch_execute(&step(session, i)).await {
                        return (i - 1, harness::error_text(&err));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
                }
                (i, "asked to stop".to_string())
            }));
        }
        Writers { stop, tasks }
    }

    /// Stops them; the transactions written and why each session stopped.
    async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut total = 0;
        let mut why = Vec::new();
        for task in self.tasks {
            let (n, reason) = task.await.expect("writer task");
            total += n;
            why.push(reason);
        }
        (total, why)
    }
}

/// Each writer session stopped because it was asked to or because the
/// fence ended it, never because a statement of the application failed.
fn assert_writers_stopped_cleanly(why: &[String]) {
    for reason in why {
        assert!(
            reason == "asked to stop"
                || reason.contains("terminat")
                || reason.contains("read-only")
                || reason.contains("connection closed"),
            "an application session failed on its own: {reason}"
        );
    }
}

/// `walrelay check` as the roles: no blocker; the report.
async fn check(cloud: &Cloud, args: &[&str]) -> harness::Run {
    let mut cmd = cloud.pair.walrelay();
    cmd.arg("check").args(args);
    let run = harness::run(cmd).await;
    assert_eq!(run.code, Some(0), "check should find no blocker:\n{run}");
    run
}

/// The whole path as the roles, with `writers` running from before the
/// snapshot until the fence: snapshot, stream, catch-up, verify (clean),
/// `cutover --fence` (safe); then every table in `compare` (name, order)
/// equal row by row. Returns the cutover report.
async fn migrate(
    cloud: &Cloud,
    selection: &[&str],
    writers: Writers,
    compare: &[(&str, &str)],
) -> serde_json::Value {
    let mut snapshot = cloud.pair.walrelay();
    snapshot.arg("snapshot").args(selection);
    harness::run(snapshot).await.assert_success();
    let mut stream_cmd = cloud.pair.walrelay();
    stream_cmd
        .arg("stream")
        .args(selection)
        .args(["--stop-after", "300s"]);
    let mut stream = stream_support::Stream::spawn(stream_cmd);
    stream_support::catch_up(&cloud.pair, &mut stream).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let mut verify = cloud.pair.walrelay();
    verify.arg("verify").args(selection);
    let run = harness::run(verify).await;
    if run.code != Some(0) {
        stream
            .fail(&format!("verify under load should be clean:\n{run}"))
            .await;
    }
    let mut cutover = cloud.pair.walrelay();
    cutover
        .arg("cutover")
        .args(selection)
        .args(["--fence", "--json"]);
    let run = harness::run(cutover).await;
    let (writes, why) = writers.finish().await;
    if run.code != Some(0) {
        stream
            .fail(&format!("cutover should be safe:\n{run}"))
            .await;
    }
    let report: serde_json::Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("the report should be JSON ({e}):\n{run}"));
    assert_eq!(report["safe"], true, "{run}");
    assert!(
        writes > 20,
        "the application wrote only {writes} transactions"
    );
    assert_writers_stopped_cleanly(&why);
    stream.stop().await;
    for (table, order) in compare {
        stream_support::assert_same(&cloud.admin, table, order, 1).await;
    }
    let mut unfence = cloud.pair.walrelay();
    unfence.args(["cutover", "--unfence"]);
    harness::run(unfence).await.assert_success();
    report
}
