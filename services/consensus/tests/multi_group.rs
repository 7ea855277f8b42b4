//! Several groups on the same three nodes share one peer connection per node pair, and each
//! replicates its own log: the group id in every message keeps them apart.

use meridian_consensus::{
    GroupHandle, GroupNetworkFactory, Host, PeerPool, PeerService, Raft, Timing,
};
use meridian_proto::peer::peer_server::PeerServer;
use meridian_storage::NodeStore;
use meridian_types::{Command, GroupId, PutOp};
use openraft::BasicNode;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const GROUPS: [GroupId; 3] = [GroupId(1), GroupId(2), GroupId(3)];

struct TestNode {
    _store: NodeStore,
    host: Arc<Host>,
    pool: Arc<PeerPool>,
}

fn put(key: &str, value: &str) -> Command {
    Command::Put(PutOp::new(key, value))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_share_connections_and_replicate_independently() {
    tokio::time::timeout(Duration::from_secs(120), run())
        .await
        .expect("the multi-group test finished in time");
}

async fn run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut listeners = Vec::new();
    let mut members = BTreeMap::new();
    for id in 1..=3u64 {
        let l = tokio::net::TcpListener::bind(("127.0.45.".to_string() + &id.to_string(), 0))
            .await
            .expect("bind");
        members.insert(
            id,
            BasicNode::new(l.local_addr().expect("addr").to_string()),
        );
        listeners.push(l);
    }
    let config = Timing::default().raft_config("test").expect("timing");
    let mut nodes = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let id = i as u64 + 1;
        let store = NodeStore::open(&dir.path().join(format!("n{id}"))).expect("store");
        let host = Host::new();
        let pool = PeerPool::new();
        for g in GROUPS {
            let (log, sm) = store.group(g, 1000).expect("group");
            let shared = sm.shared();
            let net = GroupNetworkFactory::new(g, pool.clone());
            let raft = Raft::new(id, config.clone(), net, log, sm)
                .await
                .expect("raft");
            host.insert(g, GroupHandle::new(raft, shared));
        }
        let svc = PeerServer::new(PeerService::new(host.clone()));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        nodes.push(TestNode {
            _store: store,
            host,
            pool,
        });
    }
    for g in GROUPS {
        let h = nodes[0].host.get(g).expect("group on node 1");
        h.raft
            .initialize(members.clone())
            .await
            .expect("initialize");
    }
    // Each group elects a leader and commits its own writes.
    let mut last_write = std::collections::HashMap::new();
    for g in GROUPS {
        let h = nodes[0].host.get(g).expect("group");
        h.raft
            .wait(Some(Duration::from_secs(10)))
            .metrics(|m| m.current_leader.is_some(), "leader")
            .await
            .expect("leader elected");
        let leader = h.raft.current_leader().await.expect("leader id");
        let lh = nodes[(leader - 1) as usize]
            .host
            .get(g)
            .expect("leader group");
        for i in 0..5 {
            let cmd = put(&format!("/g{}/k{i}", g.0), &format!("{}", g.0));
            let r = meridian_consensus::host::write(&lh.raft, cmd)
                .await
                .expect("write");
            last_write.insert(g, r.log_id.index);
        }
    }
    // Every replica of every group holds exactly that group's keys.
    for n in &nodes {
        for g in GROUPS {
            let h = n.host.get(g).expect("group");
            let last = last_write[&g];
            assert!(h
                .shared
                .wait_applied(last, Duration::from_secs(10))
                .await
                .is_some());
            let state = h.shared.read();
            let keys: Vec<&String> = state.keys.keys().collect();
            assert_eq!(keys.len(), 5, "group {g} on a node: {keys:?}");
            assert!(keys.iter().all(|k| k.starts_with(&format!("/g{}/", g.0))));
        }
    }
    // One channel per peer address, whatever the number of groups: a node that leads any
    // group talks to both peers over exactly 2 channels; no node ever has more.
    for (i, n) in nodes.iter().enumerate() {
        let id = i as u64 + 1;
        let mut leads = false;
        for g in GROUPS {
            let h = n.host.get(g).expect("group");
            leads |= h.raft.current_leader().await == Some(id);
        }
        let channels = n.pool.channel_count();
        assert!(
            channels <= 2,
            "node {id} opened {channels} channels for 2 peers"
        );
        if leads {
            assert_eq!(
                channels, 2,
                "leader node {id} reaches its 2 peers over 2 channels"
            );
        }
    }
    for n in &nodes {
        n.host.shutdown().await;
    }
}
