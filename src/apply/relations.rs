//! The relation cache: what each source relation id means on the target.
//!
//! pgoutput sends a Relation message before the first change of a relation
//! in a session, and again after any relcache invalidation, reconnect,
//! ADD COLUMN or TRUNCATE (docs/ARCHITECTURE.md, Protocol facts), so every
//! Relation message rebuilds the entry; repeats are harmless. Columns are
//! matched by name, like the native apply worker: a source column missing on
//! the target stops the apply (or, with `--auto-add-columns`, is added),
//! target-only columns take their defaults, generated target columns are
//! never written.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::Client;
use walrelay_proto::{Lsn, Relation, ReplicaIdentity};

use super::added_column::{source_column_definition, ColumnDefinition};
use crate::map::{Map, Mask, TableMap};
use crate::pg::catalog::quote_ident;
use crate::pg::connect::error_text;
use crate::pg::error::Kind;

/// A source column as the target writes it.
#[derive(Debug, Clone)]
pub(super) struct TargetColumn {
    /// Quoted identifier.
    pub ident: String,
    /// The target's type, schema-qualified (`format_type` under an empty search_path).
    pub cast: String,
    /// Part of the replica identity (K tuple / WHERE clause).
    pub key: bool,
    /// `GENERATED ALWAYS AS IDENTITY` on the target.
    pub identity_always: bool,
    /// The target type has an `=` operator; otherwise FULL matching compares text.
    pub has_eq: bool,
}

/// One source relation, resolved against the target.
#[derive(Debug)]
pub(super) struct RelationInfo {
    pub id: u32,
    /// `schema.table` for logs and errors (names only).
    pub display: String,
    /// Quoted, schema-qualified target table.
    pub qualified: String,
    pub full_identity: bool,
    /// The target table is partitioned: statements address it without ONLY
    /// and locate rows by (tableoid, ctid).
    pub partitioned: bool,
    /// Per source column (wire order): how to write it, or `None` when the
    /// target computes it (generated) and it must not be written.
    pub columns: Vec<Option<TargetColumn>>,
    /// Key column names, for error reports.
    pub key_names: Arc<[String]>,
    /// Target-only columns the target writes (quoted): a row re-inserted
    /// to change a GENERATED ALWAYS identity value keeps theirs.
    pub target_only: Vec<String>,
    /// A BEFORE ROW trigger that fires in this session can skip an UPDATE
    /// or DELETE (by returning NULL): a change finding no row is then
    /// checked against the row's existence before it counts as drift.
    pub suppressible: bool,
    /// The target tables (quoted, qualified) whose deletes remove rows of
    /// this one through an `ON DELETE CASCADE` foreign key that acts in
    /// this session (not under `session_replication_role = replica`).
    pub cascade_from: Vec<String>,
    /// Changes committed before this LSN are already in the table's copy.
    pub snapshot_lsn: Lsn,
    /// Bumped on every Relation message, so cached statements of an older
    /// layout are never reused.
    pub generation: u64,
    /// Per source column (wire order): the map's mask, applied to every
    /// value before it is planned (`apply::mask`).
    pub masks: Vec<Option<Mask>>,
}

/// Why a relation cannot be applied.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RelationError {
    #[error("table {table} does not exist on the target")]
    MissingTable { table: String },
    #[error("table {table}: the source has column {column} that the target lacks; add it on the target (ALTER TABLE {alter} ADD COLUMN {column} …{root_note}) and restart, or run with --auto-add-columns")]
    MissingColumn {
        table: String,
        column: String,
        /// Where the target takes the column: the table, or its partitioned root.
        alter: String,
        root_note: String,
    },
    #[error("table {table}: the source's new column {column} has a volatile default (such as random()) that gave each existing row its own value, so existing rows cannot be reproduced here; add the column on the target (ALTER TABLE {alter} ADD COLUMN {column} …), copy its values from the source yourself, then restart")]
    UnreproducibleDefault {
        table: String,
        column: String,
        alter: String,
    },
    #[error("table {table}: what the source's existing rows hold in its new column {column} cannot be proven (its default was set after the column was added, or the table was rewritten since, e.g. by VACUUM FULL, and its rows hold different values), so walrelay does not guess; add the column on the target (ALTER TABLE {alter} ADD COLUMN {column} …), copy its values from the source yourself, then restart")]
    UnknownExistingValues {
        table: String,
        column: String,
        alter: String,
    },
    #[error("table {table}: the source has column {column} that the target lacks, and no longer has the target's column(s) {gone}: a renamed column cannot be told apart from one dropped and one added; if it was a rename, rename it on the target (ALTER TABLE … RENAME COLUMN … TO {column}), otherwise add {column} on the target and copy its values, then restart (walrelay's event trigger, where it can be installed, tells them apart)")]
    RenameOrReplace {
        table: String,
        column: String,
        gone: String,
    },
    #[error("table {table}: replica identity NOTHING cannot be applied")]
    NoIdentity { table: String },
    #[error("{what} for {table}: {}", error_text(.source))]
    Catalog {
        table: String,
        what: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("change for relation id {0} before its Relation message")]
    Unknown(u32),
}

impl RelationError {
    /// A lost target session is retried after reconnecting; the rest needs
    /// the operator.
    pub(crate) fn kind(&self) -> Kind {
        match self {
            RelationError::Catalog { source, .. } if crate::pg::error::is_transient(source) => {
                Kind::Transient
            }
            _ => Kind::Definite,
        }
    }
}

const TARGET_COLUMNS_SQL: &str = r#"
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attidentity = 'a', a.attgenerated <> '',
       c.relkind = 'p',
       EXISTS (SELECT 1 FROM pg_catalog.pg_operator o
               WHERE o.oprname = '=' AND o.oprleft = bt.oid AND o.oprright = bt.oid),
       EXISTS (SELECT 1 FROM pg_catalog.pg_trigger tg
               WHERE (tg.tgrelid = c.oid
                      OR tg.tgrelid IN (SELECT relid FROM pg_catalog.pg_partition_tree(c.oid)))
                 AND NOT tg.tgisinternal
                 AND tg.tgtype & 3 = 3 AND tg.tgtype & 24 <> 0
                 AND tg.tgenabled IN ('A', CASE pg_catalog.current_setting('session_replication_role')
                                           WHEN 'replica' THEN 'R' ELSE 'O' END)),
       ARRAY(SELECT '"' || pg_catalog.replace(rn.nspname, '"', '""') || '"."'
                    || pg_catalog.replace(r.relname, '"', '""') || '"'
             FROM pg_catalog.pg_constraint k
             JOIN pg_catalog.pg_class r ON r.oid = k.confrelid
             JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace
             WHERE k.conrelid = c.oid AND k.contype = 'f' AND k.confdeltype = 'c'
               AND pg_catalog.current_setting('session_replication_role') <> 'replica'),
       (SELECT pg_catalog.quote_ident(rn.nspname) || '.' || pg_catalog.quote_ident(rc.relname)
        FROM pg_catalog.pg_class rc JOIN pg_catalog.pg_namespace rn ON rn.oid = rc.relnamespace
        WHERE c.relispartition AND rc.oid = pg_catalog.pg_partition_root(c.oid))
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
JOIN pg_catalog.pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped
"#;

/// What [`RelationCache::resolve_columns`] gives.
type ResolvedColumns = (
    Vec<Option<TargetColumn>>,
    Vec<Option<Mask>>,
    HashMap<String, TargetRow>,
);

/// Relation id → resolved relation; rebuilt from each Relation message.
#[derive(Default)]
pub(super) struct RelationCache {
    relations: HashMap<u32, Arc<RelationInfo>>,
    /// Target names, exclusions and masks (`--map`).
    map: Map,
    /// `(schema, table)` → snapshot LSN from `walrelay.tables`.
    snapshot_lsns: HashMap<(String, String), Lsn>,
    generation: u64,
}

struct TargetRow {
    partitioned: bool,
    cast: String,
    identity_always: bool,
    generated: bool,
    has_eq: bool,
    suppressing_trigger: bool,
    cascade_from: Vec<String>,
    /// The quoted, qualified root of the partition tree when the target
    /// table is a partition.
    partition_root: Option<String>,
}

impl RelationCache {
    /// A cache that skips, per table, changes committed before the table's copy.
    pub(super) fn new(snapshot_lsns: HashMap<(String, String), Lsn>, map: Map) -> Self {
        RelationCache {
            snapshot_lsns,
            map,
            ..Default::default()
        }
    }

    /// The snapshot LSN recorded for a table (`0/0`: none, every change applies).
    pub(super) fn snapshot_lsn(&self, schema: &str, table: &str) -> Lsn {
        self.snapshot_lsns
            .get(&(schema.to_string(), table.to_string()))
            .copied()
            .unwrap_or_default()
    }

    /// Records a table's snapshot LSN (a table copied while streaming).
    pub(super) fn set_snapshot_lsn(&mut self, schema: &str, table: &str, lsn: Lsn) {
        self.snapshot_lsns
            .insert((schema.to_string(), table.to_string()), lsn);
    }

    /// The entry for a relation id.
    pub(super) fn get(&self, id: u32) -> Result<Arc<RelationInfo>, RelationError> {
        self.relations
            .get(&id)
            .cloned()
            .ok_or(RelationError::Unknown(id))
    }

    /// Resolves a Relation message against the target. With `add_missing`
    /// (a source session, `--auto-add-columns`), a source column missing on
    /// the target is added with the source's type.
    pub(super) async fn define(
        &mut self,
        target: &Client,
        rel: &Relation,
        add_missing: Option<&Client>,
    ) -> Result<Arc<RelationInfo>, RelationError> {
        let display = format!("{}.{}", rel.namespace_or_catalog(), rel.name);
        let mapping = self
            .map
            .table(rel.namespace_or_catalog(), &rel.name)
            .cloned();
        let (schema, name) = match &mapping {
            Some(m) => (m.target.0.clone(), m.target.1.clone()),
            None => (rel.namespace_or_catalog().to_string(), rel.name.clone()),
        };
        let qualified = format!("{}.{}", quote_ident(&schema), quote_ident(&name));
        if rel.replica_identity == ReplicaIdentity::Nothing {
            return Err(RelationError::NoIdentity { table: display });
        }
        // A mapped table's columns are the map's: nothing is added to it.
        let add_missing = add_missing.filter(|_| mapping.is_none());
        let target_table = (schema.as_str(), name.as_str());
        let (columns, mut masks, target_cols) = self
            .resolve_columns(target, rel, mapping.as_ref(), target_table, add_missing)
            .await?;
        if masks.iter().all(Option::is_none) {
            // Nothing to mask: the hot path skips the table's columns.
            masks.clear();
        }
        self.generation += 1;
        let key_names: Arc<[String]> = rel
            .columns
            .iter()
            .filter(|c| c.key)
            .map(|c| c.name.clone())
            .collect();
        let snapshot_lsn = self
            .snapshot_lsns
            .get(&(rel.namespace_or_catalog().to_string(), rel.name.clone()))
            .copied()
            .unwrap_or_default();
        let partitioned = target_cols.values().any(|t| t.partitioned);
        let suppressible = target_cols.values().any(|t| t.suppressing_trigger);
        let cascade_from = target_cols
            .values()
            .next()
            .map(|t| t.cascade_from.clone())
            .unwrap_or_default();
        let mut target_only: Vec<String> = target_cols
            .iter()
            .filter(|(name, t)| {
                !t.generated
                    && !rel
                        .columns
                        .iter()
                        .any(|c| target_name(mapping.as_ref(), &c.name) == Some(name.as_str()))
            })
            .map(|(name, _)| quote_ident(name))
            .collect();
        target_only.sort();
        let info = Arc::new(RelationInfo {
            id: rel.id,
            display,
            qualified,
            partitioned,
            full_identity: rel.replica_identity == ReplicaIdentity::Full,
            columns,
            key_names,
            target_only,
            suppressible,
            cascade_from,
            snapshot_lsn,
            generation: self.generation,
            masks,
        });
        self.relations.insert(rel.id, Arc::clone(&info));
        Ok(info)
    }

    /// Per source column (wire order): how the target writes it and the
    /// map's mask; and the target table's columns.
    async fn resolve_columns(
        &self,
        target: &Client,
        rel: &Relation,
        mapping: Option<&TableMap>,
        (schema, name): (&str, &str),
        add_missing: Option<&Client>,
    ) -> Result<ResolvedColumns, RelationError> {
        let display = format!("{}.{}", rel.namespace_or_catalog(), rel.name);
        let qualified = format!("{}.{}", quote_ident(schema), quote_ident(name));
        let mut target_cols = self
            .target_columns(target, (schema, name), &display)
            .await?;
        let mut columns = Vec::with_capacity(rel.columns.len());
        let mut masks = Vec::with_capacity(rel.columns.len());
        // A mapped table's columns are the map's; only an unmapped one can
        // show a rename as a column gone and one added.
        let gone = match mapping {
            None => gone_columns(&target_cols, rel),
            Some(_) => Vec::new(),
        };
        for col in &rel.columns {
            // Excluded: a source without column lists (14) still sends it.
            let Some(target_name) = target_name(mapping, &col.name) else {
                columns.push(None);
                masks.push(None);
                continue;
            };
            if !target_cols.contains_key(target_name) && !gone.is_empty() {
                // Without the event trigger's message, a renamed column
                // looks exactly like one dropped and one added; adding it
                // would leave the existing rows' values under the old name.
                return Err(RelationError::RenameOrReplace {
                    table: display,
                    column: col.name.clone(),
                    gone: gone.join(", "),
                });
            }
            if !target_cols.contains_key(target_name) {
                // A partition gets columns only through its root.
                let alter = target_cols
                    .values()
                    .find_map(|t| t.partition_root.clone())
                    .unwrap_or_else(|| qualified.clone());
                let statements =
                    added_column_statements(add_missing, &qualified, &alter, target_name, &display)
                        .await?;
                add_column(target, &statements, &col.name, &display).await?;
                tracing::warn!(table = %rel.name, schema = %rel.namespace, column = %col.name, added_on = %alter, "added a column the source gained (--auto-add-columns)");
                target_cols = self
                    .target_columns(target, (schema, name), &display)
                    .await?;
            }
            let t = &target_cols[target_name];
            masks.push(mapping.and_then(|m| m.mask.get(&col.name).copied()));
            columns.push((!t.generated).then(|| TargetColumn {
                ident: quote_ident(target_name),
                cast: t.cast.clone(),
                key: col.key,
                identity_always: t.identity_always,
                has_eq: t.has_eq,
            }));
        }
        Ok((columns, masks, target_cols))
    }

    async fn target_columns(
        &self,
        target: &Client,
        (schema, name): (&str, &str),
        display: &str,
    ) -> Result<HashMap<String, TargetRow>, RelationError> {
        let rows = target
            .query(TARGET_COLUMNS_SQL, &[&schema, &name])
            .await
            .map_err(|source| RelationError::Catalog {
                table: display.to_string(),
                what: "reading the target catalog".into(),
                source,
            })?;
        if rows.is_empty() {
            return Err(RelationError::MissingTable {
                table: display.to_string(),
            });
        }
        Ok(rows
            .iter()
            .map(|row| {
                (
                    row.get::<_, String>(0),
                    TargetRow {
                        cast: row.get(1),
                        identity_always: row.get(2),
                        generated: row.get(3),
                        partitioned: row.get(4),
                        has_eq: row.get(5),
                        suppressing_trigger: row.get(6),
                        cascade_from: row.get(7),
                        partition_root: row.get(8),
                    },
                )
            })
            .collect())
    }
}

/// The target's written columns the source's Relation message no longer has.
fn gone_columns(target: &HashMap<String, TargetRow>, rel: &Relation) -> Vec<String> {
    let mut gone: Vec<String> = target
        .iter()
        .filter(|(name, t)| !t.generated && !rel.columns.iter().any(|c| &c.name == *name))
        .map(|(name, _)| name.clone())
        .collect();
    gone.sort();
    gone
}

/// The target name of source column `column`; `None` when the map excludes it.
fn target_name<'a>(mapping: Option<&'a TableMap>, column: &'a str) -> Option<&'a str> {
    match mapping {
        Some(m) => m.target_column(column),
        None => Some(column),
    }
}

/// The statements adding `column` on the target table `alter`, or why not.
async fn added_column_statements(
    source: Option<&Client>,
    qualified: &str,
    alter: &str,
    column: &str,
    display: &str,
) -> Result<String, RelationError> {
    let definition = match source {
        Some(source) => source_column_definition(source, qualified, column).await,
        None => None,
    };
    let (table, column, alter) = (display.to_string(), column.to_string(), alter.to_string());
    match definition {
        Some(ColumnDefinition::VolatileDefault) => Err(RelationError::UnreproducibleDefault {
            table,
            column,
            alter,
        }),
        Some(ColumnDefinition::Unknown) => Err(RelationError::UnknownExistingValues {
            table,
            column,
            alter,
        }),
        Some(ColumnDefinition::Reproducible(addition)) => Ok(addition.statements(&alter, &column)),
        None => {
            let root_note = if alter != qualified {
                ", on the target's partitioned root: PostgreSQL adds columns to partitions only through their root".to_string()
            } else {
                String::new()
            };
            Err(RelationError::MissingColumn {
                table,
                column,
                alter,
                root_note,
            })
        }
    }
}

async fn add_column(
    target: &Client,
    statements: &str,
    column: &str,
    display: &str,
) -> Result<(), RelationError> {
    // Outside the batch transaction would be cleaner, but the batch is
    // rolled back on any error anyway; DDL inside it commits with the rows
    // that need the column.
    target
        .batch_execute(statements)
        .await
        .map_err(|source| RelationError::Catalog {
            table: display.to_string(),
            what: format!("adding column {column}"),
            source,
        })
}

/// pgoutput sends an empty namespace for `pg_catalog`.
trait NamespaceOrCatalog {
    fn namespace_or_catalog(&self) -> &str;
}

impl NamespaceOrCatalog for Relation {
    fn namespace_or_catalog(&self) -> &str {
        if self.namespace.is_empty() {
            "pg_catalog"
        } else {
            &self.namespace
        }
    }
}
