//! What the proxy-layer benchmarks share: a `meridian dev` child process (`meridian-harness`'s
//! [`Dev`]), its `/metrics`, and the process's memory and CPU from `/proc`.

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use std::io::{Read, Write};
use std::time::Duration;

pub use meridian_harness::dev::Dev;

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
