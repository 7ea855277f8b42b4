//! Online domain moves (docs/placement.md) on `meridian dev --processes`: every node its own
//! process, the WAN emulator between regions.
//!
//! - `a_move_under_load_loses_nothing`: sessions in every region write unique keys into the
//!   moving prefix and read each other's, watchers in every region watch it, while the prefix
//!   moves from us-east to eu-west and back. Afterwards every acknowledged write reads back
//!   from every region, no write was applied twice (a key's version is 1), every watcher saw
//!   every acknowledged write exactly once, and the sequential-consistency checker accepts the
//!   recorded history (the moving domain's revisions ordered move by move).
//! - `moves_survive_killed_nodes`: SIGKILL the global group's leader (the driver), the source
//!   group's leader and the target group's leader at several steps of a move (the nodes pause
//!   at each step, `limits.move_step_pause_ms`); every move still ends — committed or
//!   rolled back — with nothing lost, and the prefix takes writes again.
//! - bad input: each refusal names its rule and changes nothing.

mod common;

use common::{DevCluster, Nodes};
use meridian_checker::{check_sequential, History, Op, OpKind};
use meridian_sdk::{pb, Client, Consistency, Options, WatchEvent};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

static ONE_CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PREFIX: &str = "/us-east/orders/";
const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-northeast"];
const GLOBAL: u64 = 10;
const US_EAST: u64 = 1;
const EU_WEST: u64 = 2;

fn client(dev: &DevCluster, region: &str) -> Client {
    dev.client(region, Duration::from_secs(30))
}

/// Moves `PREFIX` to `to` and waits for its end; returns (committed, the map after it).
async fn move_to(c: &Client, to: &str) -> (bool, pb::PlacementShowResponse) {
    let begun = c
        .move_domain(PREFIX, to, 0)
        .await
        .unwrap_or_else(|e| panic!("move {PREFIX} to {to}: {e}"));
    wait_end(c, begun.id).await
}

/// Waits (bounded) until move `id` is in the map's finished moves.
async fn wait_end(c: &Client, id: u64) -> (bool, pb::PlacementShowResponse) {
    let start = Instant::now();
    loop {
        if let Ok(m) = c.placement().await {
            if let Some(r) = m.moves_done.iter().find(|r| r.id == id) {
                let committed = !r.aborted;
                return (committed, m);
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "move {id} did not end within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn owner(m: &pb::PlacementShowResponse) -> (u64, u64) {
    let d = m
        .domains
        .iter()
        .find(|d| d.prefix == PREFIX)
        .expect("the moved prefix is a domain");
    (d.group, d.since)
}

/// One move as the history needs it: from then on, `to`'s revisions above `since` come after
/// everything before.
struct Segment {
    group: u64,
    since: u64,
}

/// A revision of the moving domain in one order across its owners: the segment (which move
/// brought it to the group that served the operation) first, then that group's revision.
fn domain_revision(segments: &[Segment], group: u64, revision: u64) -> u64 {
    let segment = segments
        .iter()
        .enumerate()
        .rev()
        .find(|(_, s)| s.group == group && revision > s.since)
        .map_or(0, |(i, _)| i as u64);
    segment * 1_000_000_000_000 + revision
}

/// What one watcher received: (key, value) in order.
type Seen = Vec<(String, String)>;

/// A recorded operation before the moving domain's revisions are known.
enum Raw {
    Write {
        session: usize,
        key: String,
        value: String,
        served: Option<(u64, u64)>,
    },
    Read {
        session: usize,
        key: String,
        value: Option<String>,
    },
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_under_load_loses_nothing() {
    common::watchdog(Duration::from_secs(900));
    let _serial = ONE_CLUSTER.lock().await;
    let dev = DevCluster::start(&["--processes"]);
    let clients: Vec<Client> = REGIONS.iter().map(|r| client(&dev, r)).collect();
    let admin = client(&dev, "us-east");
    let (_, m0) = wait_map(&admin).await;
    assert_eq!(owner_or_us_east(&m0).0, US_EAST);

    // Keys that exist before any move.
    for i in 0..200 {
        admin
            .put(&format!("{PREFIX}pre-{i}"), format!("pre-{i}"))
            .await
            .expect("preload");
    }

    // Watchers in every region, from now on.
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::new(Mutex::new(vec![Vec::new(); REGIONS.len()]));
    let stop_watching = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // How many watchers have had their first answer (their stream is open).
    let opened = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut watch_tasks = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let mut w = c.watch(PREFIX, true, 0);
        let seen = seen.clone();
        let stop = stop_watching.clone();
        let opened = opened.clone();
        watch_tasks.push(tokio::spawn(async move {
            let mut first = true;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let next = tokio::time::timeout(Duration::from_millis(500), w.next()).await;
                if first && matches!(next, Ok(Ok(_))) {
                    first = false;
                    opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                match next {
                    Err(_) => continue,
                    Ok(Ok(WatchEvent::Changes { events, .. })) => {
                        let mut s = seen.lock().expect("seen");
                        for e in events {
                            if let Some(kv) = e.kv {
                                s[i].push((
                                    kv.key.clone(),
                                    String::from_utf8_lossy(&kv.value).to_string(),
                                ));
                            }
                        }
                    }
                    Ok(Ok(WatchEvent::Progress { .. })) => {}
                    Ok(Err(e)) => panic!("watcher in {}: {e}", REGIONS[i]),
                }
            }
        }));
    }
    // Every watcher's stream is open (its first event or progress notice) before any write.
    let start = Instant::now();
    while opened.load(std::sync::atomic::Ordering::Relaxed) < REGIONS.len() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not every watcher opened its stream within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Writers: every region's session writes unique keys and reads keys written so far.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let written: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let raw: Arc<Mutex<Vec<Raw>>> = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for (s, c) in clients.iter().enumerate() {
        let (c, stop, written, raw) = (c.clone(), stop.clone(), written.clone(), raw.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut acked = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let key = format!("{PREFIX}{}-{n}", REGIONS[s]);
                let value = format!("v-{}-{n}", REGIONS[s]);
                match c.put(&key, value.clone()).await {
                    Ok(r) => {
                        let h = r.header.expect("header");
                        raw.lock().expect("raw").push(Raw::Write {
                            session: s,
                            key: key.clone(),
                            value: value.clone(),
                            served: Some((h.group, h.revision)),
                        });
                        written.lock().expect("written").push(key.clone());
                        acked.push((key, value));
                    }
                    Err(e) => panic!("put {key} from {} failed: {e}", REGIONS[s]),
                }
                // Read a key someone wrote.
                let pick = {
                    let w = written.lock().expect("written");
                    w.get((n as usize * 7919 + s) % w.len().max(1)).cloned()
                };
                if let Some(k) = pick {
                    let r = c
                        .get_with(&k, Consistency::Sequential)
                        .await
                        .unwrap_or_else(|e| panic!("get {k}: {e}"));
                    raw.lock().expect("raw").push(Raw::Read {
                        session: s,
                        key: k,
                        value: r
                            .kv
                            .map(|kv| String::from_utf8_lossy(&kv.value).to_string()),
                    });
                }
            }
            acked
        }));
    }

    // Two moves under the load: away and back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut segments = vec![Segment {
        group: US_EAST,
        since: 0,
    }];
    for to in ["eu-west", "us-east"] {
        let t = Instant::now();
        let (committed, m) = move_to(&admin, to).await;
        assert!(committed, "the move to {to} was rolled back: {m:?}");
        let (group, since) = owner(&m);
        assert!(since > 0, "a moved-in domain records its import revision");
        eprintln!(
            "moved to {to} (group {group}, since {since}) in {:?}",
            t.elapsed()
        );
        segments.push(Segment { group, since });
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.expect("writer"));
    }
    assert!(
        acked.len() > 30,
        "the writers got {} writes through",
        acked.len()
    );

    // Every acknowledged write, from every region, applied once.
    for (c, r) in clients.iter().zip(REGIONS) {
        let kvs: BTreeMap<String, (String, u64)> = c
            .range_all(PREFIX, Consistency::Linearizable)
            .await
            .unwrap_or_else(|e| panic!("range from {r}: {e}"))
            .into_iter()
            .map(|kv| {
                let v = String::from_utf8_lossy(&kv.value).to_string();
                (kv.key, (v, kv.version))
            })
            .collect();
        for (key, value) in &acked {
            let (got, version) = kvs
                .get(key)
                .unwrap_or_else(|| panic!("{key} (acknowledged) is missing from {r}"));
            assert_eq!(got, value, "{key} in {r}");
            assert_eq!(*version, 1, "{key} was applied more than once");
        }
        for i in 0..200 {
            let key = format!("{PREFIX}pre-{i}");
            let (got, _) = kvs.get(&key).expect("preloaded key");
            assert_eq!(*got, format!("pre-{i}"));
        }
    }

    // Every watcher saw every acknowledged write exactly once: wait (bounded) until each has
    // seen each at least once, and a moment more for any duplicate to show.
    let start = Instant::now();
    loop {
        let all = {
            let seen = seen.lock().expect("seen");
            seen.iter().all(|events| {
                let keys: std::collections::BTreeSet<&str> =
                    events.iter().map(|(k, _)| k.as_str()).collect();
                acked.iter().all(|(key, _)| keys.contains(key.as_str()))
            })
        };
        if all || start.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_watching.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in watch_tasks {
        t.await.expect("watcher");
    }
    let seen = seen.lock().expect("seen").clone();
    for (i, events) in seen.iter().enumerate() {
        let mut count: BTreeMap<&str, usize> = BTreeMap::new();
        for (k, _) in events {
            *count.entry(k.as_str()).or_default() += 1;
        }
        for (key, _) in &acked {
            assert_eq!(
                count.get(key.as_str()).copied().unwrap_or(0),
                1,
                "watcher in {} saw {key} that many times (events: {})",
                REGIONS[i],
                events.len()
            );
        }
        // The preloaded keys were written before the watches began (a watcher whose replica
        // had not applied the last of them yet may see those once); the imports re-create all
        // of them and must not reach any watcher.
        let twice: Vec<&&str> = count
            .iter()
            .filter(|(k, n)| k.contains("/pre-") && **n > 1)
            .map(|(k, _)| k)
            .collect();
        assert!(
            twice.is_empty(),
            "watcher in {} saw preloaded keys again (an import delivered as changes): {twice:?}",
            REGIONS[i]
        );
    }

    // The history, with the moving domain's revisions in one order across its owners.
    let mut history = History::new();
    for op in raw.lock().expect("raw").drain(..) {
        history.push(match op {
            Raw::Write {
                session,
                key,
                value,
                served,
            } => Op {
                session,
                group: 100,
                kind: OpKind::Write {
                    key,
                    value,
                    revision: served.map(|(g, r)| domain_revision(&segments, g, r)),
                },
            },
            Raw::Read {
                session,
                key,
                value,
            } => Op {
                session,
                group: 100,
                kind: OpKind::Read {
                    key,
                    value,
                    // An imported key's mod_revision is the import's, not its write's.
                    mod_revision: None,
                },
            },
        });
    }
    if let Err(v) = check_sequential(&history) {
        panic!("the history across the moves is not sequentially consistent: {v}");
    }

    // The planner's recommendation, applied: /us-east/orders/ is written mostly from eu-west.
    let plan = dev.dir.path().join("plan.json");
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let out = std::process::Command::new(common::BIN)
        .args(["sim", "plan", "--topology"])
        .arg(format!("{root}/topology/local-3region.toml"))
        .arg("--workload")
        .arg(format!("{root}/simulations/scenarios/plan-moves.toml"))
        .arg("--json")
        .arg(&plan)
        .output()
        .expect("sim plan");
    assert!(out.status.success(), "sim plan: {out:?}");
    let apply = |extra: &[&str]| {
        let out = std::process::Command::new(common::BIN)
            .args(["--endpoint", &dev.endpoint("us-east"), "placement", "apply"])
            .arg(&plan)
            .args(extra)
            .output()
            .expect("placement apply");
        assert!(out.status.success(), "placement apply {extra:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let dry = apply(&["--dry-run"]);
    assert!(
        dry.contains("would move /us-east/orders/ from us-east to eu-west")
            && dry.contains("/ap-northeast/ already lives in ap-northeast"),
        "{dry}"
    );
    let (_, m) = wait_map(&admin).await;
    assert_eq!(owner(&m).0, US_EAST, "a dry run changes nothing");
    let done = apply(&[]);
    assert!(
        done.contains("moved /us-east/orders/ from g1 to g2"),
        "{done}"
    );
    let (_, m) = wait_map(&admin).await;
    assert_eq!(owner(&m).0, EU_WEST, "the plan was applied");
    let again = apply(&[]);
    assert!(again.contains("already lives in eu-west"), "{again}");
}

async fn wait_map(c: &Client) -> (u64, pb::PlacementShowResponse) {
    let start = Instant::now();
    loop {
        if let Ok(m) = c.placement().await {
            if m.epoch > 0 {
                return (m.epoch, m);
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no placement map"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Where a kill lands in a move, with every node pausing `PAUSE` at each point: the driver
/// before asking for the copy (`begun`), the copy between freezing the source and importing
/// (`frozen`), the driver before the release (`committed`).
#[derive(Clone, Copy, Debug)]
enum When {
    Begun,
    Frozen,
    Committed,
}

#[derive(Clone, Copy, Debug)]
enum Victim {
    Driver,
    SourceLeader,
    TargetLeader,
}

const PAUSE_MS: u64 = 2500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_survive_killed_nodes() {
    common::watchdog(Duration::from_secs(900));
    let _serial = ONE_CLUSTER.lock().await;
    let dev = DevCluster::start_env(
        &["--processes"],
        "warn,meridian_server::moves=info",
        &[("MERIDIAN_LIMITS__MOVE_STEP_PAUSE_MS", &PAUSE_MS.to_string())],
    );
    let mut nodes = Nodes::of(&dev);
    let admin = Client::new(
        dev.ready["regions"]["us-east"]["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .chain(
                dev.ready["regions"]["eu-west"]["endpoints"]
                    .as_array()
                    .expect("eu"),
            )
            .map(|v| v.as_str().expect("endpoint").to_string())
            .collect(),
        Options {
            call_timeout: Duration::from_secs(30),
            rpc_timeout: Duration::from_secs(3),
            ..dev.options()
        },
    )
    .expect("client");
    wait_map(&admin).await;
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..100 {
        let (k, v) = (format!("{PREFIX}k{i}"), format!("v{i}"));
        admin.put(&k, v.clone()).await.expect("preload");
        expected.insert(k, v);
    }

    let plan = [
        (Victim::Driver, When::Begun),
        (Victim::SourceLeader, When::Frozen),
        (Victim::TargetLeader, When::Frozen),
        (Victim::Driver, When::Frozen),
        (Victim::SourceLeader, When::Committed),
        (Victim::Driver, When::Committed),
        (Victim::TargetLeader, When::Begun),
    ];
    for (round, (victim, when)) in plan.into_iter().enumerate() {
        let m = admin.placement().await.expect("map");
        let (from, _) = owner_or_us_east(&m);
        let (to, to_name) = if from == US_EAST {
            (EU_WEST, "eu-west")
        } else {
            (US_EAST, "us-east")
        };
        let group = match victim {
            Victim::Driver => GLOBAL,
            Victim::SourceLeader => from,
            Victim::TargetLeader => to,
        };
        let (target, term) = nodes.new_leader(group, 0, Duration::from_secs(30)).await;
        let begun = admin
            .move_domain(PREFIX, to_name, 0)
            .await
            .unwrap_or_else(|e| panic!("round {round}: move to {to_name}: {e}"));
        let t0 = Instant::now();
        let pause = Duration::from_millis(PAUSE_MS);
        match when {
            When::Begun => tokio::time::sleep(pause / 2).await,
            When::Frozen => tokio::time::sleep(pause + pause / 2).await,
            When::Committed => wait_committed(&admin, begun.id).await,
        }
        nodes.signal(target, "-KILL");
        eprintln!(
            "round {round}: killed node {target} ({victim:?}, leader of group {group}) at {when:?}, {:?} into move {}",
            t0.elapsed(),
            begun.id
        );
        // A write to the moving prefix while the move and the failover go on.
        let (k, v) = (format!("{PREFIX}r{round}"), format!("during-{round}"));
        match admin.put(&k, v.clone()).await {
            Ok(_) => {
                expected.insert(k, v);
            }
            Err(e) => eprintln!("round {round}: a write during the failover failed: {e}"),
        }
        let (committed, m) = wait_end(&admin, begun.id).await;
        let (now, _) = owner(&m);
        assert_eq!(
            now,
            if committed { to } else { from },
            "round {round}: the owner must follow the outcome"
        );
        eprintln!(
            "round {round}: move {} {} after {:?}",
            begun.id,
            if committed {
                "committed"
            } else {
                "rolled back"
            },
            t0.elapsed()
        );
        nodes.restart(target, dev.dir.path());
        nodes
            .new_leader(group, term.saturating_sub(1), Duration::from_secs(60))
            .await;
        // Nothing lost, writable again.
        let (k, v) = (format!("{PREFIX}after{round}"), format!("after-{round}"));
        admin
            .put(&k, v.clone())
            .await
            .unwrap_or_else(|e| panic!("round {round}: write after the move: {e}"));
        expected.insert(k, v);
        for (k, v) in &expected {
            let got = admin
                .get_with(k, Consistency::Linearizable)
                .await
                .unwrap_or_else(|e| panic!("round {round}: get {k}: {e}"))
                .kv
                .unwrap_or_else(|| panic!("round {round}: {k} lost"));
            assert_eq!(
                String::from_utf8_lossy(&got.value),
                *v,
                "round {round}: {k}"
            );
            assert_eq!(got.version, 1, "round {round}: {k} applied twice");
        }
    }
    // The restarted nodes caught up: every region reads the last state. Linearizable: a new
    // session's sequential read may be served by a replica still a moment behind (that is
    // sequential consistency); a linearizable one waits until this region's replica has
    // everything the leader had, and would time out if a restarted node never caught up.
    for r in REGIONS {
        let c = client(&dev, r);
        let kvs: BTreeMap<String, String> = c
            .range_all(PREFIX, Consistency::Linearizable)
            .await
            .unwrap_or_else(|e| panic!("range from {r}: {e}"))
            .into_iter()
            .map(|kv| {
                (
                    kv.key.clone(),
                    String::from_utf8_lossy(&kv.value).to_string(),
                )
            })
            .collect();
        for (k, v) in &expected {
            assert_eq!(kvs.get(k), Some(v), "{k} as {r} sees it");
        }
    }

    // Bad input: each refused with its rule, nothing changed.
    let before = admin.placement().await.expect("map");
    for (prefix, to, needle) in [
        (PREFIX, "no-such-group", "no group"),
        ("/us-east/orders", "eu-west", "must end with"),
        ("not-a-path/", "eu-west", "domain prefix"),
        ("/nowhere/", "eu-west", "lies in no domain"),
    ] {
        let e = admin
            .move_domain(prefix, to, 0)
            .await
            .expect_err("refused")
            .to_string();
        assert!(e.contains(needle), "{prefix} -> {to}: {e}");
    }
    let (group, _) = owner(&before);
    let same = before
        .groups
        .iter()
        .find(|g| g.id == group)
        .expect("owner group")
        .name
        .clone();
    let e = admin
        .move_domain(PREFIX, &same, 0)
        .await
        .expect_err("into itself")
        .to_string();
    assert!(e.contains("already belongs"), "{e}");
    let e = admin
        .move_domain(PREFIX, "ap-northeast", 1)
        .await
        .expect_err("stale epoch")
        .to_string();
    assert!(e.contains("epoch"), "{e}");
    // Two overlapping moves: one wins, the other is a conflict.
    let first = admin
        .move_domain("/us-east/", "ap-northeast", 0)
        .await
        .expect("first move");
    let e = admin
        .move_domain(PREFIX, "ap-northeast", 0)
        .await
        .expect_err("overlap")
        .to_string();
    assert!(e.contains("already moving"), "{e}");
    let (committed, _) = wait_end(&admin, first.id).await;
    assert!(committed, "the winning move ends");
    let after = admin.placement().await.expect("map");
    assert_eq!(
        owner(&after).0,
        group,
        "the refused moves changed nothing (the nested domain stays)"
    );
}

fn owner_or_us_east(m: &pb::PlacementShowResponse) -> (u64, u64) {
    m.domains
        .iter()
        .find(|d| d.prefix == PREFIX)
        .map_or((US_EAST, 0), |d| (d.group, d.since))
}

async fn wait_committed(c: &Client, id: u64) {
    let start = Instant::now();
    loop {
        if let Ok(m) = c.placement().await {
            let step = m
                .domains
                .iter()
                .find(|d| d.prefix == PREFIX)
                .and_then(|d| d.moving.as_ref())
                .filter(|mv| mv.id == id)
                .map(|mv| mv.step.clone());
            if step.as_deref() == Some("committed") {
                // Half-way through the driver's pause before the release.
                tokio::time::sleep(Duration::from_millis(PAUSE_MS / 2)).await;
                return;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "move {id} never reached committed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
