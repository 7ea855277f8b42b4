//! A group's Raft log and Raft metadata (vote, committed, purged) in two fjall keyspaces,
//! written through the node's [`LogWriter`].

use crate::error::{log_read_err, log_write_err};
use crate::writer::{LogWriter, WriteOp};
use crate::{Error, Result};
use fjall::Keyspace;
use meridian_types::raft::{Entry, LogId, StorageError, TypeConfig, Vote};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, RaftLogReader};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const PURGED: &[u8] = b"purged";

#[derive(Clone)]
pub struct FjallLogStore {
    log: Keyspace,
    meta: Keyspace,
    writer: LogWriter,
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl FjallLogStore {
    pub(crate) fn new(log: Keyspace, meta: Keyspace, writer: LogWriter) -> Self {
        Self { log, meta, writer }
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

    fn read_range(&self, start: u64, end: Option<u64>) -> Result<Vec<Entry>> {
        let lo = index_key(start);
        let iter = match end {
            Some(e) => self.log.range(lo..index_key(e)),
            None => self.log.range(lo..),
        };
        let mut out = Vec::new();
        let mut expect = start;
        for item in iter {
            let (k, v) = item.into_inner()?;
            let entry: Entry = bincode::deserialize(&v)?;
            // Guard the no-holes invariant on every read.
            let idx = u64::from_be_bytes(
                k.as_ref()
                    .try_into()
                    .map_err(|_| Error::Corrupt(format!("log key of {} bytes", k.len())))?,
            );
            if idx != entry.log_id.index || (!out.is_empty() && idx != expect) {
                return Err(Error::Corrupt(format!(
                    "log entry at key {idx} has index {} (expected {expect})",
                    entry.log_id.index
                )));
            }
            expect = idx + 1;
            out.push(entry);
        }
        Ok(out)
    }
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
    ) -> std::result::Result<Vec<Entry>, StorageError> {
        let (start, end) = bounds(&range);
        self.read_range(start, end).map_err(log_read_err)
    }
}

impl RaftLogStorage<TypeConfig> for FjallLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> std::result::Result<LogState<TypeConfig>, StorageError> {
        let purged: Option<LogId> = self.get_meta(PURGED).map_err(log_read_err)?;
        let last = match self.log.last_key_value() {
            Some(g) => {
                let v = g.value().map_err(|e| log_read_err(e.into()))?;
                let e: Entry = bincode::deserialize(&v).map_err(|e| log_read_err(e.into()))?;
                Some(e.log_id)
            }
            None => purged,
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> std::result::Result<(), StorageError> {
        let op = self
            .put_meta(VOTE, vote)
            .map_err(|e| e.into_raft(ErrorSubject::Vote, ErrorVerb::Write))?;
        self.writer
            .write_durable(vec![op])
            .await
            .map_err(|e| e.into_raft(ErrorSubject::Vote, ErrorVerb::Write))
    }

    async fn read_vote(&mut self) -> std::result::Result<Option<Vote>, StorageError> {
        self.get_meta(VOTE)
            .map_err(|e| e.into_raft(ErrorSubject::Vote, ErrorVerb::Read))
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId>,
    ) -> std::result::Result<(), StorageError> {
        let op = self
            .put_meta(COMMITTED, &committed)
            .map_err(log_write_err)?;
        self.writer
            .write(vec![op], None)
            .await
            .map_err(log_write_err)
    }

    async fn read_committed(&mut self) -> std::result::Result<Option<LogId>, StorageError> {
        Ok(self
            .get_meta::<Option<LogId>>(COMMITTED)
            .map_err(log_read_err)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> std::result::Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut ops = Vec::new();
        for e in entries {
            let bytes = bincode::serialize(&e).map_err(|err| log_write_err(err.into()))?;
            ops.push(WriteOp::Put(
                self.log.clone(),
                index_key(e.log_id.index).to_vec(),
                bytes,
            ));
        }
        let cb = Box::new(move |r| callback.log_io_completed(r));
        self.writer
            .write(ops, Some(cb))
            .await
            .map_err(log_write_err)
    }

    async fn truncate(&mut self, log_id: LogId) -> std::result::Result<(), StorageError> {
        let op = WriteOp::RemoveRange(
            self.log.clone(),
            index_key(log_id.index).to_vec(),
            index_key(u64::MAX).to_vec(),
        );
        self.writer
            .write(vec![op], None)
            .await
            .map_err(log_write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> std::result::Result<(), StorageError> {
        // Record the purge point first, in the same request as the removal.
        let ops = vec![
            self.put_meta(PURGED, &log_id).map_err(log_write_err)?,
            WriteOp::RemoveRange(
                self.log.clone(),
                index_key(0).to_vec(),
                index_key(log_id.index + 1).to_vec(),
            ),
        ];
        self.writer.write(ops, None).await.map_err(log_write_err)
    }
}
