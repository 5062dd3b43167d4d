//! Sequences are not carried by logical replication: at cutover each one
//! of the plan's (every sequence the selected tables use, wherever it
//! lives) is set on the target from the source.

use tokio_postgres::Client;

use crate::migration::MigrationPlan;
use crate::pg::connect::safe_error_text;

use super::{sql, CutoverError, CutoverReport};

pub(super) async fn sync_sequences(
    plan: &MigrationPlan,
    source: &Client,
    target: &Client,
    report: &mut CutoverReport,
) -> Result<(), CutoverError> {
    for sequence in &plan.sequences {
        let qualified = sequence.qualified();
        let display = sequence.display();
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
