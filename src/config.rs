//! One `Config`, built from the settings as given (the command line's flags
//! and `WALRELAY_*` variables) over those of an optional TOML file.
//! Connection strings are parsed here, once.

use std::path::Path;

use serde::Deserialize;

use crate::pg::conninfo::{ConnInfo, ConnInfoError};
use crate::pg::selection::{Selection, SelectionError};

/// Settings as given, before defaults and validation: what a TOML file may
/// carry, and what the flags give (which win). Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub source: Option<String>,
    pub target: Option<String>,
    pub slot: Option<String>,
    pub publication: Option<String>,
    #[serde(default)]
    pub tables: Vec<String>,
    #[serde(default)]
    pub exclude_tables: Vec<String>,
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not valid walrelay TOML: {message}")]
    Parse { path: String, message: String },
    #[error("no {0} connection string: pass --{0} or set WALRELAY_{1}")]
    Missing(&'static str, &'static str),
    #[error("{side} connection string: {source}")]
    Conn {
        side: &'static str,
        source: ConnInfoError,
    },
    #[error(transparent)]
    Selection(#[from] SelectionError),
    #[error("{what} name {name:?} is not valid: use lowercase letters, digits and underscores, at most 63 characters")]
    Name { what: &'static str, name: String },
}

impl Settings {
    /// Reads and parses a TOML configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|err| ConfigError::Parse {
            path: path.display().to_string(),
            message: err.message().to_string(),
        })
    }
}

/// Everything a command needs to reach both ends and pick the tables.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: ConnInfo,
    pub target: ConnInfo,
    pub slot: String,
    pub publication: String,
    pub selection: Selection,
}

impl Config {
    /// Merges `given` (the flags) over `file` and validates names and
    /// connection strings.
    pub fn resolve(given: Settings, file: Settings) -> Result<Self, ConfigError> {
        let source = given
            .source
            .or(file.source)
            .ok_or(ConfigError::Missing("source", "SOURCE"))?;
        let target = given
            .target
            .or(file.target)
            .ok_or(ConfigError::Missing("target", "TARGET"))?;
        let slot = given
            .slot
            .or(file.slot)
            .unwrap_or_else(|| "walrelay".into());
        let publication = given
            .publication
            .or(file.publication)
            .unwrap_or_else(|| "walrelay".into());
        validate_name("slot", &slot)?;
        validate_name("publication", &publication)?;
        let include = if given.tables.is_empty() {
            file.tables
        } else {
            given.tables
        };
        let exclude = if given.exclude_tables.is_empty() {
            file.exclude_tables
        } else {
            given.exclude_tables
        };
        Ok(Config {
            source: ConnInfo::parse(&source).map_err(|source| ConfigError::Conn {
                side: "source",
                source,
            })?,
            target: ConnInfo::parse(&target).map_err(|source| ConfigError::Conn {
                side: "target",
                source,
            })?,
            slot,
            publication,
            selection: Selection::new(&include, &exclude)?,
        })
    }
}

/// Slot names allow only `[a-z0-9_]`; the same rule keeps the publication
/// name safe to embed in replication commands.
fn validate_name(what: &'static str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Name {
            what,
            name: name.to_string(),
        })
    }
}
