//! `walrelay check` against real clusters set up to show each finding.
//!
//! Findings are matched on `code` + `severity` from `check --json`; every
//! blocker or warning a test provokes must carry a non-empty `fix` that
//! names the remedy.
//!
//! One test binary, split by behaviour:
//! * [`output`]: a sound setup, and the human output of a finding;
//! * [`connection`]: unreachable ends, bad credentials, a pooler;
//! * [`source_access`]: what the source role may read and replicate;
//! * [`source_server`]: the source server's settings and transactions;
//! * [`target`]: what the target role may create and write;
//! * [`slots`]: a replication slot that already exists;
//! * [`resume`]: resuming walrelay's own slot: a dropped publication, no
//!   free slot for a resumed snapshot.
//!
//! This file holds the report parsing and the helpers they share.

#[path = "../harness/mod.rs"]
mod harness;

mod connection;
mod output;
mod resume;
mod slots;
mod source_access;
mod source_server;
mod target;

use std::process::Command;

use harness::{Pair, Run};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
struct Finding {
    code: String,
    severity: String,
    subject: String,
    problem: String,
    fix: String,
}

#[derive(Debug, Deserialize)]
struct Report {
    findings: Vec<Finding>,
}

struct Checked {
    run: Run,
    findings: Vec<Finding>,
}

impl Checked {
    fn list(&self) -> String {
        self.findings
            .iter()
            .map(|f| {
                format!(
                    "  {} {} [{}]: {} | fix: {}",
                    f.severity, f.code, f.subject, f.problem, f.fix
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// All findings with this code and severity.
    fn all(&self, code: &str, severity: &str) -> Vec<&Finding> {
        self.findings
            .iter()
            .filter(|f| f.code == code && f.severity == severity)
            .collect()
    }

    /// The one finding with this code and severity (panics listing all
    /// findings when there is none), checked to carry a fix.
    fn expect(&self, code: &str, severity: &str) -> &Finding {
        let found = self.all(code, severity);
        let Some(f) = found.first() else {
            panic!(
                "expected a {severity} `{code}`; findings:\n{}\n{}",
                self.list(),
                self.run
            );
        };
        assert!(
            severity == "ok" || (!f.problem.trim().is_empty() && !f.fix.trim().is_empty()),
            "{severity} `{code}` without problem or fix: {f:?}"
        );
        f
    }

    /// The finding about `subject` (a table name) with this code and severity.
    fn expect_about(&self, code: &str, severity: &str, subject: &str) -> &Finding {
        self.all(code, severity)
            .into_iter()
            .find(|f| f.subject.contains(subject) || f.problem.contains(subject))
            .unwrap_or_else(|| {
                panic!(
                    "expected a {severity} `{code}` about {subject}; findings:\n{}",
                    self.list()
                )
            })
    }

    fn expect_none(&self, code: &str, severity: &str) {
        let found = self.all(code, severity);
        assert!(
            found.is_empty(),
            "expected no {severity} `{code}`; findings:\n{}",
            self.list()
        );
    }

    fn expect_none_about(&self, code: &str, severity: &str, subject: &str) {
        let found: Vec<_> = self
            .all(code, severity)
            .into_iter()
            .filter(|f| f.subject.contains(subject) || f.problem.contains(subject))
            .collect();
        assert!(
            found.is_empty(),
            "expected no {severity} `{code}` about {subject}; findings:\n{}",
            self.list()
        );
    }

    fn blockers(&self) -> Vec<&Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == "blocker")
            .collect()
    }

    /// Exit status 1 with at least one blocker, 0 without any.
    fn assert_exit_matches_blockers(&self) {
        let expected = if self.blockers().is_empty() { 0 } else { 1 };
        assert_eq!(
            self.run.code,
            Some(expected),
            "exit code does not match the blockers:\n{}\n{}",
            self.list(),
            self.run
        );
    }
}

/// Asserts that `text` mentions one of `words` (case-insensitive).
fn mentions(what: &str, text: &str, words: &[&str]) {
    let lower = text.to_lowercase();
    assert!(
        words.iter().any(|w| lower.contains(&w.to_lowercase())),
        "{what} {text:?} should mention one of {words:?}"
    );
}

fn check_cmd(source: &str, target: &str, slot: &str) -> Command {
    let mut cmd = harness::walrelay();
    cmd.args(["--source", source, "--target", target, "--slot", slot]);
    cmd
}

/// Runs `check --json` and parses the report.
async fn check_json(mut cmd: Command) -> Checked {
    cmd.args(["check", "--json"]);
    let run = harness::run(cmd).await;
    let report: Report = serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
        panic!("check --json did not print a JSON report ({e}):\n{run}");
    });
    let checked = Checked {
        run,
        findings: report.findings,
    };
    checked.assert_exit_matches_blockers();
    checked
}

async fn check_pair(pair: &Pair) -> Checked {
    check_json(pair.walrelay()).await
}

const WELL_FORMED: &str = "CREATE TABLE items (id bigint PRIMARY KEY, name text);
     INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 100) g;";
