//! One openraft state machine over any [`SmPersist`]: applies entries to the in-memory
//! [`KvState`], writes the changes and `last_applied` in one atomic commit, then tells readers
//! and watchers.

use crate::error::{io_err, sm_err};
use crate::group::GroupShared;
use crate::kv::KvState;
use crate::persist::{ApplyCommit, SmPersist};
use futures::TryStreamExt;
use meridian_types::hlc::Stamps;
use meridian_types::raft::{
    LogId, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig,
};
use meridian_types::{Command, CommandResult, GroupId};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder};
use std::io;
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

/// A snapshot's bytes: the state, then its timestamps (`kv.stamps`). A snapshot written before
/// timestamps existed ends after the state (and reads with none).
pub fn encode_snapshot(kv: &KvState) -> crate::Result<Vec<u8>> {
    let mut data = bincode::serialize(kv)?;
    bincode::serialize_into(&mut data, &kv.stamps)?;
    Ok(data)
}

/// The state, with its timestamps, of a snapshot [`encode_snapshot`] wrote (or an older one).
///
/// Read as `bincode::deserialize` reads (fixed-width integers, trailing bytes allowed) and never
/// past the snapshot's own length: a corrupt or hostile length prefix is an error, not an
/// allocation of what it claims.
pub fn decode_snapshot(data: &[u8]) -> crate::Result<KvState> {
    use bincode::Options;
    let options = || {
        bincode::DefaultOptions::new()
            .with_fixint_encoding()
            .allow_trailing_bytes()
            .with_limit(data.len() as u64)
    };
    let mut rest = data;
    let mut kv: KvState = options().deserialize_from(&mut rest)?;
    kv.stamps = if rest.is_empty() {
        Stamps::default()
    } else {
        options().deserialize_from(&mut rest)?
    };
    Ok(kv)
}

/// A group's state machine over the node's persistence (fjall, or memory in simulation).
pub struct StateMachine {
    shared: Arc<GroupShared>,
    persist: Arc<dyn SmPersist>,
    applied: Arc<Mutex<Applied>>,
    snapshot: CurrentSnapshot,
    history_revisions_max: u64,
}

impl StateMachine {
    pub fn open(
        group: GroupId,
        persist: Arc<dyn SmPersist>,
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
            history_revisions_max: history_revisions_max.max(1),
        })
    }

    /// The handle readers and watchers use.
    pub fn shared(&self) -> Arc<GroupShared> {
        self.shared.clone()
    }

    /// The group's commit timestamp and largest closed-timestamp promise as of the last
    /// applied entry (docs/closed-timestamps.md).
    pub fn stamps(&self) -> Stamps {
        self.shared.read().stamps
    }

    fn applied(&self) -> std::sync::MutexGuard<'_, Applied> {
        self.applied.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Builds a snapshot from a consistent copy of the state taken under the state lock.
pub struct SnapshotBuilder {
    shared: Arc<GroupShared>,
    persist: Arc<dyn SmPersist>,
    applied: Arc<Mutex<Applied>>,
    snapshot: CurrentSnapshot,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
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
        let data = encode_snapshot(&kv).map_err(sm_err)?;
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership.clone(),
        };
        self.persist
            .save_snapshot(&meta, &data)
            .map_err(|e| io_err("saving a snapshot", e))?;
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: data,
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        let a = self.applied();
        Ok((a.last_applied, a.membership.clone()))
    }

    /// Applies the batch openraft hands over in one atomic commit, then answers each entry's
    /// client (after the commit is in the store, as before 0.10).
    async fn apply<S>(&mut self, entries: S) -> io::Result<()>
    where
        S: futures::Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + Send,
    {
        let batch: Vec<EntryResponder<TypeConfig>> = entries.try_collect().await?;
        let traced = match (batch.first(), batch.last()) {
            (Some((f, _)), Some((l, _))) if crate::steps::recording() => {
                Some((f.log_id.index, l.log_id.index, std::time::SystemTime::now()))
            }
            _ => None,
        };
        let mut responders = Vec::with_capacity(batch.len());
        let mut results = Vec::new();
        let mut events = Vec::new();
        let pending = {
            let mut state = self.shared.write();
            let mut applied = self.applied();
            let mut staged: KvState = std::mem::take(&mut *state);
            for (entry, responder) in batch {
                responders.push(responder);
                applied.last_applied = Some(entry.log_id);
                staged.revision = entry.log_id.index;
                let result = match &entry.payload {
                    EntryPayload::Blank => CommandResult::Applied,
                    EntryPayload::Membership(m) => {
                        applied.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                        CommandResult::Applied
                    }
                    EntryPayload::Normal(Command::Stamped { stamp, cmd }) => {
                        let previous = staged.stamps.applied;
                        let at = staged.stamps.apply(stamp);
                        let (res, mut ev) = staged.apply(entry.log_id.index, cmd);
                        staged.recent.record(entry.log_id.index, at, previous, &ev);
                        events.append(&mut ev);
                        CommandResult::Stamped {
                            at,
                            result: Box::new(res),
                        }
                    }
                    EntryPayload::Normal(cmd) => {
                        let previous = staged.stamps.applied;
                        let at = staged.stamps.apply_unstamped();
                        let (res, mut ev) = staged.apply(entry.log_id.index, cmd);
                        staged.recent.record(entry.log_id.index, at, previous, &ev);
                        events.append(&mut ev);
                        res
                    }
                };
                results.push(result);
            }
            let Some(last_applied) = applied.last_applied else {
                *state = staged;
                return Ok(());
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
                stamps: staged.stamps,
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
        if let Some((first, last, start)) = traced {
            let end = std::time::SystemTime::now();
            self.shared
                .steps()
                .record(crate::steps::StepKind::Apply, first, last, start, end);
        }
        for (responder, result) in responders.into_iter().zip(results) {
            if let Some(r) = responder {
                r.send(result);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            shared: self.shared.clone(),
            persist: self.persist.clone(),
            applied: self.applied.clone(),
            snapshot: self.snapshot.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        data: SnapshotData,
    ) -> io::Result<()> {
        let mut kv =
            decode_snapshot(&data).map_err(|e| io_err("reading a received snapshot", e))?;
        kv.share_lease_keys();
        let index = meta.last_log_id.map_or(0, |l| l.index);
        let snapshot_err = |e: crate::Error| io_err("installing a snapshot", e);
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

    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        let snap = self
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Ok(snap.map(|(meta, data)| Snapshot {
            meta,
            snapshot: data,
        }))
    }
}
