//! Finding PostgreSQL's client programs (pg_dump, pg_restore): `pg_config
//! --bindir`, then the newest `/usr/lib/postgresql/*/bin`, then `PATH`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A PostgreSQL program that is missing or too old for the server.
#[derive(Debug, thiserror::Error)]
pub enum BinError {
    #[error("{program} not found (looked in `pg_config --bindir`, /usr/lib/postgresql/*/bin and PATH): install PostgreSQL's client programs, e.g. `apt-get install postgresql-client-{major}`")]
    Missing { program: String, major: u32 },
    #[error("{program} is version {found} but the source server is {major}: pg_dump must be at least the server's major version; install postgresql-client-{major}")]
    TooOld {
        program: String,
        found: u32,
        major: u32,
    },
}

/// The directories searched, best first.
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
    dirs
}

/// The first `program` whose major version is at least `server_major`.
pub(crate) fn find(program: &str, server_major: u32) -> Result<PathBuf, BinError> {
    let mut best: Option<(u32, PathBuf)> = None;
    for dir in candidate_dirs() {
        let path = dir.join(program);
        if !path.is_file() {
            continue;
        }
        let Some(major) = major_version(&path) else {
            continue;
        };
        if major >= server_major {
            return Ok(path);
        }
        if best.as_ref().is_none_or(|(m, _)| major > *m) {
            best = Some((major, path));
        }
    }
    match best {
        Some((found, _)) => Err(BinError::TooOld {
            program: program.into(),
            found,
            major: server_major,
        }),
        None => Err(BinError::Missing {
            program: program.into(),
            major: server_major,
        }),
    }
}

/// The major version a PostgreSQL program reports with `--version`.
fn major_version(path: &Path) -> Option<u32> {
    let out = Command::new(path).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))?;
    version.split('.').next()?.parse().ok()
}
