//! The deterministic simulation: the real node code (openraft, the router, tonic over HTTP/2)
//! under turmoil — each node and each client its own simulated host, per-pair latencies from
//! the topology's round trips, virtual time, the in-memory store — driven by one seed.
//! Minutes of simulated traffic take seconds of wall time, and the same seed replays the same
//! history.
//!
//! What makes a run repeatable: turmoil steps every host in a fixed order and seeds each host's
//! tokio runtime (the `select!` fairness draw) when built with `--cfg tokio_unstable` (see
//! `.cargo/config.toml`); openraft's random election timeout is pinned per node
//! (`Timing::fixed_election_offset_ms`) and its other draws (the tick's first phase) follow the
//! seed (`meridian_types::runtime::seed_thread_rng`); the workload draws from its own seeded generator;
//! lease deadlines use tokio's (virtual) clock; nothing here reads the wall clock.

use crate::scenario::{FaultKind, Mix, Scenario, Workload};
use crate::RegionResult;
use meridian_checker::{History, Op, OpKind, Timed, WatchItem, WatchLog, WatchedEvent};
use meridian_locks::MonotonicClock;
use meridian_proto::io::{BoxedIo, Dialer};
use meridian_sdk::{Client, Consistency, Options, Session};
use meridian_server::{Node, NodeConfig, SimEnv};
use meridian_storage::MemDisk;
use meridian_topology::Topology;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Port every simulated node listens on (each node is its own host).
const NODE_PORT: u16 = 7400;

/// One completed (or failed) client operation, times in virtual microseconds since the start.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Record {
    pub client: usize,
    pub region: String,
    pub start_us: u64,
    /// None: no answer (an error); a write's effect is then unknown.
    pub end_us: Option<u64>,
    pub linearizable: bool,
    pub kind: usize,
    pub op: Op,
    /// The group and revision of the answer (its header), when there was one.
    pub served: Option<(u64, u64)>,
}

/// How a scheduled domain move ended in a simulated run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MoveOutcome {
    pub prefix: String,
    pub to: String,
    /// Virtual seconds since the start of the workload when it began and ended.
    pub begun_s: f64,
    pub ended_s: f64,
    pub committed: bool,
    /// The owner afterwards and its revision the domain's copy begins at.
    pub group: u64,
    pub since: u64,
    /// Why it did not run or was rolled back.
    pub note: String,
}

/// One acquire+release pair of a [`crate::scenario::Locker`], in virtual microseconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LockPair {
    /// The locker's index in the scenario.
    pub locker: usize,
    pub acquire_us: u64,
    pub release_us: u64,
}

/// What a simulated run produced.
#[derive(Debug)]
pub struct Outcome {
    pub records: Vec<Record>,
    pub regions: BTreeMap<String, RegionResult>,
    /// The sequential-consistency checker's verdict over every operation.
    pub sequential: Result<(), String>,
    /// The linearizability checker's verdict over writes and linearizable reads; Ok: keys.
    pub linearizable: Result<usize, String>,
    /// Virtual time the workload ran.
    pub workload_s: f64,
    /// The scenario's domain moves, in order.
    pub moves: Vec<MoveOutcome>,
    /// Every lockers' recorded acquire+release pairs, in the order they ended.
    pub lock_pairs: Vec<LockPair>,
    /// The lock checker's verdict over every locker's holds and fenced writes (lockers.rs);
    /// Ok: holds checked (0 without lockers).
    pub locks: Result<usize, String>,
    /// Which region's node led each group at the end of the run (group id → region).
    pub leaders: BTreeMap<u64, String>,
    /// The faults applied (listed and drawn) and the nodes whose lease clock was skewed.
    pub faults: usize,
    pub skewed: usize,
    /// The part of the schedule drawn from the seed (`random_faults`), as scenario TOML.
    pub schedule: String,
    /// Every watcher's stream (the scenario's `watchers`), as its client received it.
    pub watches: Vec<WatchLog>,
    /// The watch validators' verdict over those streams; Ok: events checked.
    pub watch: Result<usize, String>,
    /// Wall-clock time the whole simulation took.
    pub wall: Duration,
}

/// The simulator's host name of node `id`.
fn node_host(id: u64) -> String {
    format!("n{id}")
}

/// A pinned election timeout offset per node: distinct within any group of a few nodes and
/// apart by more than a WAN round trip, so elections do not split forever.
fn election_offset_ms(id: u64) -> u64 {
    (id % 7) * 300
}

/// The simulated wall clock's start, µs since the Unix epoch (2026-01-01): what simulated nodes'
/// timestamps count from.
const SIM_EPOCH_US: u64 = 1_767_225_600_000_000;

/// Node `id`'s physical clock offset in seed `seed`'s run: drawn in ±`skew_ms`/2, so any two
/// nodes differ by at most `skew_ms` (`physical_skew_ms`).
fn physical_offset_us(seed: u64, id: u64, skew_ms: f64) -> i64 {
    let half = (skew_ms * 500.0) as i64;
    if half == 0 {
        return 0;
    }
    // splitmix64 of the seed and the node: the same run always draws the same offsets.
    let mut z = seed ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let span = 2 * half + 1;
    (z % span as u64) as i64 - half
}

fn now_us() -> u64 {
    turmoil::sim_elapsed()
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A client of `region`'s nodes, starting at its `shift`-th node (modulo their number).
fn region_client(
    topology: &Topology,
    region: &str,
    shift: usize,
    dialer: &Dialer,
) -> anyhow::Result<Client> {
    let mut endpoints: Vec<String> = topology
        .nodes
        .iter()
        .filter(|n| n.region == region)
        .map(|n| n.address.clone())
        .collect();
    if endpoints.is_empty() {
        anyhow::bail!("region {region:?} has no nodes in the topology");
    }
    let n = endpoints.len();
    endpoints.rotate_left(shift % n);
    Ok(Client::new(
        endpoints,
        Options {
            rpc_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(10),
            dialer: Some(dialer.clone()),
            ..Options::default()
        },
    )?)
}

/// Runs `mix` of scenario `s` on `topology_text` (already the mode's topology) in mode `mode`,
/// seeded with `seed`, and checks the history.
pub fn simulate(
    s: &Scenario,
    topology_text: &str,
    mode: &str,
    mix: Mix,
    seed: u64,
) -> anyhow::Result<Outcome> {
    let wall = std::time::Instant::now();
    let topology = Arc::new(Topology::parse(
        topology_text,
        &format!("mode {mode} topology"),
    )?);
    // The seed's drawn faults (`random_faults`), so a replay of the seed meets the same ones.
    let drawn = crate::faults::with_random_faults(s, &topology, seed);
    let schedule = crate::faults::schedule_toml(s, &drawn);
    let s = &drawn;
    let regions: Vec<String> = topology.regions.iter().map(|r| r.name.clone()).collect();
    let warmup = Duration::from_secs(s.warmup_s);
    let run = Duration::from_secs(s.duration_s);
    let last_fault = s
        .faults
        .iter()
        .map(|f| f.at_s + f.for_s)
        .fold(0.0, f64::max);
    // Every host runs on this thread: openraft's random numbers follow the seed.
    meridian_types::runtime::seed_thread_rng(seed);
    let mut builder = turmoil::Builder::new();
    builder
        .rng_seed(seed)
        .simulation_duration(
            warmup + run + Duration::from_secs_f64(last_fault) + Duration::from_secs(120),
        )
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_micros(500))
        .max_message_latency(Duration::from_micros(500))
        .tcp_capacity(1 << 20);
    let mut sim = builder.build();

    // Advertised address -> simulated host, for every node.
    let hosts: Arc<BTreeMap<String, String>> = Arc::new(
        topology
            .nodes
            .iter()
            .map(|n| {
                (
                    n.address.clone(),
                    format!("{}:{NODE_PORT}", node_host(n.id)),
                )
            })
            .collect(),
    );
    let dialer = {
        let hosts = hosts.clone();
        Dialer::new(move |addr: String| {
            let target = hosts.get(&addr).cloned().unwrap_or(addr);
            Box::pin(async move {
                turmoil::net::TcpStream::connect(target)
                    .await
                    .map(BoxedIo::new)
            })
        })
    };
    if let Some(node) = s
        .clock_rates
        .keys()
        .find(|k| !topology.nodes.iter().any(|n| node_host(n.id) == **k))
    {
        anyhow::bail!("clock_rates: {node} is no node of the topology");
    }
    let mut host_region: Vec<(String, String)> = Vec::new();
    let mut disks: BTreeMap<String, MemDisk> = BTreeMap::new();
    let base_fsync_us = (s.disk_fsync_ms * 1000.0) as u64;
    for n in &topology.nodes {
        let name = node_host(n.id);
        host_region.push((name.clone(), n.region.clone()));
        let disk = MemDisk::default();
        disk.model()
            .fsync_delay_us
            .store(base_fsync_us, std::sync::atomic::Ordering::Relaxed);
        disk.model().ack_before_fsync.store(
            s.inject.iter().any(|b| b == "ack-before-fsync"),
            std::sync::atomic::Ordering::Relaxed,
        );
        disks.insert(name.clone(), disk.clone());
        let mut config = NodeConfig {
            node_id: n.id,
            region: n.region.clone(),
            listen: format!("0.0.0.0:{NODE_PORT}"),
            advertise: Some(n.address.clone()),
            router: meridian_server::config::RouterConfig {
                sync_on_switch: mode != "c" && !s.inject.iter().any(|b| b == "skip-sync"),
            },
            ..NodeConfig::default()
        };
        config.limits.inject_early_lock_grant = s.inject.iter().any(|b| b == "early-lock-grant");
        if mode == "e" {
            config.timestamps.profile = s.profile;
        }
        config.limits.inject_read_before_closed =
            s.inject.iter().any(|b| b == "read-before-closed");
        let offset_us = physical_offset_us(seed, n.id, s.physical_skew_ms);
        if s.inject.iter().any(|b| b == "drop-watch-event") {
            config.limits.inject_drop_watch_revision =
                Some(crate::scenario::DROPPED_WATCH_REVISION);
        }
        config.raft.fixed_election_offset_ms = Some(election_offset_ms(n.id));
        config.raft.lease_clock_rate = s.clock_rates.get(&name).copied();
        config.raft.allow_log_reversion = s.inject.iter().any(|b| b == "ack-before-fsync");
        let (topology, dialer) = (topology.clone(), dialer.clone());
        sim.host(name.as_str(), move || {
            let (config, topology, dialer, disk) = (
                config.clone(),
                topology.clone(),
                dialer.clone(),
                disk.clone(),
            );
            async move {
                // What the last incarnation wrote is on disk now (fjall fsyncs on open).
                disk.model().reopened();
                let listener = turmoil::net::TcpListener::bind(("0.0.0.0", NODE_PORT)).await?;
                let incoming = futures::stream::unfold(listener, |l| async move {
                    let conn = l.accept().await.map(|(s, _)| BoxedIo::new(s));
                    Some((conn, l))
                });
                let env = SimEnv {
                    incoming: Box::pin(incoming),
                    dialer,
                    disk,
                    physical: Arc::new(move || {
                        SIM_EPOCH_US.saturating_add_signed(offset_us) + now_us()
                    }),
                };
                let _node = Node::start_simulated(
                    config,
                    topology,
                    Arc::new(MonotonicClock::default()),
                    env,
                )
                .await
                .map_err(|e| e.to_string())?;
                std::future::pending::<()>().await;
                Ok(())
            }
        });
    }

    let records: Arc<Mutex<Vec<Record>>> = Arc::default();
    let mut client_id = 0usize;
    for (ri, region) in regions.iter().enumerate() {
        for c in 0..s.clients_per_region {
            let name = format!("c{ri}x{c}");
            host_region.push((name.clone(), region.clone()));
            let id = client_id;
            client_id += 1;
            // Each client starts at a different node of its region.
            let mut client = region_client(&topology, region, c, &dialer)?;
            let mut work = Workload::new(s, mix, region, &regions, seed ^ (id as u64 + 1) << 20);
            let (records, mut region, topology) =
                (records.clone(), region.clone(), topology.clone());
            let pad = s.value_size;
            let reader = s.readers.contains(&name);
            // A roamer carries its session to the next region's routers halfway through.
            let roam_to = (c < s.roamers).then(|| regions[(ri + 1) % regions.len()].clone());
            let dialer = dialer.clone();
            sim.client(name.as_str(), async move {
                tokio::time::sleep(warmup).await;
                let stop = tokio::time::Instant::now() + run;
                let roam_at = tokio::time::Instant::now() + run / 2;
                let mut roam_to = roam_to;
                let mut n = 0u64;
                while tokio::time::Instant::now() < stop {
                    if tokio::time::Instant::now() >= roam_at {
                        if let Some(to) = roam_to.take() {
                            let moved = region_client(&topology, &to, c, &dialer)
                                .map_err(|e| e.to_string())?;
                            moved.adopt_session(&client.session());
                            client = moved;
                            region = to;
                        }
                    }
                    let mut step = work.next_step();
                    step.read |= reader;
                    let group = topology
                        .placement()
                        .group_of(&step.key)
                        .map_or(0, |(g, _)| g.0);
                    let start_us = now_us();
                    let mut served = None;
                    let (kind, end_us) = if step.read {
                        let consistency = if step.linearizable {
                            Consistency::Linearizable
                        } else {
                            Consistency::Sequential
                        };
                        match client.get_with(&step.key, consistency).await {
                            Ok(r) => {
                                served = r.header.as_ref().map(|h| (h.group, h.revision));
                                (
                                    OpKind::Read {
                                        key: step.key.clone(),
                                        value: r.kv.as_ref().map(|kv| value_id(&kv.value)),
                                        mod_revision: r.kv.as_ref().map(|kv| kv.mod_revision),
                                    },
                                    Some(now_us()),
                                )
                            }
                            Err(_) => {
                                record_failure(&records, id, &region, start_us, &step, group);
                                continue;
                            }
                        }
                    } else {
                        n += 1;
                        let vid = format!("c{id}-{n}");
                        let mut value = format!("{vid}|").into_bytes();
                        value.resize(pad.max(value.len()), b'x');
                        match client.put(&step.key, value).await {
                            Ok(r) => {
                                served = r.header.as_ref().map(|h| (h.group, h.revision));
                                (
                                    OpKind::Write {
                                        key: step.key.clone(),
                                        value: vid,
                                        revision: r.header.as_ref().map(|h| h.revision),
                                    },
                                    Some(now_us()),
                                )
                            }
                            Err(_) => (
                                OpKind::Write {
                                    key: step.key.clone(),
                                    value: vid,
                                    revision: None,
                                },
                                None,
                            ),
                        }
                    };
                    records
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(Record {
                            client: id,
                            region: region.clone(),
                            start_us,
                            end_us,
                            linearizable: step.linearizable,
                            kind: step.kind(),
                            op: Op {
                                session: id,
                                group,
                                kind,
                            },
                            served,
                        });
                }
                Ok(())
            });
        }
    }

    // The watchers: per region, `watchers` pairs, pair i watching region (r + i)'s prefix —
    // one from revision 1 from the workload's start, one "from now" from a third of the way in
    // (the resumed watch the first one's stream is compared with). They stop 5 s after the
    // workload.
    let watch_out: Arc<Mutex<Vec<WatchLog>>> = Arc::default();
    for (ri, region) in regions.iter().enumerate() {
        for wi in 0..s.watchers {
            let prefix = format!("/{}/sim/", regions[(ri + wi) % regions.len()]);
            let group = topology
                .placement()
                .group_of(&format!("{prefix}k0"))
                .map_or(0, |(g, _)| g.0);
            for late in [false, true] {
                let name = format!("w{ri}x{wi}{}", if late { "l" } else { "f" });
                host_region.push((name.clone(), region.clone()));
                let client = region_client(&topology, region, wi + usize::from(late), &dialer)?;
                let (out, prefix, watcher_name) = (watch_out.clone(), prefix.clone(), name.clone());
                let delay = if late { run / 3 } else { Duration::ZERO };
                sim.client(name.as_str(), async move {
                    tokio::time::sleep(warmup + delay).await;
                    let stop = tokio::time::Instant::now() + (run - delay) + Duration::from_secs(5);
                    let start = if late { 0 } else { 1 };
                    let mut log = WatchLog {
                        watcher: watcher_name,
                        group,
                        prefix: prefix.clone(),
                        start,
                        items: Vec::new(),
                    };
                    let mut watcher = client.watch(&prefix, true, start);
                    loop {
                        match tokio::time::timeout_at(stop, watcher.next()).await {
                            Err(_) => break,
                            Ok(Ok(ev)) => log.items.push(watch_item(&ev)),
                            // The watcher resumes by itself; it gives up only after a long
                            // outage (a cut-off region), and is asked again.
                            Ok(Err(e)) if e.is_retryable() => {
                                tokio::time::sleep(Duration::from_millis(100)).await
                            }
                            Ok(Err(_)) => break,
                        }
                    }
                    out.lock().unwrap_or_else(|p| p.into_inner()).push(log);
                    Ok(())
                });
            }
        }
    }

    // The scheduled domain moves, one after another, from a client in the first region —
    // only in modes whose topology has the target group (a and b have one group).
    let moves_out: Arc<Mutex<Vec<MoveOutcome>>> = Arc::default();
    if !s.moves.is_empty() {
        let region = regions.first().cloned().unwrap_or_default();
        let endpoints: Vec<String> = topology
            .nodes
            .iter()
            .filter(|n| n.region == region)
            .map(|n| n.address.clone())
            .collect();
        let client = Client::new(
            endpoints,
            Options {
                rpc_timeout: Duration::from_secs(5),
                call_timeout: Duration::from_secs(20),
                dialer: Some(dialer.clone()),
                ..Options::default()
            },
        )?;
        host_region.push(("mover".to_string(), region));
        let (plan, out, topology) = (s.moves.clone(), moves_out.clone(), topology.clone());
        sim.client("mover", async move {
            let start = tokio::time::Instant::now() + warmup;
            for m in plan {
                let at = start + Duration::from_secs_f64(m.at_s);
                tokio::time::sleep_until(at).await;
                let since_start = |t: tokio::time::Instant| (t - start).as_secs_f64();
                let mut done = MoveOutcome {
                    prefix: m.prefix.clone(),
                    to: m.to.clone(),
                    begun_s: since_start(tokio::time::Instant::now()),
                    ended_s: 0.0,
                    committed: false,
                    group: 0,
                    since: 0,
                    note: String::new(),
                };
                if topology.group_by_name(&m.to).is_none() {
                    done.note = format!("skipped: mode has no group {}", m.to);
                    out.lock().unwrap_or_else(|p| p.into_inner()).push(done);
                    continue;
                }
                match run_move(&client, &m.prefix, &m.to).await {
                    Ok((committed, group, since, note)) => {
                        (done.committed, done.group, done.since, done.note) =
                            (committed, group, since, note);
                    }
                    Err(e) => done.note = e,
                }
                done.ended_s = since_start(tokio::time::Instant::now());
                out.lock().unwrap_or_else(|p| p.into_inner()).push(done);
            }
            Ok(())
        });
    }

    // The lockers: acquire, fenced write, hold, release, back to back; each pair timed and
    // every hold and write recorded for the lock checker (lockers.rs).
    let pairs_out: Arc<Mutex<Vec<LockPair>>> = Arc::default();
    let lock_log = crate::lockers::LockLog::default();
    for (li, l) in s.lockers.iter().enumerate() {
        let client = region_client(&topology, &l.region, 0, &dialer)?;
        let name = format!("l{li}");
        host_region.push((name.clone(), l.region.clone()));
        let (out, lock, log, me) = (
            pairs_out.clone(),
            l.name.clone(),
            lock_log.clone(),
            name.clone(),
        );
        let hold_for = Duration::from_millis(l.hold_ms);
        sim.client(name.as_str(), async move {
            tokio::time::sleep(warmup).await;
            let stop = tokio::time::Instant::now() + run;
            let mut session = Session::new(client, Duration::from_secs(10));
            let mut warm = true;
            while tokio::time::Instant::now() < stop {
                // A session lost to a fault stays lost: go on with a new one.
                if session.is_lost() {
                    session = Session::new(session.client().clone(), Duration::from_secs(10));
                }
                let Some((acquire, release)) =
                    crate::lockers::one_hold(&session, &lock, &me, hold_for, &log).await
                else {
                    // Refused or broken (a fault): try again shortly.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                if !std::mem::take(&mut warm) {
                    out.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(LockPair {
                            locker: li,
                            acquire_us: acquire.as_micros() as u64,
                            release_us: release.as_micros() as u64,
                        });
                }
            }
            Ok(())
        });
    }

    // Who leads each group at the end (asked of the first region's nodes).
    let leaders_out: Arc<Mutex<BTreeMap<u64, String>>> = Arc::default();
    {
        let first = regions.first().cloned().unwrap_or_default();
        let client = region_client(&topology, &first, 0, &dialer)?;
        host_region.push(("surveyor".to_string(), first));
        let out = leaders_out.clone();
        sim.client("surveyor", async move {
            tokio::time::sleep(warmup + run).await;
            if let Ok(status) = client.status(true).await {
                let mut all = vec![status.clone()];
                all.extend(status.nodes.iter().cloned());
                let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
                for n in &all {
                    for g in n.groups.iter().filter(|g| g.state == "Leader") {
                        out.insert(g.group, n.region.clone());
                    }
                }
            }
            Ok(())
        });
    }

    if let Some(c) = s.readers.iter().find(|c| {
        !host_region
            .iter()
            .any(|(h, _)| h == *c && h.starts_with('c'))
    }) {
        anyhow::bail!("readers names {c:?}, which is no workload client");
    }
    for (i, f) in s.faults.iter().enumerate() {
        if let Some(c) = f.with_clients.iter().find(|c| {
            !host_region
                .iter()
                .any(|(h, _)| h == *c && h.starts_with('c'))
        }) {
            anyhow::bail!("fault {i}: with_clients names {c:?}, which is no workload client");
        }
    }

    // Per-pair latency: half the topology's round trip between the two hosts' regions.
    for (i, (a, ra)) in host_region.iter().enumerate() {
        for (b, rb) in &host_region[i + 1..] {
            if ra != rb {
                let one_way = Duration::from_micros(topology.rtt_ms(ra, rb) * 500);
                sim.set_link_latency(
                    a.as_str(),
                    b.as_str(),
                    one_way.max(Duration::from_micros(500)),
                );
            }
        }
    }

    // Faults, at virtual times from the start of the workload: (time, apply?, fault index).
    let mut events: Vec<(Duration, bool, usize)> = Vec::new();
    for (i, f) in s.faults.iter().enumerate() {
        let at = warmup + Duration::from_secs_f64(f.at_s);
        events.push((at, true, i));
        events.push((at + Duration::from_secs_f64(f.for_s), false, i));
    }
    events.sort_by_key(|e| e.0);
    let mut next = 0;
    loop {
        while next < events.len() && sim.elapsed() >= events[next].0 {
            let (_, apply, i) = events[next];
            let f = &s.faults[i];
            let targets: Vec<String> = host_region
                .iter()
                .filter(|(h, r)| h.starts_with('n') && (*r == f.target || *h == f.target))
                .map(|(h, _)| h.clone())
                .collect();
            if targets.is_empty() {
                anyhow::bail!(
                    "fault {i}: target {:?} is neither a region nor a node (n<ID>) of the topology",
                    f.target
                );
            }
            match (f.kind, apply) {
                (FaultKind::Crash, true) => {
                    for t in &targets {
                        sim.crash(t.as_str());
                        if f.lose_unsynced {
                            if let Some(d) = disks.get(t) {
                                d.lose_unflushed();
                            }
                        }
                    }
                }
                (FaultKind::SlowDisk, _) => {
                    let us = match (apply, f.fsync_ms) {
                        (true, Some(ms)) => (ms * 1000.0) as u64,
                        _ => base_fsync_us,
                    };
                    for t in &targets {
                        if let Some(d) = disks.get(t) {
                            d.model()
                                .fsync_delay_us
                                .store(us, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
                (FaultKind::Crash, false) => {
                    for t in &targets {
                        sim.bounce(t.as_str());
                    }
                }
                (FaultKind::Partition | FaultKind::Pause | FaultKind::Delay, _) => {
                    // A region's partition keeps its clients with it; a pause cuts only the
                    // paused nodes (their own clients see them stop too); a delay holds only
                    // what the target's nodes and the other nodes send each other.
                    let inside: Vec<&String> = if f.kind == FaultKind::Partition {
                        host_region
                            .iter()
                            .filter(|(h, r)| {
                                *r == f.target || *h == f.target || f.with_clients.contains(h)
                            })
                            .map(|(h, _)| h)
                            .collect()
                    } else {
                        targets.iter().collect()
                    };
                    for (h, _) in &host_region {
                        if inside.contains(&h)
                            || (f.kind == FaultKind::Delay && !h.starts_with('n'))
                        {
                            continue;
                        }
                        for i in &inside {
                            match (f.kind, apply) {
                                (FaultKind::Partition, true) => {
                                    sim.partition(i.as_str(), h.as_str())
                                }
                                (FaultKind::Partition, false) => sim.repair(i.as_str(), h.as_str()),
                                (_, true) => sim.hold(i.as_str(), h.as_str()),
                                (_, false) => sim.release(i.as_str(), h.as_str()),
                            }
                        }
                    }
                }
            }
            next += 1;
        }
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => anyhow::bail!("simulation failed: {e}"),
        }
    }

    let records = std::mem::take(&mut *records.lock().unwrap_or_else(|p| p.into_inner()));
    let mut regions_out: BTreeMap<String, RegionResult> = BTreeMap::new();
    for r in &records {
        let e = regions_out.entry(r.region.clone()).or_default();
        match r.end_us {
            Some(end) => {
                e.hist[r.kind].saturating_record(end.saturating_sub(r.start_us).max(1));
            }
            None => e.errors += 1,
        }
    }
    let moves = std::mem::take(&mut *moves_out.lock().unwrap_or_else(|p| p.into_inner()));
    let initial = |prefix: &str| {
        topology
            .placement()
            .group_of(prefix)
            .map_or(0, |(g, _)| g.0)
    };
    let records = across_moves(records, &moves, initial);
    let lock_pairs = std::mem::take(&mut *pairs_out.lock().unwrap_or_else(|p| p.into_inner()));
    let leaders = std::mem::take(&mut *leaders_out.lock().unwrap_or_else(|p| p.into_inner()));
    let (sequential, linearizable) = check(&records);
    let mut watches = std::mem::take(&mut *watch_out.lock().unwrap_or_else(|p| p.into_inner()));
    watches.sort_by(|a, b| a.watcher.cmp(&b.watcher));
    let watch = check_watches(&records, &watches);
    let locks = lock_log.check();
    Ok(Outcome {
        locks,
        faults: s.faults.len(),
        skewed: s.clock_rates.len(),
        schedule,
        watches,
        watch,
        records,
        regions: regions_out,
        sequential,
        linearizable,
        workload_s: run.as_secs_f64(),
        moves,
        lock_pairs,
        leaders,
        wall: wall.elapsed(),
    })
}

/// Begins moving `prefix` to `to` (retrying while the cluster is busy, e.g. in a fault) and
/// waits for its end: (committed, owner afterwards, its `since`, the rollback's reason).
async fn run_move(
    client: &Client,
    prefix: &str,
    to: &str,
) -> Result<(bool, u64, u64, String), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let id = loop {
        match client.move_domain(prefix, to, 0).await {
            Ok(r) => break r.id,
            Err(e) if tokio::time::Instant::now() > deadline => {
                return Err(format!("the move never began: {e}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    loop {
        if let Ok(m) = client.placement().await {
            if let Some(r) = m.moves_done.iter().find(|r| r.id == id) {
                let (group, since) = m
                    .domains
                    .iter()
                    .find(|d| d.prefix == prefix)
                    .map_or((0, 0), |d| (d.group, d.since));
                return Ok((!r.aborted, group, since, r.reason.clone()));
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("move {id} did not end within 120 virtual seconds"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Puts the operations on moved domains in one revision order across their owners, as the
/// checkers need (a key in one group, its writes ordered by revision): the domain becomes one
/// virtual group, and a revision of the group that served an operation is counted within the
/// segment of the move that brought the domain there — every operation of an earlier owner
/// comes before (the source is frozen before the import). A read that returned a key the
/// import (or the pre-copy staged before it) placed reports a revision at or below the import's,
/// not its write's: that one is dropped (the value still ties it to its write).
pub fn across_moves(
    mut records: Vec<Record>,
    moves: &[MoveOutcome],
    initial: impl Fn(&str) -> u64,
) -> Vec<Record> {
    const SEGMENT: u64 = 1_000_000_000_000;
    let mut prefixes: Vec<&str> = moves
        .iter()
        .filter(|m| m.committed)
        .map(|m| m.prefix.as_str())
        .collect();
    prefixes.sort_unstable();
    prefixes.dedup();
    for (pi, prefix) in prefixes.iter().enumerate() {
        // (group, since) of each owner in order.
        let mut segments = vec![(initial(prefix), 0u64)];
        segments.extend(
            moves
                .iter()
                .filter(|m| m.committed && m.prefix == *prefix)
                .map(|m| (m.group, m.since)),
        );
        let segment_of = |group: u64, revision: u64| -> (u64, bool) {
            let at = segments
                .iter()
                .enumerate()
                .rev()
                .find(|(_, (g, since))| *g == group && revision >= *since)
                .map_or(0, |(i, _)| i as u64);
            let imported = at > 0 && segments[at as usize].1 == revision;
            (at * SEGMENT + revision, imported)
        };
        for r in records
            .iter_mut()
            .filter(|r| r.op.kind.key().starts_with(prefix))
        {
            r.op.group = 1_000_000 + pi as u64;
            let Some((group, served_at)) = r.served else {
                continue;
            };
            match &mut r.op.kind {
                OpKind::Write { revision, .. } => {
                    if let Some(rev) = revision {
                        *rev = segment_of(group, *rev).0;
                    }
                }
                OpKind::Read { mod_revision, .. } => {
                    if let Some(rev) = *mod_revision {
                        // The segment is the one the serving replica stood in; a key its
                        // import (or the pre-copy before it) placed has a revision at or
                        // below that segment's `since`.
                        let (at, _) = segment_of(group, served_at);
                        let since = segments[(at / SEGMENT) as usize].1;
                        let imported = at >= SEGMENT && rev <= since;
                        *mod_revision = (!imported).then_some(at - served_at + rev);
                    }
                }
            }
        }
    }
    unplaceable_imports_unread(&mut records);
    records
}

/// A write whose client got no answer takes its revision from a read that saw it; if the only
/// reads that saw it saw it as an import (revision dropped above), nothing places it in its
/// domain's order, and the checker would reject the history as malformed. Those reads are
/// counted as unanswered instead: the write is then checked as one nobody saw (it may or may
/// not have happened), which never adds an order the run did not have.
fn unplaceable_imports_unread(records: &mut [Record]) {
    use std::collections::HashSet;
    let unanswered: HashSet<(String, String)> = records
        .iter()
        .filter_map(|r| match &r.op.kind {
            OpKind::Write {
                key,
                value,
                revision: None,
            } => Some((key.clone(), value.clone())),
            _ => None,
        })
        .collect();
    let placed: HashSet<(String, String)> = records
        .iter()
        .filter_map(|r| match &r.op.kind {
            OpKind::Read {
                key,
                value: Some(value),
                mod_revision: Some(_),
            } => Some((key.clone(), value.clone())),
            _ => None,
        })
        .collect();
    for r in records.iter_mut() {
        let OpKind::Read {
            key,
            value,
            mod_revision: None,
        } = &mut r.op.kind
        else {
            continue;
        };
        let Some(v) = value.as_ref() else {
            continue;
        };
        let id = (key.clone(), v.clone());
        if unanswered.contains(&id) && !placed.contains(&id) {
            *value = None;
            r.end_us = None;
        }
    }
}

/// A failed read: nothing was observed, so only the error count remembers it.
fn record_failure(
    records: &Mutex<Vec<Record>>,
    client: usize,
    region: &str,
    start_us: u64,
    step: &crate::Step,
    group: u64,
) {
    // Kept with no answer so the count of errors is right; the checkers skip failed reads.
    records
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Record {
            client,
            region: region.to_string(),
            start_us,
            end_us: None,
            linearizable: step.linearizable,
            kind: step.kind(),
            op: Op {
                session: client,
                group,
                kind: OpKind::Read {
                    key: step.key.clone(),
                    value: None,
                    mod_revision: None,
                },
            },
            served: None,
        });
}

/// The unique id a simulated write put in front of its padding.
/// A watch answer as the watch validators read it.
pub fn watch_item(ev: &meridian_sdk::WatchEvent) -> WatchItem {
    match ev {
        meridian_sdk::WatchEvent::Progress { revision } => WatchItem::Progress {
            revision: *revision,
        },
        meridian_sdk::WatchEvent::Changes { revision, events } => WatchItem::Events {
            revision: *revision,
            events: events
                .iter()
                .filter_map(|e| e.kv.as_ref())
                .map(|kv| WatchedEvent {
                    key: kv.key.clone(),
                    value: value_id(&kv.value),
                    mod_revision: kv.mod_revision,
                })
                .collect(),
        },
    }
}

fn value_id(value: &[u8]) -> String {
    let s = String::from_utf8_lossy(value);
    s.split('|').next().unwrap_or_default().to_string()
}

/// Runs the watch validators over the watchers' streams: each against the history's writes,
/// and each "from now" watcher (`…l`) against its partner from revision 1 (`…f`).
pub fn check_watches(records: &[Record], watches: &[WatchLog]) -> Result<usize, String> {
    let ops: Vec<&Op> = records.iter().map(|r| &r.op).collect();
    let mut checked = 0;
    for w in watches {
        checked +=
            meridian_checker::check_watch(w, ops.iter().copied()).map_err(|v| v.to_string())?;
        if let Some(base) = w.watcher.strip_suffix('l') {
            if let Some(full) = watches.iter().find(|f| f.watcher == format!("{base}f")) {
                meridian_checker::check_resume(full, w).map_err(|v| v.to_string())?;
            }
        }
    }
    Ok(checked)
}

/// The operations the linearizability checkers see: writes and linearizable reads that were
/// answered (a write without an answer is kept, open-ended).
pub fn timed_ops(records: &[Record]) -> Vec<Timed> {
    records
        .iter()
        .filter(|r| match r.op.kind {
            OpKind::Write { .. } => true,
            OpKind::Read { .. } => r.linearizable && r.end_us.is_some(),
        })
        .map(|r| Timed {
            op: r.op.clone(),
            start: r.start_us,
            end: r.end_us,
        })
        .collect()
}

/// Runs both checkers over a simulated history: sequential consistency over every answered
/// operation, linearizability over writes and linearizable reads.
pub fn check(records: &[Record]) -> (Result<(), String>, Result<usize, String>) {
    let mut history = History::new();
    for r in records {
        let failed_read = r.end_us.is_none() && matches!(r.op.kind, OpKind::Read { .. });
        if !failed_read {
            history.push(r.op.clone());
        }
    }
    let sequential = meridian_checker::check_sequential(&history)
        .map(|_| ())
        .map_err(|v| v.to_string());
    let linearizable =
        meridian_checker::check_linearizable(&timed_ops(records)).map_err(|v| v.to_string());
    (sequential, linearizable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(client: usize, at: u64, kind: OpKind, served: Option<(u64, u64)>) -> Record {
        Record {
            client,
            region: "r".into(),
            start_us: at,
            end_us: served.map(|_| at + 1),
            linearizable: false,
            kind: 0,
            op: Op {
                session: client,
                group: served.map_or(5, |s| s.0),
                kind,
            },
            served,
        }
    }

    fn read(key: &str, value: &str, mod_revision: u64) -> OpKind {
        OpKind::Read {
            key: key.into(),
            value: Some(value.into()),
            mod_revision: Some(mod_revision),
        }
    }

    /// Seen only as an import, an unanswered write cannot be placed: its readers count as
    /// unanswered and the history checks (it was rejected as malformed); seen once with its
    /// revision, every read keeps its value.
    #[test]
    fn an_unanswered_write_seen_only_as_an_import_is_checked_as_unseen() {
        let moved = [MoveOutcome {
            prefix: "/a/".into(),
            to: "eu".into(),
            begun_s: 1.0,
            ended_s: 2.0,
            committed: true,
            group: 7,
            since: 10,
            note: String::new(),
        }];
        let unanswered = rec(
            0,
            1,
            OpKind::Write {
                key: "/a/k".into(),
                value: "v".into(),
                revision: None,
            },
            None,
        );
        let imported = rec(1, 5, read("/a/k", "v", 9), Some((7, 12)));
        let records = across_moves(vec![unanswered.clone(), imported.clone()], &moved, |_| 5);
        assert_eq!(records[1].end_us, None);
        assert!(matches!(
            &records[1].op.kind,
            OpKind::Read { value: None, .. }
        ));
        let (sequential, linearizable) = check(&records);
        assert_eq!(sequential, Ok(()));
        assert!(linearizable.is_ok(), "{linearizable:?}");

        let seen = rec(2, 3, read("/a/k", "v", 4), Some((5, 4)));
        let records = across_moves(vec![unanswered, seen, imported], &moved, |_| 5);
        assert!(matches!(
            &records[2].op.kind,
            OpKind::Read { value: Some(v), mod_revision: None, .. } if v == "v"
        ));
        assert_eq!(check(&records).0, Ok(()));
    }
}
