//! Vocabulary shared by every Meridian crate.
//!
//! - [`ids`]: identifiers (`GroupId` newtype, the node id).
//! - [`path`]: the key-path rules (leading `/`, no empty/`.`/`..` segment, 4 KiB) and value limits.
//! - [`hlc`]: hybrid logical clock timestamps (physical µs + logical counter, max-offset refusal).
//! - [`command`]: what a client asks a group's state machine to do, and what it answers.
//! - [`placement`]: the placement map's data (domains, group replicas, policies, epoch) and
//!   the changes the global group applies to it.
//! - [`raft`]: the openraft type configuration every group uses.
//! - [`runtime`]: openraft's async runtime (tokio, with random numbers a simulation can seed).
//!
//! This crate does no IO and knows nothing of gRPC or fjall.

pub mod command;
pub mod hlc;
pub mod ids;
pub mod metrics;
pub mod path;
pub mod placement;
pub mod raft;
pub mod runtime;

pub use command::{
    lease_group, Command, CommandResult, Compare, CompareResult, CompareTarget, DeleteOp, Event,
    EventKind, KeyValue, LeaseCommand, LeaseRecord, LeaseResult, LockKind, LockMode, MoveCommand,
    Op, OpResult, PutOp, Rejection, Touch, LEASE_GROUP_SHIFT,
};
pub use ids::{GroupId, NodeId};
pub use path::{validate_key, validate_prefix, validate_value, PathError};
pub use placement::{
    DomainPlacement, GroupPlacement, MoveRecord, MoveState, MoveStep, PlacementChange,
    PlacementMap, Policy, PolicyMode, ReadProfile, Selector, PLACEMENT_KEY, PROFILES_KEY,
};
pub use raft::TypeConfig;

/// Largest value a key may hold (1 MiB), as ZooKeeper's default `jute.maxbuffer`.
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;
/// Most bytes (keys + values) one domain move carries: the subtree travels as one message and
/// one Raft entry at each end (the peer message limit is 32 MiB).
pub const MOVE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Longest key path, in bytes.
pub const KEY_BYTES_MAX: usize = 4096;
/// Most operations one transaction may carry (compares and ops counted separately), as etcd.
pub const TXN_OPS_MAX: usize = 128;
