//! Which tables are replicated: schema-qualified globs. A part written as
//! a quoted identifier (`"public"."Orders"`, the form `check`'s fix lines
//! print) means exactly that name.

use globset::{Glob, GlobSet, GlobSetBuilder};

/// A table pattern that is not a valid glob, or a selection that matches
/// no table.
#[derive(Debug, thiserror::Error)]
pub enum SelectionError {
    #[error("table pattern {pattern:?}: {message}")]
    Pattern { pattern: String, message: String },
    #[error("no table matches the selection (--table / --exclude-table): use schema-qualified globs such as public.* or \"public\".\"orders\"")]
    Empty,
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

    /// `tables` when there is at least one: a command that would work on
    /// none refuses instead of reporting success about nothing.
    pub fn non_empty<T>(tables: Vec<T>) -> Result<Vec<T>, SelectionError> {
        if tables.is_empty() {
            Err(SelectionError::Empty)
        } else {
            Ok(tables)
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
        let bad = |message: String| SelectionError::Pattern {
            pattern: pattern.clone(),
            message,
        };
        let parts = parts(pattern).map_err(|m| bad(m.into()))?;
        let qualified = match parts.as_slice() {
            [table] => format!("public.{table}"),
            _ => parts.join("."),
        };
        builder.add(Glob::new(&qualified).map_err(|err| bad(err.to_string()))?);
    }
    builder.build().map_err(|err| SelectionError::Pattern {
        pattern: patterns.join(","),
        message: err.to_string(),
    })
}

/// The pattern's dot-separated parts as globs: an unquoted part is a glob
/// as written, a `"quoted"` one (`""` for a quote) the literal name, its
/// glob characters escaped.
fn parts(pattern: &str) -> Result<Vec<String>, &'static str> {
    let mut parts = Vec::new();
    let mut part = String::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '.' => parts.push(std::mem::take(&mut part)),
            '"' => loop {
                match chars.next() {
                    Some('"') if chars.next_if_eq(&'"').is_none() => break,
                    Some(c) => {
                        if "*?[]{}\\".contains(c) {
                            part.push('\\');
                        }
                        part.push(c);
                    }
                    None => return Err("unterminated quoted name: close it with \""),
                }
            },
            c => part.push(c),
        }
    }
    parts.push(part);
    Ok(parts)
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
    fn quoted_names_as_check_prints_them_match_exactly() {
        let s = sel(&["\"public\".\"Orders\"", "\"app\".\"a.b\"\"*\""], &[]);
        assert!(s.matches("public", "Orders"));
        assert!(!s.matches("public", "orders"));
        assert!(s.matches("app", "a.b\"*"));
        assert!(!s.matches("app", "a.b\"x"));
        let s = sel(&["\"Orders\"", "\"sales\".*"], &[]);
        assert!(s.matches("public", "Orders"));
        assert!(s.matches("sales", "anything"));
        let s = sel(&[], &["\"public\".\"t\""]);
        assert!(!s.matches("public", "t"));
        assert!(s.matches("public", "u"));
        let bad = Selection::new(&["\"public.t".to_string()], &[]);
        assert!(matches!(bad, Err(SelectionError::Pattern { .. })));
    }

    #[test]
    fn unqualified_patterns_mean_public() {
        let s = sel(&["orders*"], &[]);
        assert!(s.matches("public", "orders_2024"));
        assert!(!s.matches("app", "orders"));
    }
}
