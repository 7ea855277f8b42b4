//! mTLS between nodes and for clients (docs/security.md), through real sockets and real server
//! processes on 127.0.50.x: a 3-node cluster whose certificates its own CA issued serves
//! clients that verify it; refuses clients that speak no TLS, that trust another CA or that
//! present a certificate of another CA; refuses peer traffic from a connection with no node
//! certificate, with a node certificate of another id, or with a self-signed one; refuses a
//! whole impostor node started with a certificate of a node id not in the topology, and keeps
//! working; and rotates to a new CA without downtime (SIGHUP), one step at a time.

mod common;

use common::ProcCluster;
use meridian_proto::io::Dialer;
use meridian_proto::kv::kv_client::KvClient;
use meridian_proto::kv::GetRequest;
use meridian_proto::peer::forward_client::ForwardClient;
use meridian_proto::peer::peer_client::PeerClient;
use meridian_proto::peer::{ProposeRequest, RaftMessage, ReadIndexRequest};
use meridian_sdk::{Client, Consistency, Error, Options};
use meridian_tls::gen::{self, Pem};
use meridian_tls::ClientTls;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

fn write(dir: &Path, name: &str, pem: &Pem) -> (PathBuf, PathBuf) {
    let c = dir.join(format!("{name}.pem"));
    let k = dir.join(format!("{name}.key"));
    std::fs::write(&c, &pem.cert).expect("write cert");
    std::fs::write(&k, &pem.key).expect("write key");
    (c, k)
}

fn options(ca: &Path, identity: Option<(&Path, &Path)>) -> Options {
    Options {
        call_timeout: Duration::from_secs(5),
        rpc_timeout: Duration::from_secs(3),
        ..Options::default()
    }
    .with_tls(ca, identity)
    .expect("client TLS")
}

fn client(addr: &str, options: Options) -> Client {
    Client::new(vec![addr.to_string()], options).expect("client")
}

/// A channel to `addr` that presents `identity` and trusts `ca`, as a peer would open it.
fn peer_channel(addr: &str, ca: &Path, identity: Option<(&Path, &Path)>) -> Channel {
    let dialer: Dialer = ClientTls::load(ca, identity).expect("tls").dialer();
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(3));
    dialer.channel(endpoint, addr)
}

async fn vote(ch: Channel) -> Result<(), tonic::Status> {
    PeerClient::new(ch)
        .vote(RaftMessage {
            group: 1,
            payload: vec![0; 8],
        })
        .await
        .map(|_| ())
}

async fn refused_count(addr: &str, opts: &Options) -> u64 {
    client(addr, opts.clone())
        .status(false)
        .await
        .expect("status")
        .auth_refused
}

async fn total_refused(c: &ProcCluster, opts: &Options) -> u64 {
    let mut n = 0;
    for a in &c.addrs {
        n += refused_count(a, opts).await;
    }
    n
}

fn tls_config(ca: &Path, dir: &Path, id: u64) -> String {
    format!(
        "[security]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        ca.display(),
        dir.join(format!("node-{id}.pem")).display(),
        dir.join(format!("node-{id}.key")).display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_and_clients_speak_mtls_and_refuse_strangers() {
    common::watchdog(Duration::from_secs(400));
    let tls = tempfile::tempdir().expect("tempdir");
    let dir = tls.path();
    let ca = gen::ca("test cluster CA").expect("ca");
    let (ca_file, _) = write(dir, "ca", &ca);
    let addrs = ProcCluster::addresses(3, 50);
    for (i, a) in addrs.iter().enumerate() {
        let id = i as u64 + 1;
        write(
            dir,
            &format!("node-{id}"),
            &gen::node(&ca, id, &[gen::host_of(a)]).expect("node cert"),
        );
    }
    let mut c = ProcCluster::start_custom(
        addrs.clone(),
        |id| tls_config(&ca_file, dir, id),
        |_| Vec::new(),
    );
    let good = options(&ca_file, None);
    c.options = good.clone();
    c.wait_leader(Duration::from_secs(60)).await;
    c.client().put("/a", "1").await.expect("a write over mTLS");
    let a1 = addrs[0].clone();

    // Clients: verified against the CA; a stranger's CA or certificate is refused at once.
    let other = gen::ca("another CA").expect("other ca");
    let (other_ca, _) = write(dir, "other-ca", &other);
    match client(&a1, options(&other_ca, None)).get("/a").await {
        Err(Error::Other { code, message }) => {
            assert_eq!(code, Code::Unauthenticated);
            assert!(message.contains("certificate"), "{message}");
        }
        other => panic!("a router the client cannot verify: {other:?}"),
    }
    let (oc, ok) = write(
        dir,
        "other-client",
        &gen::client(&other, "x").expect("cert"),
    );
    assert!(
        client(&a1, options(&ca_file, Some((&oc, &ok))))
            .get("/a")
            .await
            .is_err(),
        "a client certificate of another CA is refused"
    );
    let plain = Options {
        call_timeout: Duration::from_secs(2),
        rpc_timeout: Duration::from_secs(1),
        ..Options::default()
    };
    assert!(
        client(&a1, plain).get("/a").await.is_err(),
        "a client without TLS is not served"
    );
    // A client certificate of the cluster's CA is fine (tokens, not certificates, authorize).
    let (cc, ck) = write(dir, "client", &gen::client(&ca, "ops").expect("cert"));
    client(&a1, options(&ca_file, Some((&cc, &ck))))
        .get("/a")
        .await
        .expect("a client certificate of the cluster's CA");

    // Only a router may mark a request proxied (the mark chooses the region whose residency
    // policies apply): from a client, even one with a certificate of the cluster's CA, it is
    // refused and counted; from a node's connection it is honoured.
    let proxied_get = |ch: Channel| async move {
        let mut req = tonic::Request::new(GetRequest {
            key: b"/a".to_vec(),
            ..Default::default()
        });
        req.metadata_mut()
            .insert(meridian_proto::PROXIED, "test".parse().expect("ascii"));
        KvClient::new(ch).get(req).await
    };
    let before = total_refused(&c, &good).await;
    for identity in [Some((cc.as_path(), ck.as_path())), None] {
        let e = proxied_get(peer_channel(&a1, &ca_file, identity))
            .await
            .expect_err("a client marking its request proxied");
        assert_eq!(e.code(), Code::PermissionDenied, "{e}");
        assert!(e.message().contains("meridian-proxied"), "{e}");
    }
    assert!(
        total_refused(&c, &good).await >= before + 2,
        "both refusals are counted"
    );
    let n1 = (dir.join("node-1.pem"), dir.join("node-1.key"));
    let got = proxied_get(peer_channel(&a1, &ca_file, Some((&n1.0, &n1.1))))
        .await
        .expect("a node may mark a request proxied");
    assert_eq!(got.into_inner().kv.expect("/a").value, b"1".to_vec());

    // Peers: no node certificate, another node's id, a self-signed one.
    let before = total_refused(&c, &good).await;
    let e = vote(peer_channel(&a1, &ca_file, Some((&cc, &ck))))
        .await
        .expect_err("a client certificate is no node's");
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    let e = vote(peer_channel(&a1, &ca_file, None))
        .await
        .expect_err("no certificate");
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    let (n9c, n9k) = write(dir, "node-9", &gen::node(&ca, 9, &[]).expect("cert"));
    let ch = peer_channel(&a1, &ca_file, Some((&n9c, &n9k)));
    let e = vote(ch.clone())
        .await
        .expect_err("node 9 is not in the topology");
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    assert!(e.message().contains("node 9"), "{e}");
    let e = PeerClient::new(ch.clone())
        .read_index(ReadIndexRequest { group: 1 })
        .await
        .expect_err("read index from a stranger");
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    let e = ForwardClient::new(ch)
        .propose(ProposeRequest {
            group: 1,
            command: Vec::new(),
            ..Default::default()
        })
        .await
        .expect_err("a forwarded write from a stranger");
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    let (ssc, ssk) = write(
        dir,
        "self-signed-2",
        &gen::self_signed_node(2, &[]).expect("cert"),
    );
    assert!(
        vote(peer_channel(&a1, &ca_file, Some((&ssc, &ssk))))
            .await
            .is_err(),
        "a self-signed node certificate"
    );
    let after = total_refused(&c, &good).await;
    assert!(
        after >= before + 6,
        "every refusal is counted: {before} before, {after} after"
    );

    // An impostor node: id 4, a certificate of the cluster's CA naming node 4, its own idea
    // of the cluster (nodes 1-4). It campaigns at nodes 1-3, who are not fooled.
    let ip4 = "127.0.50.4";
    let a4 = format!("{ip4}:{}", common::free_port(ip4));
    let (i4c, i4k) = write(
        dir,
        "node-4",
        &gen::node(&ca, 4, &[ip4.to_string()]).expect("cert"),
    );
    let data4 = dir.join("impostor");
    let peers: String = addrs
        .iter()
        .chain(std::iter::once(&a4))
        .enumerate()
        .map(|(i, a)| format!("[[peers]]\nid = {}\naddress = \"{a}\"\n", i + 1))
        .collect();
    let cfg4 = dir.join("impostor.toml");
    std::fs::write(
        &cfg4,
        format!(
            "node_id = 4\nlisten = \"{a4}\"\ndata_dir = \"{}\"\nregion = \"test\"\n{peers}\
             [security]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            data4.display(),
            ca_file.display(),
            i4c.display(),
            i4k.display()
        ),
    )
    .expect("impostor config");
    let before = total_refused(&c, &good).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let mut impostor = std::process::Command::new(common::BIN)
        .args(["server", "--config"])
        .arg(&cfg4)
        .env("MERIDIAN_LOG", "warn")
        .env("MERIDIAN_SECURITY__MODE", "insecure")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("impostor.log")).expect("log"))
        .spawn()
        .expect("start the impostor");
    let start = Instant::now();
    loop {
        let now = total_refused(&c, &good).await;
        if now > before {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no peer refused the impostor within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for i in 0..10 {
        c.client()
            .put(&format!("/during-impostor/{i}"), "v")
            .await
            .expect("the cluster keeps working");
    }
    assert_eq!(c.wait_leader(Duration::from_secs(10)).await, leader);
    let s = client(&a1, good.clone())
        .status(false)
        .await
        .expect("status");
    for g in &s.groups {
        assert!(
            g.members.iter().all(|m| m.node != 4),
            "node 4 joined group {}: {g:?}",
            g.group
        );
    }
    let _ = impostor.kill();
    let _ = impostor.wait();

    // Rotation to a new CA, without downtime: every node trusts both CAs (SIGHUP), then each
    // gets a certificate of the new one (SIGHUP), then clients of the new CA are served.
    let ca2 = gen::ca("rotated CA").expect("ca2");
    let (ca2_only, _) = write(dir, "ca2", &ca2);
    std::fs::write(&ca_file, format!("{}{}", ca.cert, ca2.cert)).expect("bundle");
    for id in 1..=3 {
        c.signal(id, "-HUP");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (i, a) in addrs.iter().enumerate() {
        let id = i as u64 + 1;
        write(
            dir,
            &format!("node-{id}"),
            &gen::node(&ca2, id, &[gen::host_of(a)]).expect("node cert"),
        );
    }
    assert!(
        client(&a1, options(&ca2_only, None))
            .get("/a")
            .await
            .is_err(),
        "before the reload the old certificate is served"
    );
    for id in 1..=3 {
        c.signal(id, "-HUP");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let new = options(&ca2_only, None);
    for a in &addrs {
        client(a, new.clone())
            .get_with("/a", Consistency::Linearizable)
            .await
            .unwrap_or_else(|e| panic!("{a} serves its new certificate: {e}"));
    }
    // New peer connections use the new certificates: a restarted node rejoins and serves.
    c.options = new.clone();
    c.restart(1);
    let start = Instant::now();
    loop {
        match client(&a1, new.clone()).put("/after-rotation", "v").await {
            Ok(_) => break,
            Err(e) if start.elapsed() > Duration::from_secs(30) => {
                panic!("node 1 after a restart with the rotated certificate: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let v = client(&addrs[2], new)
        .get_with("/after-rotation", Consistency::Linearizable)
        .await
        .expect("read")
        .kv
        .expect("present");
    assert_eq!(v.value, b"v");
}
