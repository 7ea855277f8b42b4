//! `meridian://` addresses (issue 16, item 3): a tonic client dialing
//! `meridian://global/services/kv` through the SDK's `service_channel` reaches the service's live
//! instances only, prefers its own region's, falls back to another region's when its own has
//! none, and keeps working while instances come and go. The instances are the dev cluster's own
//! routers (registered by address), so each answer's `Status` names the instance that served it.

mod common;

use common::DevCluster;
use meridian_proto::kv::kv_client::KvClient;
use meridian_proto::kv::StatusRequest;
use meridian_sdk::Registration;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const URI: &str = "meridian://global/services/kv";
const SERVICE: &str = "/global/services/kv";

/// The address of the router that answered each of `n` calls.
async fn who(channel: &tonic::transport::Channel, n: usize) -> Vec<String> {
    let mut kv = KvClient::new(channel.clone());
    let mut out = Vec::new();
    for _ in 0..n {
        let r = kv
            .status(StatusRequest::default())
            .await
            .expect("a call through the service channel")
            .into_inner();
        out.push(r.address);
    }
    out
}

/// Calls until `n` answers in a row come from `only`; then `n` more must too.
async fn settles_on(channel: &tonic::transport::Channel, only: &BTreeSet<String>, n: usize) {
    let end = Instant::now() + Duration::from_secs(30);
    let mut streak = 0;
    while streak < n {
        assert!(Instant::now() < end, "calls never settled on {only:?}");
        let a = who(channel, 1).await.remove(0);
        streak = if only.contains(&a) { streak + 1 } else { 0 };
    }
    let seen: BTreeSet<String> = who(channel, 4 * n).await.into_iter().collect();
    assert!(
        seen.is_subset(only),
        "answers from {seen:?}, only {only:?} are live and preferred"
    );
    assert_eq!(
        &seen, only,
        "the balancer spreads calls over every preferred instance"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meridian_uri_channel_follows_live_instances_and_prefers_its_region() {
    common::watchdog(Duration::from_secs(600));
    let dev = DevCluster::start(&["--insecure"]);
    let eps = |r: &str| -> Vec<String> {
        dev.ready["regions"][r]["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .map(|e| e.as_str().expect("endpoint").to_string())
            .collect()
    };
    let (eu, us) = (eps("eu-west"), eps("us-east"));
    assert!(eu.len() >= 3, "eu-west has 3 routers: {eu:?}");
    let registry = dev.client("us-east", Duration::from_secs(20));
    let mut regs: BTreeMap<&str, Registration> = BTreeMap::new();
    for (id, addr, region) in [
        ("e0", &eu[0], "eu-west"),
        ("e1", &eu[1], "eu-west"),
        ("u0", &us[0], "us-east"),
    ] {
        let r = registry
            .register(
                SERVICE,
                id,
                addr,
                Some(region),
                BTreeMap::new(),
                Duration::from_secs(30),
            )
            .await
            .expect("register");
        regs.insert(id, r);
    }
    // A caller in eu-west (its client's router is eu-west's: the region comes from it).
    let caller = dev.client("eu-west", Duration::from_secs(20));
    let sc = caller
        .service_channel(URI, None)
        .await
        .expect("service channel");
    let ch = sc.channel();
    let set = |a: &[&String]| a.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();

    // Both eu-west instances, never us-east's while eu-west has one.
    settles_on(&ch, &set(&[&eu[0], &eu[1]]), 10).await;
    // e0 deregistered: only e1.
    regs.remove("e0")
        .expect("e0")
        .deregister()
        .await
        .expect("deregister e0");
    settles_on(&ch, &set(&[&eu[1]]), 10).await;
    // No eu-west instance left: us-east's.
    regs.remove("e1")
        .expect("e1")
        .deregister()
        .await
        .expect("deregister e1");
    settles_on(&ch, &set(&[&us[0]]), 10).await;
    // One comes back in eu-west: preferred again.
    let e2 = registry
        .register(
            SERVICE,
            "e2",
            &eu[2],
            Some("eu-west"),
            BTreeMap::new(),
            Duration::from_secs(30),
        )
        .await
        .expect("register e2");
    settles_on(&ch, &set(&[&eu[2]]), 10).await;
    // Bad addresses are refused with what is wrong.
    let err = caller
        .service_channel("http://x", None)
        .await
        .err()
        .expect("not a meridian:// address");
    assert!(err.to_string().contains("meridian://"), "{err}");
    drop(e2);
    drop(regs);
}
