//! The router's coalesced syncs: per group, the rounds waiting for a read index (the decisions
//! are `meridian_router::Rounds`), how many are in flight, and the counters `status` shows. The
//! router (`router.rs`) drives them; this module holds only their state, so the node's context
//! can own it without depending on the router.

use meridian_router::Rounds;
use meridian_types::metrics::{Histogram, HistogramSnapshot};
use meridian_types::GroupId;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Most reads waiting for one group's sync at one router; more are refused at once.
pub(crate) const SYNC_WAITERS_MAX: usize = 65_536;
/// Most sync rounds of one group in flight from one router at once (rounds overlap when they
/// are long: see `Rounds::spacing`).
pub(crate) const SYNC_ROUNDS_IN_FLIGHT_MAX: usize = 48;

/// A read waiting for a sync round: where to answer, and its span (the round is traced in the
/// first waiter's trace, linked from the others').
pub(crate) type SyncReply = (
    oneshot::Sender<std::result::Result<u64, String>>,
    tracing::Span,
);

/// One group's coalesced syncs at this router.
pub(crate) struct GroupSync {
    pub(crate) rounds: Mutex<Rounds<SyncReply>>,
    pub(crate) in_flight: Arc<tokio::sync::Semaphore>,
    pub(crate) synced_reads: AtomicU64,
    /// How long each completed round took (sent to the leader's read index answered).
    pub(crate) round_latency: Histogram,
}

/// Coalesced syncs of every group, and their counters.
#[derive(Default)]
pub struct Syncers {
    groups: Mutex<BTreeMap<GroupId, Arc<GroupSync>>>,
}

impl Syncers {
    pub(crate) fn get(&self, group: GroupId) -> Arc<GroupSync> {
        self.groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(group)
            .or_insert_with(|| {
                Arc::new(GroupSync {
                    rounds: Mutex::new(Rounds::new(SYNC_WAITERS_MAX, SYNC_WAITERS_MAX)),
                    in_flight: Arc::new(tokio::sync::Semaphore::new(SYNC_ROUNDS_IN_FLIGHT_MAX)),
                    synced_reads: AtomicU64::new(0),
                    round_latency: Histogram::default(),
                })
            })
            .clone()
    }

    /// (syncs sent, reads served after a sync) for `group`.
    pub fn counters(&self, group: GroupId) -> (u64, u64) {
        let s = self.get(group);
        let sent = s
            .rounds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rounds_started();
        (sent, s.synced_reads.load(Ordering::Relaxed))
    }

    /// The durations of `group`'s completed sync rounds from this router.
    pub fn round_latency(&self, group: GroupId) -> HistogramSnapshot {
        self.get(group).round_latency.snapshot()
    }
}
