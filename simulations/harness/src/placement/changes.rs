//! Part 2 of `bench-placement`: how long a placement change takes to reach every router.

use super::row;
use crate::geo::{hist, Dev};
use anyhow::Context;
use hdrhistogram::Histogram;
use meridian_sdk::{pb, Client, Options};
use std::time::{Duration, Instant};

/// Part 2: `changes` set-policy changes, each timed until every router shows its epoch.
pub(super) async fn changes(
    dev: &Dev,
    topology: &meridian_topology::Topology,
    changes: usize,
) -> anyhow::Result<()> {
    println!("\n2. a placement change reaching every router ({changes} changes)");
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
                    ..dev.options()?
                },
            )?;
            routers.push((r.name.clone(), c));
        }
    }
    let admin = dev.client("us-east")?;
    let (mut commit, mut all, mut after_ack) = (hist(), hist(), hist());
    let mut per_region: std::collections::BTreeMap<String, Histogram<u64>> = Default::default();
    for i in 0..changes {
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
    Ok(())
}
