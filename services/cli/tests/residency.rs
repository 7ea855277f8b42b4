//! Residency (DESIGN.md §7) on `meridian dev --processes --topology topology/compliance-3region.toml`:
//! group eu-private (voters in eu-west, no learners elsewhere) owns /eu-west/pii/ (policy
//! jurisdiction:eu, forward) and /eu-west/pii-strict/ (strict).
//!
//! - values written into /eu-west/pii/ through every region's endpoint are readable (and
//!   watchable) from every region, and appear in no file under the data directory of any
//!   us-east or ap-northeast node, nor in their logs (with debug logging on) — while they do
//!   appear under eu-west's (the scan can find them);
//! - /eu-west/pii-strict/ is refused outside the EU with PolicyDenied naming the domain, the
//!   policy and the region;
//! - the placement map is seeded into the global group (epoch > 0) and every router follows a
//!   policy change; a change a replica would break is refused naming domain, policy, regions.

mod common;

use common::DevCluster;
use meridian_sdk::{pb, Client, Error, WatchEvent};
use std::path::Path;
use std::time::{Duration, Instant};

const TOPOLOGY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../topology/compliance-3region.toml"
);

/// Every file under `dir` (recursively) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(files_containing(&path, needle));
        } else {
            out.extend(files_containing_file(&path, needle));
        }
    }
    out
}

/// `path` if its bytes contain `needle` (first byte located with `position`, then compared).
fn files_containing_file(path: &Path, needle: &[u8]) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let first = *needle.first()?;
    let mut at = 0;
    while let Some(i) = bytes.get(at..)?.iter().position(|b| *b == first) {
        let start = at + i;
        if bytes.get(start..start + needle.len()) == Some(needle) {
            return Some(path.display().to_string());
        }
        at = start + 1;
    }
    None
}

async fn wait_epoch(c: &Client, above: u64, what: &str) -> pb::PlacementShowResponse {
    let start = Instant::now();
    loop {
        if let Ok(m) = c.placement().await {
            if m.epoch > above {
                return m;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what}: the placement epoch never passed {above}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_bound_data_stays_in_its_regions() {
    common::watchdog(Duration::from_secs(600));
    let dev = DevCluster::start_logging(
        &["--topology", TOPOLOGY, "--processes"],
        "debug,openraft=info,h2=info,hyper=info,tower=info,tonic=info",
    );
    let started = Instant::now();
    let regions = ["us-east", "eu-west", "ap-northeast"];
    let clients: Vec<Client> = regions
        .iter()
        .map(|r| dev.client(r, Duration::from_secs(20)))
        .collect();

    // The map is seeded into the global group and every router follows it.
    for (c, r) in clients.iter().zip(regions) {
        let m = wait_epoch(c, 0, r).await;
        let pii = m
            .domains
            .iter()
            .find(|d| d.prefix == "/eu-west/pii/")
            .expect("pii domain");
        assert_eq!(pii.group_name, "eu-private");
        let policy = pii.policy.as_ref().expect("policy");
        assert_eq!(
            (policy.allowed.clone(), policy.mode.as_str()),
            (vec!["jurisdiction:eu".to_string()], "forward")
        );
    }

    // A watcher in us-east on the forward domain: a forwarded stream.
    // (From revision 1: the SDK opens the stream on the first `next`, after the writes.)
    let mut watcher = clients[0].watch("/eu-west/pii/", true, 1);

    // Unique values through every region's endpoint.
    let run = std::process::id();
    let mut written = Vec::new();
    for (c, r) in clients.iter().zip(regions) {
        for i in 0..5 {
            let key = format!("/eu-west/pii/user-{r}-{i}-k{run}");
            let value = format!("SECRET-{r}-{i}-v{run}-PERSONAL-DATA");
            c.put(&key, value.clone())
                .await
                .unwrap_or_else(|e| panic!("put {key} via {r}: {e}"));
            written.push((key, value));
        }
    }
    // Readable from every region (sequentially consistent: each session sees its own and,
    // through the forwarded read, the group's latest).
    for (c, r) in clients.iter().zip(regions) {
        for (key, value) in &written {
            let got = c
                .get(key)
                .await
                .unwrap_or_else(|e| panic!("get {key} via {r}: {e}"))
                .unwrap_or_else(|| panic!("{key} missing via {r}"));
            assert_eq!(got.value, value.as_bytes(), "{key} via {r}");
        }
    }
    // The us-east watcher saw every write, in order, exactly once.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < written.len() {
        assert!(Instant::now() < deadline, "watch saw only {seen:?}");
        match tokio::time::timeout(Duration::from_secs(10), watcher.next()).await {
            Ok(Ok(WatchEvent::Changes { events, .. })) => {
                for e in events {
                    let kv = e.kv.expect("kv");
                    seen.push(kv.key.clone());
                }
            }
            Ok(Ok(WatchEvent::Progress { .. })) => {}
            Ok(Err(e)) => panic!("forwarded watch failed: {e}"),
            Err(_) => panic!("forwarded watch silent; saw {seen:?}"),
        }
    }
    let keys: Vec<String> = written.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(seen, keys);

    // Strict: refused outside the EU, naming the domain, the policy and the region.
    for (c, r) in [(&clients[0], "us-east"), (&clients[2], "ap-northeast")] {
        match c.put("/eu-west/pii-strict/x", "no").await {
            Err(Error::PolicyDenied {
                domain,
                policy,
                region,
                message,
            }) => {
                assert_eq!(domain, "/eu-west/pii-strict/");
                assert!(
                    policy.contains("jurisdiction:eu") && policy.contains("strict"),
                    "{policy}"
                );
                assert_eq!(region, r);
                assert!(
                    message.contains("/eu-west/pii-strict/") && message.contains(r),
                    "{message}"
                );
            }
            other => panic!("strict put from {r}: {other:?}"),
        }
        assert!(
            matches!(
                c.get("/eu-west/pii-strict/x").await,
                Err(Error::PolicyDenied { .. })
            ),
            "strict get from {r}"
        );
    }
    // A request proxied from outside is judged by the region it arrived in, by the receiving
    // router too (so a router with an older map cannot let a strict refusal through). Only a
    // node may send the mark (services/cli/tests/mtls.rs): this test speaks as node 1.
    let mut kv = meridian_proto::kv::kv_client::KvClient::new(dev.channel_as_node("eu-west"));
    let mut req = tonic::Request::new(pb::GetRequest {
        key: b"/eu-west/pii-strict/x".to_vec(),
        ..Default::default()
    });
    dev.authorize(&mut req);
    req.metadata_mut()
        .insert("meridian-proxied", "ap-northeast".parse().expect("ascii"));
    let status = kv
        .get(req)
        .await
        .expect_err("strict from ap-northeast, via eu-west");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("ap-northeast"), "{status:?}");

    // Leases (and so locks) of policy-bound domains are served only where the group lives:
    // strict refuses, forward names the endpoints to use; eu-west grants.
    assert!(
        matches!(
            clients[0]
                .lease_grant("/eu-west/pii-strict/", Duration::from_secs(10))
                .await,
            Err(Error::PolicyDenied { .. })
        ),
        "strict lease from us-east"
    );
    match clients[2]
        .lease_grant("/eu-west/pii/", Duration::from_secs(10))
        .await
    {
        Err(Error::Unavailable(m)) => assert!(m.contains("127.0.2."), "{m}"),
        other => panic!("forward lease from ap-northeast: {other:?}"),
    }
    clients[1]
        .lease_grant("/eu-west/pii/", Duration::from_secs(10))
        .await
        .expect("lease inside the EU");
    clients[1]
        .put("/eu-west/pii-strict/x", "in the EU")
        .await
        .expect("strict put inside the EU");

    // A policy a replica breaks is refused, naming domain, policy and regions; nothing changes.
    let before = clients[0].placement().await.expect("show").epoch;
    let refused = clients[0]
        .set_policy(
            "/eu-west/",
            Some(pb::PlacementPolicy {
                allowed: vec!["jurisdiction:eu".into()],
                mode: "forward".into(),
            }),
            0,
        )
        .await
        .expect_err("the eu-west group has learners in us-east and ap-northeast");
    let text = refused.to_string();
    for needle in ["/eu-west/", "jurisdiction:eu", "ap-northeast", "us-east"] {
        assert!(text.contains(needle), "{needle:?} not in {text}");
    }
    assert_eq!(clients[0].placement().await.expect("show").epoch, before);

    // A change every router follows: /eu-west/pii/ becomes strict; us-east is refused at once
    // (its own router waited for the change), ap-northeast within about a round trip.
    let epoch = clients[1]
        .set_policy(
            "/eu-west/pii/",
            Some(pb::PlacementPolicy {
                allowed: vec!["eu-west".into()],
                mode: "strict".into(),
            }),
            before,
        )
        .await
        .expect("tighten the policy");
    assert!(epoch > before);
    for (c, r) in clients.iter().zip(regions) {
        let m = wait_epoch(c, epoch - 1, r).await;
        assert_eq!(m.epoch, epoch, "{r}");
    }
    assert!(matches!(
        clients[2].get(&written[0].0).await,
        Err(Error::PolicyDenied { .. })
    ));
    // A stale epoch is refused and changes nothing.
    let stale = clients[1]
        .set_policy("/eu-west/pii/", None, before)
        .await
        .expect_err("stale epoch");
    assert!(stale.to_string().contains("epoch"), "{stale}");

    eprintln!(
        "residency: checks done after {:?}; scanning",
        started.elapsed()
    );
    // The CLI: `placement show --output json` and a refused `set-policy` (exit 1, the reason).
    let ep = dev.endpoint("ap-northeast");
    let out = std::process::Command::new(common::BIN)
        .args(["--endpoint", &ep, "--output", "json", "placement", "show"])
        .output()
        .expect("run meridian placement show");
    assert!(out.status.success(), "{out:?}");
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(shown["epoch"].as_u64(), Some(epoch), "{shown}");
    assert!(
        shown["domains"]
            .as_array()
            .expect("domains")
            .iter()
            .any(|d| d["prefix"] == "/eu-west/pii/" && d["policy"]["mode"] == "strict"),
        "{shown}"
    );
    let out = std::process::Command::new(common::BIN)
        .args(["--endpoint", &ep, "placement", "set-policy", "/us-east/"])
        .args(["--allowed", "jurisdiction:us", "--mode", "strict"])
        .output()
        .expect("run meridian placement set-policy");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    for needle in ["/us-east/", "jurisdiction:us", "eu-west", "ap-northeast"] {
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }

    // Nothing of the policy-bound domain on any disk or in any log outside eu-west, while the
    // scan finds it in eu-west's.
    drop(watcher);
    let data = Path::new(dev.ready["data_dir"].as_str().expect("data_dir")).to_path_buf();
    // Every key carries `-k{run}` and every value `-v{run}-PERSONAL`: two markers, one pass
    // per file.
    let markers = [format!("-k{run}"), format!("-v{run}-PERSONAL")];
    let mut found_in_eu = 0;
    for node in 1..=9u64 {
        let dir = data.join(format!("node-{node}"));
        let log = data.join(format!("node-{node}.log"));
        assert!(dir.is_dir(), "no data dir {}", dir.display());
        assert!(log.is_file(), "no log {}", log.display());
        for marker in &markers {
            let hits = files_containing(&dir, marker.as_bytes());
            let in_log = files_containing_file(&log, marker.as_bytes()).is_some();
            if (4..=6).contains(&node) {
                found_in_eu += hits.len();
            } else {
                assert!(
                    hits.is_empty(),
                    "node {node} stored pii data ({marker}): {hits:?}"
                );
                assert!(!in_log, "node {node} logged pii data ({marker})");
            }
        }
    }
    assert!(
        found_in_eu > 0,
        "the scan never found the values on eu-west's nodes either"
    );
    eprintln!("residency: scan done after {:?}", started.elapsed());
}
