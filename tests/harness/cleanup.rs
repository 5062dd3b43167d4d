//! Temporary directories, cleanup at exit, reaping of killed runs.
//!
//! Every cluster and daemon lives in a `$TMPDIR/walrelay-test-*` directory
//! made here and is registered in the live lists that the `atexit` hook
//! stops (Rust never drops statics); directories left by killed runs are
//! reaped when the next run starts. Stopping a cluster is walrelay's
//! launcher's (`local_cluster::stop_and_remove`). Also the small sources of
//! fresh values (unique numbers, free ports, passwords).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use walrelay::local_cluster::{process_alive, read_pid};
pub(super) use walrelay::local_cluster::{stop_and_remove, tail};

use super::pg_install::give_to_server_user;

const DIR_PREFIX: &str = "walrelay-test-";
const OWNER_FILE: &str = "owner.pid";

/// Base directories of live clusters and pids of live helper daemons, all
/// stopped by the `atexit` hook.
pub(super) static LIVE_CLUSTERS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
pub(super) static LIVE_PIDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static COUNTER: AtomicU64 = AtomicU64::new(0);

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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
pub(super) fn make_base_dir(label: &str) -> PathBuf {
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
    walrelay::local_cluster::free_port().expect("bind 127.0.0.1:0")
}

pub(super) fn password() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("pw{:x}x{:x}x{}", std::process::id(), nanos, unique())
}
