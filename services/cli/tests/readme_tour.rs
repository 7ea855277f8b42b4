//! The README's tour, every command as written, against `meridian dev` started as the README
//! starts it (default ports: the endpoints the tour names). `$M` is this build's binary (the
//! README: "or target/release/meridian"), `ADDR` the WAN control address dev prints; files the
//! tour writes (root.key, plan.json, out.json, out.svg, again.svg) land in a temporary
//! directory that links the repository's `topology/` and `simulations/`. A command that fails,
//! or prints something other than what the tour says, fails the test with its output — so the
//! README cannot drift from the code.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const README: &str = include_str!("../../../README.md");

/// The tour's commands: the first ```sh block under "## A tour", comments stripped,
/// comment-only lines dropped. Variable assignments come back as they are.
fn tour() -> Vec<String> {
    let section = README
        .split("\n## A tour")
        .nth(1)
        .expect("README has a section \"## A tour\"");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("the tour has a ```sh block");
    block
        .lines()
        .map(|l| {
            // A comment starts at "  #" (two spaces) or at the start of the line.
            let code = match l.find("  #") {
                Some(i) => &l[..i],
                None => l,
            };
            code.trim().to_string()
        })
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// What a command's output must contain (beyond exiting 0), for the commands whose answer the
/// tour's comments state.
fn expected(cmd: &str) -> &'static [&'static str] {
    match cmd {
        "$M ls /" => &["ap-northeast", "eu-west", "global", "us-east"],
        "$M $EU get /us-east/app/config" => &["replicas"],
        "$M put /eu-west/queue/job- x --sequential" => &["/eu-west/queue/job-0000000000000000000"],
        "$M get /us-east/app/ --prefix --limit 100" => {
            &["/us-east/app/config", "/us-east/app/blob"]
        }
        "$M status" => &["us-east", "eu-west", "ap-northeast", "global"],
        "$M member list" => &["voters", "learners"],
        "$M topology check topology/local-3region.toml --live" => {
            &["live: every group's membership matches"]
        }
        "$M snapshot save cluster.snap" | "$M snapshot status cluster.snap" => {
            &["global", "revision"]
        }
        l if l.starts_with("curl ") => &["\"key\":\"/us-east/app/config\""],
        "$M sim check histories/seed-1-run0-d.edn" => &["linearizable (", "stateright agree"],
        "$M sim nemesis --seconds 10 --seed 11" => &["0 lost", "lock holds"],
        "$M wan cut-region ap-northeast --control ADDR" | "$M wan heal-all --control ADDR" => {
            &["ok"]
        }
        _ => &[],
    }
}

/// Links the repository's `topology/` and `simulations/` into `dir`.
fn workdir(dir: &Path) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for d in ["topology", "simulations"] {
        std::os::unix::fs::symlink(repo.join(d).canonicalize().expect("repo dir"), dir.join(d))
            .expect("link");
    }
}

struct Dev(std::process::Child, tempfile::TempDir);

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.1.path().join("dev.log")).unwrap_or_default();
            let tail: String = log.lines().rev().take(40).collect::<Vec<_>>().join("\n");
            eprintln!("--- meridian dev log (last lines, newest first) ---\n{tail}");
        }
    }
}

/// `meridian status` against the dev cluster, for a failure's message.
fn status_now() -> String {
    match Command::new(common::BIN).arg("status").output() {
        Ok(o) => format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => format!("(status failed to run: {e})"),
    }
}

#[test]
fn every_command_of_the_readme_tour_works_as_written() {
    common::watchdog(Duration::from_secs(1800));
    let lines = tour();
    assert!(
        lines.iter().any(|l| l == "M=\"cargo run --release -q --\""),
        "the tour defines $M as `cargo run --release -q --`: {lines:?}"
    );
    // `meridian dev` as the README runs it (its default ports), in a directory of its own.
    let dir = tempfile::tempdir().expect("tempdir");
    let ready = dir.path().join("ready.json");
    let log = std::fs::File::create(dir.path().join("dev.log")).expect("log");
    let child = Command::new(common::BIN)
        .arg("dev")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--ready-file")
        .arg(&ready)
        .env("MERIDIAN_LOG", "warn,openraft=error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn meridian dev");
    let dev = Dev(child, dir);
    let start = Instant::now();
    let ready: serde_json::Value = loop {
        if let Ok(t) = std::fs::read_to_string(&ready) {
            break serde_json::from_str(&t).expect("ready file");
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "dev never got ready"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let control = ready["wan_control"]
        .as_str()
        .expect("dev prints its WAN control address")
        .to_string();
    let work = tempfile::tempdir().expect("workdir");
    workdir(work.path());

    // Variables the tour sets (EU=...), with $M this build's binary.
    let mut prelude = format!("set -o pipefail\nM={}\n", common::BIN);
    let mut ran = 0;
    for line in &lines {
        if let Some((name, _)) = line.split_once('=') {
            if name.chars().all(|c| c.is_ascii_uppercase()) {
                if name != "M" {
                    prelude.push_str(line);
                    prelude.push('\n');
                }
                continue;
            }
        }
        let cmd = line.replace("ADDR", &control);
        // A watch streams until stopped: it must print the key, then it is stopped.
        let streams = cmd.contains(" watch ");
        let script = if streams {
            format!("{prelude}timeout 10 {cmd}")
        } else {
            format!("{prelude}{cmd}")
        };
        let t = Instant::now();
        let out = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(work.path())
            .stdin(Stdio::null())
            .output()
            .expect("run bash");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let fine = if streams {
            out.status.code() == Some(124) && stdout.contains("/us-east/app/config")
        } else {
            out.status.success()
        };
        assert!(
            fine,
            "the README's `{line}` failed ({:?}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n\
             --- the cluster's status now\n{}",
            out.status,
            status_now()
        );
        for want in expected(line) {
            assert!(
                stdout.contains(want),
                "the README's `{line}` did not print {want:?}:\n{stdout}"
            );
        }
        println!("ok in {:>6.1?}: {line}", t.elapsed());
        ran += 1;
    }
    assert!(ran >= 30, "only {ran} commands in the tour? {lines:?}");
    drop(dev);
}
