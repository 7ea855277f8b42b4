//! `meridian sim sweep` as a user runs it: a short scenario in mode c (the missing sync, the
//! harness's known-bad deployment) fails with the seed, the violation and the command that
//! replays it, and exits 1; the same scenario in mode d passes with a summary and exits 0; bad
//! arguments and scenarios are refused with what is wrong.

mod common;

use std::process::Command;

const SCENARIO: &str = "name = 'cli-sweep'\nmodes = ['MODE']\nduration_s = 5\nwarmup_s = 6\n\
clients_per_region = 2\nread_ratio = 0.5\nlocality = 0.5\nkeys_per_region = 3\nrandom_faults = FAULTS\n";

fn sweep(dir: &std::path::Path, mode: &str, faults: &str, args: &[&str]) -> (bool, String) {
    let path = dir.join(format!("{mode}-{faults}.toml"));
    std::fs::write(
        &path,
        SCENARIO.replace("MODE", mode).replace("FAULTS", faults),
    )
    .expect("scenario");
    let o = Command::new(common::BIN)
        .args(["sim", "sweep"])
        .arg(&path)
        .args(args)
        .output()
        .expect("run meridian sim sweep");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

#[test]
fn a_sweep_reports_a_failing_seed_with_its_replay_and_passes_meridian() {
    common::watchdog(std::time::Duration::from_secs(400));
    let dir = tempfile::tempdir().expect("tempdir");

    let (ok, out) = sweep(
        dir.path(),
        "c",
        "0",
        &["--seeds", "2", "--jobs", "2", "--fail-fast"],
    );
    assert!(!ok, "mode c should fail: {out}");
    assert!(out.contains("FAILED seed "), "{out}");
    assert!(
        out.contains("sequential consistency: not sequentially consistent"),
        "{out}"
    );
    assert!(out.contains("shortest failing prefix:"), "{out}");
    assert!(
        out.contains("replay: meridian sim run ") && out.contains("--deterministic --seed "),
        "{out}"
    );

    let (ok, out) = sweep(dir.path(), "d", "2", &["--seeds", "1", "--from", "3"]);
    assert!(ok, "mode d failed: {out}");
    assert!(
        out.contains("seeds 3..3 (1 run)") && out.contains("0 failing seed(s)"),
        "{out}"
    );
    assert!(out.contains("seeds/hour"), "{out}");

    let (ok, out) = sweep(dir.path(), "d", "2", &["--seeds", "0"]);
    assert!(
        !ok && out.contains("--seeds must be between 1 and"),
        "{out}"
    );
    let (ok, out) = sweep(dir.path(), "d", "99", &["--seeds", "1"]);
    assert!(
        !ok && out.contains("random_faults: 99 is more than 20"),
        "{out}"
    );
}
