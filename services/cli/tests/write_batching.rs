//! Concurrent writes share Raft entries only when their keys are disjoint: a key never changes
//! twice in one revision, so its mod_revision names one value.

mod common;

use meridian_sdk::Client;
use meridian_server::Node;
use std::collections::BTreeSet;

async fn one_node(ip: &str) -> (tempfile::TempDir, Node, Client) {
    let (dir, node, addr) = common::one_node(ip, |_| {}).await;
    let client = Client::new(vec![addr], Default::default()).expect("client");
    (dir, node, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_never_shares_a_revision_disjoint_keys_do() {
    common::watchdog(std::time::Duration::from_secs(300));
    let (_dir, node, client) = one_node("127.0.46.1").await;
    const N: usize = 64;

    let same: Vec<_> = (0..N)
        .map(|i| {
            let c = client.clone();
            tokio::spawn(async move { c.put("/same", format!("v{i}")).await.expect("put") })
        })
        .collect();
    let mut revs = BTreeSet::new();
    for t in same {
        revs.insert(t.await.expect("task").header.expect("header").revision);
    }
    assert_eq!(revs.len(), N, "every write of one key has its own revision");
    let kv = client.get("/same").await.expect("get").expect("present");
    assert_eq!(kv.version, N as u64);
    assert_eq!(kv.mod_revision, *revs.last().expect("revisions"));

    let distinct: Vec<_> = (0..N)
        .map(|i| {
            let c = client.clone();
            tokio::spawn(async move { c.put(&format!("/d/k{i}"), "v").await.expect("put") })
        })
        .collect();
    let mut revs = BTreeSet::new();
    for t in distinct {
        revs.insert(t.await.expect("task").header.expect("header").revision);
    }
    assert!(
        revs.len() < N,
        "concurrent writes on disjoint keys were batched ({} entries for {N})",
        revs.len()
    );
    let all = client
        .range_all("/d/", Default::default())
        .await
        .expect("range");
    assert_eq!(all.len(), N);
    node.shutdown().await;
}
