//! Running commands, above all the walrelay binary under test: [`walrelay`],
//! [`run`] and its [`Run`] result, and [`spawn`] for commands that run in the
//! background while the test goes on ([`Running`]).

use std::fmt;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::sql::redact;

/// How long a walrelay command may run in a test before it is killed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

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
