//! In-memory log and state-machine persistence, for deterministic simulation. Same traits, same
//! [`crate::StateMachine`], same conformance suite as the fjall store; nothing survives a restart
//! of the process.

use crate::kv::KvState;
use crate::persist::{ApplyCommit, HistoryReader, Loaded, OnWritten, Pending, SmPersist};
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
}

#[derive(Clone, Default)]
pub struct MemLogStore {
    inner: Arc<Mutex<LogInner>>,
}

impl MemLogStore {
    fn lock(&self) -> MutexGuard<'_, LogInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
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
        self.lock().committed = committed;
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
        {
            let mut g = self.lock();
            for e in entries {
                g.entries.insert(e.log_id.index, e);
            }
        }
        callback.io_completed(Ok(()));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> std::io::Result<()> {
        let from = last_log_id.map_or(0, |l| l.index + 1);
        self.lock().entries.split_off(&from);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> std::io::Result<()> {
        let mut g = self.lock();
        g.purged = Some(log_id);
        g.entries = g.entries.split_off(&(log_id.index + 1));
        Ok(())
    }
}

#[derive(Default)]
struct SmInner {
    loaded: Loaded,
    history: VecDeque<Event>,
}

/// State-machine persistence held in memory.
#[derive(Default)]
pub struct MemSm {
    inner: Mutex<SmInner>,
}

impl MemSm {
    fn lock(&self) -> MutexGuard<'_, SmInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl HistoryReader for MemSm {
    fn events_from(&self, from: u64, max: usize) -> Result<Vec<Event>> {
        let g = self.lock();
        let start = g.history.partition_point(|e| e.revision() < from);
        let mut out: Vec<Event> = Vec::new();
        for ev in g.history.range(start..) {
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
        let mut kv = g.loaded.kv.clone();
        kv.rebuild_lease_keys();
        Ok(Loaded {
            kv,
            last_applied: g.loaded.last_applied,
            membership: g.loaded.membership.clone(),
            compacted: g.loaded.compacted,
            snapshot: g.loaded.snapshot.clone(),
        })
    }

    fn commit(&self, c: &ApplyCommit<'_>, on_written: OnWritten) -> Result<Pending> {
        self.commit_now(c);
        on_written();
        Ok(Box::pin(std::future::ready(Ok(()))))
    }

    fn save_snapshot(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<()> {
        self.lock().loaded.snapshot = Some((meta.clone(), data.to_vec()));
        Ok(())
    }

    fn install(&self, kv: &KvState, meta: &SnapshotMeta, data: &[u8]) -> Result<Pending> {
        let mut g = self.lock();
        g.history.clear();
        g.loaded = Loaded {
            kv: kv.clone(),
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            compacted: meta.last_log_id.map_or(0, |l| l.index),
            snapshot: Some((meta.clone(), data.to_vec())),
        };
        Ok(Box::pin(std::future::ready(Ok(()))))
    }
}

impl MemSm {
    fn commit_now(&self, c: &ApplyCommit<'_>) {
        let mut g = self.lock();
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
    }
}
