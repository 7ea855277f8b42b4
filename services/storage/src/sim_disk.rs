//! How a simulated node's disk behaves ([`DiskModel`]; the groups' in-memory logs and state
//! machines on it are kept outside the node by [`crate::MemDisk`]) — one journal per node, as the fjall
//! store has: every log append and state-machine commit takes the next sequence number, one
//! flusher makes appends durable in order after the fsync delay (a slow disk when it is long),
//! and an fsync covers everything written before it. A process crash keeps what was written
//! (the page cache outlives the process); a machine crash ([`crate::MemDisk::lose_unflushed`]) drops
//! every write after the last fsync, in every group, log and state machine alike.

use meridian_types::raft::TypeConfig;
use openraft::storage::IOFlushed;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Most appends waiting for the simulated fsync; an append waits for room.
pub const FLUSH_QUEUE_MAX: usize = 4096;

/// How a simulated disk behaves, and where its journal stands. Shared by every group's log and
/// state machine on the node; the knobs may change while the node runs (a slow-disk fault).
#[derive(Debug, Default)]
pub struct DiskModel {
    /// Delay of each fsync, in microseconds (0: durable at once).
    pub fsync_delay_us: AtomicU64,
    /// Test-only bug: acknowledge an append before its fsync.
    pub ack_before_fsync: AtomicBool,
    /// Sequence of the last write, and of the last durable one.
    written: AtomicU64,
    durable: AtomicU64,
    /// Appends waiting in the flusher's queue.
    pending: AtomicUsize,
    /// The flusher's queue while a flusher runs (it dies with the node's runtime).
    flusher: Mutex<Option<tokio::sync::mpsc::Sender<Flush>>>,
}

/// One append waiting for its fsync.
struct Flush {
    seq: u64,
    due: tokio::time::Instant,
    callback: Option<IOFlushed<TypeConfig>>,
}

impl DiskModel {
    /// The next write's sequence number.
    pub(crate) fn next_seq(&self) -> u64 {
        self.written.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The last durable write.
    pub(crate) fn durable(&self) -> u64 {
        self.durable.load(Ordering::SeqCst)
    }

    /// A state-machine commit `seq` was written: durable at once when nothing waits for an
    /// fsync and the disk has no delay, else with the next fsync.
    pub(crate) fn wrote(&self, seq: u64) {
        if self.fsync_delay_us.load(Ordering::Relaxed) == 0
            && self.pending.load(Ordering::SeqCst) == 0
        {
            self.durable.fetch_max(seq, Ordering::SeqCst);
        }
    }

    /// Log append `seq` was written; `callback` runs once it is durable (at once without a
    /// delay, or with the injected bug).
    pub(crate) async fn append(
        self: &Arc<Self>,
        seq: u64,
        callback: IOFlushed<TypeConfig>,
    ) -> std::io::Result<()> {
        let delay = self.fsync_delay_us.load(Ordering::Relaxed);
        if delay == 0 && self.pending.load(Ordering::SeqCst) == 0 {
            self.durable.fetch_max(seq, Ordering::SeqCst);
            callback.io_completed(Ok(()));
            return Ok(());
        }
        let tx = {
            let mut f = self.flusher.lock().unwrap_or_else(|p| p.into_inner());
            if f.as_ref().is_none_or(|tx| tx.is_closed()) {
                // No flusher yet in this runtime (see `reopened` for what a restart keeps).
                let (tx, rx) = tokio::sync::mpsc::channel(FLUSH_QUEUE_MAX);
                tokio::spawn(flusher(Arc::downgrade(self), rx));
                *f = Some(tx);
            }
            self.pending.fetch_add(1, Ordering::SeqCst);
            f.clone()
        };
        let callback = if self.ack_before_fsync.load(Ordering::Relaxed) {
            callback.io_completed(Ok(()));
            None
        } else {
            Some(callback)
        };
        let due = tokio::time::Instant::now() + std::time::Duration::from_micros(delay);
        match tx {
            Some(tx) => tx
                .send(Flush { seq, due, callback })
                .await
                .map_err(|_| std::io::Error::other("the simulated disk's flusher stopped")),
            None => Err(std::io::Error::other("the simulated disk has no flusher")),
        }
    }

    /// The node starts (again): like fjall, which fsyncs its journal when it opens, everything
    /// written so far is durable.
    pub fn reopened(&self) {
        *self.flusher.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.pending.store(0, Ordering::SeqCst);
        self.durable
            .fetch_max(self.written.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// A machine's crash: nothing waits for an fsync any more (the node is down).
    pub(crate) fn crashed(&self) {
        *self.flusher.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.pending.store(0, Ordering::SeqCst);
        self.written.store(self.durable(), Ordering::SeqCst);
    }
}

/// Makes appends durable in order, each at its due time; ends with the node's runtime.
async fn flusher(disk: std::sync::Weak<DiskModel>, mut rx: tokio::sync::mpsc::Receiver<Flush>) {
    while let Some(f) = rx.recv().await {
        tokio::time::sleep_until(f.due).await;
        if let Some(disk) = disk.upgrade() {
            disk.durable.fetch_max(f.seq, Ordering::SeqCst);
            disk.pending.fetch_sub(1, Ordering::SeqCst);
        }
        if let Some(cb) = f.callback {
            cb.io_completed(Ok(()));
        }
    }
}
