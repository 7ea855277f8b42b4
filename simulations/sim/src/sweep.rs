//! Seeded fault schedules and what a sweep over many seeds needs (`meridian sim sweep`).
//!
//! A scenario with `random_faults = K` gets K faults drawn from the seed on top of the ones it
//! lists ([`with_random_faults`]): each a crash, a partition or a pause of one node or one whole
//! region, or a node whose lease clock runs at a skewed rate within the lease's drift bound
//! ([`meridian_consensus::lease::DRIFT`]) for the whole run. The drawn faults follow one another
//! (each starts after the previous one ended), so a partition's repair never heals another's
//! links. [`crate::det::simulate`] applies the draw itself, so `meridian sim run --deterministic
//! --seed S` replays exactly what a sweep ran for seed S.
//!
//! When a seed's history fails a checker, [`shortest_failing_prefix`] cuts it down to the
//! shortest prefix (by start time) that still fails: every operation started before the cut, and
//! the writes those reads observed. Dropping operations only drops constraints, so a prefix that
//! fails is a real witness of the violation, not an artifact of the cut.

use crate::det::{check, Record};
use crate::scenario::{Fault, FaultKind, Mix, Rng, Scenario};
use meridian_checker::OpKind;
use meridian_topology::Topology;
use std::collections::BTreeSet;

/// Most faults a scenario may ask to draw.
pub const RANDOM_FAULTS_MAX: usize = 20;

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
            &[FaultKind::Crash, FaultKind::Partition, FaultKind::Pause],
        );
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
        let kind = match f.kind {
            FaultKind::Crash => "crash",
            FaultKind::Partition => "partition",
            FaultKind::Pause => "pause",
        };
        t.push_str(&format!(
            "[[faults]]\nat_s = {}\nkind = \"{kind}\"\ntarget = \"{}\"\nfor_s = {}\n",
            f.at_s, f.target, f.for_s
        ));
    }
    t
}

/// A failing history cut down: the records kept and the virtual time of the cut.
#[derive(Debug)]
pub struct Shrunk {
    pub records: Vec<Record>,
    pub cut_us: u64,
    pub sequential: Result<(), String>,
    pub linearizable: Result<usize, String>,
}

/// The records that started before `cut_us`, and every write one of their reads observed.
fn prefix(records: &[Record], cut_us: u64) -> Vec<Record> {
    let observed: BTreeSet<(String, String)> = records
        .iter()
        .filter(|r| r.start_us < cut_us)
        .filter_map(|r| match &r.op.kind {
            OpKind::Read {
                key,
                value: Some(v),
                ..
            } => Some((key.clone(), v.clone())),
            _ => None,
        })
        .collect();
    records
        .iter()
        .filter(|r| {
            r.start_us < cut_us
                || matches!(&r.op.kind, OpKind::Write { key, value, .. }
                    if observed.contains(&(key.clone(), value.clone())))
        })
        .cloned()
        .collect()
}

/// The shortest prefix of a failing history that still fails a checker (binary search over the
/// cut; at most ~2 log2(n) checker runs). None if the whole history passes.
pub fn shortest_failing_prefix(records: &[Record]) -> Option<Shrunk> {
    let fails = |rs: &[Record]| {
        let (sq, lin) = check(rs);
        (sq.is_err() || lin.is_err()).then_some((sq, lin))
    };
    let mut starts: Vec<u64> = records.iter().map(|r| r.start_us).collect();
    starts.sort_unstable();
    starts.dedup();
    let (sq, lin) = fails(records)?;
    // Invariant: cutting after starts[hi] fails (the whole history does); find the least.
    let (mut lo, mut hi) = (0usize, starts.len().saturating_sub(1));
    let mut best = (u64::MAX, records.to_vec(), sq, lin);
    while lo < hi {
        let mid = (lo + hi) / 2;
        let cut = starts[mid] + 1;
        let kept = prefix(records, cut);
        match fails(&kept) {
            Some((sq, lin)) => {
                best = (cut, kept, sq, lin);
                hi = mid;
            }
            None => lo = mid + 1,
        }
    }
    if best.0 == u64::MAX {
        if let Some(&last) = starts.last() {
            best.0 = last + 1;
        }
    }
    Some(Shrunk {
        cut_us: best.0,
        records: best.1,
        sequential: best.2,
        linearizable: best.3,
    })
}

/// One mode × mix of one seed: what ran and what the checkers said.
#[derive(Debug)]
pub struct RunVerdict {
    pub mode: String,
    pub mix: Mix,
    pub operations: usize,
    /// Operations without an answer (their effect unknown for writes).
    pub errors: usize,
    /// Faults applied (listed and drawn) and nodes whose lease clock was skewed.
    pub faults: usize,
    pub skewed: usize,
    /// The drawn part of the schedule, as scenario TOML.
    pub schedule: String,
    pub sequential: Result<(), String>,
    pub linearizable: Result<usize, String>,
    /// The watch validators' verdict (Ok: events checked; 0 without watchers).
    pub watch: Result<usize, String>,
    /// Whether the independent checker (stateright, `meridian-crosscheck`) agrees with
    /// Meridian's linearizability checker on this history; Ok: its verdict.
    pub independent: Result<meridian_crosscheck::Verdict, String>,
    /// On a failure: the shortest prefix of the history that still fails.
    pub shrunk: Option<Shrunk>,
}

impl RunVerdict {
    pub fn failed(&self) -> bool {
        self.sequential.is_err()
            || self.linearizable.is_err()
            || self.watch.is_err()
            || self.independent.is_err()
    }
}

/// Runs seed `seed` of scenario `s` (every mode and mix, on `base_topology`'s text) in the
/// deterministic simulation and checks each history; a failing one is cut down.
pub fn run_seed(s: &Scenario, base_topology: &str, seed: u64) -> anyhow::Result<Vec<RunVerdict>> {
    let mut out = Vec::new();
    for mode in &s.modes {
        let text = crate::scenario::mode_topology(base_topology, mode)?;
        let topology = Topology::parse(&text, &format!("mode {mode} topology"))?;
        let drawn = with_random_faults(s, &topology, seed);
        for mix in s.mixes() {
            let o = crate::det::simulate(s, &text, mode, mix, seed)?;
            let failed = o.sequential.is_err() || o.linearizable.is_err();
            out.push(RunVerdict {
                mode: mode.clone(),
                mix,
                operations: o.records.len(),
                errors: o.records.iter().filter(|r| r.end_us.is_none()).count(),
                faults: drawn.faults.len(),
                skewed: drawn.clock_rates.len(),
                schedule: schedule_toml(s, &drawn),
                shrunk: if failed {
                    shortest_failing_prefix(&o.records)
                } else {
                    None
                },
                sequential: o.sequential,
                linearizable: o.linearizable,
                watch: o.watch,
                independent: meridian_crosscheck::agree(&crate::det::timed_ops(&o.records)),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::parse_scenario;
    use meridian_checker::Op;

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

    fn rec(session: usize, start_us: u64, kind: OpKind) -> Record {
        Record {
            client: session,
            region: "r".into(),
            start_us,
            end_us: Some(start_us + 10),
            linearizable: false,
            kind: 0,
            op: Op {
                session,
                group: 1,
                kind,
            },
            served: Some((1, 1)),
        }
    }

    fn w(session: usize, t: u64, key: &str, v: &str, rev: u64) -> Record {
        rec(
            session,
            t,
            OpKind::Write {
                key: key.into(),
                value: v.into(),
                revision: Some(rev),
            },
        )
    }

    fn r(session: usize, t: u64, key: &str, v: Option<&str>, rev: Option<u64>) -> Record {
        rec(
            session,
            t,
            OpKind::Read {
                key: key.into(),
                value: v.map(Into::into),
                mod_revision: rev,
            },
        )
    }

    /// A session that reads a value, then an older one, breaks sequential consistency; the
    /// prefix ends with that read and leaves out what came after, but keeps the writes the
    /// kept reads observed even when they started later.
    #[test]
    fn the_shortest_failing_prefix_ends_at_the_violation() {
        let mut h = vec![
            w(0, 100, "/a", "1", 1),
            w(0, 200, "/a", "2", 2),
            r(1, 300, "/a", Some("2"), Some(2)),
            r(1, 400, "/a", Some("1"), Some(1)),
        ];
        for i in 0..50u64 {
            h.push(w(0, 500 + i * 10, "/b", &format!("v{i}"), 3 + i));
        }
        let s = shortest_failing_prefix(&h).expect("fails");
        assert!(s.sequential.is_err());
        assert_eq!(s.cut_us, 401);
        assert_eq!(s.records.len(), 4, "{:?}", s.records);
        assert!(
            shortest_failing_prefix(&h[..3]).is_none(),
            "a passing history"
        );
        // A read that observed a write started after the cut keeps that write.
        let h2 = vec![
            r(1, 50, "/a", Some("1"), Some(1)),
            r(1, 60, "/a", None, None),
            w(0, 100, "/a", "1", 1),
            w(0, 400, "/b", "x", 2),
        ];
        let s2 = shortest_failing_prefix(&h2).expect("fails");
        assert_eq!(s2.cut_us, 61);
        assert_eq!(
            s2.records.len(),
            3,
            "the read of \"1\" keeps its write: {:?}",
            s2.records
        );
    }
}
