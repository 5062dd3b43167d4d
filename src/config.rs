//! One `Config`, built from the flags (and `WALRELAY_*` variables) over an
//! optional TOML file. Connection strings are parsed here, once.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::cli::GlobalArgs;
use crate::pg::conninfo::{ConnInfo, ConnInfoError};
use crate::pg::selection::{Selection, SelectionError};

/// Settings a TOML file may carry; every key is optional and flags win.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
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

impl FileConfig {
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
    /// Merges flags over the file and validates names and connection strings.
    pub fn resolve(args: &GlobalArgs, file: FileConfig) -> Result<Self, ConfigError> {
        let source = args
            .source
            .clone()
            .or(file.source)
            .ok_or(ConfigError::Missing("source", "SOURCE"))?;
        let target = args
            .target
            .clone()
            .or(file.target)
            .ok_or(ConfigError::Missing("target", "TARGET"))?;
        let slot = args
            .slot
            .clone()
            .or(file.slot)
            .unwrap_or_else(|| "walrelay".into());
        let publication = args
            .publication
            .clone()
            .or(file.publication)
            .unwrap_or_else(|| "walrelay".into());
        validate_name("slot", &slot)?;
        validate_name("publication", &publication)?;
        let include = if args.tables.is_empty() {
            file.tables
        } else {
            args.tables.clone()
        };
        let exclude = if args.exclude_tables.is_empty() {
            file.exclude_tables
        } else {
            args.exclude_tables.clone()
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
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn cli(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from([&["walrelay"], args].concat())
    }

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
    fn every_duration_flag_takes_bare_seconds() {
        let Command::Cutover(args) = cli(&["cutover", "--timeout", "120"]).unwrap().command else {
            panic!("cutover");
        };
        assert_eq!(args.timeout, Duration::from_secs(120));
        let Command::Verify(args) = cli(&["verify", "--catchup-timeout", "5"]).unwrap().command
        else {
            panic!("verify");
        };
        assert_eq!(args.catchup_timeout, Duration::from_secs(5));
        let run = ["run", "--verify-interval", "0", "--batch-delay", "0.25"];
        let Command::Run(args) = cli(&run).unwrap().command else {
            panic!("run");
        };
        assert_eq!(args.verify_interval, Duration::ZERO);
        assert_eq!(args.stream.batch_delay, Duration::from_millis(250));
        let err = cli(&["cutover", "--timeout", "-5"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid value"), "{err}");
    }

    #[test]
    fn zero_or_negative_jobs_and_chunk_pages_are_invalid_values() {
        for args in [
            ["snapshot", "--jobs", "0"],
            ["snapshot", "--jobs", "-1"],
            ["snapshot", "--chunk-pages", "0"],
            ["run", "--chunk-pages", "-3"],
            ["verify", "--chunk-rows", "-1"],
        ] {
            let err = cli(&args).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{args:?}: {err}"
            );
            let text = err.to_string();
            assert!(
                text.contains(&format!("invalid value '{}'", args[2])),
                "{text}"
            );
        }
        assert!(cli(&["snapshot", "--jobs", "1", "--chunk-pages", "1"]).is_ok());
    }
}
