//! The sweep's parts on real simulated runs: Meridian (mode d) survives the faults two seeds
//! draw on the shipped sweep scenario with every checker passing (the watch validators
//! included), and the same sweep catches two injected bugs at their first seed: mode c (no sync
//! on a group switch), with a shortest failing prefix that still fails on its own, a node
//! that drops one revision's watch events, a lock service that grants a queued waiter early, and
//! a disk that acknowledges appends before their fsync (caught when machines crash).

use meridian_checker::OpKind;
use meridian_crosscheck::{agree, Verdict};
use meridian_sim::det::{check, simulate, timed_ops};
use meridian_sim::scenario::mode_topology;
use meridian_sim::scenario::parse_scenario;
use meridian_sim::sweep::run_seed;

const TOPO: &str = include_str!("../../../topology/local-3region.toml");
const SWEEP: &str = include_str!("../../scenarios/sweep.toml");
const FOUND_1025: &str = include_str!("../../scenarios/found/seed-1025.toml");
const FOUND_1110: &str = include_str!("../../scenarios/found/seed-1110.toml");

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
        assert!(
            matches!(v.independent, Ok(Verdict::Linearizable(_))),
            "seed {seed}: stateright and Meridian's checker: {:?}",
            v.independent
        );
        let events = v.watch.as_ref().map_or(0, |n| *n);
        assert!(
            events > 100,
            "seed {seed}: the watchers saw the writes ({:?})",
            v.watch
        );
        let holds = v.locks.as_ref().map_or(0, |n| *n);
        assert!(
            holds > 50,
            "seed {seed}: the lockers held their locks ({:?})",
            v.locks
        );
        assert!(
            !v.failed(),
            "seed {seed} failed: {:?} {:?} {:?} {:?}\nreplay: meridian sim run simulations/scenarios/sweep.toml --deterministic --seed {seed}",
            v.sequential,
            v.linearizable,
            v.watch,
            v.locks
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
    // A prefix: what it keeps started before the cut, or is a write one of its reads saw.
    assert!(
        shrunk
            .records
            .iter()
            .all(|r| r.start_us < shrunk.cut_us || matches!(r.op.kind, OpKind::Write { .. })),
        "kept past the cut at {} µs",
        shrunk.cut_us
    );
    let (sq, _) = check(&shrunk.records);
    assert!(sq.is_err(), "the prefix fails on its own");
    assert!(v.independent.is_ok(), "{:?}", v.independent);
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
    assert!(v.independent.is_ok(), "{:?}", v.independent);
}

/// A lock service that answers "acquired" to a waiter still queued behind a holder: the lock
/// checker fails the first seed (tokens out of order or overlapping holds), and nothing else.
#[test]
fn the_lock_checker_catches_an_early_grant() {
    let text = SWEEP
        .replace("random_faults = 4", "random_faults = 0")
        .replace(
            "watchers = 1",
            "watchers = 0\ninject = [\"early-lock-grant\"]",
        );
    let s = parse_scenario(&text, "sweep.toml + early-lock-grant").expect("scenario");
    assert_eq!(s.inject, ["early-lock-grant"]);
    let runs = run_seed(&s, TOPO, 1).expect("simulation");
    let v = &runs[0];
    let e = v
        .locks
        .as_ref()
        .expect_err("an early grant passed the lock checker");
    assert!(
        e.contains("fencing tokens do not increase") || e.contains("two holders at once"),
        "{e}"
    );
    assert!(
        v.sequential.is_ok() && v.linearizable.is_ok(),
        "only locks are broken"
    );
}

const SWEEP_E: &str = include_str!("../../scenarios/sweep-e.toml");

/// Mode e (closed timestamps) with the nodes' physical clocks skewed up to the maximum offset,
/// under a seed's drawn faults: every checker passes.
#[test]
fn mode_e_survives_drawn_faults_and_skewed_clocks() {
    let s = parse_scenario(SWEEP_E, "sweep-e.toml").expect("scenario");
    assert_eq!(
        (s.modes.as_slice(), s.physical_skew_ms),
        (["e".to_string()].as_slice(), 250.0)
    );
    let runs = run_seed(&s, TOPO, 1).expect("simulation");
    let v = &runs[0];
    eprintln!("{}", v.schedule);
    assert!(v.operations > 100, "the workload ran ({})", v.operations);
    assert!(
        !v.failed(),
        "{:?} {:?} {:?} {:?}\nreplay: meridian sim run simulations/scenarios/sweep-e.toml --deterministic --seed 1",
        v.sequential,
        v.linearizable,
        v.watch,
        v.locks
    );
}

/// Mode e with reads served before the replica's closed timestamp reached the session's
/// (test-only), most operations switching groups: the sequential-consistency checker fails
/// within the first three seeds.
#[test]
fn mode_e_catches_a_read_served_before_its_timestamp_closed() {
    let text = SWEEP_E
        .replace("random_faults = 4", "random_faults = 0")
        .replace("locality = 0.5", "locality = 0.2")
        .replace("clients_per_region = 2", "clients_per_region = 3")
        .replace(
            "watchers = 1",
            "watchers = 0\ninject = [\"read-before-closed\"]",
        );
    let s = parse_scenario(&text, "sweep-e.toml + read-before-closed").expect("scenario");
    assert_eq!(s.inject, ["read-before-closed"]);
    let caught = (1..=3).find(|seed| {
        let runs = run_seed(&s, TOPO, *seed).expect("simulation");
        eprintln!("seed {seed}: sequential {:?}", runs[0].sequential.is_err());
        runs[0].sequential.is_err()
    });
    assert!(
        caught.is_some(),
        "reads served before their timestamp closed passed sequential consistency in 3 seeds"
    );
}

const SWEEP_MOVES: &str = include_str!("../../scenarios/sweep-moves.toml");

/// us-east's subtree moves to eu-west's group and back while a seed's drawn faults strike:
/// both moves commit and every checker passes.
#[test]
fn domain_moves_under_drawn_faults_keep_every_checker_passing() {
    let s = parse_scenario(SWEEP_MOVES, "sweep-moves.toml").expect("scenario");
    assert_eq!(s.moves.len(), 2);
    let runs = run_seed(&s, TOPO, 1).expect("simulation");
    let v = &runs[0];
    eprintln!("{}", v.schedule);
    assert_eq!(v.moves_committed, 2, "both moves committed");
    assert!(v.operations > 100, "the workload ran ({})", v.operations);
    assert!(
        !v.failed(),
        "{:?} {:?} {:?}\nreplay: meridian sim run simulations/scenarios/sweep-moves.toml --deterministic --seed 1",
        v.sequential,
        v.linearizable,
        v.locks
    );
}

const MACHINE_CRASH: &str = include_str!("../../scenarios/machine-crash.toml");

/// The seeds the long sweep found failing, replayed from their schedules as drawn then
/// (`simulations/scenarios/found/`, docs/reliability.md): 1110 — a group's leader whose machine
/// crashed, losing its un-fsynced tail, came back as leader of the same term (openraft 0.10's
/// `enable_leader_restore`) and wrote a different entry under a log id its followers already
/// held, so one revision had two committed values (an acknowledged put that no watcher saw);
/// 1025 — a put without an answer took effect after its session's next read, which the
/// contract allows and the checker once did not. With leader restore on, both fail again.
#[test]
fn the_seeds_the_long_sweep_found_failing_pass() {
    for (name, text) in [
        ("seed-1025.toml", FOUND_1025),
        ("seed-1110.toml", FOUND_1110),
    ] {
        let s = parse_scenario(text, name).expect("scenario");
        assert_eq!(
            s.random_faults, 0,
            "{name}: the schedule is listed, not drawn"
        );
        let runs = run_seed(&s, TOPO, s.seed).expect("simulation");
        let v = &runs[0];
        assert!(v.operations > 100, "{name}: the workload ran");
        assert!(
            !v.failed(),
            "{name} failed: {:?} {:?} {:?} {:?} {:?}\nreplay: meridian sim run simulations/scenarios/found/{name} --deterministic",
            v.sequential,
            v.linearizable,
            v.watch,
            v.locks,
            v.independent
        );
    }
}

/// Whole regions' machines crash on a slow disk, losing their un-fsynced tails: Meridian loses
/// nothing it acknowledged; a disk that acknowledges appends before their fsync loses
/// acknowledged writes, and the checkers see it (a revision written twice, or a cycle).
#[test]
fn machine_crashes_lose_nothing_acknowledged_unless_the_disk_acks_before_fsync() {
    let s = parse_scenario(MACHINE_CRASH, "machine-crash.toml").expect("scenario");
    assert!(s.faults.iter().all(|f| f.lose_unsynced) && s.disk_fsync_ms > 0.0);
    let runs = run_seed(&s, TOPO, 1).expect("simulation");
    let v = &runs[0];
    assert!(v.operations > 1000, "the workload ran ({})", v.operations);
    assert!(
        !v.failed(),
        "machine crashes broke Meridian: {:?} {:?}",
        v.sequential,
        v.linearizable
    );

    let text = MACHINE_CRASH.replace(
        "disk_fsync_ms = 30",
        "disk_fsync_ms = 30\ninject = [\"ack-before-fsync\"]",
    );
    let s = parse_scenario(&text, "machine-crash.toml + ack-before-fsync").expect("scenario");
    assert_eq!(s.inject, ["ack-before-fsync"]);
    let runs = run_seed(&s, TOPO, 1).expect("simulation");
    let v = &runs[0];
    let e = v
        .sequential
        .as_ref()
        .expect_err("acknowledged writes lost in a machine crash passed the checker");
    assert!(
        e.contains("a revision holds at most one write") || e.contains("cycle"),
        "{e}"
    );
}

/// A recorded history made bad by hand — a linearizable read that saw a key's latest write,
/// turned into one that saw an older write although the latest had completed before it began —
/// is failed by both checkers; the recorded one is passed by both.
#[test]
fn both_linearizability_checkers_fail_a_stale_read_planted_in_a_real_history() {
    let text = SWEEP
        .replace("random_faults = 4", "random_faults = 0")
        .replace("watchers = 1", "watchers = 0")
        .replace("linearizable_reads = 0.3", "linearizable_reads = 0.8");
    let s = parse_scenario(&text, "sweep.toml, no faults").expect("scenario");
    let topo = mode_topology(TOPO, "d").expect("topology");
    let out = simulate(&s, &topo, "d", s.mixes()[0], 4).expect("simulation");
    let ops = timed_ops(&out.records);
    assert!(
        matches!(agree(&ops), Ok(Verdict::Linearizable(_))),
        "{:?}",
        agree(&ops)
    );
    // A read of write w (revision r) that began after w ended, and an older write w0 of the
    // same key: the read is made to return w0.
    let write_of = |key: &str, value: &str| {
        ops.iter().find(|t| {
            matches!(&t.op.kind, OpKind::Write { key: k, value: v, .. } if k == key && v == value)
        })
    };
    let mut planted = None;
    for (i, t) in ops.iter().enumerate() {
        let OpKind::Read {
            key,
            value: Some(v),
            mod_revision: Some(r),
        } = &t.op.kind
        else {
            continue;
        };
        let Some(w) = write_of(key, v) else { continue };
        if w.end.is_none_or(|end| end >= t.start) {
            continue;
        }
        let older = ops.iter().find_map(|o| match &o.op.kind {
            OpKind::Write {
                key: k,
                value,
                revision: Some(r0),
            } if k == key && r0 < r => Some((value.clone(), *r0)),
            _ => None,
        });
        if let Some((value, r0)) = older {
            planted = Some((i, key.clone(), value, r0));
            break;
        }
    }
    let (i, key, value, r0) = planted.expect("a read to plant a stale value in");
    let mut bad = ops.clone();
    bad[i].op.kind = OpKind::Read {
        key,
        value: Some(value),
        mod_revision: Some(r0),
    };
    match agree(&bad) {
        Ok(Verdict::NotLinearizable { .. }) => {}
        other => panic!("the planted stale read: {other:?}"),
    }
}
