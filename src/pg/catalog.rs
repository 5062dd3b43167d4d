//! Catalog queries: the selected tables, their columns, keys and replica
//! identity, as the source describes them.

use tokio_postgres::Client;

use super::selection::Selection;

/// A table walrelay may replicate.
#[derive(Debug, Clone)]
pub struct Table {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    /// `r` ordinary (or partition leaf), `p` partitioned parent (holds no rows).
    pub kind: char,
    /// `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: char,
    pub has_primary_key: bool,
    /// A valid index is marked as the replica identity (for `i`).
    pub has_identity_index: bool,
    pub row_security: bool,
    pub force_row_security: bool,
    pub is_owner: bool,
    pub can_select: bool,
    pub heap_pages: i64,
    pub total_bytes: i64,
    /// `UNLOGGED`: its changes are not in the WAL, so they cannot be
    /// streamed (nor published); copied at the snapshot and at a fenced
    /// cutover only.
    pub unlogged: bool,
    pub columns: Vec<Column>,
}

/// A column of a [`Table`].
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    /// `format_type` of the column type, e.g. `numeric(10,2)`.
    pub type_name: String,
    /// Stored generated columns are computed by the target, never copied.
    pub generated: bool,
    /// Binary COPY of this type is portable between clusters (it is not for
    /// arrays and composites of user-defined types, whose binary form embeds
    /// type OIDs, nor for types without binary I/O functions).
    pub binary_portable: bool,
}

impl Table {
    /// `"schema"."name"`, quoted for SQL.
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// `schema.name` for logs and reports.
    pub fn display(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// Whether UPDATE and DELETE can be replicated (and, once published, even run on the source).
    pub fn has_usable_replica_identity(&self) -> bool {
        match self.replica_identity {
            'd' => self.has_primary_key,
            'f' => true,
            'i' => self.has_identity_index,
            _ => false,
        }
    }

    /// The columns the copy and the apply write (generated ones excluded).
    pub fn copied_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| !c.generated)
    }

    /// Whether row-level security would filter rows for this role.
    pub fn filtered_by_rls(&self, bypass_rls: bool) -> bool {
        self.row_security && !bypass_rls && (!self.is_owner || self.force_row_security)
    }
}

/// `"ident"` with embedded quotes doubled.
pub(crate) fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// `'literal'` with embedded quotes doubled.
pub(crate) fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

// The privilege and size functions give NULL for a table dropped while the
// query runs (they look it up afresh): such a table reads as empty and
// unreadable here, and the step that needs it fails with the server's error.
const TABLES_SQL: &str = r#"
SELECT c.oid, n.nspname, c.relname, c.relkind::text, c.relreplident::text,
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident AND i.indisvalid),
       c.relrowsecurity, c.relforcerowsecurity,
       pg_has_role(c.relowner, 'USAGE'),
       coalesce(has_table_privilege(c.oid, 'SELECT'), false),
       coalesce(pg_relation_size(c.oid) / current_setting('block_size')::bigint, 0),
       coalesce(pg_total_relation_size(c.oid), 0),
       rn.nspname, rc.relname, c.relpersistence = 'u'
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_class rc ON rc.oid = pg_partition_root(c.oid)
LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND c.relpersistence IN ('p', 'u')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'walrelay')
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
ORDER BY n.nspname, c.relname
"#;

const COLUMNS_SQL: &str = r#"
SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), a.attgenerated <> '',
       CASE WHEN bt.typsend = 0 OR bt.typreceive = 0 THEN false
            WHEN bt.typtype = 'c' THEN false
            WHEN bt.typcategory = 'A' AND (bt.typelem >= 16384 OR et.typtype IN ('c', 'd')) THEN false
            ELSE true END
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
LEFT JOIN pg_type et ON et.oid = bt.typelem
WHERE a.attrelid = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"#;

/// The source's tables as a [`Selection`] splits them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tables {
    /// The tables `selection` picks, with their columns.
    pub selected: Vec<Table>,
    /// Every other table (without columns).
    pub unselected: Vec<Table>,
}

/// Every table of the source, split by `selection` (a partition is picked
/// when it or its partition root matches); the selected ones with their
/// columns.
pub(crate) async fn tables(
    client: &Client,
    selection: &Selection,
) -> Result<Tables, tokio_postgres::Error> {
    let rows = client.query(TABLES_SQL, &[]).await?;
    let mut split = Tables::default();
    for row in &rows {
        let schema: &str = row.get(1);
        let name: &str = row.get(2);
        let root = row
            .get::<_, Option<&str>>(13)
            .zip(row.get::<_, Option<&str>>(14));
        let picked = selection.matches(schema, name)
            || root.is_some_and(|(rs, rn)| selection.matches(rs, rn));
        let table = Table {
            oid: row.get(0),
            schema: row.get(1),
            name: row.get(2),
            kind: first_char(row.get(3)),
            replica_identity: first_char(row.get(4)),
            has_primary_key: row.get(5),
            has_identity_index: row.get(6),
            row_security: row.get(7),
            force_row_security: row.get(8),
            is_owner: row.get(9),
            can_select: row.get(10),
            heap_pages: row.get(11),
            total_bytes: row.get(12),
            unlogged: row.get(15),
            columns: Vec::new(),
        };
        if picked {
            split.selected.push(table);
        } else {
            split.unselected.push(table);
        }
    }
    let oids: Vec<u32> = split.selected.iter().map(|t| t.oid).collect();
    for row in client.query(COLUMNS_SQL, &[&oids]).await? {
        let oid: u32 = row.get(0);
        if let Some(table) = split.selected.iter_mut().find(|t| t.oid == oid) {
            table.columns.push(Column {
                name: row.get(1),
                type_name: row.get(2),
                generated: row.get(3),
                binary_portable: row.get(4),
            });
        }
    }
    Ok(split)
}

/// A sequence a migration carries over (logical replication does not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequence {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    /// The table whose identity column this sequence is (pg_dump writes it
    /// only with that table's definition).
    pub identity_of: Option<u32>,
}

impl Sequence {
    /// `"schema"."name"`, quoted for SQL.
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// `schema.name` for logs and reports.
    pub fn display(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

// A default `nextval('s')` stores `s` as a regclass constant, so the
// default (pg_attrdef) depends on the sequence, whatever schema it is in;
// an identity column's sequence ('i') and an OWNED BY sequence ('a')
// depend on their table. Sequences owned by no table in a schema of the
// tables are kept as well: the application may call them itself.
const SEQUENCES_SQL: &str = r#"
WITH rel AS (SELECT unnest($1::oid[]) AS oid),
used AS (
    SELECT d.refobjid AS oid
    FROM pg_attrdef ad
    JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
                    AND d.refclassid = 'pg_class'::regclass
    WHERE ad.adrelid IN (SELECT oid FROM rel)
  UNION
    SELECT d.objid
    FROM pg_depend d
    WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
      AND d.deptype IN ('a', 'i') AND d.refobjid IN (SELECT oid FROM rel)
  UNION
    SELECT c.oid
    FROM pg_class c
    WHERE c.relkind = 'S'
      AND c.relnamespace IN (SELECT t.relnamespace FROM pg_class t WHERE t.oid IN (SELECT oid FROM rel))
      AND NOT EXISTS (SELECT 1 FROM pg_depend d
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                        AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))
)
SELECT c.oid, n.nspname::text, c.relname::text,
       (SELECT d.refobjid FROM pg_depend d
        WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
          AND d.refclassid = 'pg_class'::regclass AND d.deptype = 'i' LIMIT 1)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid IN (SELECT oid FROM used) AND c.relkind = 'S'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
ORDER BY 2, 3
"#;

/// The sequences the tables `oids` use (column defaults, identity columns,
/// OWNED BY), wherever they live, and the sequences of the tables' schemas
/// that no table owns.
pub(crate) async fn sequences_of(
    client: &Client,
    oids: &[u32],
) -> Result<Vec<Sequence>, tokio_postgres::Error> {
    Ok(client
        .query(SEQUENCES_SQL, &[&oids])
        .await?
        .iter()
        .map(|row| Sequence {
            oid: row.get(0),
            schema: row.get(1),
            name: row.get(2),
            identity_of: row.get(3),
        })
        .collect())
}

/// SQL: whether the session's role may replicate through Amazon RDS's
/// `rds_replication` role (RDS grants replication that way; the role's
/// own REPLICATION attribute stays false there).
pub(crate) const RDS_REPLICATION: &str = "EXISTS (SELECT 1 FROM pg_roles rds \
     WHERE rds.rolname = 'rds_replication' AND pg_has_role(rds.oid, 'MEMBER'))";

/// The session's role and database, quoted, for a grant statement in an
/// error message (placeholders when even this query fails).
pub(crate) async fn session_names(client: &Client) -> (String, String) {
    match client
        .query_one("SELECT current_user::text, current_database()::text", &[])
        .await
    {
        Ok(row) => (
            quote_ident(row.get::<_, &str>(0)),
            quote_ident(row.get::<_, &str>(1)),
        ),
        Err(_) => ("<role>".into(), "<database>".into()),
    }
}

/// A schema of the source other than the system's and walrelay's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Schema {
    pub name: String,
    pub owner: String,
    /// The connected role owns it (or is a member of its owner).
    pub owned: bool,
}

/// The database's schemas other than the system's and walrelay's.
pub(crate) async fn schemas(client: &Client) -> Result<Vec<Schema>, tokio_postgres::Error> {
    Ok(client
        .query(
            "SELECT n.nspname::text, pg_get_userbyid(n.nspowner)::text, \
                    pg_has_role(n.nspowner, 'USAGE') \
             FROM pg_namespace n \
             WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'walrelay') \
               AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
             ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|row| Schema {
            name: row.get(0),
            owner: row.get(1),
            owned: row.get(2),
        })
        .collect())
}

/// Column names and types of `schema.name` on a server (e.g. the target),
/// generated columns flagged; `None` when the table does not exist.
pub(crate) async fn table_columns(
    client: &Client,
    schema: &str,
    name: &str,
) -> Result<Option<Vec<Column>>, tokio_postgres::Error> {
    let oid: Option<u32> = client
        .query_opt(
            "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&schema, &name],
        )
        .await?
        .map(|row| row.get(0));
    let Some(oid) = oid else {
        return Ok(None);
    };
    let rows = client.query(COLUMNS_SQL, &[&vec![oid]]).await?;
    Ok(Some(
        rows.iter()
            .map(|row| Column {
                name: row.get(1),
                type_name: row.get(2),
                generated: row.get(3),
                binary_portable: row.get(4),
            })
            .collect(),
    ))
}

fn first_char(s: &str) -> char {
    s.chars().next().unwrap_or('?')
}
