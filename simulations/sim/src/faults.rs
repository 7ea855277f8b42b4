//! Fault schedules drawn from a seed. A scenario with `random_faults = K` gets K faults drawn
//! from the seed on top of the ones it lists ([`with_random_faults`]): each a crash (half of
//! them of the machine, losing the un-fsynced tail), a partition, a pause, a slow disk or a
//! delay (messages between nodes held, then delivered late and out of order with other links')
//! of one node or one whole region, or a node whose lease clock runs at a skewed rate
//! within the lease's drift bound ([`meridian_consensus::lease::DRIFT`]) for the whole run. Each
//! drawn fault has its own slot of the workload, so they never overlap (a partition's repair
//! never heals another's links). [`crate::det::simulate`] applies the draw itself, so
//! `meridian sim run --deterministic --seed S` replays exactly what a sweep ran for seed S.

use crate::scenario::{Fault, FaultKind, Rng, Scenario};
use meridian_topology::Topology;

/// A uniform draw in `[lo, hi)`.
fn uniform(rng: &mut Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * ((rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
}

fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> &'a T {
    &items[(rng.next_u64() % items.len() as u64) as usize]
}

/// `s` with its `random_faults` drawn from `seed` on `topology` (the mode's): the listed faults
/// first, then the drawn ones; drawn clock skews join `clock_rates` (a node the scenario already
/// skews keeps its rate). The same inputs always give the same schedule.
pub fn with_random_faults(s: &Scenario, topology: &Topology, seed: u64) -> Scenario {
    let mut out = s.clone();
    if s.random_faults == 0 || topology.nodes.is_empty() {
        return out;
    }
    // Its own stream: the workload's and the simulator's draws stay as they were.
    let mut rng = Rng::new(seed ^ 0x5eed_fa17_5eed_fa17);
    let nodes: Vec<String> = topology
        .nodes
        .iter()
        .map(|n| format!("n{}", n.id))
        .collect();
    let regions: Vec<String> = topology.regions.iter().map(|r| r.name.clone()).collect();
    // Each fault has its own slot of the workload's span, so they never overlap and all fall
    // within the workload: it starts in the slot's first third and ends before the slot does.
    let slot = s.duration_s as f64 / s.random_faults as f64;
    for i in 0..s.random_faults {
        let unskewed: Vec<&String> = nodes
            .iter()
            .filter(|n| !out.clock_rates.contains_key(*n))
            .collect();
        if rng.chance(0.2) && !unskewed.is_empty() {
            let node = pick(&mut rng, &unskewed).to_string();
            // Within the bound the lease is built for (slower by less than DRIFT, or faster).
            let bound = meridian_consensus::lease::DRIFT * 0.9;
            let rate = if rng.chance(0.5) {
                uniform(&mut rng, 1.0 - bound, 1.0)
            } else {
                uniform(&mut rng, 1.0, 1.0 + bound)
            };
            out.clock_rates.insert(node, rate);
            continue;
        }
        let kind = *pick(
            &mut rng,
            &[
                FaultKind::Crash,
                FaultKind::Partition,
                FaultKind::Pause,
                FaultKind::SlowDisk,
                FaultKind::Delay,
            ],
        );
        // A crash is of the machine (losing the un-fsynced tail) half the time; a slow disk
        // takes 20–300 ms per fsync.
        let lose_unsynced = kind == FaultKind::Crash && rng.chance(0.5);
        let fsync_ms =
            (kind == FaultKind::SlowDisk).then(|| uniform(&mut rng, 20.0, 300.0).floor());
        let target = if rng.chance(0.3) {
            pick(&mut rng, &regions).clone()
        } else {
            pick(&mut rng, &nodes).clone()
        };
        let at = slot * i as f64 + uniform(&mut rng, 0.0, slot / 3.0);
        let for_s = uniform(&mut rng, (slot / 6.0).min(0.5), slot * 0.6);
        out.faults.push(Fault {
            at_s: (at * 1000.0).floor() / 1000.0,
            kind,
            target,
            for_s: ((for_s * 1000.0).floor() / 1000.0).max(0.001),
            with_clients: Vec::new(),
            lose_unsynced,
            fsync_ms,
        });
    }
    out
}

/// The drawn part of a schedule as scenario TOML (what to paste into a scenario to keep it).
pub fn schedule_toml(base: &Scenario, drawn: &Scenario) -> String {
    // Top-level keys first: after a `[[faults]]` header they would belong to that fault.
    let mut t = String::new();
    let skews: Vec<String> = drawn
        .clock_rates
        .iter()
        .filter(|(n, _)| !base.clock_rates.contains_key(*n))
        .map(|(n, r)| format!("{n} = {r:.4}"))
        .collect();
    if !skews.is_empty() {
        t.push_str(&format!("clock_rates = {{ {} }}\n", skews.join(", ")));
    }
    for f in &drawn.faults[base.faults.len()..] {
        t.push_str(&format!(
            "[[faults]]\nat_s = {}\nkind = \"{}\"\ntarget = \"{}\"\nfor_s = {}\n",
            f.at_s,
            f.kind.name(),
            f.target,
            f.for_s
        ));
        if f.lose_unsynced {
            t.push_str("lose_unsynced = true\n");
        }
        if let Some(ms) = f.fsync_ms {
            t.push_str(&format!("fsync_ms = {ms}\n"));
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::parse_scenario;
    use std::collections::BTreeSet;

    fn scenario(extra: &str) -> Scenario {
        parse_scenario(
            &format!("name='t'\nmodes=['d']\nduration_s=20\nclients_per_region=1\n{extra}"),
            "t",
        )
        .expect("scenario")
    }

    /// The same seed draws the same schedule, another seed another; drawn faults follow one
    /// another, name nodes or regions of the topology, and skews stay within the drift bound.
    #[test]
    fn a_seed_fixes_the_schedule_and_faults_do_not_overlap() {
        let topo = Topology::parse(meridian_topology::LOCAL_3REGION, "t").expect("topology");
        let s =
            scenario("random_faults = 8\n[[faults]]\nat_s=1\nkind='crash'\ntarget='n1'\nfor_s=1\n");
        let a = with_random_faults(&s, &topo, 3);
        assert_eq!(
            format!("{:?}{:?}", a.faults, a.clock_rates),
            format!(
                "{:?}{:?}",
                with_random_faults(&s, &topo, 3).faults,
                with_random_faults(&s, &topo, 3).clock_rates
            )
        );
        let schedules: BTreeSet<String> = (0..20)
            .map(|seed| schedule_toml(&s, &with_random_faults(&s, &topo, seed)))
            .collect();
        assert!(schedules.len() > 15, "seeds draw different schedules");
        for seed in 0..50 {
            let d = with_random_faults(&s, &topo, seed);
            assert_eq!(d.faults[0], s.faults[0], "the listed fault stays first");
            let drawn = &d.faults[1..];
            assert_eq!(drawn.len() + d.clock_rates.len(), 8, "seed {seed}: {d:?}");
            for w in drawn.windows(2) {
                assert!(w[0].at_s + w[0].for_s < w[1].at_s, "overlap: {w:?}");
            }
            assert!(
                drawn.iter().all(|f| f.at_s + f.for_s < 20.0),
                "within the workload: {d:?}"
            );
            for f in drawn {
                let ok = topo.regions.iter().any(|r| r.name == f.target)
                    || topo.nodes.iter().any(|n| format!("n{}", n.id) == f.target);
                assert!(ok, "{f:?}");
            }
            for r in d.clock_rates.values() {
                assert!((1.0 - meridian_consensus::lease::DRIFT
                    ..=1.0 + meridian_consensus::lease::DRIFT)
                    .contains(r));
            }
            // What is printed parses back as the same faults.
            let again = scenario(&schedule_toml(&s, &d));
            assert_eq!(again.faults, drawn.to_vec());
        }
        assert_eq!(with_random_faults(&scenario(""), &topo, 3).faults.len(), 0);
    }
}
