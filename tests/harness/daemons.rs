//! Helper daemons started next to the clusters: [`Bouncer`] (pgbouncer in
//! front of a cluster) and [`Daemon`] (a background client such as
//! `pg_receivewal`). Both are killed on drop, and at exit if still running.

use std::fs;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::cleanup::{free_port, lock, make_base_dir, tail, LIVE_PIDS};
use super::cluster::Cluster;
use super::command::describe;
use super::pg_install::{give_to_server_user, server_command};

/// A pgbouncer (transaction pooling, SCRAM with a plain-text userlist)
/// in front of a cluster; killed on drop.
pub struct Bouncer {
    pub port: u16,
    child: std::process::Child,
    base: PathBuf,
}

/// Where pgbouncer is, or a panic saying how to install it.
pub fn pgbouncer_bin() -> PathBuf {
    let mut dirs: Vec<PathBuf> =
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
    dirs.extend(["/usr/sbin".into(), "/usr/bin".into()]);
    find_pgbouncer(&dirs).unwrap_or_else(|missing| panic!("{missing}"))
}

/// pgbouncer in the first of `dirs` that has it, or what to do when none
/// has.
pub fn find_pgbouncer(dirs: &[PathBuf]) -> Result<PathBuf, String> {
    dirs.iter()
        .map(|d| d.join("pgbouncer"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "pgbouncer not found (looked in PATH, /usr/sbin and /usr/bin): the `pooler` \
                 check test needs it. `scripts/test` installs it (as root) and runs the tests; \
                 or install it yourself: Debian/Ubuntu `apt-get install pgbouncer`, macOS \
                 `brew install pgbouncer`"
                .to_string()
        })
}

impl Bouncer {
    /// Starts pgbouncer on a free port forwarding every database to
    /// `cluster`; `users` are (name, password) allowed to log in.
    pub fn start(cluster: &Cluster, users: &[(&str, &str)]) -> Bouncer {
        let bin = pgbouncer_bin();
        let base = make_base_dir("pgbouncer");
        let userlist: String = users
            .iter()
            .map(|(u, p)| format!("\"{u}\" \"{p}\"\n"))
            .collect();
        fs::write(base.join("userlist.txt"), userlist).expect("write userlist");
        give_to_server_user(&base.join("userlist.txt"));
        let mut last_error = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let ini = format!(
                "[databases]\n\
                 * = host=127.0.0.1 port={}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = scram-sha-256\n\
                 auth_file = {}\n\
                 pool_mode = transaction\n\
                 pidfile = {}\n\
                 logfile = {}\n\
                 ignore_startup_parameters = extra_float_digits\n",
                cluster.port,
                base.join("userlist.txt").display(),
                base.join("pgbouncer.pid").display(),
                base.join("pgbouncer.log").display(),
            );
            fs::write(base.join("pgbouncer.ini"), ini).expect("write pgbouncer.ini");
            give_to_server_user(&base.join("pgbouncer.ini"));
            let mut child = server_command(&bin, &base)
                .arg(base.join("pgbouncer.ini"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            lock(&LIVE_PIDS).push(child.id());
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Bouncer { port, child, base };
                }
                if let Ok(Some(status)) = child.try_wait() {
                    last_error = format!(
                        "pgbouncer exited ({status}):\n{}",
                        tail(&base.join("pgbouncer.log"), 20)
                    );
                    break;
                }
                if Instant::now() >= deadline {
                    last_error = format!(
                        "pgbouncer did not listen on {port} within 20s:\n{}",
                        tail(&base.join("pgbouncer.log"), 20)
                    );
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            lock(&LIVE_PIDS).retain(|p| *p != child.id());
        }
        let _ = fs::remove_dir_all(&base);
        panic!("{last_error}");
    }

    /// `postgresql://user:password@127.0.0.1:BOUNCER_PORT/db`
    pub fn url_as(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "postgresql://{user}:{password}@127.0.0.1:{}/{db}",
            self.port
        )
    }

    pub fn log(&self) -> String {
        tail(&self.base.join("pgbouncer.log"), 50)
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let pid = self.child.id();
        let _ = self.child.kill();
        let _ = self.child.wait();
        lock(&LIVE_PIDS).retain(|p| *p != pid);
        let _ = fs::remove_dir_all(&self.base);
    }
}

/// A background client process (e.g. `pg_receivewal`), killed on drop.
pub struct Daemon {
    pub child: std::process::Child,
}

impl Daemon {
    /// Spawns `cmd` with its output discarded.
    pub fn spawn(mut cmd: Command) -> Daemon {
        let desc = describe(&cmd);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {desc}: {e}"));
        lock(&LIVE_PIDS).push(child.id());
        Daemon { child }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = self.child.id();
        let _ = self.child.kill();
        let _ = self.child.wait();
        lock(&LIVE_PIDS).retain(|p| *p != pid);
    }
}
