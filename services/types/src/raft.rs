//! The openraft type configuration shared by every group on every node.

use crate::command::{Command, CommandResult};
use openraft::type_config::alias::{
    EntryOf, LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf, VoteOf,
};

openraft::declare_raft_types!(
    /// Meridian's Raft types: commands in, results out. Terms, leader ids and votes are
    /// openraft's defaults, whose bincode layout is 0.9's (a log written by 0.9 reads as is).
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = openraft::BasicNode,
        AsyncRuntime = crate::runtime::MeridianRuntime,
);

/// A snapshot's bytes (the state machine's and the network's `SnapshotData`).
pub type SnapshotData = Vec<u8>;

pub type LogId = LogIdOf<TypeConfig>;
pub type Vote = VoteOf<TypeConfig>;
pub type Entry = EntryOf<TypeConfig>;
pub type StoredMembership = StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = SnapshotMetaOf<TypeConfig>;
pub type Snapshot = SnapshotOf<TypeConfig, SnapshotData>;
pub type StorageError = openraft::StorageError<TypeConfig>;
/// The leader id a log id carries (openraft's default, "advanced" leader id: term and node).
pub type CommittedLeaderId = openraft::impls::leader_id_adv::LeaderId<u64, u64>;

/// The log id of entry `index` written by `node` as leader in `term`.
pub fn log_id(term: u64, node: u64, index: u64) -> LogId {
    LogId::new(
        CommittedLeaderId {
            term,
            node_id: node,
        },
        index,
    )
}
