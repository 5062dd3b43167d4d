//! Finding the PostgreSQL server binaries and the OS user to run them as.
//!
//! Every cluster and helper daemon is started through [`server_command`], so
//! the search for `initdb`/`pg_ctl`/`postgres` and the drop from root to the
//! `postgres` user live in one place.

use std::ffi::CString;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub(super) const INSTALL_HINT: &str =
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: \
looked at `pg_config --bindir`, /usr/lib/postgresql/*/bin and PATH. Install PostgreSQL \
(Debian/Ubuntu: `apt-get install postgresql`; Fedora: `dnf install postgresql-server`; \
macOS: `brew install postgresql`) or put its bin directory on PATH.";

/// The directory holding `initdb`, `pg_ctl` and `postgres`: `pg_config
/// --bindir`, then the highest `/usr/lib/postgresql/*/bin`, then `PATH`.
/// Panics with installation instructions when none has them.
pub fn bindir() -> &'static Path {
    static BINDIR: OnceLock<PathBuf> = OnceLock::new();
    BINDIR.get_or_init(|| find_bindir().unwrap_or_else(|| panic!("{INSTALL_HINT}")))
}

fn has_server(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|bin| dir.join(bin).is_file())
}

fn find_bindir() -> Option<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if has_server(&dir) {
                return Some(dir);
            }
        }
    }
    let mut best: Option<(u32, PathBuf)> = None;
    if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
        for entry in entries.flatten() {
            let Some(version) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let dir = entry.path().join("bin");
            if has_server(&dir) && best.as_ref().is_none_or(|(v, _)| version > *v) {
                best = Some((version, dir));
            }
        }
    }
    if let Some((_, dir)) = best {
        return Some(dir);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        if has_server(&dir) {
            // pg_ctl starts the `postgres` next to its real location.
            let real = fs::canonicalize(dir.join("initdb")).ok()?;
            let real_dir = real.parent()?.to_path_buf();
            return Some(if has_server(&real_dir) { real_dir } else { dir });
        }
    }
    None
}

/// A PostgreSQL client/server program from [`bindir`].
pub fn pg_bin(name: &str) -> PathBuf {
    bindir().join(name)
}

#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

/// `Some(postgres)` when we are root, `None` (run as ourselves) otherwise.
fn run_as() -> Option<RunAs> {
    static RUN_AS: OnceLock<Option<RunAs>> = OnceLock::new();
    *RUN_AS.get_or_init(|| {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        let name = CString::new("postgres").unwrap();
        // SAFETY: name is a valid C string; the result is read at once,
        // before any other getpw* call (tests only call this under OnceLock).
        let pw = unsafe { libc::getpwnam(name.as_ptr()) };
        if pw.is_null() {
            panic!(
                "the tests run as root, and initdb/postgres refuse to run as root, but there \
                 is no OS user `postgres` to run them as: install Debian's `postgresql` package \
                 (which creates it) or `useradd --system postgres`"
            );
        }
        // SAFETY: pw is non-null and points at libc's static passwd entry.
        let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
        Some(RunAs { uid, gid })
    })
}

/// A command for a server-side program (initdb, pg_ctl, pgbouncer), run as
/// the unprivileged user when we are root, with no PG* variables inherited.
pub(super) fn server_command(program: impl AsRef<std::ffi::OsStr>, cwd: &Path) -> Command {
    let mut cmd = Command::new(program);
    if let Some(user) = run_as() {
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
    cmd
}

/// Makes `path` belong to the user the servers run as.
pub(super) fn give_to_server_user(path: &Path) {
    if let Some(user) = run_as() {
        std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
}
