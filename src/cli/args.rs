//! The commands' flags, and the stages' options built from them: the
//! stages know nothing of clap.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::demo::DemoOptions;
use crate::cutover::{CutoverOptions, FinalVerify};
use crate::snapshot::{SchemaMode, SnapshotOptions};
use crate::spool::SpoolOptions;
use crate::stream::StreamOptions;
use crate::verify::VerifyOptions;

/// `walrelay cutover`.
#[derive(Debug, Args, Clone)]
pub struct CutoverArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Start only once the target is at most this many bytes behind.
    #[arg(long, default_value_t = 16 << 20, allow_negative_numbers = true)]
    pub max_lag_bytes: u64,
    /// Start only once the target is at most this many seconds behind.
    #[arg(long, default_value_t = 10.0)]
    pub max_lag_seconds: f64,
    /// How long to wait for the lag gate, and then for the target to apply the marker.
    #[arg(long, default_value = "60s", value_parser = crate::config::parse_duration, allow_negative_numbers = true)]
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
    /// With --fence: once safe, prepare the way back (a slot and publication on the target,
    /// walrelay's state on the old source) before the application writes to the target.
    #[arg(long, requires = "fence", conflicts_with = "fence_list_only")]
    pub reverse: bool,
    /// The final verification after the fence: `touched` compares the rows changed since
    /// a clean pass run before the fence; `full` compares every row after it.
    #[arg(long, value_enum, default_value_t = FinalVerifyArg::Touched)]
    pub final_verify: FinalVerifyArg,
    /// Changed keys held for the final verification at most (memory bound, about 100 bytes
    /// per key); past it the table with the most changed keys is compared whole.
    #[arg(long, default_value_t = 500_000, allow_negative_numbers = true)]
    pub max_touched_keys: usize,
}

/// `walrelay demo`.
#[derive(Debug, Args, Clone)]
pub struct DemoArgs {
    /// At most this long the sample application writes (the cutover's fence ends it earlier).
    #[arg(long, default_value = "20s", value_parser = crate::config::parse_duration, allow_negative_numbers = true)]
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
    #[arg(long, default_value_t = 10_000, allow_negative_numbers = true)]
    pub chunk_rows: u64,
    /// Re-checks of a differing chunk or key before it is decided.
    #[arg(long, default_value_t = 5, allow_negative_numbers = true)]
    pub retries: u32,
    /// Hash at most this many source rows per second (default: unthrottled).
    #[arg(long, allow_negative_numbers = true)]
    pub max_rows_per_sec: Option<u64>,
    /// How long to wait for the target to apply past a source position.
    #[arg(long, default_value = "30s", value_parser = crate::config::parse_duration, allow_negative_numbers = true)]
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
    /// Where the spool is [default: the directory the target's state records].
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<std::path::PathBuf>,
}

/// `walrelay cleanup`.
#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Really drop the slot, the publication, the slot's spool and the target's walrelay schema.
    #[arg(long)]
    pub yes: bool,
    /// Where the spool is [default: the directory the target's state records].
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<std::path::PathBuf>,
}

/// `walrelay snapshot`.
#[derive(Debug, Args, Clone)]
pub struct SnapshotArgs {
    /// Copy workers (connections to each side).
    #[arg(long, short = 'j', default_value_t = 4, allow_negative_numbers = true, value_parser = clap::builder::RangedI64ValueParser::<usize>::new().range(1..))]
    pub jobs: usize,
    /// `copy`: create the schema on the target from pg_dump; `skip`: the target already has it.
    #[arg(long, value_enum, default_value_t = SchemaArg::Copy)]
    pub schema: SchemaArg,
    /// Keep owners and grants of the source objects (default: the target role owns everything).
    #[arg(long)]
    pub keep_owners: bool,
    /// Heap pages (8 kB) per copy chunk: large tables are split into ctid ranges of this size.
    #[arg(long, default_value_t = 16384, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..))]
    pub chunk_pages: u32,
    #[command(flatten)]
    pub spool: SpoolArgs,
}

/// The change-stream spool (`snapshot`, `stream`, `run`).
#[derive(Debug, Args, Clone)]
pub struct SpoolArgs {
    /// Spool the change stream here while the snapshot copies (one subdirectory per slot), so
    /// the slot holds no WAL meanwhile (sources with max_slot_wal_keep_size); `stream` applies
    /// it before going live. Keep it on a persistent volume: a resumed run needs the same one.
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<std::path::PathBuf>,
    /// At this size the spool stops reading the slot (the source holds WAL again, nothing is
    /// dropped). Bytes, or with a unit: 500MB, 20GB.
    #[arg(long, default_value = "100GB", value_parser = parse_bytes)]
    pub spool_max_bytes: u64,
}

impl SpoolArgs {
    pub fn options(&self) -> Option<SpoolOptions> {
        self.spool_dir.as_ref().map(|dir| SpoolOptions {
            dir: dir.clone(),
            max_bytes: self.spool_max_bytes,
            // Several segments per spool, so applied ones free disk early.
            segment_bytes: (self.spool_max_bytes / 8).clamp(64 << 10, 64 << 20),
        })
    }
}

/// A size: bare bytes, or a number with kB, MB, GB or TB (1024-based, as
/// PostgreSQL's memory units).
fn parse_bytes(value: &str) -> Result<u64, String> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("expected a size such as 500MB or 20GB, got {value:?}"))?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "kB" | "KB" => 10,
        "MB" => 20,
        "GB" => 30,
        "TB" => 40,
        other => {
            return Err(format!(
                "unknown size unit {other:?}: use B, kB, MB, GB or TB"
            ))
        }
    };
    number
        .checked_mul(1 << shift)
        .filter(|b| *b > 0)
        .ok_or_else(|| format!("size {value:?} is zero or too large"))
}

/// `walrelay stream`: its flags and the spool's.
#[derive(Debug, Args, Clone)]
pub struct StreamCommandArgs {
    #[command(flatten)]
    pub stream: StreamArgs,
    #[command(flatten)]
    pub spool: SpoolArgs,
}

impl StreamCommandArgs {
    pub fn options(&self) -> StreamOptions {
        StreamOptions {
            spool: self.spool.options(),
            ..self.stream.options()
        }
    }
}

/// `walrelay stream`.
#[derive(Debug, Args, Clone)]
pub struct StreamArgs {
    /// A target transaction holds at most this many source changes (a larger
    /// source transaction is applied whole, as it arrives).
    #[arg(long, default_value_t = 10_000, allow_negative_numbers = true)]
    pub batch_rows: usize,
    /// A target transaction holds at most this many bytes of change data.
    #[arg(long, default_value_t = 16 << 20, allow_negative_numbers = true)]
    pub batch_bytes: usize,
    /// A batch commits at the latest this long after its first change (it
    /// commits at once when nothing more has been received).
    #[arg(long, default_value = "100ms", value_parser = crate::config::parse_duration, allow_negative_numbers = true)]
    pub batch_delay: Duration,
    /// How often a heartbeat is written into the source WAL (keeps lag measurable when idle).
    #[arg(long, default_value = "10s", value_parser = crate::config::parse_duration, allow_negative_numbers = true)]
    pub heartbeat_interval: Duration,
    /// Add a column the source gained to the target instead of stopping.
    #[arg(long)]
    pub auto_add_columns: bool,
    /// What to do with a schema change on the source (captured by walrelay's event trigger):
    /// `follow` applies it on the target, `stop` stops the stream naming the statement, `off`
    /// installs no trigger. Default: follow where the trigger could be installed (it needs a
    /// superuser, Supabase's supautils or RDS's rds_superuser), else only what Relation messages
    /// show is followed (a source column the target lacks stops the stream).
    #[arg(long, value_enum)]
    pub ddl: Option<DdlArg>,
    /// How often the source's catalog is checked for tables it gained that match the selection
    /// (they are published, copied from a consistent point, then streamed).
    #[arg(long, default_value = "10s", value_parser = crate::config::parse_duration, allow_negative_numbers = true)]
    pub new_table_check: Duration,
    /// Stop after this many seconds (tests and benchmarks); default: until SIGINT/SIGTERM.
    #[arg(long, value_parser = crate::config::parse_duration, allow_negative_numbers = true, hide = true)]
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
    #[arg(long, default_value = "127.0.0.1:9187", value_name = "HOST:PORT", value_parser = parse_http_addr)]
    pub http: SocketAddr,
    /// Token POST /cutover must carry as `Authorization: Bearer <token>`; required when --http
    /// is not a loopback address.
    #[arg(long, env = "WALRELAY_HTTP_TOKEN", hide_env_values = true)]
    pub http_token: Option<crate::http::HttpToken>,
    /// A verification pass this often while streaming (0s: never).
    #[arg(long, default_value = "1h", value_parser = crate::config::parse_duration, allow_negative_numbers = true)]
    pub verify_interval: Duration,
    /// Source rows hashed per second at most by those passes, so they never hurt the source.
    #[arg(long, default_value_t = 50_000, allow_negative_numbers = true)]
    pub verify_max_rows_per_sec: u64,
}

/// `--ddl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DdlArg {
    Stop,
    Follow,
    Off,
}

/// How the target's schema is prepared (`--schema`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaArg {
    Copy,
    Skip,
}

/// What the final verification compares (`--final-verify`); the variants'
/// docs are the possible values' help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FinalVerifyArg {
    /// A full pass before the fence, then only the rows changed since it
    /// began: the fenced window follows the write rate, not the data size.
    Touched,
    /// Every row of every table after the fence (the window grows with the
    /// data: about a minute per few million rows).
    Full,
}

impl CutoverArgs {
    pub fn options(&self) -> CutoverOptions {
        CutoverOptions {
            max_lag_bytes: self.max_lag_bytes,
            max_lag_seconds: self.max_lag_seconds,
            timeout: self.timeout,
            fence: self.fence,
            fence_roles: self.fence_roles.clone(),
            fence_list_only: self.fence_list_only,
            final_verify: match self.final_verify {
                FinalVerifyArg::Touched => FinalVerify::Touched,
                FinalVerifyArg::Full => FinalVerify::Full,
            },
            max_touched_keys: self.max_touched_keys,
        }
    }
}

impl DemoArgs {
    pub(crate) fn options(&self) -> DemoOptions {
        DemoOptions {
            write_for: self.write_for,
        }
    }
}

impl VerifyArgs {
    pub fn options(&self) -> VerifyOptions {
        VerifyOptions {
            chunk_rows: self.chunk_rows,
            retries: self.retries,
            max_rows_per_sec: self.max_rows_per_sec,
            repair: self.repair,
            catchup_timeout: self.catchup_timeout,
        }
    }
}

impl SnapshotArgs {
    pub fn options(&self) -> SnapshotOptions {
        SnapshotOptions {
            jobs: self.jobs,
            schema: match self.schema {
                SchemaArg::Copy => SchemaMode::Copy,
                SchemaArg::Skip => SchemaMode::Skip,
            },
            keep_owners: self.keep_owners,
            chunk_pages: self.chunk_pages,
            spool: self.spool.options(),
        }
    }
}

impl StreamArgs {
    pub fn options(&self) -> StreamOptions {
        StreamOptions {
            batch_rows: self.batch_rows,
            batch_bytes: self.batch_bytes,
            batch_delay: self.batch_delay,
            heartbeat_interval: self.heartbeat_interval,
            auto_add_columns: self.auto_add_columns,
            stop_after: self.stop_after,
            exit_when_caught_up: self.exit_when_caught_up,
            spool: None,
            ddl: self.ddl.map(|d| match d {
                DdlArg::Stop => crate::ddl::DdlMode::Stop,
                DdlArg::Follow => crate::ddl::DdlMode::Follow,
                DdlArg::Off => crate::ddl::DdlMode::Off,
            }),
            new_table_interval: self.new_table_check,
        }
    }
}

/// `--http`: an address (`127.0.0.1:9187`, `[::1]:9187`) or a host name
/// and port (`localhost:9187`), resolved once here, so the exposure check
/// (`crate::http::check_exposure`) judges the address actually bound, never
/// the name. A name with several addresses binds its first IPv4 one: that is
/// where `localhost` clients and scrapers look first.
fn parse_http_addr(value: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let shape =
        || "expected host:port, e.g. 127.0.0.1:9187, localhost:9187 or [::1]:9187".to_string();
    let (host, port) = value.rsplit_once(':').ok_or_else(shape)?;
    if host.is_empty() {
        return Err(shape());
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("the port '{port}' is not a number from 0 to 65535"))?;
    let mut addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve host '{host}': {e}"))?
        .collect();
    addrs.sort_by_key(|a| !a.is_ipv4());
    addrs
        .into_iter()
        .next()
        .ok_or_else(|| format!("cannot resolve host '{host}': it has no address"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::parse_bytes;
    use crate::cli::{Cli, Command};

    fn cli(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_args_from([&["walrelay"], args].concat())
    }

    #[test]
    fn every_duration_flag_takes_bare_seconds() {
        let Command::Cutover(args) = cli(&["cutover", "--timeout", "120"]).unwrap().command else {
            panic!("cutover");
        };
        assert_eq!(args.timeout, Duration::from_secs(120));
        let Command::Verify(args) = cli(&["verify", "--catchup-timeout", "5"]).unwrap().command
        else {
            panic!("verify");
        };
        assert_eq!(args.catchup_timeout, Duration::from_secs(5));
        let run = ["run", "--verify-interval", "0", "--batch-delay", "0.25"];
        let Command::Run(args) = cli(&run).unwrap().command else {
            panic!("run");
        };
        assert_eq!(args.verify_interval, Duration::ZERO);
        assert_eq!(args.stream.batch_delay, Duration::from_millis(250));
        let err = cli(&["cutover", "--timeout", "-5"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid value"), "{err}");
    }

    #[test]
    fn spool_flags_reach_snapshot_stream_and_run() {
        let run = ["run", "--spool-dir", "/v/spool", "--spool-max-bytes", "2GB"];
        let Command::Run(args) = cli(&run).unwrap().command else {
            panic!("run");
        };
        let spool = args.snapshot.spool.options().expect("spool options");
        assert_eq!(spool.dir, std::path::PathBuf::from("/v/spool"));
        assert_eq!(spool.max_bytes, 2 << 30);
        assert_eq!(spool.segment_bytes, 64 << 20);
        let Command::Stream(args) = cli(&["stream", "--spool-dir", "/v"]).unwrap().command else {
            panic!("stream");
        };
        assert!(args.options().spool.is_some());
        let Command::Snapshot(args) = cli(&["snapshot"]).unwrap().command else {
            panic!("snapshot");
        };
        assert!(args.options().spool.is_none());
    }

    #[test]
    fn sizes_take_bytes_or_units_and_refuse_nonsense() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("500MB"), Ok(500 << 20));
        assert_eq!(parse_bytes("1TB"), Ok(1 << 40));
        for bad in ["", "0", "12XB", "-1GB", "1.5GB", "99999999999999TB"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn zero_or_negative_jobs_and_chunk_pages_are_invalid_values() {
        for args in [
            ["snapshot", "--jobs", "0"],
            ["snapshot", "--jobs", "-1"],
            ["snapshot", "--chunk-pages", "0"],
            ["run", "--chunk-pages", "-3"],
            ["verify", "--chunk-rows", "-1"],
        ] {
            let err = cli(&args).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{args:?}: {err}"
            );
            let text = err.to_string();
            assert!(
                text.contains(&format!("invalid value '{}'", args[2])),
                "{text}"
            );
        }
        assert!(cli(&["snapshot", "--jobs", "1", "--chunk-pages", "1"]).is_ok());
    }
    #[test]
    fn http_takes_a_host_name_and_port_resolved_to_its_address() {
        let run = |http: &str| match cli(&["run", "--http", http]).map(|c| c.command) {
            Ok(Command::Run(args)) => Ok(args.http),
            Ok(_) => panic!("run"),
            Err(err) => Err(err),
        };
        let local = run("localhost:9187").expect("localhost:9187");
        assert!(local.ip().is_loopback(), "{local}");
        assert_eq!(local.port(), 9187);
        assert!(crate::http::check_exposure(local, None).is_ok());
        assert_eq!(run("127.0.0.1:9000").unwrap().to_string(), "127.0.0.1:9000");
        assert_eq!(run("[::1]:9187").unwrap().to_string(), "[::1]:9187");
        let open = run("0.0.0.0:9187").unwrap();
        assert!(crate::http::check_exposure(open, None).is_err());
        for (bad, says) in [
            ("localhost", "host:port"),
            ("localhost:metrics", "port"),
            ("localhost:70000", "port"),
            (":9187", "host:port"),
            ("no-such-host.invalid:9187", "resolve"),
        ] {
            let err = run(bad).expect_err(bad);
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{bad}: {err}"
            );
            let text = err.to_string();
            assert!(
                text.contains(bad) && text.contains(says),
                "{bad}: the message should name the value and say {says:?}: {text}"
            );
        }
    }

    fn help_of(subcommand: &str) -> String {
        let mut command = <Cli as clap::CommandFactory>::command();
        command.build();
        command
            .find_subcommand_mut(subcommand)
            .unwrap_or_else(|| panic!("no subcommand {subcommand}"))
            .render_help()
            .to_string()
    }

    #[test]
    fn command_help_lists_its_own_options_before_the_global_ones() {
        for (subcommand, own) in [
            ("snapshot", "--jobs"),
            ("snapshot", "--chunk-pages"),
            ("verify", "--catchup-timeout"),
            ("cutover", "--max-touched-keys"),
        ] {
            let help = help_of(subcommand);
            let at = |text: &str| {
                help.find(text)
                    .unwrap_or_else(|| panic!("{subcommand} --help lacks {text}:\n{help}"))
            };
            let heading = at("Global options:");
            assert!(
                at(own) < heading,
                "{own} is not before the global options:\n{help}"
            );
            for global in ["--source", "--target", "--config", "--slot", "--table"] {
                assert!(
                    at(global) > heading,
                    "{global} is not under the global options:\n{help}"
                );
            }
        }
    }

    #[test]
    fn demo_refuses_the_connection_and_table_flags_it_does_not_use() {
        for flags in [
            &["--source", "postgres://u@h/db"][..],
            &["--target", "postgres://u@h/db"],
            &["--config", "w.toml"],
            &["--slot", "s"],
            &["--publication", "p"],
            &["--table", "public.*"],
            &["--exclude-table", "public.x"],
        ] {
            for args in [
                [&["demo"][..], flags].concat(),
                [flags, &["demo"][..]].concat(),
            ] {
                let err = cli(&args).expect_err(&format!("{args:?} accepted"));
                let text = err.to_string();
                assert!(
                    text.contains("demo starts its own clusters") && text.contains(flags[0]),
                    "{args:?}: {text}"
                );
            }
        }
        assert!(cli(&["demo", "--write-for", "5", "--log-format", "json"]).is_ok());
    }
}
