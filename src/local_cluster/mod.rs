//! Throwaway local PostgreSQL clusters, for `walrelay demo` and the
//! integration tests (`tests/harness` wraps this launcher).
//!
//! A cluster is `initdb` + `pg_ctl start` in a directory of its own, on a
//! free 127.0.0.1 port, with SCRAM password authentication over TCP and
//! settings for speed over durability (nothing here is meant to survive).
//! It is stopped (immediate mode) and its directory removed on drop.
//!
//! The server programs are found through `pg_config --bindir`, then the
//! newest `/usr/lib/postgresql/*/bin`, then `PATH` (the order
//! [`crate::pg::bin`] uses for the client programs); a cluster may name
//! another directory ([`ClusterOptions::bindir`]) to run another major
//! version. `initdb` and `postgres` refuse to run as root, so when we are
//! root every server program runs as the OS user `postgres`.
//!
//! Layout of a cluster's directory: `data/` (also holding the Unix socket),
//! `server.log`.

mod programs;
mod stop;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use programs::{check_bindir, default_bindir, give_to_server_user, server_command};
pub use stop::{process_alive, read_pid, stop_and_remove};

/// The superuser every cluster is initialised with.
pub const SUPERUSER: &str = "postgres";

/// Settings every cluster gets, before the caller's (which win).
const BASE_SETTINGS: &[(&str, &str)] = &[
    ("listen_addresses", "127.0.0.1"),
    ("fsync", "off"),
    ("synchronous_commit", "off"),
    ("full_page_writes", "off"),
    ("shared_buffers", "128MB"),
    ("max_connections", "100"),
    ("password_encryption", "scram-sha-256"),
    ("max_replication_slots", "20"),
    ("max_wal_senders", "20"),
    ("wal_sender_timeout", "10s"),
    ("log_line_prefix", "%m [%p] %q%u@%d "),
];

// Logical replication connections match ordinary database lines; physical
// ones (pg_receivewal) need `replication`.
const PG_HBA: &str = "local all all scram-sha-256\n\
                      host all all 127.0.0.1/32 scram-sha-256\n\
                      host replication all 127.0.0.1/32 scram-sha-256\n";

/// Attempts at a free port: another process may take the one we picked
/// before the server binds it.
const START_ATTEMPTS: usize = 5;

/// Why a local cluster could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LocalClusterError {
    #[error(
        "PostgreSQL's server programs (initdb, pg_ctl, postgres) not found: looked at \
         `pg_config --bindir`, /usr/lib/postgresql/*/bin and PATH. Install PostgreSQL \
         (Debian/Ubuntu: `apt-get install postgresql`; Fedora: `dnf install postgresql-server`; \
         macOS: `brew install postgresql`) or put its bin directory on PATH"
    )]
    ServerNotFound,
    #[error(
        "{} does not hold PostgreSQL's server programs (initdb, pg_ctl, postgres)",
        dir.display()
    )]
    NotServerBindir { dir: PathBuf },
    #[error(
        "running as root, and initdb and postgres refuse to run as root, but there is no OS \
         user `postgres` to run them as: install Debian's `postgresql` package (which creates \
         it), `useradd --system postgres`, or run as another user"
    )]
    NoServerUser,
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("initdb in {} failed ({status}):\n{output}", dir.display())]
    Initdb {
        dir: PathBuf,
        status: String,
        output: String,
    },
    #[error("the cluster in {} did not start on port {port}:\n{output}\nserver log:\n{log}", dir.display())]
    Start {
        dir: PathBuf,
        port: u16,
        output: String,
        log: String,
    },
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LocalClusterError {
    let path = path.to_path_buf();
    move |source| LocalClusterError::Io { what, path, source }
}

/// What to start: where, with which programs, with which settings.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    dir: PathBuf,
    bindir: Option<PathBuf>,
    settings: Vec<(String, String)>,
}

impl ClusterOptions {
    /// A cluster living in `dir` (created when missing; its parent must be
    /// searchable by the server user). The directory is removed when the
    /// cluster is dropped.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ClusterOptions {
            dir: dir.into(),
            bindir: None,
            settings: Vec::new(),
        }
    }

    /// Runs the server programs of `dir` instead of [`default_bindir`]
    /// (e.g. another major version).
    pub fn bindir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bindir = Some(dir.into());
        self
    }

    /// Adds one `postgresql.conf` setting; later ones win.
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.settings.push((key.into(), value.into()));
        self
    }
}

/// A running local cluster; stopped and its directory removed on drop.
#[derive(Debug)]
pub struct LocalCluster {
    dir: PathBuf,
    bindir: PathBuf,
    port: u16,
    password: String,
}

impl LocalCluster {
    /// `initdb` with a random superuser password, the settings, then
    /// `pg_ctl start` on a free port (another one when the port was taken
    /// meanwhile). On error nothing is left running and the directory is
    /// removed.
    pub fn start(options: &ClusterOptions) -> Result<LocalCluster, LocalClusterError> {
        let bindir = match &options.bindir {
            Some(dir) => {
                check_bindir(dir)?;
                dir.clone()
            }
            None => default_bindir()?.to_path_buf(),
        };
        programs::run_as()?;
        fs::create_dir_all(&options.dir).map_err(io_error(
            "cannot create the cluster directory",
            &options.dir,
        ))?;
        // From here on, dropping the value stops and removes what exists.
        let mut cluster = LocalCluster {
            dir: options.dir.clone(),
            bindir,
            port: 0,
            password: random_hex(16)?,
        };
        give_to_server_user(&cluster.dir)?;
        cluster.initdb()?;
        cluster.configure(&options.settings)?;
        cluster.port = cluster.start_on_free_port()?;
        Ok(cluster)
    }

    fn initdb(&self) -> Result<(), LocalClusterError> {
        let pwfile = self.dir.join("pwfile");
        fs::write(&pwfile, format!("{}\n", self.password))
            .and_then(|()| fs::set_permissions(&pwfile, fs::Permissions::from_mode(0o600)))
            .map_err(io_error("cannot write", &pwfile))?;
        give_to_server_user(&pwfile)?;
        let out = self
            .command("initdb")?
            .arg("-D")
            .arg(self.data_dir())
            .args([
                "-U",
                SUPERUSER,
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .map_err(io_error("cannot run", &self.bindir.join("initdb")));
        let _ = fs::remove_file(&pwfile);
        let out = out?;
        if !out.status.success() {
            return Err(LocalClusterError::Initdb {
                dir: self.dir.clone(),
                status: out.status.to_string(),
                output: output_text(&out),
            });
        }
        Ok(())
    }

    fn configure(&self, settings: &[(String, String)]) -> Result<(), LocalClusterError> {
        let data = self.data_dir();
        let conf_path = data.join("postgresql.conf");
        let socket_dir = data.display().to_string();
        let conf = render_settings(
            BASE_SETTINGS
                .iter()
                .map(|(k, v)| (*k, *v))
                .chain([("unix_socket_directories", socket_dir.as_str())])
                .chain(settings.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        );
        fs::OpenOptions::new()
            .append(true)
            .open(&conf_path)
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .map_err(io_error("cannot append to", &conf_path))?;
        let hba = data.join("pg_hba.conf");
        fs::write(&hba, PG_HBA).map_err(io_error("cannot write", &hba))
    }

    fn start_on_free_port(&self) -> Result<u16, LocalClusterError> {
        let log = self.log_path();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port().map_err(io_error("cannot find a free port on", &self.dir))?;
            // Each attempt reads only its own log.
            let _ = fs::remove_file(&log);
            let out = self
                .command("pg_ctl")?
                .arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "-o"])
                .arg(format!("-p {port}"))
                .arg("start")
                .output()
                .map_err(io_error("cannot run", &self.bindir.join("pg_ctl")))?;
            if out.status.success() {
                return Ok(port);
            }
            // A failed start may leave a postmaster behind (pg_ctl gave up
            // waiting): stop it before another attempt or the error.
            stop::stop(&self.data_dir());
            // Whether someone else took the port, asked of the OS: the
            // server's log speaks the language of its lc_messages.
            if attempt >= START_ATTEMPTS || !port_in_use(port) {
                return Err(LocalClusterError::Start {
                    dir: self.dir.clone(),
                    port,
                    output: output_text(&out),
                    log: tail(&log, 30),
                });
            }
        }
    }

    fn command(&self, program: &str) -> Result<Command, LocalClusterError> {
        server_command(self.bindir.join(program), &self.dir)
    }

    /// The 127.0.0.1 port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's ([`SUPERUSER`]) password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// `postgresql://postgres:PASSWORD@127.0.0.1:PORT/db`
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgresql://{SUPERUSER}:{}@127.0.0.1:{}/{db}",
            self.password, self.port
        )
    }

    /// The directory the cluster lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The data directory (`PGDATA`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The server log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// The directory of the server programs this cluster runs.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        stop_and_remove(&self.dir);
    }
}

fn render_settings<'a>(settings: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut conf = String::from("\n# walrelay local cluster\n");
    for (key, value) in settings {
        conf.push_str(&format!("{key} = '{}'\n", value.replace('\'', "''")));
    }
    conf
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> std::io::Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
}

fn port_in_use(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_err_and(|e| e.kind() == std::io::ErrorKind::AddrInUse)
}

/// `bytes` random bytes as hex, for passwords.
pub(crate) fn random_hex(bytes: usize) -> Result<String, LocalClusterError> {
    let mut buf = vec![0u8; bytes];
    let urandom = Path::new("/dev/urandom");
    fs::File::open(urandom)
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(io_error("cannot read", urandom))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The last `lines` lines of a file, for error messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_server_programs_say_how_to_install_them() {
        let text = LocalClusterError::ServerNotFound.to_string();
        for words in [
            "initdb",
            "pg_config --bindir",
            "apt-get install postgresql",
            "PATH",
        ] {
            assert!(text.contains(words), "{words:?} missing: {text}");
        }
    }

    #[test]
    fn settings_are_quoted_and_later_ones_come_last() {
        let conf = render_settings(
            [
                ("wal_level", "logical"),
                ("x", "it's"),
                ("wal_level", "replica"),
            ]
            .into_iter(),
        );
        let lines: Vec<&str> = conf.lines().filter(|l| l.contains(" = ")).collect();
        assert_eq!(
            lines,
            [
                "wal_level = 'logical'",
                "x = 'it''s'",
                "wal_level = 'replica'"
            ]
        );
    }
}
