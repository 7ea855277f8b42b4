//! Latency simulations of Meridian deployments.
//!
//! - [`scenario`]: the scenario file (workload, modes, seed, faults), the topology of each
//!   deployment mode, and the per-client operation stream both runners share.
//! - [`det`]: the deterministic simulation — the real node code under turmoil, per-pair
//!   latencies from the topology, virtual time, the in-memory store, one seed; its history goes
//!   to the sequential-consistency and linearizability checkers.
//!
//! The real run (processes under the WAN emulator) lives in the CLI (`meridian sim run`);
//! both report [`RegionResult`]s per region.

pub mod det;
pub mod scenario;

use hdrhistogram::Histogram;

pub use scenario::{parse_scenario, Fault, FaultKind, Mix, Scenario, Step, Workload, KINDS};

/// Latencies (µs) of one region's clients per [`KINDS`] class, and the operations that failed.
#[derive(Clone, Debug)]
pub struct RegionResult {
    pub hist: Vec<Histogram<u64>>,
    pub errors: u64,
}

impl Default for RegionResult {
    fn default() -> Self {
        Self {
            hist: KINDS.iter().map(|_| hist()).collect(),
            errors: 0,
        }
    }
}

impl RegionResult {
    pub fn merge(&mut self, other: &RegionResult) {
        for (a, b) in self.hist.iter_mut().zip(&other.hist) {
            let _ = a.add(b);
        }
        self.errors += other.errors;
    }

    /// Completed operations of every class.
    pub fn ops(&self) -> u64 {
        self.hist.iter().map(|h| h.len()).sum()
    }
}

/// A latency histogram in microseconds, 1 µs to 10 min, 3 significant digits.
pub fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .unwrap_or_else(|_| unreachable!("constant bounds are valid"))
}

/// The `q` quantile of `h` in milliseconds (0 when empty).
pub fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    h.value_at_quantile(q) as f64 / 1000.0
}
