//! Backup and restore (docs/operations.md): write to every group of a 3-region `meridian dev`
//! (overwrites, a delete, a key on a lease), `meridian snapshot save`, stop the cluster, wipe
//! its data, `meridian snapshot restore` every node's directory, start it again: every key is
//! back with its value, version and revisions, the deleted key stays deleted, and writes go on
//! after the saved revision. A corrupt or truncated file is refused, naming what is wrong,
//! and writes nothing; a restore into a directory that holds the group is refused.

mod common;

use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `meridian dev --insecure --no-wan` on `port` over `data`, until dropped.
struct Dev(Child, std::path::PathBuf);

impl Dev {
    fn start(port: u16, dir: &Path, name: &str) -> Dev {
        let ready = dir.join(format!("{name}.ready.json"));
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(common::BIN)
            .args([
                "dev",
                "--insecure",
                "--no-wan",
                "--http-port",
                "0",
                "--port",
            ])
            .arg(port.to_string())
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--ready-file")
            .arg(&ready)
            .env("MERIDIAN_LOG", "warn,openraft=error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn dev");
        let dev = Dev(child, log);
        let start = Instant::now();
        while !ready.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "dev never got ready: {}",
                std::fs::read_to_string(&dev.1).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        dev
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- dev log ---\n{}",
                std::fs::read_to_string(&self.1).unwrap_or_default()
            );
        }
    }
}

use common::meridian_json as meridian;

fn ok(endpoint: &str, args: &[&str]) -> String {
    let (success, out, err) = meridian(endpoint, args);
    assert!(success, "meridian {args:?}: {out}{err}");
    out
}

/// A key as a linearizable read sees it: (value, create, mod, version), or None if absent.
fn read(endpoint: &str, key: &str) -> Option<(String, u64, u64, u64)> {
    let (success, out, err) = meridian(endpoint, &["get", key, "--consistency", "linearizable"]);
    if !success && out.contains("NotFound") {
        return None;
    }
    assert!(success, "get {key}: {out}{err}");
    let v: Value = serde_json::from_str(out.trim()).expect("json");
    let kv = &v["kv"];
    Some((
        kv["value"].as_str().expect("value").to_string(),
        kv["create_revision"].as_u64().expect("create"),
        kv["mod_revision"].as_u64().expect("mod"),
        kv["version"].as_u64().expect("version"),
    ))
}

#[test]
fn save_wipe_restore_brings_back_every_key_and_revision() {
    common::watchdog(Duration::from_secs(600));
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port("127.0.1.1");
    let us = format!("127.0.1.1:{port}");
    let file = dir.path().join("cluster.snap");
    // The topology the restored cluster runs with: dev's, at this port.
    let topology = dir.path().join("topology.toml");
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../topology/local-3region.toml"
    ))
    .expect("topology");
    std::fs::write(&topology, text.replace(":7400", &format!(":{port}"))).expect("write");

    let keys: Vec<String> = ["us-east", "eu-west", "ap-northeast", "global"]
        .iter()
        .flat_map(|d| (0..15).map(move |i| format!("/{d}/backup/k{i}")))
        .collect();
    let before = {
        let _dev = Dev::start(port, dir.path(), "first");
        for (i, k) in keys.iter().enumerate() {
            ok(&us, &["put", k, &format!("v{i}")]);
        }
        ok(&us, &["put", "/us-east/backup/k1", "second"]);
        ok(&us, &["del", "/eu-west/backup/k2"]);
        let lease: Value =
            serde_json::from_str(ok(&us, &["lease", "grant", "/us-east/", "--ttl", "120"]).trim())
                .expect("lease json");
        let id = lease["id"].as_u64().expect("lease id").to_string();
        ok(&us, &["put", "/us-east/backup/leased", "x", "--lease", &id]);
        let before: Vec<_> = keys
            .iter()
            .chain([&"/us-east/backup/leased".to_string()])
            .map(|k| (k.clone(), read(&us, k)))
            .collect();
        assert_eq!(
            before[1].1.as_ref().map(|v| v.3),
            Some(2),
            "k1 overwritten once"
        );
        let out = ok(&us, &["snapshot", "save", file.to_str().expect("path")]);
        let saved: Value = serde_json::from_str(out.trim()).expect("save json");
        assert_eq!(
            saved["groups"].as_array().expect("groups").len(),
            4,
            "{saved}"
        );
        before
    };
    // The file checks, and says what it holds.
    let (success, out, err) = meridian(&us, &["snapshot", "status", file.to_str().expect("path")]);
    assert!(success, "{out}{err}");
    assert!(
        out.contains("\"us-east\"") && out.contains("\"global\""),
        "{out}"
    );

    // Damage is refused by status and restore, and a refused restore writes nothing.
    let good = std::fs::read(&file).expect("read");
    let flipped = dir.path().join("flipped.snap");
    let mut bad = good.clone();
    let at = good.len() / 2;
    bad[at] ^= 0x40;
    std::fs::write(&flipped, &bad).expect("write");
    let short = dir.path().join("short.snap");
    std::fs::write(&short, &good[..good.len() - 100]).expect("write");
    for (f, says) in [(&flipped, "checksum mismatch"), (&short, "truncated")] {
        let (success, out, err) = meridian(&us, &["snapshot", "status", f.to_str().expect("p")]);
        assert!(!success && err.contains(says), "status {f:?}: {out}{err}");
        let target = dir.path().join("refused");
        let (success, out, err) = meridian(
            &us,
            &[
                "snapshot",
                "restore",
                f.to_str().expect("p"),
                "--data-dir",
                target.to_str().expect("p"),
                "--topology",
                topology.to_str().expect("p"),
            ],
        );
        assert!(!success && err.contains(says), "restore {f:?}: {out}{err}");
        assert!(!target.exists(), "a refused restore wrote {target:?}");
    }

    // Wipe, restore every node, start again.
    std::fs::remove_dir_all(dir.path().join("data")).expect("wipe");
    let restore = |extra: &[&str]| {
        let mut args = vec![
            "snapshot",
            "restore",
            file.to_str().expect("p"),
            "--data-dir",
        ];
        let data = dir.path().join("data");
        let data = data.to_str().expect("p").to_string();
        args.push(&data);
        args.extend(["--topology", topology.to_str().expect("p")]);
        args.extend(extra);
        meridian(&us, &args)
    };
    let (success, out, err) = restore(&[]);
    assert!(success, "restore: {out}{err}");
    // Again into the same directories: refused, they hold the groups now.
    let (success, out, err) = restore(&[]);
    assert!(!success && err.contains("already holds"), "{out}{err}");

    let _dev = Dev::start(port, dir.path(), "restored");
    let eu = format!("127.0.2.1:{port}");
    let ap = format!("127.0.3.1:{port}");
    let mut highest = 0;
    for (i, (k, was)) in before.iter().enumerate() {
        // Read from every region in turn.
        let at = [&us, &eu, &ap][i % 3];
        let now = read(at, k);
        assert_eq!(&now, was, "{k} after the restore (read at {at})");
        highest = highest.max(was.as_ref().map_or(0, |v| v.2));
    }
    assert!(
        before
            .iter()
            .any(|(k, v)| k == "/eu-west/backup/k2" && v.is_none()),
        "the deleted key was absent before"
    );
    // Writes go on after the saved revisions.
    ok(&us, &["put", "/us-east/backup/after", "y"]);
    let after = read(&us, "/us-east/backup/after").expect("written");
    assert!(
        after.2 > highest,
        "revision {} after the restore, saved up to {highest}",
        after.2
    );
}
