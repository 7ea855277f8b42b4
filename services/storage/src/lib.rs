//! Durable storage for a node's Raft groups.
//!
//! - [`kv`]: a group's keys in memory and the deterministic rules that change them.
//! - [`leases`]: leases and the keys attached to them; [`locks`]: lock queues (both inside
//!   [`KvState`], both deterministic).
//! - [`moves`]: a domain move's source half (freeze, export, unfreeze) and target half
//!   (import), and the `WrongGroup` answer to writes under a subtree that moved away.
//! - [`placement`]: the placement map as one reserved key of the global group's state.
//! - [`sm`]: the openraft state machine, generic over [`persist::SmPersist`].
//! - [`group`]: the read/watch face of a group's applied state, shared with the server.
//! - [`writer`]: the node's one writer thread: every group's log and state-machine batches in
//!   queue order, one fsync for many groups (group commit).
//! - [`durable_mark`]: the writer's group commits numbered, the last durable one recorded
//!   outside the journal and checked on open (a journal that lost durable batches is refused).
//! - [`fjall_log`], [`fjall_sm`]: the on-disk implementations (one fjall database per node,
//!   per group keyspaces `g<N>_log`, `g<N>_raft`, `g<N>_kv`, `g<N>_hist`, `g<N>_sm`).
//! - [`mem`]: the in-memory implementations used by deterministic simulation;
//!   [`sim_disk`]: how the simulated disk behaves (fsync delay, machine crashes); [`MemDisk`]
//!   holds a simulated node's groups on it.
//! - [`backup`]: backup files (every group's copy at a revision, checksummed) and the restore
//!   of a copy into a new node's empty store.
//!
//! Invariants: an append is acknowledged to openraft only after fsync; `last_applied` is
//! written in the same atomic batch as the data it applied; the log has no holes.

pub mod backup;
pub mod durable_mark;
pub mod error;
pub mod fjall_log;
pub mod fjall_sm;
pub mod group;
pub mod kv;
mod lease_rules;
pub mod leases;
mod lock_rules;
pub mod locks;
pub mod mem;
pub mod moves;
pub mod persist;
pub mod placement;
pub mod recent;
pub mod sequence;
pub mod sim_disk;
pub mod sm;
pub mod steps;
pub mod writer;

pub use error::{Error, Result};
pub use fjall_log::FjallLogStore;
pub use fjall_sm::FjallSm;
pub use group::{GroupShared, Notice};
pub use kv::KvState;
pub use mem::{MemLogStore, MemSm};
pub use sim_disk::DiskModel;
pub use sm::{StateMachine, HISTORY_REVISIONS_DEFAULT};

use fjall::{Database, KeyspaceCreateOptions};
use meridian_types::GroupId;
use std::path::Path;
use std::sync::{Arc, Mutex};
use writer::LogWriter;

/// One fjall database per node, and the log writer every group shares.
pub struct NodeStore {
    db: Database,
    writer: LogWriter,
    _writer_thread: Arc<std::thread::JoinHandle<()>>,
}

impl NodeStore {
    /// The durations of the log writer's fsyncs (one per group commit).
    pub fn fsync_latency(&self) -> Arc<meridian_types::metrics::Histogram> {
        self.writer.fsync_latency()
    }

    /// The first write or fsync of this store that failed, once there is one; the store then
    /// refuses every later write (see [`writer::LogWriter::failure`]). The server stops on it.
    pub fn failure(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.writer.failure()
    }

    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let db = Database::builder(dir)
            // The log writer decides when to fsync; nothing else should.
            .manual_journal_persist(true)
            .open()
            .map_err(opening_error)?;
        let meta = db
            .keyspace(durable_mark::META_KEYSPACE, KeyspaceCreateOptions::default)
            .map_err(opening_error)?;
        let recovered = durable_mark::check(dir, &meta)?;
        let (writer, handle) = LogWriter::start(db.clone(), dir, meta, recovered)?;
        Ok(Self {
            db,
            writer,
            _writer_thread: Arc::new(handle),
        })
    }

    /// Waits until everything queued so far (logs and state machines of every group) is
    /// committed and fsynced. Call before closing a store that will be reopened.
    pub async fn sync(&self) -> Result<()> {
        self.writer.write_durable(Vec::new()).await
    }

    /// The log store and state machine of `group`, created empty if new.
    pub fn group(
        &self,
        group: GroupId,
        history_revisions_max: u64,
    ) -> Result<(FjallLogStore, StateMachine)> {
        let ks = |suffix: &str| {
            self.db.keyspace(
                &format!("g{}_{suffix}", group.0),
                KeyspaceCreateOptions::default,
            )
        };
        let sm = FjallSm::new(
            self.db.clone(),
            ks("kv")?,
            ks("hist")?,
            ks("sm")?,
            self.writer.clone(),
        );
        let sm = StateMachine::open(group, Arc::new(sm), history_revisions_max)?;
        let log = FjallLogStore::new(ks("log")?, ks("raft")?, self.writer.clone())?
            .with_steps(sm.shared().steps().clone());
        Ok((log, sm))
    }
}

/// Names a store that fails its checksums as corrupt, and says what to do: fjall checks every
/// journal batch (xxh3) when it recovers and every table block when it reads one. Only an
/// incomplete last batch (a write torn by a crash, never fsynced, so never acknowledged) is
/// dropped silently; anything else that does not check out stops the node from starting.
fn opening_error(e: fjall::Error) -> Error {
    let corrupt = match &e {
        fjall::Error::JournalRecovery(r) => Some(format!("the journal fails recovery ({r:?})")),
        fjall::Error::Storage(fjall::LsmError::ChecksumMismatch { got, expected }) => Some(
            format!("a table block fails its checksum (got {got:?}, expected {expected:?})"),
        ),
        fjall::Error::InvalidTrailer
        | fjall::Error::InvalidTag(_)
        | fjall::Error::Unrecoverable => Some(format!("the journal cannot be decoded ({e:?})")),
        fjall::Error::Storage(
            fjall::LsmError::InvalidTrailer
            | fjall::LsmError::InvalidTag(_)
            | fjall::LsmError::InvalidHeader(_)
            | fjall::LsmError::Unrecoverable,
        ) => Some(format!("a table file cannot be decoded ({e:?})")),
        _ => None,
    };
    match corrupt {
        Some(what) => Error::Corrupt(format!(
            "{what}: refusing to start rather than serve data that does not check out; \
             restore this node from a backup (meridian snapshot restore) or replace it as a dead \
             voter (docs/operations.md, \"When the data does not check out\")"
        )),
        None => Error::Fjall(e),
    }
}

/// A node's in-memory "disk" for deterministic simulation: every group's log and state machine,
/// kept outside the node so that a simulated crash and restart finds what it had written. With
/// an fsync delay ([`MemDisk::model`]) writes become durable later and
/// [`MemDisk::lose_unflushed`] drops the rest (a machine's crash); without, everything is
/// durable at once. Cheap to clone; clones share the contents.
#[derive(Clone, Default)]
pub struct MemDisk {
    groups: Arc<Mutex<std::collections::BTreeMap<u64, MemGroup>>>,
    model: Arc<DiskModel>,
}

/// One group's log and state-machine contents on a [`MemDisk`].
type MemGroup = (MemLogStore, Arc<MemSm>);

impl MemDisk {
    /// The log store and state machine of `group`, created empty if new, else reloaded from
    /// what the previous incarnation left.
    pub fn group(
        &self,
        group: GroupId,
        history_revisions_max: u64,
    ) -> Result<(MemLogStore, StateMachine)> {
        let (log, sm) = self
            .groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(group.0)
            .or_insert_with(|| {
                (
                    MemLogStore::on(self.model.clone()),
                    Arc::new(MemSm::on(self.model.clone())),
                )
            })
            .clone();
        let sm = StateMachine::open(group, sm, history_revisions_max)?;
        Ok((log, sm))
    }

    /// How this disk behaves (fsync delay, injected bugs); changeable while the node runs.
    pub fn model(&self) -> &DiskModel {
        &self.model
    }

    /// A machine's crash: every write after the last fsync is lost, in every group's log and
    /// state machine. Returns the log entries lost. Call only while the node is down.
    pub fn lose_unflushed(&self) -> usize {
        let durable = self.model.durable();
        let lost = self
            .groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|(log, sm)| {
                sm.lose_after(durable);
                log.lose_after(durable)
            })
            .sum();
        self.model.crashed();
        lost
    }
}

/// An in-memory log store and state machine for `group`.
pub fn mem_group(group: GroupId, history_revisions_max: u64) -> (MemLogStore, StateMachine) {
    let sm = StateMachine::open(group, Arc::new(MemSm::default()), history_revisions_max)
        .unwrap_or_else(|_| unreachable!("the in-memory store cannot fail to load"));
    (MemLogStore::default(), sm)
}
