//! The deterministic simulation: same seed, same history; mode c (no sync) breaks sequential
//! consistency, mode d (Meridian) does not; faults are survived.

use meridian_checker::OpKind;
use meridian_sim::det::{simulate, Outcome};
use meridian_sim::scenario::{mode_topology, parse_scenario, Mix};
use std::collections::BTreeMap;

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
    // The same numbers: throughput and every percentile of every region and class.
    let numbers = |o: &Outcome| -> Vec<(String, u64, Vec<u64>)> {
        o.regions
            .iter()
            .map(|(region, r)| {
                let percentiles = r
                    .hist
                    .iter()
                    .flat_map(|h| [0.5, 0.95, 0.99].map(|q| h.value_at_quantile(q)))
                    .collect();
                (region.clone(), r.ops(), percentiles)
            })
            .collect()
    };
    assert_eq!(numbers(&a), numbers(&b), "seed 7 gave other numbers");
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

/// The shipped fault scenario (simulations/scenarios/faults.toml: a node crash restarted
/// with what it acknowledged, a region cut off, a paused leader) leaves Meridian's history
/// sequentially consistent and linearizable, and every region serves again once they heal.
/// Mode c's history is still well formed — its failure is an ordering cycle, not a write
/// applied twice: a write whose connection broke after it was sent is not retried blindly
/// (this scenario once caught the SDK and the router doing exactly that).
#[test]
fn faults_in_the_scenario_are_survived() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/faults.toml");
    let text = std::fs::read_to_string(path).expect("faults.toml");
    let s = parse_scenario(&text, path).expect("scenario");
    assert_eq!(s.faults.len(), 3);
    assert_eq!(
        s.moves.len(),
        2,
        "the shipped scenario moves a domain away and back"
    );
    let mix = s.mixes()[0];
    let d = simulate(
        &s,
        &mode_topology(TOPO, "d").expect("topology"),
        "d",
        mix,
        s.seed,
    )
    .expect("simulation");
    eprintln!(
        "faults, mode d: {} ops, wall {:?}, {:?} / {:?}",
        d.records.len(),
        d.wall,
        d.sequential,
        d.linearizable
    );
    assert_eq!(d.sequential, Ok(()));
    assert!(d.linearizable.is_ok(), "{:?}", d.linearizable);
    assert!(
        d.moves.iter().all(|m| m.committed),
        "both moves commit despite the faults: {:?}",
        d.moves
    );
    let last_heal = s
        .faults
        .iter()
        .map(|f| f.at_s + f.for_s)
        .fold(0.0, f64::max);
    let healed_us = ((s.warmup_s as f64 + last_heal) * 1e6) as u64;
    for region in ["us-east", "eu-west", "ap-northeast"] {
        let after = d
            .records
            .iter()
            .filter(|r| r.region == region && r.end_us.is_some() && r.start_us > healed_us)
            .count();
        assert!(
            after > 10,
            "{region}: only {after} operations completed after the faults healed"
        );
    }
    // The partition was felt: no write from ap-northeast to another region completed while
    // the region was cut off.
    let cut = s
        .faults
        .iter()
        .find(|f| f.target == "ap-northeast")
        .expect("the partition");
    let from = ((s.warmup_s as f64 + cut.at_s) * 1e6) as u64;
    let to = ((s.warmup_s as f64 + cut.at_s + cut.for_s) * 1e6) as u64;
    let across = d
        .records
        .iter()
        .filter(|r| {
            r.region == "ap-northeast"
                && r.start_us > from
                && r.end_us.is_some_and(|e| e < to)
                && matches!(r.op.kind, meridian_checker::OpKind::Write { .. })
                && !r.op.kind.key().starts_with("/ap-northeast/")
        })
        .count();
    assert_eq!(
        across, 0,
        "a write to another region completed across the cut"
    );

    // Mode c (no sync) under the same faults is caught: whether one run shows a stale read
    // depends on the schedule, so the first of a few seeds that does is enough. (A history
    // the checker cannot judge is skipped: a write of unknown outcome seen only through a
    // move's import has no revision to place it by.)
    let c_topology = mode_topology(TOPO, "c").expect("topology");
    let mut caught = None;
    for seed in s.seed..s.seed + 6 {
        let c = simulate(&s, &c_topology, "c", mix, seed).expect("simulation");
        match c.sequential {
            Err(v) if v.starts_with("not sequentially consistent") => {
                caught = Some(seed);
                break;
            }
            Err(v) => eprintln!("mode c, seed {seed}: not judged: {v}"),
            Ok(()) => eprintln!("mode c, seed {seed}: no stale read shown"),
        }
    }
    let seed = caught.expect("mode c under faults should not be SC (seeds tried: 6)");
    eprintln!("mode c caught at seed {seed}");
}

/// A read that must sync a remote group pays about one round trip to its leader, not up to
/// two or three. Two things made it more: a waiter that just missed a round waited for that
/// round to come back before its own was sent (rounds now overlap across the WAN), and the
/// local learner heard that the entries were committed only at the next heartbeat, its
/// commit-only AppendEntries being thinned out (they now go beside the replication stream).
/// Every read here is linearizable (always syncs); most operations are on remote groups, a
/// tenth are writes, from four clients per region. Means before: 1.25-2.8x the round trip
/// (eu-west reading us-east: 198 ms over a 75 ms round trip); with overlapping rounds on
/// openraft 0.9: 1.13-1.16x; on 0.10's pipelined streams with rounds a 32nd of a round trip
/// apart: p95 1.01-1.04x (eu-west → us-east 78 ms over 75). Asserted at p95 ≤ 1.1x + 5 ms.
/// Virtual time, one seed: the numbers are exact, not a timing guess.
#[test]
fn a_remote_sync_waits_one_round_trip_not_two() {
    let topo_text = mode_topology(TOPO, "d").expect("topology");
    let topo = meridian_topology::Topology::parse(&topo_text, "d").expect("parse");
    let s = parse_scenario(
        "name='t'\nmodes=['d']\nduration_s=20\nclients_per_region=4\nkeys_per_region=8\nwarmup_s=15\nlinearizable_reads=1.0\n",
        "test scenario",
    )
    .expect("scenario");
    let mix = Mix {
        read_ratio: 0.9,
        locality: 0.2,
        burst: 1.0,
    };
    let out = simulate(&s, &topo_text, "d", mix, 11).expect("simulation");
    assert_eq!(out.sequential, Ok(()));
    assert!(out.linearizable.is_ok(), "{:?}", out.linearizable);
    // Latencies of remote linearizable reads per (client region, owner region), against
    // that pair's round trip.
    let mut lat: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    for r in &out.records {
        let (Some(end), OpKind::Read { .. }) = (r.end_us, &r.op.kind) else {
            continue;
        };
        let owner = r.op.kind.key().split('/').nth(1).unwrap_or("").to_string();
        if !r.linearizable || owner == r.region {
            continue;
        }
        lat.entry((r.region.clone(), owner))
            .or_default()
            .push(end - r.start_us);
    }
    assert_eq!(lat.len(), 6, "every region read both others: {lat:?}");
    let mut slow = Vec::new();
    for ((from, owner), us) in &mut lat {
        let n = us.len();
        assert!(n >= 30, "{from} → {owner}: only {n} reads");
        us.sort_unstable();
        let mean_ms = us.iter().sum::<u64>() as f64 / n as f64 / 1000.0;
        let p95_ms = us[(n * 95).div_ceil(100) - 1] as f64 / 1000.0;
        let rtt = topo.rtt_ms(from, owner) as f64;
        eprintln!(
            "{from} → {owner}: {n} reads, mean {mean_ms:.1} ms, p95 {p95_ms:.1} ms, round trip {rtt} ms"
        );
        if p95_ms > P95_OVER_RTT_MAX * rtt + 5.0 {
            slow.push(format!(
                "{from} → {owner}: p95 {p95_ms:.1} ms over {n} reads, round trip {rtt} ms"
            ));
        }
    }
    assert!(
        slow.is_empty(),
        "remote linearizable reads wait for more than one sync round trip at p95: {slow:?}"
    );
}

/// A remote linearizable read's p95 may exceed its round trip by this factor (plus 5 ms of
/// local work): one round trip, not two.
const P95_OVER_RTT_MAX: f64 = 1.1;

/// Online domain moves under the workload and a crash: us-east's domain moves to eu-west while
/// eu-west's node 4 is down, then back; both commit, operations on the domain were served by
/// both owners, and both checkers accept the history (the moved domain's revisions put in one
/// order across its owners).
#[test]
fn moves_under_faults_keep_the_history_consistent() {
    let out = run(
        "[[moves]]\nat_s=3\nprefix='/us-east/'\nto='eu-west'\n[[moves]]\nat_s=12\nprefix='/us-east/'\nto='us-east'\n[[faults]]\nat_s=2\nkind='crash'\ntarget='n4'\nfor_s=4\n",
        "d",
        MIXED,
        5,
    );
    moved_there_and_back(&out, "mode d");
}

/// us-east's domain moved to eu-west and back (`out`, named `run` in messages): both moves
/// committed, both owners (groups 1 and 2) served operations on it, and both checkers accept
/// the history.
fn moved_there_and_back(out: &Outcome, run: &str) {
    assert_eq!(out.moves.len(), 2, "{run}: {:?}", out.moves);
    for m in &out.moves {
        assert!(m.committed, "{run}: {m:?}");
        assert!(m.since > 0, "{run}: {m:?}");
    }
    let served: std::collections::BTreeSet<u64> = out
        .records
        .iter()
        .filter(|r| r.op.kind.key().starts_with("/us-east/"))
        .filter_map(|r| r.served.map(|(g, _)| g))
        .collect();
    assert!(
        served.contains(&1) && served.contains(&2),
        "{run}: operations on the moved domain were served by both owners: {served:?}"
    );
    assert_eq!(out.sequential, Ok(()), "{run}");
    assert!(out.linearizable.is_ok(), "{run}: {:?}", out.linearizable);
}

/// Back-to-back proposals from the global group's leader's region — a Global Lock acquired,
/// then released, again and again — cost one quorum round trip each: the release's entries go
/// out while the acquire's commit is still on its way to the followers, instead of waiting
/// behind it (openraft 0.9's one request in flight made each operation two round trips from
/// there: a pair cost 313 ms over a 75 ms quorum). Lockers in every region (each its own
/// lock); the leader's region's pairs are judged: p95 of each operation ≤ 1.1x the leader's
/// quorum round trip + 5 ms.
#[test]
fn a_global_lock_from_the_leaders_region_costs_one_quorum_round_trip_per_operation() {
    let topo_text = mode_topology(TOPO, "d").expect("topology");
    let topo = meridian_topology::Topology::parse(&topo_text, "d").expect("parse");
    let regions = ["us-east", "eu-west", "ap-northeast"];
    let lockers: String = regions
        .iter()
        .map(|r| format!("[[lockers]]\nregion='{r}'\nname='/global/locks/t-{r}'\n"))
        .collect();
    let s = parse_scenario(
        &format!(
            "name='t'\nmodes=['d']\nduration_s=20\nclients_per_region=1\nkeys_per_region=8\nwarmup_s=15\n{lockers}"
        ),
        "test scenario",
    )
    .expect("scenario");
    let out = simulate(&s, &topo_text, "d", MIXED, 13).expect("simulation");
    assert_eq!(out.sequential, Ok(()));
    let global = topo.group_by_name("global").expect("global group");
    let leader = out
        .leaders
        .get(&global.id.0)
        .unwrap_or_else(|| panic!("no leader of the global group: {:?}", out.leaders))
        .clone();
    // The leader's quorum round trip: to the nearest majority of the voters (itself included).
    let mut rtts: Vec<u64> = global
        .voters
        .iter()
        .map(|v| {
            let r = &topo
                .nodes
                .iter()
                .find(|n| n.id == *v)
                .expect("voter")
                .region;
            if *r == leader {
                0
            } else {
                topo.rtt_ms(&leader, r)
            }
        })
        .collect();
    rtts.sort_unstable();
    let quorum_rtt = rtts[rtts.len() / 2] as f64;
    let p95 = |mut us: Vec<u64>| -> f64 {
        us.sort_unstable();
        us[(us.len() * 95).div_ceil(100) - 1] as f64 / 1000.0
    };
    let mut judged = None;
    for (i, region) in regions.iter().enumerate() {
        let pairs: Vec<_> = out.lock_pairs.iter().filter(|p| p.locker == i).collect();
        let n = pairs.len();
        assert!(n >= 10, "{region}: only {n} lock pairs in 20 s");
        let acquire = p95(pairs.iter().map(|p| p.acquire_us).collect());
        let release = p95(pairs.iter().map(|p| p.release_us).collect());
        eprintln!(
            "{region}: {n} pairs, p95 acquire {acquire:.1} ms, release {release:.1} ms{}",
            if *region == leader {
                format!(" (the leader's region; quorum round trip {quorum_rtt} ms)")
            } else {
                String::new()
            }
        );
        if *region == leader {
            judged = Some((acquire, release));
        }
    }
    let (acquire, release) = judged.expect("a locker in the leader's region");
    let bound = P95_OVER_RTT_MAX * quorum_rtt + 5.0;
    assert!(
        acquire <= bound && release <= bound,
        "from the leader's region ({leader}) a lock operation should cost one quorum round trip \
         ({quorum_rtt} ms): p95 acquire {acquire:.1} ms, release {release:.1} ms, bound {bound:.1} ms"
    );
}

/// The lease's clock assumption (docs/consistency.md, "Lease reads"), in virtual time: us-east's
/// leader (n3) is cut off together with one client (c0x2), which keeps reading at it, while the
/// other us-east clients write through the voters left, which elect a new leader. With n3's
/// clock 8 % slow (within `lease::DRIFT`) its lease ends before any write of the new leader is
/// acknowledged and no read returns an older value; with its clock at 0.15x, far outside the
/// bound, its lease outlasts the 5 s the writers' calls stuck at n3 take to give up, and the
/// linearizability checker finds the stale reads it then serves — the pair of runs of
/// `services/cli/tests/lease_drift.rs` under libfaketime, here seeded and repeatable.
#[test]
fn a_leader_clock_slow_within_the_drift_bound_serves_no_stale_lease_read() {
    let topo = mode_topology(TOPO, "d").expect("topology");
    let mix = Mix {
        read_ratio: 0.5,
        locality: 1.0,
        burst: 1.0,
    };
    let scenario = |rate: f64| {
        parse_scenario(
            &format!(
                "name='lease'\nmodes=['d']\nduration_s=15\nclients_per_region=3\nkeys_per_region=2\n\
                 warmup_s=15\nlinearizable_reads=1.0\nclock_rates={{n3={rate}}}\nreaders=['c0x2']\n\
                 [[faults]]\nat_s=3\nkind='partition'\ntarget='n3'\nwith_clients=['c0x2']\nfor_s=10\n"
            ),
            "lease scenario",
        )
        .expect("scenario")
    };
    // Client 2 (c0x2, which starts at n3) reads at the cut-off leader; client 1 (c0x1, at
    // n2) writes through the other side. With seed 5 n3 leads us-east's group at the cut.
    let cut = |out: &Outcome| {
        let (from, to) = (3_000_000 + 15_000_000, 13_000_000 + 15_000_000);
        // End times, after the cut, of client 2's reads and of client 1's writes.
        let ends = |client: usize, write: bool| -> Vec<u64> {
            out.records
                .iter()
                .filter(|r| r.client == client)
                .filter(|r| matches!(r.op.kind, OpKind::Write { .. }) == write)
                .filter_map(|r| r.end_us)
                .filter(|e| *e > from + 200_000 && *e < to)
                .collect()
        };
        let (reads, writes) = (ends(2, false), ends(1, true));
        eprintln!(
            "after the cut: new leader's first write acknowledged at +{:?} ms, last read at n3 at +{:?} ms",
            writes.iter().min().map(|t| (t - from) / 1000),
            reads.iter().max().map(|t| (t - from) / 1000)
        );
        (reads.len(), writes.len())
    };
    let within = simulate(&scenario(0.92), &topo, "d", mix, 5).expect("simulation");
    let (reads, writes) = cut(&within);
    eprintln!(
        "n3 at x0.92: {reads} reads at the cut-off leader, {writes} writes at the new one; {:?}",
        within.linearizable
    );
    assert!(
        reads > 0,
        "n3 served no read after the cut: did it lead us-east's group then? (seed 5 made it so)"
    );
    assert!(
        writes > 0,
        "the voters left elected no leader that took writes"
    );
    assert!(within.linearizable.is_ok(), "{:?}", within.linearizable);
    assert_eq!(within.sequential, Ok(()));

    let outside = simulate(&scenario(0.15), &topo, "d", mix, 5).expect("simulation");
    let (reads, writes) = cut(&outside);
    eprintln!(
        "n3 at x0.15: {reads} reads at the cut-off leader, {writes} writes at the new one; {:?}",
        outside
            .linearizable
            .as_ref()
            .map_err(|e| e.lines().next().unwrap_or("").to_string())
    );
    assert!(
        outside.linearizable.is_err(),
        "a lease clock at 0.15x should let the old leader serve stale reads"
    );
}

/// Domain moves in mode e (closed timestamps), with the nodes' physical clocks spread up to the
/// maximum offset, a roaming session and a crash: us-east's domain moves to eu-west and back.
/// Both moves commit, both owners serve the domain, and both checkers accept the history —
/// reads by timestamp across an owner change (the moved-in domain's floor, docs/consistency.md
/// rule 3′) put the domain's revisions in one order. Shorter than the mode-d run: a group
/// closes a timestamp every 10 ms, which makes a simulated second three times as costly.
fn moves_in_mode_e(profile: &str, seed: u64) {
    let s = parse_scenario(
        &format!(
            "name='t'\nmodes=['e']\nduration_s=14\nwarmup_s=6\nclients_per_region=2\n\
             keys_per_region=8\nlinearizable_reads=0.2\nphysical_skew_ms=250\nroamers=1\n\
             profile='{profile}'\n\
             [[moves]]\nat_s=2\nprefix='/us-east/'\nto='eu-west'\n\
             [[moves]]\nat_s=8\nprefix='/us-east/'\nto='us-east'\n\
             [[faults]]\nat_s=1\nkind='crash'\ntarget='n4'\nfor_s=3\n"
        ),
        "test scenario",
    )
    .expect("scenario");
    let topo = mode_topology(TOPO, "e").expect("topology");
    let out = simulate(&s, &topo, "e", MIXED, seed).expect("simulation");
    eprintln!(
        "mode e, {profile}, seed {seed}: {} ops, wall {:?}, moves {:?}",
        out.records.len(),
        out.wall,
        out.moves
    );
    moved_there_and_back(&out, &format!("mode e, {profile}"));
}

#[test]
fn moves_in_mode_e_local_writes_under_clock_skew_keep_the_history_consistent() {
    moves_in_mode_e("local-writes", 5);
}

#[test]
fn moves_in_mode_e_global_reads_under_clock_skew_keep_the_history_consistent() {
    moves_in_mode_e("global-reads", 6);
}
