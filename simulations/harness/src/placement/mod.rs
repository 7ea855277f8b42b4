//! `meridian bench-placement`: what placement and residency cost under the WAN emulator, on
//! `topology/compliance-3region.toml` (`meridian dev`, started here):
//!
//! 1. `forward` residency: writes and reads of `/eu-west/pii/` from each region (proxied whole
//!    to an eu-west router from outside the EU) against the round trip to eu-west, beside writes
//!    to `/eu-west/` (a plain domain: the router forwards the write to eu-west's leader);
//! 2. how long a placement change takes to reach every router: a `set-policy` committed by the
//!    global group, then every node's router polled until it shows the new epoch;
//! 3. online moves under load: `/us-east/bench-move/` (preloaded with `--move-keys` keys) moved
//!    `--moves` times between groups us-east and eu-west while a closed-loop writer in us-east
//!    writes under it (the write pause of each move, beside the write latency to the new owner),
//!    while writers of other domains run (their throughput and latency during the moves against
//!    outside them); afterwards every key must read back as last acknowledged, or the bench fails.

mod changes;
mod forward;
mod moves;

use crate::geo::{hist, ms, Dev};
use hdrhistogram::Histogram;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// A part of the bench.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// 1: `forward` residency against the round trip.
    Forward,
    /// 2: a placement change reaching every router.
    Changes,
    /// 3: online moves under load.
    Moves,
}

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
    /// Run only these parts (comma-separated); default: all.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Phase>,
    /// Online moves timed (part 3), alternating /us-east/bench-move/ to group eu-west and back
    /// to us-east; 0 skips part 3.
    #[arg(long, default_value_t = 10)]
    moves: usize,
    /// Keys (100-byte values) preloaded under the moved prefix.
    #[arg(long, default_value_t = 10_000)]
    move_keys: usize,
    /// Milliseconds between the end of one move and the start of the next (the writes to the
    /// new owner in this gap are the move's baseline).
    #[arg(long, default_value_t = 2_000)]
    move_gap_ms: u64,
    /// Seconds one move may take (begin to finished) before the bench fails.
    #[arg(long, default_value_t = 60)]
    move_timeout: u64,
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
    let dev = Dev::start_here(args.port, &["--topology", &path])?;
    println!(
        "bench-placement: topology {} under the WAN emulator, {} s per measurement",
        topology.name, args.seconds
    );
    let part = |p: Phase| args.only.is_empty() || args.only.contains(&p);
    if part(Phase::Forward) {
        forward::forward(&dev, &topology, args.seconds).await?;
    }
    if part(Phase::Changes) {
        changes::changes(&dev, &topology, args.changes).await?;
    }
    if part(Phase::Moves) && args.moves > 0 {
        moves::moves(&dev, &topology, &args).await?;
    }
    Ok(ExitCode::SUCCESS)
}
