//! The node's single log writer: every group's appends, truncations, purges and votes pass
//! through one committer thread, in arrival order; a syncer thread makes them durable with one
//! fsync for everything committed since the last one (group commit) before acknowledging any.

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

/// Most commit batches waiting for the syncer; the committer waits when it is full.
const SYNC_QUEUE_MAX: usize = 64;

/// The committer applies requests in arrival order and tells each appender at once that its
/// entries are readable; a second thread, the syncer, makes everything committed so far durable
/// with one fsync and only then fires the durability callbacks. Appends keep flowing while an
/// fsync is in progress, and one fsync covers every batch that queued behind it.
fn run(db: Database, rx: Receiver<WriteReq>) {
    let (sync_tx, sync_rx) = sync_channel::<Vec<DurableCallback>>(SYNC_QUEUE_MAX);
    let syncer_db = db.clone();
    let syncer = std::thread::Builder::new()
        .name("meridian-log-sync".into())
        .spawn(move || sync_loop(syncer_db, sync_rx));
    let syncer = match syncer {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the log sync thread");
            return;
        }
    };
    let mut failed: Option<String> = None;
    while let Ok(first) = rx.recv() {
        let mut reqs = vec![first];
        while reqs.len() < GROUP_COMMIT_REQUESTS_MAX {
            match rx.try_recv() {
                Ok(r) => reqs.push(r),
                Err(_) => break,
            }
        }
        // Each request is its own batch so that a truncate and a later append of the same
        // index never share a sequence number.
        let mut pending = Vec::with_capacity(reqs.len());
        for req in reqs {
            let res = match &failed {
                // After a failed write the database is poisoned: refuse everything after it.
                Some(e) => Err(Error::Corrupt(format!("an earlier log write failed: {e}"))),
                None => apply_ops(&db, req.ops),
            };
            if let Err(e) = &res {
                failed.get_or_insert_with(|| e.to_string());
            }
            let ok = res.is_ok();
            if let Some(w) = req.written {
                let _ = w.send(res.map_err(|e| e.to_string()));
            }
            if let Some(cb) = req.durable {
                if ok {
                    pending.push(cb);
                } else {
                    cb(Err(std::io::Error::other("log write failed")));
                }
            }
        }
        if !pending.is_empty() && sync_tx.send(pending).is_err() {
            break;
        }
    }
    drop(sync_tx);
    if let Some(h) = syncer {
        let _ = h.join();
    }
}

fn sync_loop(db: Database, rx: Receiver<Vec<DurableCallback>>) {
    while let Ok(first) = rx.recv() {
        let mut callbacks = first;
        while let Ok(more) = rx.try_recv() {
            callbacks.extend(more);
        }
        let synced = db.persist(PersistMode::SyncData).map_err(|e| e.to_string());
        for cb in callbacks {
            cb(synced.clone().map_err(std::io::Error::other));
        }
    }
}
