//! The server programs (`initdb`, `pg_ctl`, `postgres`) and the OS user
//! they run as.

use std::ffi::{CString, OsStr};
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::{io_error, LocalClusterError, SUPERUSER};

/// The programs a directory must hold to start a cluster.
pub(super) const SERVER_PROGRAMS: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

fn has_server(dir: &Path) -> bool {
    SERVER_PROGRAMS.iter().all(|bin| dir.join(bin).is_file())
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`, found once:
/// `pg_config --bindir`, then the newest `/usr/lib/postgresql/*/bin`, then
/// `PATH`.
pub fn default_bindir() -> Result<&'static Path, LocalClusterError> {
    static BINDIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    BINDIR
        .get_or_init(find_bindir)
        .as_deref()
        .ok_or(LocalClusterError::ServerNotFound)
}

fn find_bindir() -> Option<PathBuf> {
    let dir = crate::pg::bin::candidate_dirs()
        .into_iter()
        .find(|dir| has_server(dir))?;
    // A PATH entry may hold symlinks; pg_ctl starts the `postgres` next to
    // its own real location, so use the directory they point into.
    let real_dir = fs::canonicalize(dir.join("initdb"))
        .ok()
        .and_then(|real| real.parent().map(Path::to_path_buf));
    Some(real_dir.filter(|d| has_server(d)).unwrap_or(dir))
}

/// Checks that `dir` holds the server programs.
pub fn check_bindir(dir: &Path) -> Result<(), LocalClusterError> {
    if has_server(dir) {
        Ok(())
    } else {
        Err(LocalClusterError::NotServerBindir { dir: dir.into() })
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct RunAs {
    uid: u32,
    gid: u32,
}

/// `Some(postgres)` when we are root, `None` (run as ourselves) otherwise.
pub(super) fn run_as() -> Result<Option<RunAs>, LocalClusterError> {
    static RUN_AS: OnceLock<Option<Option<RunAs>>> = OnceLock::new();
    let found = RUN_AS.get_or_init(|| {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Some(None);
        }
        let name = CString::new(SUPERUSER).expect("no NUL");
        // SAFETY: a valid C string; the entry is read at once, under the
        // OnceLock, before any other getpw* call of ours.
        let pw = unsafe { libc::getpwnam(name.as_ptr()) };
        if pw.is_null() {
            return None;
        }
        // SAFETY: pw is non-null and points at libc's passwd entry.
        let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
        Some(Some(RunAs { uid, gid }))
    });
    found.ok_or(LocalClusterError::NoServerUser)
}

/// A command for a server-side program (initdb, pg_ctl, pgbouncer): run as
/// `postgres` when we are root, in `cwd`, with no `PG*` variable inherited
/// (they would point the program at another server).
pub fn server_command(
    program: impl AsRef<OsStr>,
    cwd: &Path,
) -> Result<Command, LocalClusterError> {
    let mut cmd = Command::new(program);
    if let Some(user) = run_as()? {
        cmd.uid(user.uid).gid(user.gid);
    }
    for var in [
        "PGDATA",
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "PGDATABASE",
        "PGOPTIONS",
        "PGSERVICE",
    ] {
        cmd.env_remove(var);
    }
    cmd.current_dir(cwd).stdin(Stdio::null());
    Ok(cmd)
}

/// Makes `path` belong to the user the server programs run as.
pub fn give_to_server_user(path: &Path) -> Result<(), LocalClusterError> {
    if let Some(user) = run_as()? {
        std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
            .map_err(io_error("cannot give to the server user", path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_without_the_server_programs_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("initdb"), "").unwrap();
        let err = check_bindir(dir.path()).unwrap_err();
        assert!(matches!(err, LocalClusterError::NotServerBindir { .. }));
        assert!(err.to_string().contains(&dir.path().display().to_string()));
        for program in SERVER_PROGRAMS {
            fs::write(dir.path().join(program), "").unwrap();
        }
        check_bindir(dir.path()).unwrap();
    }
}
