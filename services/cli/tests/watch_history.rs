//! Watch history limits: a watch from a compacted revision fails with `Compacted{oldest}` and
//! the SDK reports it typed; from the oldest kept revision it replays exactly the kept changes;
//! an idle watch receives progress notifications.

mod common;

use meridian_sdk::{Client, Error, WatchEvent};
use meridian_server::Node;
use std::time::Duration;

async fn node_with_history(ip: &str, max: u64) -> (tempfile::TempDir, Node, Client) {
    let start = common::one_node(ip, |cfg| {
        cfg.limits.history_revisions_max = max;
        cfg.limits.watch_progress_interval_ms = 100;
    });
    let (dir, node, addr) = tokio::time::timeout(Duration::from_secs(60), start)
        .await
        .expect("the node started and leads");
    let client = Client::new(vec![addr], Default::default()).expect("client");
    (dir, node, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_revision_is_a_typed_error_and_progress_flows() {
    common::watchdog(std::time::Duration::from_secs(300));
    let (_dir, node, client) = node_with_history("127.0.44.1", 16).await;
    let mut last = 0;
    for i in 0..60 {
        let r = client
            .put(&format!("/h/k{i}"), format!("v{i}"))
            .await
            .expect("put");
        last = r.header.expect("header").revision;
    }
    let mut w = client.watch("/h/", true, 1);
    let err = w.next().await.expect_err("revision 1 is compacted");
    let oldest = match &err {
        Error::Compacted {
            oldest,
            requested,
            message,
        } => {
            assert_eq!(*requested, 1);
            assert!(
                message.contains("was compacted") && message.contains("re-list"),
                "{message}"
            );
            *oldest
        }
        other => panic!("expected Compacted, got {other:?}"),
    };
    assert!(
        oldest > 1 && oldest <= last - 15,
        "oldest {oldest}, last {last}"
    );

    // From the oldest kept revision: exactly the changes from there to the last write.
    let mut w = client.watch("/h/", true, oldest);
    let mut revisions = Vec::new();
    while revisions.last() != Some(&last) {
        match tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("in time")
            .expect("event")
        {
            WatchEvent::Changes { revision, events } => {
                assert_eq!(events.len(), 1);
                revisions.push(revision);
            }
            WatchEvent::Progress { .. } => {}
        }
    }
    assert_eq!(
        revisions[0], oldest,
        "replay starts exactly at the oldest kept revision"
    );
    assert!(revisions.windows(2).all(|p| p[0] < p[1]));
    assert_eq!(
        revisions.len() as u64,
        last - revisions[0] + 1,
        "every kept revision once"
    );

    // Nothing changes now: progress notifications still arrive, at the current revision.
    let mut progress = 0;
    while progress < 3 {
        match tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .expect("progress in time")
            .expect("event")
        {
            WatchEvent::Progress { revision } => {
                assert!(revision >= last);
                progress += 1;
            }
            WatchEvent::Changes { .. } => panic!("no change was made"),
        }
    }
    tokio::time::timeout(Duration::from_secs(30), node.shutdown())
        .await
        .expect("node shutdown finished");
}

/// A revision with more events than one response holds arrives in fragments; a watcher that
/// reconnects between fragments gets the rest of that revision exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_inside_a_fragmented_revision_loses_and_repeats_nothing() {
    common::watchdog(std::time::Duration::from_secs(300));
    let (_dir, node, client) = node_with_history("127.0.44.2", 100_000).await;
    const KEYS: usize = 2_500;
    let mut txn = meridian_sdk::pb::TxnRequest::default();
    let mut last = 0;
    // 100 puts per txn (a txn carries at most 128).
    for chunk in 0..(KEYS / 100) {
        txn.success = (0..100)
            .map(|i| meridian_sdk::pb::TxnOp {
                op: Some(meridian_sdk::pb::txn_op::Op::Put(
                    meridian_sdk::pb::PutRequest {
                        key: format!("/f/k{:05}", chunk * 100 + i).into_bytes(),
                        value: b"v".to_vec(),
                        ..Default::default()
                    },
                )),
            })
            .collect();
        last = client
            .txn(txn.clone())
            .await
            .expect("txn")
            .header
            .expect("header")
            .revision;
    }
    let del = client
        .delete(meridian_sdk::pb::DeleteRequest {
            key: b"/f/".to_vec(),
            prefix: true,
            ..Default::default()
        })
        .await
        .expect("prefix delete");
    assert_eq!(del.deleted, KEYS as u64);
    let rev = del.header.expect("header").revision;
    assert!(rev > last);

    let mut w = client.watch("/f/", true, rev);
    let mut seen: Vec<String> = Vec::new();
    let mut reconnected = false;
    let mut log: Vec<String> = Vec::new();
    let started = std::time::Instant::now();
    while seen.len() < KEYS {
        // Progress notifications alone must not keep this loop going for ever.
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{} of {KEYS} events after 60 s; watcher at revision {} (deleted at {rev}); {log:?}",
            seen.len(),
            w.next_revision()
        );
        match tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("in time")
            .expect("event")
        {
            WatchEvent::Changes { revision, events } => {
                log.push(format!("changes r{revision} n{}", events.len()));
                assert_eq!(revision, rev);
                seen.extend(events.into_iter().map(|e| e.kv.expect("kv").key));
                if !reconnected {
                    assert!(seen.len() < KEYS, "the revision must come in fragments");
                    w.reconnect();
                    reconnected = true;
                }
            }
            WatchEvent::Progress { revision } => log.push(format!("progress r{revision}")),
        }
    }
    assert_eq!(seen.len(), KEYS, "nothing repeated");
    let unique: std::collections::BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), KEYS, "nothing lost, nothing twice");
    assert!(w.reconnects >= 1);
    tokio::time::timeout(Duration::from_secs(30), node.shutdown())
        .await
        .expect("node shutdown finished");
}

/// Read by closed timestamps, a get is served at its key's own change (docs/consistency.md
/// rule 3′), so its header may name an older revision than the replica's last — but never one
/// below the compaction point: "get, then watch from the next revision" keeps working on a key
/// that has not changed since long before the window (fails if the header reports the key's
/// own change once that is compacted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_by_closed_timestamps_then_a_watch_from_its_revision_is_served() {
    common::watchdog(std::time::Duration::from_secs(300));
    let start = common::one_node("127.0.44.3", |cfg| {
        cfg.limits.history_revisions_max = 16;
        cfg.limits.watch_progress_interval_ms = 100;
        cfg.timestamps.profile = meridian_server::config::TimestampProfile::LocalWrites;
        // An idle leader's promises would advance the revision (and the compaction point, 16
        // behind it) every 10 ms, racing the watch below against compaction: promise rarely.
        cfg.timestamps.close_interval_ms = 5_000;
        cfg.timestamps.stale_after_ms = 10_000;
    });
    let (_dir, node, addr) = tokio::time::timeout(Duration::from_secs(60), start)
        .await
        .expect("the node started and leads");
    let writer = Client::new(vec![addr.clone()], Default::default()).expect("client");
    let old = writer
        .put("/h/old", "v")
        .await
        .expect("put")
        .header
        .expect("header")
        .revision;
    for i in 0..60 {
        writer
            .put(&format!("/h/k{i}"), format!("v{i}"))
            .await
            .expect("put");
    }
    // A fresh session: nothing seen of the group.
    let reader = Client::new(vec![addr], Default::default()).expect("client");
    let got = reader
        .get_with("/h/old", meridian_sdk::Consistency::Sequential)
        .await
        .expect("get");
    assert_eq!(got.kv.expect("the key").mod_revision, old);
    let revision = got.header.expect("header").revision;
    let mut w = reader.watch("/h/old", false, revision + 1);
    match tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("in time")
    {
        Ok(WatchEvent::Progress { .. }) => {}
        other => panic!("a watch from the get's revision {revision} + 1: {other:?}"),
    }
    tokio::time::timeout(Duration::from_secs(30), node.shutdown())
        .await
        .expect("node shutdown finished");
}
