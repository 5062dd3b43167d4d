//! The way back on the command line: `cutover --fence --reverse` (the
//! forward cutover, then the reverse direction prepared) and `--reverse
//! cutover` (the switch back).

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;

use super::CutoverArgs;
use crate::config::Config;
use crate::cutover::CutoverReport;

/// After the forward cutover of `cutover --fence --reverse`: the reverse
/// direction is prepared only once the cutover is safe (the target holds
/// every source change, the application has not written to it).
pub(super) async fn prepare_after(
    forward: &Config,
    report: &CutoverReport,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let prepared = match report.safe {
        true => Some(crate::reverse::prepare(forward).await),
        false => None,
    };
    // The forward report is printed whatever the preparation did.
    if json {
        let mut value = serde_json::to_value(report)?;
        value["reverse"] = match &prepared {
            Some(Ok(p)) => serde_json::json!({
                "prepared": true,
                "slot": p.slot,
                "publication": p.publication,
                "consistent_lsn": p.consistent_lsn.to_string(),
                "created_slot": p.created_slot,
                "tables": p.tables,
                "sequences": p.sequences,
            }),
            Some(Err(err)) => serde_json::json!({ "prepared": false, "error": err.to_string() }),
            None => serde_json::json!({ "prepared": false }),
        };
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", report.render());
        match &prepared {
            Some(Ok(p)) => print!("{}", next_commands(p)),
            Some(Err(_)) => println!("way back:            not prepared (see the error below)"),
            None => println!(
                "way back:            not prepared (the cutover is not safe, see above); fix the cause and re-run `walrelay cutover --fence --reverse`"
            ),
        }
    }
    match prepared {
        Some(Ok(_)) => Ok(ExitCode::SUCCESS),
        Some(Err(err)) => Err(anyhow::Error::new(err).context(
            "preparing the way back (the forward cutover above is done and safe; fix the cause and re-run `walrelay cutover --fence --reverse`: every step is safe to repeat)",
        )),
        None => Ok(ExitCode::FAILURE),
    }
}

fn next_commands(p: &crate::reverse::Prepared) -> String {
    let slot = if p.created_slot {
        "created"
    } else {
        "kept (prepared before)"
    };
    format!(
        "way back:            prepared: slot {} {slot} on the target at {}, publication {} ({} tables), \
         walrelay's state on the old source; {} sequences are copied back at the switch back\n\
         next (same --source/--target/--slot as here):\n  \
         1. move the application to the target\n  \
         2. stream its writes back into the old source (which stays fenced for the application):\n       \
            walrelay --reverse run     (or: walrelay --reverse stream)\n  \
         3. to switch back:  walrelay --reverse cutover --fence\n     \
            once the move is final, drop the way back:  walrelay --reverse cleanup --yes\n",
        p.slot, p.consistent_lsn, p.publication, p.tables, p.sequences
    )
}

/// `walrelay --reverse cutover`: the cutover of the reverse direction
/// (fencing the target), and with `--fence`, once it is safe, the old
/// source's fence lifted: "safe to switch back".
pub(super) async fn switch_back(
    forward: &Config,
    reverse: &Config,
    args: &CutoverArgs,
) -> anyhow::Result<ExitCode> {
    if args.unfence {
        let db = crate::cutover::unfence(reverse)
            .await
            .context("unfence stopped")?;
        println!("target database {db} is writable again (for new sessions)");
        return Ok(ExitCode::SUCCESS);
    }
    // Opened before the target is fenced: no connection startup inside the
    // write freeze.
    let old_source = crate::cutover::unfence_session(forward)
        .await
        .context("connecting to the old source")?;
    let report = crate::cutover::run(reverse, &args.options())
        .await
        .context("switch back stopped (fix the cause and re-run: every step is safe to repeat)")?;
    let mut lifted = None;
    if report.safe && args.fence && !args.fence_list_only {
        let started = Instant::now();
        let db = crate::cutover::unfence_on(&old_source)
            .await
            .context("the switch back is safe but lifting the old source's fence failed (run `walrelay cutover --unfence`)")?;
        let freeze =
            report.fence_to_verdict_seconds.unwrap_or(0.0) + started.elapsed().as_secs_f64();
        lifted = Some((db, freeze));
    }
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["switched_back"] = serde_json::json!(lifted.is_some());
        value["write_freeze_seconds"] = serde_json::json!(lifted.as_ref().map(|l| l.1));
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", report.render());
        println!("{}", verdict(&report, args, lifted.as_ref()));
    }
    Ok(if lifted.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn verdict(report: &CutoverReport, args: &CutoverArgs, lifted: Option<&(String, f64)>) -> String {
    match lifted {
        Some((db, freeze)) => format!(
            "switch back:         safe to switch back: the old source database {db} is writable again; \
             write freeze {freeze:.3} s (target fenced until the old source was writable); \
             move the application back to the old source"
        ),
        None if !report.safe => "switch back:         NOT safe to switch back (see the reasons above): the old source stays fenced; the target reopens with `walrelay --reverse cutover --unfence`".into(),
        None if !args.fence || args.fence_list_only => "switch back:         not switched: only `walrelay --reverse cutover --fence` fences the target and lifts the old source's fence".into(),
        None => "switch back:         not switched".into(),
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::{reverse_config, Cli, Command};
    use crate::config::{Config, Settings};

    fn cli(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_args_from([&["walrelay"], args].concat())
    }

    fn forward() -> Config {
        let settings = Settings {
            source: Some("postgresql://u@old/s".into()),
            target: Some("postgresql://u@new/t".into()),
            ..Settings::default()
        };
        Config::resolve(settings, Settings::default(), None).unwrap()
    }

    #[test]
    fn reverse_after_cutover_prepares_and_before_the_command_runs_the_way_back() {
        let prepare = cli(&["cutover", "--fence", "--reverse"]).unwrap();
        let Command::Cutover(args) = &prepare.command else {
            panic!("cutover");
        };
        assert!(args.reverse && !prepare.reverse);
        let back = cli(&["--reverse", "cutover", "--fence"]).unwrap();
        let Command::Cutover(args) = &back.command else {
            panic!("cutover");
        };
        assert!(back.reverse && !args.reverse);
        // Preparing needs the fence; the way back's flag goes before the command.
        assert!(cli(&["cutover", "--reverse"]).is_err());
        assert!(cli(&["stream", "--reverse"]).is_err());
        for command in ["run", "stream", "verify", "status", "cleanup"] {
            assert!(cli(&["--reverse", command]).unwrap().reverse, "{command}");
        }
    }

    #[test]
    fn commands_without_a_reverse_direction_say_what_to_run_instead() {
        for (args, says) in [
            (&["--reverse", "snapshot"][..], "cutover --fence --reverse"),
            (&["--reverse", "check"], "walrelay check"),
            (
                &["--reverse", "cutover", "--fence", "--reverse"],
                "switches back",
            ),
        ] {
            let parsed = cli(args).unwrap();
            let err = reverse_config(&parsed.command, &forward()).unwrap_err();
            assert!(err.to_string().contains(says), "{args:?}: {err}");
        }
        let parsed = cli(&["--reverse", "stream"]).unwrap();
        let config = reverse_config(&parsed.command, &forward()).unwrap();
        assert_eq!(config.slot, "walrelay_reverse");
        assert_eq!(config.source.host, "new");
    }
}
