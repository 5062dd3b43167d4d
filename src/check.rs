//! `walrelay check`: the preflight.

use serde::Serialize;

use crate::config::Config;

/// All findings of one preflight.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
}

/// One thing that is wrong or worth knowing, with its fix.
#[derive(Debug, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub subject: String,
    pub problem: String,
    pub fix: String,
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Blocker,
    Warning,
    Ok,
}

impl Report {
    /// Whether any finding stops a migration.
    pub fn has_blockers(&self) -> bool {
        self.findings
            .iter()
            .any(|f| f.severity == Severity::Blocker)
    }

    /// The human form.
    pub fn render(&self) -> String {
        String::new()
    }
}

/// Runs every check against both ends.
pub async fn run(_config: &Config) -> Report {
    Report::default()
}
