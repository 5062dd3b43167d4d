//! When a session ends: on a stop request, at `--stop-after`, or once
//! caught up to a position (`--exit-when-caught-up`). From the first of
//! these on, the open batch has [`STOP_GRACE`] to reach its commit; then it
//! is abandoned (closing the session rolls it back, and the checkpoint
//! still names the last committed batch).

use std::time::{Duration, Instant};

use tokio::sync::watch;
use walrelay_proto::Lsn;

/// How long the open batch may take to commit after a stop.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(10);

/// The stop conditions of one session, and its grace period once stopping.
pub(crate) struct StopPolicy<'a> {
    requested: &'a mut watch::Receiver<bool>,
    stop_after: Option<Instant>,
    catch_up_to: Option<Lsn>,
    give_up: Option<Instant>,
}

impl<'a> StopPolicy<'a> {
    pub(crate) fn new(
        requested: &'a mut watch::Receiver<bool>,
        stop_after: Option<Instant>,
        catch_up_to: Option<Lsn>,
    ) -> Self {
        StopPolicy {
            requested,
            stop_after,
            catch_up_to,
            give_up: None,
        }
    }

    /// When stopping, the end of the grace period (started by the first call
    /// that finds a stop condition).
    pub(crate) fn stopping(&mut self, committed: Lsn) -> Option<Instant> {
        let stop = *self.requested.borrow()
            || self.stop_after.is_some_and(|d| Instant::now() >= d)
            || self.catch_up_to.is_some_and(|l| committed >= l);
        if stop && self.give_up.is_none() {
            self.give_up = Some(Instant::now() + STOP_GRACE);
        }
        self.give_up.filter(|_| stop)
    }

    /// The `--stop-after` deadline, while it is still to come (once
    /// stopping, the grace period is the only deadline).
    pub(crate) fn stop_after(&self) -> Option<Instant> {
        self.stop_after.filter(|_| self.give_up.is_none())
    }

    /// The end of the grace period, once stopping.
    pub(crate) fn grace_ends(&self) -> Option<Instant> {
        self.give_up
    }

    /// Resolves when a stop request arrives; never once stopping.
    pub(crate) async fn requested(&mut self) {
        if self.give_up.is_some() || self.requested.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// While the target works on an event: resolves when the grace period
    /// is over, starting it when a stop request arrives meanwhile.
    pub(crate) async fn grace_during_work(&mut self) {
        match self.give_up {
            Some(at) => tokio::time::sleep_until(at.into()).await,
            None => {
                if self.requested.wait_for(|stop| *stop).await.is_err() {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(STOP_GRACE).await;
            }
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
pub(crate) async fn at(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The earlier of two optional deadlines.
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
