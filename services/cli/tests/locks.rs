//! Leases, ephemeral keys, locks with fencing, lock-delay, election and their bad input, on
//! a real node in this process (fjall, Raft, gRPC over loopback).

mod common;

use meridian_sdk::{pb, Client, LockOptions, Options, Session, SessionEvent};
use std::time::{Duration, Instant};

async fn node(ip: &str) -> (tempfile::TempDir, meridian_server::Node, Client) {
    let (dir, node, addr) = common::one_node(ip, |_| {}).await;
    let client = Client::new(vec![addr], Options::default()).expect("client");
    (dir, node, client)
}

fn rule(e: &meridian_sdk::Error) -> String {
    e.rule().unwrap_or_default().to_string()
}

/// An ephemeral key lives while its lease is kept alive, goes with it — not before the TTL,
/// and within the TTL plus a bounded slack once keepalives stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_keys_expire_with_their_lease_not_before() {
    common::watchdog(Duration::from_secs(300));
    let (_dir, node, c) = node("127.0.44.1").await;
    let ttl = Duration::from_millis(1_500);
    let lease = c.lease_grant("/svc/", ttl).await.expect("grant");
    let granted = Instant::now();
    let mut put = pb::PutRequest {
        key: b"/svc/a".to_vec(),
        value: b"10.0.0.1".to_vec(),
        lease: lease.id,
        ..Default::default()
    };
    c.put_request(put.clone()).await.expect("ephemeral put");
    // Kept alive for 3 TTLs: still there.
    while granted.elapsed() < ttl * 3 {
        let r = c
            .lease_keep_alive(&[lease.id], Duration::from_secs(2))
            .await
            .expect("keepalive");
        assert!(r.results[0].found);
        tokio::time::sleep(ttl / 4).await;
    }
    assert!(c.get("/svc/a").await.expect("get").is_some());
    let ttl_info = c.lease_time_to_live(lease.id, true).await.expect("ttl");
    assert_eq!(ttl_info.keys, vec!["/svc/a".to_string()]);
    assert!(
        ttl_info.remaining_ms > 0 && ttl_info.remaining_ms <= 1_500,
        "{ttl_info:?}"
    );
    // Keepalives stop: the key stays at least a TTL after the last one was sent.
    let last = Instant::now();
    c.lease_keep_alive(&[lease.id], Duration::from_secs(2))
        .await
        .expect("last keepalive");
    loop {
        let present = c.get("/svc/a").await.expect("get").is_some();
        if !present {
            break;
        }
        assert!(
            last.elapsed() < ttl + Duration::from_secs(2),
            "not expired in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(last.elapsed() >= ttl, "expired early: {:?}", last.elapsed());
    // The lease is gone: keepalive says so, and a put with it is refused, changing nothing.
    let r = c
        .lease_keep_alive(&[lease.id], Duration::from_secs(2))
        .await
        .expect("keepalive");
    assert!(!r.results[0].found);
    put.key = b"/svc/b".to_vec();
    let e = c
        .put_request(put)
        .await
        .expect_err("put with an expired lease");
    assert_eq!(rule(&e), "lease_not_found", "{e}");
    assert!(c.get("/svc/b").await.expect("get").is_none());
    node.shutdown().await;
}

/// Two sessions contend: grants in order, tokens strictly increase, check_fence tells the
/// current holder from an old one, a try on a taken lock says busy, a waiter times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_grant_in_order_with_fencing() {
    common::watchdog(Duration::from_secs(300));
    let (_dir, node, c) = node("127.0.44.2").await;
    let a = Session::new(c.clone(), Duration::from_secs(3));
    let b = Session::new(c.clone(), Duration::from_secs(3));
    let ga = a
        .lock("/locks/job", LockOptions::default())
        .await
        .expect("acquire")
        .expect("granted");
    let try_b = b
        .lock(
            "/locks/job",
            LockOptions {
                wait: None,
                ..LockOptions::default()
            },
        )
        .await
        .expect("try");
    assert!(try_b.is_none(), "a try on a held lock must say busy");
    let timed_out = b
        .lock(
            "/locks/job",
            LockOptions {
                wait: Some(Duration::from_millis(300)),
                ..LockOptions::default()
            },
        )
        .await;
    assert!(timed_out.is_err(), "the wait must end with an error");
    let fence = c
        .check_fence("/locks/job", ga.token())
        .await
        .expect("fence");
    assert!(fence.valid);
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move { b.lock("/locks/job", LockOptions::default()).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "granted while held");
    let old = ga.token();
    assert!(ga.release().await.expect("release"));
    let gb = waiter
        .await
        .expect("join")
        .expect("acquire")
        .expect("granted");
    assert!(gb.token().revision > old.revision, "tokens must increase");
    assert!(!c.check_fence("/locks/job", old).await.expect("fence").valid);
    assert!(
        c.check_fence("/locks/job", gb.token())
            .await
            .expect("fence")
            .valid
    );
    // Releasing what is no longer held is a clear error.
    let e = c
        .lock_release("/locks/job/00000000000000000001")
        .await
        .expect_err("not held");
    assert_eq!(rule(&e), "lock_not_held", "{e}");
    a.close().await.expect("close");
    b.close().await.expect("close");
    node.shutdown().await;
}

/// A holder whose session is lost: the SDK says so before the server frees the lock, and the
/// lock-delay keeps it unavailable a while after expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_session_is_known_first_and_lock_delay_holds() {
    common::watchdog(Duration::from_secs(300));
    let (_dir, node, c) = node("127.0.44.3").await;
    // A session on an endpoint that will stop answering: a second client to the same node
    // whose keepalives we stop by closing the session's keeper (drop), simulated by a TTL
    // lease we never keep alive.
    let ttl = Duration::from_millis(1_200);
    // Before the grant: the lease's clock starts when the grant is applied, which the reply
    // can trail by any scheduling delay (a bound taken after it would have no slack).
    let sent = Instant::now();
    let lease = c.lease_grant("/locks/", ttl).await.expect("grant");
    let r = c
        .lock_acquire(pb::LockAcquireRequest {
            name: "/locks/d".into(),
            lease: lease.id,
            wait_ms: 1_000,
            lock_delay_ms: 1_000,
            ..Default::default()
        })
        .await
        .expect("acquire");
    assert!(r.acquired);
    let s = Session::new(c.clone(), Duration::from_secs(5));
    let waiter = {
        let s = s.clone();
        tokio::spawn(async move {
            let g = s
                .lock(
                    "/locks/d",
                    LockOptions {
                        wait: Some(Duration::from_secs(20)),
                        ..LockOptions::default()
                    },
                )
                .await;
            (Instant::now(), g)
        })
    };
    let (at, g) = waiter.await.expect("join");
    let g = g.expect("acquire").expect("granted");
    let waited = at - sent;
    assert!(
        waited >= ttl + Duration::from_millis(1_000),
        "granted {waited:?} after the holder's grant: before TTL + lock-delay"
    );
    assert!(
        waited < ttl + Duration::from_millis(1_000) + Duration::from_secs(3),
        "{waited:?}"
    );
    assert!(
        c.check_fence("/locks/d", g.token())
            .await
            .expect("fence")
            .valid
    );
    assert!(
        !c.check_fence("/locks/d", r.token.expect("token"))
            .await
            .expect("fence")
            .valid
    );
    // The SDK session: lost is reported at its own deadline, which precedes the server's.
    let short = Session::new(c.clone(), Duration::from_secs(1));
    short.lease_for("/locks/").await.expect("lease");
    let deadline = short.deadline().expect("deadline");
    assert!(deadline <= tokio::time::Instant::now() + Duration::from_secs(1));
    node.shutdown().await;
    let ev = tokio::time::timeout(Duration::from_secs(5), short.lost())
        .await
        .expect("lost reported");
    assert!(matches!(ev, SessionEvent::Lost { .. }));
    assert!(tokio::time::Instant::now() >= deadline);
}

/// Election: the first campaigner leads, observers see the change when it resigns, proclaim
/// changes the value; read-write locks and semaphores share as they should.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_and_shared_locks() {
    common::watchdog(Duration::from_secs(300));
    let (_dir, node, c) = node("127.0.44.4").await;
    let a = Session::new(c.clone(), Duration::from_secs(5));
    let b = Session::new(c.clone(), Duration::from_secs(5));
    let la = a
        .campaign("/elect/db", b"node-a", Duration::from_secs(5))
        .await
        .expect("a leads");
    let mut obs = c.observe("/elect/db").await.expect("observe");
    let first = obs.message().await.expect("stream").expect("first");
    assert_eq!(first.value, b"node-a");
    let bt = {
        let b = b.clone();
        tokio::spawn(async move {
            b.campaign("/elect/db", b"node-b", Duration::from_secs(20))
                .await
        })
    };
    la.proclaim(b"node-a2").await.expect("proclaim");
    let next = obs.message().await.expect("stream").expect("next");
    assert_eq!(next.value, b"node-a2");
    la.release().await.expect("resign");
    let lb = bt.await.expect("join").expect("b leads");
    let mut seen = obs.message().await.expect("stream").expect("change");
    while seen.value != b"node-b" {
        seen = obs.message().await.expect("stream").expect("change");
    }
    assert_eq!(c.leader("/elect/db").await.expect("leader").key, lb.key());
    // Semaphore of 2: two holders, the third waits.
    let sem = |wait| LockOptions {
        kind: pb::LockKind::Semaphore,
        limit: 2,
        wait,
        ..LockOptions::default()
    };
    let s1 = a
        .lock("/locks/sem", sem(None))
        .await
        .expect("s1")
        .expect("held");
    let _s2 = b
        .lock("/locks/sem", sem(None))
        .await
        .expect("s2")
        .expect("held");
    let c3 = Session::new(c.clone(), Duration::from_secs(5));
    assert!(c3
        .lock("/locks/sem", sem(None))
        .await
        .expect("s3")
        .is_none());
    s1.release().await.expect("release");
    assert!(c3
        .lock("/locks/sem", sem(None))
        .await
        .expect("s3")
        .is_some());
    // Read-write: two readers together, a writer waits.
    let rw = |mode, wait| LockOptions {
        kind: pb::LockKind::ReadWrite,
        mode,
        wait,
        ..LockOptions::default()
    };
    let r1 = a
        .lock("/locks/rw", rw(pb::LockMode::Shared, None))
        .await
        .expect("r1")
        .expect("held");
    let r2 = b
        .lock("/locks/rw", rw(pb::LockMode::Shared, None))
        .await
        .expect("r2")
        .expect("held");
    assert!(c3
        .lock("/locks/rw", rw(pb::LockMode::Exclusive, None))
        .await
        .expect("w")
        .is_none());
    r1.release().await.expect("release");
    r2.release().await.expect("release");
    assert!(c3
        .lock("/locks/rw", rw(pb::LockMode::Exclusive, None))
        .await
        .expect("w")
        .is_some());
    node.shutdown().await;
}

/// Bad input: unknown lease, TTL 0 or over the maximum, N = 0, unknown kind — each a clear
/// error, nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_and_lock_bad_input() {
    common::watchdog(Duration::from_secs(300));
    let (_dir, node, c) = node("127.0.44.5").await;
    let before = c.lease_list("").await.expect("list").ids;
    for ttl in [Duration::ZERO, Duration::from_secs(86_400 * 2)] {
        let e = c.lease_grant("/x/", ttl).await.expect_err("bad ttl");
        assert_eq!(rule(&e), "lease_ttl", "{e}");
    }
    let e = c
        .lease_grant("no-slash", Duration::from_secs(5))
        .await
        .expect_err("bad path");
    assert_eq!(rule(&e), "key_leading_slash", "{e}");
    let e = c
        .lease_revoke(1 << 48 | 12345)
        .await
        .expect_err("unknown lease");
    assert_eq!(rule(&e), "lease_not_found", "{e}");
    let e = c
        .lease_time_to_live(1 << 48 | 12345, false)
        .await
        .expect_err("unknown lease");
    assert_eq!(rule(&e), "lease_not_found", "{e}");
    let lease = c
        .lease_grant("/x/", Duration::from_secs(5))
        .await
        .expect("grant")
        .id;
    let acquire = |name: &str, kind, limit, lease| pb::LockAcquireRequest {
        name: name.into(),
        lease,
        kind,
        limit,
        ..Default::default()
    };
    let e = c
        .lock_acquire(acquire("/x/l", pb::LockKind::Semaphore as i32, 0, lease))
        .await
        .expect_err("N = 0");
    assert_eq!(rule(&e), "semaphore_zero", "{e}");
    let e = c
        .lock_acquire(acquire("/x/l", 7, 0, lease))
        .await
        .expect_err("kind");
    assert_eq!(rule(&e), "lock_kind", "{e}");
    let e = c
        .lock_acquire(acquire("/x/l", 0, 0, 1 << 48 | 999))
        .await
        .expect_err("unknown lease");
    assert_eq!(rule(&e), "lease_not_found", "{e}");
    let e = c
        .lock_acquire(acquire("x//l", 0, 0, lease))
        .await
        .expect_err("bad name");
    assert!(rule(&e).starts_with("key_"), "{e}");
    let e = c
        .lock_release("/x/l/00000000000000000042")
        .await
        .expect_err("not held");
    assert_eq!(rule(&e), "lock_not_held", "{e}");
    let e = c
        .lease_keep_alive(&[], Duration::from_secs(1))
        .await
        .expect_err("empty");
    assert_eq!(rule(&e), "keepalive_ids", "{e}");
    // Nothing changed but the one lease granted.
    let after = c.lease_list("").await.expect("list").ids;
    assert_eq!(after.len(), before.len() + 1);
    let range = pb::RangeRequest {
        prefix: b"/x/".to_vec(),
        ..Default::default()
    };
    assert!(c
        .range(range, meridian_sdk::Consistency::Linearizable)
        .await
        .expect("range")
        .kvs
        .is_empty());
    node.shutdown().await;
}

/// Lease expiry runs on the injected monotonic clock and nothing else: with the clock held
/// still, real (wall and monotonic) time passing far beyond the TTL expires nothing; moving
/// the injected clock past the TTL does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_follows_only_the_injected_clock() {
    common::watchdog(Duration::from_secs(300));
    let dir = tempfile::tempdir().expect("tempdir");
    let ip = "127.0.44.6";
    let addr = format!("{ip}:{}", common::free_port(ip));
    let cfg = meridian_server::NodeConfig {
        node_id: 1,
        listen: addr.clone(),
        advertise: Some(addr.clone()),
        data_dir: dir.path().join("n1"),
        bootstrap: true,
        ..meridian_server::NodeConfig::default()
    };
    let topology = meridian_topology::Topology::single_region("local", &[(1, addr.clone())]);
    let clock = meridian_locks::ManualClock::default();
    let node = meridian_server::Node::start_with_clock(
        cfg,
        std::sync::Arc::new(topology),
        std::sync::Arc::new(clock.clone()),
    )
    .await
    .expect("start");
    let c = Client::new(vec![addr], Options::default()).expect("client");
    let lease = loop {
        match c.lease_grant("/e/", Duration::from_secs(1)).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    c.put_request(pb::PutRequest {
        key: b"/e/k".to_vec(),
        value: b"v".to_vec(),
        lease: lease.id,
        ..Default::default()
    })
    .await
    .expect("put");
    // Three TTLs of real time; the injected clock moved 900 ms.
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        clock.advance(30);
    }
    assert!(
        c.get("/e/k").await.expect("get").is_some(),
        "expired by real time"
    );
    clock.advance(200);
    let moved = Instant::now();
    while c.get("/e/k").await.expect("get").is_some() {
        assert!(
            moved.elapsed() < Duration::from_secs(5),
            "did not expire on the injected clock"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.shutdown().await;
}

/// Keepalives of many clients share one Refresh entry, but each answer names only the
/// caller's own leases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregated_keepalives_answer_only_the_callers_leases() {
    common::watchdog(Duration::from_secs(300));
    let (_dir, node, c) = node("127.0.44.7").await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(
            c.lease_grant("/k/", Duration::from_secs(5))
                .await
                .expect("grant")
                .id,
        );
    }
    let before = c.status(false).await.expect("status");
    let calls = ids.iter().map(|id| {
        let c = c.clone();
        let id = *id;
        async move { (id, c.lease_keep_alive(&[id], Duration::from_secs(5)).await) }
    });
    for (id, r) in futures::future::join_all(calls).await {
        let r = r.expect("keepalive");
        assert_eq!(r.results.len(), 1, "{r:?}");
        assert_eq!((r.results[0].id, r.results[0].found), (id, true));
    }
    let after = c.status(false).await.expect("status");
    let requests = after.keepalive_requests - before.keepalive_requests;
    let refreshes = after.keepalive_refreshes - before.keepalive_refreshes;
    assert_eq!(requests, 20);
    assert!(
        refreshes <= 3,
        "20 concurrent keepalives took {refreshes} Refresh entries"
    );
    node.shutdown().await;
}

/// Herd-free: ten waiters queue on a mutex; each release wakes exactly the next one, the
/// others keep waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_wakes_only_the_next_waiter() {
    common::watchdog(Duration::from_secs(300));
    let (_dir, node, c) = node("127.0.44.8").await;
    let holder = Session::new(c.clone(), Duration::from_secs(10));
    let mut current = holder
        .lock("/h/m", LockOptions::default())
        .await
        .expect("acquire")
        .expect("granted");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..10 {
        let s = Session::new(c.clone(), Duration::from_secs(10));
        let tx = tx.clone();
        tokio::spawn(async move {
            let g = s
                .lock(
                    "/h/m",
                    LockOptions {
                        wait: Some(Duration::from_secs(60)),
                        ..LockOptions::default()
                    },
                )
                .await;
            let _ = tx.send((i, g, s));
        });
        // Queue in a known order: the next waiter asks only once this one's waiter key
        // (`NAME/<seq>`, beside the holder's) is in the queue.
        let queued = tokio::time::Instant::now();
        loop {
            let keys = c
                .range_all("/h/m/", meridian_sdk::Consistency::Linearizable)
                .await
                .expect("list the queue");
            if keys.len() == i + 2 {
                break;
            }
            assert!(
                queued.elapsed() < Duration::from_secs(20),
                "waiter {i} not queued after 20 s: {} keys under /h/m/",
                keys.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let mut order = Vec::new();
    for _ in 0..10 {
        assert!(
            tokio::time::timeout(Duration::from_millis(300), rx.recv())
                .await
                .is_err(),
            "a waiter was granted while the lock was held"
        );
        current.release().await.expect("release");
        let (i, g, _s) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("the next waiter is woken")
            .expect("channel");
        current = g.expect("acquire").expect("granted");
        order.push(i);
    }
    assert_eq!(
        order,
        (0..10).collect::<Vec<_>>(),
        "not granted in queue order"
    );
    node.shutdown().await;
}

/// The CLI: `lease grant|ttl|list|revoke`, and `meridian lock -- COMMAND` passing the token
/// and killing the command (SIGTERM, then SIGKILL) when the lock is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_lease_and_lock() {
    common::watchdog(Duration::from_secs(300));
    let (_dir, node, _c) = node("127.0.44.9").await;
    let addr = node.local_addr.to_string();
    let run = |args: &[&str]| {
        std::process::Command::new(common::BIN)
            .args(["--endpoint", &addr])
            .args(args)
            .output()
            .expect("run meridian")
    };
    let o = run(&["--output", "json", "lease", "grant", "/c/", "--ttl", "5"]);
    assert!(o.status.success(), "{o:?}");
    let id = serde_json::from_slice::<serde_json::Value>(&o.stdout).expect("json")["id"]
        .as_u64()
        .expect("id");
    let o = run(&["lease", "ttl", &id.to_string()]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("TTL 5000 ms"),
        "{o:?}"
    );
    let o = run(&["lease", "list"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&id.to_string()),
        "{o:?}"
    );
    let o = run(&["lease", "revoke", &id.to_string()]);
    assert!(o.status.success(), "{o:?}");
    let o = run(&["lease", "revoke", &id.to_string()]);
    assert!(!o.status.success(), "revoking twice must fail: {o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("does not exist"),
        "{o:?}"
    );
    // The token reaches the command.
    let o = run(&[
        "lock",
        "/c/l",
        "--",
        "sh",
        "-c",
        "echo token=$MERIDIAN_FENCING_TOKEN",
    ]);
    assert!(o.status.success(), "{o:?}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("token=1:"), "{out}");
    // A lock lost while the command runs: the command (deaf to SIGTERM) is killed, exit 3.
    let mut child = std::process::Command::new(common::BIN)
        .args([
            "--endpoint",
            &addr,
            "lock",
            "/c/l",
            "--ttl",
            "2",
            "--kill-after",
            "1",
        ])
        .args(["--", "sh", "-c", "echo held; trap '' TERM; sleep 100"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("lock");
    // The command runs (so the lock is held) before the node goes away: its output follows
    // the CLI's "acquired …" line.
    let stdout = child.stdout.take().expect("piped stdout");
    let lines = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || {
            let mut seen = Vec::new();
            for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
                let line = line.expect("read the command's output");
                let held = line == "held";
                seen.push(line);
                if held {
                    break;
                }
            }
            seen
        }),
    )
    .await
    .expect("the command started within 30 s")
    .expect("join");
    assert_eq!(lines.last().map(String::as_str), Some("held"), "{lines:?}");
    node.shutdown().await;
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the command was not terminated"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(3), "{status:?}");
}
