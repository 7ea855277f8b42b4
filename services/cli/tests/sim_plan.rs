//! `meridian sim plan` on the shipped topology and example workload; bad files are explained.

mod common;

use std::process::Command;

fn plan(workload: &std::path::Path) -> std::process::Output {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    Command::new(common::BIN)
        .args(["sim", "plan", "--topology"])
        .arg(format!("{root}/topology/local-3region.toml"))
        .arg("--workload")
        .arg(workload)
        .output()
        .expect("run meridian sim plan")
}

#[test]
fn plans_the_example_workload() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let o = plan(std::path::Path::new(&format!(
        "{root}/simulations/scenarios/plan-3region.toml"
    )));
    assert!(o.status.success(), "{o:?}");
    let out = String::from_utf8_lossy(&o.stdout);
    let orders = out
        .split("domain ")
        .find(|s| s.starts_with("/orders/"))
        .expect("orders");
    assert!(orders.contains("recommended owner: eu-west"), "{out}");
    let eu = out
        .split("domain ")
        .find(|s| s.starts_with("/customers-eu/"))
        .expect("customers-eu");
    assert!(
        eu.contains("excluded us-east: lacks tag jurisdiction"),
        "{out}"
    );
}

#[test]
fn a_bad_workload_is_explained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("w.toml");
    std::fs::write(
        &path,
        "[[domain]]\nprefix = \"/a/\"\nread_ratio = 0.5\nclients = { mars = 5 }\n",
    )
    .expect("write");
    let o = plan(&path);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("unknown region \"mars\""), "{err}");
}
