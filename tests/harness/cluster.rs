//! Starting and stopping one PostgreSQL cluster: [`Options`] and
//! [`Cluster`].
//!
//! A cluster is walrelay's local-cluster launcher (`initdb` + `pg_ctl start`
//! on a free port, SCRAM authentication over TCP) in a harness directory
//! (see [`super::cleanup`]); it is stopped and removed on drop, or by the
//! exit hook.

use std::fmt;
use std::path::PathBuf;

use walrelay::local_cluster::{ClusterOptions, LocalCluster};

use super::cleanup::{lock, make_base_dir, password, tail, unique, LIVE_CLUSTERS};
use super::pg_install::error_chain;
use super::sql::{connect, error_text};
use super::Client;

/// The superuser every cluster is initialised with.
pub const SUPERUSER: &str = walrelay::local_cluster::SUPERUSER;

/// Settings of a cluster to start.
#[derive(Debug, Clone)]
pub struct Options {
    /// Short label used in the directory name.
    pub label: String,
    /// `postgresql.conf` lines `key = value`, applied in order after the
    /// harness defaults (so they win).
    pub settings: Vec<(String, String)>,
    /// The server programs to run; `None`: the ones found on this machine
    /// (`harness::bindir()`).
    pub bindir: Option<PathBuf>,
}

impl Options {
    /// A source: `wal_level=logical` (every cluster has 20 slots and WAL senders),
    /// `wal_sender_timeout=10s`, `max_prepared_transactions=10`.
    pub fn source() -> Self {
        Options {
            label: "source".into(),
            settings: vec![],
            bindir: None,
        }
        .set("wal_level", "logical")
        .set("max_prepared_transactions", "10")
    }

    /// A target: PostgreSQL's default `wal_level=replica`.
    pub fn target() -> Self {
        Options {
            label: "target".into(),
            settings: vec![],
            bindir: None,
        }
        .set("wal_level", "replica")
    }

    /// Adds (or overrides) one setting.
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.settings.push((key.into(), value.into()));
        self
    }

    /// Changes the directory label.
    pub fn label(mut self, label: &str) -> Self {
        self.label = label.into();
        self
    }

    /// Runs the server programs of `dir` (another major version).
    pub fn bindir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bindir = Some(dir.into());
        self
    }

    /// Runs PostgreSQL major version `major`; panics saying how to get it
    /// when it is not here (see [`version_bindir`]).
    pub fn version(self, major: u32) -> Self {
        let dir = version_bindir(major).unwrap_or_else(|missing| panic!("{missing}"));
        self.bindir(dir)
    }
}

/// The server programs of PostgreSQL major `major`: the system's
/// (`/usr/lib/postgresql/N/bin`), else those `scripts/test` fetched into
/// `<target dir>/pg-versions/N/bin`.
pub fn version_bindir(major: u32) -> Result<PathBuf, String> {
    let system = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"));
    // Compile-time `<target dir>/tmp`: the fetched versions are its sibling.
    let fetched = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .with_file_name("pg-versions")
        .join(major.to_string())
        .join("bin");
    [system, fetched.clone()]
        .into_iter()
        .find(|dir| walrelay::local_cluster::check_bindir(dir).is_ok())
        .ok_or_else(|| {
            format!(
                "PostgreSQL {major} not found (looked in /usr/lib/postgresql/{major}/bin and {}): \
                 fetch it with `WALRELAY_TEST_PG_MAJORS={major} scripts/test` (npm's \
                 embedded-postgres build), or install it (apt.postgresql.org: \
                 `apt-get install postgresql-{major}`)",
                fetched.display()
            )
        })
}

/// A running PostgreSQL cluster. Dedicated clusters stop when dropped; the
/// shared ones at exit.
pub struct Cluster {
    pub port: u16,
    /// The superuser's (`postgres`) password.
    pub password: String,
    inner: LocalCluster,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Cluster(127.0.0.1:{}, {})",
            self.port,
            self.inner.dir().display()
        )
    }
}

impl Cluster {
    /// `initdb` + `pg_ctl start` on a free port; panics with the server log
    /// when it does not come up.
    pub fn start(options: Options) -> Cluster {
        let base = make_base_dir(&options.label);
        lock(&LIVE_CLUSTERS).push(base.clone());
        let mut launch = ClusterOptions::new(&base);
        if let Some(dir) = &options.bindir {
            launch = launch.bindir(dir);
        }
        for (key, value) in &options.settings {
            launch = launch.set(key, value);
        }
        let inner = LocalCluster::start(&launch).unwrap_or_else(|e| panic!("{}", error_chain(&e)));
        Cluster {
            port: inner.port(),
            password: inner.password().to_string(),
            inner,
        }
    }

    /// `postgresql://postgres:PASSWORD@127.0.0.1:PORT/db`
    pub fn url(&self, db: &str) -> String {
        self.url_as(SUPERUSER, &self.password, db)
    }

    /// The URL of `db` for another role.
    pub fn url_as(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "postgresql://{user}:{password}@127.0.0.1:{}/{db}",
            self.port
        )
    }

    /// A superuser connection to `db`.
    pub async fn connect(&self, db: &str) -> Client {
        connect(&self.url(db)).await
    }

    /// Creates a fresh database `{prefix}_{n}` and returns its name.
    pub async fn create_database(&self, prefix: &str) -> String {
        let name = format!("{}_{}", sanitize(prefix), unique());
        let admin = self.connect("postgres").await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {}", error_text(&e)));
        name
    }

    /// Creates a login role `{prefix}_{n}` with `attributes` (e.g.
    /// `"REPLICATION"`, `"NOSUPERUSER"`) and a fresh password; returns
    /// (name, password).
    pub async fn create_role(&self, prefix: &str, attributes: &str) -> (String, String) {
        let name = format!("{}_{}", sanitize(prefix), unique());
        let password = password();
        let admin = self.connect("postgres").await;
        admin
            .batch_execute(&format!(
                "CREATE ROLE {name} LOGIN PASSWORD '{password}' {attributes}"
            ))
            .await
            .unwrap_or_else(|e| panic!("CREATE ROLE {name}: {}", error_text(&e)));
        (name, password)
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.inner.data_dir()
    }

    /// The last lines of the server log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.inner.log_path(), lines)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The launcher stops and removes it when `inner` drops, right after.
        lock(&LIVE_CLUSTERS).retain(|b| b != self.inner.dir());
    }
}

/// Lowercase `[a-z0-9_]`, as walrelay's slot names require.
pub fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    s.chars().take(40).collect()
}
