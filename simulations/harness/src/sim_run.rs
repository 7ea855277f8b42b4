//! `meridian sim run SCENARIO.toml`: runs a workload on a deployment under the WAN emulator,
//! in several deployment modes of Meridian itself, and reports per region the throughput and
//! p50/p95/p99 latency of local and remote reads and writes — a table (with a progress line
//! while it runs), JSON (`--json FILE`) and an SVG chart (`--svg FILE`).
//!
//! Modes, all on the scenario's topology (regions, nodes, round trips):
//! - `a` one group whose voters span the regions (one voter per region; "one ensemble across
//!   datacenters"), owning every domain;
//! - `b` one group homed in the first region with learners everywhere else ("observers");
//! - `c` the topology's per-region groups without sync-on-switch (fast, not consistent);
//! - `d` Meridian's composition (sync-on-switch, coalesced).
//!
//! Keys are `/<region>/sim/k<n>`: an operation is *local* when it targets the client's own
//! region's domain (in modes a and b every domain has the same owner; the split still shows
//! what clients of each region pay).

use crate::geo::Dev;
use anyhow::Context;
use meridian_sdk::{Client, Options};
use meridian_sim::scenario::TimestampProfile;
use meridian_sim::scenario::{mode_topology, parse_scenario};
use meridian_sim::{Mix, RegionResult, Scenario, Workload};
use meridian_topology::Topology;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct SimRunArgs {
    /// The scenario file (see simulations/scenarios/).
    scenario: PathBuf,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an SVG chart (throughput per mode, per workload) here.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Port for the dev clusters.
    #[arg(long, default_value_t = 7480)]
    port: u16,
    /// Run the deterministic simulation instead (turmoil: virtual time, the topology's round
    /// trips, in-memory store; faults from the scenario; every history checked).
    #[arg(long)]
    deterministic: bool,
    /// Override the scenario's seed.
    #[arg(long)]
    seed: Option<u64>,
}

async fn run_mix(
    dev: &Dev,
    regions: &[String],
    s: &Scenario,
    mix: Mix,
    label: &str,
) -> anyhow::Result<BTreeMap<String, RegionResult>> {
    let results = meridian_sim::Collector::default();
    let stop = Instant::now() + Duration::from_secs(s.duration_s);
    let mut tasks = Vec::new();
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for (ri, region) in regions.iter().enumerate() {
        let endpoints: Vec<String> = dev.ready["regions"][region]["endpoints"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for c in 0..s.clients_per_region {
            let client = Client::new(
                vec![endpoints[c % endpoints.len().max(1)].clone()],
                Options {
                    call_timeout: Duration::from_secs(10),
                    rpc_timeout: Duration::from_secs(10),
                    ..dev.options()?
                },
            )?;
            let (region, results, done) = (region.clone(), results.clone(), done.clone());
            let mut work = Workload::new(
                s,
                mix,
                &region,
                regions,
                s.seed ^ ((ri as u64) << 32 | c as u64),
            );
            let value = vec![b'v'; s.value_size];
            tasks.push(tokio::spawn(async move {
                let mut mine = RegionResult::default();
                while Instant::now() < stop {
                    let step = work.next_step();
                    let t = Instant::now();
                    let ok = if step.read {
                        client.get(&step.key).await.is_ok()
                    } else {
                        client.put(&step.key, value.clone()).await.is_ok()
                    };
                    if ok {
                        mine.hist[step.kind()].saturating_record(t.elapsed().as_micros() as u64);
                    } else {
                        mine.errors += 1;
                    }
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                results.add(&region, &mine);
            }));
        }
    }
    // Progress line while it runs.
    let started = Instant::now();
    while Instant::now() < stop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let pct = (started.elapsed().as_secs_f64() / s.duration_s as f64 * 100.0).min(100.0);
        let bar = "#".repeat((pct / 5.0) as usize);
        eprint!(
            "\r{label:<40} [{bar:<20}] {pct:>3.0}% {} ops",
            done.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
    eprintln!();
    for t in tasks {
        t.await?;
    }
    Ok(results.take())
}

pub async fn run(args: SimRunArgs) -> anyhow::Result<ExitCode> {
    let name = args.scenario.display().to_string();
    let text =
        std::fs::read_to_string(&args.scenario).with_context(|| format!("reading {name}"))?;
    let mut s = parse_scenario(&text, &name)?;
    if let Some(seed) = args.seed {
        s.seed = seed;
    }
    if !args.deterministic && (!s.faults.is_empty() || !s.moves.is_empty()) {
        anyhow::bail!(
            "{name}: faults and moves are scheduled only in the deterministic simulation \
             (--deterministic); the real run injects faults with `meridian dev --processes` \
             and the WAN emulator, and moves with `meridian placement move`"
        );
    }
    if !args.deterministic
        && (!s.clock_rates.is_empty()
            || !s.readers.is_empty()
            || s.random_faults > 0
            || s.watchers > 0
            || !s.inject.is_empty())
    {
        anyhow::bail!(
            "{name}: clock_rates, readers, random_faults, watchers and inject apply only to the deterministic simulation \
             (--deterministic); a real node's clock is skewed with libfaketime \
             (services/cli/tests/lease_drift.rs)"
        );
    }
    let base = match &s.topology {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        None => meridian_topology::LOCAL_3REGION.to_string(),
    };
    let topo = Topology::parse(&base, "scenario topology")?;
    let regions: Vec<String> = topo.regions.iter().map(|r| r.name.clone()).collect();
    let dir = tempfile::tempdir()?;
    let mut runs = Vec::new();
    let mut violations = 0;
    println!("{}", meridian_sim::table_header("mode"));
    for (mi, mode) in s.modes.iter().enumerate() {
        let topo_text = mode_topology(&base, mode)?;
        Topology::parse(&topo_text, &format!("mode {mode} topology"))?;
        let dev = if args.deterministic {
            None
        } else {
            let path = dir.path().join(format!("mode-{mode}.toml"));
            std::fs::write(&path, &topo_text)?;
            let path_s = path.display().to_string();
            let mut extra = vec!["--topology", path_s.as_str()];
            if mode == "c" {
                extra.push("--unsafe-no-sync");
            }
            if mode == "e" {
                extra.extend([
                    "--reads",
                    match s.profile {
                        TimestampProfile::GlobalReads => "global-reads",
                        _ => "local-writes",
                    },
                ]);
            }
            Some(Dev::start_here(args.port + mi as u16, &extra)?)
        };
        for mix in s.mixes() {
            let Mix {
                read_ratio,
                locality,
                burst,
            } = mix;
            let label = format!("mode {mode} read {read_ratio} local {locality} burst {burst}");
            let mut checks = serde_json::Value::Null;
            let res = match &dev {
                Some(dev) => run_mix(dev, &regions, &s, mix, &label).await?,
                None => {
                    eprint!("{label:<40} simulating …");
                    let (sc, tt, mode_s) = (s.clone(), topo_text.clone(), mode.clone());
                    let out = tokio::task::spawn_blocking(move || {
                        meridian_sim::det::simulate(&sc, &tt, &mode_s, mix, sc.seed)
                    })
                    .await??;
                    eprintln!(
                        " {} ops, {:.0} virtual s in {:.1} s",
                        out.records.len(),
                        out.workload_s,
                        out.wall.as_secs_f64()
                    );
                    if !out.schedule.is_empty() {
                        eprintln!("  drawn faults (seed {}):\n{}", s.seed, out.schedule);
                    }
                    for m in &out.moves {
                        eprintln!(
                            "  move {} -> {}: {} (virtual {:.1}-{:.1} s){}",
                            m.prefix,
                            m.to,
                            if m.committed {
                                "committed"
                            } else {
                                "not committed"
                            },
                            m.begun_s,
                            m.ended_s,
                            if m.note.is_empty() {
                                String::new()
                            } else {
                                format!(": {}", m.note)
                            }
                        );
                    }
                    for (what, verdict) in [
                        ("sequential consistency", out.sequential.clone().err()),
                        ("linearizability", out.linearizable.clone().err()),
                        ("the watch validators' rules", out.watch.clone().err()),
                    ] {
                        if let Some(v) = verdict {
                            violations += 1;
                            eprintln!("  {what} VIOLATED in mode {mode}: {v}");
                        }
                    }
                    checks = json!({
                        "seed": s.seed,
                        "operations": out.records.len(),
                        "sequentially_consistent": out.sequential.is_ok(),
                        "sequential_violation": out.sequential.clone().err(),
                        "linearizable": out.linearizable.is_ok(),
                        "linearizable_violation": out.linearizable.clone().err(),
                        "watch_events_checked": out.watch.clone().ok(),
                        "watch_violation": out.watch.clone().err(),
                        "moves": out.moves,
                    });
                    out.regions
                }
            };
            let mut run = meridian_sim::report_mix(mode, mix, s.duration_s, &res);
            run["checks"] = checks;
            runs.push(run);
        }
        drop(dev);
    }
    let out = json!({"scenario": s.name, "duration_s": s.duration_s,
                     "deterministic": args.deterministic,
                     "clients_per_region": s.clients_per_region, "runs": runs});
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_vec_pretty(&out)?)?;
    }
    if let Some(p) = &args.svg {
        std::fs::write(p, meridian_sim::svg(&out))?;
    }
    if violations > 0 {
        eprintln!("{violations} checker verdict(s) failed (mode c is expected to fail sequential consistency)");
    }
    Ok(ExitCode::SUCCESS)
}
