//! From a table's shape after a source command to the statements that give
//! the target table the same shape.
//!
//! The target is compared with what the source holds *now* (after the
//! command), never replayed from the command's text: a message applied
//! twice (a replay after a crash) or a change the operator already made by
//! hand yields no statement. Columns are matched by name. What the diff
//! cannot reproduce is refused with the reason.

use tokio_postgres::Client;

use super::event::SourceColumn;
use crate::pg::catalog::{quote_ident, quote_literal};
use crate::pg::widening::{self, TypeChange};

/// A target column, as the apply session (empty search_path) writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TargetColumn {
    pub name: String,
    pub ty: String,
    pub not_null: bool,
    pub default: Option<String>,
    pub generated: bool,
    pub identity: bool,
}

const TARGET_COLUMNS_SQL: &str = "\
SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_catalog.pg_get_expr(d.adbin, d.adrelid), a.attgenerated <> '', a.attidentity <> ''
FROM pg_catalog.pg_attribute a
LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = pg_catalog.to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum";

/// The target table's columns; `None` when it does not exist.
pub(super) async fn target_columns(
    target: &Client,
    qualified: &str,
) -> Result<Option<Vec<TargetColumn>>, tokio_postgres::Error> {
    if !relation_exists(target, qualified).await? {
        return Ok(None);
    }
    let rows = target.query(TARGET_COLUMNS_SQL, &[&qualified]).await?;
    Ok(Some(
        rows.iter()
            .map(|r| TargetColumn {
                name: r.get(0),
                ty: r.get(1),
                not_null: r.get(2),
                default: r.get(3),
                generated: r.get(4),
                identity: r.get(5),
            })
            .collect(),
    ))
}

/// Whether a relation (table or index) of that quoted, qualified name exists.
pub(super) async fn relation_exists(
    target: &Client,
    qualified: &str,
) -> Result<bool, tokio_postgres::Error> {
    Ok(target
        .query_one(
            "SELECT pg_catalog.to_regclass($1) IS NOT NULL",
            &[&qualified],
        )
        .await?
        .get(0))
}

/// The table an index of the target belongs to, if the index exists.
pub(super) async fn index_table(
    target: &Client,
    index: &str,
) -> Result<Option<(String, String)>, tokio_postgres::Error> {
    Ok(target
        .query_opt(
            "SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_index i \
             JOIN pg_catalog.pg_class c ON c.oid = i.indrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE i.indexrelid = pg_catalog.to_regclass($1)",
            &[&index],
        )
        .await?
        .map(|r| (r.get(0), r.get(1))))
}

/// What the command was, as far as the diff needs to know.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Command {
    /// The statement renamed a column (`RENAME COLUMN` cannot be combined
    /// with another subcommand, so one column gone and one new is that rename).
    pub renames: bool,
    /// The statement gave a type change its own expression (`USING`): the
    /// rewritten source rows are not streamed and a cast would differ.
    pub using: bool,
    /// The table is an ordinary one (not partitioned, not a partition): it
    /// can be emptied and copied again when its rows cannot be reproduced.
    pub recopyable: bool,
}

/// What the target needs.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Planned {
    pub statements: Vec<String>,
    /// The statements empty the table: its rows are to be copied again as
    /// of a new consistent point (an added column's existing values cannot
    /// be reproduced by a statement).
    pub recopy: bool,
}

impl Command {
    /// Read from the statement's text (the operator's SQL, not a server message).
    pub(super) fn of(query: &str) -> Command {
        let words: Vec<String> = query
            .split(|c: char| !c.is_alphanumeric() && c != '_')
            .map(str::to_ascii_lowercase)
            .collect();
        let has = |w: &str| words.iter().any(|x| x == w);
        Command {
            renames: has("rename"),
            using: has("using"),
            recopyable: false,
        }
    }
}

/// The statements that bring `target` (the columns of target table
/// `table`, quoted and qualified) to `source`'s columns, or why not.
/// Target-only columns are left alone (the target may keep columns of its
/// own), except the one a rename took.
pub(super) fn column_statements(
    table: &str,
    source: &[SourceColumn],
    target: &[TargetColumn],
    command: Command,
) -> Result<Planned, String> {
    let mut out = Vec::new();
    let mut recopy = false;
    let added: Vec<&SourceColumn> = source
        .iter()
        .filter(|s| !target.iter().any(|t| t.name == s.name))
        .collect();
    let gone: Vec<&TargetColumn> = target
        .iter()
        .filter(|t| !source.iter().any(|s| s.name == t.name))
        .collect();
    let mut renamed = None;
    if command.renames && added.len() == 1 && gone.len() == 1 {
        let (from, to) = (gone[0], added[0]);
        out.push(format!(
            "ALTER TABLE {table} RENAME COLUMN {} TO {}",
            quote_ident(&from.name),
            quote_ident(&to.name)
        ));
        renamed = Some((to.name.as_str(), from));
    } else {
        for column in &added {
            match add_column(table, column) {
                Ok(statements) => out.extend(statements),
                Err(Unreproducible(_)) if command.recopyable => {
                    out.extend(recopied_column(table, column));
                    recopy = true;
                }
                Err(Unreproducible(reason)) => return Err(reason),
            }
        }
    }
    for s in source {
        let t = match renamed {
            Some((to, from)) if to == s.name => from,
            _ => match target.iter().find(|t| t.name == s.name) {
                Some(t) => t,
                None => continue,
            },
        };
        out.extend(alter_column(table, s, t, command)?);
    }
    if recopy {
        // Emptied first: the copy brings every row, with its own value.
        out.insert(0, format!("TRUNCATE ONLY {table}"));
    }
    Ok(Planned {
        statements: out,
        recopy,
    })
}

/// Why an added column's existing rows cannot be reproduced by a statement.
struct Unreproducible(String);

/// The column added to an emptied table, as the source defines it now.
fn recopied_column(table: &str, s: &SourceColumn) -> Vec<String> {
    let column = quote_ident(&s.name);
    let default = s
        .default
        .as_deref()
        .map(|expr| format!(" DEFAULT {expr}"))
        .unwrap_or_default();
    let not_null = if s.not_null { " NOT NULL" } else { "" };
    vec![format!(
        "ALTER TABLE {table} ADD COLUMN {column} {}{default}{not_null}",
        s.ty
    )]
}

fn add_column(table: &str, s: &SourceColumn) -> Result<Vec<String>, Unreproducible> {
    let column = quote_ident(&s.name);
    let ty = &s.ty;
    let add = format!("ALTER TABLE {table} ADD COLUMN {column} {ty}");
    if !s.identity.is_empty() {
        return Err(Unreproducible(format!("column {} is an identity column added to existing rows: they were numbered in the source's physical order, which the target cannot reproduce", s.name)));
    }
    if !s.generated.is_empty() {
        let expr = s.default.as_deref().unwrap_or("NULL");
        // A virtual column (18) is created stored, as the schema copy does: same values.
        return Ok(vec![format!("{add} GENERATED ALWAYS AS ({expr}) STORED")]);
    }
    let mut out = Vec::new();
    match (s.has_missing.unwrap_or(false), &s.missing, &s.default) {
        (true, missing, default) => {
            // The existing rows' value, stored as such on the target too.
            let value = missing
                .as_deref()
                .map(|v| format!("{}::{ty}", quote_literal(v)))
                .unwrap_or_else(|| "NULL".into());
            out.push(format!("{add} DEFAULT {value}"));
            out.push(match default {
                Some(expr) => {
                    format!("ALTER TABLE {table} ALTER COLUMN {column} SET DEFAULT {expr}")
                }
                None => format!("ALTER TABLE {table} ALTER COLUMN {column} DROP DEFAULT"),
            });
        }
        (false, _, None) => out.push(add),
        (false, _, Some(_)) => {
            return Err(Unreproducible(format!("the rows that existed before column {} was added hold values the target cannot reproduce (a volatile default gave each its own value, or the table was rewritten since), and the table is partitioned, so walrelay does not copy it again; add the column on the target and copy its values from the source", s.name)));
        }
    }
    if s.not_null {
        out.push(format!(
            "ALTER TABLE {table} ALTER COLUMN {column} SET NOT NULL"
        ));
    }
    Ok(out)
}

fn alter_column(
    table: &str,
    s: &SourceColumn,
    t: &TargetColumn,
    command: Command,
) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    if t.generated || !s.generated.is_empty() {
        // The target computes it; its expression is the schema copy's.
        return Ok(out);
    }
    let column = quote_ident(&s.name);
    let alter = format!("ALTER TABLE {table} ALTER COLUMN {column}");
    match widening::compare(&s.ty, &t.ty) {
        TypeChange::Same | TypeChange::Wider => {}
        _ if command.using => {
            return Err(format!("column {} changed type with its own USING expression: the source's rewritten rows are not streamed, and a cast on the target may give other values", s.name));
        }
        _ => out.push(format!("{alter} TYPE {}", s.ty)),
    }
    if s.identity.is_empty() && !t.identity && s.default != t.default {
        out.push(match &s.default {
            Some(expr) => format!("{alter} SET DEFAULT {expr}"),
            None => format!("{alter} DROP DEFAULT"),
        });
    }
    if s.not_null != t.not_null {
        let what = if s.not_null { "SET" } else { "DROP" };
        out.push(format!("{alter} {what} NOT NULL"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(name: &str, ty: &str) -> SourceColumn {
        SourceColumn {
            name: name.into(),
            ty: ty.into(),
            not_null: false,
            default: None,
            generated: String::new(),
            identity: String::new(),
            has_missing: Some(false),
            missing: None,
        }
    }

    fn tgt(name: &str, ty: &str) -> TargetColumn {
        TargetColumn {
            name: name.into(),
            ty: ty.into(),
            not_null: false,
            default: None,
            generated: false,
            identity: false,
        }
    }

    const T: &str = "\"public\".\"t\"";

    #[test]
    fn an_added_column_holds_the_existing_rows_value_then_takes_the_current_default() {
        let mut c = src("c", "text");
        c.has_missing = Some(true);
        c.missing = Some("v".into());
        c.default = Some("'w'::text".into());
        let out = column_statements(
            T,
            &[src("id", "integer"), c],
            &[tgt("id", "integer")],
            Command::default(),
        )
        .unwrap()
        .statements;
        assert_eq!(
            out,
            [
                "ALTER TABLE \"public\".\"t\" ADD COLUMN \"c\" text DEFAULT 'v'::text",
                "ALTER TABLE \"public\".\"t\" ALTER COLUMN \"c\" SET DEFAULT 'w'::text",
            ]
        );
    }

    #[test]
    fn a_volatile_default_without_a_stored_value_empties_the_table_for_a_copy_or_is_refused() {
        let mut c = src("c", "double precision");
        c.default = Some("random()".into());
        let partitioned = Command::default();
        assert!(column_statements(T, &[c.clone()], &[], partitioned).is_err());
        let plain = Command {
            recopyable: true,
            ..Command::default()
        };
        let planned = column_statements(T, &[c], &[], plain).unwrap();
        assert!(planned.recopy);
        assert_eq!(
            planned.statements,
            [
                "TRUNCATE ONLY \"public\".\"t\"",
                "ALTER TABLE \"public\".\"t\" ADD COLUMN \"c\" double precision DEFAULT random()",
            ]
        );
    }

    #[test]
    fn one_column_gone_and_one_new_is_a_rename_only_for_a_rename_statement() {
        let source = [src("id", "integer"), src("content", "text")];
        let target = [tgt("id", "integer"), tgt("text", "text")];
        let rename = Command::of("ALTER TABLE t RENAME COLUMN text TO content");
        assert_eq!(
            column_statements(T, &source, &target, rename)
                .unwrap()
                .statements,
            ["ALTER TABLE \"public\".\"t\" RENAME COLUMN \"text\" TO \"content\""]
        );
        // Otherwise the target keeps its own column and gains the new one.
        let add = Command::of("alter table t add column content text");
        assert_eq!(
            column_statements(T, &source, &target, add)
                .unwrap()
                .statements,
            ["ALTER TABLE \"public\".\"t\" ADD COLUMN \"content\" text"]
        );
    }

    #[test]
    fn type_default_and_not_null_changes_follow_the_source() {
        let mut s = src("n", "bigint");
        s.not_null = true;
        s.default = Some("0".into());
        let out = column_statements(T, &[s], &[tgt("n", "integer")], Command::default())
            .unwrap()
            .statements;
        assert_eq!(
            out,
            [
                "ALTER TABLE \"public\".\"t\" ALTER COLUMN \"n\" TYPE bigint",
                "ALTER TABLE \"public\".\"t\" ALTER COLUMN \"n\" SET DEFAULT 0",
                "ALTER TABLE \"public\".\"t\" ALTER COLUMN \"n\" SET NOT NULL",
            ]
        );
    }

    #[test]
    fn a_type_change_with_using_is_refused_and_a_wider_target_is_kept() {
        let using = Command::of("alter table t alter column n type integer using n::integer * 2");
        assert!(column_statements(T, &[src("n", "integer")], &[tgt("n", "text")], using).is_err());
        let narrowed = Command::of("alter table t alter column n type varchar(10)");
        assert!(column_statements(
            T,
            &[src("n", "character varying(10)")],
            &[tgt("n", "text")],
            narrowed
        )
        .unwrap()
        .statements
        .is_empty());
    }

    #[test]
    fn a_message_the_target_already_matches_yields_nothing() {
        let mut s = src("c", "text");
        s.has_missing = Some(true);
        s.missing = Some("v".into());
        let t = tgt("c", "text");
        assert!(column_statements(T, &[s], &[t], Command::default())
            .unwrap()
            .statements
            .is_empty());
    }
}
