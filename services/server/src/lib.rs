//! The Meridian node.
//!
//! - [`config`]: figment-layered node configuration (defaults < TOML < `MERIDIAN_` env).
//! - [`node`]: starting and stopping a node: store, Raft groups, one gRPC server for clients
//!   and peers, bootstrap.
//! - [`ctx`]: what handlers share; the write path (propose here or forward to the leader).
//! - [`router`]: the composition router — key → group, sessions, sync-on-switch (coalesced),
//!   version vectors, consistency levels ([`syncs`]: the state of its coalesced syncs); [`forward`]: writes forwarded by other routers.
//! - [`proposer`]: batches concurrent writes with disjoint keys into one Raft entry.
//! - [`service`]: the client API; [`watch`]: watch streams; [`convert`]: wire <-> domain with
//!   every input rule; [`error`]: the one place errors become gRPC statuses.
//! - [`lock_service`]: leases, locks, fencing and election; [`keepalive`]: one aggregated
//!   keepalive per (router, group) per interval; [`lease_driver`]: the leader's lease clock
//!   (expiry, checkpoints, lock-delays); [`lock_waits`]: herd-free waits for a grant.
//! - [`placement`]: the router's view of the placement map, followed through the global
//!   group's local replica, and its seeding from the topology; [`placement_service`]: the
//!   `Placement` API (show, set-policy); [`residency`]: where a request may be served under
//!   its domain's policy (here, proxied to an allowed region, or `PolicyDenied`).
//! - [`backup`]: the `Maintenance` service (a group's copy for `meridian snapshot save`).
//! - [`http`]: the HTTP listener (metrics, health); [`gateway`]: the HTTP/JSON gateway on it
//!   (docs/http.md), calling the node's own services.
//! - [`gate`]: the capability-token check in front of every client RPC (docs/security.md);
//!   [`revocation`]: the token revocation list, followed through the global group;
//!   [`tokens_service`]: the `Tokens` API (revoke, list).

pub mod backup;
pub mod clock_check;
pub mod config;
pub mod convert;
pub mod ctx;
pub mod error;
pub mod fanout;
pub mod forward;
pub mod gate;
pub mod gateway;
pub mod health;
pub mod http;
pub mod keepalive;
pub mod lease_driver;
mod lease_service;
pub mod lock_service;
pub mod lock_waits;
pub mod membership;
pub mod metrics;
pub mod moves;
pub mod node;
pub mod placement;
pub mod placement_service;
pub mod proposer;
pub mod residency;
pub mod revocation;
pub mod router;
pub mod scrape;
pub mod service;
pub mod syncs;
pub mod telemetry;
pub mod tokens_service;
pub mod watch;
pub mod watch_many;
pub mod watches;

pub use config::{NodeConfig, Peer};
pub use node::{Node, SimEnv, StartError};
