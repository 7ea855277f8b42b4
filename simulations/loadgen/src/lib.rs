//! Closed-loop load: N tasks each issue one operation, wait for it, record its latency in an
//! hdrhistogram (microseconds), and go again until the duration is up. Shared by
//! `meridian bench` and `simulations/bench-peers` so that both systems face the same loop.

use hdrhistogram::Histogram;
use std::future::Future;
use std::time::{Duration, Instant};

/// Highest latency recorded, in microseconds (one minute); longer ones saturate.
const LATENCY_US_MAX: u64 = 60_000_000;

pub struct Outcome {
    pub ops: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub hist: Histogram<u64>,
}

impl Outcome {
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    /// Latency at quantile `q` (0..=1), microseconds.
    pub fn us(&self, q: f64) -> u64 {
        self.hist.value_at_quantile(q)
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)
        .unwrap_or_else(|_| unreachable!("1..60s at 3 significant digits is a valid histogram"))
}

/// The key a task uses for its `n`-th operation: spreads tasks over `keys` distinct keys.
pub fn key(n: u64, keys: usize) -> String {
    format!("/bench/k{:06}", n % keys.max(1) as u64)
}

/// Runs `op(task, n)` from `concurrency` tasks for `duration`; `op` answers whether it
/// succeeded. Failed operations are counted, not timed.
pub async fn closed_loop<F, Fut>(concurrency: usize, duration: Duration, op: F) -> Outcome
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let start = Instant::now();
    let stop = start + duration;
    let concurrency = concurrency.max(1);
    let mut tasks = Vec::with_capacity(concurrency);
    for task in 0..concurrency {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = histogram();
            let mut errors = 0u64;
            let mut n = task as u64;
            while Instant::now() < stop {
                let t = Instant::now();
                if op(task, n).await {
                    hist.saturating_record(t.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                }
                n += concurrency as u64;
            }
            (hist, errors)
        }));
    }
    let mut hist = histogram();
    let mut errors = 0;
    for t in tasks {
        match t.await {
            Ok((h, e)) => {
                // Same bounds on both sides: adding cannot fail.
                let _ = hist.add(&h);
                errors += e;
            }
            Err(_) => errors += 1,
        }
    }
    Outcome {
        ops: hist.len(),
        errors,
        elapsed: start.elapsed(),
        hist,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every successful operation is timed once, every failure counted, across all tasks.
    #[tokio::test]
    async fn counts_successes_and_failures() {
        let o = closed_loop(4, Duration::from_millis(50), |_, n| async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            n % 2 == 0
        })
        .await;
        assert!(o.ops > 0 && o.errors > 0);
        assert!(
            o.ops.abs_diff(o.errors) <= 4,
            "ops {} errors {}",
            o.ops,
            o.errors
        );
        assert!(o.us(0.5) >= 1_000, "a 1 ms sleep takes at least 1000 us");
    }
}
