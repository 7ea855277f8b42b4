//! The real-process nemesis (issue 17): `meridian dev --processes` (nine node processes, the
//! WAN emulator between three regions), a client per region reading and writing its own and
//! the other regions' keys, a watcher per region on us-east's keys, and a nemesis that every
//! few seconds SIGKILLs a node (and starts it again), SIGSTOPs one (and resumes it) or cuts a
//! region off (and heals it). Afterwards every client reads every key linearizably; the whole
//! history goes through the sequential-consistency and linearizability checkers, every watch
//! stream through the watch validators, and every acknowledged write must be there at the end.
//! Bounded: eight nemesis steps, one cluster, about two minutes.

mod common;

use common::{DevCluster, Nodes};
use meridian_checker::{Op, OpKind, WatchItem, WatchLog, WatchedEvent};
use meridian_sdk::{Client, Consistency};
use meridian_sim::det::{check, check_watches, Record};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-northeast"];
const KEYS_PER_REGION: usize = 4;
/// Nemesis steps, each a fault held for `FAULT_FOR` then undone, `STEP` apart.
const STEPS: usize = 8;
const STEP: Duration = Duration::from_secs(5);
const FAULT_FOR: Duration = Duration::from_secs(2);

/// A small deterministic generator (xorshift), so a failing run names its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn keys() -> Vec<String> {
    REGIONS
        .iter()
        .flat_map(|r| (0..KEYS_PER_REGION).map(move |k| format!("/{r}/nem/k{k}")))
        .collect()
}

type Shared = Arc<Mutex<Vec<Record>>>;

fn push(records: &Shared, r: Record) {
    records.lock().unwrap_or_else(|p| p.into_inner()).push(r);
}

/// One client's operations until `stop`: half reads (a third of them linearizable), half
/// writes of values unique to this client.
#[allow(clippy::too_many_arguments)]
async fn client_loop(
    id: usize,
    region: &'static str,
    client: Client,
    groups: Arc<BTreeMap<String, u64>>,
    origin: Instant,
    stop: Instant,
    records: Shared,
    seed: u64,
) {
    let mut rng = Rng(seed);
    let keys = keys();
    let mut n = 0u64;
    let us = |t: Instant| t.duration_since(origin).as_micros() as u64;
    while Instant::now() < stop {
        let key = keys[rng.below(keys.len() as u64) as usize].clone();
        let group = groups[&key];
        let start = Instant::now();
        if rng.below(2) == 0 {
            let linearizable = rng.below(3) == 0;
            let c = if linearizable {
                Consistency::Linearizable
            } else {
                Consistency::Sequential
            };
            let r = client.get_with(&key, c).await;
            let (value, mod_revision, end, served) = match &r {
                Ok(r) => (
                    r.kv.as_ref()
                        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()),
                    r.kv.as_ref().map(|kv| kv.mod_revision),
                    Some(us(Instant::now())),
                    r.header.as_ref().map(|h| (h.group, h.revision)),
                ),
                Err(_) => (None, None, None, None),
            };
            if end.is_none() {
                // An unanswered read says nothing.
                continue;
            }
            push(
                &records,
                Record {
                    client: id,
                    region: region.to_string(),
                    start_us: us(start),
                    end_us: end,
                    linearizable,
                    kind: 0,
                    op: Op {
                        session: id,
                        group,
                        kind: OpKind::Read {
                            key,
                            value,
                            mod_revision,
                        },
                    },
                    served,
                },
            );
        } else {
            n += 1;
            let value = format!("c{id}-{n}");
            let r = client.put(&key, value.clone()).await;
            let (revision, end, served) = match &r {
                Ok(r) => (
                    r.header.as_ref().map(|h| h.revision),
                    Some(us(Instant::now())),
                    r.header.as_ref().map(|h| (h.group, h.revision)),
                ),
                Err(_) => (None, None, None),
            };
            push(
                &records,
                Record {
                    client: id,
                    region: region.to_string(),
                    start_us: us(start),
                    end_us: end,
                    linearizable: true,
                    kind: 2,
                    op: Op {
                        session: id,
                        group,
                        kind: OpKind::Write {
                            key,
                            value,
                            revision,
                        },
                    },
                    served,
                },
            );
        }
    }
}

/// A watcher of `prefix` from revision 1 until `stop`, as the simulation's watchers record.
async fn watch_loop(
    name: String,
    client: Client,
    prefix: String,
    group: u64,
    stop: Instant,
) -> WatchLog {
    let mut log = WatchLog {
        watcher: name,
        group,
        prefix: prefix.clone(),
        start: 1,
        items: Vec::new(),
    };
    let mut w = client.watch(&prefix, true, 1);
    loop {
        let until = tokio::time::Instant::from_std(stop);
        match tokio::time::timeout_at(until, w.next()).await {
            Err(_) => break,
            Ok(Ok(meridian_sdk::WatchEvent::Progress { revision })) => {
                log.items.push(WatchItem::Progress { revision })
            }
            Ok(Ok(meridian_sdk::WatchEvent::Changes { revision, events })) => {
                log.items.push(WatchItem::Events {
                    revision,
                    events: events
                        .iter()
                        .filter_map(|e| e.kv.as_ref())
                        .map(|kv| WatchedEvent {
                            key: kv.key.clone(),
                            value: String::from_utf8_lossy(&kv.value).into_owned(),
                            mod_revision: kv.mod_revision,
                        })
                        .collect(),
                })
            }
            Ok(Err(e)) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(200)).await,
            Ok(Err(e)) => panic!("watcher {} gave up: {e}", log.watcher),
        }
    }
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nemesis_finds_no_lost_write_and_no_anomaly() {
    common::watchdog(Duration::from_secs(600));
    let seed = 0x6e65_6d65_7369_7301_u64;
    let dev = DevCluster::start(&["--processes"]);
    let mut nodes = Nodes::of(&dev);
    let topology = meridian_topology::Topology::parse(meridian_topology::LOCAL_3REGION, "dev")
        .expect("the dev topology");
    let groups: Arc<BTreeMap<String, u64>> = Arc::new(
        keys()
            .into_iter()
            .map(|k| {
                let g = topology.placement().group_of(&k).map_or(0, |(g, _)| g.0);
                (k, g)
            })
            .collect(),
    );
    // Every key exists before the nemesis starts (and the cluster answers); these writes are
    // part of the history.
    let origin = Instant::now();
    let records: Shared = Arc::default();
    let setup = dev.client("us-east", Duration::from_secs(20));
    for k in keys() {
        let value = format!("init-{k}");
        let start = origin.elapsed().as_micros() as u64;
        let revision = common::put_settled(&setup, &k, &value, Duration::from_secs(60)).await;
        push(
            &records,
            Record {
                client: 99,
                region: "us-east".into(),
                start_us: start,
                end_us: Some(origin.elapsed().as_micros() as u64),
                linearizable: true,
                kind: 2,
                op: Op {
                    session: 99,
                    group: groups[&k],
                    kind: OpKind::Write {
                        key: k.clone(),
                        value,
                        revision: Some(revision),
                    },
                },
                served: Some((groups[&k], revision)),
            },
        );
    }

    let run = STEP * STEPS as u32 + Duration::from_secs(3);
    let stop = Instant::now() + run;
    let mut tasks = Vec::new();
    for (i, region) in REGIONS.iter().enumerate() {
        let client = dev.client(region, Duration::from_secs(5));
        tasks.push(tokio::spawn(client_loop(
            i,
            region,
            client,
            groups.clone(),
            origin,
            stop,
            records.clone(),
            seed ^ (i as u64 + 1),
        )));
    }
    let us_east_group = groups["/us-east/nem/k0"];
    let mut watchers = Vec::new();
    for region in REGIONS {
        watchers.push(tokio::spawn(watch_loop(
            format!("w-{region}"),
            dev.client(region, Duration::from_secs(5)),
            "/us-east/nem/".to_string(),
            us_east_group,
            stop + Duration::from_secs(10),
        )));
    }

    // The nemesis.
    let mut rng = Rng(seed);
    let ids: Vec<u64> = (1..=9).collect();
    let mut faults = Vec::new();
    for _ in 0..STEPS {
        tokio::time::sleep(STEP - FAULT_FOR).await;
        match rng.below(3) {
            0 => {
                let id = ids[rng.below(ids.len() as u64) as usize];
                nodes.signal(id, "-KILL");
                faults.push(format!("kill -9 node {id}"));
                tokio::time::sleep(FAULT_FOR).await;
                nodes.restart(id, dev.dir.path());
            }
            1 => {
                let id = ids[rng.below(ids.len() as u64) as usize];
                nodes.signal(id, "-STOP");
                faults.push(format!("SIGSTOP node {id}"));
                tokio::time::sleep(FAULT_FOR).await;
                nodes.signal(id, "-CONT");
            }
            _ => {
                let region = REGIONS[rng.below(3) as usize];
                dev.wan(&["cut-region", region]);
                faults.push(format!("cut {region}"));
                tokio::time::sleep(FAULT_FOR).await;
                dev.wan(&["heal-all"]);
            }
        }
    }
    for t in tasks {
        t.await.expect("client task");
    }

    // Every client reads every key linearizably once the faults are over.
    let settle = Instant::now() + Duration::from_secs(60);
    for (i, region) in REGIONS.iter().enumerate() {
        let client = dev.client(region, Duration::from_secs(10));
        for key in keys() {
            loop {
                let start = origin.elapsed().as_micros() as u64;
                match client.get_with(&key, Consistency::Linearizable).await {
                    Ok(r) => {
                        push(
                            &records,
                            Record {
                                client: 100 + i,
                                region: region.to_string(),
                                start_us: start,
                                end_us: Some(origin.elapsed().as_micros() as u64),
                                linearizable: true,
                                kind: 0,
                                op: Op {
                                    session: 100 + i,
                                    group: groups[&key],
                                    kind: OpKind::Read {
                                        key: key.clone(),
                                        value: r.kv.as_ref().map(|kv| {
                                            String::from_utf8_lossy(&kv.value).into_owned()
                                        }),
                                        mod_revision: r.kv.as_ref().map(|kv| kv.mod_revision),
                                    },
                                },
                                served: r.header.as_ref().map(|h| (h.group, h.revision)),
                            },
                        );
                        break;
                    }
                    Err(e) => {
                        assert!(
                            Instant::now() < settle,
                            "final read of {key} in {region}: {e}"
                        );
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
    }
    let mut watches = Vec::new();
    for w in watchers {
        watches.push(w.await.expect("watcher task"));
    }

    let records = std::mem::take(&mut *records.lock().unwrap_or_else(|p| p.into_inner()));
    // Lost writes: an acknowledged write whose key ends at a lower revision than the write's.
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    for r in records.iter().filter(|r| r.client >= 100) {
        if let OpKind::Read {
            key,
            mod_revision: Some(m),
            ..
        } = &r.op.kind
        {
            last.insert(key, *m);
        }
    }
    let (mut acked, mut unknown, mut lost) = (0, 0, 0);
    for r in &records {
        if let OpKind::Write { key, revision, .. } = &r.op.kind {
            match (r.end_us, revision) {
                (Some(_), Some(rev)) => {
                    acked += 1;
                    if last.get(key.as_str()).is_none_or(|m| m < rev) {
                        lost += 1;
                    }
                }
                _ => unknown += 1,
            }
        }
    }
    let (sequential, linearizable) = check(&records);
    let watch = check_watches(&records, &watches);
    println!(
        "nemesis (seed {seed:#x}): {} operations, {acked} acknowledged writes, {unknown} \
         indeterminate, {lost} lost; {} watch events checked; faults: {}",
        records.len(),
        watch.as_ref().map_or(0, |n| *n),
        faults.join(", ")
    );
    assert_eq!(lost, 0, "acknowledged writes lost");
    assert!(acked > 50, "the workload ran ({acked} acknowledged writes)");
    assert_eq!(sequential, Ok(()), "faults: {faults:?}");
    assert!(linearizable.is_ok(), "{linearizable:?} faults: {faults:?}");
    let events = watch.unwrap_or_else(|e| panic!("watch validators: {e}"));
    assert!(events > 10, "the watchers saw the writes ({events})");
}
