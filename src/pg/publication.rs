//! What an existing publication holds, before walrelay touches it: an
//! operator's own publication (`--publication`) may carry row filters and
//! column lists (PostgreSQL 15+) that `ALTER PUBLICATION … SET TABLE` would
//! silently drop, and schemas it would silently remove.

use std::collections::BTreeSet;

use tokio_postgres::Client;

/// An existing publication, as far as `SET TABLE` would change it.
#[derive(Debug, Default)]
pub(crate) struct Existing {
    /// `FOR ALL TABLES`.
    pub all_tables: bool,
    /// Oids of the tables it names.
    pub tables: Vec<u32>,
    /// `schema.table (row filter)` / `(column list)`, for reports.
    pub filtered: Vec<String>,
    /// Oids of the tables in `filtered`, in the same order.
    pub filtered_oids: Vec<u32>,
    /// Schemas it publishes whole (`FOR TABLES IN SCHEMA`).
    pub schemas: Vec<String>,
}

const TABLES_SQL_15: &str = "\
SELECT pr.prrelid, n.nspname || '.' || c.relname, pr.prqual IS NOT NULL, pr.prattrs IS NOT NULL
FROM pg_catalog.pg_publication_rel pr
JOIN pg_catalog.pg_class c ON c.oid = pr.prrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE pr.prpubid = $1
ORDER BY 2";

const TABLES_SQL_14: &str = "\
SELECT pr.prrelid, n.nspname || '.' || c.relname, false, false
FROM pg_catalog.pg_publication_rel pr
JOIN pg_catalog.pg_class c ON c.oid = pr.prrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE pr.prpubid = $1
ORDER BY 2";

const SCHEMAS_SQL: &str = "\
SELECT n.nspname::text FROM pg_catalog.pg_publication_namespace pn
JOIN pg_catalog.pg_namespace n ON n.oid = pn.pnnspid
WHERE pn.pnpubid = $1 ORDER BY 1";

/// The publication `name`, or `None` when it does not exist.
pub(crate) async fn existing(
    client: &Client,
    name: &str,
) -> Result<Option<Existing>, tokio_postgres::Error> {
    let Some(row) = client
        .query_opt(
            "SELECT p.oid, p.puballtables, current_setting('server_version_num')::int >= 150000 \
             FROM pg_catalog.pg_publication p WHERE p.pubname = $1",
            &[&name],
        )
        .await?
    else {
        return Ok(None);
    };
    let (oid, all_tables, v15): (u32, bool, bool) = (row.get(0), row.get(1), row.get(2));
    let sql = if v15 { TABLES_SQL_15 } else { TABLES_SQL_14 };
    let mut found = Existing {
        all_tables,
        ..Existing::default()
    };
    for row in client.query(sql, &[&oid]).await? {
        found.tables.push(row.get(0));
        let table: String = row.get(1);
        let (filter, list): (bool, bool) = (row.get(2), row.get(3));
        let what = match (filter, list) {
            (true, true) => "row filter and column list",
            (true, false) => "row filter",
            (false, true) => "column list",
            (false, false) => continue,
        };
        found.filtered.push(format!("{table} ({what})"));
        found.filtered_oids.push(row.get(0));
    }
    if v15 {
        found.schemas = client
            .query(SCHEMAS_SQL, &[&oid])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
    }
    Ok(Some(found))
}

/// The comment walrelay gives a publication it creates: only such a one
/// does the stream change (a table the source gained is added to it).
pub(crate) const WALRELAYS: &str = "created by walrelay";

/// Whether the publication `name` is one walrelay created.
pub(crate) async fn is_walrelays(
    client: &Client,
    name: &str,
) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_opt(
            "SELECT pg_catalog.obj_description(p.oid, 'pg_publication') = $2 \
             FROM pg_catalog.pg_publication p WHERE p.pubname = $1",
            &[&name, &WALRELAYS],
        )
        .await?
        .and_then(|r| r.get::<_, Option<bool>>(0))
        .unwrap_or(false))
}

impl Existing {
    /// Why walrelay must not publish its tables through it, or `None`.
    /// The row filters and column lists of tables in `mapped` are walrelay's
    /// own (the map's) to set again.
    pub(crate) fn refusal(&self, name: &str, mapped: &BTreeSet<u32>) -> Option<String> {
        let foreign: Vec<&str> = self
            .filtered
            .iter()
            .zip(&self.filtered_oids)
            .filter(|(_, oid)| !mapped.contains(oid))
            .map(|(what, _)| what.as_str())
            .collect();
        (!foreign.is_empty()).then(|| {
            format!(
                "publication {name} has row filters or column lists the map does not give: {}; publishing walrelay's tables through this publication (ALTER PUBLICATION … SET TABLE) would silently drop them",
                foreign.join(", ")
            )
        })
    }

    /// What to do instead (row filters and column lists are not followed yet).
    pub(crate) fn refusal_fix(name: &str) -> String {
        format!(
            "pass a publication without row filters or column lists (or give them in --map), or let walrelay create its own: pass --publication with a name that does not exist yet (walrelay creates it); publication {name} is left as it is"
        )
    }
}
