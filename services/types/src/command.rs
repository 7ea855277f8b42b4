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
        }
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
}
