//! `meridian dev` as a user runs it (the default 3-region topology under the WAN emulator): ready
//! file, the CLI verbs in human and JSON output against the eu-west endpoint on keys of both
//! us-east (forwarded writes, reads from the local learner) and eu-west, `put` from stdin, the
//! shell's single session, `ls /` showing the domains, `status` across the cluster, exit codes,
//! clean stop on SIGTERM, and data that survives a restart with the same `--data-dir`.

mod common;

use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The dev process, killed if the test ends early (a panic must not leave it running).
struct Dev(Child);

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_dev(data: &Path, ready: &Path, port: u16) -> Dev {
    let _ = std::fs::remove_file(ready);
    let child = Command::new(common::BIN)
        .args(["dev", "--port", &port.to_string(), "--http-port", "0"])
        .arg("--data-dir")
        .arg(data)
        .arg("--ready-file")
        .arg(ready)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn meridian dev");
    Dev(child)
}

fn wait_ready(ready: &Path) -> String {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if let Ok(text) = std::fs::read_to_string(ready) {
            let v: Value = serde_json::from_str(&text).expect("ready file is JSON");
            return v["regions"]["eu-west"]["endpoint"]
                .as_str()
                .expect("endpoint")
                .to_string();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("meridian dev never wrote its ready file");
}

fn cli(endpoint: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(common::BIN)
        .arg("--endpoint")
        .arg(endpoint)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cli");
    {
        let mut input = child.stdin.take().expect("stdin");
        if let Some(bytes) = stdin {
            input.write_all(bytes).expect("write stdin");
        }
    }
    child.wait_with_output().expect("cli output")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn sigterm(dev: &mut Dev) -> std::process::ExitStatus {
    let child = &mut dev.0;
    let pid = child.id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "dev did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn dev_cluster_cli_session_and_restart() {
    common::watchdog(std::time::Duration::from_secs(300));
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let ready = dir.path().join("ready.json");
    let port = common::free_port("127.0.1.1");
    let mut dev = start_dev(&data, &ready, port);
    let ep = wait_ready(&ready);

    let o = cli(&ep, &["put", "/us-east/app/config", "v1"], None);
    assert!(o.status.success(), "{o:?}");
    assert!(
        stdout(&o).starts_with("OK /us-east/app/config revision "),
        "{}",
        stdout(&o)
    );

    // A value too large for a command line comes from stdin, as with etcdctl.
    let big = vec![b'z'; 300_000];
    let o = cli(&ep, &["put", "/us-east/app/blob"], Some(&big));
    assert!(o.status.success(), "{o:?}");

    let o = cli(&ep, &["--output", "json", "get", "/us-east/app/blob"], None);
    let v: Value = serde_json::from_str(stdout(&o).trim()).expect("json");
    assert_eq!(v["kv"]["value"].as_str().expect("value").len(), 300_000);

    let o = cli(&ep, &["get", "/us-east/app/config"], None);
    assert_eq!(stdout(&o).trim(), "v1");
    let o = cli(&ep, &["ls", "/us-east/app"], None);
    assert_eq!(stdout(&o).trim(), "blob\nconfig");

    // Failing commands exit non-zero and say why.
    let o = cli(&ep, &["get", "/us-east/app/missing"], None);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not found"));
    let o = cli(&ep, &["--output", "json", "put", "app", "x"], None);
    assert!(!o.status.success());
    let v: Value = serde_json::from_str(stdout(&o).trim()).expect("json error");
    assert_eq!(v["error"]["rule"], "key_leading_slash");

    // Conditional txn.
    let o = cli(
        &ep,
        &[
            "txn",
            "--if",
            "value /us-east/app/config = v1",
            "--then",
            "put /us-east/app/config v2",
            "--else",
            "get /us-east/app/config",
        ],
        None,
    );
    assert!(stdout(&o).starts_with("SUCCESS"), "{}", stdout(&o));

    // The shell runs every line in one session: one result line each, errors inline.
    let script = b"put /eu-west/s/a 1\nget /eu-west/s/a\nput bad 1\nput /eu-west/s/a 2 --expected-version 1\nget /eu-west/s/a\ndel /eu-west/s/ --prefix\nls /eu-west/s\n";
    let o = cli(&ep, &["--output", "json", "shell"], Some(script));
    assert!(
        !o.status.success(),
        "one command failed, so the shell exits non-zero"
    );
    let lines: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 7, "{}", stdout(&o));
    assert_eq!(lines[1]["kv"]["value"], "1");
    assert_eq!(lines[2]["error"]["rule"], "key_leading_slash");
    assert_eq!(lines[3]["succeeded"], true);
    assert_eq!(lines[4]["kv"]["value"], "2");
    assert_eq!(lines[5]["deleted"], 1);
    assert_eq!(lines[6]["children"], Value::Array(vec![]));

    // `ls /` shows where things live: one entry per domain.
    let o = cli(&ep, &["ls", "/"], None);
    assert_eq!(
        stdout(&o).trim(),
        "ap-northeast\neu-west\nglobal\nus-east",
        "{o:?}"
    );
    // A key in no domain is refused with the rule and the list of domains.
    let o = cli(&ep, &["--output", "json", "put", "/nowhere/x", "1"], None);
    assert!(!o.status.success());
    let v: Value = serde_json::from_str(stdout(&o).trim()).expect("json error");
    assert_eq!(v["error"]["rule"], "no_domain", "{v}");
    // A stale read reports the replica's lag.
    let o = cli(
        &ep,
        &[
            "--output",
            "json",
            "get",
            "/us-east/app/config",
            "--consistency",
            "stale:60000",
        ],
        None,
    );
    let v: Value = serde_json::from_str(stdout(&o).trim()).expect("json");
    assert!(v["header"]["lag_ms"].is_u64(), "{v}");
    let o = cli(
        &ep,
        &["get", "/us-east/app/config", "--consistency", "eventual"],
        None,
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown consistency"));
    // Status shows every group and every replica, learners included.
    let o = cli(&ep, &["--output", "json", "status"], None);
    let v: Value = serde_json::from_str(stdout(&o).trim()).expect("json status");
    let groups = v["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 4, "{v}");
    for g in groups {
        assert_eq!(g["replicas"].as_array().expect("replicas").len(), 9, "{g}");
        assert!(g["leader"].as_u64().expect("leader") > 0, "{g}");
    }

    // Stops cleanly on SIGTERM, and comes back with its data.
    let status = sigterm(&mut dev);
    assert!(status.success(), "dev exit status {status:?}");
    let mut dev = start_dev(&data, &ready, port);
    let ep = wait_ready(&ready);
    let o = cli(
        &ep,
        &[
            "get",
            "/us-east/app/config",
            "--consistency",
            "linearizable",
        ],
        None,
    );
    assert_eq!(stdout(&o).trim(), "v2", "{o:?}");
    sigterm(&mut dev);
}
