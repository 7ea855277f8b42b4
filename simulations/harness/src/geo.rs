//! `meridian bench-geo`: what the composition router costs under the WAN emulator. Starts
//! `meridian dev` (the 3-region topology) without and then with the emulator, and measures:
//!
//! 1. local-domain writes and reads, WAN off vs on (remote regions must not slow local work);
//! 2. a read of a remote domain right after a switch, as a multiple of the round trip;
//! 3. repeated reads of one remote group (no sync after the first: a local read);
//! 4. concurrent sessions switching to one remote group: WAN syncs sent per read;
//! 5. learner apply lag under sustained writes over the 170 ms link, in entries and ms.
//!
//! `--security-cost` measures instead what security (mTLS and tokens) adds to a WAN sync round:
//! the switch reads of (2) from eu-west, against a secure dev and an `--insecure` one in turn.

use anyhow::Context;
use hdrhistogram::Histogram;
use meridian_sdk::{Client, Consistency};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct BenchGeoArgs {
    /// Seconds per latency measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent sessions switching to one remote group.
    #[arg(long, default_value_t = 100)]
    sessions: usize,
    /// Port for the dev clusters.
    #[arg(long, default_value_t = 7450)]
    port: u16,
    /// Only measure a WAN sync round with security on vs off (ROUNDS devs of each, in turn).
    #[arg(long, value_name = "ROUNDS")]
    security_cost: Option<usize>,
}

pub(crate) use crate::dev::Dev;

/// `meridian dev` (this binary's), with the WAN emulator or without.
fn start_dev(port: u16, wan: bool) -> anyhow::Result<Dev> {
    Dev::start_here(port, if wan { &[] } else { &["--no-wan"] })
}

pub(crate) fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|_| unreachable!("valid histogram bounds"))
}

pub(crate) fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Local-domain put and sequential get latency, one session in us-east, for `secs`.
async fn local_ops(dev: &Dev, secs: u64) -> anyhow::Result<(Histogram<u64>, Histogram<u64>)> {
    let c = dev.client("us-east")?;
    let (mut put, mut get) = (hist(), hist());
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut n = 0u64;
    while Instant::now() < stop {
        let key = format!("/us-east/bench/k{}", n % 1000);
        let t = Instant::now();
        c.put(&key, vec![b'v'; 256]).await?;
        put.saturating_record(t.elapsed().as_micros() as u64);
        let t = Instant::now();
        c.get(&key).await?;
        get.saturating_record(t.elapsed().as_micros() as u64);
        n += 1;
    }
    Ok((put, get))
}

/// From `region`: a local write, then a read of us-east's domain (a switch: the router
/// syncs), then `repeats` more reads of it (no switch); interleaved, another session at the
/// same router reads its own region's domain `repeats` times (the local baseline under the
/// same conditions). Returns (switch reads, repeated reads, local reads).
async fn switch_reads(
    dev: &Dev,
    region: &str,
    secs: u64,
    repeats: usize,
) -> anyhow::Result<(Histogram<u64>, Histogram<u64>, Histogram<u64>)> {
    let c = dev.client(region)?;
    let local = dev.client(region)?;
    let (mut switch, mut repeat, mut base) = (hist(), hist(), hist());
    let stop = Instant::now() + Duration::from_secs(secs);
    let own = format!("/{region}/bench/own");
    while Instant::now() < stop {
        c.put(&own, "x").await?;
        let t = Instant::now();
        let r = c
            .get_with("/us-east/bench/hot", Consistency::Sequential)
            .await?;
        switch.saturating_record(t.elapsed().as_micros() as u64);
        anyhow::ensure!(
            r.header.as_ref().is_some_and(|h| h.synced),
            "a switch read was not synced"
        );
        for _ in 0..repeats {
            let t = Instant::now();
            c.get_with("/us-east/bench/hot", Consistency::Sequential)
                .await?;
            repeat.saturating_record(t.elapsed().as_micros() as u64);
            let t = Instant::now();
            local.get_with(&own, Consistency::Sequential).await?;
            base.saturating_record(t.elapsed().as_micros() as u64);
        }
    }
    Ok((switch, repeat, base))
}

/// `syncs_sent` and `synced_reads` for group 1 at the node behind `c`.
async fn sync_counters(c: &Client) -> anyhow::Result<(u64, u64)> {
    let s = c.status(false).await?;
    let g = s
        .groups
        .iter()
        .find(|g| g.group == 1)
        .context("group 1 not hosted")?;
    Ok((g.syncs_sent, g.synced_reads))
}

/// Switch reads from eu-west of us-east's domain (one sync round over the 75 ms link each)
/// against secure and `--insecure` devs with the WAN emulator, `rounds` of each in turn.
async fn security_cost(args: &BenchGeoArgs, rounds: usize) -> anyhow::Result<ExitCode> {
    let secs = args.seconds;
    println!("# meridian bench-geo --security-cost: switch reads eu-west → us-east (75 ms round trip), {secs} s per dev, {rounds} devs each");
    let (mut secure, mut insecure) = (hist(), hist());
    for _ in 0..rounds {
        for (on, h) in [(true, &mut secure), (false, &mut insecure)] {
            let extra: &[&str] = if on { &[] } else { &["--insecure"] };
            let dev = Dev::start_here(args.port, extra)?;
            dev.client("us-east")?
                .put("/us-east/bench/hot", "h")
                .await?;
            let (switch, _, _) = switch_reads(&dev, "eu-west", secs, 0).await?;
            h.add(&switch).context("adding histograms")?;
        }
    }
    println!("| security | reads | switch read p50 ms | p95 ms | p99 ms |");
    println!("|---|---|---|---|---|");
    for (name, h) in [
        ("on (mTLS + token)", &secure),
        ("off (--insecure)", &insecure),
    ] {
        println!(
            "| {name} | {} | {:.2} | {:.2} | {:.2} |",
            h.len(),
            ms(h, 0.5),
            ms(h, 0.95),
            ms(h, 0.99)
        );
    }
    println!(
        "| on − off | | {:+.2} | {:+.2} | {:+.2} |",
        ms(&secure, 0.5) - ms(&insecure, 0.5),
        ms(&secure, 0.95) - ms(&insecure, 0.95),
        ms(&secure, 0.99) - ms(&insecure, 0.99)
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn run(args: BenchGeoArgs) -> anyhow::Result<ExitCode> {
    if let Some(rounds) = args.security_cost {
        return security_cost(&args, rounds.max(1)).await;
    }
    let secs = args.seconds;
    println!(
        "# meridian bench-geo: 3-region dev topology, 256-byte values, {secs} s per measurement"
    );

    let (off_put, off_get) = {
        let dev = start_dev(args.port, false)?;
        local_ops(&dev, secs).await?
    };
    let dev = start_dev(args.port, true)?;
    let (on_put, on_get) = local_ops(&dev, secs).await?;
    println!(
        "\n## 1. local-domain operations (us-east session, us-east domain), WAN emulator off vs on"
    );
    println!("| op | off p50 ms | off p99 ms | on p50 ms | on p99 ms | on/off p50 | on/off p99 |");
    println!("|---|---|---|---|---|---|---|");
    for (name, off, on) in [("put", &off_put, &on_put), ("get", &off_get, &on_get)] {
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            ms(off, 0.5),
            ms(off, 0.99),
            ms(on, 0.5),
            ms(on, 0.99),
            ms(on, 0.5) / ms(off, 0.5),
            ms(on, 0.99) / ms(off, 0.99)
        );
    }

    dev.client("us-east")?
        .put("/us-east/bench/hot", "h")
        .await?;
    println!("\n## 2–3. reads of us-east's domain from another region");
    println!("| from | round trip ms | switch read p50 ms | p95 ms | p99 ms | p50 / round trip | p95 / round trip | repeated remote read p50 ms | p99 ms | local read, same router, p50 ms | p99 ms | repeated / local p50 |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (region, rtt) in [("eu-west", 75.0), ("ap-northeast", 170.0)] {
        let (switch, repeat, base) = switch_reads(&dev, region, secs, 5).await?;
        println!(
            "| {region} | {rtt} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            ms(&switch, 0.5),
            ms(&switch, 0.95),
            ms(&switch, 0.99),
            ms(&switch, 0.5) / rtt,
            ms(&switch, 0.95) / rtt,
            ms(&repeat, 0.5),
            ms(&repeat, 0.99),
            ms(&base, 0.5),
            ms(&base, 0.99),
            ms(&repeat, 0.5) / ms(&base, 0.5)
        );
    }

    // 4. Many sessions switching to one remote group at once.
    let probe = dev.client("eu-west")?;
    let (sent0, reads0) = sync_counters(&probe).await?;
    let mut tasks = Vec::new();
    let stop = Instant::now() + Duration::from_secs(secs);
    for i in 0..args.sessions {
        let c = dev.client("eu-west")?;
        tasks.push(tokio::spawn(async move {
            let mut h = hist();
            let own = format!("/eu-west/bench/s{i}");
            while Instant::now() < stop {
                if c.put(&own, "x").await.is_err() {
                    continue;
                }
                let t = Instant::now();
                if c.get("/us-east/bench/hot").await.is_ok() {
                    h.saturating_record(t.elapsed().as_micros() as u64);
                }
            }
            h
        }));
    }
    let mut all = hist();
    for t in tasks {
        let _ = all.add(&t.await?);
    }
    let (sent1, reads1) = sync_counters(&probe).await?;
    let (sent, reads) = (sent1 - sent0, reads1 - reads0);
    println!(
        "\n## 4. {} concurrent eu-west sessions, each alternating a local write and a read of us-east's domain",
        args.sessions
    );
    println!("| switch reads | WAN syncs sent | syncs per read | read p50 ms | p95 ms | p99 ms | p50 / round trip (75 ms) |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {reads} | {sent} | {:.3} | {:.1} | {:.1} | {:.1} | {:.2} |",
        sent as f64 / reads.max(1) as f64,
        ms(&all, 0.5),
        ms(&all, 0.95),
        ms(&all, 0.99),
        ms(&all, 0.5) / 75.0
    );

    // 5. Learner lag over the 170 ms link under sustained writes.
    println!("\n## 5. ap-northeast learner of us-east's group (170 ms round trip) under sustained writes");
    println!("| writers | writes/s | visible at ap-northeast after ack, ms p50 | p99 | max | lag entries p50 | p99 | max |");
    println!("|---|---|---|---|---|---|---|---|");
    for writers in [4, 16] {
        learner_lag(&dev, writers, secs).await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `writers` clients write us-east's domain for `secs` while a prober measures how long each
/// acknowledged write takes to become visible at an ap-northeast learner (stale reads, no
/// sync), and samples the leader's view of that learner's lag in entries.
async fn learner_lag(dev: &Dev, writers: usize, secs: u64) -> anyhow::Result<()> {
    let running = Arc::new(AtomicBool::new(true));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let c = dev.client("us-east")?;
        let running = running.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while running.load(Ordering::Relaxed) {
                let _ = c
                    .put(&format!("/us-east/load/w{w}-{}", n % 100), vec![b'l'; 256])
                    .await;
                n += 1;
            }
            n
        }));
    }
    let writer = dev.client("us-east")?;
    let reader = dev.client("ap-northeast")?;
    let status = dev.client("us-east")?;
    let (mut lag_ms, mut lag_entries) = (hist(), hist());
    let started = Instant::now();
    let stop = started + Duration::from_secs(secs);
    let mut seq = 0u64;
    while Instant::now() < stop {
        seq += 1;
        let value = format!("probe-{writers}-{seq}");
        writer.put("/us-east/bench/probe", value.clone()).await?;
        let t = Instant::now();
        loop {
            let r = reader
                .get_with("/us-east/bench/probe", Consistency::Stale { max_lag_ms: 0 })
                .await?;
            if r.kv.is_some_and(|kv| kv.value == value.as_bytes()) {
                break;
            }
            if t.elapsed() > Duration::from_secs(30) {
                anyhow::bail!("the ap-northeast learner did not apply a write within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        lag_ms.saturating_record(t.elapsed().as_micros() as u64);
        let s = status.status(true).await?;
        for node in std::iter::once(&s).chain(s.nodes.iter()) {
            for g in node
                .groups
                .iter()
                .filter(|g| g.group == 1 && g.state == "Leader")
            {
                for m in g.members.iter().filter(|m| m.region == "ap-northeast") {
                    lag_entries.saturating_record(m.lag_entries.max(1));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    running.store(false, Ordering::Relaxed);
    let mut writes = 0;
    for t in tasks {
        writes += t.await?;
    }
    println!(
        "| {writers} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {} | {} |",
        writes as f64 / elapsed,
        ms(&lag_ms, 0.5),
        ms(&lag_ms, 0.99),
        lag_ms.max() as f64 / 1000.0,
        lag_entries.value_at_quantile(0.5),
        lag_entries.value_at_quantile(0.99),
        lag_entries.max()
    );
    Ok(())
}
