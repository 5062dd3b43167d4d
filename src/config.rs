//! One `Config`, built from the settings as given (the command line's flags
//! and `WALRELAY_*` variables) over those of an optional TOML file.
//! Connection strings are parsed here, once.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::map::{Map, MapError, MapSetting};
use crate::pg::conninfo::{carries_password, ConnInfo, ConnInfoError};
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
    /// Where pg_dump and pg_restore are (`--pg-bindir`).
    pub pg_bindir: Option<std::path::PathBuf>,
    /// The mapping (`--map FILE`): a path relative to the config file, or
    /// the map itself (`[[map.table]]`).
    pub map: Option<MapSetting>,
    /// `--allow-unfiltered-stream`.
    #[serde(default)]
    pub allow_unfiltered_stream: bool,
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
    #[error(transparent)]
    Map(#[from] MapError),
}

impl Settings {
    /// Reads and parses a TOML configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let settings = Self::parse(&path.display().to_string(), &text)?;
        if settings.holds_password() && others_may_read(path) {
            // The password itself is never named: only the file and the fix.
            tracing::warn!(
                path = %path.display(),
                "config file holds a password and its group or others may read it: run chmod 600 {}",
                path.display()
            );
        }
        Ok(settings)
    }

    fn holds_password(&self) -> bool {
        [&self.source, &self.target]
            .into_iter()
            .flatten()
            .any(|conn| carries_password(conn))
    }

    /// Parses the TOML text of the file named `path`.
    pub(crate) fn parse(path: &str, text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|err| {
            // The position only: toml's own Display quotes the offending
            // line, which may be a connection string with its password.
            let at = match err.span() {
                Some(span) => {
                    let (line, column) = line_column(text, span.start);
                    format!(" at line {line}, column {column}")
                }
                None => String::new(),
            };
            ConfigError::Parse {
                path: path.to_string(),
                message: format!("{}{at}", err.message().trim_end()),
            }
        })
    }
}

#[cfg(unix)]
fn others_may_read(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|meta| meta.permissions().mode() & 0o077 != 0)
}

#[cfg(not(unix))]
fn others_may_read(_path: &Path) -> bool {
    false
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Everything a command needs to reach both ends and pick the tables.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: ConnInfo,
    pub target: ConnInfo,
    pub slot: String,
    pub publication: String,
    pub selection: Selection,
    /// The directory of pg_dump and pg_restore (`--pg-bindir`); `None`:
    /// found by the source's version (`pg::bin`).
    pub pg_bindir: Option<std::path::PathBuf>,
    /// The mapping (`--map`); empty: every table moves as it is.
    pub map: Map,
    /// On a source that cannot filter its publication (PostgreSQL 14),
    /// exclude and mask in walrelay's process instead of refusing.
    pub allow_unfiltered_stream: bool,
}

impl Config {
    /// Merges `given` (the flags) over `file` (read from `file_path`) and
    /// validates names, connection strings and the map's shape.
    pub fn resolve(
        given: Settings,
        file: Settings,
        file_path: Option<&Path>,
    ) -> Result<Self, ConfigError> {
        let map = match (&given.map, &file.map) {
            (Some(MapSetting::Path(path)), _) => Map::load(path)?,
            (_, Some(setting)) => {
                Map::from_setting(setting, file_path.unwrap_or(Path::new("walrelay.toml")))?
            }
            _ => Map::default(),
        };
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
            pg_bindir: given.pg_bindir.or(file.pg_bindir),
            map,
            allow_unfiltered_stream: given.allow_unfiltered_stream || file.allow_unfiltered_stream,
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

/// The value parser of every duration flag: a bare number is seconds
/// (`120`, `0.5`), as an operator types it; units as humantime reads them
/// (`90s`, `2m`, `1h30m`, `500ms`).
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let value = value.trim();
    if value.starts_with('-') {
        return Err("a duration cannot be negative".into());
    }
    let bare = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if bare {
        return value
            .parse::<f64>()
            .ok()
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
            .ok_or_else(|| format!("{value:?} is not a number of seconds"));
    }
    humantime::parse_duration(value)
        .map_err(|err| format!("{err}; use seconds (120) or units (90s, 2m, 1h30m, 500ms)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_bare_seconds_and_units() {
        assert_eq!(parse_duration("120"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        for bad in ["", "-5", "1.2.3", "soon", "5 parsecs"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_toml_names_the_line_and_column_but_not_the_text() {
        let text = "slot = \"s\"\nsource = \"postgres://u:hunter2@h/db\nsomething = 1\n";
        let err = Settings::parse("walrelay.toml", text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("walrelay.toml"), "{err}");
        assert!(err.contains("line 2, column"), "{err}");
        assert!(!err.contains("hunter2"), "the file's text is echoed: {err}");
        let unknown = Settings::parse("w.toml", "slot = \"s\"\n\n  tabels = []\n")
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("line 3, column 3"), "{unknown}");
    }

    #[test]
    fn a_password_in_either_connection_string_is_held_by_the_file() {
        let held = |text: &str| Settings::parse("w.toml", text).unwrap().holds_password();
        assert!(held("source = \"postgres://u:pw@h/db\""));
        assert!(held("target = \"host=h user=u password=pw\""));
        assert!(!held(
            "source = \"postgres://u@h/db\"\ntarget = \"host=h user=u\""
        ));
        assert!(!held("slot = \"s\""));
    }
}
