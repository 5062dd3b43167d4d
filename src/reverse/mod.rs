//! The way back (docs/ARCHITECTURE.md, The way back): after the cutover,
//! the target's changes streamed into the old source, so that switching
//! back loses none of what the application wrote meanwhile.
//!
//! The reverse direction is the same migration with the ends swapped: the
//! commands take [`config`] (source = the target, target = the old source,
//! slot and publication `<name>_reverse`), so each direction keeps its own
//! slot, publication and `walrelay` state (the forward one on the target,
//! the reverse one on the old source), and every stage works unchanged.
//! [`prepare`] sets the reverse direction up where the forward cutover
//! proved the target holds everything; the apply's loop guard
//! (`apply/loop_guard.rs`) keeps both directions from echoing each other.

mod prepare;

use crate::apply::loop_guard::REVERSE_SUFFIX;
use crate::config::Config;

pub(crate) use prepare::{prepare, Prepared};

/// Why the reverse direction cannot be set up or run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReverseError {
    #[error("{what} name {name:?} is too long for the reverse direction's {name}{REVERSE_SUFFIX}: use a {what} name of at most {max} characters", max = 63 - REVERSE_SUFFIX.len())]
    NameTooLong { what: &'static str, name: String },
    #[error(transparent)]
    Connect(#[from] crate::pg::connect::ConnectError),
    #[error("{what}: {message}")]
    Sql { what: &'static str, message: String },
    #[error(transparent)]
    Slot(#[from] crate::snapshot::slot::SlotError),
    #[error("walrelay's state on the old source: {0}")]
    State(#[from] crate::state::StateError),
    #[error("this migration has a map (--map): the way back would have to turn the target's mapped tables back into the old source's (renamed columns back, excluded and masked values restored), which walrelay does not do; the way back is only for migrations without a map")]
    Mapped,
    #[error("the target runs with wal_level = {0}: the reverse direction reads its changes through a logical slot; set wal_level = logical on the target and restart it (before the application writes to it), then run `walrelay cutover --fence --reverse` again")]
    WalLevel(String),
    #[error("replication slot {slot} exists on the target server and {whose}, not to this database: leave it alone and choose another --slot for this migration")]
    SlotElsewhere { slot: String, whose: String },
    #[error("the old source records the reverse direction of slot {slot} (walrelay.snapshot) but the target has no slot {slot}: it was dropped, so the target's writes since then cannot be streamed back; compare with `walrelay --reverse verify`, and run `walrelay --reverse cleanup --yes` before preparing the reverse direction again")]
    SlotGone { slot: String },
}

fn sql(what: &'static str) -> impl Fn(tokio_postgres::Error) -> ReverseError {
    move |err| ReverseError::Sql {
        what,
        message: crate::pg::connect::error_text(&err),
    }
}

/// The configuration of the reverse direction: the target as the source,
/// the old source as the target (its sessions exempt from the cutover's
/// fence, which stays on for the application), and the slot and
/// publication named `<name>_reverse`.
pub(crate) fn config(forward: &Config) -> Result<Config, ReverseError> {
    let name = |what: &'static str, name: &str| {
        if name.len() + REVERSE_SUFFIX.len() > 63 {
            Err(ReverseError::NameTooLong {
                what,
                name: name.to_string(),
            })
        } else {
            Ok(format!("{name}{REVERSE_SUFFIX}"))
        }
    };
    if !forward.map.is_empty() {
        return Err(ReverseError::Mapped);
    }
    let old_source = crate::cutover::unfenced_sessions(forward).source;
    Ok(Config {
        source: forward.target.clone(),
        target: old_source,
        slot: name("slot", &forward.slot)?,
        publication: name("publication", &forward.publication)?,
        selection: forward.selection.clone(),
        pg_bindir: forward.pg_bindir.clone(),
        map: crate::map::Map::default(),
        allow_unfiltered_stream: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::conninfo::ConnInfo;
    use crate::pg::selection::Selection;

    fn forward(slot: &str) -> Config {
        Config {
            source: ConnInfo::parse("postgresql://u@old/s").unwrap(),
            target: ConnInfo::parse("postgresql://u@new/t").unwrap(),
            slot: slot.into(),
            publication: "walrelay".into(),
            selection: Selection::all(),
            pg_bindir: None,
            map: crate::map::Map::default(),
            allow_unfiltered_stream: false,
        }
    }

    #[test]
    fn the_reverse_swaps_the_ends_and_names_its_own_slot() {
        let reverse = config(&forward("mig")).unwrap();
        assert_eq!(reverse.source.host, "new");
        assert_eq!(reverse.target.host, "old");
        assert_eq!(reverse.slot, "mig_reverse");
        assert_eq!(reverse.publication, "walrelay_reverse");
        // The old source stays fenced for the application, not for walrelay.
        assert_eq!(
            reverse.target.options.as_deref(),
            Some("-c default_transaction_read_only=off")
        );
        assert_eq!(reverse.source.options, None);
        // The loop guard pairs the two slots.
        assert_eq!(crate::apply::loop_guard::partner(&reverse.slot), "mig");
    }

    #[test]
    fn a_slot_name_without_room_for_the_suffix_is_refused() {
        let long = "s".repeat(60);
        let err = config(&forward(&long)).unwrap_err().to_string();
        assert!(err.contains("at most 55 characters"), "{err}");
        assert!(config(&forward(&"s".repeat(55))).is_ok());
    }
}
