//! Stopping a cluster without its programs: the postmaster's pid file and
//! signals, as `pg_ctl stop -m immediate` does.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

/// Stops the postmaster of `dir/data` (immediate mode, as `pg_ctl stop -m
/// immediate`) and removes `dir`. Needs no server program, so it also
/// serves exit hooks and the reaping of clusters left by killed processes.
pub fn stop_and_remove(dir: &Path) {
    stop(&dir.join("data"));
    let _ = fs::remove_dir_all(dir);
}

pub(super) fn stop(data: &Path) {
    let pidfile = data.join("postmaster.pid");
    let Some(pid) = read_pid(&pidfile) else {
        return;
    };
    if !is_postmaster_of(pid, data) {
        return;
    }
    // SIGQUIT is the immediate shutdown; the postmaster removes its pid
    // file when it is done (also when nobody reaps it).
    signal(pid, libc::SIGQUIT);
    if wait_gone(pid, &pidfile, Duration::from_secs(30)) {
        return;
    }
    signal(pid, libc::SIGKILL);
    wait_gone(pid, &pidfile, Duration::from_secs(10));
}

/// Whether `pid` is still the postmaster of `data`: a pid file left by a
/// crash may name a pid that now belongs to an unrelated process. Where
/// `/proc` is missing, the pid file is trusted (as pg_ctl does).
fn is_postmaster_of(pid: u32, data: &Path) -> bool {
    if !process_alive(pid) {
        return false;
    }
    if !Path::new("/proc/self/cwd").exists() {
        return true;
    }
    // The postmaster's working directory is its data directory.
    match fs::read_link(format!("/proc/{pid}/cwd")) {
        Ok(cwd) => fs::canonicalize(data).is_ok_and(|data| cwd == data),
        // Gone meanwhile, or a zombie: nothing to stop.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        // Not allowed to look: trust the pid file, as pg_ctl does.
        Err(_) => true,
    }
}

fn wait_gone(pid: u32, pidfile: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        // Reaps it when it is our child (no effect otherwise).
        // SAFETY: waitpid with WNOHANG on one pid.
        unsafe {
            libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), libc::WNOHANG);
        }
        if !pidfile.exists() || !process_alive(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) of the postmaster pid we checked above.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// Whether a process `pid` exists (zombies included).
pub fn process_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// The number on the first line of a pid file.
pub fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn a_stale_pid_file_naming_another_process_is_not_signalled() {
        let dir = tempfile::tempdir().unwrap();
        // Our own process is alive but is not a postmaster of this directory.
        assert!(!is_postmaster_of(std::process::id(), dir.path()));
    }
}
