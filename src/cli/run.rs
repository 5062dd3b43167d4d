//! `walrelay run`: the snapshot if not done, then the stream, with the
//! HTTP endpoint, the source monitor and periodic verification passes.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;

use super::RunArgs;
use crate::config::Config;
use crate::status::{Stage, StatusBoard};

/// `walrelay run`: HTTP and the source monitor, the snapshot if not done, then the stream.
pub(super) async fn run_all(
    config: &Config,
    args: &RunArgs,
    reverse: bool,
) -> anyhow::Result<ExitCode> {
    crate::http::check_exposure(args.http, args.http_token.as_ref())?;
    let prometheus =
        crate::metrics::install_recorder(reverse).context("installing the metrics recorder")?;
    let board = Arc::new(StatusBoard::default());
    let stop = stop_signal();
    let mut http = tokio::spawn(crate::http::serve_with(
        args.http,
        Arc::clone(&board),
        prometheus,
        crate::cutover::routes(config.clone(), args.http_token.clone()),
        stop.clone(),
    ));
    let monitor = tokio::spawn(crate::monitor::run(
        config.source.clone(),
        config.slot.clone(),
        Arc::clone(&board),
        crate::monitor::DEFAULT_INTERVAL,
        stop.clone(),
    ));
    board.set_stage(Stage::Snapshot);
    let work = async {
        let snapshot =
            crate::snapshot::run_until_stopped(config, &args.snapshot.options(), stop.clone())
                .await;
        // A stop the operator asked for is a clean stop of `run` (exit 0),
        // in the snapshot stage too: the next run resumes the copy.
        if let Err(crate::snapshot::SnapshotError::Interrupted) = snapshot {
            tracing::info!("stopped during the snapshot: run again to continue it");
            return Ok(());
        }
        let summary = snapshot.map_err(|err| {
            let context = err.stopped_context();
            anyhow::Error::new(err).context(context)
        })?;
        tracing::info!(summary = %summary, "snapshot done");
        let _verifier = spawn_verifier(config, args, Arc::clone(&board), stop.clone());
        let stream = crate::stream::StreamOptions {
            spool: args.snapshot.spool.options(),
            ..args.stream.options()
        };
        crate::stream::run(config, &stream, Arc::clone(&board), stop.clone())
            .await
            .context("stream stopped")
    };
    tokio::pin!(work);
    let outcome = tokio::select! {
        outcome = &mut work => outcome,
        served = &mut http => match served {
            // A graceful stop ends the HTTP endpoint first: let the batch finish.
            Ok(Ok(())) => work.await,
            Ok(Err(err)) => Err(anyhow::Error::new(err)),
            Err(_) => Err(anyhow::anyhow!("the HTTP endpoint stopped")),
        },
    };
    if outcome.is_err() {
        board.set_stage(Stage::Failed);
    }
    monitor.abort();
    outcome.map(|()| ExitCode::SUCCESS)
}

/// Repeats verification passes every `--verify-interval` while the stream
/// runs; drift is logged and counted in the metrics, never fatal here.
fn spawn_verifier(
    config: &Config,
    args: &RunArgs,
    board: Arc<StatusBoard>,
    mut stop: watch::Receiver<bool>,
) -> Option<AbortOnDrop> {
    if args.verify_interval.is_zero() {
        return None;
    }
    let config = config.clone();
    let every = args.verify_interval;
    let opts = crate::verify::VerifyOptions {
        max_rows_per_sec: Some(args.verify_max_rows_per_sec),
        ..Default::default()
    };
    Some(AbortOnDrop(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            // Each pass resolves the selection afresh (not one plan for the
            // whole run): tables created on the source while `run` streams
            // and matching --table are then verified too.
            match crate::verify::run_pass(&config, &opts, Some(&board)).await {
                Ok(report) if report.clean => tracing::info!(
                    rows = report.rows,
                    chunks = report.chunks,
                    seconds = report.seconds,
                    "verification pass clean"
                ),
                Ok(report) => tracing::warn!(
                    drift_rows = report.drift_rows,
                    unsettled = report.unsettled,
                    "verification pass found drift: run `walrelay verify` for the keys"
                ),
                Err(err) => tracing::warn!(error = %err, "verification pass failed"),
            }
        }
    })))
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Turns true on SIGINT or SIGTERM; the sender lives for the whole process,
/// so receivers never see a closed channel.
pub(super) fn stop_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let terminated = async {
            match term.as_mut() {
                Some(term) => {
                    term.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminated => {}
        }
        tracing::info!("stop requested: a snapshot stops now (it resumes on the next run), a stream finishes its open batch");
        let _ = tx.send(true);
        std::future::pending::<()>().await;
    });
    rx
}
