//! Lease expiry ignores the wall clock: a node process whose wall clock jumps a day forward
//! (libfaketime, monotonic clock untouched) expires a lease neither early nor late. And reads
//! by closed timestamps stop at a node whose wall clock is pushed beyond the maximum clock
//! offset from its peers', with an error that says so, and come back once it agrees again.

mod common;

use meridian_sdk::{pb, Client, Options};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wall_clock_jump_does_not_expire_a_lease_early() {
    common::watchdog(Duration::from_secs(300));
    let libfaketime = common::libfaketime();
    let dir = tempfile::tempdir().expect("tempdir");
    let ip = "127.0.45.1";
    let addr = format!("{ip}:{}", common::free_port(ip));
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "node_id = 1\nlisten = \"{addr}\"\ndata_dir = \"{}\"\n[[peers]]\nid = 1\naddress = \"{addr}\"\n",
            dir.path().join("data").display()
        ),
    )
    .expect("config");
    let offset = dir.path().join("faketime");
    std::fs::write(&offset, "+0\n").expect("offset file");
    let log = std::fs::File::create(dir.path().join("node.log")).expect("log");
    let mut node = Command::new(common::BIN)
        .args(["server", "--config"])
        .arg(&config)
        .env("MERIDIAN_SECURITY__MODE", "insecure")
        .env("LD_PRELOAD", libfaketime)
        .env("FAKETIME_TIMESTAMP_FILE", &offset)
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env("MERIDIAN_LOG", "warn,meridian_server::lease_driver=debug")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the node");
    let c = Client::new(
        vec![addr],
        Options {
            call_timeout: Duration::from_secs(30),
            ..Options::default()
        },
    )
    .expect("client");
    let ttl = Duration::from_secs(4);
    // Before the grant: the lease's clock starts when the grant is applied, not when its
    // reply reaches this task, so only a time taken before it bounds the expiry from below.
    let granted = Instant::now();
    let lease = c.lease_grant("/svc/", ttl).await.expect("grant").id;
    c.put_request(pb::PutRequest {
        key: b"/svc/x".to_vec(),
        value: b"v".to_vec(),
        lease,
        ..Default::default()
    })
    .await
    .expect("ephemeral put");
    // One second in, the node's wall clock jumps a day forward.
    tokio::time::sleep(Duration::from_secs(1)).await;
    std::fs::write(&offset, "+1d\n").expect("jump");
    let gone_at = loop {
        let kv = c.get("/svc/x").await.expect("get");
        if kv.is_none() {
            break granted.elapsed();
        }
        assert!(
            granted.elapsed() < ttl + Duration::from_secs(3),
            "never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = node.kill();
    let _ = node.wait();
    assert!(
        gone_at >= ttl,
        "expired {gone_at:?} after the grant: before its TTL"
    );
    // The jump really happened in the node: its expiry was logged with tomorrow's date.
    let text = std::fs::read_to_string(dir.path().join("node.log")).expect("log");
    let tomorrow = Command::new("date")
        .args(["-u", "-d", "tomorrow", "+%Y-%m-%d"])
        .output()
        .expect("date");
    let tomorrow = String::from_utf8_lossy(&tomorrow.stdout).trim().to_string();
    assert!(
        text.lines()
            .any(|l| l.contains("leases expired") && l.contains(&tomorrow)),
        "no expiry logged at the jumped wall-clock date {tomorrow}:\n{text}"
    );
}

/// Reads at `addr` alone (a fresh session each time), by closed timestamps.
async fn read_at(addr: &str) -> Result<Option<pb::KeyValue>, meridian_sdk::Error> {
    let c = Client::new(
        vec![addr.to_string()],
        Options {
            call_timeout: Duration::from_secs(3),
            ..Options::default()
        },
    )
    .expect("client");
    c.get("/k").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_clock_is_off_serves_no_read_by_timestamp() {
    common::watchdog(Duration::from_secs(300));
    let libfaketime = common::libfaketime();
    let offset_dir = tempfile::tempdir().expect("tempdir");
    let offset = offset_dir.path().join("faketime");
    std::fs::write(&offset, "+0\n").expect("offset file");
    let addrs = common::ProcCluster::addresses(3, 48);
    let cluster = common::ProcCluster::start_custom(
        addrs,
        |_| "[timestamps]\nprofile = \"local-writes\"\n".to_string(),
        |id| {
            if id == 3 {
                vec![
                    ("LD_PRELOAD".into(), libfaketime.into()),
                    (
                        "FAKETIME_TIMESTAMP_FILE".into(),
                        offset.display().to_string(),
                    ),
                    ("FAKETIME_NO_CACHE".into(), "1".into()),
                    ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
                ]
            } else {
                Vec::new()
            }
        },
    );
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    common::put_settled(&cluster.client(), "/k", "v", Duration::from_secs(30)).await;
    // Every node's clock agrees: node 3 serves the read. A fresh session may be served a view
    // from before the put (sequential consistency orders only a session's own operations), so
    // node 3 is read until it has applied the put; it must never refuse meanwhile.
    let start = Instant::now();
    loop {
        let kv = read_at(cluster.addr(3))
            .await
            .expect("node 3 reads while its clock agrees");
        if kv.map(|kv| kv.value) == Some(b"v".to_vec()) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "node 3 never showed the settled put /k"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Node 3 leads the group (so that its clock would stamp the group's commits).
    let at = |id: u64| {
        Client::new(vec![cluster.addr(id).to_string()], Options::default()).expect("client")
    };
    let group = at(1).status(false).await.expect("status").groups[0].group;
    if leader != 3 {
        at(leader)
            .transfer_leader(group, 3, Duration::from_secs(20))
            .await
            .expect("hand the group to node 3");
    }

    // Node 3's wall clock jumps a minute ahead: within a few probes it refuses, saying why.
    std::fs::write(&offset, "+60\n").expect("jump");
    let start = Instant::now();
    let refusal = loop {
        match read_at(cluster.addr(3)).await {
            Err(e) => break e.to_string(),
            Ok(_) => {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "node 3 still serves reads by timestamp with its clock a minute ahead"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert!(
        refusal.contains("maximum clock offset") && refusal.contains("NTP"),
        "{refusal}"
    );
    // Its peers' clocks agree with each other: they keep serving.
    let kv = read_at(cluster.addr(1)).await.expect("node 1 reads");
    assert_eq!(kv.map(|kv| kv.value), Some(b"v".to_vec()));
    // And node 3 hands its leadership to one of them: its clock no longer stamps the group.
    let start = Instant::now();
    let new_leader = loop {
        if let Ok(s) = at(1).status(false).await {
            let l = s.groups[0].leader;
            if l != 0 && l != 3 {
                break l;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "node 3 still leads with its clock a minute ahead"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    common::put_settled(&at(1), "/k2", "w", Duration::from_secs(30)).await;
    eprintln!("node {new_leader} took the group over from node 3");
    // While node 3 still led, its clock was held to the monotonic clock's pace: it stamped no
    // commit and closed no timestamp a minute ahead, so the group does not commit in the
    // future now (without the hold, every later write commits above node 3's promises,
    // some 60 s ahead of real time, for a minute).
    let put = at(1).put("/k3", "x").await.expect("put");
    let stamped = put
        .header
        .and_then(|h| h.timestamp)
        .expect("a commit timestamp")
        .physical_us;
    let real = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_micros(),
    )
    .expect("µs fit");
    assert!(
        stamped <= real + 2_000_000,
        "a write after node 3's clock jump commits {} ms ahead of real time",
        (stamped - real) / 1_000
    );

    // Back in step: node 3 serves again.
    std::fs::write(&offset, "+0\n").expect("back");
    let start = Instant::now();
    loop {
        match read_at(cluster.addr(3)).await {
            Ok(kv) => {
                assert_eq!(kv.map(|kv| kv.value), Some(b"v".to_vec()));
                break;
            }
            Err(e) => assert!(
                start.elapsed() < Duration::from_secs(30),
                "node 3 still refuses after its clock came back: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("refused while off: {refusal}");
}
