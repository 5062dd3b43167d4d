//! What the schema copy leaves alone and what it must create: schemas
//! holding no selected table that the target has already or another role
//! owns on the source (a managed service's `auth`, `storage`, …), and the
//! source's extensions the target lacks.

use std::collections::BTreeSet;

use tokio_postgres::Client;

use super::Report;
use crate::migration::MigrationPlan;
use crate::pg::catalog::quote_ident;

pub(super) async fn check(
    source: &Client,
    target: &Client,
    plan: &MigrationPlan,
    report: &mut Report,
) -> Result<(), tokio_postgres::Error> {
    let left = plan.schemas_left_alone(source, target).await?;
    if !left.is_empty() {
        let names: Vec<String> = left
            .iter()
            .map(|s| {
                let why = if s.on_target {
                    "the target has it"
                } else {
                    "not the source role's"
                };
                format!("{} (owner {}; {why})", s.schema, s.owner)
            })
            .collect();
        report.ok(
            "managed_schemas",
            "target",
            format!(
                "the schema copy leaves these schemas alone on both ends (no selected table is in them): {}",
                names.join(", ")
            ),
        );
    }
    check_extensions(source, target, report).await
}

/// An extension the target lacks is created by the schema copy, which a
/// role that is not superuser can do only for a trusted extension.
async fn check_extensions(
    source: &Client,
    target: &Client,
    report: &mut Report,
) -> Result<(), tokio_postgres::Error> {
    let sql = "SELECT e.extname::text, n.nspname::text FROM pg_extension e \
               JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname <> 'plpgsql'";
    let present: BTreeSet<String> = target
        .query(sql, &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let superuser: bool = target
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await?
        .get(0);
    for row in source.query(sql, &[]).await? {
        let (name, schema): (String, String) = (row.get(0), row.get(1));
        if present.contains(&name) || superuser {
            continue;
        }
        report.warning("extension_missing", "target",
            format!("extension {name} (schema {schema} on the source) is missing on the target: the schema copy creates it, which a role that is not superuser may do only for a trusted extension"),
            format!("CREATE EXTENSION IF NOT EXISTS {} SCHEMA {}; on the target as a superuser (on a managed service: its dashboard or admin role)", quote_ident(&name), quote_ident(&schema)));
    }
    Ok(())
}
