//! What the proxy-layer benchmarks share: a `meridian dev` child process, client options from
//! its ready file, its `/metrics`, and the process's memory and CPU from `/proc`.

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use meridian_sdk::Options;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `meridian dev` in a child process, killed on drop.
pub struct Dev {
    pub child: Child,
    pub ready: serde_json::Value,
    _dir: tempfile::TempDir,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dev {
    /// `meridian dev --port PORT EXTRA…` with its data in a temporary directory, once ready.
    pub fn start(meridian: &Path, port: u16, extra: &[&str]) -> Result<Dev> {
        let dir = tempfile::tempdir()?;
        let ready = dir.path().join("ready.json");
        let child = Command::new(meridian)
            .args(["dev", "--port", &port.to_string()])
            .args(extra)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--ready-file")
            .arg(&ready)
            .env("MERIDIAN_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // BENCH_DEV_LOG=FILE keeps the cluster's log.
            .stderr(match std::env::var_os("BENCH_DEV_LOG") {
                Some(f) => Stdio::from(std::fs::File::create(f)?),
                None => Stdio::null(),
            })
            .spawn()
            .with_context(|| format!("starting {} dev", meridian.display()))?;
        let mut dev = Dev {
            child,
            ready: serde_json::Value::Null,
            _dir: dir,
        };
        let start = Instant::now();
        loop {
            if let Ok(t) = std::fs::read_to_string(&ready) {
                if let Ok(v) = serde_json::from_str(&t) {
                    dev.ready = v;
                    return Ok(dev);
                }
            }
            if start.elapsed() > Duration::from_secs(120) {
                bail!("meridian dev did not become ready");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Client options with the dev's root token, over TLS with its CA (unless insecure).
    pub fn options(&self) -> Result<Options> {
        let options = Options {
            token: self.ready["token"].as_str().map(str::to_string),
            ..Options::default()
        };
        Ok(match self.ready["ca"].as_str() {
            Some(ca) => options.with_tls(Path::new(ca), None)?,
            None => options,
        })
    }

    /// `region`'s router endpoints.
    pub fn endpoints(&self, region: &str) -> Result<Vec<String>> {
        Ok(self.ready["regions"][region]["endpoints"]
            .as_array()
            .with_context(|| format!("no region {region}"))?
            .iter()
            .filter_map(|e| e.as_str().map(str::to_string))
            .collect())
    }
}

pub fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|_| unreachable!("bounds"))
}

/// p50/p99/max of a histogram of microseconds, in ms.
pub fn pct(h: &Histogram<u64>) -> String {
    format!(
        "p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms  (n={})",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0,
        h.len()
    )
}

/// VmRSS of `pid` in bytes.
pub fn rss(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")?;
    Ok(kb * 1024)
}

/// User + system CPU seconds `pid` has used.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ')'.
    let ticks: u64 =
        f.get(11).context("utime")?.parse::<u64>()? + f.get(12).context("stime")?.parse::<u64>()?;
    Ok(ticks as f64 / 100.0)
}

/// The unlabelled sample `name` of the `/metrics` at `http`.
pub fn metric(http: &str, name: &str) -> Result<f64> {
    let mut s = std::net::TcpStream::connect(http)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {http}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    text.lines()
        .find(|l| l.split(' ').next() == Some(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {name} in /metrics"))
}
