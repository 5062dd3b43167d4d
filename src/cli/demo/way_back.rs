//! The demo's way back: after the cutover, the way back prepared, the
//! application writing on the target while both streamers run, then the
//! switch back, with its figures.

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::config::Config;
use crate::cutover::CutoverOptions;

/// How long the application writes on the target before the switch back.
const WRITE_ON_TARGET: Duration = Duration::from_secs(3);

/// Prepares the way back, streams the target's writes into the old source
/// and switches back; returns whether it is safe to switch back.
pub(super) async fn run(forward: &Config, lines: &mut Vec<String>) -> anyhow::Result<bool> {
    let prepared = crate::reverse::prepare(forward)
        .await
        .context("preparing the way back")?;
    let reverse = crate::reverse::config(forward)?;
    lines.push(format!(
        "way back: slot {} on the target at {}, walrelay's state on the old source",
        prepared.slot, prepared.consistent_lsn
    ));
    println!("demo: {}", lines.last().unwrap());
    let stream = super::DemoStream::start(&reverse, "reverse stream");
    let result = async {
        let written = write_on_target(forward).await?;
        let old_source = crate::cutover::unfence_session(forward).await?;
        let report = crate::cutover::run(
            &reverse,
            &CutoverOptions {
                fence: true,
                ..Default::default()
            },
        )
        .await
        .context("switch back")?;
        let mut lifted = None;
        if report.safe {
            let t = Instant::now();
            crate::cutover::unfence_on(&old_source).await?;
            lifted = Some(report.fence_to_verdict_seconds.unwrap_or(0.0) + t.elapsed().as_secs_f64());
        }
        lines.push(format!(
            "way back: the application wrote {written} transactions on the target while both streamers ran; switch back: {} rows verified before the fence, {} changed rows after it, {} sequences copied back, {}",
            report.pre_fence_rows_verified,
            report.rows_verified,
            report.sequences_synced.len(),
            match lifted {
                Some(freeze) => format!("safe to switch back, old source writable again; write freeze {freeze:.2} s"),
                None => "NOT safe to switch back".into(),
            }
        ));
        for reason in &report.reasons {
            lines.push(format!("  not safe to switch back: {reason}"));
        }
        anyhow::Ok(lifted.is_some())
    }
    .await;
    stream.finish(result.is_ok()).await?;
    result
}

/// The application, moved to the target: new patients and visits.
async fn write_on_target(forward: &Config) -> anyhow::Result<u64> {
    let app = crate::pg::connect::connect(&forward.target, "demo app").await?;
    let until = Instant::now() + WRITE_ON_TARGET;
    let mut written = 0;
    while Instant::now() < until {
        written += 1;
        app.batch_execute(&format!(
            "BEGIN;
             WITH p AS (INSERT INTO patients (name, born) VALUES ('moved patient {written}', date '1980-01-01')
                        RETURNING id)
             INSERT INTO visits (patient_id, reason) SELECT id, 'first visit on the new database' FROM p;
             UPDATE patients SET name = name || '.' WHERE id = {};
             SELECT nextval('invoice_no_seq');
             COMMIT;",
            1 + written % 1000
        ))
        .await
        .context("the application writing on the target")?;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(written)
}
