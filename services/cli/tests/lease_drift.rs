//! Lease reads under clock drift (docs/consistency.md, "Lease reads"): the leader answers
//! linearizable reads from its lease without a quorum round, trusting that its monotonic clock
//! runs at most 10 % slower than its followers'. Here its clock runs 8 % slow (libfaketime
//! scales the process's CLOCK_MONOTONIC) and it is cut off from its followers (a user-space
//! relay between every pair of nodes, as the WAN emulator does between regions) while a
//! client keeps reading at it. The followers elect a new leader and take a write; no read
//! that began after that write was acknowledged may return the old value.
//!
//! It can fail: with the clock at x0.25 (far outside the bound) the old leader served the old
//! value for 260 ms after the new write's acknowledgement.

mod common;

use common::ProcCluster;
use meridian_sdk::{Client, Consistency, Options};
use meridian_wan::{LinkSpec, Wan};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Node 1's clock rate: 8 % slow, inside the stated bound of 10 %.
const SLOW_RATE: &str = "x0.92";

/// A read at node 1: when it began, when it ended, the value or the error.
type Read = (Instant, Instant, Result<Option<Vec<u8>>, String>);

fn region(id: u64) -> String {
    format!("n{id}")
}

fn client(addr: &str, timeout: Duration) -> Client {
    Client::new(
        vec![addr.to_string()],
        Options {
            call_timeout: timeout,
            rpc_timeout: timeout,
            ..Options::default()
        },
    )
    .expect("client")
}

/// The leader node `at` reports, confirmed by a linearizable read there.
async fn leader_seen_at(addr: &str) -> Option<u64> {
    let c = client(addr, Duration::from_millis(500));
    let s = c.status(false).await.ok()?;
    let leader = s.groups.first()?.leader;
    c.get_with("/probe", Consistency::Linearizable).await.ok()?;
    (leader != 0).then_some(leader)
}

/// Waits for a leader other than `not`, as seen by the nodes other than `not`.
async fn wait_leader_except(cluster: &ProcCluster, not: u64, limit: Duration) -> u64 {
    let start = Instant::now();
    loop {
        for id in (1..=3).filter(|id| *id != not) {
            if let Some(l) = leader_seen_at(cluster.addr(id)).await {
                if l != not {
                    return l;
                }
            }
        }
        assert!(
            start.elapsed() < limit,
            "no leader besides node {not} within {limit:?}; logs in {}",
            cluster.log_dir().display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_clock_within_the_bound_serves_no_stale_lease_read_when_cut_off() {
    common::watchdog(Duration::from_secs(300));
    let libfaketime = common::libfaketime();
    // Every node reaches every other through a relay of the link between their "regions".
    let wan = Wan::new();
    for a in 1..=3 {
        for b in a + 1..=3 {
            wan.set_link(&region(a), &region(b), LinkSpec::from_rtt_ms(2));
        }
    }
    let addrs = ProcCluster::addresses(3, 49);
    let mut relays = Vec::new();
    let mut dial: Vec<String> = vec![String::new(); 3];
    for from in 1..=3u64 {
        for to in (1..=3u64).filter(|to| *to != from) {
            let target: SocketAddr = addrs[(to - 1) as usize].parse().expect("addr");
            let listen: SocketAddr = format!("127.0.49.{from}:0").parse().expect("listen");
            let relay = wan
                .relay(listen, &region(from), &region(to), target)
                .await
                .expect("relay");
            dial[(from - 1) as usize] += &format!(
                "\"{}\" = \"{}\"\n",
                addrs[(to - 1) as usize],
                relay.local_addr
            );
            relays.push(relay);
        }
    }
    let cluster = ProcCluster::start_custom(
        addrs,
        |id| format!("[dial]\n{}", dial[(id - 1) as usize]),
        |id| {
            if id == 1 {
                vec![
                    ("LD_PRELOAD".into(), libfaketime.into()),
                    ("FAKETIME".into(), format!("+0 {SLOW_RATE}")),
                ]
            } else {
                Vec::new()
            }
        },
    );

    // Steer the leadership to node 1 (the slow clock): cut whoever else leads until the
    // others elect node 1.
    let mut leader = cluster.wait_leader(Duration::from_secs(30)).await;
    for _ in 0..12 {
        if leader == 1 {
            break;
        }
        wan.cut_region(&region(leader)).expect("cut");
        let next = wait_leader_except(&cluster, leader, Duration::from_secs(30)).await;
        wan.heal_region(&region(leader)).expect("heal");
        leader = next;
    }
    assert_eq!(leader, 1, "node 1 never became the leader");
    let writer = client(cluster.addr(2), Duration::from_secs(2));
    common::put_settled(
        &cluster.client_at(1),
        "/drift/k",
        "v1",
        Duration::from_secs(10),
    )
    .await;

    // A reader at node 1, as fast as it goes: (began, ended, value or error).
    let reads: Arc<Mutex<Vec<Read>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (reads, stop) = (reads.clone(), stop.clone());
        let at_1 = client(cluster.addr(1), Duration::from_millis(300));
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let began = Instant::now();
                let r = at_1
                    .get_with("/drift/k", Consistency::Linearizable)
                    .await
                    .map(|r| r.kv.map(|kv| kv.value))
                    .map_err(|e| e.to_string());
                let failed = r.is_err();
                reads
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((began, Instant::now(), r));
                if failed {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cut_at = Instant::now();
    wan.cut_region(&region(1)).expect("cut node 1 off");
    // The other two elect a leader and take a write.
    let acked = loop {
        match writer.put("/drift/k", "v2").await {
            Ok(_) => break Instant::now(),
            Err(e) => {
                assert!(
                    cut_at.elapsed() < Duration::from_secs(30),
                    "no write without node 1 within 30 s: {e}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.await.expect("reader");
    let reads = std::mem::take(&mut *reads.lock().unwrap_or_else(|p| p.into_inner()));

    let ms = |t: Instant| t.saturating_duration_since(cut_at).as_millis() as i64;
    let served_before_cut = reads
        .iter()
        .filter(|(_, end, r)| *end < cut_at && matches!(r, Ok(Some(v)) if v == b"v1"))
        .count();
    let last_old = reads
        .iter()
        .filter(|(_, _, r)| matches!(r, Ok(Some(v)) if v == b"v1"))
        .map(|(_, end, _)| ms(*end))
        .max();
    eprintln!(
        "{} reads at node 1; {served_before_cut} answered v1 before the cut; the last v1 came \
         {last_old:?} ms after the cut; v2 acknowledged {} ms after it",
        reads.len(),
        ms(acked)
    );
    assert!(
        served_before_cut >= 5,
        "the leader served linearizable reads before the cut"
    );
    let stale: Vec<String> = reads
        .iter()
        .filter(|(began, _, r)| *began > acked && matches!(r, Ok(Some(v)) if v == b"v1"))
        .map(|(began, end, _)| format!("began {} ms, ended {} ms", ms(*began), ms(*end)))
        .collect();
    assert!(
        stale.is_empty(),
        "node 1 (clock {SLOW_RATE}) served v1 after v2 was acknowledged at {} ms, {} times; \
         the first: {:?}",
        ms(acked),
        stale.len(),
        &stale[..stale.len().min(5)]
    );

    // Healed, node 1 follows again and reads the new value.
    wan.heal_all();
    let at_1 = client(cluster.addr(1), Duration::from_secs(2));
    let start = Instant::now();
    loop {
        if let Ok(r) = at_1.get_with("/drift/k", Consistency::Linearizable).await {
            if r.kv.map(|kv| kv.value) == Some(b"v2".to_vec()) {
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "node 1 never read v2 after the heal"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(relays);
}
