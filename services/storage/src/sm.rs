//! One openraft state machine over any [`SmPersist`]: applies entries to the in-memory
//! [`KvState`], writes the changes and `last_applied` in one atomic commit, then tells readers
//! and watchers.

use crate::error::sm_err;
use crate::group::GroupShared;
use crate::kv::KvState;
use crate::persist::{ApplyCommit, SmPersist};
use meridian_types::raft::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use meridian_types::{CommandResult, GroupId};
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder};
use std::io::Cursor;
use std::sync::{Arc, Mutex};

/// How many revisions of change history watchers can resume from, by default.
pub const HISTORY_REVISIONS_DEFAULT: u64 = 100_000;

/// The last snapshot built or installed: its metadata and bytes.
type CurrentSnapshot = Arc<Mutex<Option<(SnapshotMeta, Vec<u8>)>>>;

#[derive(Clone, Default)]
struct Applied {
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

pub struct StateMachine<P: SmPersist> {
    shared: Arc<GroupShared>,
    persist: Arc<P>,
    applied: Arc<Mutex<Applied>>,
    snapshot: CurrentSnapshot,
    snapshot_seq: Arc<std::sync::atomic::AtomicU64>,
    history_revisions_max: u64,
}

impl<P: SmPersist> StateMachine<P> {
    pub fn open(
        group: GroupId,
        persist: Arc<P>,
        history_revisions_max: u64,
    ) -> crate::Result<Self> {
        let loaded = persist.load()?;
        let applied_index = loaded.last_applied.map_or(0, |l| l.index);
        let shared = GroupShared::new(
            group,
            loaded.kv,
            applied_index,
            loaded.compacted,
            persist.clone(),
        );
        Ok(Self {
            shared,
            persist,
            applied: Arc::new(Mutex::new(Applied {
                last_applied: loaded.last_applied,
                membership: loaded.membership,
            })),
            snapshot: Arc::new(Mutex::new(loaded.snapshot)),
            snapshot_seq: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            history_revisions_max: history_revisions_max.max(1),
        })
    }

    /// The handle readers and watchers use.
    pub fn shared(&self) -> Arc<GroupShared> {
        self.shared.clone()
    }

    fn applied(&self) -> std::sync::MutexGuard<'_, Applied> {
        self.applied.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Builds a snapshot from a consistent copy of the state taken under the state lock.
pub struct SnapshotBuilder<P: SmPersist> {
    shared: Arc<GroupShared>,
    persist: Arc<P>,
    applied: Arc<Mutex<Applied>>,
    snapshot: CurrentSnapshot,
    snapshot_seq: Arc<std::sync::atomic::AtomicU64>,
}

impl<P: SmPersist> RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder<P> {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        // The state lock is held while copying, and apply updates `applied` under the same
        // lock, so the copy and its last_applied agree.
        let (kv, applied) = {
            let guard = self.shared.read();
            let applied = self
                .applied
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            (guard.clone(), applied)
        };
        let data = bincode::serialize(&kv).map_err(|e| sm_err(e.into()))?;
        let seq = self
            .snapshot_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let snapshot_id = match &applied.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, seq),
            None => format!("0-0-{seq}"),
        };
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership.clone(),
            snapshot_id,
        };
        self.persist.save_snapshot(&meta, &data).map_err(|e| {
            e.into_raft(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
            )
        })?;
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl<P: SmPersist> RaftStateMachine<TypeConfig> for StateMachine<P> {
    type SnapshotBuilder = SnapshotBuilder<P>;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let a = self.applied();
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut results = Vec::new();
        let mut events = Vec::new();
        let pending = {
            let mut state = self.shared.write();
            let mut applied = self.applied();
            let mut staged: KvState = std::mem::take(&mut *state);
            for entry in entries {
                applied.last_applied = Some(entry.log_id);
                staged.revision = entry.log_id.index;
                let result = match &entry.payload {
                    EntryPayload::Blank => CommandResult::Applied,
                    EntryPayload::Membership(m) => {
                        applied.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                        CommandResult::Applied
                    }
                    EntryPayload::Normal(cmd) => {
                        let (res, mut ev) = staged.apply(entry.log_id.index, cmd);
                        events.append(&mut ev);
                        res
                    }
                };
                results.push(result);
            }
            let Some(last_applied) = applied.last_applied else {
                *state = staged;
                return Ok(results);
            };
            let compacted = self.shared.compacted();
            // Compact in steps of an eighth of the window, not on every apply.
            let step = (self.history_revisions_max / 8).max(1);
            let compact_to = (last_applied.index > compacted + self.history_revisions_max + step)
                .then(|| last_applied.index - self.history_revisions_max);
            let (leases, locks) = staged.take_dirty();
            let commit = ApplyCommit {
                last_applied,
                membership: &applied.membership,
                sequence: staged.sequence,
                events: &events,
                compact_to,
                leases: &leases,
                locks: &locks,
            };
            // Readers see the new keys at once; watchers and `applied` hear of them only once
            // the change history is in the store, so a watcher's catch-up never misses one.
            let shared = self.shared.clone();
            let index = last_applied.index;
            let published = events.clone();
            let lease_ids: Vec<u64> = leases.iter().map(|(id, _)| *id).collect();
            let lock_names: Vec<String> = locks.iter().map(|(n, _)| n.clone()).collect();
            let encoded = self.persist.commit(
                &commit,
                Box::new(move || shared.publish_applied(index, published, lease_ids, lock_names)),
            );
            let pending = match encoded {
                Ok(p) => p,
                Err(e) => {
                    *state = staged;
                    return Err(sm_err(e));
                }
            };
            *state = staged;
            if let Some(c) = compact_to {
                // Announced before the history is removed, so no watcher reads into the gap.
                self.shared.set_compacted(c);
            }
            pending
        };
        // Commits queue in apply order: openraft applies one batch at a time.
        pending.await.map_err(sm_err)?;
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            shared: self.shared.clone(),
            persist: self.persist.clone(),
            applied: self.applied.clone(),
            snapshot: self.snapshot.clone(),
            snapshot_seq: self.snapshot_seq.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let mut kv: KvState = bincode::deserialize(&data).map_err(|e| {
            crate::Error::from(e).into_raft(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
            )
        })?;
        kv.share_lease_keys();
        let index = meta.last_log_id.map_or(0, |l| l.index);
        let snapshot_err = |e: crate::Error| {
            e.into_raft(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
            )
        };
        let pending = self
            .persist
            .install(&kv, meta, &data)
            .map_err(snapshot_err)?;
        // Announce the reset first: watchers stop reading history that is about to vanish.
        self.shared.set_compacted(index);
        pending.await.map_err(snapshot_err)?;
        {
            let mut state = self.shared.write();
            let mut applied = self.applied();
            *state = kv;
            applied.last_applied = meta.last_log_id;
            applied.membership = meta.last_membership.clone();
            *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = Some((meta.clone(), data));
        }
        self.shared.publish_reset(index, index);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let snap = self
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Ok(snap.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
