//! Benchmark and simulation harnesses over real clusters: each starts `meridian dev` (the
//! running `meridian` binary, [`geo::Dev`]) in child processes, drives it through the SDK and
//! prints what it measured. The `meridian` binary is a thin shell over them:
//!
//! - [`geo`]: `meridian bench-geo` — the router under the WAN emulator, modes a–d;
//! - [`locks`]: `meridian bench-locks` — locks and leases: latency, failover, keepalives, memory;
//! - [`placement`]: `meridian bench-placement` — residency forwarding and placement changes;
//! - [`sim_run`]: `meridian sim run` — a scenario's workload against a real cluster;
//! - [`sim_sweep`]: `meridian sim sweep` — the deterministic simulation over many seeds, each
//!   history checked (no cluster: it lives here beside `sim run`, whose scenarios it takes);
//! - [`nemesis`]: `meridian sim nemesis` — `meridian dev --processes` under kills, pauses,
//!   region cuts and wall-clock jumps, with clients, watchers and lockers in every region, the
//!   history checked by every checker;
//! - [`sim_check`]: `meridian sim check` — an exported history (Jepsen EDN) checked by both
//!   linearizability checkers.

pub mod dev;
pub mod geo;
pub mod locks;
pub mod nemesis;
pub mod placement;
pub mod sim_check;
pub mod sim_run;
pub mod sim_sweep;
