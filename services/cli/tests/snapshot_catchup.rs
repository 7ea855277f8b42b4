//! A follower that was down while the leader snapshotted and purged its log catches up through
//! a snapshot streamed in chunks, then serves every key.

mod common;

use common::ProcCluster;
use meridian_sdk::{Client, Consistency, Options};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const WRITES: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_follower_catches_up_from_a_snapshot() {
    common::watchdog(std::time::Duration::from_secs(300));
    // Snapshot every 50 entries, keep no log behind it: a follower that misses 400 writes can
    // only catch up from a snapshot.
    let extra = "[raft]\nsnapshot_logs_since_last = 50\nmax_in_snapshot_log_to_keep = 0\n";
    let mut cluster = ProcCluster::start_with(3, 47, extra);
    let leader = cluster.wait_leader(Duration::from_secs(20)).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster.kill(follower);

    let writer = cluster.client();
    let mut last = 0;
    for i in 0..WRITES {
        // Large-ish values make the snapshot span several 1 MiB chunks.
        let r = writer
            .put(
                &format!("/snap/k{i:04}"),
                vec![b'a' + (i % 26) as u8; 8 * 1024],
            )
            .await
            .expect("put");
        last = r.header.expect("header").revision;
    }

    cluster.restart(follower);
    let only_follower = Client::new(
        vec![cluster.addr(follower).to_string()],
        Options {
            call_timeout: Duration::from_secs(30),
            ..Options::default()
        },
    )
    .expect("client");
    // The follower serves a sequential read only once it has applied our last write.
    only_follower.observe_vector(&BTreeMap::from([(1, last)]));
    let start = Instant::now();
    let kvs = loop {
        match only_follower
            .range_all("/snap/", Consistency::Sequential)
            .await
        {
            Ok(kvs) => break kvs,
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "follower never caught up: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(kvs.len(), WRITES, "every key on the follower");
    for kv in &kvs {
        let i: usize = kv.key.trim_start_matches("/snap/k").parse().expect("index");
        assert_eq!(kv.value, vec![b'a' + (i % 26) as u8; 8 * 1024]);
    }
    let status = only_follower.status(false).await.expect("status");
    assert_eq!(status.node, follower);
    let g = &status.groups[0];
    assert!(
        g.compacted_revision > 0,
        "the follower installed a snapshot (its history starts after it): {g:?}"
    );
}
