//! `meridian bench-placement`: what placement and residency cost under the WAN emulator, on
//! `topology/compliance-3region.toml` (`meridian dev`, started here):
//!
//! 1. `forward` residency: writes and reads of `/eu-west/pii/` from each region (proxied whole
//!    to an eu-west router from outside the EU) against the round trip to eu-west, beside writes
//!    to `/eu-west/` (a plain domain: the router forwards the write to eu-west's leader);
//! 2. how long a placement change takes to reach every router: a `set-policy` committed by the
//!    global group, then every node's router polled until it shows the new epoch.

use crate::bench_geo::{hist, ms, Dev};
use anyhow::Context;
use hdrhistogram::Histogram;
use meridian_sdk::{pb, Client, Consistency, Options};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct BenchPlacementArgs {
    /// Seconds per region and operation kind.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Placement changes whose propagation is timed.
    #[arg(long, default_value_t = 10)]
    changes: usize,
    /// The topology (must have a /eu-west/pii/ domain under a forward policy and a
    /// /eu-west/pii-strict/ domain).
    #[arg(long, default_value = "topology/compliance-3region.toml")]
    topology: PathBuf,
    /// Port for the dev cluster.
    #[arg(long, default_value_t = 7460)]
    port: u16,
}

/// Closed-loop ops of one session for `secs`: `op(n)` is timed.
async fn timed<F, Fut>(secs: u64, mut op: F) -> anyhow::Result<Histogram<u64>>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut h = hist();
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut n = 0;
    while Instant::now() < stop {
        let t = Instant::now();
        op(n).await?;
        h.saturating_record(t.elapsed().as_micros() as u64);
        n += 1;
    }
    Ok(h)
}

fn row(what: &str, h: &Histogram<u64>, rtt: u64) {
    let ratio = if rtt == 0 {
        "-".to_string()
    } else {
        format!("{:.2}x", ms(h, 0.5) / rtt as f64)
    };
    println!(
        "  {what:<44} n={:<6} p50 {:>7.1} ms  p99 {:>7.1} ms  p50/rtt {ratio}",
        h.len(),
        ms(h, 0.5),
        ms(h, 0.99)
    );
}

pub async fn run(args: BenchPlacementArgs) -> anyhow::Result<ExitCode> {
    let topology = meridian_topology::Topology::load(&args.topology)?;
    let path = args.topology.display().to_string();
    let dev = Dev::start_with(args.port, &["--topology", &path])?;
    println!(
        "bench-placement: topology {} under the WAN emulator, {} s per measurement",
        topology.name, args.seconds
    );

    println!(
        "\n1. forward residency (/eu-west/pii/, allowed jurisdiction:eu) vs a plain eu-west domain"
    );
    for region in ["eu-west", "us-east", "ap-northeast"] {
        let rtt = topology.rtt_ms(region, "eu-west");
        println!(" from {region} (round trip to eu-west: {rtt} ms)");
        let c = dev.client(region)?;
        let pii = format!("/eu-west/pii/bench-{region}");
        let plain = format!("/eu-west/bench-{region}");
        let w = timed(args.seconds, |n| {
            let (c, k) = (&c, &pii);
            async move {
                c.put(k, format!("v{n}")).await?;
                Ok(())
            }
        })
        .await?;
        row("write /eu-west/pii/ (forward)", &w, rtt);
        let r = timed(args.seconds, |_| {
            let (c, k) = (&c, &pii);
            async move {
                c.get_with(k, Consistency::Sequential).await?;
                Ok(())
            }
        })
        .await?;
        row("read /eu-west/pii/ (forward, sequential)", &r, rtt);
        let p = timed(args.seconds, |n| {
            let (c, k) = (&c, &plain);
            async move {
                c.put(k, format!("v{n}")).await?;
                Ok(())
            }
        })
        .await?;
        row("write /eu-west/ (plain: forwarded to the leader)", &p, rtt);
    }

    println!(
        "\n2. a placement change reaching every router ({} changes)",
        args.changes
    );
    let mut routers: Vec<(String, Client)> = Vec::new();
    for r in &topology.regions {
        let eps = dev.ready["regions"][&r.name]["endpoints"]
            .as_array()
            .with_context(|| format!("no endpoints for {}", r.name))?;
        for ep in eps.iter().filter_map(|e| e.as_str()) {
            let c = Client::new(
                vec![ep.to_string()],
                Options {
                    call_timeout: Duration::from_secs(2),
                    rpc_timeout: Duration::from_secs(2),
                    ..Options::default()
                },
            )?;
            routers.push((r.name.clone(), c));
        }
    }
    let admin = dev.client("us-east")?;
    let (mut commit, mut all, mut after_ack) = (hist(), hist(), hist());
    let mut per_region: std::collections::BTreeMap<String, Histogram<u64>> = Default::default();
    for i in 0..args.changes {
        let mode = if i % 2 == 0 { "forward" } else { "strict" };
        let t0 = Instant::now();
        let epoch = admin
            .set_policy(
                "/eu-west/pii-strict/",
                Some(pb::PlacementPolicy {
                    allowed: vec!["jurisdiction:eu".into()],
                    mode: mode.into(),
                }),
                0,
            )
            .await?;
        let acked = t0.elapsed();
        commit.saturating_record(acked.as_micros() as u64);
        let polls = routers.iter().map(|(region, c)| async move {
            loop {
                if let Ok(m) = c.placement().await {
                    if m.epoch >= epoch {
                        return Ok::<_, anyhow::Error>((region.clone(), t0.elapsed()));
                    }
                }
                anyhow::ensure!(
                    t0.elapsed() < Duration::from_secs(30),
                    "router in {region} never reached epoch {epoch}"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        let reached = futures::future::try_join_all(polls).await?;
        let last = reached.iter().map(|(_, d)| *d).max().unwrap_or_default();
        all.saturating_record(last.as_micros() as u64);
        after_ack.saturating_record(last.saturating_sub(acked).as_micros() as u64);
        for (region, d) in reached {
            per_region
                .entry(region)
                .or_insert_with(hist)
                .saturating_record(d.as_micros() as u64);
        }
    }
    let farthest = topology
        .regions
        .iter()
        .map(|r| topology.rtt_ms("us-east", &r.name))
        .max()
        .unwrap_or(0);
    row("set-policy acknowledged (us-east endpoint)", &commit, 0);
    row(
        "every router at the new epoch (from the call)",
        &all,
        farthest,
    );
    row(
        "every router at the new epoch (after the ack)",
        &after_ack,
        0,
    );
    for (region, h) in &per_region {
        row(&format!("routers of {region} at the new epoch"), h, 0);
    }
    println!("  (the global group's voters: one per region; its leader's region decides the commit round trip)");
    Ok(ExitCode::SUCCESS)
}
