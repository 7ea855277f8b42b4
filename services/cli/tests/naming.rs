//! The naming service (issue 16, item 2) on `meridian dev --processes` (3 regions under the WAN
//! emulator):
//! - `meridian register` keeps an instance registered; SIGKILL it and every region's resolver
//!   drops the instance within its TTL plus a round trip;
//! - a resolver whose router is SIGKILLed fails over to another router of its region and sees
//!   every later change once, in order: nothing lost, nothing repeated;
//! - `meridian resolve` lists the live instances; bad names are refused with what is wrong.

mod common;

use common::{meridian_json, DevCluster, Nodes, BIN};
use meridian_sdk::naming::Snapshot;
use meridian_sdk::{Client, Options, Registration, Resolver};
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SERVICE: &str = "/global/services/echo";
const TTL_S: u64 = 3;

/// Waits until `pred` holds for the resolver's cache; the cache then.
async fn until(
    r: &mut Resolver,
    within: Duration,
    what: &str,
    pred: impl Fn(&Snapshot) -> bool,
) -> Arc<Snapshot> {
    let end = Instant::now() + within;
    loop {
        let s = r.snapshot();
        if pred(&s) {
            return s;
        }
        let left = end.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{what}: not within {within:?}; cache {s:?}"
        );
        let _ = tokio::time::timeout(left, r.changed()).await;
    }
}

/// Registers `id` at `address` (TTL 30 s) as a careful client must while the service's group
/// may be electing a leader: a failed attempt is repeated (registering again is idempotent; a
/// lost attempt's lease expires by itself). Gives up after 60 s.
async fn register_settled(c: &Client, id: &str, address: &str) -> Registration {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        match c
            .register(
                SERVICE,
                id,
                address,
                None,
                BTreeMap::new(),
                Duration::from_secs(30),
            )
            .await
        {
            Ok(r) => return r,
            Err(e) => {
                assert!(Instant::now() < until, "register {id}: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

fn endpoints(dev: &DevCluster, region: &str) -> Vec<String> {
    dev.ready["regions"][region]["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|e| e.as_str().expect("endpoint").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_expire_everywhere_and_resolvers_fail_over() {
    common::watchdog(Duration::from_secs(600));
    let dev = DevCluster::start(&["--processes"]);
    let nodes = Nodes::of(&dev);
    let us = dev.endpoint("us-east");

    // Bad names: clear refusals, nothing registered.
    let (ok, _, err) = meridian_json(&us, &["register", "echo", "i1", "127.0.0.1:1"]);
    assert!(
        !ok && err.contains("must be a path of the namespace"),
        "{err}"
    );
    let (ok, _, err) = meridian_json(&us, &["register", SERVICE, "a/b", "127.0.0.1:1"]);
    assert!(!ok && err.contains("no '/'"), "{err}");

    // A resolver in every region (eu-west's knows both of its routers).
    let mut resolvers = BTreeMap::new();
    for region in ["us-east", "eu-west", "ap-northeast"] {
        let c = Client::new(
            endpoints(&dev, region),
            Options {
                call_timeout: Duration::from_secs(20),
                ..dev.options()
            },
        )
        .expect("client");
        resolvers.insert(region, c.resolver(SERVICE).await.expect("resolver"));
    }

    // i1 registered by a CLI process in us-east.
    let mut reg = Command::new(BIN)
        .args([
            "--endpoint",
            &us,
            "register",
            SERVICE,
            "i1",
            "127.0.0.1:9001",
        ])
        .args(["--meta", "zone=a", "--ttl", &TTL_S.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn register");
    for (region, r) in resolvers.iter_mut() {
        let s = until(r, Duration::from_secs(30), region, |s| {
            s.instances.contains_key("i1")
        })
        .await;
        let i = &s.instances["i1"];
        assert_eq!(i.address, "127.0.0.1:9001");
        assert_eq!(i.region, "us-east", "the registering router's region");
        assert_eq!(i.meta.get("zone").map(String::as_str), Some("a"));
    }
    let (ok, out, err) = meridian_json(&dev.endpoint("ap-northeast"), &["resolve", SERVICE]);
    assert!(ok, "{err}");
    assert!(
        out.contains("\"instance\":\"i1\"") && out.contains("meridian://"),
        "{out}"
    );

    // SIGKILL: no deregistration, only the TTL.
    reg.kill().expect("kill register");
    let _ = reg.wait();
    let killed = Instant::now();
    // The TTL plus a round trip (at most ~0.3 s between this topology's regions), plus room
    // for a loaded CI machine's scheduling; measured: 0.1-0.3 s past the TTL.
    let bound = Duration::from_secs(TTL_S) + Duration::from_millis(2_500);
    for (region, r) in resolvers.iter_mut() {
        until(r, bound + Duration::from_secs(10), region, |s| {
            !s.instances.contains_key("i1")
        })
        .await;
        let gone = killed.elapsed();
        println!("{region}: i1 gone {gone:?} after SIGKILL (TTL {TTL_S} s)");
        assert!(
            gone <= bound,
            "{region}'s resolver dropped i1 after {gone:?}: more than the TTL plus a round trip"
        );
    }

    // Failover: kill the router eu-west's resolver talks to (its first endpoint), then change
    // the service: the resolver resumes on the other eu-west router and sees each change once.
    let eu = endpoints(&dev, "eu-west");
    let victim = dev.ready["nodes"]
        .as_object()
        .expect("nodes")
        .iter()
        .find(|(_, v)| v["address"].as_str() == Some(eu[0].as_str()))
        .map(|(id, _)| id.parse::<u64>().expect("id"))
        .expect("eu-west's first router");
    nodes.signal(victim, "-KILL");
    // The victim may lead the global group: writes fail until it has a new leader.
    let writer = dev.client("us-east", Duration::from_secs(20));
    let r2 = register_settled(&writer, "i2", "127.0.0.1:9002").await;
    let r3 = register_settled(&writer, "i3", "127.0.0.1:9003").await;
    r2.deregister().await.expect("deregister i2");
    let eu_resolver = resolvers.get_mut("eu-west").expect("eu-west");
    // Every state the cache passes through, in order.
    let mut states: Vec<Vec<String>> =
        vec![eu_resolver.snapshot().instances.keys().cloned().collect()];
    let end = Instant::now() + Duration::from_secs(60);
    while states.last().map(|s| s.as_slice()) != Some(&["i3".to_string()][..]) {
        let left = end.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "eu-west's resolver stuck at {states:?}");
        if let Ok(Ok(s)) = tokio::time::timeout(left, eu_resolver.changed()).await {
            states.push(s.instances.keys().cloned().collect());
        }
    }
    // From nothing to {i3}: through {i2}, {i2, i3} (or straight there if changes came together),
    // never back, never a state twice.
    let allowed: [&[&str]; 4] = [&[], &["i2"], &["i2", "i3"], &["i3"]];
    let mut at = 0;
    for s in &states {
        let pos = allowed
            .iter()
            .position(|a| a.iter().map(|x| x.to_string()).collect::<Vec<_>>() == *s)
            .unwrap_or_else(|| panic!("an impossible state {s:?} in {states:?}"));
        assert!(pos >= at, "the cache went back: {states:?}");
        at = pos;
    }
    let distinct: std::collections::BTreeSet<_> = states.iter().collect();
    assert_eq!(distinct.len(), states.len(), "a state repeated: {states:?}");
    drop(r3);
}
