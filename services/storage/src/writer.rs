//! The node's log writer: one thread owns every Raft-log write of every group. It drains its
//! queue, commits each request as its own fjall batch, then makes all of them durable with one
//! fsync and only afterwards fires the durability callbacks (group commit across groups).
//!
//! State-machine batches travel the same queue (without waiting for the fsync), so the apply
//! path never waits on the journal lock either.
//!
//! Raft cores never touch the journal themselves: fjall holds the journal lock for the whole
//! fsync, so a core that committed inline would stall behind every fsync. Appended entries stay
//! readable meanwhile through each log store's pending-entry cache (see `fjall_log`).
//!
//! Group commits are numbered, and the number of the last durable one is recorded outside the
//! journal (the durability mark, [`crate::durable_mark`]), so that a journal which loses
//! durable batches on recovery is caught when the store opens.

use crate::{durable_mark, Error, Result};
use fjall::{Database, Keyspace, PersistMode};
use meridian_types::metrics::Histogram;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::{oneshot, watch};

/// Most requests queued for the writer; appenders wait when it is full.
pub const WRITE_QUEUE_MAX: usize = 8192;
/// Most requests committed before one fsync.
pub const GROUP_COMMIT_REQUESTS_MAX: usize = 4096;

pub enum WriteOp {
    Put(Keyspace, Vec<u8>, Vec<u8>),
    Remove(Keyspace, Vec<u8>),
    /// Remove every key in `[start, end)`.
    RemoveRange(Keyspace, Vec<u8>, Vec<u8>),
}

pub type DurableCallback = Box<dyn FnOnce(std::result::Result<(), std::io::Error>) + Send>;

pub struct WriteReq {
    pub ops: Vec<WriteOp>,
    /// Runs once the ops are committed (readable from fjall), before the fsync.
    pub written: Option<Box<dyn FnOnce() + Send>>,
    /// Runs once the ops are durable (or failed).
    pub durable: Option<DurableCallback>,
}

#[derive(Clone)]
pub struct LogWriter {
    tx: SyncSender<WriteReq>,
    /// How long each group commit's fsync took.
    fsync: Arc<Histogram>,
    /// The first write or fsync that failed (then every later request is refused).
    failure: watch::Receiver<Option<String>>,
}

impl LogWriter {
    /// Starts the writer of `db` (whose directory is `dir`): its group commits are numbered
    /// on from `recovered` in `meta`, and the durability mark follows them
    /// (see [`crate::durable_mark`]).
    pub fn start(
        db: Database,
        dir: &Path,
        meta: Keyspace,
        recovered: u64,
    ) -> Result<(Self, JoinHandle<()>)> {
        let (tx, rx) = sync_channel(WRITE_QUEUE_MAX);
        let fsync = Arc::new(Histogram::default());
        let observed = fsync.clone();
        let (failed_tx, failure) = watch::channel(None);
        let report = Arc::new(failed_tx);
        let durable = Arc::new(AtomicU64::new(recovered));
        let (mark_stop, stopped) = sync_channel(1);
        let marker_report = report.clone();
        durable_mark::spawn(dir.to_path_buf(), durable.clone(), stopped, move |what| {
            report_failure(&marker_report, &what)
        })?;
        let numbers = Numbers {
            meta,
            next: recovered,
            durable,
            _mark_stop: mark_stop,
        };
        let handle = std::thread::Builder::new()
            .name("meridian-log-writer".into())
            .spawn(move || run(db, rx, &observed, &report, numbers))?;
        Ok((Self { tx, fsync, failure }, handle))
    }

    /// The first failed write or fsync, once there is one. After it the writer acknowledges
    /// nothing: a failed fsync may have dropped dirty pages that a retry would then report as
    /// durable (PostgreSQL's "fsyncgate"), so the only safe way on is a restart that recovers
    /// from what the disk really holds.
    pub fn failure(&self) -> watch::Receiver<Option<String>> {
        self.failure.clone()
    }

    /// The durations of this writer's fsyncs (one per group commit).
    pub fn fsync_latency(&self) -> Arc<Histogram> {
        self.fsync.clone()
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

    /// Queues `ops` and waits until they are durable.
    pub async fn write_durable(&self, ops: Vec<WriteOp>) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        let cb: DurableCallback = Box::new(move |r| {
            let _ = tx.send(r);
        });
        self.submit(WriteReq {
            ops,
            written: None,
            durable: Some(cb),
        })
        .await?;
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
            WriteOp::Remove(ks, k) => batch.remove(&ks, k),
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

/// The writer's group-commit numbers (see [`crate::durable_mark`]).
struct Numbers {
    meta: Keyspace,
    /// The number of the last group commit written.
    next: u64,
    /// The number of the last group commit made durable, for the mark thread.
    durable: Arc<AtomicU64>,
    /// Dropped when the writer ends: the mark thread then writes its last mark and ends.
    _mark_stop: SyncSender<()>,
}

/// Reports the store's first failure (later ones are only logged).
fn report_failure(report: &watch::Sender<Option<String>>, what: &str) {
    tracing::error!(error = %what, "storage failure: this node acknowledges no more writes");
    report.send_if_modified(|f| {
        if f.is_none() {
            *f = Some(what.to_string());
            true
        } else {
            false
        }
    });
}

fn run(
    db: Database,
    rx: Receiver<WriteReq>,
    fsync: &Histogram,
    report: &watch::Sender<Option<String>>,
    mut numbers: Numbers,
) {
    let mut failed: Option<String> = None;
    let fail = |failed: &mut Option<String>, what: String| {
        if failed.is_none() {
            report_failure(report, &what);
            *failed = Some(what);
        }
    };
    while let Ok(first) = rx.recv() {
        let mut reqs = vec![first];
        while reqs.len() < GROUP_COMMIT_REQUESTS_MAX {
            match rx.try_recv() {
                Ok(r) => reqs.push(r),
                Err(_) => break,
            }
        }
        // The last batch carries this group commit's number.
        numbers.next += 1;
        if let Some(last) = reqs.last_mut() {
            last.ops.push(WriteOp::Put(
                numbers.meta.clone(),
                durable_mark::WRITE_NUMBER_KEY.to_vec(),
                numbers.next.to_be_bytes().to_vec(),
            ));
        }
        // Each request is its own batch so that a truncate and a later append of the same
        // index never share a sequence number; one fsync then covers them all.
        let mut durable = Vec::new();
        for req in reqs {
            let res = match &failed {
                // A failed write poisons fjall: refuse everything after it.
                Some(e) => Err(Error::Corrupt(format!("an earlier write failed: {e}"))),
                None => apply_ops(&db, req.ops),
            };
            match res {
                Ok(()) => {
                    if let Some(w) = req.written {
                        w();
                    }
                    durable.extend(req.durable);
                }
                Err(e) => {
                    fail(&mut failed, format!("writing to the journal failed: {e}"));
                    if let Some(cb) = req.durable {
                        cb(Err(std::io::Error::other(e.to_string())));
                    }
                }
            }
        }
        if durable.is_empty() {
            continue;
        }
        let start = std::time::Instant::now();
        let synced = match &failed {
            // Never fsync again after a failure: it could report pages lost by the last one.
            Some(e) => Err(format!("an earlier write failed: {e}")),
            None => db.persist(PersistMode::SyncData).map_err(|e| e.to_string()),
        };
        fsync.observe(start.elapsed());
        match &synced {
            Ok(()) => numbers.durable.store(numbers.next, Ordering::Release),
            Err(e) => fail(&mut failed, format!("fsync of the journal failed: {e}")),
        }
        for cb in durable {
            cb(synced.clone().map_err(std::io::Error::other));
        }
    }
}
