//! `meridian sim sweep` as a user runs it: a short scenario in mode c (the missing sync, the
//! harness's known-bad deployment) fails with the seed, the violation and the command that
//! replays it, and exits 1; the same scenario in mode d passes with a summary and exits 0, and
//! its exported history (Jepsen EDN) passes `meridian sim check` where a stale read fails it;
//! bad arguments, scenarios and history files are refused with what is wrong.

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

    let export = dir.path().join("histories");
    let (ok, out) = sweep(
        dir.path(),
        "d",
        "2",
        &[
            "--seeds",
            "1",
            "--from",
            "3",
            "--export",
            export.to_str().expect("utf-8 path"),
        ],
    );
    assert!(ok, "mode d failed: {out}");
    assert!(
        out.contains("seeds 3..3 (1 run)") && out.contains("0 failing seed(s)"),
        "{out}"
    );
    assert!(out.contains("seeds/hour"), "{out}");

    // The exported history (Jepsen EDN) checks out with both checkers, from the file.
    let exported = export.join("seed-3-run0-d.edn");
    let text = std::fs::read_to_string(&exported).expect("the sweep exported seed 3's history");
    assert!(
        text.lines().count() > 20 && text.contains(":type :invoke") && text.contains(":f :write"),
        "{text}"
    );
    let (code, out) = check(&exported);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("linearizable (") && out.contains("stateright agree"),
        "{out}"
    );

    // A history with a stale read: both checkers fail it (exit 1), naming the key.
    let stale = dir.path().join("stale.edn");
    std::fs::write(
        &stale,
        "{:time 0, :type :invoke, :process 0, :f :write, :value [\"/x\" [nil \"1\"]]}\n\
         {:time 10, :type :ok, :process 0, :f :write, :value [\"/x\" [1 \"1\"]]}\n\
         {:time 20, :type :invoke, :process 0, :f :write, :value [\"/x\" [nil \"2\"]]}\n\
         {:time 30, :type :ok, :process 0, :f :write, :value [\"/x\" [2 \"2\"]]}\n\
         {:time 40, :type :invoke, :process 1, :f :read, :value [\"/x\" nil]}\n\
         {:time 50, :type :ok, :process 1, :f :read, :value [\"/x\" [1 \"1\"]]}\n",
    )
    .expect("write history");
    let (code, out) = check(&stale);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("NOT linearizable")
            && out.contains("both checkers agree")
            && out.contains("/x"),
        "{out}"
    );

    // A broken file is refused, with the event and what is wrong.
    std::fs::write(
        &stale,
        "{:time 0, :type :ok, :process 0, :f :read, :value [\"/x\" nil]}\n",
    )
    .expect("write history");
    let (code, out) = check(&stale);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("event 0: process 0 completes an operation it never invoked"),
        "{out}"
    );

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

/// `meridian sim check FILE`: exit code and output.
fn check(path: &std::path::Path) -> (Option<i32>, String) {
    let o = Command::new(common::BIN)
        .args(["sim", "check"])
        .arg(path)
        .output()
        .expect("run meridian sim check");
    (
        o.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}
