//! The session a client carries with every request (DESIGN.md §2): its version vector (group →
//! highest revision observed) and the group of its last operation, kept up by each operation's
//! [`SessionState::begin`] and [`SessionState::finish`]. No IO: [`crate::Client`] holds one
//! behind its lock and does the calls.

use meridian_proto::kv as pb;
use std::collections::BTreeMap;

/// `last_group` when the session's previous operation is not known for sure.
pub const UNKNOWN_GROUP: u64 = u64::MAX;

/// What an operation is, for the session's bookkeeping and retries.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    /// Sets the session's last group; retried only when it surely was not applied.
    Write,
    /// A sequential or linearizable read: sets the session's last group.
    Read,
    /// A stale read: the group was not synced, so the last group stays what it was.
    StaleRead,
}

/// An operation in flight: the overlap epoch it started in.
pub(crate) struct Ticket {
    epoch: u64,
}

#[derive(Default)]
pub(crate) struct SessionState {
    /// Group → highest revision observed.
    vector: BTreeMap<u64, u64>,
    /// The group of the session's last operation (0 = none yet; [`UNKNOWN_GROUP`] when
    /// operations overlapped, failed or a vector was adopted: the next read of any group syncs).
    last_group: u64,
    /// Operations of this session in flight, and a counter bumped whenever one starts while
    /// another runs: an operation that overlapped another has no "previous group".
    in_flight: u32,
    overlap_epoch: u64,
    /// The highest timestamp the session has seen (docs/closed-timestamps.md).
    timestamp: Option<pb::HlcTimestamp>,
}

impl SessionState {
    /// Raises the vector to `revisions` (group, revision) where they are higher; never lowers it.
    fn merge<'a>(&mut self, revisions: impl IntoIterator<Item = (&'a u64, &'a u64)>) {
        for (group, rev) in revisions {
            let e = self.vector.entry(*group).or_insert(0);
            *e = (*e).max(*rev);
        }
    }

    /// Merges a response's vector and its own group's revision (it never changes the last
    /// group: watch and lock answers use this alone).
    pub(crate) fn merge_header(&mut self, h: &pb::ResponseHeader) {
        self.merge(h.vector.iter().chain([(&h.group, &h.revision)]));
        self.timestamp = pb::HlcTimestamp::latest(self.timestamp, h.timestamp);
    }

    /// Presents a vector from an earlier session: merged, and the next read of any group syncs.
    pub(crate) fn observe(&mut self, vector: &BTreeMap<u64, u64>) {
        self.merge(vector);
        self.last_group = UNKNOWN_GROUP;
    }

    /// Continues a session from elsewhere: merges its vector, and keeps its last group when
    /// this one has none of its own (else: unknown).
    pub(crate) fn adopt(&mut self, session: &pb::Session) {
        self.merge(&session.vector);
        self.timestamp = pb::HlcTimestamp::latest(self.timestamp, session.timestamp);
        self.last_group = match self.last_group {
            0 => session.last_group,
            mine if mine == session.last_group => mine,
            _ => UNKNOWN_GROUP,
        };
    }

    pub(crate) fn begin(&mut self) -> Ticket {
        self.in_flight += 1;
        if self.in_flight > 1 {
            self.overlap_epoch += 1;
        }
        Ticket {
            epoch: self.overlap_epoch,
        }
    }

    /// Ends an operation: merges its header, and records its group as the session's last one
    /// only if it ran alone and succeeded (a read that follows must then sync any other group).
    pub(crate) fn finish(
        &mut self,
        ticket: Ticket,
        header: Option<&pb::ResponseHeader>,
        kind: OpKind,
    ) {
        if let Some(h) = header {
            self.merge_header(h);
        }
        self.in_flight = self.in_flight.saturating_sub(1);
        let alone = ticket.epoch == self.overlap_epoch && self.in_flight == 0;
        match (header, kind) {
            (Some(h), OpKind::Write | OpKind::Read) if alone => self.last_group = h.group,
            (Some(_), OpKind::StaleRead) if alone => {}
            _ => self.last_group = UNKNOWN_GROUP,
        }
    }

    /// What every request carries: the vector and the group of the last operation.
    pub(crate) fn to_proto(&self) -> pb::Session {
        pb::Session {
            vector: self.vector.iter().map(|(k, v)| (*k, *v)).collect(),
            last_group: self.last_group,
            timestamp: self.timestamp,
        }
    }

    pub(crate) fn vector(&self) -> &BTreeMap<u64, u64> {
        &self.vector
    }

    pub(crate) fn last_group(&self) -> u64 {
        self.last_group
    }

    /// Highest revision seen of `group` (0 if none).
    pub(crate) fn seen(&self, group: u64) -> u64 {
        self.vector.get(&group).copied().unwrap_or(0)
    }
}
