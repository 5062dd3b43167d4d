//! Sequences are not carried by logical replication: at cutover each one
//! of the plan's (every sequence the selected tables use, wherever it
//! lives) is set on the target from the source.

use tokio_postgres::Client;

use crate::migration::MigrationPlan;
use crate::pg::catalog::session_names;
use crate::pg::connect::safe_error_text;
use crate::pg::error::grant_hint;

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
            .await;
        let value = match value {
            Ok(value) => value,
            Err(e) => {
                return Err(refused(
                    source,
                    "reading a source sequence",
                    &display,
                    &qualified,
                    "SELECT",
                    e,
                )
                .await)
            }
        };
        let (last, called): (i64, bool) = (value.get(0), value.get(1));
        let set = target
            .query_one(
                "SELECT setval($1::text::regclass, $2, $3)",
                &[&qualified, &last, &called],
            )
            .await;
        if let Err(e) = set {
            return Err(refused(
                target,
                "setting a target sequence",
                &display,
                &qualified,
                "UPDATE",
                e,
            )
            .await);
        }
        report.sequences_synced.push(display);
    }
    Ok(())
}

/// The error for a sequence statement the server refused; for a missing
/// privilege, with the grant that gives it.
async fn refused(
    client: &Client,
    what: &'static str,
    display: &str,
    qualified: &str,
    privilege: &str,
    err: tokio_postgres::Error,
) -> CutoverError {
    let (role, _) = session_names(client).await;
    let hint = grant_hint(&err, || {
        format!("GRANT {privilege} ON SEQUENCE {qualified} TO {role};")
    });
    CutoverError::Sql {
        what,
        message: format!("{display}: {}{hint}", safe_error_text(&err)),
    }
}
