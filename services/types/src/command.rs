//! Commands a group's state machine applies, and what it answers. Applying is deterministic:
//! every replica that applies the same log reaches the same state and the same results.

use serde::{Deserialize, Serialize};

/// A key as stored, with its history counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: u64,
    pub mod_revision: u64,
    /// Number of writes since creation (1 after the create); 0 never appears on a live key.
    pub version: u64,
    pub lease: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
    /// The key left this group with its moved subtree (a domain move's release): the data did
    /// not change, so watchers never see it; the store drops the key.
    Dropped,
    /// The key arrived with a moved subtree (a domain move's pre-copy or import): not a change
    /// of the data either, so watchers never see it and it has no history; the store writes it.
    Placed,
}

/// One change, as a watcher sees it. For a delete, `kv` holds the key and the deleting revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    pub prev_kv: Option<KeyValue>,
}

impl Event {
    pub fn revision(&self) -> u64 {
        self.kv.mod_revision
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutOp {
    pub key: String,
    pub value: Vec<u8>,
    /// The key's version must equal this (0: the key must not exist).
    pub expected_version: Option<u64>,
    /// The key's mod_revision must equal this (0: the key must not exist).
    pub expected_mod_revision: Option<u64>,
    /// Append a monotonic zero-padded suffix (the revision) to the key, as ZooKeeper `create -s`.
    pub sequential: bool,
    pub lease: u64,
    pub prev_kv: bool,
}

impl PutOp {
    /// An unconditional, non-sequential put without lease.
    pub fn new(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            expected_version: None,
            expected_mod_revision: None,
            sequential: false,
            lease: 0,
            prev_kv: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteOp {
    pub key: String,
    /// Delete every key that starts with `key`.
    pub prefix: bool,
    pub expected_version: Option<u64>,
    pub expected_mod_revision: Option<u64>,
    pub prev_kv: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    Value,
    Version,
    ModRevision,
    CreateRevision,
    Exists,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareResult {
    Equal,
    NotEqual,
    Greater,
    Less,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub key: String,
    pub target: CompareTarget,
    pub result: CompareResult,
    pub value: Vec<u8>,
    pub number: u64,
    pub exists: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Put(PutOp),
    Delete(DeleteOp),
    Get { key: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    Put {
        key: String,
        succeeded: bool,
        prev_kv: Option<KeyValue>,
        /// When a condition failed: the key as it is.
        current: Option<KeyValue>,
    },
    Delete {
        succeeded: bool,
        deleted: u64,
        prev_kvs: Vec<KeyValue>,
    },
    Get {
        kv: Option<KeyValue>,
    },
}

/// What a client proposes to a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Put(PutOp),
    Delete(DeleteOp),
    Txn {
        compares: Vec<Compare>,
        success: Vec<Op>,
        failure: Vec<Op>,
    },
    /// Independent commands of several clients proposed as one entry (one fsync for all). The
    /// proposer only batches commands whose keys are disjoint, so each key changes at most once
    /// per revision and a mod_revision still names exactly one value. Never nested.
    Batch(Vec<Command>),
    Lease(LeaseCommand),
    /// A change to the placement map; the global group only.
    Placement(crate::placement::PlacementChange),
    /// A domain move's step in the source or the target group (docs/placement.md).
    Move(MoveCommand),
    /// A write a router sends to a move's target before its map shows the move committed
    /// (the source answered `WrongGroup`): applied only once move `id`'s import is here —
    /// the import is the point where the target owns the subtree — otherwise answered
    /// `WrongGroup{id}`, changing nothing. Never nested.
    AfterImport {
        id: u64,
        cmd: Box<Command>,
    },
    /// An entry's command with its leader's [`Stamp`](crate::hlc::Stamp): the commit
    /// timestamp and, optionally, a closed-timestamp promise (docs/closed-timestamps.md). Only
    /// the proposer makes it, around a whole entry; it answers
    /// [`CommandResult::Stamped`]. Never nested.
    Stamped {
        stamp: crate::hlc::Stamp,
        cmd: Box<Command>,
    },
}

/// What openraft logs of an entry: the command's kind and key, never a value.
impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Put(op) => write!(f, "put {} ({} bytes)", op.key, op.value.len()),
            Command::Delete(op) => write!(f, "delete {}", op.key),
            Command::Txn {
                compares,
                success,
                failure,
            } => write!(
                f,
                "txn ({} compares, {}/{} ops)",
                compares.len(),
                success.len(),
                failure.len()
            ),
            Command::Batch(cmds) => write!(f, "batch of {}", cmds.len()),
            Command::Lease(_) => f.write_str("lease"),
            Command::Placement(_) => f.write_str("placement"),
            Command::Move(_) => f.write_str("move"),
            Command::AfterImport { id, cmd } => write!(f, "after import {id}: {cmd}"),
            Command::Stamped { stamp, cmd } => write!(f, "{cmd} at {}", stamp.at),
        }
    }
}

/// The source's and the target's halves of a domain move. Each is idempotent, so a driver that
/// crashed can repeat the step it was at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MoveCommand {
    /// Source: from this entry on, writes under `prefix` are answered `WrongGroup{epoch}`;
    /// answers every key under it (`Exported`). Refused (nothing changes) while a key under it
    /// is attached to a lease or a lock there is held or queued for.
    /// Keys under `except` (nested domains that stay) are neither frozen nor exported.
    Freeze {
        prefix: String,
        epoch: u64,
        except: Vec<String>,
    },
    /// Source, when the move is abandoned before the import: writes are accepted again.
    Unfreeze { prefix: String, epoch: u64 },
    /// Source, once the target owns the subtree: its keys are dropped (no watcher sees it) and
    /// reads under it are answered `WrongGroup` from then on, like writes.
    Release { prefix: String, epoch: u64 },
    /// Target, when move `id` is rolled back: drops what its import created (keys under
    /// `except` stay) — nothing, when it never imported.
    Discard {
        prefix: String,
        id: u64,
        except: Vec<String>,
    },
    /// Target: creates `keys` at this entry's revision (versions kept); a repeat of move `id`
    /// changes nothing.
    Import {
        prefix: String,
        id: u64,
        keys: Vec<KeyValue>,
    },
    /// Source, before the freeze (the pre-copy): at most `limit` keys under `prefix` after
    /// `after` in key order, as they are at this entry (`Exported`). Changes nothing.
    Export {
        prefix: String,
        except: Vec<String>,
        after: String,
        limit: u32,
    },
    /// Target, before the import: writes a page of the pre-copy (versions kept) where no
    /// client sees it yet — routers still send the prefix to the source. Answers `Applied`, or
    /// `Imported{at}` when move `id` already imported (0: rolled back).
    Stage {
        prefix: String,
        id: u64,
        keys: Vec<KeyValue>,
    },
    /// Source: `Freeze`, answering only what changed after revision `after` (the pre-copy's
    /// first page), how many keys are under the prefix, and with `names` the name of each
    /// (`Delta`).
    FreezeAfter {
        prefix: String,
        epoch: u64,
        except: Vec<String>,
        after: u64,
        names: bool,
    },
    /// Target: the import that completes a pre-copy — `changed` written at this entry's
    /// revision; once per move `id` (`Imported{at}`). Staged keys the source no longer has are
    /// dropped: those not in `present` when it is given; without it the subtree must come to
    /// `count` keys (nothing was deleted during the pre-copy), else it is refused with
    /// `names_needed`, changing nothing.
    ImportDelta {
        prefix: String,
        id: u64,
        except: Vec<String>,
        changed: Vec<KeyValue>,
        present: Option<Vec<String>>,
        count: u64,
    },
    /// Source, once the target owns the subtree: reads under it are refused from now on and at
    /// most `limit` of its keys are dropped (`Released{left}`); repeated until none is left.
    ReleaseSome {
        prefix: String,
        epoch: u64,
        limit: u32,
    },
}

impl Command {
    /// The keys this command reads or writes, or `None` when it may touch any key under a
    /// prefix (and so cannot share an entry with another command).
    pub fn keys(&self) -> Option<Vec<&str>> {
        fn op_key(op: &Op) -> Option<&str> {
            match op {
                Op::Put(p) if p.sequential => Some(""),
                Op::Put(p) => Some(p.key.as_str()),
                Op::Delete(d) if d.prefix => None,
                Op::Delete(d) => Some(d.key.as_str()),
                Op::Get { key } => Some(key.as_str()),
            }
        }
        match self {
            // A sequential key is new and unique: it conflicts with nothing.
            Command::Put(p) if p.sequential => Some(Vec::new()),
            Command::Put(p) => Some(vec![p.key.as_str()]),
            Command::Delete(d) if d.prefix => None,
            Command::Delete(d) => Some(vec![d.key.as_str()]),
            Command::Txn {
                compares,
                success,
                failure,
            } => {
                let mut keys: Vec<&str> = compares.iter().map(|c| c.key.as_str()).collect();
                for op in success.iter().chain(failure) {
                    match op_key(op)? {
                        "" => {}
                        k => keys.push(k),
                    }
                }
                Some(keys)
            }
            Command::Batch(_) => None,
            Command::AfterImport { cmd, .. } | Command::Stamped { cmd, .. } => cmd.keys(),
            Command::Placement(_) => Some(vec![
                crate::placement::PLACEMENT_KEY,
                crate::placement::PROFILES_KEY,
            ]),
            // A move step touches a whole subtree.
            Command::Move(_) => None,
            Command::Lease(l) => match l {
                // A grant only draws a number; a refresh or checkpoint touches no key.
                LeaseCommand::Grant { .. }
                | LeaseCommand::Refresh { .. }
                | LeaseCommand::Checkpoint { .. } => Some(Vec::new()),
                LeaseCommand::Acquire { name, .. } | LeaseCommand::DelayEnd { name, .. } => {
                    Some(vec![name.as_str()])
                }
                // These may delete keys anywhere, or change another lock's queue.
                _ => None,
            },
        }
    }
}

/// One key (or, with `prefix`, every key under it) that a client command touches, and whether
/// it changes it (`write`) or only reads it (a txn's compares and gets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Touch<'a> {
    pub key: &'a str,
    pub prefix: bool,
    pub write: bool,
}

impl Command {
    /// What a client command touches, in order: a put or delete its key (or prefix), a txn
    /// every key it compares, then every op of both branches. Batches, lease, placement and
    /// move commands touch nothing here (they are routed by what they name).
    pub fn touches(&self) -> Vec<Touch<'_>> {
        fn op_touch(op: &Op) -> Touch<'_> {
            match op {
                Op::Put(p) => Touch {
                    key: &p.key,
                    prefix: false,
                    write: true,
                },
                Op::Delete(d) => Touch {
                    key: &d.key,
                    prefix: d.prefix,
                    write: true,
                },
                Op::Get { key } => Touch {
                    key,
                    prefix: false,
                    write: false,
                },
            }
        }
        match self {
            Command::Put(p) => vec![Touch {
                key: &p.key,
                prefix: false,
                write: true,
            }],
            Command::Delete(d) => vec![Touch {
                key: &d.key,
                prefix: d.prefix,
                write: true,
            }],
            Command::Txn {
                compares,
                success,
                failure,
            } => compares
                .iter()
                .map(|c| Touch {
                    key: &c.key,
                    prefix: false,
                    write: false,
                })
                .chain(success.iter().chain(failure).map(op_touch))
                .collect(),
            Command::AfterImport { cmd, .. } | Command::Stamped { cmd, .. } => cmd.touches(),
            Command::Batch(_) | Command::Lease(_) | Command::Placement(_) | Command::Move(_) => {
                Vec::new()
            }
        }
    }

    /// The keys (flag false) and prefixes (flag true) a client command touches, in order:
    /// what routing and residency judge.
    pub fn scopes(&self) -> Vec<(&str, bool)> {
        self.touches()
            .into_iter()
            .map(|t| (t.key, t.prefix))
            .collect()
    }
}

/// What applying an entry answered. Blank and membership entries answer `Applied`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    Applied,
    Op(OpResult),
    Txn {
        succeeded: bool,
        results: Vec<OpResult>,
    },
    /// One result per command of a [`Command::Batch`], in order.
    Batch(Vec<CommandResult>),
    Lease(LeaseResult),
    /// A `MoveCommand::Freeze`: every key under the prefix as it is now.
    Exported(Vec<KeyValue>),
    /// A `MoveCommand::Import`: the revision the move's import happened at (this entry's, or
    /// the first one's when repeated; 0 when the move was rolled back before it).
    Imported {
        at: u64,
    },
    /// A write under a subtree that moved away (frozen at `epoch`): route it again once the
    /// placement map is past that epoch. Nothing changed.
    WrongGroup {
        epoch: u64,
    },
    Rejected(Rejection),
    /// A `MoveCommand::FreezeAfter`: the keys changed after the pre-copy began, how many keys
    /// are under the prefix now, and (when asked) their names.
    Delta {
        changed: Vec<KeyValue>,
        count: u64,
        present: Vec<String>,
    },
    /// A `MoveCommand::ReleaseSome`: how many keys of the subtree the source still holds.
    Released {
        left: u64,
    },
    /// A [`Command::Stamped`]: the entry's commit timestamp (the leader's stamp raised above
    /// every earlier entry's and every promise: `Stamps::apply`) and its command's result.
    Stamped {
        at: crate::hlc::Timestamp,
        result: Box<CommandResult>,
    },
}

impl CommandResult {
    /// The result without its commit timestamp ([`CommandResult::Stamped`]), and the
    /// timestamp when it had one.
    pub fn unstamped(self) -> (CommandResult, Option<crate::hlc::Timestamp>) {
        match self {
            CommandResult::Stamped { at, result } => (*result, Some(at)),
            other => (other, None),
        }
    }

    /// `self` with the commit timestamp `at`, when there is one.
    pub fn stamped(self, at: Option<crate::hlc::Timestamp>) -> CommandResult {
        match at {
            Some(at) => CommandResult::Stamped {
                at,
                result: Box::new(self),
            },
            None => self,
        }
    }
}

/// How a lock shares its holders. Fixed by the first acquire of a lock; later acquires must
/// ask for the same kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockKind {
    /// One holder at a time.
    Mutex,
    /// Any number of shared holders, or one exclusive holder.
    ReadWrite,
    /// At most this many holders (never 0).
    Semaphore(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockMode {
    Exclusive,
    Shared,
}

/// A lease's replicated record. Deadlines are not replicated: the leader keeps them on its
/// monotonic clock (see `meridian-locks::ExpiryTracker`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub id: u64,
    pub ttl_ms: u64,
    /// Revision of the grant or of the last refresh that reached it.
    pub refreshed: u64,
    /// How long leaders have seen this lease without a keepalive since `refreshed`, as
    /// committed by checkpoints. A new leader gives the lease `ttl_ms - idle_ms` more.
    pub idle_ms: u64,
}

/// Lease and lock commands. Lease ids carry their group in the top 16 bits, so a router can
/// route a keepalive without asking anyone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseCommand {
    Grant {
        group: u64,
        ttl_ms: u64,
    },
    /// One aggregated keepalive: every lease a router's clients kept alive since its last one.
    Refresh {
        ids: Vec<u64>,
    },
    Revoke {
        id: u64,
    },
    /// Leader only: these leases (at the refresh revision the leader saw) ran out of time.
    Expire {
        leases: Vec<(u64, u64)>,
    },
    /// Leader only: (id, refreshed, idle_ms) — time already spent without a keepalive.
    Checkpoint {
        leases: Vec<(u64, u64, u64)>,
    },
    /// Queue for a lock (or take it at once). `wait: false` leaves no trace when not granted.
    Acquire {
        name: String,
        lease: u64,
        kind: LockKind,
        mode: LockMode,
        value: Vec<u8>,
        lock_delay_ms: u64,
        wait: bool,
    },
    /// Leave a lock's queue or give up holding it (explicit: no lock-delay).
    Release {
        key: String,
    },
    /// Replace the value of a held lock's key (election: proclaim).
    Proclaim {
        key: String,
        value: Vec<u8>,
    },
    /// Leader only: the lock-delay left by an expired holder at `seq` is over.
    DelayEnd {
        name: String,
        seq: u64,
    },
}

/// What a lease or lock command answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseResult {
    Granted {
        id: u64,
        ttl_ms: u64,
    },
    /// Per id of a refresh: its TTL, or `None` when the lease no longer exists.
    Refreshed(Vec<Option<u64>>),
    Revoked {
        keys_deleted: u64,
    },
    /// Expire / checkpoint / delay end: how many leases or delays it affected.
    Done(u64),
    /// The waiter's key and, when held, the fencing revision.
    Queued {
        key: String,
        granted: Option<u64>,
    },
    /// A try-acquire that found the lock taken: the current holders' keys.
    Busy {
        holders: Vec<String>,
    },
    Released {
        was_holder: bool,
    },
    Proclaimed {
        revision: u64,
    },
}

/// A command the state machine refused; nothing changed. `rule` is machine-readable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub rule: String,
    pub message: String,
}

/// Lease ids: group in the top 16 bits, a per-group sequence below.
pub const LEASE_GROUP_SHIFT: u32 = 48;

pub fn lease_group(id: u64) -> u64 {
    id >> LEASE_GROUP_SHIFT
}
