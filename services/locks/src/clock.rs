//! Monotonic time, injectable. Only these clocks decide lease deadlines; the wall clock is
//! never read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::time::Instant;

/// Milliseconds since an arbitrary origin; never goes backwards.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
}

/// `tokio::time::Instant`: CLOCK_MONOTONIC, immune to wall-clock jumps (virtual time under
/// a paused or simulated runtime, which is what deterministic simulation needs).
#[derive(Clone, Debug)]
pub struct MonotonicClock {
    origin: Instant,
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Clock for MonotonicClock {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// A clock a test moves by hand.
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    now: Arc<AtomicU64>,
}

impl ManualClock {
    pub fn advance(&self, ms: u64) {
        self.now.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
}
