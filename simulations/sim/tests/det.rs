//! The deterministic simulation: same seed, same history; mode c (no sync) breaks sequential
//! consistency, mode d (Meridian) does not; faults are survived.

use meridian_sim::det::{simulate, Outcome};
use meridian_sim::scenario::{mode_topology, parse_scenario, Mix};

const TOPO: &str = include_str!("../../../topology/local-3region.toml");

fn run(extra: &str, mode: &str, mix: Mix, seed: u64) -> Outcome {
    let s = parse_scenario(
        &format!(
            "name='t'\nmodes=['{mode}']\nduration_s=20\nclients_per_region=2\nkeys_per_region=8\nwarmup_s=15\nlinearizable_reads=0.2\n{extra}"
        ),
        "test scenario",
    )
    .expect("scenario");
    let topo = mode_topology(TOPO, mode).expect("topology");
    let out = simulate(&s, &topo, mode, mix, seed).expect("simulation");
    eprintln!(
        "mode {mode} seed {seed}: {} ops in {:.0} virtual s, wall {:?}; sequential {:?}; linearizable {:?}",
        out.records.len(),
        out.workload_s,
        out.wall,
        out.sequential.as_ref().map_err(|e| e.lines().next().unwrap_or("").to_string()),
        out.linearizable.as_ref().map_err(|e| e.lines().next().unwrap_or("").to_string()),
    );
    out
}

const MIXED: Mix = Mix {
    read_ratio: 0.5,
    locality: 0.5,
    burst: 1.0,
};

#[test]
fn same_seed_same_history() {
    let a = run("", "d", MIXED, 7);
    let b = run("", "d", MIXED, 7);
    assert!(a.records.len() > 100, "only {} operations", a.records.len());
    assert_eq!(a.records, b.records, "seed 7 replayed differently");
    let c = run("", "d", MIXED, 8);
    assert_ne!(a.records, c.records, "another seed gave the same history");
}

/// The counterexample and the composition on one workload: without sync-on-switch (mode c)
/// the checker finds a sequential-consistency violation; Meridian (mode d) has none. Both keep
/// writes and linearizable reads linearizable.
#[test]
fn mode_c_violates_sequential_consistency_and_mode_d_does_not() {
    let c = run("", "c", MIXED, 3);
    let violation = c
        .sequential
        .as_ref()
        .expect_err("mode c (no sync) should show a sequential-consistency violation");
    assert!(
        violation.starts_with("not sequentially consistent"),
        "an ordering failure, not a malformed history: {violation}"
    );
    assert!(c.linearizable.is_ok(), "{:?}", c.linearizable);
    let d = run("", "d", MIXED, 3);
    assert!(d.records.len() > 100);
    assert_eq!(
        d.sequential,
        Ok(()),
        "mode d must be sequentially consistent"
    );
    assert!(d.linearizable.is_ok(), "{:?}", d.linearizable);
}

/// Scheduled faults — a node crash (restarted with what it acknowledged), a region cut off, a
/// paused node — leave Meridian's history sequentially consistent and linearizable, and every
/// region serves again once they heal.
#[test]
fn faults_in_the_scenario_are_survived() {
    let faults = "
[[faults]]
at_s = 2
kind = 'crash'
target = 'n4'
for_s = 4

[[faults]]
at_s = 7
kind = 'partition'
target = 'ap-northeast'
for_s = 4

[[faults]]
at_s = 12
kind = 'pause'
target = 'n1'
for_s = 3
";
    let out = run(faults, "d", MIXED, 11);
    assert_eq!(out.sequential, Ok(()));
    assert!(out.linearizable.is_ok(), "{:?}", out.linearizable);
    let healed_us = (15 + 15) * 1_000_000; // warmup + last fault's end
    for region in ["us-east", "eu-west", "ap-northeast"] {
        let after = out
            .records
            .iter()
            .filter(|r| r.region == region && r.end_us.is_some() && r.start_us > healed_us)
            .count();
        assert!(
            after > 10,
            "{region}: only {after} operations completed after the faults healed"
        );
    }
    // The partition was felt: ap-northeast's clients saw failures or a gap while cut off.
    let cut = (15 + 7) * 1_000_000..(15 + 11) * 1_000_000;
    let remote_ok_during_cut = out
        .records
        .iter()
        .filter(|r| {
            r.region == "ap-northeast"
                && cut.contains(&r.start_us)
                && r.end_us.is_some_and(|e| cut.contains(&e))
                && matches!(r.op.kind, meridian_checker::OpKind::Write { .. })
                && !r.op.kind.key().starts_with("/ap-northeast/")
        })
        .count();
    assert_eq!(
        remote_ok_during_cut, 0,
        "a write to another region completed across the cut"
    );
}
