//! A group's state machine on fjall: keys, change history (for watches) and state-machine
//! metadata in three keyspaces. Every apply is one atomic batch that includes `last_applied`.

use crate::kv::KvState;
use crate::persist::{ApplyCommit, HistoryReader, Loaded, SmPersist};
use crate::{Error, Result};
use fjall::{Database, Keyspace};
use meridian_types::raft::{LogId, SnapshotMeta, StoredMembership};
use meridian_types::{Event, KeyValue};

const LAST_APPLIED: &[u8] = b"last_applied";
const MEMBERSHIP: &[u8] = b"membership";
const SEQUENCE: &[u8] = b"sequence";
const COMPACTED: &[u8] = b"compacted";
const SNAPSHOT: &[u8] = b"snapshot";

pub struct FjallSm {
    db: Database,
    kv: Keyspace,
    hist: Keyspace,
    meta: Keyspace,
}

/// History key: revision then position within the revision, both big-endian.
fn hist_key(revision: u64, seq: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&revision.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

impl FjallSm {
    pub(crate) fn new(db: Database, kv: Keyspace, hist: Keyspace, meta: Keyspace) -> Self {
        Self { db, kv, hist, meta }
    }

    fn get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>> {
        match self.meta.get(key)? {
            Some(v) => Ok(Some(bincode::deserialize(&v)?)),
            None => Ok(None),
        }
    }
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
        kv.sequence = self.get(SEQUENCE)?.unwrap_or(0);
        let last_applied = self.get::<LogId>(LAST_APPLIED)?;
        kv.revision = last_applied.map_or(0, |l| l.index);
        let snapshot = match self.get::<SnapshotMeta>(SNAPSHOT)? {
            Some(meta) => {
                let data = self
                    .meta
                    .get(b"snapshot_data")?
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

    fn commit(&self, c: &ApplyCommit<'_>) -> Result<()> {
        let mut batch = self.db.batch();
        let mut seq_in_rev: u32 = 0;
        let mut last_rev = 0;
        for ev in c.events {
            let rev = ev.revision();
            if rev != last_rev {
                seq_in_rev = 0;
                last_rev = rev;
            }
            match ev.kind {
                meridian_types::EventKind::Put => {
                    batch.insert(&self.kv, ev.kv.key.as_bytes(), bincode::serialize(&ev.kv)?)
                }
                meridian_types::EventKind::Delete => batch.remove(&self.kv, ev.kv.key.as_bytes()),
            }
            batch.insert(
                &self.hist,
                hist_key(rev, seq_in_rev),
                bincode::serialize(ev)?,
            );
            seq_in_rev += 1;
        }
        if let Some(to) = c.compact_to {
            for item in self.hist.range(..hist_key(to + 1, 0)) {
                batch.remove(&self.hist, item.key()?);
            }
            batch.insert(&self.meta, COMPACTED, bincode::serialize(&to)?);
        }
        batch.insert(
            &self.meta,
            LAST_APPLIED,
            bincode::serialize(&c.last_applied)?,
        );
        batch.insert(&self.meta, MEMBERSHIP, bincode::serialize(c.membership)?);
        batch.insert(&self.meta, SEQUENCE, bincode::serialize(&c.sequence)?);
        batch.commit()?;
        Ok(())
    }

    fn save_snapshot(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<()> {
        let mut batch = self.db.batch();
        batch.insert(&self.meta, b"snapshot_data", data);
        batch.insert(&self.meta, SNAPSHOT, bincode::serialize(meta)?);
        batch.commit()?;
        Ok(())
    }

    fn install(&self, kv: &KvState, meta: &SnapshotMeta, data: &[u8]) -> Result<()> {
        let mut batch = self.db.batch();
        for item in self.kv.iter() {
            batch.remove(&self.kv, item.key()?);
        }
        for item in self.hist.iter() {
            batch.remove(&self.hist, item.key()?);
        }
        for (k, v) in &kv.keys {
            batch.insert(&self.kv, k.as_bytes(), bincode::serialize(v)?);
        }
        let index = meta.last_log_id.map_or(0, |l| l.index);
        batch.insert(&self.meta, COMPACTED, bincode::serialize(&index)?);
        match &meta.last_log_id {
            Some(l) => batch.insert(&self.meta, LAST_APPLIED, bincode::serialize(l)?),
            None => batch.remove(&self.meta, LAST_APPLIED),
        }
        batch.insert(
            &self.meta,
            MEMBERSHIP,
            bincode::serialize(&meta.last_membership)?,
        );
        batch.insert(&self.meta, SEQUENCE, bincode::serialize(&kv.sequence)?);
        batch.insert(&self.meta, b"snapshot_data", data);
        batch.insert(&self.meta, SNAPSHOT, bincode::serialize(meta)?);
        batch.commit()?;
        // An installed snapshot replaces log entries the node may not have: make it durable
        // before openraft purges the log behind it.
        self.db.persist(fjall::PersistMode::SyncData)?;
        Ok(())
    }
}
