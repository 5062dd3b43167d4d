//! `walrelay snapshot`.

use crate::cli::SnapshotArgs;
use crate::config::Config;

/// Runs the snapshot to completion.
pub async fn run(_config: &Config, _args: &SnapshotArgs) -> anyhow::Result<String> {
    anyhow::bail!("not available yet")
}
