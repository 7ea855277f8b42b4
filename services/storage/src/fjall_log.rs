//! A group's Raft log and Raft metadata (vote, committed, purged) in two fjall keyspaces.
//!
//! Writes go through the node's [`LogWriter`] thread. Until the writer has committed them,
//! appended entries live in this store's pending cache, so they are readable the moment
//! `append` returns, as openraft requires. In-memory `last` and `purged` are the truth for
//! reads; fjall catches up in queue order.

use crate::error::{io_err, log_read_err, log_write_err};
use crate::writer::{LogWriter, WriteOp, WriteReq};
use crate::{Error, Result};
use fjall::Keyspace;
use meridian_types::raft::{Entry, LogId, TypeConfig, Vote};
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::RaftLogReader;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const PURGED: &[u8] = b"purged";

#[derive(Default)]
struct Pending {
    /// Appended entries the writer has not committed yet.
    entries: BTreeMap<u64, Entry>,
    /// Index after the last entry of the log (0: nothing was ever appended or purged).
    next_index: u64,
    purged: Option<LogId>,
}

#[derive(Clone)]
pub struct FjallLogStore {
    log: Keyspace,
    meta: Keyspace,
    writer: LogWriter,
    pending: Arc<Mutex<Pending>>,
    steps: Option<Arc<crate::steps::Steps>>,
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl FjallLogStore {
    /// Records when appends become durable into `steps` (while tracing is on).
    pub(crate) fn with_steps(mut self, steps: Arc<crate::steps::Steps>) -> Self {
        self.steps = Some(steps);
        self
    }

    pub(crate) fn new(log: Keyspace, meta: Keyspace, writer: LogWriter) -> Result<Self> {
        let store = Self {
            log,
            meta,
            writer,
            pending: Arc::default(),
            steps: None,
        };
        let purged: Option<LogId> = store.get_meta(PURGED)?;
        let next_index = match store.log.last_key_value() {
            Some(g) => decode_index(&g.key()?)? + 1,
            None => purged.map_or(0, |p| p.index + 1),
        };
        {
            let mut p = store.lock();
            p.purged = purged;
            p.next_index = next_index;
        }
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>> {
        match self.meta.get(key)? {
            Some(v) => Ok(Some(bincode::deserialize(&v)?)),
            None => Ok(None),
        }
    }

    fn put_meta<T: serde::Serialize>(&self, key: &[u8], value: &T) -> Result<WriteOp> {
        Ok(WriteOp::Put(
            self.meta.clone(),
            key.to_vec(),
            bincode::serialize(value)?,
        ))
    }

    /// Queues `ops` behind everything queued before; neither readability nor durability is
    /// waited for (truncations, purges and the advisory committed index).
    async fn queue(&self, ops: Vec<WriteOp>) -> std::io::Result<()> {
        self.writer
            .submit(WriteReq {
                ops,
                written: None,
                durable: None,
            })
            .await
            .map_err(log_write_err)
    }

    /// Entries in `[start, end)`: the pending cache over fjall, clamped to the log's end.
    fn read_range(&self, start: u64, end: Option<u64>) -> Result<Vec<Entry>> {
        // Cache first: an entry leaves the cache only after it is in fjall.
        let (cached, next_index) = {
            let p = self.lock();
            let end = end.unwrap_or(u64::MAX).min(p.next_index);
            let cached: BTreeMap<u64, Entry> = if start < end {
                p.entries
                    .range(start..end)
                    .map(|(k, v)| (*k, v.clone()))
                    .collect()
            } else {
                BTreeMap::new()
            };
            (cached, p.next_index)
        };
        let end = end.unwrap_or(u64::MAX).min(next_index);
        if start >= end {
            return Ok(Vec::new());
        }
        let mut merged: BTreeMap<u64, Entry> = BTreeMap::new();
        for item in self.log.range(index_key(start)..index_key(end)) {
            let (k, v) = item.into_inner()?;
            let idx = decode_index(&k)?;
            if cached.contains_key(&idx) {
                continue;
            }
            let entry: Entry = bincode::deserialize(&v)?;
            if idx != entry.log_id.index {
                return Err(Error::Corrupt(format!(
                    "log key {idx} holds the entry of index {}",
                    entry.log_id.index
                )));
            }
            merged.insert(idx, entry);
        }
        merged.extend(cached);
        // Guard the no-holes invariant on every read.
        let out: Vec<Entry> = merged.into_values().collect();
        for (i, e) in out.iter().enumerate() {
            let expect = out[0].log_id.index + i as u64;
            if e.log_id.index != expect {
                return Err(Error::Corrupt(format!(
                    "hole in the log: found index {} where {expect} was expected",
                    e.log_id.index
                )));
            }
        }
        Ok(out)
    }
}

fn decode_index(k: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = k
        .try_into()
        .map_err(|_| Error::Corrupt(format!("log key of {} bytes", k.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, Option<u64>) {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => Some(e.saturating_add(1)),
        Bound::Excluded(e) => Some(*e),
        Bound::Unbounded => None,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for FjallLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> std::io::Result<Vec<Entry>> {
        let (start, end) = bounds(&range);
        self.read_range(start, end).map_err(log_read_err)
    }

    async fn read_vote(&mut self) -> std::io::Result<Option<Vote>> {
        self.get_meta(VOTE)
            .map_err(|e| io_err("reading the vote", e))
    }
}

impl RaftLogStorage<TypeConfig> for FjallLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> std::io::Result<LogState<TypeConfig>> {
        let (purged, next_index) = {
            let p = self.lock();
            (p.purged, p.next_index)
        };
        let last = match next_index.checked_sub(1) {
            None => None,
            Some(last) if purged.is_some_and(|p| p.index >= last) => purged,
            Some(last) => self
                .read_range(last, Some(last + 1))
                .map_err(log_read_err)?
                .pop()
                .map(|e| e.log_id)
                .or(purged),
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> std::io::Result<()> {
        let op = self
            .put_meta(VOTE, vote)
            .map_err(|e| io_err("saving the vote", e))?;
        self.writer
            .write_durable(vec![op])
            .await
            .map_err(|e| io_err("saving the vote", e))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> std::io::Result<()> {
        // Advisory (it only lets a restart re-apply sooner): queued, never waited for.
        let op = self
            .put_meta(COMMITTED, &committed)
            .map_err(log_write_err)?;
        self.queue(vec![op]).await
    }

    async fn read_committed(&mut self) -> std::io::Result<Option<LogId>> {
        Ok(self
            .get_meta::<Option<LogId>>(COMMITTED)
            .map_err(log_read_err)?
            .flatten())
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
        let mut ops = Vec::new();
        let mut ids = Vec::new();
        {
            let mut p = self.lock();
            for e in entries {
                let bytes = bincode::serialize(&e).map_err(|err| log_write_err(err.into()))?;
                ops.push(WriteOp::Put(
                    self.log.clone(),
                    index_key(e.log_id.index).to_vec(),
                    bytes,
                ));
                ids.push(e.log_id);
                p.next_index = e.log_id.index + 1;
                p.entries.insert(e.log_id.index, e);
            }
        }
        let first_last = ids.first().zip(ids.last()).map(|(f, l)| (f.index, l.index));
        let pending = self.pending.clone();
        let written = Box::new(move || {
            let mut p = pending.lock().unwrap_or_else(|p| p.into_inner());
            for id in ids {
                // A later truncate-and-append may have replaced it: only drop this very entry.
                if p.entries.get(&id.index).is_some_and(|e| e.log_id == id) {
                    p.entries.remove(&id.index);
                }
            }
        });
        let steps = match (&self.steps, first_last) {
            (Some(s), Some(range)) if crate::steps::recording() => {
                Some((s.clone(), range, std::time::SystemTime::now()))
            }
            _ => None,
        };
        let durable = Box::new(move |r| {
            if let Some((s, (first, last), start)) = steps {
                let end = std::time::SystemTime::now();
                s.record(crate::steps::StepKind::Append, first, last, start, end);
            }
            callback.io_completed(r)
        });
        self.writer
            .submit(WriteReq {
                ops,
                written: Some(written),
                durable: Some(durable),
            })
            .await
            .map_err(log_write_err)
    }

    /// Removes every entry after `last_log_id` (all of them for `None`).
    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> std::io::Result<()> {
        let from = last_log_id.map_or(0, |l| l.index + 1);
        {
            let mut p = self.lock();
            p.entries.split_off(&from);
            p.next_index = p.next_index.min(from);
        }
        let op = WriteOp::RemoveRange(
            self.log.clone(),
            index_key(from).to_vec(),
            index_key(u64::MAX).to_vec(),
        );
        self.queue(vec![op]).await
    }

    async fn purge(&mut self, log_id: LogId) -> std::io::Result<()> {
        {
            let mut p = self.lock();
            p.purged = Some(log_id);
            p.entries = p.entries.split_off(&(log_id.index + 1));
            p.next_index = p.next_index.max(log_id.index + 1);
        }
        // The purge point and the removal travel in one atomic batch.
        let ops = vec![
            self.put_meta(PURGED, &log_id).map_err(log_write_err)?,
            WriteOp::RemoveRange(
                self.log.clone(),
                index_key(0).to_vec(),
                index_key(log_id.index + 1).to_vec(),
            ),
        ];
        self.queue(ops).await
    }
}
