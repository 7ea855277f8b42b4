//! Part 1 of `bench-placement`: `forward` residency against the round trip to eu-west.

use super::{row, timed};
use crate::geo::Dev;
use meridian_sdk::Consistency;

/// Part 1: `forward` residency from each region against the round trip to eu-west.
pub(super) async fn forward(
    dev: &Dev,
    topology: &meridian_topology::Topology,
    seconds: u64,
) -> anyhow::Result<()> {
    println!(
        "\n1. forward residency (/eu-west/pii/, allowed jurisdiction:eu) vs a plain eu-west domain"
    );
    for region in ["eu-west", "us-east", "ap-northeast"] {
        let rtt = topology.rtt_ms(region, "eu-west");
        println!(" from {region} (round trip to eu-west: {rtt} ms)");
        let c = dev.client(region)?;
        let pii = format!("/eu-west/pii/bench-{region}");
        let plain = format!("/eu-west/bench-{region}");
        let w = timed(seconds, |n| {
            let (c, k) = (&c, &pii);
            async move {
                c.put(k, format!("v{n}")).await?;
                Ok(())
            }
        })
        .await?;
        row("write /eu-west/pii/ (forward)", &w, rtt);
        let r = timed(seconds, |_| {
            let (c, k) = (&c, &pii);
            async move {
                c.get_with(k, Consistency::Sequential).await?;
                Ok(())
            }
        })
        .await?;
        row("read /eu-west/pii/ (forward, sequential)", &r, rtt);
        let p = timed(seconds, |n| {
            let (c, k) = (&c, &plain);
            async move {
                c.put(k, format!("v{n}")).await?;
                Ok(())
            }
        })
        .await?;
        row("write /eu-west/ (plain: forwarded to the leader)", &p, rtt);
    }
    Ok(())
}
