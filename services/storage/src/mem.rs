//! In-memory log and state-machine persistence, for deterministic simulation. Same traits, same
//! [`crate::StateMachine`], same conformance suite as the fjall store; nothing survives a restart
//! of the process.
//!
//! On a [`crate::MemDisk`] both follow its [`DiskModel`]: appended entries and applied commits
//! are readable at once, durable (and appends acknowledged to openraft) only after the fsync
//! delay, and a machine's crash loses what was not (`crate::sim_disk`).

use crate::kv::KvState;
use crate::persist::{ApplyCommit, HistoryReader, Loaded, OnWritten, Pending, SmPersist};
use crate::sim_disk::DiskModel;
use crate::Result;
use meridian_types::raft::{Entry, LogId, SnapshotMeta, TypeConfig, Vote};
use meridian_types::Event;
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::RaftLogReader;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
struct LogInner {
    entries: BTreeMap<u64, Entry>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
    /// The disk write (sequence) that appended each entry.
    appended_by: BTreeMap<u64, u64>,
    /// The committed index as of the last fsync, and the saves written since (disk write,
    /// value): a machine's crash takes it back, as it does the entries.
    durable_committed: Option<LogId>,
    committed_saves: VecDeque<(u64, Option<LogId>)>,
}

impl LogInner {
    fn settle_committed(&mut self, durable: u64) {
        while self
            .committed_saves
            .front()
            .is_some_and(|(seq, _)| *seq <= durable)
        {
            if let Some((_, v)) = self.committed_saves.pop_front() {
                self.durable_committed = v;
            }
        }
    }
}

#[derive(Clone, Default)]
pub struct MemLogStore {
    inner: Arc<Mutex<LogInner>>,
    disk: Arc<DiskModel>,
}

impl MemLogStore {
    fn lock(&self) -> MutexGuard<'_, LogInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A log on a disk that behaves as `disk` says.
    pub fn on(disk: Arc<DiskModel>) -> Self {
        Self {
            inner: Arc::default(),
            disk,
        }
    }

    /// Drops every entry appended by a disk write after `durable` (a machine's crash);
    /// returns how many.
    pub(crate) fn lose_after(&self, durable: u64) -> usize {
        let mut g = self.lock();
        g.settle_committed(durable);
        g.committed_saves.clear();
        g.committed = g.durable_committed;
        // Everything from the first lost index on: a log has no holes.
        let Some(from) = g
            .appended_by
            .iter()
            .find(|(_, seq)| **seq > durable)
            .map(|(i, _)| *i)
        else {
            return 0;
        };
        let lost = g.entries.split_off(&from).len();
        g.appended_by.split_off(&from);
        lost
    }
}

impl RaftLogReader<TypeConfig> for MemLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> std::io::Result<Vec<Entry>> {
        Ok(self
            .lock()
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn read_vote(&mut self) -> std::io::Result<Option<Vote>> {
        Ok(self.lock().vote)
    }
}

impl RaftLogStorage<TypeConfig> for MemLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> std::io::Result<LogState<TypeConfig>> {
        let g = self.lock();
        let last = g
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(g.purged);
        Ok(LogState {
            last_purged_log_id: g.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> std::io::Result<()> {
        self.lock().vote = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> std::io::Result<()> {
        let seq = self.disk.next_seq();
        self.disk.wrote(seq);
        let durable = self.disk.durable();
        let mut g = self.lock();
        g.committed = committed;
        g.committed_saves.push_back((seq, committed));
        g.settle_committed(durable);
        // A bound on memory: the oldest saves count as durable past it.
        while g.committed_saves.len() > HELD_COMMITS_MAX {
            if let Some((_, v)) = g.committed_saves.pop_front() {
                g.durable_committed = v;
            }
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> std::io::Result<Option<LogId>> {
        Ok(self.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> std::io::Result<()>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let seq = self.disk.next_seq();
        {
            let mut g = self.lock();
            for e in entries {
                g.appended_by.insert(e.log_id.index, seq);
                g.entries.insert(e.log_id.index, e);
            }
        }
        self.disk.append(seq, callback).await
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> std::io::Result<()> {
        let from = last_log_id.map_or(0, |l| l.index + 1);
        let mut g = self.lock();
        g.entries.split_off(&from);
        g.appended_by.split_off(&from);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> std::io::Result<()> {
        let mut g = self.lock();
        g.purged = Some(log_id);
        g.entries = g.entries.split_off(&(log_id.index + 1));
        g.appended_by = g.appended_by.split_off(&(log_id.index + 1));
        Ok(())
    }
}

#[derive(Default)]
struct SmInner {
    loaded: Loaded,
    history: VecDeque<Event>,
}

impl Clone for SmInner {
    fn clone(&self) -> Self {
        Self {
            loaded: Loaded {
                kv: self.loaded.kv.clone(),
                last_applied: self.loaded.last_applied,
                membership: self.loaded.membership.clone(),
                compacted: self.loaded.compacted,
                snapshot: self.loaded.snapshot.clone(),
            },
            history: self.history.clone(),
        }
    }
}

/// A commit kept until the disk makes it durable (an owned [`ApplyCommit`]).
struct HeldCommit {
    seq: u64,
    last_applied: LogId,
    membership: meridian_types::raft::StoredMembership,
    sequence: u64,
    events: Vec<Event>,
    compact_to: Option<u64>,
    leases: Vec<(u64, Option<meridian_types::LeaseRecord>)>,
    locks: Vec<(String, Option<crate::locks::LockState>)>,
    stamps: meridian_types::hlc::Stamps,
}

impl HeldCommit {
    fn of(seq: u64, c: &ApplyCommit<'_>) -> Self {
        Self {
            seq,
            last_applied: c.last_applied,
            membership: c.membership.clone(),
            sequence: c.sequence,
            events: c.events.to_vec(),
            compact_to: c.compact_to,
            leases: c.leases.to_vec(),
            locks: c.locks.to_vec(),
            stamps: c.stamps,
        }
    }

    fn commit(&self) -> ApplyCommit<'_> {
        ApplyCommit {
            last_applied: self.last_applied,
            membership: &self.membership,
            sequence: self.sequence,
            events: &self.events,
            compact_to: self.compact_to,
            leases: &self.leases,
            locks: &self.locks,
            stamps: self.stamps,
        }
    }
}

/// Most commits held for a slow disk before the oldest are counted durable anyway (a bound on
/// memory; a simulated disk that is never fsynced is not a case the simulation draws).
pub const HELD_COMMITS_MAX: usize = 100_000;

#[derive(Default)]
struct SmState {
    /// What the running node reads: every commit, durable or not.
    live: SmInner,
    /// On a disk with a model: the durable state, and the commits written since.
    durable: SmInner,
    held: VecDeque<HeldCommit>,
}

/// State-machine persistence held in memory.
#[derive(Default)]
pub struct MemSm {
    inner: Mutex<SmState>,
    /// The disk it lives on (None: every commit durable at once).
    disk: Option<Arc<DiskModel>>,
}

impl MemSm {
    fn lock(&self) -> MutexGuard<'_, SmState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A state machine on a disk that behaves as `disk` says.
    pub fn on(disk: Arc<DiskModel>) -> Self {
        Self {
            inner: Mutex::default(),
            disk: Some(disk),
        }
    }

    /// Folds the held commits up to `durable` into the durable state.
    fn settle(g: &mut SmState, durable: u64) {
        while let Some(h) = g.held.front() {
            if h.seq > durable && g.held.len() <= HELD_COMMITS_MAX {
                break;
            }
            if let Some(h) = g.held.pop_front() {
                apply_commit(&mut g.durable, &h.commit());
            }
        }
    }

    /// A machine's crash: the state goes back to what was durable at disk write `durable`.
    pub(crate) fn lose_after(&self, durable: u64) {
        if self.disk.is_none() {
            return;
        }
        let mut g = self.lock();
        Self::settle(&mut g, durable);
        g.held.clear();
        g.live = g.durable.clone();
    }
}

impl HistoryReader for MemSm {
    fn events_from(&self, from: u64, max: usize) -> Result<Vec<Event>> {
        let g = self.lock();
        let start = g.live.history.partition_point(|e| e.revision() < from);
        let mut out: Vec<Event> = Vec::new();
        for ev in g.live.history.range(start..) {
            if out.len() >= max && out.last().is_some_and(|l| l.revision() != ev.revision()) {
                break;
            }
            out.push(ev.clone());
        }
        Ok(out)
    }
}

impl SmPersist for MemSm {
    fn load(&self) -> Result<Loaded> {
        let g = self.lock();
        let mut kv = g.live.loaded.kv.clone();
        kv.rebuild_lease_keys();
        Ok(Loaded {
            kv,
            last_applied: g.live.loaded.last_applied,
            membership: g.live.loaded.membership.clone(),
            compacted: g.live.loaded.compacted,
            snapshot: g.live.loaded.snapshot.clone(),
        })
    }

    fn commit(&self, c: &ApplyCommit<'_>, on_written: OnWritten) -> Result<Pending> {
        {
            let mut g = self.lock();
            apply_commit(&mut g.live, c);
            if let Some(disk) = &self.disk {
                let seq = disk.next_seq();
                disk.wrote(seq);
                g.held.push_back(HeldCommit::of(seq, c));
                Self::settle(&mut g, disk.durable());
            }
        }
        on_written();
        Ok(Box::pin(std::future::ready(Ok(()))))
    }

    fn save_snapshot(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<()> {
        let mut g = self.lock();
        g.live.loaded.snapshot = Some((meta.clone(), data.to_vec()));
        g.durable.loaded.snapshot = Some((meta.clone(), data.to_vec()));
        Ok(())
    }

    fn install(&self, kv: &KvState, meta: &SnapshotMeta, data: &[u8]) -> Result<Pending> {
        let mut g = self.lock();
        g.live.history.clear();
        g.live.loaded = Loaded {
            kv: kv.clone(),
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            compacted: meta.last_log_id.map_or(0, |l| l.index),
            snapshot: Some((meta.clone(), data.to_vec())),
        };
        // Installed state is durable before the install answers (as the fjall store's is).
        if self.disk.is_some() {
            g.held.clear();
            g.durable = g.live.clone();
        }
        Ok(Box::pin(std::future::ready(Ok(()))))
    }
}

/// Applies one commit to a state (the live one, or the durable one when the disk catches up).
fn apply_commit(g: &mut SmInner, c: &ApplyCommit<'_>) {
    {
        for ev in c.events {
            match ev.kind {
                meridian_types::EventKind::Put => {
                    g.loaded.kv.keys.insert(ev.kv.key.clone(), ev.kv.clone());
                }
                meridian_types::EventKind::Delete => {
                    g.loaded.kv.keys.remove(&ev.kv.key);
                }
                meridian_types::EventKind::Dropped => {
                    g.loaded.kv.keys.remove(&ev.kv.key);
                    continue;
                }
                meridian_types::EventKind::Placed => {
                    g.loaded.kv.keys.insert(ev.kv.key.clone(), ev.kv.clone());
                    continue;
                }
            }
            g.history.push_back(ev.clone());
        }
        if let Some(to) = c.compact_to {
            while g.history.front().is_some_and(|e| e.revision() <= to) {
                g.history.pop_front();
            }
            g.loaded.compacted = to;
        }
        for (id, record) in c.leases {
            match record {
                Some(r) => {
                    g.loaded.kv.leases.insert(
                        *id,
                        crate::leases::LeaseState {
                            record: r.clone(),
                            keys: Default::default(),
                        },
                    );
                }
                None => {
                    g.loaded.kv.leases.remove(id);
                }
            }
        }
        for (name, lock) in c.locks {
            match lock {
                Some(l) => {
                    g.loaded.kv.locks.insert(name.as_str().into(), l.clone());
                }
                None => {
                    g.loaded.kv.locks.remove(name.as_str());
                }
            }
        }
        g.loaded.kv.sequence = c.sequence;
        g.loaded.kv.revision = c.last_applied.index;
        g.loaded.last_applied = Some(c.last_applied);
        g.loaded.membership = c.membership.clone();
        g.loaded.kv.stamps = c.stamps;
    }
}
