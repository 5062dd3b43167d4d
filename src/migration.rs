//! The migration plan: what one migration moves, resolved once from the
//! source's catalog and handed to every stage, so that the snapshot, the
//! verification, the change tracking and the sequence sync of one command
//! agree on it (each used to resolve the selection on its own, and the
//! sequence sync decided by schema, missing a sequence used from another).

use std::collections::BTreeSet;

use tokio_postgres::Client;

use crate::config::Config;
use crate::map::{Map, MapError, MappedTable};
use crate::pg::catalog::{self, Sequence, Table};
use crate::pg::matview::{self, MatView};

/// What one migration moves.
#[derive(Debug, Clone)]
pub struct MigrationPlan {
    /// The selected tables (partitioned parents and their leaves), with
    /// their columns, keys and replica identity as the source has them.
    /// Unlogged ones are apart, in `unlogged`.
    pub tables: Vec<Table>,
    /// The selected `UNLOGGED` tables: not in the WAL, so neither published
    /// nor streamed; copied by the snapshot and again by a fenced cutover,
    /// never compared by verify (which says so).
    pub unlogged: Vec<Table>,
    /// The source's materialized views (the schema copy creates them all):
    /// refreshed on the target after the snapshot and at cutover, never
    /// replicated nor compared.
    pub matviews: Vec<MatView>,
    /// The source's other tables, left out of the schema copy.
    pub unselected: Vec<Table>,
    /// Every sequence the selected tables depend on, wherever it lives
    /// (column defaults, identity columns, OWNED BY), and the sequences of
    /// their schemas that no table owns; set on the target at cutover.
    pub sequences: Vec<Sequence>,
    /// The publication the stream reads the tables through.
    pub publication: String,
    /// The mapping (`--map`), checked for shape; [`MigrationPlan::check_map`]
    /// checks it against the source.
    pub map: Map,
}

/// A source schema the schema copy leaves alone (see
/// [`MigrationPlan::schemas_left_alone`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftAlone {
    pub schema: String,
    /// Its owner on the source.
    pub owner: String,
    /// It exists on the target, holding objects (else: the source role
    /// does not own it).
    pub on_target: bool,
}

impl MigrationPlan {
    /// Resolves `config`'s selection against the source's catalog.
    pub async fn resolve(
        source: &Client,
        config: &Config,
    ) -> Result<MigrationPlan, tokio_postgres::Error> {
        let tables = catalog::tables(source, &config.selection).await?;
        let (unlogged, selected): (Vec<Table>, Vec<Table>) =
            tables.selected.into_iter().partition(|t| t.unlogged);
        let oids: Vec<u32> = selected.iter().chain(&unlogged).map(|t| t.oid).collect();
        let sequences = catalog::sequences_of(source, &oids).await?;
        Ok(MigrationPlan {
            tables: selected,
            unlogged,
            matviews: matview::list(source).await?,
            unselected: tables.unselected,
            sequences,
            publication: config.publication.clone(),
            map: config.map.clone(),
        })
    }

    /// The selected tables that hold rows (partition leaves, not parents).
    pub fn row_tables(&self) -> impl Iterator<Item = &Table> {
        self.tables.iter().filter(|t| t.kind == 'r')
    }

    /// The unselected tables the schema copy leaves out: all but those
    /// whose identity sequence a selected table uses (`DEFAULT
    /// nextval(...)` of it), since pg_dump writes an identity sequence only
    /// with its table's definition; such a table is created on the target
    /// without its rows.
    pub fn schema_exclusions(&self) -> impl Iterator<Item = &Table> {
        self.unselected.iter().filter(|t| {
            let needed = self.sequences.iter().any(|s| s.identity_of == Some(t.oid));
            if needed {
                tracing::warn!(table = %t.display(), "an unselected table is created on the target without its rows: a selected table uses its identity sequence");
            }
            !needed
        })
    }

    /// The tables the snapshot copies: the selected ones and the unlogged.
    pub fn copied_tables(&self) -> Vec<Table> {
        self.tables.iter().chain(&self.unlogged).cloned().collect()
    }

    /// The schemas the migration owns: those of the selected tables (the
    /// unlogged ones too: they are copied), of their sequences and of the
    /// materialized views refreshed on the target.
    pub fn application_schemas(&self) -> BTreeSet<&str> {
        self.tables
            .iter()
            .chain(&self.unlogged)
            .map(|t| t.schema.as_str())
            .chain(self.matviews.iter().map(|v| v.schema.as_str()))
            .chain(self.sequences.iter().map(|s| s.schema.as_str()))
            .collect()
    }

    /// The source schemas the schema copy leaves alone, on both ends: every
    /// schema holding no selected table and no sequence of the plan that
    /// either exists on the target already and holds objects there (a
    /// managed service's `auth`, `storage`, `extensions`: creating it would
    /// collide, and what is in it is the service's) or is not the source
    /// role's (another owner's objects, such as views over tables the copy
    /// leaves out). An empty schema the target has (a fresh `public`) is
    /// filled from the source's as before.
    pub async fn schemas_left_alone(
        &self,
        source: &Client,
        target: &Client,
    ) -> Result<Vec<LeftAlone>, tokio_postgres::Error> {
        // An empty schema on the target is the operator's preparation; one
        // holding objects is someone's (a service's `auth`, `extensions`).
        let on_target: BTreeSet<String> = target
            .query(
                "SELECT n.nspname::text FROM pg_namespace n \
                 WHERE EXISTS (SELECT 1 FROM pg_class c WHERE c.relnamespace = n.oid) \
                    OR EXISTS (SELECT 1 FROM pg_proc p WHERE p.pronamespace = n.oid) \
                    OR EXISTS (SELECT 1 FROM pg_type t WHERE t.typnamespace = n.oid)",
                &[],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let ours = self.application_schemas();
        Ok(catalog::schemas(source)
            .await?
            .into_iter()
            .filter(|s| !ours.contains(s.name.as_str()))
            .filter_map(|s| {
                let on_target = on_target.contains(&s.name);
                (on_target || !s.owned).then_some(LeftAlone {
                    schema: s.name,
                    owner: s.owner,
                    on_target,
                })
            })
            .collect())
    }

    /// Checks the map against the source's catalog (every table it names
    /// selected, its columns there, keys neither excluded nor masked, …).
    pub async fn check_map(&self, source: &Client) -> Result<(), MapError> {
        self.map.validate(&self.copied_tables(), source).await
    }

    /// `table` with its mapping (none when the map does not name it).
    pub(crate) fn mapped<'a>(&'a self, table: &'a Table) -> MappedTable<'a> {
        MappedTable::new(table, &self.map)
    }

    /// The OIDs of the selected tables.
    pub fn table_oids(&self) -> Vec<u32> {
        self.tables.iter().map(|t| t.oid).collect()
    }
}
