//! Watches deliver every change exactly once and in order across a SIGKILLed leader: one
//! watcher started at revision R that the SDK resumes, and one that disconnects on purpose
//! every few events and resumes from the revision after the last it saw.

mod common;

use common::ProcCluster;
use meridian_sdk::{pb, Client, WatchEvent};
use std::time::Duration;

const WRITES: usize = 300;
const KILL_AFTER: usize = 100;
const DONE_KEY: &str = "/w/done";

/// Everything a watcher saw: (key, value, revision) in delivery order.
type Seen = Vec<(String, Vec<u8>, u64)>;

fn record(seen: &mut Seen, events: &[pb::Event]) -> bool {
    let mut done = false;
    for e in events {
        let kv = e.kv.clone().expect("event kv");
        done |= kv.key == DONE_KEY;
        seen.push((kv.key, kv.value, kv.mod_revision));
    }
    done
}

/// Watches from `start` and keeps going (the SDK resumes after failures) until DONE_KEY.
async fn resuming_watcher(client: Client, start: u64) -> (Seen, u64) {
    let mut w = client.watch("/w/", true, start);
    let mut seen = Seen::new();
    loop {
        match w.next().await.expect("watch event") {
            WatchEvent::Changes { events, .. } => {
                if record(&mut seen, &events) {
                    return (seen, w.reconnects);
                }
            }
            WatchEvent::Progress { .. } => {}
        }
    }
}

/// Opens a fresh watch from `next` each round, takes at most `per_round` changes, drops it.
async fn reconnecting_watcher(client: Client, start: u64, per_round: usize) -> (Seen, u64) {
    let mut seen = Seen::new();
    let mut next = start;
    let mut rounds = 0;
    loop {
        rounds += 1;
        let mut w = client.watch("/w/", true, next);
        let mut taken = 0;
        while taken < per_round {
            match w.next().await.expect("watch event") {
                WatchEvent::Changes { revision, events } => {
                    taken += events.len();
                    next = revision + 1;
                    if record(&mut seen, &events) {
                        return (seen, rounds);
                    }
                }
                WatchEvent::Progress { .. } => {}
            }
        }
    }
}

fn check(name: &str, seen: &Seen, acked: &[(String, u64)]) {
    for pair in seen.windows(2) {
        assert!(
            pair[0].2 < pair[1].2,
            "{name}: revisions not strictly increasing: {pair:?}"
        );
    }
    for (key, rev) in acked {
        assert!(
            seen.iter().any(|(k, _, r)| k == key && r == rev),
            "{name}: acknowledged write {key}@{rev} never delivered"
        );
    }
    for (k, v, _) in seen {
        if k != DONE_KEY {
            let i: usize = k.trim_start_matches("/w/k").parse().expect("key index");
            assert_eq!(v, format!("v{i}").as_bytes(), "{name}: wrong value for {k}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_see_every_change_once_in_order_across_leader_kill() {
    common::watchdog(std::time::Duration::from_secs(300));
    let mut cluster = ProcCluster::start(3, 42);
    let leader = cluster.wait_leader(Duration::from_secs(20)).await;
    let writer = cluster.client();
    let first = writer.put("/w/k0000", "v0").await.expect("first put");
    let start = first.header.expect("header").revision;
    let mut acked = vec![("/w/k0000".to_string(), start)];

    // Watcher A sits on the leader, which will be killed; the SDK must resume it elsewhere.
    let a = tokio::spawn(resuming_watcher(cluster.client_at(leader), start));
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let b = tokio::spawn(reconnecting_watcher(cluster.client_at(follower), start, 25));

    let mut killed = None;
    for i in 1..WRITES {
        if i == KILL_AFTER {
            // Kill whoever leads now (leadership may have moved under load).
            let current = cluster.wait_leader(Duration::from_secs(10)).await;
            cluster.kill(current);
            killed = Some(current);
        }
        let key = format!("/w/k{i:04}");
        // The put right after the kill may break on the dead leader's connection.
        let rev =
            common::put_settled(&writer, &key, &format!("v{i}"), Duration::from_secs(30)).await;
        acked.push((key, rev));
    }
    writer.put(DONE_KEY, "1").await.expect("done marker");

    let limit = Duration::from_secs(60);
    let (seen_a, reconnects_a) = tokio::time::timeout(limit, a)
        .await
        .expect("watcher A finished")
        .expect("A");
    let (seen_b, rounds_b) = tokio::time::timeout(limit, b)
        .await
        .expect("watcher B finished")
        .expect("B");
    check("A", &seen_a, &acked);
    check("B", &seen_b, &acked);
    // Watcher A sat on the first leader; if that node was the one killed, it had to resume.
    if killed == Some(leader) {
        assert!(
            reconnects_a >= 1,
            "watcher A was on the killed leader and must have resumed"
        );
    }
    assert!(
        rounds_b >= (WRITES / 25) as u64,
        "watcher B resumed {rounds_b} times"
    );
    // The first delivered change is exactly the one at R.
    assert_eq!(seen_a[0].2, start);
    assert_eq!(seen_b[0].2, start);
}
