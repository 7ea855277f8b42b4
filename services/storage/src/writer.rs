//! The node's single log writer: every group's appends, truncations, purges and votes pass
//! through one thread, which commits them in arrival order and makes all of them durable with
//! one fsync (group commit) before acknowledging any.

use crate::{Error, Result};
use fjall::{Database, Keyspace, PersistMode};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use tokio::sync::oneshot;

/// Most requests queued for the writer; appenders wait when it is full.
pub const WRITE_QUEUE_MAX: usize = 4096;
/// Most requests made durable by one fsync.
pub const GROUP_COMMIT_REQUESTS_MAX: usize = 1024;

pub enum WriteOp {
    Put(Keyspace, Vec<u8>, Vec<u8>),
    /// Remove every key in `[start, end)`.
    RemoveRange(Keyspace, Vec<u8>, Vec<u8>),
}

pub type DurableCallback = Box<dyn FnOnce(std::result::Result<(), std::io::Error>) + Send>;

pub struct WriteReq {
    pub ops: Vec<WriteOp>,
    /// Told once the ops are readable (committed to the memtable, not yet durable).
    pub written: Option<oneshot::Sender<std::result::Result<(), String>>>,
    /// Told once the ops are durable.
    pub durable: Option<DurableCallback>,
}

#[derive(Clone)]
pub struct LogWriter {
    tx: SyncSender<WriteReq>,
}

impl LogWriter {
    pub fn start(db: Database) -> Result<(Self, JoinHandle<()>)> {
        let (tx, rx) = sync_channel(WRITE_QUEUE_MAX);
        let handle = std::thread::Builder::new()
            .name("meridian-log-writer".into())
            .spawn(move || run(db, rx))?;
        Ok((Self { tx }, handle))
    }

    /// Queues `req`; waits (off the async runtime) while the queue is full.
    pub async fn submit(&self, req: WriteReq) -> Result<()> {
        match self.tx.try_send(req) {
            Ok(()) => Ok(()),
            Err(TrySendError::Disconnected(_)) => Err(Error::WriterGone),
            Err(TrySendError::Full(req)) => {
                let tx = self.tx.clone();
                tokio::task::spawn_blocking(move || tx.send(req).map_err(|_| Error::WriterGone))
                    .await
                    .map_err(|_| Error::WriterGone)?
            }
        }
    }

    /// Submits `ops` and waits until they are readable; `durable` fires after the fsync.
    pub async fn write(&self, ops: Vec<WriteOp>, durable: Option<DurableCallback>) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.submit(WriteReq {
            ops,
            written: Some(tx),
            durable,
        })
        .await?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::Corrupt(e)),
            Err(_) => Err(Error::WriterGone),
        }
    }

    /// Submits `ops` and waits until they are durable.
    pub async fn write_durable(&self, ops: Vec<WriteOp>) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        let cb: DurableCallback = Box::new(move |r| {
            let _ = tx.send(r);
        });
        self.write(ops, Some(cb)).await?;
        match rx.await {
            Ok(r) => r.map_err(Error::Io),
            Err(_) => Err(Error::WriterGone),
        }
    }
}

fn apply_ops(db: &Database, ops: Vec<WriteOp>) -> Result<()> {
    let mut batch = db.batch();
    for op in ops {
        match op {
            WriteOp::Put(ks, k, v) => batch.insert(&ks, k, v),
            WriteOp::RemoveRange(ks, start, end) => {
                for item in ks.range(start..end) {
                    let key = item.key()?;
                    batch.remove(&ks, key);
                }
            }
        }
    }
    batch.commit()?;
    Ok(())
}

fn run(db: Database, rx: Receiver<WriteReq>) {
    while let Ok(first) = rx.recv() {
        let mut reqs = vec![first];
        while reqs.len() < GROUP_COMMIT_REQUESTS_MAX {
            match rx.try_recv() {
                Ok(r) => reqs.push(r),
                Err(_) => break,
            }
        }
        // Each request is its own batch so that a truncate and a later append of the same
        // index never share a sequence number; one fsync then covers them all.
        let mut pending = Vec::with_capacity(reqs.len());
        let mut failed = None;
        for req in reqs {
            let res = if failed.is_some() {
                Err(Error::Corrupt(
                    "an earlier write in this batch failed".into(),
                ))
            } else {
                apply_ops(&db, req.ops)
            };
            if let Err(e) = &res {
                failed.get_or_insert_with(|| e.to_string());
            }
            if let Some(w) = req.written {
                let _ = w.send(res.map_err(|e| e.to_string()));
            }
            pending.extend(req.durable);
        }
        let synced = match failed {
            Some(e) => Err(std::io::Error::other(e)),
            None => db
                .persist(PersistMode::SyncData)
                .map_err(|e| std::io::Error::other(e.to_string())),
        };
        for cb in pending {
            cb(match &synced {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            });
        }
    }
}
