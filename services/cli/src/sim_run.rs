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

use crate::bench_geo::Dev;
use anyhow::Context;
use hdrhistogram::Histogram;
use meridian_sdk::{Client, Options};
use meridian_topology::Topology;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
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
}

fn one() -> Vec<f64> {
    vec![1.0]
}

/// A scenario file. `read_ratio`, `locality` and `burst` may be lists: every combination runs.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    /// Topology file (default: the built-in local-3region).
    #[serde(default)]
    pub topology: Option<PathBuf>,
    pub modes: Vec<String>,
    pub duration_s: u64,
    pub clients_per_region: usize,
    #[serde(default = "one")]
    pub read_ratio: Vec<f64>,
    #[serde(default = "one")]
    pub locality: Vec<f64>,
    #[serde(default = "one")]
    pub burst: Vec<f64>,
    #[serde(default = "default_value_size")]
    pub value_size: usize,
    #[serde(default = "default_keys")]
    pub keys_per_region: u64,
}

fn default_value_size() -> usize {
    256
}

fn default_keys() -> u64 {
    1000
}

/// Scenario lists accept a single number too.
fn parse_scenario(text: &str, name: &str) -> anyhow::Result<Scenario> {
    let mut v: toml::Value =
        toml::from_str(text).with_context(|| format!("{name}: malformed TOML"))?;
    if let Some(t) = v.as_table_mut() {
        for k in ["read_ratio", "locality", "burst"] {
            if let Some(x) = t.get(k).cloned() {
                if !x.is_array() {
                    t.insert(k.into(), toml::Value::Array(vec![x]));
                }
            }
        }
    }
    let s: Scenario = v
        .try_into()
        .map_err(|e: toml::de::Error| anyhow::anyhow!("{name}: {e}"))?;
    let bad = |m: String| Err(anyhow::anyhow!("{name}: {m}"));
    for m in &s.modes {
        if !["a", "b", "c", "d"].contains(&m.as_str()) {
            return bad(format!("unknown mode {m:?}: modes are a, b, c, d"));
        }
    }
    if s.modes.is_empty() || s.duration_s == 0 || s.clients_per_region == 0 {
        return bad("modes, duration_s and clients_per_region must be non-empty / above 0".into());
    }
    for (k, list) in [("read_ratio", &s.read_ratio), ("locality", &s.locality)] {
        if list.iter().any(|x| !(0.0..=1.0).contains(x)) {
            return bad(format!("{k} values must be between 0 and 1"));
        }
    }
    if s.burst.iter().any(|b| *b < 1.0) {
        return bad("burst values must be at least 1".into());
    }
    if s.value_size > meridian_types::VALUE_BYTES_MAX || s.keys_per_region == 0 {
        return bad("value_size must be at most 1 MiB and keys_per_region above 0".into());
    }
    Ok(s)
}

/// The topology text a mode runs on.
fn mode_topology(base: &str, mode: &str) -> anyhow::Result<String> {
    let mut v: toml::Value = toml::from_str(base).context("topology TOML")?;
    let t = v.as_table_mut().context("topology is a table")?;
    let regions: Vec<String> = t
        .get("regions")
        .and_then(|r| r.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|r| r.get("name").and_then(|n| n.as_str()).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let nodes: Vec<(i64, String)> = t
        .get("nodes")
        .and_then(|n| n.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|n| {
                    Some((
                        n.get("id")?.as_integer()?,
                        n.get("region")?.as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let group = |name: &str| -> toml::Value {
        let mut g = toml::map::Map::new();
        g.insert("name".into(), name.into());
        g.into()
    };
    let (groups, owner) = match mode {
        "a" => {
            let mut g = group("ensemble");
            let voters: Vec<toml::Value> = regions
                .iter()
                .filter_map(|r| {
                    nodes
                        .iter()
                        .find(|(_, nr)| nr == r)
                        .map(|(id, _)| (*id).into())
                })
                .collect();
            if let Some(m) = g.as_table_mut() {
                m.insert("id".into(), 1.into());
                m.insert("kind".into(), "global".into());
                m.insert("voters".into(), voters.into());
                m.insert("learner_regions".into(), toml::Value::Array(Vec::new()));
            }
            (vec![g], "ensemble")
        }
        "b" => {
            let home = regions.first().context("no region")?.clone();
            let mut g = group("observed");
            let voters: Vec<toml::Value> = nodes
                .iter()
                .filter(|(_, r)| *r == home)
                .map(|(id, _)| (*id).into())
                .collect();
            let learners: Vec<toml::Value> = regions
                .iter()
                .filter(|r| **r != home)
                .map(|r| r.as_str().into())
                .collect();
            if let Some(m) = g.as_table_mut() {
                m.insert("id".into(), 1.into());
                m.insert("kind".into(), "regional".into());
                m.insert("home".into(), home.as_str().into());
                m.insert("voters".into(), voters.into());
                m.insert("learner_regions".into(), learners.into());
            }
            (vec![g], "observed")
        }
        _ => return Ok(base.to_string()),
    };
    // Replace the [[groups]] and [[domains]] blocks of the text, keeping the rest as written
    // (the topology parser wants round trips as inline tables, as the shipped files have them).
    let mut kept = String::new();
    let mut skipping = false;
    for line in base.lines() {
        let l = line.trim_start();
        if l.starts_with("[[groups]]") || l.starts_with("[[domains]]") {
            skipping = true;
            continue;
        }
        if skipping && l.starts_with('[') {
            skipping = false;
        }
        if !skipping {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    for g in &groups {
        let mut wrapper = toml::map::Map::new();
        wrapper.insert("groups".into(), toml::Value::Array(vec![g.clone()]));
        kept.push_str(&toml::to_string(&toml::Value::Table(wrapper))?);
    }
    for r in &regions {
        kept.push_str(&format!(
            "\n[[domains]]\nprefix = \"/{r}/\"\ngroup = \"{owner}\"\n"
        ));
    }
    Ok(kept)
}

const KINDS: [&str; 4] = ["local read", "remote read", "local write", "remote write"];

struct RegionResult {
    hist: Vec<Histogram<u64>>,
    errors: u64,
}

#[derive(Clone, Copy, Debug)]
struct Mix {
    read_ratio: f64,
    locality: f64,
    burst: f64,
}

/// A small deterministic generator per client (xorshift), so runs are repeatable in shape.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() % 1_000_000) as f64 / 1_000_000.0 < p
    }
}

async fn run_mix(
    dev: &Dev,
    regions: &[String],
    s: &Scenario,
    mix: Mix,
    label: &str,
) -> anyhow::Result<BTreeMap<String, RegionResult>> {
    let results: Arc<Mutex<BTreeMap<String, RegionResult>>> = Arc::default();
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
                    ..Options::default()
                },
            )?;
            let (region, regions, results, done) = (
                region.clone(),
                regions.to_vec(),
                results.clone(),
                done.clone(),
            );
            let (value, keys) = (vec![b'v'; s.value_size], s.keys_per_region);
            tasks.push(tokio::spawn(async move {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((ri as u64) << 32 | c as u64));
                let mut hist: Vec<Histogram<u64>> =
                    KINDS.iter().map(|_| crate::bench_geo::hist()).collect();
                let mut errors = 0;
                let mut target = region.clone();
                let mut left_in_burst = 0.0f64;
                while Instant::now() < stop {
                    if left_in_burst < 1.0 {
                        target = if rng.chance(mix.locality) || regions.len() < 2 {
                            region.clone()
                        } else {
                            let others: Vec<&String> =
                                regions.iter().filter(|r| **r != region).collect();
                            others[(rng.next() % others.len() as u64) as usize].clone()
                        };
                        left_in_burst = mix.burst;
                    }
                    left_in_burst -= 1.0;
                    let key = format!("/{target}/sim/k{}", rng.next() % keys);
                    let read = rng.chance(mix.read_ratio);
                    let local = target == region;
                    let kind = match (local, read) {
                        (true, true) => 0,
                        (false, true) => 1,
                        (true, false) => 2,
                        (false, false) => 3,
                    };
                    let t = Instant::now();
                    let ok = if read {
                        client.get(&key).await.is_ok()
                    } else {
                        client.put(&key, value.clone()).await.is_ok()
                    };
                    if ok {
                        hist[kind].saturating_record(t.elapsed().as_micros() as u64);
                    } else {
                        errors += 1;
                    }
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let mut r = results.lock().unwrap_or_else(|p| p.into_inner());
                let e = r.entry(region).or_insert_with(|| RegionResult {
                    hist: KINDS.iter().map(|_| crate::bench_geo::hist()).collect(),
                    errors: 0,
                });
                for (a, b) in e.hist.iter_mut().zip(&hist) {
                    let _ = a.add(b);
                }
                e.errors += errors;
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
    let r = std::mem::take(&mut *results.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(r)
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    h.value_at_quantile(q) as f64 / 1000.0
}

pub async fn run(args: SimRunArgs) -> anyhow::Result<ExitCode> {
    let name = args.scenario.display().to_string();
    let text =
        std::fs::read_to_string(&args.scenario).with_context(|| format!("reading {name}"))?;
    let s = parse_scenario(&text, &name)?;
    let base = match &s.topology {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        None => crate::dev::LOCAL_3REGION.to_string(),
    };
    let topo = Topology::parse(&base, "scenario topology")?;
    let regions: Vec<String> = topo.regions.iter().map(|r| r.name.clone()).collect();
    let dir = tempfile::tempdir()?;
    let mut runs = Vec::new();
    println!(
        "{:<5} {:>5} {:>5} {:>5} {:<14} {:>9} {:>26} {:>26} {:>26} {:>26}",
        "mode",
        "read",
        "local",
        "burst",
        "region",
        "ops/s",
        "local read p50/95/99",
        "remote read p50/95/99",
        "local write p50/95/99",
        "remote write p50/95/99"
    );
    for (mi, mode) in s.modes.iter().enumerate() {
        let topo_text = mode_topology(&base, mode)?;
        Topology::parse(&topo_text, &format!("mode {mode} topology"))?;
        let path = dir.path().join(format!("mode-{mode}.toml"));
        std::fs::write(&path, &topo_text)?;
        let path_s = path.display().to_string();
        let mut extra = vec!["--topology", path_s.as_str()];
        if mode == "c" {
            extra.push("--unsafe-no-sync");
        }
        let dev = Dev::start_with(args.port + mi as u16, &extra)?;
        for &read_ratio in &s.read_ratio {
            for &locality in &s.locality {
                for &burst in &s.burst {
                    let mix = Mix {
                        read_ratio,
                        locality,
                        burst,
                    };
                    let label =
                        format!("mode {mode} read {read_ratio} local {locality} burst {burst}");
                    let res = run_mix(&dev, &regions, &s, mix, &label).await?;
                    let mut per_region = serde_json::Map::new();
                    let mut total = 0.0;
                    for (region, r) in &res {
                        let ops: u64 = r.hist.iter().map(|h| h.len()).sum();
                        let ops_s = ops as f64 / s.duration_s as f64;
                        total += ops_s;
                        let cell = |h: &Histogram<u64>| {
                            format!("{:.1}/{:.1}/{:.1}", ms(h, 0.5), ms(h, 0.95), ms(h, 0.99))
                        };
                        println!(
                            "{mode:<5} {read_ratio:>5} {locality:>5} {burst:>5} {region:<14} {ops_s:>9.0} {:>26} {:>26} {:>26} {:>26}",
                            cell(&r.hist[0]), cell(&r.hist[1]), cell(&r.hist[2]), cell(&r.hist[3])
                        );
                        let kinds: serde_json::Map<String, serde_json::Value> = KINDS
                            .iter()
                            .zip(&r.hist)
                            .map(|(k, h)| {
                                (k.to_string(), json!({"count": h.len(), "p50_ms": ms(h, 0.5), "p95_ms": ms(h, 0.95), "p99_ms": ms(h, 0.99)}))
                            })
                            .collect();
                        per_region.insert(
                            region.clone(),
                            json!({"ops_per_sec": ops_s, "errors": r.errors, "latency": kinds}),
                        );
                    }
                    runs.push(
                        json!({"mode": mode, "read_ratio": read_ratio, "locality": locality,
                                     "burst": burst, "ops_per_sec": total, "regions": per_region}),
                    );
                }
            }
        }
        drop(dev);
    }
    let out = json!({"scenario": s.name, "duration_s": s.duration_s,
                     "clients_per_region": s.clients_per_region, "runs": runs});
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_vec_pretty(&out)?)?;
    }
    if let Some(p) = &args.svg {
        std::fs::write(p, svg(&out))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Throughput per mode for each workload mix, as grouped bars.
fn svg(out: &serde_json::Value) -> String {
    let runs = out["runs"].as_array().cloned().unwrap_or_default();
    let mut mixes: Vec<String> = Vec::new();
    let mut modes: Vec<String> = Vec::new();
    let mut val: BTreeMap<(String, String), f64> = BTreeMap::new();
    for r in &runs {
        let mix = format!("r{} l{} b{}", r["read_ratio"], r["locality"], r["burst"]);
        let mode = r["mode"].as_str().unwrap_or("?").to_string();
        if !mixes.contains(&mix) {
            mixes.push(mix.clone());
        }
        if !modes.contains(&mode) {
            modes.push(mode.clone());
        }
        val.insert((mix, mode), r["ops_per_sec"].as_f64().unwrap_or(0.0));
    }
    let max = val.values().cloned().fold(1.0, f64::max);
    let (bar_w, gap, h) = (18.0, 30.0, 300.0);
    let group_w = bar_w * modes.len() as f64 + gap;
    let width = 80.0 + group_w * mixes.len() as f64;
    let colors = ["#4e79a7", "#f28e2b", "#e15759", "#59a14f"];
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\">\n<text x=\"10\" y=\"16\">{} — total ops/s per mode (a ensemble, b observers, c no sync, d Meridian)</text>\n",
        h + 90.0,
        out["scenario"].as_str().unwrap_or("")
    );
    for (gi, mix) in mixes.iter().enumerate() {
        let x0 = 60.0 + gi as f64 * group_w;
        for (mi, mode) in modes.iter().enumerate() {
            let v = val
                .get(&(mix.clone(), mode.clone()))
                .copied()
                .unwrap_or(0.0);
            let bh = v / max * h;
            let x = x0 + mi as f64 * bar_w;
            s.push_str(&format!(
                "<rect x=\"{x}\" y=\"{}\" width=\"{}\" height=\"{bh}\" fill=\"{}\"><title>mode {mode}: {v:.0} ops/s</title></rect>\n<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{mode}</text>\n",
                30.0 + h - bh,
                bar_w - 2.0,
                colors[mi % colors.len()],
                x + bar_w / 2.0,
                h + 45.0
            ));
        }
        s.push_str(&format!(
            "<text x=\"{x0}\" y=\"{}\">{mix}</text>\n",
            h + 65.0
        ));
    }
    s.push_str(&format!("<text x=\"5\" y=\"40\">{max:.0}</text>\n</svg>\n"));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every mode's topology is valid, and modes a/b give every domain one owner.
    #[test]
    fn mode_topologies_validate() {
        for mode in ["a", "b", "c", "d"] {
            let text = mode_topology(crate::dev::LOCAL_3REGION, mode).expect("mode topology");
            let t = Topology::parse(&text, mode).unwrap_or_else(|e| panic!("mode {mode}: {e}"));
            let owners: std::collections::BTreeSet<_> =
                t.placement().domains().iter().map(|d| d.group).collect();
            match mode {
                "a" | "b" => assert_eq!(owners.len(), 1, "mode {mode}"),
                _ => assert_eq!(owners.len(), 4, "mode {mode}"),
            }
        }
    }

    #[test]
    fn bad_scenarios_are_explained() {
        for (text, words) in [
            (
                "name='x'\nmodes=['z']\nduration_s=1\nclients_per_region=1\n",
                "unknown mode",
            ),
            (
                "name='x'\nmodes=['d']\nduration_s=1\nclients_per_region=1\nread_ratio=2\n",
                "between 0 and 1",
            ),
            (
                "name='x'\nmodes=['d']\nduration_s=0\nclients_per_region=1\n",
                "above 0",
            ),
            (
                "name='x'\nmodes=['d']\nduration_s=1\nclients_per_region=1\nburst=[0.5]\n",
                "at least 1",
            ),
            (
                "name='x'\nmodes=['d']\nduration_s=1\nclients_per_region=1\ncolour=1\n",
                "unknown field",
            ),
        ] {
            let e = parse_scenario(text, "s.toml").expect_err(text);
            assert!(e.to_string().contains(words), "{e} lacks {words:?}");
        }
        let s = parse_scenario(
            "name='x'\nmodes=['c','d']\nduration_s=1\nclients_per_region=1\nread_ratio=[0.5,0.9]\nburst=25\n",
            "s.toml",
        )
        .expect("scenario");
        assert_eq!(
            (s.read_ratio.len(), s.burst, s.locality.clone()),
            (2, vec![25.0], vec![1.0])
        );
    }
}
