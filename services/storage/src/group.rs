//! The face a group's applied state shows to the server: reads under a lock, the applied
//! revision as a watch channel, and a broadcast of changes for watchers.

use crate::kv::KvState;
use crate::persist::HistoryReader;
use meridian_types::{Event, GroupId};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// Most applied batches buffered for slow watchers; a watcher that falls further behind
/// re-reads the durable history instead.
pub const NOTICE_BUFFER_MAX: usize = 4096;

/// What watchers hear after each apply.
#[derive(Debug)]
pub enum Notice {
    /// Entries up to `revision` were applied and caused `events` (possibly none), changing
    /// these leases and these locks' queues.
    Applied {
        revision: u64,
        events: Vec<Event>,
        leases: Vec<u64>,
        locks: Vec<String>,
    },
    /// A snapshot replaced the state: history before `compacted + 1` is gone.
    Reset { compacted: u64 },
}

pub struct GroupShared {
    pub group: GroupId,
    state: RwLock<KvState>,
    applied: watch::Sender<u64>,
    notices: broadcast::Sender<Arc<Notice>>,
    compacted: AtomicU64,
    history: Arc<dyn HistoryReader>,
    steps: Arc<crate::steps::Steps>,
}

impl GroupShared {
    pub(crate) fn new(
        group: GroupId,
        state: KvState,
        applied: u64,
        compacted: u64,
        history: Arc<dyn HistoryReader>,
    ) -> Arc<Self> {
        Arc::new(Self {
            group,
            state: RwLock::new(state),
            applied: watch::channel(applied).0,
            notices: broadcast::channel(NOTICE_BUFFER_MAX).0,
            compacted: AtomicU64::new(compacted),
            history,
            steps: Arc::default(),
        })
    }

    /// When this node appended and applied the group's recent entries (for tracing).
    pub fn steps(&self) -> &Arc<crate::steps::Steps> {
        &self.steps
    }

    /// A read view of the keys. Hold it briefly: apply waits for it.
    pub fn read(&self) -> RwLockReadGuard<'_, KvState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn write(&self) -> std::sync::RwLockWriteGuard<'_, KvState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Highest revision (log index) this replica has applied.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Follows the applied revision (on a leader: the commit index, moments later).
    pub fn applied_watch(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Revisions up to and including this one are no longer in the watch history.
    pub fn compacted(&self) -> u64 {
        self.compacted.load(Ordering::Acquire)
    }

    /// Waits until this replica has applied `revision`, at most `timeout`. Returns the applied
    /// revision, or `None` on timeout.
    pub async fn wait_applied(&self, revision: u64, timeout: Duration) -> Option<u64> {
        let mut rx = self.applied.subscribe();
        let res = tokio::time::timeout(timeout, rx.wait_for(|a| *a >= revision)).await;
        match res {
            Ok(Ok(v)) => Some(*v),
            _ => None,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Notice>> {
        self.notices.subscribe()
    }

    /// Durable history: events with revision >= `from`, at most `max` (whole revisions only).
    pub fn history_from(&self, from: u64, max: usize) -> crate::Result<Vec<Event>> {
        self.history.events_from(from, max)
    }

    pub(crate) fn publish_applied(
        &self,
        revision: u64,
        events: Vec<Event>,
        leases: Vec<u64>,
        locks: Vec<String>,
    ) {
        self.applied.send_replace(revision);
        let _ = self.notices.send(Arc::new(Notice::Applied {
            revision,
            events,
            leases,
            locks,
        }));
    }

    pub(crate) fn set_compacted(&self, compacted: u64) {
        self.compacted.store(compacted, Ordering::Release);
    }

    pub(crate) fn publish_reset(&self, revision: u64, compacted: u64) {
        self.set_compacted(compacted);
        self.applied.send_replace(revision);
        let _ = self.notices.send(Arc::new(Notice::Reset { compacted }));
    }
}
