//! What a state machine needs from durable storage. The fjall store writes to disk; the
//! in-memory store (deterministic simulation) keeps it in memory. Both serve the same
//! [`crate::StateMachine`].

use crate::kv::KvState;
use crate::locks::LockState;
use crate::Result;
use meridian_types::hlc::Stamps;
use meridian_types::raft::{LogId, SnapshotMeta, StoredMembership};
use meridian_types::{Event, LeaseRecord};

/// Everything one `apply` call changed, written atomically.
pub struct ApplyCommit<'a> {
    pub last_applied: LogId,
    pub membership: &'a StoredMembership,
    pub sequence: u64,
    pub events: &'a [Event],
    /// Drop history events with revision <= this.
    pub compact_to: Option<u64>,
    /// Leases this commit changed: the new record, or `None` when the lease ended.
    pub leases: &'a [(u64, Option<LeaseRecord>)],
    /// Lock queues this commit changed: the new queue, or `None` when it emptied.
    pub locks: &'a [(String, Option<LockState>)],
    /// The group's timestamps after this commit (docs/closed-timestamps.md); a store loads
    /// them into `KvState::stamps`.
    pub stamps: Stamps,
}

/// The state a store had when it was opened.
#[derive(Default)]
pub struct Loaded {
    pub kv: KvState,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub compacted: u64,
    pub snapshot: Option<(SnapshotMeta, Vec<u8>)>,
}

pub trait HistoryReader: Send + Sync + 'static {
    /// Events with revision >= `from`, at most about `max` (a revision is never split).
    fn events_from(&self, from: u64, max: usize) -> Result<Vec<Event>>;
}

/// Runs once a commit is readable from the store.
pub type OnWritten = Box<dyn FnOnce() + Send>;

/// The part of a write that waits (for a queue slot, or for durability).
pub type Pending = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;

pub trait SmPersist: HistoryReader {
    fn load(&self) -> Result<Loaded>;
    /// Encodes `c` now and returns the submission; commits are applied in submission order,
    /// and `on_written` runs once this one is readable (history included).
    fn commit(&self, c: &ApplyCommit<'_>, on_written: OnWritten) -> Result<Pending>;
    fn save_snapshot(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<()>;
    /// Replaces the whole state with a snapshot's, atomically, after every earlier commit;
    /// history is dropped. The returned future ends once the new state is durable.
    /// `kv.stamps` are the snapshot's timestamps.
    fn install(&self, kv: &KvState, meta: &SnapshotMeta, data: &[u8]) -> Result<Pending>;
}
