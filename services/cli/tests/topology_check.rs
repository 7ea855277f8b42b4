//! `meridian topology check` as an operator runs it: the shipped files pass with a summary; a
//! broken file prints every problem with its location and exits 1. (Each rule has its own test
//! in `services/topology/tests/invalid.rs`; this checks the command around them.)

mod common;

use std::process::Command;

fn check(path: &std::path::Path) -> (bool, String, String) {
    let o = Command::new(common::BIN)
        .args(["topology", "check"])
        .arg(path)
        .output()
        .expect("run meridian topology check");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

#[test]
fn shipped_topologies_pass() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../topology");
    for (file, regions, nodes) in [("local-3region.toml", 3, 9), ("five-region.toml", 5, 15)] {
        let (ok, out, err) = check(&dir.join(file));
        assert!(ok, "{file}: {err}");
        assert!(
            out.contains(&format!("{regions} regions, {nodes} nodes")),
            "{file}: {out}"
        );
    }
}

#[test]
fn broken_topology_reports_every_problem_with_its_location() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("broken.toml");
    std::fs::write(
        &path,
        r#"name = "broken"
[[regions]]
name = "a"
[[regions]]
name = "b"
[[nodes]]
id = 1
region = "a"
address = "127.0.0.1:1"
[[nodes]]
id = 1
region = "mars"
address = "127.0.0.1:1"
[rtt_ms]
a = { b = 10 }
b = { a = 12 }
[[groups]]
id = 1
name = "g"
kind = "regional"
home = "a"
voters = [1]
learner_regions = []
[[domains]]
prefix = "/x/"
group = "nope"
"#,
    )
    .expect("write");
    let (ok, out, err) = check(&path);
    assert!(!ok, "a broken file must fail: {out}");
    for expected in [
        "duplicate",  // node id 1 twice, address twice
        "mars",       // unknown region
        "asymmetric", // 10 vs 12
        "at least 3 voters",
        "nope",  // unowned domain
        "line ", // locations carry line numbers
        "broken.toml",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert!(
        err.lines().count() >= 5,
        "every problem on its own line:\n{err}"
    );

    let missing = dir.path().join("missing.toml");
    let (ok, _, err) = check(&missing);
    assert!(!ok);
    assert!(err.contains("missing.toml"), "{err}");
}

/// `topology check FILE --live` against a running 3-region `meridian dev`: the file it runs
/// matches once every learner has joined; a file that gives ap-northeast's group fewer learner
/// regions names each node whose live role differs, and exits 1.
#[test]
fn live_check_reports_drift_from_the_running_cluster() {
    common::watchdog(std::time::Duration::from_secs(240));
    let dev = common::DevCluster::start(&["--insecure", "--no-wan"]);
    let endpoint = dev.endpoint("us-east");
    let live = |path: &std::path::Path| {
        let o = Command::new(common::BIN)
            .args(["--endpoint", &endpoint, "topology", "check"])
            .arg(path)
            .arg("--live")
            .output()
            .expect("run meridian topology check --live");
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).to_string(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    let shipped =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../topology/local-3region.toml");
    let start = std::time::Instant::now();
    loop {
        let (ok, out, err) = live(&shipped);
        if ok {
            assert!(
                out.contains("live: every group's membership matches"),
                "{out}"
            );
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(90),
            "the running dev never matched its own topology: {out}{err}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let text = std::fs::read_to_string(&shipped).expect("shipped topology");
    let narrowed = text.replacen(
        "voters = [7, 8, 9]\nlearner_regions = [\"us-east\", \"eu-west\"]",
        "voters = [7, 8, 9]\nlearner_regions = [\"eu-west\"]",
        1,
    );
    assert_ne!(narrowed, text, "the shipped file changed shape");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("narrowed.toml");
    std::fs::write(&path, narrowed).expect("write");
    let (ok, out, err) = live(&path);
    assert!(!ok, "drift must exit 1: {out}{err}");
    for node in [1, 2, 3] {
        let line = format!(
            "drift: group 3 (ap-northeast): node {node} is a learner of the group; the topology \
             makes it not a member"
        );
        assert!(out.contains(&line), "no {line:?} in\n{out}");
    }
    assert_eq!(out.matches("drift:").count(), 3, "{out}");
}
