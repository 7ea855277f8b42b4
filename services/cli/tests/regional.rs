//! Region-local endpoints (issue 16, item 4) on `meridian dev --processes`: a client seeded
//! with a us-east endpoint and `eu-west` as its home learns the cluster's routers and talks to
//! an eu-west one (the responses' header names it); when that router is SIGKILLed it moves to
//! another eu-west router, and the session's history across the move — writes and reads of two
//! regions' groups, with another session writing meanwhile — passes the sequential-consistency
//! checker. The CLI's `--region` does the same; an unknown region is refused by name.

mod common;

use common::{put_settled, read_op, DevCluster, Nodes, BIN};
use meridian_checker::{check_sequential, History, Op, OpKind};
use meridian_sdk::discovery::regional_endpoints;
use meridian_sdk::{Client, Consistency, Options};
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

const DOMAINS: [(&str, u64); 2] = [("/eu-west/", 2), ("/us-east/", 1)];

/// The ids of `region`'s nodes (from the ready file's addresses).
fn node_ids(dev: &DevCluster, region: &str) -> BTreeSet<u64> {
    let eps: Vec<String> = dev.ready["regions"][region]["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|e| e.as_str().expect("endpoint").to_string())
        .collect();
    dev.ready["nodes"]
        .as_object()
        .expect("nodes")
        .iter()
        .filter(|(_, v)| eps.iter().any(|e| v["address"].as_str() == Some(e)))
        .map(|(id, _)| id.parse().expect("id"))
        .collect()
}

/// `n` operations of session `s` on `c`: a write then a read, alternating the two groups;
/// every read's answering node must be in `allowed`. Writes are settled (a write whose answer
/// was lost in the failover is read back, then repeated only if absent).
async fn ops(
    c: &Client,
    s: usize,
    from: usize,
    n: usize,
    allowed: &BTreeSet<u64>,
    h: &mut History,
) {
    for i in from..from + n {
        let (prefix, group) = DOMAINS[i % 2];
        let key = format!("{prefix}regional/k{}", i % 3);
        let value = format!("s{s}-{i}");
        let revision = put_settled(c, &key, &value, Duration::from_secs(60)).await;
        h.push(Op {
            session: s,
            group,
            kind: OpKind::Write {
                key: key.clone(),
                value,
                revision: Some(revision),
            },
        });
        let r = c
            .get_with(&key, Consistency::Sequential)
            .await
            .expect("get");
        let node = r.header.as_ref().map_or(0, |h| h.node);
        assert!(
            allowed.contains(&node),
            "read {i} answered by node {node}, not one of {allowed:?}"
        );
        h.push(read_op(s, group, key, &r));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_finds_its_regions_routers_and_fails_over_within_it() {
    common::watchdog(Duration::from_secs(600));
    let dev = DevCluster::start(&["--processes"]);
    let nodes = Nodes::of(&dev);
    let seed = vec![dev.endpoint("us-east")];
    let eu = node_ids(&dev, "eu-west");
    assert_eq!(eu.len(), 3, "eu-west's routers: {eu:?}");
    let opts = Options {
        call_timeout: Duration::from_secs(30),
        ..dev.options()
    };

    // Discovery from the us-east seed: eu-west's three routers first, then each other region's
    // routers together, in the order of their measured round trips. (A client reaches dev's
    // routers directly over loopback — the WAN emulator sits only between nodes — so which
    // other region measures nearer here is noise: the order is checked against the
    // measurements, not against the topology.)
    let r = regional_endpoints(&seed, &opts, Some("eu-west"))
        .await
        .expect("discover");
    assert_eq!(r.home, "eu-west");
    let region_of = |ep: &String| {
        ["us-east", "eu-west", "ap-northeast"]
            .into_iter()
            .find(|reg| {
                dev.ready["regions"][reg]["endpoints"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|e| e.as_str() == Some(ep)))
            })
            .unwrap_or_else(|| panic!("{ep} is no region's router"))
    };
    let regions: Vec<&str> = r.endpoints.iter().map(region_of).collect();
    let others: Vec<&str> = r.others.iter().map(|(region, _)| region.as_str()).collect();
    let mut want = vec!["eu-west"; 3];
    for o in &others {
        want.extend([*o; 3]);
    }
    assert_eq!(
        regions, want,
        "home first, then region by region as measured: {r:?}"
    );
    assert_eq!(
        others.iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from(["us-east", "ap-northeast"])
    );
    let rtts: Vec<Option<Duration>> = r.others.iter().map(|(_, d)| *d).collect();
    assert!(
        rtts.iter().all(Option::is_some),
        "every region answered its probe: {r:?}"
    );
    assert!(
        rtts.windows(2).all(|w| w[0] <= w[1]),
        "nearest first: {r:?}"
    );
    let unknown = regional_endpoints(&seed, &opts, Some("mars"))
        .await
        .expect_err("no mars");
    assert!(
        unknown.to_string().contains("\"mars\" has no router"),
        "{unknown}"
    );

    let c = Client::connect_regional(&seed, opts.clone(), Some("eu-west"))
        .await
        .expect("connect");
    let first = c.status(false).await.expect("status");
    assert_eq!(first.region, "eu-west");
    let victim = first.node;

    // Another session writes the same keys from us-east all along.
    let other = dev.client("us-east", Duration::from_secs(30));
    let everyone: BTreeSet<u64> = (1..=9).collect();
    let writer = tokio::spawn(async move {
        let mut h = History::new();
        ops(&other, 1, 0, 40, &everyone, &mut h).await;
        h
    });

    let mut h = History::new();
    ops(&c, 0, 0, 15, &BTreeSet::from([victim]), &mut h).await;
    nodes.signal(victim, "-KILL");
    let rest: BTreeSet<u64> = eu.iter().copied().filter(|n| *n != victim).collect();
    ops(&c, 0, 15, 25, &rest, &mut h).await;
    let after = c.status(false).await.expect("status after the kill");
    assert_eq!(after.region, "eu-west", "failed over within the region");
    assert_ne!(after.node, victim);

    let history = History::merge(vec![h, writer.await.expect("writer")]);
    if let Err(v) = check_sequential(&history) {
        panic!("sequential consistency violated across the failover: {v}");
    }

    // The CLI: --region from a us-east seed answers from an eu-west router.
    let o = Command::new(BIN)
        .args([
            "--endpoint",
            &seed[0],
            "--region",
            "eu-west",
            "--output",
            "json",
            "status",
        ])
        .output()
        .expect("run meridian");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let status: serde_json::Value = serde_json::from_str(out.lines().next().unwrap_or("{}"))
        .unwrap_or_else(|e| panic!("status JSON: {e}: {out}"));
    assert_eq!(status["region"], "eu-west", "{status}");
    let o = Command::new(BIN)
        .args(["--endpoint", &seed[0], "--region", "mars", "status"])
        .output()
        .expect("run meridian");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("\"mars\" has no router"));
}
