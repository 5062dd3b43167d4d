//! Starting and stopping one PostgreSQL cluster: [`Options`] and
//! [`Cluster`].
//!
//! A cluster is `initdb` + `pg_ctl start` on a free port in its own
//! temporary directory, with SCRAM authentication over TCP; it is stopped
//! and removed on drop (or by the exit hook in [`super::cleanup`]).

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::cleanup::{
    free_port, lock, make_base_dir, password, stop_and_remove, tail, unique, LIVE_CLUSTERS,
};
use super::pg_install::{give_to_server_user, pg_bin, server_command, INSTALL_HINT};
use super::sql::{connect, error_text};
use super::Client;

/// The superuser every cluster is initialised with.
pub const SUPERUSER: &str = "postgres";

/// Settings of a cluster to start.
#[derive(Debug, Clone)]
pub struct Options {
    /// Short label used in the directory name.
    pub label: String,
    /// `postgresql.conf` lines `key = value`, applied in order after the
    /// harness defaults (so they win).
    pub settings: Vec<(String, String)>,
}

impl Options {
    /// A source: `wal_level=logical` (every cluster has 20 slots and WAL senders),
    /// `wal_sender_timeout=10s`, `max_prepared_transactions=10`.
    pub fn source() -> Self {
        Options {
            label: "source".into(),
            settings: vec![],
        }
        .set("wal_level", "logical")
        .set("max_prepared_transactions", "10")
    }

    /// A target: PostgreSQL's default `wal_level=replica`.
    pub fn target() -> Self {
        Options {
            label: "target".into(),
            settings: vec![],
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
}

/// A running PostgreSQL cluster. Dedicated clusters stop when dropped; the
/// shared ones at exit.
pub struct Cluster {
    pub port: u16,
    /// The superuser's (`postgres`) password.
    pub password: String,
    base: PathBuf,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Cluster(127.0.0.1:{}, {})",
            self.port,
            self.base.display()
        )
    }
}

impl Cluster {
    /// `initdb` + `pg_ctl start` on a free port; panics with the server log
    /// when it does not come up.
    pub fn start(options: Options) -> Cluster {
        let base = make_base_dir(&options.label);
        lock(&LIVE_CLUSTERS).push(base.clone());
        let password = password();
        let data = base.join("data");
        let pwfile = base.join("pwfile");
        fs::write(&pwfile, format!("{password}\n")).expect("write pwfile");
        fs::set_permissions(&pwfile, fs::Permissions::from_mode(0o600)).expect("chmod pwfile");
        give_to_server_user(&pwfile);

        let out = server_command(pg_bin("initdb"), &base)
            .arg("-D")
            .arg(&data)
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
            .unwrap_or_else(|e| panic!("cannot run initdb: {e}\n{INSTALL_HINT}"));
        if !out.status.success() {
            panic!(
                "initdb failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let _ = fs::remove_file(&pwfile);

        let mut conf = format!(
            "\n# walrelay test harness\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             shared_buffers = 128MB\n\
             max_connections = 100\n\
             password_encryption = 'scram-sha-256'\n\
             max_replication_slots = 20\n\
             max_wal_senders = 20\n\
             wal_sender_timeout = '10s'\n\
             log_line_prefix = '%m [%p] %q%u@%d '\n",
            data.display()
        );
        for (key, value) in &options.settings {
            conf.push_str(&format!("{key} = '{value}'\n"));
        }
        fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .expect("append postgresql.conf");
        // Logical replication connections match ordinary database lines;
        // physical ones (pg_receivewal in tests) need `replication`.
        fs::write(
            data.join("pg_hba.conf"),
            "local all all scram-sha-256\n\
             host all all 127.0.0.1/32 scram-sha-256\n\
             host replication all 127.0.0.1/32 scram-sha-256\n",
        )
        .expect("write pg_hba.conf");

        let log = base.join("server.log");
        let mut last_error = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            // Each attempt reads only its own log: an earlier attempt's
            // "could not bind" must not decide this one (its text is kept
            // in last_error).
            let _ = std::fs::remove_file(&log);
            let out = server_command(pg_bin("pg_ctl"), &base)
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "-o"])
                .arg(format!("-p {port}"))
                .arg("start")
                .output()
                .expect("run pg_ctl start");
            if out.status.success() {
                return Cluster {
                    port,
                    password,
                    base,
                };
            }
            last_error = format!(
                "pg_ctl start on port {port} failed ({}):\n{}{}\nserver log:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                tail(&log, 30)
            );
            // A port taken between free_port() and bind: try another one.
            if !tail(&log, 30).contains("could not bind") {
                break;
            }
        }
        panic!("{last_error}");
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
        self.base.join("data")
    }

    /// The last lines of the server log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.base.join("server.log"), lines)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        lock(&LIVE_CLUSTERS).retain(|b| b != &self.base);
        stop_and_remove(&self.base);
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
