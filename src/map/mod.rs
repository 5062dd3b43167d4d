//! The mapping (`--map FILE`, or the `map` key of `--config`): per source
//! table, a target name, column renames, excluded columns, a row filter and
//! masks. This room owns its parsing, its validation against the source
//! catalog (`validate.rs`) and the mapped forms every stage uses: the
//! copy's and verify's select lists (`forms.rs`), the stream's masking
//! (`mask.rs`).
//!
//! The map is name-based (source `schema.table` and column names), so a
//! stage that has no catalog at hand (the stream) can still follow it.

mod forms;
mod mask;
mod publication;
mod target;
mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;

pub(crate) use forms::MappedTable;
pub(crate) use mask::{mask_old, mask_tuple};
pub(crate) use publication::{published, unmapped, Published};
pub use target::ShapeError;
pub(crate) use target::{apply_after_post_data, prepare_for_copy};
pub use validate::MapError;

/// How a masked column's values reach the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mask {
    /// Every value becomes NULL.
    Null,
    /// Lowercase hex SHA-256 of the value's text form (UTF-8 bytes).
    Hash,
}

/// One `[[table]]` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    source: String,
    target: Option<String>,
    #[serde(default)]
    rename: BTreeMap<String, String>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(rename = "where")]
    filter: Option<String>,
    #[serde(default)]
    mask: BTreeMap<String, Mask>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    table: Vec<Entry>,
}

/// The `map` key of a `--config` file: the map itself (`[[map.table]]`)
/// or the path of a map file, relative to the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum MapSetting {
    Path(std::path::PathBuf),
    Inline { table: Vec<toml::Value> },
}

/// A table's mapping, checked for shape (names, masks, no entry naming a
/// column twice); checked against the catalog by [`Map::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableMap {
    pub source: (String, String),
    pub target: (String, String),
    /// Source column → target column name.
    pub rename: BTreeMap<String, String>,
    pub exclude: BTreeSet<String>,
    /// The row filter, an SQL boolean expression over the source's columns.
    pub filter: Option<String>,
    pub mask: BTreeMap<String, Mask>,
}

/// Every table's mapping; a table it does not name moves as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Map {
    tables: Vec<TableMap>,
}

impl Map {
    /// Reads and checks the map file at `path`.
    pub fn load(path: &Path) -> Result<Map, MapError> {
        let text = std::fs::read_to_string(path).map_err(|source| MapError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Map::parse(&path.display().to_string(), &text)
    }

    /// The `map` key of a config file at `config_path`.
    pub fn from_setting(setting: &MapSetting, config_path: &Path) -> Result<Map, MapError> {
        match setting {
            MapSetting::Path(path) => {
                let dir = config_path.parent().unwrap_or(Path::new("."));
                Map::load(&dir.join(path))
            }
            MapSetting::Inline { table } => {
                let mut text = toml::Table::new();
                text.insert("table".into(), toml::Value::Array(table.clone()));
                Map::parse(
                    &format!("{} (map)", config_path.display()),
                    &text.to_string(),
                )
            }
        }
    }

    /// Parses and checks the TOML text of the map named `path`.
    pub fn parse(path: &str, text: &str) -> Result<Map, MapError> {
        let file: File = toml::from_str(text).map_err(|err| MapError::Parse {
            path: path.to_string(),
            message: err.message().trim_end().to_string(),
        })?;
        let mut tables: Vec<TableMap> = Vec::with_capacity(file.table.len());
        for entry in file.table {
            let table = TableMap::from_entry(entry)?;
            let clash = tables
                .iter()
                .find(|t| t.source == table.source || t.target == table.target);
            if let Some(other) = clash {
                return Err(MapError::Duplicate {
                    entry: display(&table.source),
                    other: display(&other.source),
                });
            }
            tables.push(table);
        }
        Ok(Map { tables })
    }

    /// Whether the map names no table.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// The mapping of source table `schema.name`, if the map names it.
    pub fn table(&self, schema: &str, name: &str) -> Option<&TableMap> {
        self.tables
            .iter()
            .find(|t| t.source.0 == schema && t.source.1 == name)
    }

    /// Every mapped table.
    pub fn tables(&self) -> &[TableMap] {
        &self.tables
    }
}

impl TableMap {
    fn from_entry(entry: Entry) -> Result<TableMap, MapError> {
        let source = split_name(&entry.source, &entry.source, "source")?;
        let target = match &entry.target {
            Some(t) => split_name(t, &entry.source, "target")?,
            None => source.clone(),
        };
        let named = |what: &'static str, column: &str| -> Result<(), MapError> {
            if column.is_empty() {
                return Err(MapError::Entry {
                    entry: entry.source.clone(),
                    problem: format!("an empty column name in {what}"),
                });
            }
            Ok(())
        };
        for (from, to) in &entry.rename {
            named("rename", from)?;
            named("rename", to)?;
        }
        let mut exclude = BTreeSet::new();
        for column in &entry.exclude {
            named("exclude", column)?;
            if !exclude.insert(column.clone()) {
                return Err(MapError::Entry {
                    entry: entry.source.clone(),
                    problem: format!("column {column} is excluded twice"),
                });
            }
            let also = if entry.rename.contains_key(column) {
                Some("renamed")
            } else if entry.mask.contains_key(column) {
                Some("masked")
            } else {
                None
            };
            if let Some(also) = also {
                return Err(MapError::Entry {
                    entry: entry.source.clone(),
                    problem: format!("column {column} is both excluded and {also}: an excluded column never reaches the target; remove it from one of them"),
                });
            }
        }
        let mut seen = BTreeMap::new();
        for (from, to) in &entry.rename {
            if let Some(other) = seen.insert(to.clone(), from.clone()) {
                return Err(MapError::Entry {
                    entry: entry.source.clone(),
                    problem: format!("columns {other} and {from} are both renamed to {to}"),
                });
            }
        }
        if let Some(filter) = &entry.filter {
            if filter.trim().is_empty() || filter.contains(';') {
                return Err(MapError::Entry {
                    entry: entry.source.clone(),
                    problem: "where must be one SQL boolean expression (not empty, no ';')".into(),
                });
            }
        }
        for column in entry.mask.keys() {
            named("mask", column)?;
        }
        Ok(TableMap {
            source,
            target,
            rename: entry.rename,
            exclude,
            filter: entry.filter,
            mask: entry.mask,
        })
    }

    /// `schema.table` of the source, for errors and logs.
    pub fn display(&self) -> String {
        display(&self.source)
    }

    /// The target name of source column `column`, `None` when excluded.
    pub fn target_column<'a>(&'a self, column: &'a str) -> Option<&'a str> {
        if self.exclude.contains(column) {
            return None;
        }
        Some(self.rename.get(column).map_or(column, String::as_str))
    }

    /// The source column that becomes target column `target`, if the map
    /// renames one to it.
    pub fn source_of<'a>(&'a self, target: &'a str) -> &'a str {
        self.rename
            .iter()
            .find(|(_, to)| to.as_str() == target)
            .map_or(target, |(from, _)| from.as_str())
    }

    /// Whether the mapping changes anything the stream sees beyond names.
    pub fn renames_table(&self) -> bool {
        self.source != self.target
    }
}

fn display(name: &(String, String)) -> String {
    format!("{}.{}", name.0, name.1)
}

/// `schema.table` → (schema, table); both parts required.
fn split_name(name: &str, entry: &str, what: &str) -> Result<(String, String), MapError> {
    match name.split_once('.') {
        Some((schema, table))
            if !schema.is_empty() && !table.is_empty() && !table.contains('.') =>
        {
            Ok((schema.to_string(), table.to_string()))
        }
        _ => Err(MapError::Entry {
            entry: entry.to_string(),
            problem: format!("{what} {name:?} is not schema.table (e.g. public.{name})"),
        }),
    }
}

#[cfg(test)]
mod tests;
