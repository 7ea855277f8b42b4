//! A group's state machine on fjall: keys, change history (for watches) and state-machine
//! metadata in three keyspaces. Every apply is one atomic batch that includes `last_applied`.

use crate::kv::KvState;
use crate::leases::LeaseState;
use crate::locks::LockState;
use crate::persist::{ApplyCommit, HistoryReader, Loaded, OnWritten, Pending, SmPersist};
use crate::writer::{LogWriter, WriteOp, WriteReq};
use crate::{Error, Result};
use fjall::{Database, Keyspace};
use meridian_types::raft::{LogId, SnapshotMeta, StoredMembership};
use meridian_types::{Event, EventKind, KeyValue, LeaseRecord};

const LAST_APPLIED: &[u8] = b"last_applied";
const MEMBERSHIP: &[u8] = b"membership";
/// The group's timestamps (`Stamps`) as of `last_applied`; absent in a store written before
/// timestamps existed (read as none).
const STAMPS: &[u8] = b"stamps";
const SEQUENCE: &[u8] = b"sequence";
const COMPACTED: &[u8] = b"compacted";
const SNAPSHOT: &[u8] = b"snapshot";
/// Lease records: this prefix, then the id big-endian.
const LEASE_PREFIX: &[u8] = b"lease/";
/// Lock queues: this prefix, then the lock name.
const LOCK_PREFIX: &[u8] = b"lock/";

pub struct FjallSm {
    db: Database,
    kv: Keyspace,
    hist: Keyspace,
    meta: Keyspace,
    writer: LogWriter,
}

/// Keys are at most 4 KiB of UTF-8, so this many 0xff bytes sort after every key.
const KEY_RANGE_END_BYTES: usize = meridian_types::KEY_BYTES_MAX + 1;
const SNAPSHOT_DATA: &[u8] = b"snapshot_data";

/// History key: revision then position within the revision, both big-endian.
fn hist_key(revision: u64, seq: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&revision.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

impl FjallSm {
    pub(crate) fn new(
        db: Database,
        kv: Keyspace,
        hist: Keyspace,
        meta: Keyspace,
        writer: LogWriter,
    ) -> Self {
        Self {
            db,
            kv,
            hist,
            meta,
            writer,
        }
    }

    fn meta_op<T: serde::Serialize + ?Sized>(&self, key: &[u8], value: &T) -> Result<WriteOp> {
        Ok(WriteOp::Put(
            self.meta.clone(),
            key.to_vec(),
            bincode::serialize(value)?,
        ))
    }

    /// Writes `value` under `key` in the metadata keyspace, or removes the key for `None`.
    fn record_op<T: serde::Serialize>(&self, key: &[u8], value: Option<&T>) -> Result<WriteOp> {
        Ok(match value {
            Some(v) => WriteOp::Put(self.meta.clone(), key.to_vec(), bincode::serialize(v)?),
            None => WriteOp::Remove(self.meta.clone(), key.to_vec()),
        })
    }

    fn get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>> {
        match self.meta.get(key)? {
            Some(v) => Ok(Some(bincode::deserialize(&v)?)),
            None => Ok(None),
        }
    }
}

fn lease_key(id: u64) -> Vec<u8> {
    [LEASE_PREFIX, &id.to_be_bytes()].concat()
}

fn lock_key(name: &str) -> Vec<u8> {
    [LOCK_PREFIX, name.as_bytes()].concat()
}

impl HistoryReader for FjallSm {
    fn events_from(&self, from: u64, max: usize) -> Result<Vec<Event>> {
        let mut out: Vec<Event> = Vec::new();
        for item in self.hist.range(hist_key(from, 0)..) {
            let (_, v) = item.into_inner()?;
            let ev: Event = bincode::deserialize(&v)?;
            if out.len() >= max && out.last().is_some_and(|l| l.revision() != ev.revision()) {
                break;
            }
            out.push(ev);
        }
        Ok(out)
    }
}

impl SmPersist for FjallSm {
    fn load(&self) -> Result<Loaded> {
        let mut kv = KvState::default();
        for item in self.kv.iter() {
            let (k, v) = item.into_inner()?;
            let value: KeyValue = bincode::deserialize(&v)?;
            if value.key.as_bytes() != k.as_ref() {
                return Err(Error::Corrupt(format!(
                    "key {:?} stored under {:?}",
                    value.key,
                    String::from_utf8_lossy(&k)
                )));
            }
            kv.keys.insert(value.key.clone(), value);
        }
        for item in self.meta.prefix(LEASE_PREFIX) {
            let (_, v) = item.into_inner()?;
            let record: LeaseRecord = bincode::deserialize(&v)?;
            kv.leases.insert(
                record.id,
                LeaseState {
                    record,
                    keys: Default::default(),
                },
            );
        }
        for item in self.meta.prefix(LOCK_PREFIX) {
            let (k, v) = item.into_inner()?;
            let name = String::from_utf8_lossy(&k[LOCK_PREFIX.len()..]).into_owned();
            let lock = LockState::decode(&name, &v)?;
            kv.locks.insert(name.into(), lock);
        }
        kv.rebuild_lease_keys();
        kv.sequence = self.get(SEQUENCE)?.unwrap_or(0);
        kv.stamps = self.get(STAMPS)?.unwrap_or_default();
        let last_applied = self.get::<LogId>(LAST_APPLIED)?;
        kv.revision = last_applied.map_or(0, |l| l.index);
        let snapshot = match self.get::<SnapshotMeta>(SNAPSHOT)? {
            Some(meta) => {
                let data = self
                    .meta
                    .get(SNAPSHOT_DATA)?
                    .ok_or_else(|| Error::Corrupt("snapshot meta without data".into()))?;
                Some((meta, data.to_vec()))
            }
            None => None,
        };
        Ok(Loaded {
            kv,
            last_applied,
            membership: self
                .get::<StoredMembership>(MEMBERSHIP)?
                .unwrap_or_default(),
            compacted: self.get(COMPACTED)?.unwrap_or(0),
            snapshot,
        })
    }

    fn commit(&self, c: &ApplyCommit<'_>, on_written: OnWritten) -> Result<Pending> {
        let mut ops = Vec::with_capacity(c.events.len() * 2 + 4);
        let mut seq_in_rev: u32 = 0;
        let mut last_rev = 0;
        for ev in c.events {
            let rev = ev.revision();
            if rev != last_rev {
                seq_in_rev = 0;
                last_rev = rev;
            }
            let key = ev.kv.key.as_bytes().to_vec();
            ops.push(match ev.kind {
                EventKind::Put => WriteOp::Put(self.kv.clone(), key, bincode::serialize(&ev.kv)?),
                EventKind::Delete => WriteOp::Remove(self.kv.clone(), key),
                // Not a change of the data: no history entry, no watcher sees it.
                EventKind::Dropped => {
                    ops.push(WriteOp::Remove(self.kv.clone(), key));
                    continue;
                }
                EventKind::Placed => {
                    ops.push(WriteOp::Put(
                        self.kv.clone(),
                        key,
                        bincode::serialize(&ev.kv)?,
                    ));
                    continue;
                }
            });
            ops.push(WriteOp::Put(
                self.hist.clone(),
                hist_key(rev, seq_in_rev).to_vec(),
                bincode::serialize(ev)?,
            ));
            seq_in_rev += 1;
        }
        for (id, record) in c.leases {
            ops.push(self.record_op(&lease_key(*id), record.as_ref())?);
        }
        for (name, lock) in c.locks {
            let record = lock.as_ref().map(|l| l.record(name));
            ops.push(self.record_op(&lock_key(name), record.as_ref())?);
        }
        if let Some(to) = c.compact_to {
            ops.push(WriteOp::RemoveRange(
                self.hist.clone(),
                hist_key(0, 0).to_vec(),
                hist_key(to + 1, 0).to_vec(),
            ));
            ops.push(self.meta_op(COMPACTED, &to)?);
        }
        ops.push(self.meta_op(LAST_APPLIED, &c.last_applied)?);
        ops.push(self.meta_op(MEMBERSHIP, c.membership)?);
        ops.push(self.meta_op(SEQUENCE, &c.sequence)?);
        ops.push(self.meta_op(STAMPS, &c.stamps)?);
        let writer = self.writer.clone();
        Ok(Box::pin(async move {
            writer
                .submit(WriteReq {
                    ops,
                    written: Some(on_written),
                    durable: None,
                })
                .await
        }))
    }

    fn save_snapshot(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<()> {
        let mut batch = self.db.batch();
        batch.insert(&self.meta, SNAPSHOT_DATA, data);
        batch.insert(&self.meta, SNAPSHOT, bincode::serialize(meta)?);
        batch.commit()?;
        Ok(())
    }

    fn install(&self, kv: &KvState, meta: &SnapshotMeta, data: &[u8]) -> Result<Pending> {
        // Queued behind every earlier commit, so none of them can land on top of it.
        let mut ops = vec![
            WriteOp::RemoveRange(self.kv.clone(), Vec::new(), vec![0xff; KEY_RANGE_END_BYTES]),
            WriteOp::RemoveRange(
                self.hist.clone(),
                hist_key(0, 0).to_vec(),
                hist_key(u64::MAX, u32::MAX).to_vec(),
            ),
        ];
        for (k, v) in &kv.keys {
            ops.push(WriteOp::Put(
                self.kv.clone(),
                k.as_bytes().to_vec(),
                bincode::serialize(v)?,
            ));
        }
        for prefix in [LEASE_PREFIX, LOCK_PREFIX] {
            let mut end = prefix.to_vec();
            end.extend(std::iter::repeat_n(0xff, KEY_RANGE_END_BYTES));
            ops.push(WriteOp::RemoveRange(
                self.meta.clone(),
                prefix.to_vec(),
                end,
            ));
        }
        for (id, l) in &kv.leases {
            ops.push(self.record_op(&lease_key(*id), Some(&l.record))?);
        }
        for (name, l) in &kv.locks {
            ops.push(self.record_op(&lock_key(name), Some(&l.record(name)))?);
        }
        let index = meta.last_log_id.map_or(0, |l| l.index);
        ops.push(self.meta_op(COMPACTED, &index)?);
        match &meta.last_log_id {
            Some(l) => ops.push(self.meta_op(LAST_APPLIED, l)?),
            None => ops.push(WriteOp::Remove(self.meta.clone(), LAST_APPLIED.to_vec())),
        }
        ops.push(self.meta_op(MEMBERSHIP, &meta.last_membership)?);
        ops.push(self.meta_op(SEQUENCE, &kv.sequence)?);
        ops.push(self.meta_op(STAMPS, &kv.stamps)?);
        ops.push(WriteOp::Put(
            self.meta.clone(),
            SNAPSHOT_DATA.to_vec(),
            data.to_vec(),
        ));
        ops.push(self.meta_op(SNAPSHOT, meta)?);
        let writer = self.writer.clone();
        // Durable before openraft purges the log behind the snapshot.
        Ok(Box::pin(async move { writer.write_durable(ops).await }))
    }
}
