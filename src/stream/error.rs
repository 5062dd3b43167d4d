//! Why streaming stopped or paused, named for what failed, each with its
//! cause and its [`Kind`]: transient errors reconnect and resume from the
//! checkpoint, definite ones stop and tell the operator.

use walrelay_proto::Lsn;

use crate::apply::checkpoint::ResumeError;
use crate::apply::ApplyError;
use crate::pg::connect::{error_text, ConnectError};
use crate::pg::error::{self, Kind};

/// Why streaming stopped or paused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Resume(#[from] ResumeError),
    #[error("{what} on the source: {}", error_text(.source))]
    Source {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    /// A replication transport error the catalog could not explain.
    #[error("replication session: {source}")]
    Replication {
        #[source]
        source: pgwire_replication::PgWireError,
    },
    #[error("replication slot {slot} does not exist on the source: the stream cannot continue without loss; run `walrelay cleanup --yes` and migrate again from a new snapshot")]
    SlotMissing { slot: String },
    #[error("replication slot {slot} was invalidated (wal_status = lost; max_slot_wal_keep_size exceeded): the WAL it needed is gone; run `walrelay cleanup --yes` and migrate again from a new snapshot")]
    SlotLost { slot: String },
    #[error("replication slot {slot} is in use by another consumer (pid {pid}{holder}): a slot has one reader at a time; stop the other `walrelay stream`/`run` (or the process with that pid on the source), or give this one its own --slot")]
    SlotHeld {
        slot: String,
        pid: i32,
        /// `, application_name …, client …` when readable.
        holder: String,
    },
    #[error("slot {slot} is confirmed up to {confirmed} but the target has applied only up to {start}: changes in between would be skipped; if they were spooled while the snapshot copied, run with the same --spool-dir; otherwise the target can no longer be completed from this slot (migrate again from a new snapshot)")]
    SlotAhead {
        slot: String,
        confirmed: Lsn,
        start: Lsn,
    },
    #[error("publication {publication} does not exist on the source (it was dropped): the slot cannot continue without it, and recreating it does not bring back the changes made in between (pgoutput reads the publication as of each change's time); a new snapshot is needed: run `walrelay cleanup --yes`, then `walrelay snapshot`")]
    PublicationMissing { publication: String },
    #[error("the source role may not start replication (it lacks the REPLICATION attribute): ALTER ROLE … WITH REPLICATION on the source (on managed services, grant the provider's replication role)")]
    NoReplicationRole,
    #[error("undecodable pgoutput message")]
    Decode(#[source] walrelay_proto::DecodeError),
    #[error("the replication stream ended")]
    Ended,
    #[error("the replication stream stopped at a stop LSN")]
    StoppedAt,
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Spool(#[from] crate::spool::SpoolError),
    #[error(transparent)]
    Ddl(#[from] crate::ddl::DdlError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("the spool of slot {slot} is recorded at {dir} on host {host}, which this machine ({here}) cannot reach, and the slot was acknowledged past the target's checkpoint: the changes in between are only in that spool. Run where it is, or mount it here and pass its parent directory as --spool-dir")]
    SpoolElsewhere {
        slot: String,
        dir: String,
        host: String,
        here: String,
    },
}

impl StreamError {
    /// Retry after reconnecting, or stop.
    pub(crate) fn kind(&self) -> Kind {
        match self {
            StreamError::Connect(err) => err.kind(),
            StreamError::Resume(ResumeError::State(err)) => err.kind(),
            StreamError::Resume(_) => Kind::Definite,
            StreamError::Source { source, .. } => {
                if error::is_transient(source) {
                    Kind::Transient
                } else {
                    Kind::Definite
                }
            }
            StreamError::Replication { source } => replication_kind(source),
            StreamError::Ended | StreamError::StoppedAt => Kind::Transient,
            StreamError::Apply(err) => err.kind(),
            StreamError::Ddl(err) => err.kind(),
            StreamError::State(err) => err.kind(),
            StreamError::SpoolElsewhere { .. } => Kind::Definite,
            StreamError::SlotMissing { .. }
            | StreamError::SlotLost { .. }
            | StreamError::SlotHeld { .. }
            | StreamError::SlotAhead { .. }
            | StreamError::PublicationMissing { .. }
            | StreamError::NoReplicationRole
            | StreamError::Decode(_)
            | StreamError::Spool(_) => Kind::Definite,
        }
    }

    pub(crate) fn is_transient(&self) -> bool {
        self.kind() == Kind::Transient
    }

    pub(crate) fn source_sql(what: &'static str) -> impl Fn(tokio_postgres::Error) -> StreamError {
        move |source| StreamError::Source { what, source }
    }
}

/// A transport error the catalog did not explain: authentication and TLS
/// need the operator; a server error is retried (the catalog was asked
/// about the slot and publication first, see `session::diagnose`).
fn replication_kind(err: &pgwire_replication::PgWireError) -> Kind {
    use pgwire_replication::PgWireError as E;
    match err {
        E::Auth(_) | E::Tls(_) | E::MessageTooLarge { .. } => Kind::Definite,
        _ => Kind::Transient,
    }
}
