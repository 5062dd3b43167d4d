//! Real-PostgreSQL test harness, shared by every integration test binary
//! (`mod harness;`).
//!
//! * [`shared()`] starts, once per test binary, a **source** cluster
//!   (`wal_level=logical`) and a **target** cluster (`wal_level=replica`) with
//!   `initdb` + `pg_ctl` on free 127.0.0.1 ports in temporary directories.
//! * [`pair()`] gives each test fresh databases on both (plus its own slot
//!   and publication names).
//! * [`Cluster::start`] starts a dedicated cluster with custom settings, for
//!   tests that must not disturb the shared ones; it is stopped on drop.
//! * Everything is stopped and removed when the test binary exits (an
//!   `atexit` hook: Rust never drops statics), also when tests fail; leftovers
//!   of killed runs (`$TMPDIR/walrelay-test-*` whose owner process is gone) are
//!   reaped when the next run starts.
//! * Servers run as the OS user `postgres` when the tests run as root
//!   (initdb and postgres refuse root), otherwise as the current user.
//! * Authentication is SCRAM over TCP with a password, so every test URL
//!   exercises it.
//! * Waiting is polling with a deadline ([`wait_until`], [`wait_for`]).
#![allow(dead_code)]

use std::ffi::CString;
use std::fmt;
use std::fs;
use std::future::Future;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use tokio_postgres::Client;

/// The superuser every cluster is initialised with.
pub const SUPERUSER: &str = "postgres";
const DIR_PREFIX: &str = "walrelay-test-";
const OWNER_FILE: &str = "owner.pid";

const INSTALL_HINT: &str = "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: \
looked at `pg_config --bindir`, /usr/lib/postgresql/*/bin and PATH. Install PostgreSQL \
(Debian/Ubuntu: `apt-get install postgresql`; Fedora: `dnf install postgresql-server`; \
macOS: `brew install postgresql`) or put its bin directory on PATH.";

/// How long a walrelay command may run in a test before it is killed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// Finding PostgreSQL and the user to run it as
// ---------------------------------------------------------------------------

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
fn server_command(program: impl AsRef<std::ffi::OsStr>, cwd: &Path) -> Command {
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
fn give_to_server_user(path: &Path) {
    if let Some(user) = run_as() {
        std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
}

// ---------------------------------------------------------------------------
// Temporary directories, cleanup at exit, reaping of killed runs
// ---------------------------------------------------------------------------

/// Base directories of live clusters and pids of live helper daemons, all
/// stopped by the `atexit` hook.
static LIVE_CLUSTERS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static LIVE_PIDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static COUNTER: AtomicU64 = AtomicU64::new(0);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A number unique within this test binary.
pub fn unique() -> u64 {
    COUNTER.fetch_add(1, Ordering::Relaxed) + 1
}

extern "C" fn cleanup_at_exit() {
    let pids = std::mem::take(&mut *lock(&LIVE_PIDS));
    for pid in pids {
        kill_and_wait(pid);
    }
    let bases = std::mem::take(&mut *lock(&LIVE_CLUSTERS));
    for base in bases {
        stop_and_remove(&base);
    }
}

/// Once per process: install the exit hook and reap leftovers of killed runs.
fn init_process() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // SAFETY: registering a plain extern "C" fn with no captured state.
        unsafe {
            libc::atexit(cleanup_at_exit);
        }
        reap_leftovers();
    });
}

fn process_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

fn kill_and_wait(pid: u32) {
    // SAFETY: plain kill(2) of a pid we started.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_alive(pid) && Instant::now() < deadline {
        // Reap it if it is our child; ignore errors (not our child).
        // SAFETY: waitpid with WNOHANG on a specific pid.
        unsafe {
            libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), libc::WNOHANG);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Stops the postmaster of `base/data` (immediate mode) and removes `base`.
fn stop_and_remove(base: &Path) {
    let data = base.join("data");
    if data.join("postmaster.pid").exists() {
        let stopped = server_command(pg_bin("pg_ctl"), base)
            .args(["stop", "-m", "immediate", "-w", "-t", "30", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !stopped {
            if let Some(pid) = read_pid(&data.join("postmaster.pid")) {
                kill_and_wait(pid);
            }
        }
    }
    let _ = fs::remove_dir_all(base);
}

/// Removes `walrelay-test-*` directories whose owning test process is dead,
/// stopping whatever server or daemon they still run.
fn reap_leftovers() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(DIR_PREFIX) {
            continue;
        }
        let base = entry.path();
        match read_pid(&base.join(OWNER_FILE)) {
            Some(owner) if process_alive(owner) => continue,
            // No owner file yet: maybe being created right now; leave it
            // unless it is old.
            None if entry
                .metadata()
                .and_then(|m| m.modified())
                .map(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(3600))
                .unwrap_or(true) =>
            {
                continue
            }
            _ => {}
        }
        // Helper daemons (pgbouncer) leave `<name>.pid` files in the base dir.
        if let Ok(files) = fs::read_dir(&base) {
            for file in files.flatten() {
                let path = file.path();
                if path.extension().is_some_and(|e| e == "pid")
                    && path.file_name().is_some_and(|n| n != OWNER_FILE)
                {
                    if let Some(pid) = read_pid(&path) {
                        if process_alive(pid) {
                            kill_and_wait(pid);
                        }
                    }
                }
            }
        }
        stop_and_remove(&base);
    }
}

/// A fresh directory `$TMPDIR/walrelay-test-<pid>-<n>-<label>` owned by the
/// server user, with our pid in `owner.pid`.
fn make_base_dir(label: &str) -> PathBuf {
    init_process();
    loop {
        let base = std::env::temp_dir().join(format!(
            "{DIR_PREFIX}{}-{}-{label}",
            std::process::id(),
            unique()
        ));
        match fs::create_dir(&base) {
            Ok(()) => {
                fs::write(base.join(OWNER_FILE), std::process::id().to_string())
                    .expect("write owner.pid");
                fs::set_permissions(&base, fs::Permissions::from_mode(0o755))
                    .expect("chmod base dir");
                give_to_server_user(&base);
                return base;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("cannot create {}: {e}", base.display()),
        }
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

fn password() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("pw{:x}x{:x}x{}", std::process::id(), nanos, unique())
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------
// Clusters
// ---------------------------------------------------------------------------

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

/// The clusters shared by all tests of one binary.
pub struct Shared {
    pub source: Cluster,
    pub target: Cluster,
}

/// Starts (once) and returns the shared source and target clusters.
pub fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let (source, target) = std::thread::scope(|s| {
            let source = s.spawn(|| Cluster::start(Options::source()));
            let target = s.spawn(|| Cluster::start(Options::target()));
            (source.join(), target.join())
        });
        match (source, target) {
            (Ok(source), Ok(target)) => Shared { source, target },
            (Err(e), _) | (_, Err(e)) => std::panic::resume_unwind(e),
        }
    })
}

/// One test's fresh databases on the shared clusters, with its own slot and
/// publication names.
#[derive(Debug, Clone)]
pub struct Pair {
    pub name: String,
    pub source_db: String,
    pub target_db: String,
    pub source_url: String,
    pub target_url: String,
    pub slot: String,
    pub publication: String,
}

/// Fresh databases `{name}_{n}` on both shared clusters.
pub async fn pair(name: &str) -> Pair {
    let shared = shared();
    let source_db = shared.source.create_database(name).await;
    let target_db = shared.target.create_database(name).await;
    let n = unique();
    Pair {
        name: name.into(),
        source_url: shared.source.url(&source_db),
        target_url: shared.target.url(&target_db),
        slot: format!("slot_{}_{n}", sanitize(name)),
        publication: format!("pub_{}_{n}", sanitize(name)),
        source_db,
        target_db,
    }
}

impl Pair {
    pub fn source_cluster(&self) -> &'static Cluster {
        &shared().source
    }

    pub fn target_cluster(&self) -> &'static Cluster {
        &shared().target
    }

    /// Superuser connection to the source database.
    pub async fn source(&self) -> Client {
        connect(&self.source_url).await
    }

    /// Superuser connection to the target database.
    pub async fn target(&self) -> Client {
        connect(&self.target_url).await
    }

    /// `walrelay --source … --target … --slot … --publication …`; append
    /// the command and its flags.
    pub fn walrelay(&self) -> Command {
        let mut cmd = walrelay();
        cmd.arg("--source")
            .arg(&self.source_url)
            .arg("--target")
            .arg(&self.target_url)
            .arg("--slot")
            .arg(&self.slot)
            .arg("--publication")
            .arg(&self.publication);
        cmd
    }

    /// Whether the pair's slot exists on the source cluster.
    pub async fn slot_exists(&self) -> bool {
        let admin = self.source_cluster().connect("postgres").await;
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
                &[&self.slot],
            )
            .await
            .expect("query pg_replication_slots")
            .get(0);
        n > 0
    }

    /// Whether the pair's publication exists in the source database.
    pub async fn publication_exists(&self) -> bool {
        let n: i64 = self
            .source()
            .await
            .query_one(
                "SELECT count(*) FROM pg_publication WHERE pubname = $1",
                &[&self.publication],
            )
            .await
            .expect("query pg_publication")
            .get(0);
        n > 0
    }
}

// ---------------------------------------------------------------------------
// Connections and queries
// ---------------------------------------------------------------------------

/// Connects (no TLS) and drives the connection on the current runtime.
pub async fn connect(url: &str) -> Client {
    try_connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {}", redact(url), error_text(&e)))
}

/// Like [`connect`], but returns the error.
pub async fn try_connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The URL with its password replaced by `***`.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// An error with the server's message and detail, if any.
pub fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{}: {}{}",
            db.severity(),
            db.message(),
            db.detail().map(|d| format!(" ({d})")).unwrap_or_default()
        ),
        None => e.to_string(),
    }
}

/// Runs `sql` (simple protocol) and panics with the server message on error.
pub async fn exec(client: &Client, sql: &str) {
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{}\nin SQL:\n{sql}", error_text(&e)));
}

/// All rows of `sql` as text (simple protocol); NULL is `None`.
pub async fn rows(client: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{}\nin SQL:\n{sql}", error_text(&e)));
    messages
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// The first column of every row; NULL is `"<NULL>"`.
pub async fn column(client: &Client, sql: &str) -> Vec<String> {
    rows(client, sql)
        .await
        .into_iter()
        .map(|r| {
            r.into_iter()
                .next()
                .flatten()
                .unwrap_or_else(|| "<NULL>".into())
        })
        .collect()
}

/// The single value of a one-row, one-column query (`"<NULL>"` for NULL).
pub async fn value(client: &Client, sql: &str) -> String {
    let all = column(client, sql).await;
    assert_eq!(all.len(), 1, "expected one row from: {sql}\ngot {all:?}");
    all.into_iter().next().unwrap()
}

/// The same text output on both sides whatever the cluster defaults are.
pub async fn stable_session(client: &Client) {
    exec(
        client,
        "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; \
         SET extra_float_digits = 3; SET bytea_output = 'hex'; SET lc_monetary = 'C'",
    )
    .await;
}

/// `md5(row::text)` of every row of `table`, ordered by `order_by`.
pub async fn row_hashes(client: &Client, table: &str, order_by: &str) -> Vec<String> {
    stable_session(client).await;
    column(
        client,
        &format!("SELECT md5(t::text) FROM {table} t ORDER BY {order_by}"),
    )
    .await
}

/// Asserts that `table` has the same rows on both sides (and at least
/// `min_rows`), comparing row by row.
pub async fn assert_same_rows(
    source: &Client,
    target: &Client,
    table: &str,
    order_by: &str,
    min_rows: usize,
) {
    let s = row_hashes(source, table, order_by).await;
    let t = row_hashes(target, table, order_by).await;
    assert!(
        s.len() >= min_rows,
        "{table}: the source has {} rows, the test expected at least {min_rows}",
        s.len()
    );
    if s != t {
        let first = s
            .iter()
            .zip(&t)
            .position(|(a, b)| a != b)
            .unwrap_or(s.len().min(t.len()));
        panic!(
            "{table}: source has {} rows, target {}; first difference at row {first} (ordered by {order_by})",
            s.len(),
            t.len()
        );
    }
}

/// Lines describing the user schema (outside pg_catalog, information_schema
/// and walrelay): columns, indexes, constraints, sequences, triggers, types.
pub async fn schema_fingerprint(client: &Client) -> Vec<String> {
    const NOT_OURS: &str = "('pg_catalog','information_schema','walrelay','pg_toast')";
    let queries = [
        format!(
            "SELECT format('column %s.%s.%s %s %s null=%s default=%s identity=%s/%s generated=%s/%s',
                table_schema, table_name, column_name, data_type, udt_name, is_nullable,
                column_default, is_identity, identity_generation, is_generated, generation_expression)
             FROM information_schema.columns WHERE table_schema NOT IN {NOT_OURS}
             ORDER BY table_schema, table_name, ordinal_position"
        ),
        format!(
            "SELECT format('index %s.%s %s %s', schemaname, tablename, indexname, indexdef)
             FROM pg_indexes WHERE schemaname NOT IN {NOT_OURS} ORDER BY 1"
        ),
        format!(
            "SELECT format('constraint %s %s %s %s', n.nspname,
                coalesce(c.conrelid::regclass::text, c.contypid::regtype::text), c.conname,
                pg_get_constraintdef(c.oid))
             FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
             WHERE n.nspname NOT IN {NOT_OURS} ORDER BY 1"
        ),
        format!(
            "SELECT format('sequence %s.%s %s start=%s min=%s max=%s inc=%s cycle=%s',
                sequence_schema, sequence_name, data_type, start_value, minimum_value,
                maximum_value, increment, cycle_option)
             FROM information_schema.sequences WHERE sequence_schema NOT IN {NOT_OURS} ORDER BY 1"
        ),
        format!(
            "SELECT format('trigger %s %s', tgname, pg_get_triggerdef(t.oid))
             FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE NOT t.tgisinternal AND n.nspname NOT IN {NOT_OURS} ORDER BY 1"
        ),
        format!(
            "SELECT format('type %s.%s %s %s %s', n.nspname, t.typname, t.typtype,
                (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid),
                CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) || ' notnull=' || t.typnotnull END)
             FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
             WHERE t.typtype IN ('e', 'd') AND n.nspname NOT IN {NOT_OURS} ORDER BY 1"
        ),
        format!(
            "SELECT format('partition %s of %s: %s', c.oid::regclass, i.inhparent::regclass,
                pg_get_expr(c.relpartbound, c.oid))
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN {NOT_OURS} ORDER BY 1"
        ),
    ];
    let mut lines = Vec::new();
    for sql in &queries {
        lines.extend(column(client, sql).await);
    }
    lines
}

// ---------------------------------------------------------------------------
// The walrelay binary
// ---------------------------------------------------------------------------

/// `walrelay` (the binary under test) with no `WALRELAY_*` variables
/// inherited from the environment except `WALRELAY_LOG` (for debugging).
pub fn walrelay() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_walrelay"));
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("WALRELAY_") && name != "WALRELAY_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// What a finished command printed.
#[derive(Debug, Clone)]
pub struct Run {
    pub command: String,
    /// `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "$ {}\nexit code: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.code, self.stdout, self.stderr
        )
    }
}

impl Run {
    /// Panics with the output unless the exit code is 0.
    pub fn assert_success(&self) -> &Self {
        assert_eq!(self.code, Some(0), "expected success:\n{self}");
        self
    }

    /// Panics with the output unless the command exited (not killed) with a
    /// non-zero code.
    pub fn assert_failure(&self) -> &Self {
        assert!(
            matches!(self.code, Some(c) if c != 0),
            "expected a non-zero exit code:\n{self}"
        );
        self
    }

    /// stdout and stderr together.
    pub fn output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// The command line with passwords in URLs redacted.
pub fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| redact(&a.to_string_lossy())));
    parts.join(" ")
}

/// Runs a command to completion (killed after [`COMMAND_TIMEOUT`], then
/// the test fails with what it printed so far).
pub async fn run(cmd: Command) -> Run {
    run_with_timeout(cmd, COMMAND_TIMEOUT).await
}

/// [`run`] with another time limit.
pub async fn run_with_timeout(cmd: Command, timeout: Duration) -> Run {
    let child = spawn(cmd);
    child.finish(timeout).await
}

/// A running command whose output is being collected.
pub struct Running {
    pub command: String,
    pub child: tokio::process::Child,
    stdout: tokio::task::JoinHandle<Vec<u8>>,
    stderr: tokio::task::JoinHandle<Vec<u8>>,
}

/// Starts a command with its output collected in the background.
pub fn spawn(cmd: Command) -> Running {
    use tokio::io::AsyncReadExt;
    let command = describe(&cmd);
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command}: {e}"));
    let mut out = child.stdout.take().expect("stdout piped");
    let mut err = child.stderr.take().expect("stderr piped");
    let stdout = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf).await;
        buf
    });
    let stderr = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf).await;
        buf
    });
    Running {
        command,
        child,
        stdout,
        stderr,
    }
}

impl Running {
    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// SIGKILL, then what it printed.
    pub async fn kill(mut self) -> Run {
        let _ = self.child.start_kill();
        self.collect().await
    }

    /// Waits for the exit (killing it after `timeout`, and then panicking
    /// with its output).
    pub async fn finish(mut self, timeout: Duration) -> Run {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(_) => self.collect().await,
            Err(_) => {
                let _ = self.child.start_kill();
                let run = self.collect().await;
                panic!("did not finish within {timeout:?}, killed:\n{run}");
            }
        }
    }

    async fn collect(mut self) -> Run {
        let status = self.child.wait().await.expect("wait for child");
        let stdout = self.stdout.await.unwrap_or_default();
        let stderr = self.stderr.await.unwrap_or_default();
        Run {
            command: self.command,
            code: status.code(),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }
}

// ---------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------

/// Polls `condition` until it holds; panics naming `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if condition() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Polls the async `probe` until it returns `Some`; panics naming `what`
/// after `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------
// Helper daemons
// ---------------------------------------------------------------------------

/// A pgbouncer (transaction pooling, SCRAM with a plain-text userlist)
/// in front of a cluster; killed on drop.
pub struct Bouncer {
    pub port: u16,
    child: std::process::Child,
    base: PathBuf,
}

/// Where pgbouncer is, or a panic saying how to install it.
pub fn pgbouncer_bin() -> PathBuf {
    let mut candidates: Vec<PathBuf> =
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|d| d.join("pgbouncer"))
            .collect();
    candidates.push("/usr/sbin/pgbouncer".into());
    candidates.push("/usr/bin/pgbouncer".into());
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "pgbouncer not found (PATH, /usr/sbin, /usr/bin): the `pooler` check test needs it. \
                 Install it: Debian/Ubuntu `apt-get install pgbouncer`, macOS `brew install pgbouncer`"
            )
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
