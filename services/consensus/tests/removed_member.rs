//! A node removed from a group cannot talk its way back in (issue 14, docs/security.md): three
//! nodes over real sockets with mTLS (each peer named by its certificate), one group; a node that
//! does not lead is removed from the group's membership, and a Raft message it sent while a
//! member — replayed now with its still-valid certificate — is refused with `PermissionDenied`
//! at every remaining member, counted, and the group keeps working without it.

use meridian_consensus::admission::Admission;
use meridian_consensus::Timing;
use meridian_consensus::{GroupHandle, GroupNetworkFactory, Host, PeerPool, PeerService, Raft};
use meridian_proto::peer::peer_client::PeerClient;
use meridian_proto::peer::peer_server::PeerServer;
use meridian_proto::peer::RaftMessage;
use meridian_storage::NodeStore;
use meridian_tls::gen;
use meridian_tls::{NodeTls, TlsFiles};
use meridian_types::{Command, GroupId, PutOp, TypeConfig};
use openraft::async_runtime::WatchReceiver;
use openraft::raft::VoteRequest;
use openraft::BasicNode;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Endpoint;
use tonic::Code;

const GROUP: GroupId = GroupId(1);

struct TestNode {
    _store: NodeStore,
    host: Arc<Host>,
    admission: Arc<Admission>,
    tls: Arc<NodeTls>,
    addr: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_members_replayed_vote_is_refused() {
    tokio::time::timeout(Duration::from_secs(120), run())
        .await
        .expect("the removed-member test finished in time");
}

/// `node`'s vote request for `GROUP`, at `term`, as it sends it on the wire.
fn vote_of(node: u64, term: u64) -> RaftMessage {
    let req: VoteRequest<TypeConfig> = VoteRequest::new(openraft::Vote::new(term, node), None);
    RaftMessage {
        group: GROUP.0,
        payload: bincode::serialize(&req).expect("encode"),
    }
}

async fn send_as(from: &TestNode, to: &TestNode, msg: RaftMessage) -> Result<(), tonic::Status> {
    let names = HashMap::from([(to.addr.clone(), id_of(to))]);
    let dialer = from.tls.dialer(names);
    let endpoint = Endpoint::from_shared(format!("http://{}", to.addr))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(3));
    PeerClient::new(dialer.channel(endpoint, &to.addr))
        .vote(msg)
        .await
        .map(|_| ())
}

fn id_of(n: &TestNode) -> u64 {
    n.addr
        .split(':')
        .next()
        .and_then(|ip| ip.rsplit('.').next())
        .and_then(|last| last.parse().ok())
        .expect("node address 127.0.51.ID")
}

async fn run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = gen::ca("removed-member test CA").expect("ca");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.cert).expect("write ca");
    let mut listeners = Vec::new();
    let mut members = BTreeMap::new();
    let mut names = HashMap::new();
    for id in 1..=3u64 {
        let ip = format!("127.0.51.{id}");
        let l = tokio::net::TcpListener::bind((ip.as_str(), 0))
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        members.insert(id, BasicNode::new(addr.clone()));
        names.insert(addr, id);
        listeners.push(l);
    }
    let config = Timing::default().raft_config("test").expect("timing");
    let mut nodes = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let id = i as u64 + 1;
        let addr = listener.local_addr().expect("addr").to_string();
        let pem = gen::node(&ca, id, &[gen::host_of(&addr)]).expect("node cert");
        let (cert, key) = (
            dir.path().join(format!("n{id}.pem")),
            dir.path().join(format!("n{id}.key")),
        );
        std::fs::write(&cert, &pem.cert).expect("write cert");
        std::fs::write(&key, &pem.key).expect("write key");
        let tls = NodeTls::load(
            TlsFiles {
                ca: ca_file.clone(),
                cert,
                key,
            },
            id,
        )
        .expect("node tls");
        let store = NodeStore::open(&dir.path().join(format!("n{id}"))).expect("store");
        let host = Host::new();
        let pool = PeerPool::with_dialer(HashMap::new(), Some(tls.dialer(names.clone())));
        let (log, sm) = store.group(GROUP, 1000).expect("group");
        let shared = sm.shared();
        let raft = Raft::new(
            id,
            config.clone(),
            GroupNetworkFactory::new(GROUP, pool),
            log,
            sm,
        )
        .await
        .expect("raft");
        host.insert(GROUP, GroupHandle::new(raft, shared));
        let admission = Arc::new(Admission::nodes(1..=3));
        let svc = PeerServer::new(PeerService::new(host.clone()).admit(admission.clone()));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(meridian_tls::incoming(listener, tls.clone())),
        );
        nodes.push(TestNode {
            _store: store,
            host,
            admission,
            tls,
            addr,
        });
    }
    let raft1 = nodes[0].host.get(GROUP).expect("group").raft;
    raft1.initialize(members).await.expect("initialize");
    raft1
        .wait(Some(Duration::from_secs(20)))
        .metrics(|m| m.current_leader.is_some(), "a leader")
        .await
        .expect("a leader is elected over mTLS");

    // The node to remove: one that does not lead (node 3, or node 2 if 3 leads), so the leader
    // removes another node, not itself.
    let leader = raft1.current_leader().await.expect("leader");
    let gone = if leader == 3 { 2 } else { 3 };
    let stay: Vec<&TestNode> = nodes.iter().filter(|n| id_of(n) != gone).collect();
    let from = &nodes[(gone - 1) as usize];

    // While it is a member, its vote (of an old term) passes admission: a member answers it
    // (refusing the stale term inside Raft, in an OK response).
    let old = vote_of(gone, 0);
    for to in &stay {
        send_as(from, to, old.clone())
            .await
            .expect("a member's vote is admitted");
    }

    let lraft = nodes[(leader - 1) as usize]
        .host
        .get(GROUP)
        .expect("group")
        .raft;
    lraft
        .change_membership(
            stay.iter().map(|n| id_of(n)).collect::<BTreeSet<u64>>(),
            false,
        )
        .await
        .expect("the node removed");
    for n in &stay {
        let h = n.host.get(GROUP).expect("group");
        let start = std::time::Instant::now();
        while h.members().contains(&gone) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "node {} still counts node {gone} a member",
                id_of(n)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // The same vote, replayed with the removed node's valid certificate, and a fresh one of a
    // higher term: refused by both remaining members, before Raft sees them, and counted.
    let refusal = format!("node {gone} is not a member of group 1");
    for to in &stay {
        let before = to.admission.refused();
        for msg in [old.clone(), vote_of(gone, 1_000)] {
            let e = send_as(from, to, msg)
                .await
                .expect_err("a removed member's vote");
            assert_eq!(e.code(), Code::PermissionDenied, "{e}");
            assert!(e.message().contains(&refusal), "{e}");
        }
        assert_eq!(to.admission.refused(), before + 2, "each refusal counted");
    }

    // The group goes on without it, its term not disturbed.
    let term = lraft.metrics().borrow_watched().current_term;
    for i in 0..5 {
        meridian_consensus::host::write(
            &lraft,
            Command::Put(PutOp::new(format!("/after/{i}"), "v")),
        )
        .await
        .expect("a write after the removal");
    }
    assert_eq!(
        lraft.metrics().borrow_watched().current_term,
        term,
        "no new term"
    );
}
