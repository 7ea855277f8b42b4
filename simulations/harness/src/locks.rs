//! `meridian bench-locks`: what locks and leases cost, on `meridian dev` (3 regions, WAN
//! emulator). Prints:
//!
//! 1. lock acquire+release p50/p99 — a region-local lock next to a local write, and a Global
//!    Lock from each region next to the round trips to the global group's leader;
//! 2. lock failover — SIGKILL the leader of the group holding `--locks` locks whose holders
//!    died with it; time until the group serves again and until waiters get orphaned locks;
//! 3. keepalive aggregation — `--sessions` sessions on one router: client keepalives per
//!    second vs Refresh entries per second;
//! 4. memory per held lock in one replica's state (`--scale` locks, each with its lease).

use crate::geo::{hist, ms, Dev};
use anyhow::Context;
use meridian_sdk::{pb, Client, LockOptions, Options, Session};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct BenchLocksArgs {
    /// Acquire+release pairs per latency measurement.
    #[arg(long, default_value_t = 200)]
    iterations: usize,
    /// Locks held in the group whose leader is killed.
    #[arg(long, default_value_t = 10_000)]
    locks: usize,
    /// Sessions on one router for the keepalive measurement.
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// Locks applied to one replica's state for the memory measurement (0: skip).
    #[arg(long, default_value_t = 1_000_000)]
    scale: usize,
    /// Port for the dev clusters.
    #[arg(long, default_value_t = 7460)]
    port: u16,
    /// Which parts to run (comma-separated: latency, failover, keepalive, memory).
    #[arg(long, default_value = "latency,failover,keepalive,memory")]
    parts: String,
}

fn endpoints(dev: &Dev, region: &str) -> Vec<String> {
    dev.ready["regions"][region]["endpoints"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub async fn run(args: BenchLocksArgs) -> anyhow::Result<ExitCode> {
    let parts: Vec<&str> = args.parts.split(',').map(str::trim).collect();
    if parts.contains(&"latency") {
        latency(&args).await?;
    }
    if parts.contains(&"failover") {
        failover(&args).await?;
    }
    if parts.contains(&"keepalive") {
        keepalive(&args).await?;
    }
    if parts.contains(&"memory") && args.scale > 0 {
        memory(args.scale)?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn latency(args: &BenchLocksArgs) -> anyhow::Result<()> {
    let dev = Dev::start_here(args.port, &[])?;
    println!(
        "== lock acquire+release latency (3 regions, WAN emulator; {} pairs each) ==",
        args.iterations
    );
    println!(
        "{:<14} {:<26} {:>9} {:>9} {:>12}",
        "region", "operation", "p50 ms", "p99 ms", "p50 / write"
    );
    for region in ["us-east", "eu-west", "ap-northeast"] {
        let c = dev.client(region)?;
        let s = Session::new(c.clone(), Duration::from_secs(10));
        // Warm up: leases, connections, leaders.
        for name in [
            format!("/{region}/locks/bench"),
            "/global/locks/warm".to_string(),
        ] {
            let g = s
                .lock(&name, LockOptions::default())
                .await?
                .context("warm-up lock")?;
            g.release().await?;
        }
        let mut write = hist();
        for i in 0..args.iterations {
            let t = Instant::now();
            c.put(&format!("/{region}/bench/w{}", i % 16), "v").await?;
            write.record(t.elapsed().as_micros() as u64)?;
        }
        let mut results = vec![("write (put)".to_string(), write.clone())];
        for (label, name) in [
            ("region-local lock", format!("/{region}/locks/bench")),
            ("Global Lock", format!("/global/locks/bench-{region}")),
        ] {
            let mut h = hist();
            for _ in 0..args.iterations {
                let t = Instant::now();
                let g = s
                    .lock(&name, LockOptions::default())
                    .await?
                    .context("lock not granted")?;
                g.release().await?;
                h.record(t.elapsed().as_micros() as u64)?;
            }
            results.push((label.to_string(), h));
        }
        let w50 = ms(&write, 0.5);
        for (label, h) in &results {
            println!(
                "{region:<14} {label:<26} {:>9.2} {:>9.2} {:>11.2}x",
                ms(h, 0.5),
                ms(h, 0.99),
                ms(h, 0.5) / w50
            );
        }
        s.close().await?;
    }
    let status = dev.client("us-east")?.status(true).await?;
    let mut all = vec![status.clone()];
    all.extend(status.nodes.iter().cloned());
    for n in &all {
        if n.groups
            .iter()
            .any(|g| g.group == 10 && g.state == "Leader")
        {
            println!("(global group leader: node {} in {})", n.node, n.region);
        }
    }
    Ok(())
}

async fn failover(args: &BenchLocksArgs) -> anyhow::Result<()> {
    let dev = Dev::start_here(args.port + 1, &["--processes"])?;
    let eps = endpoints(&dev, "us-east");
    let opts = Options {
        call_timeout: Duration::from_secs(30),
        ..dev.options()?
    };
    let holder_client = Client::new(eps.clone(), opts.clone())?;
    let ttl = Duration::from_secs(3);
    // Holders: 100 sessions of a client that dies with the leader (its keepalives stop).
    let sessions: Vec<Session> = (0..100)
        .map(|_| Session::new(holder_client.clone(), ttl))
        .collect();
    println!(
        "== lock failover: {} locks held in us-east, TTL {ttl:?} ==",
        args.locks
    );
    let t = Instant::now();
    let mut tasks = Vec::new();
    let per = args.locks.div_ceil(sessions.len());
    for (si, s) in sessions.iter().enumerate() {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut guards = Vec::new();
            for i in 0..per {
                let name = format!("/us-east/locks/f{si}-{i}");
                let g = s
                    .lock(
                        &name,
                        LockOptions {
                            wait: None,
                            ..LockOptions::default()
                        },
                    )
                    .await?;
                guards.extend(g);
            }
            Ok::<_, meridian_sdk::Error>(guards)
        }));
    }
    let mut held = Vec::new();
    for t in tasks {
        held.extend(t.await??);
    }
    println!(
        "acquired {} locks in {:.1} s",
        held.len(),
        t.elapsed().as_secs_f64()
    );
    // Waiters on 20 of the locks, from a live client.
    let waiter_client = Client::new(eps.clone(), opts.clone())?;
    let waiter_session = Session::new(waiter_client.clone(), Duration::from_secs(30));
    waiter_session.lease_for("/us-east/").await?;
    let kill_at = Instant::now() + Duration::from_secs(2);
    let mut waiters = Vec::new();
    for g in held.iter().take(20) {
        let (s, name) = (waiter_session.clone(), g.name().to_string());
        waiters.push(tokio::spawn(async move {
            let r = s
                .lock(
                    &name,
                    LockOptions {
                        wait: Some(Duration::from_secs(120)),
                        ..LockOptions::default()
                    },
                )
                .await;
            (Instant::now(), r)
        }));
    }
    tokio::time::sleep_until(kill_at.into()).await;
    // Find and kill the leader of us-east; the holders' client dies at the same moment.
    let mut leader = None;
    for ep in &eps {
        let c = Client::new(vec![ep.clone()], opts.clone())?;
        if let Ok(s) = c.status(false).await {
            if s.groups.iter().any(|g| g.group == 1 && g.state == "Leader") {
                leader = Some(s.node);
            }
        }
    }
    let leader = leader.context("no us-east leader")?;
    let pid = dev.ready["nodes"][leader.to_string()]["pid"]
        .as_u64()
        .context("leader pid")?;
    drop(held);
    drop(sessions);
    let killed = Instant::now();
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()?;
    // Serves again: a write to the group succeeds.
    let probe = Client::new(
        eps.iter()
            .filter(|e| **e != dev.ready["nodes"][leader.to_string()]["address"])
            .cloned()
            .collect(),
        opts.clone(),
    )?;
    loop {
        if probe.put("/us-east/bench/failover", "x").await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let serving = killed.elapsed();
    let mut got = hist();
    for w in waiters {
        let (at, r) = w.await?;
        if matches!(r, Ok(Some(_))) {
            got.record((at - killed).as_micros() as u64)?;
        }
    }
    println!(
        "group serves writes again {:.2} s after the leader's SIGKILL",
        serving.as_secs_f64()
    );
    println!(
        "waiters got orphaned locks: {} of 20, p50 {:.2} s, p99 {:.2} s after the kill (holder TTL {:?})",
        got.len(),
        ms(&got, 0.5) / 1000.0,
        ms(&got, 0.99) / 1000.0,
        ttl
    );
    Ok(())
}

async fn keepalive(args: &BenchLocksArgs) -> anyhow::Result<()> {
    let dev = Dev::start_here(args.port + 2, &[])?;
    let ep = endpoints(&dev, "us-east")
        .first()
        .cloned()
        .context("endpoint")?;
    let ttl = Duration::from_secs(6);
    println!(
        "== keepalive aggregation: {} sessions on one router ({ep}), TTL {ttl:?} ==",
        args.sessions
    );
    // Sessions share 64 client connections (HTTP/2 caps concurrent streams per connection).
    let opts = dev.options()?;
    let clients: Vec<Client> = (0..64)
        .map(|_| Client::new(vec![ep.clone()], opts.clone()))
        .collect::<Result<_, _>>()?;
    let mut sessions = Vec::new();
    let t = Instant::now();
    let mut grants = Vec::new();
    for i in 0..args.sessions {
        let s = Session::new(clients[i % clients.len()].clone(), ttl);
        let s2 = s.clone();
        grants.push(tokio::spawn(async move { s2.lease_for("/us-east/").await }));
        sessions.push(s);
    }
    for g in grants {
        g.await??;
    }
    println!(
        "{} sessions with a lease each in {:.1} s",
        sessions.len(),
        t.elapsed().as_secs_f64()
    );
    let status = |c: Client| async move {
        c.status(false)
            .await
            .map(|s| (s.keepalive_requests, s.keepalive_refreshes))
    };
    let probe = Client::new(vec![ep.clone()], dev.options()?)?;
    let (r0, f0) = status(probe.clone()).await?;
    let window = ttl * 2;
    tokio::time::sleep(window).await;
    let (r1, f1) = status(probe.clone()).await?;
    let lost = sessions.iter().filter(|s| s.is_lost()).count();
    let secs = window.as_secs_f64();
    println!(
        "client keepalives {:.0}/s, Refresh entries {:.1}/s to the group ({:.0} keepalives per entry); sessions lost: {lost}",
        (r1 - r0) as f64 / secs,
        (f1 - f0) as f64 / secs,
        (r1 - r0) as f64 / (f1 - f0).max(1) as f64
    );
    for s in &sessions {
        let _ = s.close().await;
    }
    let _ = pb::LockKind::Mutex;
    Ok(())
}

/// Resident set size of this process, from /proc (bytes).
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

fn memory(n: usize) -> anyhow::Result<()> {
    use meridian_storage::KvState;
    use meridian_types::{Command, LeaseCommand, LockKind, LockMode};
    println!("== memory: {n} held locks, each with its own lease, in one replica's state ==");
    let before = rss();
    let mut s = KvState::default();
    let mut rev = 1;
    for i in 0..n {
        let (res, _) = s.apply(
            rev,
            &Command::Lease(LeaseCommand::Grant {
                group: 1,
                ttl_ms: 10_000,
            }),
        );
        rev += 1;
        let id = match res {
            meridian_types::CommandResult::Lease(meridian_types::LeaseResult::Granted {
                id,
                ..
            }) => id,
            other => anyhow::bail!("grant answered {other:?}"),
        };
        s.apply(
            rev,
            &Command::Lease(LeaseCommand::Acquire {
                name: format!("/us-east/locks/job-{i}"),
                lease: id,
                kind: LockKind::Mutex,
                mode: LockMode::Exclusive,
                value: b"holder".to_vec(),
                lock_delay_ms: 0,
                wait: true,
            }),
        );
        rev += 1;
        if i % 100_000 == 0 {
            let _ = s.take_dirty();
        }
    }
    let _ = s.take_dirty();
    let after = rss();
    let held = s.locks.len();
    println!(
        "{held} locks: RSS +{:.0} MiB, {:.0} bytes per lock (lease + waiter key + queue entry)",
        (after - before) as f64 / (1 << 20) as f64,
        (after - before) as f64 / held.max(1) as f64
    );
    Ok(())
}
