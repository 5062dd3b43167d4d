//! The command line: the only place that turns errors into `anyhow` reports
//! and exit codes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::sync::watch;

use crate::config::{Config, FileConfig};
use crate::status::{Stage, StatusBoard};

/// walrelay: move a live PostgreSQL database to another PostgreSQL with near-zero downtime.
#[derive(Debug, Parser)]
#[command(name = "walrelay", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts, before or after the command name.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Source connection string (libpq URI or keyword/value).
    #[arg(long, env = "WALRELAY_SOURCE", global = true, hide_env_values = true)]
    pub source: Option<String>,
    /// Target connection string (libpq URI or keyword/value).
    #[arg(long, env = "WALRELAY_TARGET", global = true, hide_env_values = true)]
    pub target: Option<String>,
    /// TOML file with the same settings as the flags (flags win).
    #[arg(long, env = "WALRELAY_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Logical replication slot on the source [default: walrelay].
    #[arg(long, env = "WALRELAY_SLOT", global = true)]
    pub slot: Option<String>,
    /// Publication on the source [default: walrelay].
    #[arg(long, env = "WALRELAY_PUBLICATION", global = true)]
    pub publication: Option<String>,
    /// Tables to replicate: schema-qualified globs (`public.*`, `app.order*`); repeatable.
    #[arg(long = "table", global = true, value_name = "PATTERN")]
    pub tables: Vec<String>,
    /// Tables to leave out: schema-qualified globs; repeatable.
    #[arg(long = "exclude-table", global = true, value_name = "PATTERN")]
    pub exclude_tables: Vec<String>,
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The commands of the command-line contract (docs/ARCHITECTURE.md).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Preflight of both ends: every blocker and warning with its fix (exit 1 on blockers).
    Check(CheckArgs),
    /// Slot, schema and initial copy from one consistent snapshot; resumable.
    Snapshot(SnapshotArgs),
    /// Stream changes from the checkpoint until stopped.
    Stream(StreamArgs),
    /// Snapshot if not done, then stream, with HTTP metrics and continuous verification.
    Run(RunArgs),
    /// One full verification pass (exit 1 on drift).
    Verify(VerifyArgs),
    /// Final sync before switching traffic to the target.
    Cutover(CutoverArgs),
    /// Lag, slot health and per-table state.
    Status(StatusArgs),
    /// Drop the slot, the publication and the target's walrelay schema.
    Cleanup(CleanupArgs),
    /// Two throwaway local clusters, sample data, the full path, a short report.
    Demo(DemoArgs),
}

/// `walrelay cutover`.
#[derive(Debug, Args, Clone)]
pub struct CutoverArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Start only once the target is at most this many bytes behind.
    #[arg(long, default_value_t = 16 << 20)]
    pub max_lag_bytes: u64,
    /// Start only once the target is at most this many seconds behind.
    #[arg(long, default_value_t = 10.0)]
    pub max_lag_seconds: f64,
    /// How long to wait for the lag gate, and then for the target to apply the marker.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Make the source database read-only for new transactions and end the writers' sessions.
    #[arg(long)]
    pub fence: bool,
    /// Roles whose sessions the fence ends (repeatable; default: every role but walrelay's).
    #[arg(long = "fence-role", value_name = "ROLE")]
    pub fence_roles: Vec<String>,
    /// With --fence: list the writers' sessions instead of terminating them.
    #[arg(long, requires = "fence")]
    pub fence_list_only: bool,
    /// Undo --fence: the source database is writable again (for new sessions).
    #[arg(long, conflicts_with = "fence")]
    pub unfence: bool,
    /// The final verification after the fence: `touched` compares the rows changed since
    /// a clean pass run before the fence; `full` compares every row after it.
    #[arg(long, value_enum, default_value_t = crate::cutover::FinalVerify::Touched)]
    pub final_verify: crate::cutover::FinalVerify,
    /// Changed keys held for the final verification at most (memory bound, about 100 bytes
    /// per key); past it the table with the most changed keys is compared whole.
    #[arg(long, default_value_t = 500_000)]
    pub max_touched_keys: usize,
}

/// `walrelay demo`.
#[derive(Debug, Args, Clone)]
pub struct DemoArgs {
    /// At most this long the sample application writes (the cutover's fence ends it earlier).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub write_for: Duration,
}

/// `walrelay verify`.
#[derive(Debug, Args, Clone)]
pub struct VerifyArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Re-copy the rows that differ from the source (safe while the stream runs).
    #[arg(long)]
    pub repair: bool,
    /// Rows per chunk (about): each chunk is hashed in one short statement per side.
    #[arg(long, default_value_t = 10_000)]
    pub chunk_rows: u64,
    /// Re-checks of a differing chunk or key before it is decided.
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
    /// Hash at most this many source rows per second (default: unthrottled).
    #[arg(long)]
    pub max_rows_per_sec: Option<u64>,
    /// How long to wait for the target to apply past a source position.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub catchup_timeout: Duration,
}

/// `walrelay check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Print the findings as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `walrelay status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the status as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `walrelay cleanup`.
#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Really drop the slot, the publication and the target's walrelay schema.
    #[arg(long)]
    pub yes: bool,
}

/// `walrelay snapshot`.
#[derive(Debug, Args, Clone)]
pub struct SnapshotArgs {
    /// Copy workers (connections to each side).
    #[arg(long, short = 'j', default_value_t = 4)]
    pub jobs: usize,
    /// `copy`: create the schema on the target from pg_dump; `skip`: the target already has it.
    #[arg(long, value_enum, default_value_t = SchemaMode::Copy)]
    pub schema: SchemaMode,
    /// Keep owners and grants of the source objects (default: the target role owns everything).
    #[arg(long)]
    pub keep_owners: bool,
    /// Heap pages (8 kB) per copy chunk: large tables are split into ctid ranges of this size.
    #[arg(long, default_value_t = 16384)]
    pub chunk_pages: u32,
}

/// `walrelay stream`.
#[derive(Debug, Args, Clone)]
pub struct StreamArgs {
    /// A target transaction holds at most this many source changes (a larger
    /// source transaction is applied whole, as it arrives).
    #[arg(long, default_value_t = 10_000)]
    pub batch_rows: usize,
    /// A target transaction holds at most this many bytes of change data.
    #[arg(long, default_value_t = 16 << 20)]
    pub batch_bytes: usize,
    /// A batch commits at the latest this long after its first change.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub batch_delay: Duration,
    /// How often a heartbeat is written into the source WAL (keeps lag measurable when idle).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,
    /// Add a column the source gained to the target instead of stopping.
    #[arg(long)]
    pub auto_add_columns: bool,
    /// Stop after this many seconds (tests and benchmarks); default: until SIGINT/SIGTERM.
    #[arg(long, value_parser = humantime::parse_duration, hide = true)]
    pub stop_after: Option<Duration>,
    /// Exit 0 once the target has applied everything up to the source's WAL
    /// position at start (catch-up benchmarks and tests).
    #[arg(long, hide = true)]
    pub exit_when_caught_up: bool,
}

/// `walrelay run`.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub snapshot: SnapshotArgs,
    #[command(flatten)]
    pub stream: StreamArgs,
    /// Address of the HTTP endpoint: GET /metrics, /healthz, /status, and POST /cutover, which
    /// fences the source and ends its sessions (beyond loopback it needs --http-token).
    #[arg(long, default_value = "127.0.0.1:9187")]
    pub http: std::net::SocketAddr,
    /// Token POST /cutover must carry as `Authorization: Bearer <token>`; required when --http
    /// is not a loopback address.
    #[arg(long, env = "WALRELAY_HTTP_TOKEN", hide_env_values = true)]
    pub http_token: Option<crate::http::HttpToken>,
    /// A verification pass this often while streaming (0s: never).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub verify_interval: Duration,
    /// Source rows hashed per second at most by those passes, so they never hurt the source.
    #[arg(long, default_value_t = 50_000)]
    pub verify_max_rows_per_sec: u64,
}

/// How the target's schema is prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaMode {
    Copy,
    Skip,
}

/// Parses the arguments, runs the command and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.global.log_format);
    crate::pg::connect::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Demo(args) = &cli.command {
        // Needs no connection strings: it starts its own clusters.
        return crate::demo::run(args).await;
    }
    let file = match &cli.global.config {
        Some(path) => FileConfig::load(path)
            .with_context(|| format!("reading config file {}", path.display()))?,
        None => FileConfig::default(),
    };
    let config = Config::resolve(&cli.global, file)?;
    match cli.command {
        Command::Check(args) => {
            let report = crate::check::run(&config).await;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
            Ok(if report.has_blockers() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Snapshot(args) => {
            let summary = crate::snapshot::run(&config, &args).await.context(
                "snapshot stopped (fix the cause and re-run: a re-run resumes whatever was done)",
            )?;
            println!("{summary}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Stream(args) => {
            let board = Arc::new(StatusBoard::default());
            crate::stream::run(&config, &args, board, stop_signal())
                .await
                .context("stream stopped (fix the cause, then re-run: it resumes from the target's checkpoint)")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => run_all(&config, &args).await,
        Command::Verify(args) => {
            let report = crate::verify::run_pass(&config, &(&args).into(), None)
                .await
                .context("verification stopped")?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
            Ok(if report.clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Status(args) => {
            let status = crate::status_report::read(&config)
                .await
                .context("reading the status")?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", status.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Cleanup(args) => {
            for line in crate::cleanup::run(&config, args.yes)
                .await
                .context("cleanup stopped")?
            {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Cutover(args) => {
            if args.unfence {
                let db = crate::cutover::unfence(&config)
                    .await
                    .context("unfence stopped")?;
                println!("source database {db} is writable again (for new sessions)");
                return Ok(ExitCode::SUCCESS);
            }
            let report = crate::cutover::run(&config, &(&args).into())
                .await
                .context(
                    "cutover stopped (fix the cause and re-run: every step is safe to repeat)",
                )?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
            Ok(if report.safe {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        other => {
            eprintln!(
                "walrelay {}: not available yet",
                format!("{other:?}").to_lowercase()
            );
            Ok(ExitCode::from(2))
        }
    }
}

/// `walrelay run`: HTTP and the source monitor, the snapshot if not done, then the stream.
async fn run_all(config: &Config, args: &RunArgs) -> anyhow::Result<ExitCode> {
    crate::http::check_exposure(args.http, args.http_token.as_ref())?;
    let prometheus =
        crate::metrics::install_recorder().context("installing the metrics recorder")?;
    let board = Arc::new(StatusBoard::default());
    let stop = stop_signal();
    let mut http = tokio::spawn(crate::http::serve_with(
        args.http,
        Arc::clone(&board),
        prometheus,
        crate::cutover::routes(config.clone(), args.http_token.clone()),
        stop.clone(),
    ));
    let monitor = tokio::spawn(crate::monitor::run(
        config.source.clone(),
        config.slot.clone(),
        Arc::clone(&board),
        crate::monitor::DEFAULT_INTERVAL,
        stop.clone(),
    ));
    board.set_stage(Stage::Snapshot);
    let work = async {
        let summary = crate::snapshot::run(config, &args.snapshot).await.context(
            "snapshot stopped (fix the cause and re-run: a re-run resumes whatever was done)",
        )?;
        tracing::info!(summary = %summary, "snapshot done");
        let _verifier = spawn_verifier(config, args, Arc::clone(&board), stop.clone());
        crate::stream::run(config, &args.stream, Arc::clone(&board), stop.clone())
            .await
            .context("stream stopped (fix the cause, then re-run: it resumes from the target's checkpoint)")
    };
    tokio::pin!(work);
    let outcome = tokio::select! {
        outcome = &mut work => outcome,
        served = &mut http => match served {
            // A graceful stop ends the HTTP endpoint first: let the batch finish.
            Ok(Ok(())) => work.await,
            Ok(Err(err)) => Err(anyhow::Error::new(err)),
            Err(_) => Err(anyhow::anyhow!("the HTTP endpoint stopped")),
        },
    };
    if outcome.is_err() {
        board.set_stage(Stage::Failed);
    }
    monitor.abort();
    outcome.map(|()| ExitCode::SUCCESS)
}

/// Repeats verification passes every `--verify-interval` while the stream
/// runs; drift is logged and counted in the metrics, never fatal here.
fn spawn_verifier(
    config: &Config,
    args: &RunArgs,
    board: Arc<StatusBoard>,
    mut stop: watch::Receiver<bool>,
) -> Option<AbortOnDrop> {
    if args.verify_interval.is_zero() {
        return None;
    }
    let config = config.clone();
    let every = args.verify_interval;
    let opts = crate::verify::VerifyOptions {
        max_rows_per_sec: Some(args.verify_max_rows_per_sec),
        ..Default::default()
    };
    Some(AbortOnDrop(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            match crate::verify::run_pass(&config, &opts, Some(&board)).await {
                Ok(report) if report.clean => tracing::info!(
                    rows = report.rows,
                    chunks = report.chunks,
                    seconds = report.seconds,
                    "verification pass clean"
                ),
                Ok(report) => tracing::warn!(
                    drift_rows = report.drift_rows,
                    unsettled = report.unsettled,
                    "verification pass found drift: run `walrelay verify` for the keys"
                ),
                Err(err) => tracing::warn!(error = %err, "verification pass failed"),
            }
        }
    })))
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Turns true on SIGINT or SIGTERM; the sender lives for the whole process,
/// so receivers never see a closed channel.
fn stop_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let terminated = async {
            match term.as_mut() {
                Some(term) => {
                    term.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminated => {}
        }
        tracing::info!("stop requested: finishing the open batch");
        let _ = tx.send(true);
        std::future::pending::<()>().await;
    });
    rx
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WALRELAY_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,pgwire_replication=off,tokio_postgres=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
