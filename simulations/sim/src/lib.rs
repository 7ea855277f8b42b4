//! Latency simulations of Meridian deployments.
//!
//! - [`scenario`]: the scenario file (workload, modes, seed, faults), the topology of each
//!   deployment mode, and the per-client operation stream both runners share.
//! - [`det`]: the deterministic simulation — the real node code under turmoil, per-pair
//!   latencies from the topology, virtual time, the in-memory store, one seed; its history goes
//!   to the sequential-consistency and linearizability checkers.
//!
//! The real run (processes under the WAN emulator) lives in the CLI (`meridian sim run`);
//! both report [`RegionResult`]s per region.

pub mod det;
pub mod scenario;

use hdrhistogram::Histogram;
use std::collections::BTreeMap;

pub use scenario::{parse_scenario, Fault, FaultKind, Mix, Scenario, Step, Workload, KINDS};

/// Latencies (µs) of one region's clients per [`KINDS`] class, and the operations that failed.
#[derive(Clone, Debug)]
pub struct RegionResult {
    pub hist: Vec<Histogram<u64>>,
    pub errors: u64,
}

impl Default for RegionResult {
    fn default() -> Self {
        Self {
            hist: KINDS.iter().map(|_| hist()).collect(),
            errors: 0,
        }
    }
}

impl RegionResult {
    pub fn merge(&mut self, other: &RegionResult) {
        for (a, b) in self.hist.iter_mut().zip(&other.hist) {
            let _ = a.add(b);
        }
        self.errors += other.errors;
    }

    /// Completed operations of every class.
    pub fn ops(&self) -> u64 {
        self.hist.iter().map(|h| h.len()).sum()
    }
}

/// A latency histogram in microseconds, 1 µs to 10 min, 3 significant digits.
pub fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .unwrap_or_else(|_| unreachable!("constant bounds are valid"))
}

/// The `q` quantile of `h` in milliseconds (0 when empty).
pub fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Throughput per mode for each workload mix, as grouped bars.
pub fn svg(out: &serde_json::Value) -> String {
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
    let colors = [
        "#4e79a7", "#f28e2b", "#e15759", "#59a14f", "#76b7b2", "#b07aa1", "#9c755f",
    ];
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\">\n<text x=\"10\" y=\"16\">{} — total ops/s per mode (a ensemble, b observers, c no sync, d Meridian; etcd/zk: peers)</text>\n",
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

/// The header of the per-region result table; `first` names the first column (mode/system).
pub fn table_header(first: &str) -> String {
    format!(
        "{first:<7} {:>5} {:>5} {:>5} {:<14} {:>9} {:>26} {:>26} {:>26} {:>26}",
        "read",
        "local",
        "burst",
        "region",
        "ops/s",
        "local read p50/95/99",
        "remote read p50/95/99",
        "local write p50/95/99",
        "remote write p50/95/99"
    )
}

/// One mix's results as a JSON run (`mode`, the mix, total ops/s, per region ops/s, errors
/// and p50/p95/p99 per class), printing a table row per region on the way.
pub fn report_mix(
    mode: &str,
    mix: Mix,
    duration_s: u64,
    res: &BTreeMap<String, RegionResult>,
) -> serde_json::Value {
    let mut per_region = serde_json::Map::new();
    let mut total = 0.0;
    for (region, r) in res {
        let ops_s = r.ops() as f64 / duration_s as f64;
        total += ops_s;
        let cell =
            |h: &Histogram<u64>| format!("{:.1}/{:.1}/{:.1}", ms(h, 0.5), ms(h, 0.95), ms(h, 0.99));
        println!(
            "{mode:<7} {:>5} {:>5} {:>5} {region:<14} {ops_s:>9.0} {:>26} {:>26} {:>26} {:>26}",
            mix.read_ratio,
            mix.locality,
            mix.burst,
            cell(&r.hist[0]),
            cell(&r.hist[1]),
            cell(&r.hist[2]),
            cell(&r.hist[3])
        );
        let kinds: serde_json::Map<String, serde_json::Value> = KINDS
            .iter()
            .zip(&r.hist)
            .map(|(k, h)| {
                (
                    k.to_string(),
                    serde_json::json!({"count": h.len(), "p50_ms": ms(h, 0.5),
                                       "p95_ms": ms(h, 0.95), "p99_ms": ms(h, 0.99)}),
                )
            })
            .collect();
        per_region.insert(
            region.clone(),
            serde_json::json!({"ops_per_sec": ops_s, "errors": r.errors, "latency": kinds}),
        );
    }
    serde_json::json!({"mode": mode, "read_ratio": mix.read_ratio, "locality": mix.locality,
                       "burst": mix.burst, "ops_per_sec": total, "regions": per_region})
}

/// Results shared by the clients of one run: each adds its own when it finishes.
#[derive(Clone, Default)]
pub struct Collector(std::sync::Arc<std::sync::Mutex<BTreeMap<String, RegionResult>>>);

impl Collector {
    pub fn add(&self, region: &str, r: &RegionResult) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(region.to_string())
            .or_default()
            .merge(r);
    }

    pub fn take(&self) -> BTreeMap<String, RegionResult> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}
