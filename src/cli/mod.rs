//! The command line: the only place that turns errors into `anyhow` reports
//! and exit codes.

mod args;
mod demo;
mod reverse;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{Config, Settings};
use crate::status::StatusBoard;

pub use args::{
    CheckArgs, CleanupArgs, CutoverArgs, DemoArgs, FinalVerifyArg, RunArgs, SchemaArg,
    SnapshotArgs, SpoolArgs, StatusArgs, StreamArgs, StreamCommandArgs, VerifyArgs,
};
use run::{run_all, stop_signal};

/// walrelay: move a live PostgreSQL database to another PostgreSQL with near-zero downtime.
#[derive(Debug, Parser)]
#[command(name = "walrelay", version, about, max_term_width = 100)]
pub struct Cli {
    /// The way back: run the command from the target into the old source (after
    /// `cutover --fence --reverse`), with the same --source/--target/--slot; for run, stream,
    /// verify, status, cutover and cleanup. Given before the command.
    #[arg(long)]
    pub reverse: bool,
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts, before or after the command name; in each
/// command's help under their own heading, after the command's own flags.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
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
    /// Directory of pg_dump and pg_restore for the schema copy [default: the newest of
    /// `pg_config --bindir`, /usr/lib/postgresql/*/bin and PATH, at least the source's version].
    #[arg(long, env = "WALRELAY_PG_BINDIR", global = true, value_name = "DIR")]
    pub pg_bindir: Option<PathBuf>,
    /// Mapping file (TOML `[[table]]` entries: target, rename, exclude, where, mask).
    #[arg(long = "map", env = "WALRELAY_MAP", global = true, value_name = "FILE")]
    pub map: Option<PathBuf>,
    /// On a PostgreSQL 14 source (no publication column lists or row filters), exclude
    /// and mask in walrelay instead of refusing: excluded columns then cross the wire.
    #[arg(long, global = true)]
    pub allow_unfiltered_stream: bool,
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The global flags `demo` does not use (it starts its own clusters), by
/// argument id and flag.
const NOT_FOR_DEMO: [(&str, &str); 8] = [
    ("source", "--source"),
    ("target", "--target"),
    ("config", "--config"),
    ("slot", "--slot"),
    ("publication", "--publication"),
    ("tables", "--table"),
    ("exclude_tables", "--exclude-table"),
    ("map", "--map"),
];

impl Cli {
    /// Parses as `Cli::try_parse_from` does, and refuses a flag the command
    /// would silently ignore: `demo` with a connection or table flag given
    /// on the command line (a `WALRELAY_*` variable set for the other
    /// commands is not refused).
    pub fn try_parse_args_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut command = <Self as clap::CommandFactory>::command();
        let matches = command.try_get_matches_from_mut(args)?;
        if let Some(("demo", demo)) = matches.subcommand() {
            let given = |id: &str| {
                [&matches, demo]
                    .iter()
                    .any(|m| m.value_source(id) == Some(clap::parser::ValueSource::CommandLine))
            };
            if let Some((_, flag)) = NOT_FOR_DEMO.iter().find(|(id, _)| given(id)) {
                let all: Vec<&str> = NOT_FOR_DEMO.iter().map(|(_, flag)| *flag).collect();
                return Err(command.error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!(
                        "demo starts its own clusters: {} are not used; remove {flag}",
                        all.join("/")
                    ),
                ));
            }
        }
        <Self as clap::FromArgMatches>::from_arg_matches(&matches)
            .map_err(|err| err.format(&mut command))
    }
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
    Stream(StreamCommandArgs),
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
    #[command(
        after_help = "demo starts its own clusters: the connection and table options (--source, --target, --config, --slot, --publication, --table, --exclude-table) are refused."
    )]
    Demo(DemoArgs),
}

/// Parses the arguments, runs the command and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::try_parse_args_from(std::env::args_os()).unwrap_or_else(|err| err.exit());
    let format = cli.global.log_format;
    init_logging(format);
    crate::pg::connect::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            fatal(format, &format!("cannot start the async runtime: {err}"));
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            fatal(format, &crate::pg::error::chain_text(err.chain()));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Demo(args) = &cli.command {
        if cli.reverse {
            anyhow::bail!(
                "`--reverse demo`: the demo shows the way back by itself; run `walrelay demo`"
            );
        }
        // Needs no connection strings: it starts its own clusters.
        return demo::run(&args.options()).await;
    }
    let forward = resolve_config(&cli.global)?;
    let config = if cli.reverse {
        reverse_config(&cli.command, &forward)?
    } else {
        forward.clone()
    };
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
            let summary =
                crate::snapshot::run_until_stopped(&config, &args.options(), stop_signal())
                    .await
                    .map_err(|err| {
                        let context = err.stopped_context();
                        anyhow::Error::new(err).context(context)
                    })?;
            println!("{summary}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Stream(args) => {
            let board = Arc::new(StatusBoard::default());
            crate::stream::run(&config, &args.options(), board, stop_signal())
                .await
                .context("stream stopped")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(mut args) => {
            if cli.reverse {
                // Its snapshot is the one `cutover --fence --reverse`
                // recorded as done: no schema copy, so no pg_dump needed.
                args.snapshot.schema = SchemaArg::Skip;
            }
            run_all(&config, &args, cli.reverse).await
        }
        Command::Verify(args) => {
            let report = crate::verify::run_pass(&config, &args.options(), None)
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
            let status = crate::status_report::read(&config, args.spool_dir.as_deref())
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
            if cli.reverse {
                println!("the way back: its source is the target, its target the old source");
            }
            for line in crate::cleanup::run(&config, args.yes, args.spool_dir.as_deref())
                .await
                .context("cleanup stopped")?
            {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Cutover(args) if cli.reverse => {
            reverse::switch_back(&forward, &config, &args).await
        }
        Command::Cutover(args) => {
            if args.unfence {
                let db = crate::cutover::unfence(&config)
                    .await
                    .context("unfence stopped")?;
                println!("source database {db} is writable again (for new sessions)");
                return Ok(ExitCode::SUCCESS);
            }
            let report = crate::cutover::run(&config, &args.options())
                .await
                .context(
                    "cutover stopped (fix the cause and re-run: every step is safe to repeat)",
                )?;
            if args.reverse {
                return reverse::prepare_after(&forward, &report, args.json).await;
            }
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

/// The reverse direction's configuration, for the commands that have one.
fn reverse_config(command: &Command, forward: &Config) -> anyhow::Result<Config> {
    let refused = match command {
        Command::Run(_)
        | Command::Stream(_)
        | Command::Verify(_)
        | Command::Status(_)
        | Command::Cleanup(_) => None,
        Command::Cutover(args) if args.reverse => Some("`--reverse cutover --reverse`: the way back has no way back of its own; `walrelay --reverse cutover --fence` switches back"),
        Command::Cutover(_) => None,
        Command::Snapshot(_) => Some("`--reverse snapshot`: the reverse direction starts where the forward cutover left the target, not from a snapshot; run `walrelay cutover --fence --reverse`"),
        Command::Check(_) => Some("`--reverse check`: check the forward direction (`walrelay check`); `walrelay cutover --fence --reverse` checks what the way back needs"),
        Command::Demo(_) => Some("`--reverse demo`: the demo shows the way back by itself; run `walrelay demo`"),
    };
    if let Some(why) = refused {
        anyhow::bail!("{why}");
    }
    Ok(crate::reverse::config(forward)?)
}

/// The flags (and `WALRELAY_*` variables) over the `--config` file.
fn resolve_config(global: &GlobalArgs) -> anyhow::Result<Config> {
    let file = match &global.config {
        Some(path) => Settings::load(path)
            .with_context(|| format!("reading config file {}", path.display()))?,
        None => Settings::default(),
    };
    let flags = Settings {
        source: global.source.clone(),
        target: global.target.clone(),
        slot: global.slot.clone(),
        publication: global.publication.clone(),
        tables: global.tables.clone(),
        exclude_tables: global.exclude_tables.clone(),
        pg_bindir: global.pg_bindir.clone(),
        map: global.map.clone().map(crate::map::MapSetting::Path),
        allow_unfiltered_stream: global.allow_unfiltered_stream,
    };
    Ok(Config::resolve(flags, file, global.config.as_deref())?)
}

/// Prints the error that stops the command in the chosen log format: in
/// JSON mode a log line of the `tracing` JSON shape, so that a collector
/// parsing every stderr line also gets the one saying why it stopped.
/// Written directly, not through `tracing`, so no `WALRELAY_LOG` filter can
/// hide it.
fn fatal(format: LogFormat, text: &str) {
    match format {
        LogFormat::Text => eprintln!("error: {text}"),
        LogFormat::Json => eprintln!("{}", fatal_json(text, std::time::SystemTime::now())),
    }
}

fn fatal_json(text: &str, at: std::time::SystemTime) -> serde_json::Value {
    serde_json::json!({
        "timestamp": humantime::format_rfc3339_micros(at).to_string(),
        "level": "ERROR",
        "fields": { "message": "walrelay stopped", "error": text },
        "target": "walrelay",
    })
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
