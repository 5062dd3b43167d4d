//! What an apply without `session_replication_role = replica` costs: the
//! target's triggers and foreign keys act on every change, as they do for
//! the application. Read from the source's catalog (the schema copy
//! brings its triggers and constraints along).

use tokio_postgres::Client;

use super::Report;
use crate::migration::MigrationPlan;

/// User triggers that fire outside replica mode, per table.
const TRIGGERS_SQL: &str = "
SELECT n.nspname || '.' || c.relname, string_agg(t.tgname, ', ' ORDER BY t.tgname)
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE t.tgrelid = ANY($1) AND NOT t.tgisinternal AND t.tgenabled IN ('O', 'A')
GROUP BY 1 ORDER BY 1";

/// Foreign keys between selected tables whose delete cascades.
const CASCADES_SQL: &str = "
SELECT cn.nspname || '.' || c.relname, rn.nspname || '.' || r.relname
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace
JOIN pg_class r ON r.oid = k.confrelid JOIN pg_namespace rn ON rn.oid = r.relnamespace
WHERE k.contype = 'f' AND k.confdeltype = 'c' AND k.conrelid = ANY($1)
ORDER BY 1, 2";

pub(super) async fn check(source: &Client, plan: &MigrationPlan, report: &mut Report) {
    let oids = plan.table_oids();
    let Ok(triggers) = source.query(TRIGGERS_SQL, &[&oids]).await else {
        return;
    };
    let Ok(cascades) = source.query(CASCADES_SQL, &[&oids]).await else {
        return;
    };
    let mut costs = vec![
        "every change is applied as its own statement in source order (no set-wise batches: a slower apply under heavy write load)".to_string(),
        "foreign keys are checked on the target as changes arrive (deferrable ones at each batch's commit)".to_string(),
    ];
    let fixes = if triggers.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = triggers
            .iter()
            .map(|r| format!("{} ({})", r.get::<_, String>(0), r.get::<_, String>(1)))
            .collect();
        costs.push(format!(
            "user triggers fire on the target for {}: one that changes the row or writes elsewhere makes the target differ from the source (verify reports it)",
            list.join(", ")
        ));
        "; or disable those triggers on the target for the migration (ALTER TABLE … DISABLE TRIGGER name; ENABLE after cutover)".to_string()
    };
    if !cascades.is_empty() {
        let list: Vec<String> = cascades
            .iter()
            .map(|r| format!("{} from {}", r.get::<_, String>(0), r.get::<_, String>(1)))
            .collect();
        costs.push(format!(
            "ON DELETE CASCADE acts on the target: {}; the source's own deletes of those rows then find them gone, which walrelay accepts only after a delete from the parent table in the same source transaction, applying each such delete alone",
            list.join(", ")
        ));
    }
    report.warning(
        "apply_enforced",
        "target",
        format!(
            "without session_replication_role = replica: {}",
            costs.join("; ")
        ),
        format!("grant SET on session_replication_role (see session_replication_role){fixes}"),
    );
}
