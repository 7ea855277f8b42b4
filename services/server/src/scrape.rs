//! What the operator's HTTP listener shows (`/metrics`, `/status`): the status the Kv service
//! answers, the node's gauges (clock, watches), the histograms of reads, sync rounds and
//! fsyncs, and the RPC counts — read afresh on every scrape.

use crate::ctx::NodeCtx;
use crate::gate::Gate;
use crate::keepalive::KeepAlives;
use crate::metrics::{Gauge, Metrics, Observed, RpcCounts, Scrape, ScrapeSource};
use meridian_types::metrics::Histogram;
use meridian_types::GroupId;
use std::sync::Arc;

/// The node's scrape: `fsync` is the log writer's fsync histogram (none in a simulation).
pub fn source(
    ctx: Arc<NodeCtx>,
    keepalives: Arc<KeepAlives>,
    gate: Arc<Gate>,
    metrics: Arc<Metrics>,
    rpcs: Arc<RpcCounts>,
    fsync: Option<Arc<Histogram>>,
) -> ScrapeSource {
    Arc::new(move || {
        let status = crate::service::node_status(&ctx, &keepalives, &gate);
        let mut histograms = metrics.observed();
        let mut gauges = Vec::new();
        let name = |g: GroupId| ctx.topology.group(g).map_or("", |spec| spec.name.as_str());
        for (g, h) in ctx.host.groups() {
            gauges.extend(crate::metrics::group_gauges(g.0, name(g), &h.shared.read()));
        }
        for (g, p) in &ctx.proposers {
            let (counts, observed) = crate::metrics::proposer_samples(g.0, name(*g), p.stats());
            gauges.extend(counts);
            histograms.extend(observed);
        }
        gauges.push(Gauge {
            name: "meridian_clock_held_back_seconds",
            kind: "gauge",
            help: "How far this node's wall clock was ahead of the time it stamps with: \
                   a jump ahead is held to the monotonic clock's pace until the clock \
                   check finds most of the cluster agrees with the wall clock (0 normally).",
            labels: Vec::new(),
            value: ctx.timestamps.held_back_us() as f64 / 1e6,
        });
        gauges.push(Gauge {
            name: "meridian_watch_streams",
            kind: "gauge",
            help: "Watches and election-observe streams this node serves now (each watch of a \
                   shared stream counts).",
            labels: Vec::new(),
            value: ctx.watches.open_now() as f64,
        });
        gauges.push(Gauge {
            name: "meridian_watchers",
            kind: "gauge",
            help: "Watcher tasks running now: each serves one watch, or several watches \
                   of one shared stream that stand at the same revision.",
            labels: Vec::new(),
            value: ctx.watches.watchers_now() as f64,
        });
        gauges.push(Gauge {
            name: "meridian_watch_upstreams",
            kind: "gauge",
            help: "Shared feeds open now: one subscription to a replica per watched \
                   key or prefix, however many watchers it serves.",
            labels: Vec::new(),
            value: ctx.fanout.upstreams() as f64,
        });
        gauges.push(Gauge {
            name: "meridian_watch_fell_behind_total",
            kind: "counter",
            help: "Watchers dropped from their feed to the history because they did \
                   not keep up.",
            labels: Vec::new(),
            value: ctx.fanout.dropped() as f64,
        });
        gauges.push(Gauge {
            name: "meridian_watch_cut_off_total",
            kind: "counter",
            help: "Watch streams ended because their client read nothing while \
                   events waited.",
            labels: Vec::new(),
            value: ctx.watches.cut_off_count() as f64,
        });
        gauges.push(Gauge {
            name: "meridian_watch_events_sent_total",
            kind: "counter",
            help: "Events this node sent on its watch streams (relayed ones not counted).",
            labels: Vec::new(),
            value: ctx.watches.events_sent() as f64,
        });
        for g in &status.groups {
            histograms.push(Observed {
                name: "meridian_sync_round_duration_seconds",
                help: "Read-index sync rounds this router completed, by group.",
                labels: vec![("group", g.group.to_string()), ("name", g.name.clone())],
                histogram: ctx.syncers.round_latency(GroupId(g.group)),
            });
        }
        if let Some(f) = &fsync {
            histograms.push(Observed {
                name: "meridian_fsync_duration_seconds",
                help: "The log writer's fsyncs (one per group commit of every group).",
                labels: Vec::new(),
                histogram: f.snapshot(),
            });
        }
        Scrape {
            status,
            histograms,
            gauges,
            rpcs: rpcs.snapshot(),
        }
    })
}
