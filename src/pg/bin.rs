//! Finding PostgreSQL's client programs (pg_dump, pg_restore, psql) for a
//! source of a given major version.
//!
//! `pg_dump` refuses a server newer than itself, and `pg_restore` reads
//! only archives of its own version or older: the schema copy takes both
//! from one directory, chosen by the source's major version. With
//! `--pg-bindir DIR` that directory and no other; otherwise the newest of
//! `pg_config --bindir`, `/usr/lib/postgresql/*/bin` and `PATH` (in that
//! order on a tie) whose version is at least the source's.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A PostgreSQL program that is missing or too old for the server.
#[derive(Debug, thiserror::Error)]
pub enum BinError {
    #[error("no pg_dump and pg_restore found (looked in `pg_config --bindir`, /usr/lib/postgresql/*/bin and PATH); the source is PostgreSQL {major}, and pg_dump must be at least that version: {}", install_hint(*major))]
    Missing { major: u32 },
    #[error("the newest pg_dump found is version {found} ({dir}) but the source is PostgreSQL {major}: pg_dump refuses a server newer than itself; {}", install_hint(*major))]
    TooOld { found: u32, dir: String, major: u32 },
    #[error("--pg-bindir {dir}: {problem}; the source is PostgreSQL {major}, which needs pg_dump and pg_restore {major} or newer: point --pg-bindir at such a directory, or leave it out to search `pg_config --bindir`, /usr/lib/postgresql/*/bin and PATH")]
    Given {
        dir: String,
        problem: String,
        major: u32,
    },
}

fn install_hint(major: u32) -> String {
    format!(
        "install PostgreSQL {major}'s client programs (Debian/Ubuntu: `apt-get install postgresql-client-{major}`, from apt.postgresql.org where the distribution lacks it; or any newer major), or pass --pg-bindir DIR naming a directory that holds pg_dump and pg_restore {major} or newer"
    )
}

/// The client programs the schema copy runs, all from one directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientTools {
    pub dir: PathBuf,
    /// pg_dump's major version (pg_restore's is the same).
    pub major: u32,
    /// pg_dump's full version, e.g. `18.1`.
    pub version: String,
}

impl ClientTools {
    pub(crate) fn pg_dump(&self) -> PathBuf {
        self.dir.join("pg_dump")
    }

    pub(crate) fn pg_restore(&self) -> PathBuf {
        self.dir.join("pg_restore")
    }
}

/// The client programs for a source of major version `source_major`:
/// those of `given` (`--pg-bindir`) when set, else the newest found.
pub(crate) fn client_tools(
    given: Option<&Path>,
    source_major: u32,
) -> Result<ClientTools, BinError> {
    if let Some(dir) = given {
        let given_err = |problem: String| BinError::Given {
            dir: dir.display().to_string(),
            problem,
            major: source_major,
        };
        let tools = tools_in(dir)
            .map_err(|missing| given_err(format!("{missing} is missing or does not run")))?;
        if tools.major < source_major {
            return Err(given_err(format!(
                "pg_dump there is version {}",
                tools.version
            )));
        }
        return Ok(tools);
    }
    let found: Vec<ClientTools> = candidate_dirs()
        .iter()
        .filter_map(|dir| tools_in(dir).ok())
        .collect();
    choose(found, source_major)
}

/// The newest of `found` (the first on a tie) at least `source_major`.
fn choose(found: Vec<ClientTools>, source_major: u32) -> Result<ClientTools, BinError> {
    let mut newest: Option<ClientTools> = None;
    for tools in found {
        if newest.as_ref().is_none_or(|n| tools.major > n.major) {
            newest = Some(tools);
        }
    }
    match newest {
        Some(tools) if tools.major >= source_major => Ok(tools),
        Some(tools) => Err(BinError::TooOld {
            found: tools.major,
            dir: tools.dir.display().to_string(),
            major: source_major,
        }),
        None => Err(BinError::Missing {
            major: source_major,
        }),
    }
}

/// pg_dump and pg_restore of one version in `dir`; else the one missing.
fn tools_in(dir: &Path) -> Result<ClientTools, &'static str> {
    let dump = version_of(&dir.join("pg_dump")).ok_or("pg_dump")?;
    let restore = version_of(&dir.join("pg_restore")).ok_or("pg_restore")?;
    let major = major_of(&dump).ok_or("pg_dump")?;
    if major_of(&restore) != Some(major) {
        return Err("a pg_restore of pg_dump's version");
    }
    Ok(ClientTools {
        dir: dir.to_path_buf(),
        major,
        version: dump,
    })
}

/// The directories searched, in order, without repeats.
pub(crate) fn candidate_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if !dir.is_empty() {
                dirs.push(PathBuf::from(dir));
            }
        }
    }
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .collect();
    versioned.sort_by_key(|(major, _)| std::cmp::Reverse(*major));
    dirs.extend(versioned.into_iter().map(|(_, dir)| dir));
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| seen.insert(d.canonicalize().unwrap_or_else(|_| d.clone())));
    dirs
}

/// The version a PostgreSQL program reports with `--version`
/// (`pg_dump (PostgreSQL) 15.10 (Debian 15.10-0+deb12u1)` → `15.10`).
fn version_of(path: &Path) -> Option<String> {
    if !path.is_file() {
        return None;
    }
    let out = Command::new(path).arg("--version").output().ok()?;
    if !out.status.success() {
        return None;
    }
    parse_version(&String::from_utf8_lossy(&out.stdout))
}

fn parse_version(text: &str) -> Option<String> {
    text.split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .map(str::to_string)
}

/// `18.1` → 18, `17devel` → 17.
fn major_of(version: &str) -> Option<u32> {
    let digits: String = version.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(dir: &str, major: u32) -> ClientTools {
        ClientTools {
            dir: dir.into(),
            major,
            version: format!("{major}.1"),
        }
    }

    #[test]
    fn versions_are_read_from_every_spelling() {
        let v = parse_version("pg_dump (PostgreSQL) 15.10 (Debian 15.10-0+deb12u1)\n").unwrap();
        assert_eq!((v.as_str(), major_of(&v)), ("15.10", Some(15)));
        assert_eq!(major_of("18devel"), Some(18));
        assert_eq!(major_of("9.6.24"), Some(9));
        assert_eq!(parse_version("no digits"), None);
    }

    #[test]
    fn the_newest_at_least_the_source_wins_and_the_first_on_a_tie() {
        let found = vec![
            tools("/a", 15),
            tools("/b", 18),
            tools("/c", 18),
            tools("/d", 16),
        ];
        assert_eq!(choose(found.clone(), 14).unwrap().dir, PathBuf::from("/b"));
        assert_eq!(choose(found, 18).unwrap().dir, PathBuf::from("/b"));
    }

    #[test]
    fn none_new_enough_names_the_version_needed_and_how_to_install_it() {
        let err = choose(vec![tools("/usr/lib/postgresql/15/bin", 15)], 17).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("version 15 (/usr/lib/postgresql/15/bin)"),
            "{text}"
        );
        assert!(text.contains("postgresql-client-17"), "{text}");
        let none = choose(vec![], 16).unwrap_err().to_string();
        assert!(
            none.contains("PostgreSQL 16") && none.contains("--pg-bindir"),
            "{none}"
        );
    }

    #[test]
    fn a_given_directory_without_the_programs_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let err = client_tools(Some(dir.path()), 15).unwrap_err().to_string();
        assert!(
            err.contains("--pg-bindir") && err.contains("pg_dump is missing"),
            "{err}"
        );
    }
}
