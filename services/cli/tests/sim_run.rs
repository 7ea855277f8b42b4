//! `meridian sim run` on the smoke scenario (modes c and d, 3 s each, real dev clusters under
//! the WAN emulator): JSON for every mode and region, and the price of consistency shows —
//! remote reads in mode d pay a sync that mode c skips.

mod common;

use std::process::Command;

#[test]
fn runs_modes_and_reports_per_region() {
    common::watchdog(std::time::Duration::from_secs(300));
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("out.json");
    let svg = dir.path().join("out.svg");
    let port = common::free_port("127.0.1.1");
    let o = Command::new(common::BIN)
        .args(["sim", "run"])
        .arg(format!("{root}/simulations/scenarios/smoke.toml"))
        .arg("--json")
        .arg(&json)
        .arg("--svg")
        .arg(&svg)
        .args(["--port", &port.to_string()])
        .output()
        .expect("run meridian sim run");
    assert!(o.status.success(), "{o:?}");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json")).expect("valid JSON");
    let runs = v["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2, "{v}");
    let remote_read_p50 = |mode: &str| -> f64 {
        let run = runs.iter().find(|r| r["mode"] == mode).expect("mode");
        let regions = run["regions"].as_object().expect("regions");
        assert_eq!(regions.len(), 3, "{run}");
        for (name, r) in regions {
            assert!(r["ops_per_sec"].as_f64().expect("ops") > 0.0, "{name}: {r}");
        }
        let ps: Vec<f64> = regions
            .values()
            .map(|r| r["latency"]["remote read"]["p50_ms"].as_f64().expect("p50"))
            .collect();
        ps.iter().sum::<f64>() / ps.len() as f64
    };
    let (c, d) = (remote_read_p50("c"), remote_read_p50("d"));
    assert!(d > c + 20.0, "remote reads: mode c {c} ms, mode d {d} ms");
    let chart = std::fs::read_to_string(&svg).expect("svg");
    assert!(
        chart.starts_with("<svg") && chart.contains("<rect"),
        "{chart}"
    );
    // `sim chart` draws the same chart again from the JSON; a file that is not a results
    // file is refused with what is wrong.
    let again = dir.path().join("again.svg");
    let chart_of = |results: &std::path::Path| {
        Command::new(common::BIN)
            .args(["sim", "chart"])
            .arg(results)
            .arg("--svg")
            .arg(&again)
            .output()
            .expect("run meridian sim chart")
    };
    let o = chart_of(&json);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(std::fs::read_to_string(&again).expect("svg"), chart);
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"mode\": \"d\"}").expect("write");
    let o = chart_of(&bad);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no \"runs\" list"), "{err}");
}
