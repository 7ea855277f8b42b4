//! Generated histories: legal by construction must pass, one stale read must fail, and both must
//! stay fast at simulation scale.

mod support;

use std::time::{Duration, Instant};

use meridian_checker::{check_sequential, History};
use support::{
    assert_fails, assert_passes, legal_history, read, with_stale_read, write, Shape, XorShift,
};

const SEEDS: u64 = 200;

/// Generous: a linear check of 20k ops takes well under a second even unoptimized; this only
/// catches an accidentally quadratic path, not noise from a busy machine.
const LARGE_CHECK_DURATION_MAX: Duration = Duration::from_secs(20);

fn small_shape(seed: u64) -> Shape {
    let mut rng = XorShift::new(seed ^ 0x5EED);
    Shape {
        sessions: 1 + rng.index(5),
        groups: 1 + rng.below(4),
        keys_per_group: 1 + rng.index(3),
        ops: 10 + rng.index(70),
    }
}

fn large_shape() -> Shape {
    Shape {
        sessions: 16,
        groups: 4,
        keys_per_group: 8,
        ops: 20_000,
    }
}

#[test]
fn random_legal_histories_pass() {
    // Any sequential execution, however interleaved, is accepted with a valid witness.
    for seed in 0..SEEDS {
        let history = legal_history(seed, &small_shape(seed));
        if let Err(violation) = check_sequential(&history) {
            panic!("seed {seed}: legal history rejected:\n{violation}\n{history:#?}");
        }
        assert_passes(&history);
    }
}

#[test]
fn random_histories_with_one_stale_read_fail() {
    // Returning an older value than the session already observed is always caught.
    let mut mutated = 0;
    for seed in 0..SEEDS {
        let Some(history) = with_stale_read(&legal_history(seed, &small_shape(seed)), seed) else {
            continue;
        };
        mutated += 1;
        match check_sequential(&history) {
            Ok(_) => panic!("seed {seed}: stale read accepted:\n{history:#?}"),
            Err(violation) => assert!(
                violation.message.starts_with("not sequentially consistent")
                    && !violation.cycle.is_empty(),
                "seed {seed}: {violation}"
            ),
        }
    }
    assert!(
        mutated >= SEEDS / 2,
        "only {mutated} of {SEEDS} seeds had a read to make stale"
    );
}

#[test]
fn twenty_thousand_ops_pass_quickly() {
    // A simulation-sized legal history checks in linear time.
    let history = legal_history(7, &large_shape());
    assert!(history.len() >= 20_000);
    let started = Instant::now();
    let witness = assert_passes(&history);
    assert!(
        started.elapsed() < LARGE_CHECK_DURATION_MAX,
        "took {:?}",
        started.elapsed()
    );
    assert!(witness.len() <= history.len());
}

#[test]
fn twenty_thousand_ops_with_a_stale_read_fail_quickly() {
    // Cycle search and explanation stay fast and bounded on a large history.
    let history = with_stale_read(&legal_history(11, &large_shape()), 11);
    let Some(history) = history else {
        panic!("a 20k-op history always has a read to make stale");
    };
    let started = Instant::now();
    let violation = assert_fails(&history, "not sequentially consistent");
    assert!(
        started.elapsed() < LARGE_CHECK_DURATION_MAX,
        "took {:?}",
        started.elapsed()
    );
    assert!(violation.cycle.len() <= 20);
}

#[test]
fn one_session_of_twenty_thousand_ops_does_not_overflow_the_stack() {
    // A 20k-deep chain is sorted, and closed into a cycle by a final stale read, searched,
    // iteratively.
    let mut legal = History::new();
    for i in 0..10_000u64 {
        let value = i.to_string();
        legal.push(write(0, 1, "a", &value, Some(i + 1)));
        legal.push(read(0, 1, "a", Some(&value), Some(i + 1)));
    }
    assert_eq!(assert_passes(&legal).len(), 20_000);
    let mut stale = legal;
    stale.push(read(0, 1, "a", Some("0"), Some(1)));
    // Every cycle runs the whole revision chain of "a"; the explanation stays bounded.
    let violation = assert_fails(&stale, "these 10001 operations form a cycle");
    assert_eq!(violation.cycle.len(), 20);
}
