//! `walrelay check`: the preflight. Every finding says what is wrong and
//! how to fix it; blockers make the command exit 1.

mod ddl;
mod enforced;
mod schemas;
mod source;
mod target;
mod versions;

use serde::Serialize;

use crate::config::Config;

/// All findings of one preflight.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Report {
    pub findings: Vec<Finding>,
}

/// One thing that is wrong or worth knowing, with its fix.
#[derive(Debug, Serialize)]
pub(crate) struct Finding {
    /// Stable identifier of the check, e.g. `wal_level`.
    pub code: &'static str,
    pub severity: Severity,
    /// What the finding is about: `source`, `target` or a table name.
    pub subject: String,
    pub problem: String,
    pub fix: String,
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Severity {
    Blocker,
    Warning,
    Ok,
}

impl Report {
    /// Whether any finding stops a migration.
    pub(crate) fn has_blockers(&self) -> bool {
        self.findings
            .iter()
            .any(|f| f.severity == Severity::Blocker)
    }

    fn push(
        &mut self,
        code: &'static str,
        severity: Severity,
        subject: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.findings.push(Finding {
            code,
            severity,
            subject: subject.into(),
            problem: problem.into(),
            fix: fix.into(),
        });
    }

    fn blocker(
        &mut self,
        code: &'static str,
        subject: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.push(code, Severity::Blocker, subject, problem, fix);
    }

    fn warning(
        &mut self,
        code: &'static str,
        subject: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.push(code, Severity::Warning, subject, problem, fix);
    }

    fn ok(&mut self, code: &'static str, subject: impl Into<String>, what: impl Into<String>) {
        self.push(code, Severity::Ok, subject, what, "");
    }

    /// The human form: blockers first, then warnings, then what is fine.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        for severity in [Severity::Blocker, Severity::Warning, Severity::Ok] {
            for f in self.findings.iter().filter(|f| f.severity == severity) {
                let tag = match severity {
                    Severity::Blocker => "BLOCKER",
                    Severity::Warning => "warning",
                    Severity::Ok => "ok",
                };
                out.push_str(&format!(
                    "{tag:<8} [{}] {}: {}\n",
                    f.code, f.subject, f.problem
                ));
                if !f.fix.is_empty() {
                    out.push_str(&format!("         fix: {}\n", f.fix));
                }
            }
        }
        let blockers = self
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Blocker)
            .count();
        let warnings = self
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Warning)
            .count();
        out.push_str(&format!("\n{blockers} blocker(s), {warnings} warning(s)\n"));
        out
    }
}

/// Runs every check against both ends; never fails, an unreachable end is a finding.
pub(crate) async fn run(config: &Config) -> Report {
    let mut report = Report::default();
    let plan = source::check(config, &mut report).await;
    target::check(config, plan.as_ref(), &mut report).await;
    // An end that could not be reached was reported; trying it again would
    // only wait out its connect_timeout a second time.
    let unreachable = report.findings.iter().any(|f| {
        f.severity == Severity::Blocker && matches!(f.code, "source_connect" | "target_connect")
    });
    if !unreachable {
        versions::check(config, &mut report).await;
    }
    report
}
