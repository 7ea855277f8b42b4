//! openraft glue for Meridian.
//!
//! - [`timing`]: Raft timing settings and the openraft `Config` derived from them.
//! - [`network`]: the peer transport: one tonic channel per peer node shared by every group,
//!   the group id in each message, a deadline on every RPC.
//! - [`host`]: the groups a node hosts, and the peer gRPC service that feeds them.
//! - [`lease`]: the leader's read lease, and the vote guard that keeps its promise.
//!
//! Invariant: nothing here knows keys or values; commands are opaque `meridian_types::Command`s.

pub mod admission;
pub mod host;
pub mod lease;
pub mod network;
pub mod timing;

pub use host::{GroupHandle, Host, PeerService};
pub use lease::{LeaderLease, LeaseClock, VoteGuard};
pub use network::{GroupNetworkFactory, PeerPool};
pub use timing::Timing;

/// A group's Raft on this node (its state machine over fjall, or memory in simulation).
pub type Raft = openraft::Raft<meridian_types::TypeConfig, meridian_storage::StateMachine>;
