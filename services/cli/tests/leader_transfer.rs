//! `meridian leader transfer` on a real `meridian dev --nodes 3` (docs/operations.md): a
//! group's leadership moves to the voter asked for, through any node (the SDK) and by the
//! group's name (the CLI); a node that is no voter, or a token without `admin`, is refused and
//! nothing moves; writes go on after each transfer.

mod common;

use common::DevCluster;
use meridian_sdk::{Client, Error};
use std::process::Command;
use std::time::{Duration, Instant};
use tonic::Code;

/// Group 1's leader as `node`'s replica knows it (0: none).
async fn leader_seen_by(dev: &DevCluster, node: u64) -> u64 {
    let endpoint = format!(
        "127.0.1.{node}:{}",
        dev.endpoint("local").rsplit(':').next().expect("port")
    );
    let c = Client::new(vec![endpoint], dev.options()).expect("client");
    let s = c.status(false).await.expect("status");
    s.groups
        .iter()
        .find(|g| g.group == 1)
        .map_or(0, |g| g.leader)
}

/// Waits until every node sees `want` lead group 1.
async fn all_see(dev: &DevCluster, want: u64) {
    let start = Instant::now();
    loop {
        let mut seen = Vec::new();
        for n in 1..=3 {
            seen.push(leader_seen_by(dev, n).await);
        }
        if seen.iter().all(|&l| l == want) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "nodes see leaders {seen:?}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_to_the_voter_asked_for() {
    common::watchdog(Duration::from_secs(300));
    let dev = DevCluster::start(&["--nodes", "3"]);
    let c = dev.client("local", Duration::from_secs(20));
    c.put("/before", "1").await.expect("a write before");
    let start = Instant::now();
    let leader = loop {
        let l = leader_seen_by(&dev, 1).await;
        if l != 0 {
            break l;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Through node 1, whoever leads: to another voter.
    let target = if leader == 3 { 2 } else { 3 };
    let r = c.transfer_leader(1, target).await.expect("transfer");
    assert_eq!(r.leader, target);
    all_see(&dev, target).await;
    c.put("/after-sdk", "2")
        .await
        .expect("a write after the transfer");

    // Through the CLI, by the group's name, back to the first leader.
    let out = Command::new(common::BIN)
        .args([
            "--endpoint",
            &dev.endpoint("local"),
            "leader",
            "transfer",
            "local",
        ])
        .args(["--to", &leader.to_string()])
        .output()
        .expect("run meridian leader transfer");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("node {leader} leads")), "{stdout}");
    all_see(&dev, leader).await;
    c.put("/after-cli", "3")
        .await
        .expect("a write after the second transfer");

    // Refused: a node that is no voter; a token without admin. Leadership stays.
    match c.transfer_leader(1, 9).await {
        Err(Error::InvalidArgument { message, .. }) => {
            assert!(message.contains("not a voter of group 1"), "{message}")
        }
        other => panic!("node 9 is no voter: {other:?}"),
    }
    let root = dev.token().expect("dev is secure");
    let reader = meridian_auth::attenuate(
        &root,
        &meridian_auth::Narrowing {
            ops: Some("read,write".parse().expect("ops")),
            ..Default::default()
        },
    )
    .expect("attenuate");
    let weak = Client::new(
        vec![dev.endpoint("local")],
        meridian_sdk::Options {
            token: Some(reader),
            ..dev.options()
        },
    )
    .expect("client");
    match weak.transfer_leader(1, target).await {
        Err(Error::Other { code, .. }) => assert_eq!(code, Code::PermissionDenied),
        other => panic!("a token without admin: {other:?}"),
    }
    all_see(&dev, leader).await;
}
