//! `meridian wan` as the README and the hints of `meridian dev` and `meridian wan-proxy` write
//! it — `--control ADDR` after the subcommand — and as before, between `wan` and the
//! subcommand, or from MERIDIAN_WAN_CONTROL; against the real control port of a
//! `meridian wan-proxy` with the 3-region topology's links (the emulator `meridian dev` runs).
//! Bad input (an unknown region, nothing listening, a malformed address) exits non-zero with a
//! clear message, never a panic.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// `meridian wan-proxy`, killed on drop.
struct Proxy {
    child: Child,
    dir: tempfile::TempDir,
    /// The control address it printed.
    control: String,
    /// The command it printed for the user to try.
    hint: String,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("wan-proxy.log"));
            eprintln!(
                "--- meridian wan-proxy log ---\n{}",
                log.unwrap_or_default()
            );
        }
    }
}

/// Starts `meridian wan-proxy` with local-3region's round trips and one relay, on a free control
/// port; returns once it has printed its control address.
fn start_proxy() -> Proxy {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = std::fs::File::create(dir.path().join("wan-proxy.log")).expect("log file");
    let mut child = Command::new(common::BIN)
        .args([
            "wan-proxy",
            "--rtt",
            "us-east,eu-west,75",
            "--rtt",
            "us-east,ap-northeast,170",
            "--rtt",
            "eu-west,ap-northeast,240",
            // Never dialled: a relay is required, and its target is only reached on a connection.
            "--relay",
            "us-east,ap-northeast,127.0.0.1:0,127.0.0.1:9",
            "--control",
            "127.0.0.1:0",
        ])
        .env("MERIDIAN_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn meridian wan-proxy");
    let stdout = child.stdout.take().expect("stdout");
    let mut proxy = Proxy {
        child,
        dir,
        control: String::new(),
        hint: String::new(),
    };
    // "control: ADDR (meridian wan status --control ADDR)"
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read wan-proxy output");
        if let Some(rest) = line.strip_prefix("control: ") {
            let (addr, hint) = rest.split_once(" (").expect("control line with a hint");
            proxy.control = addr.to_string();
            proxy.hint = hint.trim_end_matches(')').to_string();
            return proxy;
        }
    }
    panic!("meridian wan-proxy exited without printing its control address");
}

/// Runs `meridian ARGS` with MERIDIAN_WAN_CONTROL = `env_control` (unset when `None`).
fn meridian(args: &[&str], env_control: Option<&str>) -> Output {
    let mut cmd = Command::new(common::BIN);
    cmd.args(args).stdin(Stdio::null());
    match env_control {
        Some(c) => cmd.env("MERIDIAN_WAN_CONTROL", c),
        None => cmd.env_remove("MERIDIAN_WAN_CONTROL"),
    };
    cmd.output().expect("run meridian")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `meridian ARGS`, asserts success and returns its stdout.
fn ok(args: &[&str]) -> String {
    let o = meridian(args, None);
    assert!(
        o.status.success(),
        "meridian {args:?} failed: {}\n{}",
        stderr(&o),
        stdout(&o)
    );
    stdout(&o)
}

/// Runs `meridian ARGS`, asserts a clean failure (exit 1, a message, no panic) that says
/// `words`.
fn fails(args: &[&str], words: &str) {
    let o = meridian(args, None);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "meridian {args:?}: {o:?}");
    assert!(
        err.contains(words),
        "meridian {args:?}: {err:?} lacks {words:?}"
    );
    assert!(
        !err.contains("panicked"),
        "meridian {args:?} panicked: {err}"
    );
}

/// The links `wan status` printed that are cut, as "a<->b", sorted; checks that it printed
/// exactly the three links of the 3-region topology with their round trips.
fn cut_links(status: &str) -> Vec<String> {
    let lines: Vec<&str> = status.lines().collect();
    assert_eq!(lines.len(), 3, "three links expected: {status}");
    for want in [
        "ap-northeast<->eu-west rtt=240ms",
        "ap-northeast<->us-east rtt=170ms",
        "eu-west<->us-east rtt=75ms",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(want)),
            "no {want:?} in {status}"
        );
    }
    let mut cut: Vec<String> = lines
        .iter()
        .filter(|l| l.contains(" cut=true"))
        .map(|l| l.split(' ').next().unwrap_or_default().to_string())
        .collect();
    cut.sort();
    cut
}

#[test]
fn wan_control_flag_after_the_subcommand() {
    common::watchdog(Duration::from_secs(120));
    let proxy = start_proxy();
    let c = proxy.control.as_str();

    // The hint wan-proxy prints (the same words as `meridian dev`'s), run as printed.
    let hint: Vec<&str> = proxy.hint.split_whitespace().collect();
    assert_eq!(
        hint,
        ["meridian", "wan", "status", "--control", c],
        "{}",
        proxy.hint
    );
    assert!(cut_links(&ok(&hint[1..])).is_empty());

    // The README's tour, word for word.
    assert!(cut_links(&ok(&["wan", "status", "--control", c])).is_empty());
    let out = ok(&["wan", "cut-region", "ap-northeast", "--control", c]);
    assert!(out.starts_with("ok"), "{out}");
    assert_eq!(
        cut_links(&ok(&["wan", "status", "--control", c])),
        ["ap-northeast<->eu-west", "ap-northeast<->us-east"]
    );
    let out = ok(&["wan", "heal-all", "--control", c]);
    assert!(out.starts_with("ok"), "{out}");
    assert!(cut_links(&ok(&["wan", "status", "--control", c])).is_empty());

    // Every other subcommand takes it after its arguments too.
    ok(&["wan", "cut", "us-east", "eu-west", "--control", c]);
    assert_eq!(
        cut_links(&ok(&["wan", "status", "--control", c])),
        ["eu-west<->us-east"]
    );
    ok(&["wan", "heal", "eu-west", "us-east", "--control", c]);
    ok(&["wan", "cut-region", "--control", c, "us-east"]);
    assert_eq!(
        cut_links(&ok(&["wan", "status", "--control", c])),
        ["ap-northeast<->us-east", "eu-west<->us-east"]
    );
    ok(&["wan", "heal-region", "us-east", "--control", c]);

    // The old position still works, and so does the environment variable.
    assert!(cut_links(&ok(&["wan", "--control", c, "status"])).is_empty());
    ok(&["wan", "--control", c, "cut", "eu-west", "ap-northeast"]);
    let o = meridian(&["wan", "status"], Some(c));
    assert!(o.status.success(), "{o:?}");
    assert_eq!(cut_links(&stdout(&o)), ["ap-northeast<->eu-west"]);
    // The flag wins over the environment variable.
    let o = meridian(&["wan", "heal-all", "--control", c], Some("127.0.0.1:1"));
    assert!(o.status.success(), "{o:?}");
    assert!(cut_links(&ok(&["wan", "status", "--control", c])).is_empty());

    // Bad input: clear errors, exit 1, no panic, and the emulator unchanged.
    fails(
        &["wan", "cut-region", "mars", "--control", c],
        "unknown region mars",
    );
    fails(
        &["wan", "cut", "us-east", "mars", "--control", c],
        "known links",
    );
    fails(
        &["wan", "status", "--control", "127.0.0.1:1"],
        "cannot reach the WAN emulator's control port 127.0.0.1:1",
    );
    fails(
        &["wan", "status", "--control", "not-an-address"],
        "cannot reach the WAN emulator's control port not-an-address",
    );
    let o = meridian(&["wan", "status", "--control"], None);
    assert_eq!(o.status.code(), Some(2), "clap usage error: {o:?}");
    assert!(cut_links(&ok(&["wan", "status", "--control", c])).is_empty());
}
