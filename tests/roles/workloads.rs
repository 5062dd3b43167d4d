//! Realistic applications writing during the snapshot and the stream, then
//! verified, cut over with the fence and compared row by row, with the
//! roles and managed schemas of a managed service on both ends.

use super::*;

/// A Django project: its migrations table, `auth_user` (Django's, in
/// `public`: not the managed `auth` schema), a medical app's
/// `study`/`report`/`report_version` with Django's deferrable foreign
/// keys, the database cache backend's table (upserted, culled by
/// `expires_at`) and a job queue claimed with `FOR UPDATE SKIP LOCKED`.
const DJANGO: &str = "
CREATE TABLE django_migrations (id bigserial PRIMARY KEY, app varchar(255) NOT NULL,
    name varchar(255) NOT NULL, applied timestamptz NOT NULL);
CREATE TABLE auth_user (id serial PRIMARY KEY, password varchar(128) NOT NULL,
    last_login timestamptz NULL, is_superuser boolean NOT NULL,
    username varchar(150) NOT NULL UNIQUE, first_name varchar(150) NOT NULL,
    last_name varchar(150) NOT NULL, email varchar(254) NOT NULL,
    is_staff boolean NOT NULL, is_active boolean NOT NULL, date_joined timestamptz NOT NULL);
CREATE TABLE study (id bigserial PRIMARY KEY, accession varchar(64) NOT NULL UNIQUE,
    modality varchar(16) NOT NULL, study_date date NOT NULL,
    created_by_id integer NOT NULL REFERENCES auth_user (id) DEFERRABLE INITIALLY DEFERRED,
    created_at timestamptz NOT NULL);
CREATE INDEX study_created_by_id ON study (created_by_id);
CREATE TABLE report (id bigserial PRIMARY KEY,
    study_id bigint NOT NULL REFERENCES study (id) DEFERRABLE INITIALLY DEFERRED,
    author_id integer NOT NULL REFERENCES auth_user (id) DEFERRABLE INITIALLY DEFERRED,
    status varchar(20) NOT NULL, current_version integer NOT NULL, updated_at timestamptz NOT NULL);
CREATE INDEX report_study_id ON report (study_id);
CREATE TABLE report_version (id bigserial PRIMARY KEY,
    report_id bigint NOT NULL REFERENCES report (id) DEFERRABLE INITIALLY DEFERRED,
    version integer NOT NULL, body text NOT NULL, created_at timestamptz NOT NULL,
    UNIQUE (report_id, version));
CREATE TABLE django_cache (cache_key varchar(255) PRIMARY KEY, value jsonb NOT NULL,
    expires_at timestamptz NOT NULL);
CREATE INDEX django_cache_expires_at ON django_cache (expires_at);
CREATE TABLE job_queue (id bigserial PRIMARY KEY, kind varchar(50) NOT NULL,
    payload jsonb NOT NULL, status varchar(20) NOT NULL DEFAULT 'pending',
    claimed_by varchar(50), attempts integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(), finished_at timestamptz);
CREATE INDEX job_queue_pending ON job_queue (created_at) WHERE status = 'pending';
INSERT INTO django_migrations (app, name, applied)
    SELECT 'radiology', format('%s_auto', lpad(g::text, 4, '0')), now() FROM generate_series(1, 30) g;
INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email,
                       is_staff, is_active, date_joined)
    SELECT 'pbkdf2_sha256$' || md5(g::text), g = 1, 'user' || g, 'First', 'Last',
           'user' || g || '@clinic.example', g < 5, true, now() FROM generate_series(1, 50) g;
INSERT INTO study (accession, modality, study_date, created_by_id, created_at)
    SELECT 'ACC' || g, (ARRAY['CT', 'MR', 'US', 'XR'])[1 + g % 4], current_date - g % 365, 1 + g % 50, now()
    FROM generate_series(1, 200) g;
INSERT INTO report (study_id, author_id, status, current_version, updated_at)
    SELECT g, 1 + g % 50, 'final', 2, now() FROM generate_series(1, 200) g;
INSERT INTO report_version (report_id, version, body, created_at)
    SELECT 1 + (g - 1) / 2, 1 + (g - 1) % 2, 'findings ' || g, now() FROM generate_series(1, 400) g;
INSERT INTO django_cache
    SELECT 'views.decorators.cache.page.' || g, jsonb_build_object('status', 200, 'len', g),
           now() + interval '5 minutes' FROM generate_series(1, 100) g;
INSERT INTO job_queue (kind, payload) SELECT 'thumbnail', jsonb_build_object('study', g)
    FROM generate_series(1, 300) g;
";

/// Session 0, the web app: a study read in, its report drafted (the
/// version row written before its report, as Django's deferred keys
/// allow), a report finalised, a login, now and then a migration applied
/// and a study deleted with its reports (children first, as Django's ORM
/// cascades). Session 1, the cache: upserts and culls. Sessions 2 and 3,
/// workers: enqueue, claim one pending job with SKIP LOCKED, finish it.
fn django_step(session: usize, i: u64) -> String {
    match session {
        0 => {
            let mut sql = format!(
                "BEGIN;
                 INSERT INTO study (accession, modality, study_date, created_by_id, created_at)
                     VALUES ('W{i}', 'CT', current_date, {user}, now());
                 INSERT INTO report_version (report_id, version, body, created_at)
                     VALUES (nextval('report_id_seq'), 1, 'draft {i}', now());
                 INSERT INTO report (id, study_id, author_id, status, current_version, updated_at)
                     VALUES (currval('report_id_seq'), currval('study_id_seq'), {user}, 'draft', 1, now());
                 WITH r AS (UPDATE report SET status = 'final', current_version = current_version + 1,
                                              updated_at = now()
                            WHERE id = (SELECT min(id) FROM report WHERE status = 'draft') RETURNING id, current_version)
                 INSERT INTO report_version (report_id, version, body, created_at)
                     SELECT id, current_version, 'final {i}', now() FROM r;
                 UPDATE auth_user SET last_login = now() WHERE id = {user};",
                user = 1 + i % 50
            );
            if i % 15 == 0 {
                sql.push_str(&format!(
                    "INSERT INTO django_migrations (app, name, applied) VALUES ('radiology', '{i}_live', now());"
                ));
            }
            if i % 10 == 0 {
                sql.push_str(
                    "CREATE TEMP TABLE IF NOT EXISTS gone (id bigint);
                     TRUNCATE gone;
                     INSERT INTO gone SELECT min(id) FROM study;
                     DELETE FROM report_version WHERE report_id IN
                         (SELECT id FROM report WHERE study_id IN (SELECT id FROM gone));
                     DELETE FROM report WHERE study_id IN (SELECT id FROM gone);
                     DELETE FROM study WHERE id IN (SELECT id FROM gone);",
                );
            }
            sql.push_str("COMMIT;");
            sql
        }
        1 => {
            let mut sql = format!(
                "INSERT INTO django_cache (cache_key, value, expires_at)
                     VALUES ('views.decorators.cache.page.{}', jsonb_build_object('status', 200, 'n', {i}, 'tags', jsonb_build_array('a', 'b')),
                             now() + interval '5 minutes')
                 ON CONFLICT (cache_key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at;",
                i % 150
            );
            if i % 20 == 0 {
                sql.push_str(
                    "DELETE FROM django_cache WHERE cache_key IN
                         (SELECT cache_key FROM django_cache ORDER BY expires_at, cache_key LIMIT 3);",
                );
            }
            sql
        }
        _ => format!(
            "INSERT INTO job_queue (kind, payload) VALUES ('thumbnail', jsonb_build_object('study', {i}));
             BEGIN;
             UPDATE job_queue SET status = 'running', claimed_by = 'worker{session}', attempts = attempts + 1
             WHERE id = (SELECT id FROM job_queue WHERE status = 'pending'
                         ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED);
             COMMIT;
             UPDATE job_queue SET status = 'done', finished_at = now()
             WHERE claimed_by = 'worker{session}' AND status = 'running';"
        ),
    }
}

#[tokio::test]
async fn django_application_without_replication_role() {
    let cloud = Cloud::new("django", false).await;
    cloud.source_app(DJANGO).await;
    let selection = ["--table", "public.*"];
    check(&cloud, &selection).await;
    let writers = Writers::start(&cloud.pair.source_url, 4, django_step).await;
    let report = migrate(
        &cloud,
        &selection,
        writers,
        &[
            ("django_migrations", "id"),
            ("auth_user", "id"),
            ("study", "id"),
            ("report", "id"),
            ("report_version", "id"),
            ("django_cache", "cache_key"),
            ("job_queue", "id"),
        ],
    )
    .await;
    let synced = report["sequences_synced"].to_string();
    for seq in [
        "public.report_id_seq",
        "public.job_queue_id_seq",
        "public.auth_user_id_seq",
    ] {
        assert!(synced.contains(seq), "{seq} not synced: {synced}");
    }
    // The queue moved on the source while it was copied and streamed.
    let done = harness::value(
        &cloud.target().await,
        "SELECT count(*) FROM job_queue WHERE status = 'done'",
    )
    .await;
    assert!(done.parse::<u64>().unwrap() > 0, "no job was finished");
}

/// A clinic's patients: `patient_id` unique besides the key, `age`
/// checked, timestamps defaulted.
const PATIENTS: &str = "
CREATE TABLE patients (id serial PRIMARY KEY, patient_id varchar(50) UNIQUE,
    name varchar(200), age int CHECK (age > 0), last_visit date,
    created_at timestamptz DEFAULT now(), updated_at timestamptz DEFAULT now());
INSERT INTO patients (patient_id, name, age, last_visit)
    SELECT 'P-' || g, 'Patient ' || g, 1 + g % 99, current_date - g % 400
    FROM generate_series(1, 2000) g;
";

/// New patients, visits recorded, upserts by `patient_id`, and a
/// `patient_id` given up and taken again by a new row in one transaction
/// (the unique constraint that is not the key).
fn patients_step(session: usize, i: u64) -> String {
    let n = 1 + (i * 37 + session as u64 * 11) % 2000;
    let mut sql = format!(
        "BEGIN;
         INSERT INTO patients (patient_id, name, age, last_visit)
             VALUES ('N{session}-{i}', 'New {i}', {age}, current_date);
         UPDATE patients SET last_visit = current_date, updated_at = now(), age = age + 1
             WHERE id = {n} AND age < 120;
         INSERT INTO patients (patient_id, name, age) VALUES ('P-{n}', 'Upserted', 40)
             ON CONFLICT (patient_id) DO UPDATE SET last_visit = current_date, updated_at = now();",
        age = 1 + i % 90
    );
    if i % 7 == 0 {
        sql.push_str(&format!(
            "DELETE FROM patients WHERE patient_id = 'P-{n}';
             INSERT INTO patients (patient_id, name, age) VALUES ('P-{n}', 'Re-registered', 30);"
        ));
    }
    sql.push_str("COMMIT;");
    sql
}

#[tokio::test]
async fn patients_with_replication_role() {
    let cloud = Cloud::new("patients", true).await;
    cloud.source_app(PATIENTS).await;
    let selection = ["--table", "public.*"];
    check(&cloud, &selection).await;
    let writers = Writers::start(&cloud.pair.source_url, 3, patients_step).await;
    migrate(&cloud, &selection, writers, &[("patients", "id")]).await;
    let target = cloud.target().await;
    let next = harness::value(&target, "SELECT nextval('patients_id_seq')").await;
    let max = harness::value(&target, "SELECT max(id) FROM patients").await;
    assert!(next.parse::<i64>().unwrap() > max.parse::<i64>().unwrap());
}
