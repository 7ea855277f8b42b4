//! The recorded history: what each client session asked, in its order, and what it was told.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// One completed operation on one key, as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpKind {
    /// `revision`: the group's revision at which this write was committed (None = outcome unknown).
    Write {
        key: String,
        value: String,
        revision: Option<u64>,
    },
    /// `value`: None = key absent. `mod_revision`: the observed key's mod_revision if present.
    Read {
        key: String,
        value: Option<String>,
        mod_revision: Option<u64>,
    },
}

impl OpKind {
    /// The key this operation touched.
    pub fn key(&self) -> &str {
        match self {
            OpKind::Write { key, .. } | OpKind::Read { key, .. } => key,
        }
    }
}

/// An operation of `session` on a key owned by Raft group `group`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub session: usize,
    pub group: u64,
    pub kind: OpKind,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = self.group;
        match &self.kind {
            OpKind::Write {
                key,
                value,
                revision: Some(revision),
            } => write!(
                f,
                "write {key} = {value:?} (group {group}, revision {revision})"
            ),
            OpKind::Write {
                key,
                value,
                revision: None,
            } => write!(
                f,
                "write {key} = {value:?} (group {group}, revision unknown)"
            ),
            OpKind::Read {
                key,
                value: Some(value),
                mod_revision: Some(mod_revision),
            } => write!(
                f,
                "read {key} -> {value:?} (group {group}, mod_revision {mod_revision})"
            ),
            OpKind::Read {
                key,
                value: Some(value),
                mod_revision: None,
            } => write!(f, "read {key} -> {value:?} (group {group})"),
            OpKind::Read {
                key, value: None, ..
            } => write!(f, "read {key} -> absent (group {group})"),
        }
    }
}

/// Completed operations grouped by session, each session in program order.
///
/// Sessions are keyed by `Op::session`; a map rather than a vector so that a sparse or huge
/// session number costs nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    ops_by_session: BTreeMap<usize, Vec<Op>>,
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a completed op to its session (sessions are created on demand).
    pub fn push(&mut self, op: Op) {
        self.ops_by_session.entry(op.session).or_default().push(op);
    }

    /// Concatenates sessions' ops, keyed by `op.session`, in the order the histories are given.
    pub fn merge(histories: impl IntoIterator<Item = History>) -> History {
        let mut merged = History::new();
        for history in histories {
            for op in history.ops_by_session.into_values().flatten() {
                merged.push(op);
            }
        }
        merged
    }

    /// Number of operations over all sessions.
    pub fn len(&self) -> usize {
        self.ops_by_session.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.ops_by_session.values().all(Vec::is_empty)
    }

    /// The `index`-th operation of `session`: resolves a witness entry back to its op.
    pub fn get(&self, session: usize, index: usize) -> Option<&Op> {
        self.ops_by_session.get(&session)?.get(index)
    }

    /// Sessions in increasing number, each with its ops in program order.
    pub fn sessions(&self) -> impl Iterator<Item = (usize, &[Op])> + '_ {
        self.ops_by_session
            .iter()
            .map(|(session, ops)| (*session, ops.as_slice()))
    }
}
