//! Sequences are not carried by logical replication: at cutover each one
//! of the selected schemas is set on the target from the source.

use tokio_postgres::Client;

use crate::config::Config;
use crate::pg::catalog::{self, quote_ident};
use crate::pg::connect::safe_error_text;

use super::{sql, CutoverError, CutoverReport};

pub(super) async fn sync_sequences(
    config: &Config,
    source: &Client,
    target: &Client,
    report: &mut CutoverReport,
) -> Result<(), CutoverError> {
    let tables = catalog::selected_tables(source, &config.selection)
        .await
        .map_err(sql("listing the selected tables"))?;
    let mut schemas: Vec<String> = tables.iter().map(|t| t.schema.clone()).collect();
    schemas.sort();
    schemas.dedup();
    let sequences = source
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'S' AND n.nspname::text = ANY($1) \
               AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e') \
             ORDER BY 1, 2",
            &[&schemas],
        )
        .await
        .map_err(sql("listing the source's sequences"))?;
    for row in sequences {
        let (schema, name): (String, String) = (row.get(0), row.get(1));
        let qualified = format!("{}.{}", quote_ident(&schema), quote_ident(&name));
        let display = format!("{schema}.{name}");
        let exists: bool = target
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&qualified])
            .await
            .map_err(sql("looking up a sequence on the target"))?
            .get(0);
        if !exists {
            report.sequences_missing_on_target.push(display);
            continue;
        }
        let value = source
            .query_one(
                &format!("SELECT last_value, is_called FROM {qualified}"),
                &[],
            )
            .await
            .map_err(|e| CutoverError::Sql {
                what: "reading a source sequence",
                message: format!("{display}: {}", safe_error_text(&e)),
            })?;
        let (last, called): (i64, bool) = (value.get(0), value.get(1));
        target
            .query_one(
                "SELECT setval($1::text::regclass, $2, $3)",
                &[&qualified, &last, &called],
            )
            .await
            .map_err(|e| CutoverError::Sql {
                what: "setting a target sequence",
                message: format!("{display}: {}", safe_error_text(&e)),
            })?;
        report.sequences_synced.push(display);
    }
    Ok(())
}
