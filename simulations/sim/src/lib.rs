//! Latency simulations of Meridian deployments.
//!
//! - [`scenario`]: the scenario file (workload, modes, seed, faults), the topology of each
//!   deployment mode, and the per-client operation stream both runners share.
//! - [`det`]: the deterministic simulation — the real node code under turmoil, per-pair
//!   latencies from the topology, virtual time, the in-memory store, one seed; its history goes
//!   to the sequential-consistency and linearizability checkers.
//! - [`faults`]: fault schedules drawn from a seed (`random_faults`);
//! - [`lockers`]: the lockers' holds and fenced writes, and the lock checker over them;
//! - [`sweep`]: one seed with every checker ([`sweep::run_seed`]) and the shortest failing
//!   prefix of a history that fails one — what `meridian sim sweep` runs on.
//!
//! The real run (processes under the WAN emulator) lives in the CLI (`meridian sim run`);
//! both report [`RegionResult`]s per region.

pub mod det;
pub mod faults;
pub mod lockers;
pub mod scenario;
pub mod sweep;

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

/// What a deployment label in the charts stands for.
fn mode_name(mode: &str) -> &str {
    match mode {
        "a" => "a: Meridian, one ensemble across regions",
        "b" => "b: Meridian, one group + observers",
        "c" => "c: per-region groups, no sync (not SC)",
        "d" => "d: Meridian composition",
        "e" => "e: Meridian, closed timestamps",
        "etcd-a" => "etcd-a: etcd 3.4 across regions",
        "zk-a" => "zk-a: ZooKeeper 3.8 voters across regions",
        "zk-b" => "zk-b: ZooKeeper 3.8 voters + observers",
        other => other,
    }
}

/// Throughput per deployment for each workload mix, as grouped bars on a log scale: one panel
/// for all regions together, then one per region (closed-loop totals favour whichever region
/// a deployment favours, so the per-region panels are the fairer view).
pub fn svg(out: &serde_json::Value) -> String {
    let runs = out["runs"].as_array().cloned().unwrap_or_default();
    let mut mixes: Vec<[String; 3]> = Vec::new();
    let mut modes: Vec<String> = Vec::new();
    let mut regions: Vec<String> = Vec::new();
    // (panel, mix, mode) → ops/s; panel "" is all regions.
    let mut val: BTreeMap<(String, usize, String), f64> = BTreeMap::new();
    for r in &runs {
        let mix = [
            format!(
                "{:.0}% reads",
                r["read_ratio"].as_f64().unwrap_or(0.0) * 100.0
            ),
            format!(
                "{:.0}% local",
                r["locality"].as_f64().unwrap_or(0.0) * 100.0
            ),
            format!("burst {}", r["burst"].as_f64().unwrap_or(0.0)),
        ];
        let mode = r["mode"].as_str().unwrap_or("?").to_string();
        let mi = match mixes.iter().position(|m| *m == mix) {
            Some(i) => i,
            None => {
                mixes.push(mix);
                mixes.len() - 1
            }
        };
        if !modes.contains(&mode) {
            modes.push(mode.clone());
        }
        val.insert(
            (String::new(), mi, mode.clone()),
            r["ops_per_sec"].as_f64().unwrap_or(0.0),
        );
        if let Some(per) = r["regions"].as_object() {
            for (region, v) in per {
                if !regions.contains(region) {
                    regions.push(region.clone());
                }
                val.insert(
                    (region.clone(), mi, mode.clone()),
                    v["ops_per_sec"].as_f64().unwrap_or(0.0),
                );
            }
        }
    }
    // Log scale from 1 ops/s to the next power of ten above the largest value.
    let max = val.values().cloned().fold(1.0, f64::max);
    let decades = max.log10().ceil().max(1.0);
    let (bar_w, gap, plot_h, left) = (14.0, 26.0, 170.0, 70.0);
    // Wide enough for the mix label ("90% reads", ~60 px) under few bars.
    let group_w = (bar_w * modes.len() as f64 + gap).max(80.0);
    let width = left + group_w * mixes.len() as f64 + 10.0;
    let legend_h = 16.0 * modes.len().div_ceil(2) as f64 + 10.0;
    let panel_h = plot_h + 80.0;
    let mut panels = vec![String::new()];
    panels.extend(regions.iter().cloned());
    let height = 30.0 + legend_h + panel_h * panels.len() as f64;
    let colors = [
        "#4e79a7", "#f28e2b", "#e15759", "#59a14f", "#76b7b2", "#b07aa1", "#9c755f",
    ];
    let y_of = |v: f64| -> f64 {
        let frac = if v <= 1.0 { 0.0 } else { v.log10() / decades };
        plot_h * (1.0 - frac)
    };
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"10\" y=\"18\" font-size=\"13\">{} — throughput (ops/s, log scale) per deployment and workload mix</text>\n",
        out["scenario"].as_str().unwrap_or("")
    );
    for (i, mode) in modes.iter().enumerate() {
        let (col, row) = (i % 2, i / 2);
        let (x, y) = (10.0 + col as f64 * 330.0, 32.0 + row as f64 * 16.0);
        s.push_str(&format!(
            "<rect x=\"{x}\" y=\"{y}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>\n",
            colors[i % colors.len()],
            x + 14.0,
            y + 9.0,
            mode_name(mode)
        ));
    }
    for (pi, panel) in panels.iter().enumerate() {
        let top = 30.0 + legend_h + pi as f64 * panel_h + 20.0;
        let title = if panel.is_empty() {
            "all regions".to_string()
        } else {
            format!("clients in {panel}")
        };
        s.push_str(&format!(
            "<text x=\"10\" y=\"{}\" font-weight=\"bold\">{title}</text>\n",
            top - 6.0
        ));
        for d in 0..=(decades as u32) {
            let v = 10f64.powi(d as i32);
            let y = top + y_of(v);
            s.push_str(&format!(
                "<line x1=\"{left}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{v:.0}</text>\n",
                width - 10.0,
                left - 4.0,
                y + 4.0
            ));
        }
        for (gi, label) in mixes.iter().enumerate() {
            let x0 = left + 8.0 + gi as f64 * group_w;
            for (mi, mode) in modes.iter().enumerate() {
                let Some(v) = val.get(&(panel.clone(), gi, mode.clone())).copied() else {
                    continue;
                };
                let y = top + y_of(v);
                let x = x0 + mi as f64 * bar_w;
                s.push_str(&format!(
                    "<rect x=\"{x}\" y=\"{y}\" width=\"{}\" height=\"{}\" fill=\"{}\"><title>{}: {v:.0} ops/s</title></rect>\n",
                    bar_w - 2.0,
                    top + plot_h - y,
                    colors[mi % colors.len()],
                    mode_name(mode)
                ));
            }
            for (li, line) in label.iter().enumerate() {
                s.push_str(&format!(
                    "<text x=\"{x0}\" y=\"{}\">{line}</text>\n",
                    top + plot_h + 14.0 + 13.0 * li as f64
                ));
            }
        }
    }
    s.push_str("</svg>\n");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run(mode: &str, total: f64, east: f64) -> serde_json::Value {
        serde_json::json!({"mode": mode, "read_ratio": 0.9, "locality": 0.5, "burst": 25.0,
            "ops_per_sec": total, "regions": {"us-east": {"ops_per_sec": east},
            "eu-west": {"ops_per_sec": total - east}}})
    }

    /// `sim chart` redraws a chart from the written JSON: the parsed numbers must be the
    /// written ones to the last bit (serde_json's default parser may round the last digit
    /// differently; the workspace turns on `float_roundtrip`), so the redraw is identical.
    #[test]
    fn a_chart_redrawn_from_its_json_is_identical() {
        let mut x: f64 = 0.123_456_789;
        for i in 0..2000 {
            // Throughputs like the runs print: ops divided by elapsed seconds.
            x = (x * 9_301.0 + 49_297.0) % 233_280.0;
            let total = 1.0 + x / (3.0 + i as f64 / 997.0);
            let east = total / (1.0 + (i % 7) as f64 / 3.0);
            let out = serde_json::json!({"scenario": "t",
                "runs": [run("c", total, east), run("d", total / 3.3, east / 2.9)]});
            let text = serde_json::to_string_pretty(&out).expect("serialize");
            let back: serde_json::Value = serde_json::from_str(&text).expect("parse");
            assert_eq!(svg(&back), svg(&out), "run {i}: {text}");
        }
    }

    /// One panel for all regions and one per region; bars on a log scale, so ten times the
    /// throughput is one decade taller, whatever the largest value.
    #[test]
    fn chart_has_a_panel_per_region_and_log_bars() {
        let out = serde_json::json!({"scenario": "t",
            "runs": [run("a", 100.0, 60.0), run("d", 1000.0, 600.0)]});
        let chart = svg(&out);
        assert!(chart.starts_with("<svg"), "{chart}");
        for panel in ["all regions", "clients in us-east", "clients in eu-west"] {
            assert!(chart.contains(panel), "no panel {panel}");
        }
        assert!(chart.contains("d: Meridian composition"), "legend");
        for line in ["90% reads", "50% local", "burst 25"] {
            assert!(chart.contains(&format!(">{line}<")), "mix label {line}");
        }
        // Bar heights of the first panel: a (100 ops/s) and d (1000 ops/s).
        let heights: Vec<f64> = chart
            .lines()
            .filter(|l| l.starts_with("<rect x=") && l.contains("<title>"))
            .take(2)
            .map(|l| {
                let h = l.split("height=\"").nth(1).expect("height");
                h[..h.find('"').expect("quote")].parse().expect("number")
            })
            .collect();
        assert_eq!(heights.len(), 2);
        // 3 decades (1..1,000) over 170 px: the top bar fills the plot, one decade less is
        // a third shorter.
        assert!((heights[1] - 170.0).abs() < 0.01, "{heights:?}");
        assert!(
            (heights[1] - heights[0] - 170.0 / 3.0).abs() < 0.01,
            "{heights:?}"
        );
    }
}
