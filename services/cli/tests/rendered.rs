//! The path operators take is the path this test takes (issue 18, docs/deploy.md): render
//! `topology/local-3region.toml` with `meridian topology render` (secure: a root key from
//! `meridian token keygen`, node certificates of a test CA), check the units with
//! `systemd-analyze verify`, run the WAN emulator from the rendered `wan-proxy.args`, start
//! every node with `meridian server --config` on its rendered node.toml as its own process,
//! then write and read from every region and run the x/y anomaly check.

mod common;

use common::{xy_round, BIN};
use meridian_checker::{check_sequential, History};
use meridian_sdk::{Client, Consistency, Options};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LOCAL: &str = include_str!("../../../topology/local-3region.toml");
const REGIONS: [(&str, &str, u64); 3] = [
    ("us-east", "127.0.1.1", 1),
    ("eu-west", "127.0.2.1", 2),
    ("ap-northeast", "127.0.3.1", 3),
];

/// Kills its processes when dropped (a failed assertion leaves nothing running).
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn meridian(args: &[&str]) -> String {
    let o = Command::new(BIN).args(args).output().expect("run meridian");
    assert!(o.status.success(), "meridian {args:?}: {o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn spawn(args: &[&str], log: &Path) -> Child {
    Command::new(BIN)
        .args(args)
        .env("MERIDIAN_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("start meridian")
}

#[test]
fn rendered_configs_run_a_three_region_cluster() {
    common::watchdog(Duration::from_secs(600));
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // The shipped topology on a port of its own (the operator edits the topology, not the
    // rendered files).
    let port = common::free_port("127.0.1.1");
    let source = d.join("local-3region.toml");
    std::fs::write(&source, LOCAL.replace(":7400\"", &format!(":{port}\""))).expect("write");

    let key = d.join("root.key");
    let out = meridian(&["token", "keygen", "--out", key.to_str().expect("utf-8")]);
    let public = out
        .lines()
        .find_map(|l| l.strip_prefix("public key: "))
        .expect("keygen prints the public key")
        .to_string();

    let rendered = d.join("rendered");
    let data = d.join("data");
    let s = |p: &Path| p.to_str().expect("utf-8 path").to_string();
    let user = String::from_utf8_lossy(&Command::new("id").arg("-un").output().expect("id").stdout)
        .trim()
        .to_string();
    meridian(&[
        "topology",
        "render",
        &s(&source),
        "--out",
        &s(&rendered),
        "--root-public-key",
        &public,
        "--config-root",
        &s(&rendered),
        "--data-root",
        &s(&data),
        "--binary",
        BIN,
        "--user",
        &user,
        "--wan-emulator",
    ]);

    // The units are ones systemd accepts (scripts/test installs systemd-analyze).
    assert!(
        Command::new("systemd-analyze")
            .arg("--version")
            .output()
            .is_ok(),
        "systemd-analyze is missing: scripts/test installs it (Debian package systemd)"
    );
    for id in 1..=9 {
        let unit = rendered.join(format!("node-{id}/meridian-node-{id}.service"));
        let o = Command::new("systemd-analyze")
            .args(["verify", &s(&unit)])
            .output()
            .expect("systemd-analyze");
        assert!(
            o.status.success() && o.stderr.is_empty(),
            "systemd-analyze verify {}: {o:?}",
            unit.display()
        );
    }

    // The operator's part: node certificates of the cluster's CA where the configs say.
    let tls = rendered.join("tls");
    std::fs::create_dir_all(&tls).expect("tls dir");
    let ca = meridian_tls::gen::ca("rendered test CA").expect("ca");
    std::fs::write(tls.join("ca.pem"), &ca.cert).expect("write");
    for id in 1..=9u64 {
        let pem = meridian_tls::gen::node(&ca, id, &[host_of(id)]).expect("node cert");
        std::fs::write(tls.join(format!("node-{id}.pem")), &pem.cert).expect("write");
        std::fs::write(tls.join(format!("node-{id}.key")), &pem.key).expect("write");
    }

    let mut procs = Procs(Vec::new());
    let args = std::fs::read_to_string(rendered.join("wan-proxy.args")).expect("wan-proxy.args");
    let control = format!("127.0.0.1:{}", common::free_port("127.0.0.1"));
    let mut wan: Vec<&str> = vec!["wan-proxy", "--control", &control];
    wan.extend(args.lines());
    procs.0.push(spawn(&wan, &d.join("wan.log")));
    for id in 1..=9 {
        let config = rendered.join(format!("node-{id}/node.toml"));
        procs.0.push(spawn(
            &["server", "--config", &s(&config)],
            &d.join(format!("node-{id}.log")),
        ));
    }

    let token = meridian(&[
        "token",
        "mint",
        "--root-key",
        &s(&key),
        "--prefix",
        "/",
        "--ops",
        "all",
        "--ttl",
        "1h",
    ])
    .trim()
    .to_string();
    let options = Options {
        token: Some(token),
        call_timeout: Duration::from_secs(20),
        rpc_timeout: Duration::from_secs(20),
        ..Options::default()
    }
    .with_tls(&tls.join("ca.pem"), None)
    .expect("the CA");
    let client =
        |ip: &str| Client::new(vec![format!("{ip}:{port}")], options.clone()).expect("client");

    let logs = || {
        (1..=9)
            .map(|id| {
                let log =
                    std::fs::read_to_string(d.join(format!("node-{id}.log"))).unwrap_or_default();
                format!("--- node {id}\n{}", tail(&log))
            })
            .collect::<String>()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // Every region's group elects and takes writes (9 processes on a small machine).
        for (region, ip, _) in REGIONS {
            let c = client(ip);
            let key = format!("/{region}/rendered/ready");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            loop {
                match c.put(&key, "1").await {
                    Ok(_) => break,
                    Err(_) if tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Err(e) => panic!("{region} took no write in 120 s: {e}\n{}", logs()),
                }
            }
        }
        // A write from every region to every region's domain, read back from every region.
        for (from, ip, _) in REGIONS {
            let c = client(ip);
            for (to, _, _) in REGIONS {
                c.put(&format!("/{to}/rendered/from-{from}"), from)
                    .await
                    .unwrap_or_else(|e| panic!("put from {from} to {to}: {e}\n{}", logs()));
            }
        }
        for (at, ip, _) in REGIONS {
            let c = client(ip);
            for (from, _, _) in REGIONS {
                for (to, _, _) in REGIONS {
                    let key = format!("/{to}/rendered/from-{from}");
                    let r = c
                        .get_with(&key, Consistency::Sequential)
                        .await
                        .unwrap_or_else(|e| panic!("get {key} at {at}: {e}"));
                    let value = r.kv.as_ref().map(|kv| kv.value.clone());
                    assert_eq!(
                        value.as_deref(),
                        Some(from.as_bytes()),
                        "{key} read at {at}"
                    );
                }
            }
        }

        // The x/y anomaly: never both reads stale, and the history is sequentially consistent.
        let a = client("127.0.1.1");
        let b = client("127.0.2.1");
        let history = Arc::new(Mutex::new(History::new()));
        let mut both_stale = 0;
        for i in 0..50 {
            let (a_saw, b_saw) = xy_round(&a, &b, i, &history).await;
            if !a_saw && !b_saw {
                both_stale += 1;
            }
        }
        assert_eq!(
            both_stale, 0,
            "both reads stale in {both_stale} of 50 rounds"
        );
        let h = history.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Err(v) = check_sequential(&h) {
            panic!("the checker rejects the x/y history: {v}");
        }
    });
    drop(procs);
}

/// The host of node `id` in local-3region: 127.0.REGION.INDEX.
fn host_of(id: u64) -> String {
    format!("127.0.{}.{}", (id - 1) / 3 + 1, (id - 1) % 3 + 1)
}

/// The last lines of a log.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n") + "\n"
}
