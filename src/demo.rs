//! `walrelay demo`: two throwaway local clusters, sample data, the full path.

use std::process::ExitCode;

use crate::cli::DemoArgs;

/// Runs the demo; exit 0 when the verdict is "safe to switch".
pub async fn run(_args: &DemoArgs) -> anyhow::Result<ExitCode> {
    eprintln!("walrelay demo: not available yet");
    Ok(ExitCode::from(2))
}
