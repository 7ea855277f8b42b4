//! The sweep's parts on real simulated runs: Meridian (mode d) survives the faults two seeds
//! draw on the shipped sweep scenario with every checker passing (the watch validators
//! included), and the same sweep catches two injected bugs at their first seed: mode c (no sync
//! on a group switch), with a shortest failing prefix that still fails on its own, and a node
//! that drops one revision's watch events.

use meridian_sim::det::check;
use meridian_sim::scenario::parse_scenario;
use meridian_sim::sweep::run_seed;

const TOPO: &str = include_str!("../../../topology/local-3region.toml");
const SWEEP: &str = include_str!("../../scenarios/sweep.toml");

#[test]
fn meridian_survives_the_drawn_faults_of_two_seeds() {
    let s = parse_scenario(SWEEP, "sweep.toml").expect("scenario");
    assert!(s.random_faults > 0, "the sweep scenario draws faults");
    for seed in [1, 2] {
        let runs = run_seed(&s, TOPO, seed).expect("simulation");
        assert_eq!(runs.len(), 1, "mode d, one mix");
        let v = &runs[0];
        eprintln!(
            "seed {seed}: {} operations, {} without an answer, {} faults, {} skewed clocks\n{}",
            v.operations, v.errors, v.faults, v.skewed, v.schedule
        );
        assert_eq!(v.faults + v.skewed, s.random_faults, "seed {seed}");
        assert!(
            v.operations > 100,
            "seed {seed}: the workload ran ({})",
            v.operations
        );
        let events = v.watch.as_ref().map_or(0, |n| *n);
        assert!(
            events > 100,
            "seed {seed}: the watchers saw the writes ({:?})",
            v.watch
        );
        assert!(
            !v.failed(),
            "seed {seed} failed: {:?} {:?}\nreplay: meridian sim run simulations/scenarios/sweep.toml --deterministic --seed {seed}",
            v.sequential,
            v.linearizable
        );
    }
}

#[test]
fn the_sweep_catches_a_missing_sync_and_cuts_the_history_down() {
    let text = SWEEP
        .replace("modes = [\"d\"]", "modes = [\"c\"]")
        .replace("random_faults = 4", "random_faults = 0");
    let s = parse_scenario(&text, "sweep.toml, mode c").expect("scenario");
    assert_eq!(s.modes, ["c"]);
    let runs = run_seed(&s, TOPO, 1).expect("simulation");
    let v = &runs[0];
    assert!(
        v.sequential.is_err(),
        "mode c passed sequential consistency"
    );
    let shrunk = v.shrunk.as_ref().expect("a failing run is cut down");
    assert!(shrunk.records.len() <= v.operations);
    let (sq, _) = check(&shrunk.records);
    assert!(sq.is_err(), "the prefix fails on its own");
    eprintln!(
        "mode c, seed 1: {} of {} operations still fail (cut at {} µs)",
        shrunk.records.len(),
        v.operations,
        shrunk.cut_us
    );
}

#[test]
fn the_watch_validators_catch_a_dropped_event() {
    let text = SWEEP.replace(
        "watchers = 1",
        "watchers = 1\ninject = [\"drop-watch-event\"]",
    );
    let s = parse_scenario(&text, "sweep.toml + drop-watch-event").expect("scenario");
    assert_eq!(s.inject, ["drop-watch-event"]);
    let runs = run_seed(&s, TOPO, 1).expect("simulation");
    let v = &runs[0];
    let e = v
        .watch
        .as_ref()
        .expect_err("a dropped event passed the validators");
    assert!(
        e.contains("is not reliable") && e.contains("revision 10"),
        "{e}"
    );
    assert!(
        v.sequential.is_ok() && v.linearizable.is_ok(),
        "only watches are broken"
    );
}
