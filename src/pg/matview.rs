//! Materialized views: logical replication carries no rows of them (their
//! contents are computed, not written), and the schema copy creates them
//! empty (`pg_dump --schema-only` leaves out their `REFRESH`). walrelay
//! refreshes them on the target instead: after the snapshot's copy, and
//! at cutover after the final sync. They are refreshed, not replicated:
//! their contents are computed from the target's rows when refreshed,
//! whatever the source's copy of them holds.

use std::time::Instant;

use tokio_postgres::Client;

use super::catalog::quote_ident;

/// A materialized view of the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatView {
    pub schema: String,
    pub name: String,
    /// Populated on the source (`WITH NO DATA` ones are left unpopulated).
    pub populated: bool,
}

impl MatView {
    /// `schema.name` for logs and reports.
    pub fn display(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

// The schema copy leaves out no materialized view (pg_dump excludes only
// tables), so every one outside walrelay's and the system's schemas and
// not an extension's is on the target.
const MATVIEWS_SQL: &str = r#"
SELECT n.nspname::text, c.relname::text, c.relispopulated
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'm'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'walrelay')
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"#;

/// The source's materialized views.
pub(crate) async fn list(client: &Client) -> Result<Vec<MatView>, tokio_postgres::Error> {
    Ok(client
        .query(MATVIEWS_SQL, &[])
        .await?
        .iter()
        .map(|row| MatView {
            schema: row.get(0),
            name: row.get(1),
            populated: row.get(2),
        })
        .collect())
}

// Each materialized view of the target with the ones it reads, through
// views too (a view's rules name the relations it reads): pairs
// (view, view it depends on).
const DEPENDS_SQL: &str = r#"
WITH RECURSIVE edges AS (
    SELECT DISTINCT r.ev_class AS rel, d.refobjid AS dep
    FROM pg_rewrite r
    JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
                    AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> r.ev_class
),
reach AS (
    SELECT e.rel AS mv, e.dep FROM edges e JOIN pg_class c ON c.oid = e.rel AND c.relkind = 'm'
  UNION
    SELECT reach.mv, e.dep FROM reach
    JOIN pg_class v ON v.oid = reach.dep AND v.relkind = 'v'
    JOIN edges e ON e.rel = reach.dep
)
SELECT mn.nspname::text, m.relname::text, dn.nspname::text, dm.relname::text
FROM reach
JOIN pg_class m ON m.oid = reach.mv JOIN pg_namespace mn ON mn.oid = m.relnamespace
JOIN pg_class dm ON dm.oid = reach.dep AND dm.relkind = 'm'
JOIN pg_namespace dn ON dn.oid = dm.relnamespace
"#;

/// `(schema, name)` of a relation.
type Name = (String, String);

/// A view and a view it reads.
type Edge = (Name, Name);

/// What a refresh did.
#[derive(Debug, Default, Clone)]
pub struct Refreshed {
    /// Refreshed, in the order they were.
    pub views: Vec<String>,
    /// Populated on the source but missing on the target (not refreshed).
    pub missing: Vec<String>,
    pub seconds: f64,
}

/// Why a refresh failed: the view and the server's error.
#[derive(Debug, thiserror::Error)]
#[error("refreshing materialized view {view} on the target: {message}{hint}")]
pub struct RefreshError {
    pub view: String,
    pub message: String,
    hint: &'static str,
}

/// Refreshes on the target every view of `views` that is populated on the
/// source, each after the ones it reads (a view read by another is
/// refreshed first, or the other would see its old contents).
pub(crate) async fn refresh(target: &Client, views: &[MatView]) -> Result<Refreshed, RefreshError> {
    let started = Instant::now();
    let failed = |view: String| {
        move |err: tokio_postgres::Error| RefreshError {
            view: view.clone(),
            message: super::connect::safe_error_text(&err),
            hint: if err.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) {
                " (only its owner may refresh it: ALTER MATERIALIZED VIEW … OWNER TO the target role)"
            } else {
                ""
            },
        }
    };
    let edges = target
        .query(DEPENDS_SQL, &[])
        .await
        .map_err(failed("(reading dependencies)".into()))?;
    let edges: Vec<Edge> = edges
        .iter()
        .map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3))))
        .collect();
    let mut done = Refreshed::default();
    for view in order(views.iter().filter(|v| v.populated), &edges) {
        let qualified = format!("{}.{}", quote_ident(&view.schema), quote_ident(&view.name));
        let exists: bool = target
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&qualified])
            .await
            .map_err(failed(view.display()))?
            .get(0);
        if !exists {
            done.missing.push(view.display());
            continue;
        }
        target
            .batch_execute(&format!("REFRESH MATERIALIZED VIEW {qualified}"))
            .await
            .map_err(failed(view.display()))?;
        done.views.push(view.display());
    }
    done.seconds = started.elapsed().as_secs_f64();
    Ok(done)
}

/// `views` ordered so that each comes after the views it reads
/// (`edges`: (view, read view)); a cycle cannot exist in PostgreSQL, and
/// would only leave the order as given.
fn order<'a>(views: impl Iterator<Item = &'a MatView>, edges: &[Edge]) -> Vec<&'a MatView> {
    let mut left: Vec<&MatView> = views.collect();
    let mut out: Vec<&MatView> = Vec::with_capacity(left.len());
    while !left.is_empty() {
        let ready = left.iter().position(|v| {
            !edges.iter().any(|((s, n), dep)| {
                (s, n) == (&v.schema, &v.name)
                    && left
                        .iter()
                        .any(|o| (&o.schema, &o.name) == (&dep.0, &dep.1))
            })
        });
        out.push(left.remove(ready.unwrap_or(0)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mv(name: &str) -> MatView {
        MatView {
            schema: "s".into(),
            name: name.into(),
            populated: true,
        }
    }

    fn edge(a: &str, b: &str) -> Edge {
        (("s".into(), a.into()), ("s".into(), b.into()))
    }

    #[test]
    fn a_view_comes_after_the_views_it_reads() {
        let views = [mv("a_top"), mv("b_mid"), mv("c_base")];
        let edges = [edge("a_top", "b_mid"), edge("b_mid", "c_base")];
        let names: Vec<&str> = order(views.iter(), &edges)
            .iter()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(names, ["c_base", "b_mid", "a_top"]);
    }
}
