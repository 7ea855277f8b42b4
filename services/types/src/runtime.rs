//! openraft's async runtime for Meridian: tokio, with one difference — the random numbers
//! openraft draws (election timeouts, its tick's first phase) come from a seed when a
//! deterministic simulation set one on its thread ([`seed_thread_rng`]), so a seeded run
//! replays exactly; from the OS otherwise.

use openraft::{AsyncRuntime, OptionalSend, TokioRuntime};
use rand010::rngs::SmallRng;
use rand010::SeedableRng;
use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

thread_local! {
    /// The next seed of this thread's openraft random numbers, when a simulation set one.
    static SEED: Cell<Option<u64>> = const { Cell::new(None) };
}

/// From now on, openraft's random numbers drawn on this thread follow `seed` (deterministic
/// simulation: every simulated node runs on the test's thread, in a replayable order).
pub fn seed_thread_rng(seed: u64) {
    SEED.with(|s| s.set(Some(seed)));
}

/// SplitMix64: the next seed of the sequence.
fn next_seed(seed: u64) -> u64 {
    let z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Tokio, with seedable random numbers (see the module).
#[derive(Debug)]
pub struct MeridianRuntime {
    inner: TokioRuntime,
}

type Tokio = TokioRuntime;

impl AsyncRuntime for MeridianRuntime {
    type JoinError = <Tokio as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <Tokio as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <Tokio as AsyncRuntime>::Sleep;
    type Instant = <Tokio as AsyncRuntime>::Instant;
    type TimeoutError = <Tokio as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = <Tokio as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = SmallRng;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        Tokio::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        Tokio::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        Tokio::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        Tokio::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        Tokio::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        Tokio::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        let seeded = SEED.with(|s| {
            let seed = s.get()?;
            s.set(Some(next_seed(seed)));
            Some(seed)
        });
        match seeded {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => rand010::make_rng(),
        }
    }

    type Mpsc = <Tokio as AsyncRuntime>::Mpsc;
    type Watch = <Tokio as AsyncRuntime>::Watch;
    type Oneshot = <Tokio as AsyncRuntime>::Oneshot;
    type Mutex<T: OptionalSend + 'static> = <Tokio as AsyncRuntime>::Mutex<T>;

    fn new(threads: usize) -> Self {
        Self {
            inner: Tokio::new(threads),
        }
    }

    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        self.inner.block_on(future)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand010::RngExt;

    #[test]
    fn a_seeded_thread_draws_the_same_numbers_again() {
        let draw = || -> Vec<u64> {
            (0..4)
                .map(|_| MeridianRuntime::thread_rng().random_range(0..1_000_000))
                .collect()
        };
        seed_thread_rng(7);
        let a = draw();
        seed_thread_rng(7);
        let b = draw();
        assert_eq!(a, b);
        assert_ne!(a[0], a[1], "each draw moves the sequence on");
    }
}
