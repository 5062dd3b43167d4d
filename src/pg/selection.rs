//! Which tables are replicated: schema-qualified globs.

use globset::{Glob, GlobSet, GlobSetBuilder};

/// A table pattern that is not a valid glob.
#[derive(Debug, thiserror::Error)]
#[error("table pattern {pattern:?}: {message}")]
pub struct SelectionError {
    pattern: String,
    message: String,
}

/// `--table` / `--exclude-table` patterns over `schema.table` names.
#[derive(Debug, Clone)]
pub struct Selection {
    include: Option<GlobSet>,
    exclude: GlobSet,
}

impl Selection {
    /// Builds the selection; a pattern without a dot means `public.PATTERN`.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, SelectionError> {
        let include = if include.is_empty() {
            None
        } else {
            Some(build(include)?)
        };
        Ok(Selection {
            include,
            exclude: build(exclude)?,
        })
    }

    /// Every table.
    pub fn all() -> Self {
        Selection {
            include: None,
            exclude: GlobSet::empty(),
        }
    }

    /// Whether `schema.table` is selected.
    pub fn matches(&self, schema: &str, table: &str) -> bool {
        let name = format!("{schema}.{table}");
        self.include.as_ref().is_none_or(|set| set.is_match(&name)) && !self.exclude.is_match(&name)
    }
}

fn build(patterns: &[String]) -> Result<GlobSet, SelectionError> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        let qualified = if pattern.contains('.') {
            pattern.clone()
        } else {
            format!("public.{pattern}")
        };
        let glob = Glob::new(&qualified).map_err(|err| SelectionError {
            pattern: pattern.clone(),
            message: err.to_string(),
        })?;
        builder.add(glob);
    }
    builder.build().map_err(|err| SelectionError {
        pattern: patterns.join(","),
        message: err.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(inc: &[&str], exc: &[&str]) -> Selection {
        let s = |v: &[&str]| v.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        Selection::new(&s(inc), &s(exc)).unwrap()
    }

    #[test]
    fn everything_by_default_minus_exclusions() {
        let s = sel(&[], &["app.audit_*"]);
        assert!(s.matches("public", "users"));
        assert!(s.matches("app", "orders"));
        assert!(!s.matches("app", "audit_log"));
    }

    #[test]
    fn unqualified_patterns_mean_public() {
        let s = sel(&["orders*"], &[]);
        assert!(s.matches("public", "orders_2024"));
        assert!(!s.matches("app", "orders"));
    }
}
