//! A learner that joins after the leader purged its log catches up from a snapshot, even one
//! larger than a peer message may be: the snapshot travels in chunks.

use meridian_consensus::host::SNAPSHOT_BYTES_MAX;
use meridian_consensus::{GroupHandle, GroupNetworkFactory, Host, PeerPool, PeerService, Raft};
use meridian_proto::peer::peer_client::PeerClient;
use meridian_proto::peer::peer_server::PeerServer;
use meridian_proto::peer::RaftMessage;
use meridian_proto::PEER_MESSAGE_BYTES;
use meridian_storage::NodeStore;
use meridian_types::{Command, GroupId, PutOp};
use openraft::BasicNode;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const GROUP: GroupId = GroupId(7);
/// Values of 1 MiB; enough of them that the state exceeds one peer message.
const VALUE_BYTES: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_catches_up_from_a_snapshot_larger_than_a_message() {
    tokio::time::timeout(Duration::from_secs(180), run())
        .await
        .expect("the snapshot test finished in time");
}

/// A snapshot stream that announces `announced` bytes and sends `sent`.
async fn send_raw(addr: &str, announced: u64, sent: usize) -> Result<(), tonic::Status> {
    let vote = meridian_types::raft::Vote::new(9, 1);
    let meta = meridian_types::raft::SnapshotMeta::default();
    let head = bincode::serialize(&(vote, meta, announced)).expect("encode");
    let messages = vec![
        RaftMessage {
            group: GROUP.0,
            payload: head,
        },
        RaftMessage {
            group: GROUP.0,
            payload: vec![0; sent],
        },
    ];
    let mut client = PeerClient::connect(format!("http://{addr}"))
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    client
        .install_snapshot(futures::stream::iter(messages))
        .await
        .map(|_| ())
}

struct TestNode {
    _store: NodeStore,
    host: Arc<Host>,
    addr: String,
}

async fn node(id: u64, dir: &std::path::Path, config: Arc<openraft::Config>) -> TestNode {
    let listener = tokio::net::TcpListener::bind(format!("127.0.48.{id}:0"))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let store = NodeStore::open(&dir.join(format!("n{id}"))).expect("store");
    let host = Host::new();
    let (log, sm) = store.group(GROUP, 1000).expect("group");
    let shared = sm.shared();
    let net = GroupNetworkFactory::new(GROUP, PeerPool::new()).with_learners([(2, 0)]);
    let raft = Raft::new(id, config, net, log, sm).await.expect("raft");
    host.insert(GROUP, GroupHandle::new(raft, shared));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(PeerServer::new(PeerService::new(host.clone())))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    TestNode {
        _store: store,
        host,
        addr,
    }
}

async fn run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let timing = meridian_consensus::Timing {
        snapshot_logs_since_last: 1_000_000,
        max_in_snapshot_log_to_keep: 0,
        ..Default::default()
    };
    let config = timing.raft_config("test").expect("timing");
    let leader = node(1, dir.path(), config.clone()).await;
    let learner = node(2, dir.path(), config).await;
    let lh = leader.host.get(GROUP).expect("group");
    lh.raft
        .initialize(BTreeMap::from([(1, BasicNode::new(leader.addr.clone()))]))
        .await
        .expect("initialize");
    lh.raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.current_leader == Some(1), "leader")
        .await
        .expect("leader elected");

    let keys = PEER_MESSAGE_BYTES / VALUE_BYTES + 8;
    let mut last = 0;
    for i in 0..keys {
        let value = vec![b'a' + (i % 26) as u8; VALUE_BYTES];
        let op = PutOp::new(format!("/big/{i:04}"), value);
        last = meridian_consensus::host::write(&lh.raft, Command::Put(op))
            .await
            .expect("write")
            .log_id
            .index;
    }
    // Snapshot, then drop the whole log: the learner can only start from the snapshot.
    lh.raft.trigger().snapshot().await.expect("snapshot");
    lh.raft
        .wait(Some(Duration::from_secs(60)))
        .snapshot(meridian_types::raft::log_id(1, 1, last), "snapshot built")
        .await
        .expect("snapshot built");
    lh.raft.trigger().purge_log(last).await.expect("purge");
    lh.raft
        .wait(Some(Duration::from_secs(10)))
        .purged(Some(meridian_types::raft::log_id(1, 1, last)), "purged")
        .await
        .expect("log purged");

    lh.raft
        .add_learner(2, BasicNode::new(learner.addr.clone()), false)
        .await
        .expect("add learner");
    let h2 = learner.host.get(GROUP).expect("learner group");
    assert!(
        h2.shared
            .wait_applied(last, Duration::from_secs(120))
            .await
            .is_some(),
        "the learner reached index {last} from a snapshot of over {PEER_MESSAGE_BYTES} bytes"
    );
    {
        let state = h2.shared.read();
        assert_eq!(state.keys.len(), keys, "every key arrived");
        for (i, (key, v)) in state.keys.iter().enumerate() {
            assert_eq!(key, &format!("/big/{i:04}"));
            let value = &v.value;
            assert_eq!(value.len(), VALUE_BYTES, "{key}: whole value");
            assert!(value.iter().all(|&b| b == b'a' + (i % 26) as u8), "{key}");
        }
    }

    // A sender whose bytes do not add up to what it announced is refused, and says why.
    for (announced, sent, why) in [
        (10u64, 20usize, "announced 10 bytes and sent more"),
        (30, 20, "ended after 20 of its 30 bytes"),
        (SNAPSHOT_BYTES_MAX + 1, 0, "at most"),
    ] {
        let status = send_raw(&learner.addr, announced, sent)
            .await
            .expect_err("a broken snapshot is refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(why), "{}", status.message());
    }
    assert_eq!(
        h2.shared.read().keys.len(),
        keys,
        "the refusals lost nothing"
    );

    leader.host.shutdown().await;
    learner.host.shutdown().await;
}
