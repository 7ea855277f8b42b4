//! The operator's HTTP listener on a real `meridian dev --nodes 3` (docs/operations.md):
//! `/healthz`, `/readyz` once every group has a leader, and `/metrics` that Prometheus's own
//! `promtool check metrics` accepts (Debian's `prometheus` package; scripts/test installs it)
//! and whose values move as the cluster works: applied indexes after writes, refusals after a
//! request with a forged token. On the gRPC port: `grpc.health.v1` says SERVING (what a
//! Kubernetes gRPC probe asks) and server reflection lists the client-facing services only
//! (what grpcurl asks), neither with a token.

mod common;

use common::http::get;
use common::DevCluster;
use meridian_sdk::Consistency;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The value of the sample `name{labels…}` whose labels include every one of `with`.
fn sample(text: &str, name: &str, with: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.split(['{', ' ']).next() == Some(name) && with.iter().all(|w| l.contains(w)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} {with:?} in\n{text}"))
}

fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is missing: apt-get install prometheus (scripts/test does)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool ran");
    assert!(
        out.status.success(),
        "promtool check metrics refused the output:\n{}{}\n--- the metrics:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_move_with_the_cluster() {
    common::watchdog(Duration::from_secs(300));
    let dev = DevCluster::start(&["--nodes", "3"]);
    let http: Vec<String> = (1..=3)
        .map(|id| {
            dev.ready["http"][id.to_string()]
                .as_str()
                .expect("the ready file names each node's HTTP listener")
                .to_string()
        })
        .collect();
    for addr in &http {
        assert_eq!(get(addr, "/healthz"), (200, "ok\n".to_string()));
    }
    let start = Instant::now();
    loop {
        let (code, body) = get(&http[0], "/readyz");
        if code == 200 {
            assert_eq!(body, "ready\n");
            break;
        }
        assert_eq!(code, 503, "{body}");
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never ready: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(get(&http[0], "/nope").0, 404);

    let (code, before) = get(&http[0], "/metrics");
    assert_eq!(code, 200);
    promtool_check(&before);
    let group = ["group=\"1\""];
    let applied = sample(&before, "meridian_group_applied_index", &group);
    let refused = sample(&before, "meridian_auth_refused_total", &[]);
    let fsyncs = sample(&before, "meridian_fsync_duration_seconds_count", &[]);
    let seq = ["consistency=\"sequential\""];
    let lin = ["consistency=\"linearizable\""];
    let seq_reads = sample(&before, "meridian_read_duration_seconds_count", &seq);
    let lin_reads = sample(&before, "meridian_read_duration_seconds_count", &lin);
    let rounds = sample(
        &before,
        "meridian_sync_round_duration_seconds_count",
        &group,
    );
    assert_eq!(sample(&before, "meridian_node_info", &["node=\"1\""]), 1.0);
    assert_eq!(
        sample(&before, "meridian_group_membership_drift", &group),
        0.0,
        "a dev cluster's membership is its topology's"
    );
    // Exactly one node says it leads group 1 (once a start-up election settles).
    let start = Instant::now();
    loop {
        let leaders: Vec<f64> = http
            .iter()
            .map(|a| sample(&get(a, "/metrics").1, "meridian_group_is_leader", &group))
            .collect();
        if leaders.iter().sum::<f64>() == 1.0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "not exactly one leader of group 1: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let c = dev.client("local", Duration::from_secs(10));
    for i in 0..20 {
        c.put(&format!("/metrics-test/{i}"), "v")
            .await
            .expect("put");
    }
    // A request with a forged token is refused and counted (security is on in dev).
    let forged = meridian_sdk::Client::new(
        vec![dev.endpoint("local")],
        meridian_sdk::Options {
            token: Some("En0KEwoEcmVhZBgD".into()),
            ..dev.options()
        },
    )
    .expect("client");
    assert!(forged.get("/metrics-test/0").await.is_err());
    // An open watch stream shows (kept open to the end: `_watch`).
    let mut w = c.watch("/metrics-test/w", false, 0);
    let first = tokio::spawn(async move {
        let e = w.next().await;
        (w, e)
    });
    let start = Instant::now();
    while !first.is_finished() {
        c.put("/metrics-test/w", "x")
            .await
            .expect("put the watched key");
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the watch saw nothing"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_watch, event) = first.await.expect("watch task");
    event.expect("a watch event");
    // A lock (and the session lease it rides on) shows in the group's gauges.
    let session = meridian_sdk::Session::new(c.clone(), Duration::from_secs(10));
    let _guard = session
        .lock("/metrics-test/lock", meridian_sdk::LockOptions::default())
        .await
        .expect("lock")
        .expect("the lock is free");
    // Reads at node 1 (the client's endpoint): 5 sequential, 5 linearizable (a sync round
    // each, unless they share one).
    for i in 0..5 {
        c.get_with(&format!("/metrics-test/{i}"), Consistency::Sequential)
            .await
            .expect("sequential get");
        c.get_with(&format!("/metrics-test/{i}"), Consistency::Linearizable)
            .await
            .expect("linearizable get");
    }

    let start = Instant::now();
    loop {
        let (_, after) = get(&http[0], "/metrics");
        let now = sample(&after, "meridian_group_applied_index", &group);
        let refused_now = sample(&after, "meridian_auth_refused_total", &[]);
        if now >= applied + 20.0 && refused_now > refused {
            promtool_check(&after);
            let fsyncs_now = sample(&after, "meridian_fsync_duration_seconds_count", &[]);
            assert!(fsyncs_now > fsyncs, "fsyncs {fsyncs} → {fsyncs_now}");
            let seq_now = sample(&after, "meridian_read_duration_seconds_count", &seq);
            assert!(
                seq_now >= seq_reads + 5.0,
                "sequential reads {seq_reads} → {seq_now}"
            );
            let lin_now = sample(&after, "meridian_read_duration_seconds_count", &lin);
            assert!(
                lin_now >= lin_reads + 5.0,
                "linearizable reads {lin_reads} → {lin_now}"
            );
            let rounds_now = sample(&after, "meridian_sync_round_duration_seconds_count", &group);
            assert!(rounds_now > rounds, "sync rounds {rounds} → {rounds_now}");
            let rpcs = "meridian_grpc_requests_total";
            let puts = sample(&after, rpcs, &["/meridian.v1.Kv/Put\"", "code=\"OK\""]);
            assert!(puts >= 20.0, "{puts} puts answered OK");
            let forged = sample(&after, rpcs, &["/meridian.v1.Kv/Get\"", "UNAUTHENTICATED"]);
            assert!(forged >= 1.0, "{forged} gets refused");
            assert!(sample(&after, "meridian_group_leases", &group) >= 1.0);
            assert_eq!(sample(&after, "meridian_group_locks_held", &group), 1.0);
            assert_eq!(sample(&after, "meridian_group_lock_waiters", &group), 0.0);
            assert!(sample(&after, "meridian_watch_streams", &[]) >= 1.0);
            assert!(sample(&after, "meridian_watch_events_sent_total", &[]) >= 1.0);
            // Proposals are counted where group 1's leader is.
            let (mut proposed, mut committed, mut batched) = (0.0, 0.0, 0.0);
            for a in &http {
                let text = get(a, "/metrics").1;
                proposed += sample(&text, "meridian_group_proposals_total", &group);
                committed += sample(
                    &text,
                    "meridian_group_commit_duration_seconds_count",
                    &group,
                );
                // The batch sizes' sum is the commands proposed.
                batched += sample(&text, "meridian_group_proposal_batch_commands_sum", &group);
            }
            assert!(proposed >= 20.0, "{proposed} proposals");
            assert!(committed >= 1.0, "{committed} entries committed");
            // (Read within one scrape, but a background proposal — a lease checkpoint — may
            // land between the two readings.)
            assert!(
                batched >= 20.0 && (batched - proposed).abs() < 5.0,
                "{batched} commands in batches, {proposed} proposed"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "applied {applied} → {now}, refused {refused} → {refused_now}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_and_reflection_answer_without_a_token() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    common::watchdog(Duration::from_secs(300));
    let dev = DevCluster::start(&["--nodes", "3"]);
    // The raw channel carries no token: health and reflection need none.
    let mut health = HealthClient::new(dev.channel("local"));
    let start = Instant::now();
    for service in ["", "meridian.v1.Kv"] {
        loop {
            let status = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .expect("health check")
                .into_inner()
                .status;
            if status == ServingStatus::Serving as i32 {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{service:?} never SERVING: {status}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let e = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .expect_err("an unknown service");
    assert_eq!(e.code(), tonic::Code::NotFound);

    let mut reflection = ServerReflectionClient::new(dev.channel("local"));
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let answer = answers
        .message()
        .await
        .expect("an answer")
        .expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list: {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "meridian.v1.Kv",
        "meridian.v1.Lease",
        "meridian.v1.Lock",
        "meridian.v1.Placement",
        "meridian.v1.Tokens",
        "meridian.v1.Maintenance",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    assert!(
        !names.iter().any(|n| n.starts_with("meridian.peer")),
        "the node-to-node protocol is not shown: {names:?}"
    );
}

/// After its leader is SIGKILLed, the survivors' metrics show the new leader: a higher term,
/// a new leader id, one node that says it leads; /readyz on a survivor is ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_leader_kill() {
    common::watchdog(Duration::from_secs(300));
    // The 3-region topology, each node its own process; group 1 is us-east's (voters 1-3).
    let dev = DevCluster::start(&["--processes", "--no-wan"]);
    let nodes = common::Nodes::of(&dev);
    let http = |id: u64| {
        dev.ready["http"][id.to_string()]
            .as_str()
            .expect("HTTP listener")
            .to_string()
    };
    let group = ["group=\"1\""];
    let (leader, term) = nodes.new_leader(1, 0, Duration::from_secs(60)).await;
    let survivor = if leader == 1 { 2 } else { 1 };
    // The survivor may hear of the leader a heartbeat after the node that named it.
    let start = Instant::now();
    loop {
        let before = get(&http(survivor), "/metrics").1;
        let seen = sample(&before, "meridian_group_leader_id", &group);
        if seen == leader as f64 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the survivor's metrics name leader {seen}, not {leader}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nodes.signal(leader, "-KILL");
    let (new_leader, new_term) = nodes.new_leader(1, term, Duration::from_secs(60)).await;
    assert_ne!(new_leader, leader);
    let start = Instant::now();
    loop {
        let text = get(&http(survivor), "/metrics").1;
        let seen = sample(&text, "meridian_group_leader_id", &group);
        let seen_term = sample(&text, "meridian_group_term", &group);
        if seen == new_leader as f64 && seen_term >= new_term as f64 {
            let leads: f64 = [survivor, 6 - leader - survivor]
                .iter()
                .map(|id| {
                    sample(
                        &get(&http(*id), "/metrics").1,
                        "meridian_group_is_leader",
                        &group,
                    )
                })
                .sum();
            assert_eq!(leads, 1.0, "exactly one survivor leads");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "node {survivor} still shows leader {seen} term {seen_term}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let start = Instant::now();
    while get(&http(survivor), "/readyz").0 != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never ready again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
