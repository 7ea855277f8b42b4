//! The real-process nemesis in CI (issue 17): `meridian sim nemesis` for 40 seconds with a fixed
//! seed (11, which draws every kind of fault) — `meridian dev --processes` (nine node processes under libfaketime, three regions
//! under the WAN emulator), a client, a watcher and two lockers per region, and eight faults
//! drawn from kill -9, leader kill, SIGSTOP past the lock TTL, region cut and wall-clock jump.
//! The command checks the history itself (lost writes, sequential consistency, both
//! linearizability checkers, the watch validators, the lock rules at a fenced resource); this
//! test reads its report, asserts that the workload really ran, and checks the exported
//! history again with `meridian sim check`.

mod common;

use std::process::Command;
use std::time::Duration;

#[test]
fn the_nemesis_finds_no_lost_write_and_no_anomaly() {
    common::watchdog(Duration::from_secs(600));
    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("report.json");
    let history = dir.path().join("history.edn");
    let port = common::free_port("127.0.1.1");
    let out = Command::new(common::BIN)
        .args(["sim", "nemesis", "--seconds", "40", "--seed", "11"])
        .args(["--port", &port.to_string()])
        .arg("--libfaketime")
        .arg(common::libfaketime())
        .arg("--report")
        .arg(&report)
        .arg("--export")
        .arg(&history)
        .output()
        .expect("run meridian sim nemesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "sim nemesis failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("the report"))
            .expect("the report is JSON");
    assert_eq!(r["lost_writes"], 0, "{r}");
    assert_eq!(r["violations"].as_array().map(Vec::len), Some(0), "{r}");
    let faults: Vec<&str> = r["faults"]
        .as_array()
        .map(|f| f.iter().filter_map(|f| f.as_str()).collect())
        .unwrap_or_default();
    assert_eq!(faults.len(), 8, "{r}");
    // Seed 11 draws every kind of fault.
    for kind in ["kill -9 node", "leader", "SIGSTOP", "cut ", "wall clock"] {
        assert!(
            faults.iter().any(|f| f.contains(kind)),
            "no {kind:?} in {faults:?}"
        );
    }
    let n = |k: &str| r[k].as_u64().unwrap_or(0);
    assert!(n("acknowledged_writes") > 50, "the workload ran: {r}");
    assert!(n("lock_holds") > 10, "the lockers held their locks: {r}");
    assert!(n("watch_events") > 10, "the watchers saw the writes: {r}");

    // The exported history reads back, and both checkers find it linearizable again.
    let check = Command::new(common::BIN)
        .args(["sim", "check"])
        .arg(&history)
        .output()
        .expect("run meridian sim check");
    assert!(check.status.success(), "sim check: {check:?}");
}
