//! `meridian sim nemesis --seconds S`: the real-process nemesis (issue 17, item 5).
//!
//! `meridian dev --processes` — nine node processes, three regions under the WAN emulator —
//! with every node restarted under libfaketime (the wall clock only: the monotonic clock, which
//! alone decides timeouts and expiry, is left alone), so that its wall clock can jump. In every
//! region a client reads and writes its own and the other regions' keys, a watcher follows
//! us-east's keys from revision 1, and two lockers take the global lock and us-east's lock in
//! turn, writing to a fenced resource with each grant's token. Every `--step-ms` the nemesis
//! draws one fault from the seed and undoes it two seconds later: SIGKILL a node (and start it
//! again), SIGKILL the leader of a group, SIGSTOP a node past the lock sessions' TTL (and
//! resume it), cut a region off (and heal it), or jump a node's wall clock by up to a day (and
//! back).
//!
//! Afterwards everything is healed and every client reads every key linearizably; the history
//! goes through the checkers the deterministic simulation uses — acknowledged writes lost,
//! sequential consistency, linearizability (Meridian's checker and the independent one,
//! stateright's), the watch validators, the lock rules with the fenced resource — and the
//! summary says what was checked. Exit 0: nothing wrong; 1: a violation (named).

mod nodes;
mod verdicts;

use crate::dev::Dev;
use anyhow::{bail, Context, Result};
use meridian_checker::{Op, OpKind, WatchLog};
use meridian_sdk::{pb, Client, Consistency, Options, Session};
use meridian_sim::det::{watch_item, Record};
use meridian_sim::lockers::{one_hold, LockLog};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nodes::Nodes;
pub use verdicts::lost_writes;
use verdicts::verdicts;

/// Where Debian's `faketime` package puts the library.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-northeast"];
const KEYS_PER_REGION: usize = 4;
/// How long a fault holds before it is undone (a pause: the lock TTL and one second more).
const FAULT_FOR: Duration = Duration::from_secs(2);
/// The lockers' session TTL.
const LOCK_TTL: Duration = Duration::from_secs(3);
const LOCK_HOLD: Duration = Duration::from_millis(50);
/// After the faults, how long the healed cluster has to answer every final read.
const SETTLE: Duration = Duration::from_secs(60);
/// After the final reads, how long the watchers have to deliver the last writes.
const WATCH_TAIL: Duration = Duration::from_secs(3);
const SECONDS_MAX: u64 = 86_400;
/// Most operations one client records (a bounded history).
const OPS_PER_CLIENT_MAX: usize = 200_000;
/// Wall-clock jumps a clock fault draws from (libfaketime offsets).
const JUMPS: [&str; 6] = ["+1d", "-1d", "+1h", "-1h", "+10m", "-90"];

#[derive(clap::Args, Debug, Clone)]
pub struct NemesisArgs {
    /// Seconds of workload under faults (1 to 86,400).
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Seed of the fault schedule and the clients' choices (default: drawn, and printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Time from one fault to the next, in ms (5,000 to 600,000).
    #[arg(long, default_value_t = 5_000)]
    pub step_ms: u64,
    /// Port of the dev cluster's first router.
    #[arg(long, default_value_t = 7650)]
    pub port: u16,
    /// libfaketime's library (the `faketime` package), for the wall-clock jumps.
    #[arg(long, default_value = LIBFAKETIME)]
    pub libfaketime: PathBuf,
    /// Write the summary as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Write the recorded key-value history as Jepsen EDN to FILE (`meridian sim check` reads it).
    #[arg(long, value_name = "FILE")]
    pub export: Option<PathBuf>,
}

/// A small deterministic generator (xorshift), so a run names its seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn keys() -> Vec<String> {
    REGIONS
        .iter()
        .flat_map(|r| (0..KEYS_PER_REGION).map(move |k| format!("/{r}/nem/k{k}")))
        .collect()
}

type Shared = Arc<Mutex<Vec<Record>>>;
/// Each key's group.
type Groups = Arc<BTreeMap<String, u64>>;

fn push(records: &Shared, r: Record) {
    records.lock().unwrap_or_else(|p| p.into_inner()).push(r);
}

/// Who recorded an operation, and when it began (microseconds since the run's origin).
struct By<'a> {
    client: usize,
    region: &'a str,
    start_us: u64,
}

/// An answered read of `key` (in `group`) as the checkers take it.
fn read_record(
    by: By<'_>,
    end_us: u64,
    linearizable: bool,
    key: String,
    group: u64,
    r: &pb::GetResponse,
) -> Record {
    let kv = r.kv.as_ref();
    Record {
        client: by.client,
        region: by.region.to_string(),
        start_us: by.start_us,
        end_us: Some(end_us),
        linearizable,
        kind: 0,
        op: Op {
            session: by.client,
            group,
            kind: OpKind::Read {
                key,
                value: kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned()),
                mod_revision: kv.map(|kv| kv.mod_revision),
            },
        },
        served: r.header.as_ref().map(|h| (h.group, h.revision)),
    }
}

/// A put of `key = value` (in `group`); without an answer (`answer` None) its effect is unknown.
fn write_record(
    by: By<'_>,
    key: String,
    value: String,
    group: u64,
    answer: Option<(u64, &pb::PutResponse)>,
) -> Record {
    let header = answer.and_then(|(_, r)| r.header.as_ref());
    Record {
        client: by.client,
        region: by.region.to_string(),
        start_us: by.start_us,
        end_us: answer.map(|(end_us, _)| end_us),
        linearizable: true,
        kind: 2,
        op: Op {
            session: by.client,
            group,
            kind: OpKind::Write {
                key,
                value,
                revision: header.map(|h| h.revision),
            },
        },
        served: header.map(|h| (h.group, h.revision)),
    }
}

/// One client's operations until `stop`: half reads (a third of them linearizable), half
/// writes of values unique to this client.
#[allow(clippy::too_many_arguments)]
async fn client_loop(
    id: usize,
    region: &'static str,
    client: Client,
    groups: Groups,
    origin: Instant,
    stop: Instant,
    records: Shared,
    seed: u64,
) {
    let mut rng = Rng::new(seed);
    let keys = keys();
    let mut n = 0u64;
    let us = |t: Instant| t.duration_since(origin).as_micros() as u64;
    let mut recorded = 0;
    while Instant::now() < stop && recorded < OPS_PER_CLIENT_MAX {
        let key = keys[rng.below(keys.len() as u64) as usize].clone();
        let group = groups[&key];
        let start = Instant::now();
        let record = if rng.below(2) == 0 {
            let linearizable = rng.below(3) == 0;
            let c = if linearizable {
                Consistency::Linearizable
            } else {
                Consistency::Sequential
            };
            let Ok(r) = client.get_with(&key, c).await else {
                // An unanswered read says nothing.
                continue;
            };
            let by = By {
                client: id,
                region,
                start_us: us(start),
            };
            read_record(by, us(Instant::now()), linearizable, key, group, &r)
        } else {
            n += 1;
            let value = format!("c{id}-{n}");
            let r = client.put(&key, value.clone()).await;
            let by = By {
                client: id,
                region,
                start_us: us(start),
            };
            let answer = r.as_ref().ok().map(|r| (us(Instant::now()), r));
            write_record(by, key, value, group, answer)
        };
        recorded += 1;
        push(&records, record);
    }
}

/// A watcher of `prefix` from revision 1 until told to stop, recorded as the simulation's watchers
/// are. A stream that ends for good is an error (a watch must not give up under faults).
async fn watch_loop(
    name: String,
    client: Client,
    prefix: String,
    group: u64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<WatchLog, String> {
    let mut log = WatchLog {
        watcher: name,
        group,
        prefix: prefix.clone(),
        start: 1,
        items: Vec::new(),
    };
    let mut w = client.watch(&prefix, true, 1);
    loop {
        let next = tokio::select! {
            _ = stop.wait_for(|s| *s) => return Ok(log),
            next = w.next() => next,
        };
        match next {
            Ok(ev) => log.items.push(watch_item(&ev)),
            Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => return Err(format!("watcher {} gave up: {e}", log.watcher)),
        }
    }
}

/// A locker: acquire, fenced write, hold, release, back to back until `stop`; a session lost
/// to a fault is replaced.
async fn lock_loop(name: String, client: Client, lock: String, stop: Instant, log: LockLog) {
    let mut session = Session::new(client, LOCK_TTL);
    while Instant::now() < stop {
        if session.is_lost() {
            session = Session::new(session.client().clone(), LOCK_TTL);
        }
        let until = tokio::time::Instant::from_std(stop + LOCK_TTL);
        let hold = one_hold(&session, &lock, &name, LOCK_HOLD, &log);
        if !matches!(tokio::time::timeout_at(until, hold).await, Ok(Some(_))) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// What one run found.
struct Summary {
    operations: usize,
    acked: usize,
    indeterminate: usize,
    lost: usize,
    lock_holds: usize,
    watch_events: usize,
    faults: Vec<String>,
    violations: Vec<String>,
}

pub async fn run(args: NemesisArgs) -> Result<ExitCode> {
    if !(1..=SECONDS_MAX).contains(&args.seconds) {
        bail!("--seconds must be 1 to {SECONDS_MAX}, not {}", args.seconds);
    }
    if !(5_000..=600_000).contains(&args.step_ms) {
        bail!("--step-ms must be 5,000 to 600,000, not {}", args.step_ms);
    }
    if !args.libfaketime.exists() {
        bail!(
            "{} is missing: the clock jumps need libfaketime (apt-get install faketime), or \
             name it with --libfaketime",
            args.libfaketime.display()
        );
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    eprintln!(
        "nemesis: seed {seed}, {} s of faults every {} ms (replay: meridian sim nemesis \
         --seconds {} --seed {seed})",
        args.seconds, args.step_ms, args.seconds
    );
    let dev = Dev::start_here(args.port, &["--processes"])?;
    let mut nodes = Nodes::of(&dev, &args.libfaketime)?;
    let summary = nemesis(&args, seed, &dev, &mut nodes).await?;
    drop(nodes);
    drop(dev);

    println!(
        "nemesis (seed {seed}): {} operations, {} acknowledged writes, {} indeterminate, {} \
         lost; {} lock holds and {} watch events checked; {} faults: {}",
        summary.operations,
        summary.acked,
        summary.indeterminate,
        summary.lost,
        summary.lock_holds,
        summary.watch_events,
        summary.faults.len(),
        summary.faults.join(", ")
    );
    for v in &summary.violations {
        println!("VIOLATION: {v}");
    }
    if let Some(path) = &args.report {
        let report = json!({
            "seed": seed,
            "seconds": args.seconds,
            "operations": summary.operations,
            "acknowledged_writes": summary.acked,
            "indeterminate_writes": summary.indeterminate,
            "lost_writes": summary.lost,
            "lock_holds": summary.lock_holds,
            "watch_events": summary.watch_events,
            "faults": summary.faults,
            "violations": summary.violations,
        });
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if summary.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn nemesis(args: &NemesisArgs, seed: u64, dev: &Dev, nodes: &mut Nodes) -> Result<Summary> {
    let wan = Wan(dev.ready["wan_control"]
        .as_str()
        .context("the dev cluster runs no WAN emulator")?
        .to_string());
    // Every node again under libfaketime, each with its own clock.
    for id in nodes.ids() {
        nodes.signal(id, "-KILL")?;
    }
    for id in nodes.ids() {
        nodes.wait_gone(id)?;
        nodes.start(id)?;
    }
    let (groups, group_ids) = groups()?;
    let origin = Instant::now();
    let records: Shared = Arc::default();
    write_initial(dev, &groups, origin, &records).await?;

    let stop = Instant::now() + Duration::from_secs(args.seconds);
    let workload = Workload::start(dev, &groups, origin, stop, &records, seed)?;
    let faults = inject_faults(args, seed, nodes, &group_ids, &wan, origin).await?;
    tokio::time::sleep_until(tokio::time::Instant::from_std(stop)).await;
    nodes.heal()?;
    wan.send("heal-all").await?;
    for t in workload.clients {
        t.await.context("a client task")?;
    }
    for t in workload.lockers {
        t.await.context("a locker task")?;
    }
    let mut violations = final_reads(dev, &groups, origin, &records).await?;
    // The watchers get a few seconds more to deliver the last writes, then stop.
    tokio::time::sleep(WATCH_TAIL).await;
    let _ = workload.watchers_stop.send(true);
    let mut watches = Vec::new();
    for w in workload.watchers {
        match w.await {
            Ok(Ok(log)) => watches.push(log),
            Ok(Err(e)) => violations.push(e),
            Err(e) => bail!("a watcher task: {e}"),
        }
    }
    let records = std::mem::take(&mut *records.lock().unwrap_or_else(|p| p.into_inner()));
    verdicts(
        records,
        &watches,
        &workload.lock_log,
        args.export.as_deref(),
        faults,
        violations,
    )
}

/// The WAN emulator's control socket.
struct Wan(String);

impl Wan {
    async fn send(&self, command: &str) -> Result<()> {
        meridian_wan::control(&self.0, command, Duration::from_secs(5))
            .await
            .with_context(|| format!("wan {command}"))
            .map(|_| ())
    }
}

/// Each key's group, and the groups a leader kill draws from (the keys' and the global
/// lock's).
fn groups() -> Result<(Groups, Vec<u64>)> {
    let topology = meridian_topology::Topology::parse(meridian_topology::LOCAL_3REGION, "dev")
        .context("the dev topology")?;
    let groups: BTreeMap<String, u64> = keys()
        .into_iter()
        .map(|k| {
            let g = topology.placement().group_of(&k).map_or(0, |(g, _)| g.0);
            (k, g)
        })
        .collect();
    let mut group_ids: Vec<u64> = groups.values().copied().collect();
    group_ids.extend(
        topology
            .placement()
            .group_of("/global/locks/nemesis")
            .map(|(g, _)| g.0),
    );
    group_ids.sort_unstable();
    group_ids.dedup();
    Ok((Arc::new(groups), group_ids))
}

/// Every key written before the faults begin (once the cluster answers); part of the history.
async fn write_initial(
    dev: &Dev,
    groups: &BTreeMap<String, u64>,
    origin: Instant,
    records: &Shared,
) -> Result<()> {
    let setup = client(dev, "us-east", Duration::from_secs(5))?;
    for k in keys() {
        let value = format!("init-{k}");
        let start_us = origin.elapsed().as_micros() as u64;
        let deadline = Instant::now() + Duration::from_secs(90);
        let r = loop {
            match setup.put(&k, value.clone()).await {
                Ok(r) => break r,
                Err(e) if Instant::now() > deadline => {
                    bail!("the cluster did not take its first writes within 90 s: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        };
        let by = By {
            client: 99,
            region: "us-east",
            start_us,
        };
        let end_us = origin.elapsed().as_micros() as u64;
        let group = groups[&k];
        push(
            records,
            write_record(by, k, value, group, Some((end_us, &r))),
        );
    }
    Ok(())
}

/// The tasks that make the history: in every region a KV client, a watcher of us-east's keys
/// from revision 1, and a locker of each lock.
struct Workload {
    clients: Vec<tokio::task::JoinHandle<()>>,
    watchers: Vec<tokio::task::JoinHandle<Result<WatchLog, String>>>,
    lockers: Vec<tokio::task::JoinHandle<()>>,
    lock_log: LockLog,
    watchers_stop: tokio::sync::watch::Sender<bool>,
}

impl Workload {
    fn start(
        dev: &Dev,
        groups: &Groups,
        origin: Instant,
        stop: Instant,
        records: &Shared,
        seed: u64,
    ) -> Result<Workload> {
        let (watchers_stop, _) = tokio::sync::watch::channel(false);
        let mut w = Workload {
            clients: Vec::new(),
            watchers: Vec::new(),
            lockers: Vec::new(),
            lock_log: LockLog::default(),
            watchers_stop,
        };
        let watched = "/us-east/nem/".to_string();
        for (i, region) in REGIONS.iter().enumerate() {
            w.clients.push(tokio::spawn(client_loop(
                i,
                region,
                client(dev, region, Duration::from_secs(5))?,
                groups.clone(),
                origin,
                stop,
                records.clone(),
                seed ^ (i as u64 + 1),
            )));
            w.watchers.push(tokio::spawn(watch_loop(
                format!("w-{region}"),
                client(dev, region, Duration::from_secs(5))?,
                watched.clone(),
                groups["/us-east/nem/k0"],
                w.watchers_stop.subscribe(),
            )));
            for lock in ["/global/locks/nemesis", "/us-east/locks/nemesis"] {
                w.lockers.push(tokio::spawn(lock_loop(
                    format!("l-{region}{lock}"),
                    client(dev, region, Duration::from_secs(5))?,
                    lock.to_string(),
                    stop,
                    w.lock_log.clone(),
                )));
            }
        }
        Ok(w)
    }
}

/// The nemesis: one fault per step drawn from `seed`, held and undone before the next; returns
/// what it did, in order.
async fn inject_faults(
    args: &NemesisArgs,
    seed: u64,
    nodes: &mut Nodes,
    group_ids: &[u64],
    wan: &Wan,
    origin: Instant,
) -> Result<Vec<String>> {
    let mut rng = Rng::new(seed);
    let step = Duration::from_millis(args.step_ms);
    let steps = args.seconds * 1000 / args.step_ms;
    let mut faults = Vec::new();
    let ids = nodes.ids();
    for _ in 0..steps {
        let kind = rng.below(5);
        let hold = if kind == 2 {
            LOCK_TTL + Duration::from_secs(1)
        } else {
            FAULT_FOR
        };
        tokio::time::sleep(step - hold).await;
        let at = origin.elapsed().as_secs_f64();
        let node = ids[rng.below(ids.len() as u64) as usize];
        let fault = match kind {
            0 => {
                nodes.signal(node, "-KILL")?;
                tokio::time::sleep(hold).await;
                nodes.start(node)?;
                format!("kill -9 node {node}")
            }
            1 => {
                let group = group_ids[rng.below(group_ids.len() as u64) as usize];
                match nodes.leader(group).await {
                    Some(leader) => {
                        nodes.signal(leader, "-KILL")?;
                        tokio::time::sleep(hold).await;
                        nodes.start(leader)?;
                        format!("kill -9 group {group}'s leader, node {leader}")
                    }
                    None => format!("no leader of group {group} to kill"),
                }
            }
            2 => {
                nodes.signal(node, "-STOP")?;
                tokio::time::sleep(hold).await;
                nodes.signal(node, "-CONT")?;
                format!("SIGSTOP node {node} for {} s", hold.as_secs())
            }
            3 => {
                let region = REGIONS[rng.below(REGIONS.len() as u64) as usize];
                wan.send(&format!("cut-region {region}")).await?;
                tokio::time::sleep(hold).await;
                wan.send("heal-all").await?;
                format!("cut {region}")
            }
            _ => {
                let jump = JUMPS[rng.below(JUMPS.len() as u64) as usize];
                nodes.jump(node, jump)?;
                tokio::time::sleep(hold).await;
                nodes.jump(node, "+0")?;
                format!("node {node}'s wall clock {jump}")
            }
        };
        eprintln!("nemesis: {at:.1} s: {fault}");
        faults.push(fault);
    }
    Ok(faults)
}

/// Every region reads every key linearizably once the faults are over; returns the
/// violations (a healed cluster that does not answer within [`SETTLE`]).
async fn final_reads(
    dev: &Dev,
    groups: &BTreeMap<String, u64>,
    origin: Instant,
    records: &Shared,
) -> Result<Vec<String>> {
    let settle = Instant::now() + SETTLE;
    for (i, region) in REGIONS.iter().enumerate() {
        let c = client(dev, region, Duration::from_secs(10))?;
        for key in keys() {
            loop {
                let start_us = origin.elapsed().as_micros() as u64;
                match c.get_with(&key, Consistency::Linearizable).await {
                    Ok(r) => {
                        let by = By {
                            client: 100 + i,
                            region,
                            start_us,
                        };
                        let end_us = origin.elapsed().as_micros() as u64;
                        let group = groups[&key];
                        push(records, read_record(by, end_us, true, key, group, &r));
                        break;
                    }
                    Err(e) if Instant::now() > settle => {
                        return Ok(vec![format!(
                            "the healed cluster did not answer a linearizable read of {key} in \
                             {region} within {} s: {e}",
                            SETTLE.as_secs()
                        )]);
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
    }
    Ok(Vec::new())
}

/// A session with `region`'s first router.
fn client(dev: &Dev, region: &str, call_timeout: Duration) -> Result<Client> {
    let ep = dev.endpoints(region)?;
    Ok(Client::new(
        ep.into_iter().take(1).collect(),
        Options {
            call_timeout,
            rpc_timeout: call_timeout,
            ..dev.options()?
        },
    )?)
}
