//! The leader's side of leases, as plain data: [`ExpiryTracker`] keeps each lease's deadline
//! on a monotonic [`Clock`] and says which leases ran out, which need a checkpoint, and which
//! lock-delays are over. The server's thin async shell turns those answers into Raft commands
//! (`Expire`, `Checkpoint`, `DelayEnd`); nothing here does IO or reads a wall clock.
//!
//! The rule across leader changes (docs/leases.md):
//! - a lease's deadline on the leader is `observed + ttl - idle`, where `observed` is when this
//!   leader saw the lease's last grant or refresh (or took over), and `idle` is the time earlier
//!   leaders already proved the lease went without a keepalive (committed by checkpoints);
//! - so a new leader gives every lease the remaining `ttl - idle` counted from its takeover —
//!   a full TTL unless checkpoints proved otherwise — and never less: the client's own
//!   deadline (keepalive sent + ttl) always comes first;
//! - and a dead client's lease cannot be kept alive forever by repeated elections: its idle
//!   time keeps being checkpointed while it is idle, so each leader gives it less.

pub mod clock;
pub mod tracker;

pub use clock::{Clock, ManualClock, MonotonicClock};
pub use tracker::{ExpiryTracker, TrackerConfig};
