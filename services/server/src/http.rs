//! The operator's HTTP listener (`[http] listen`, docs/operations.md): Prometheus metrics at
//! `/metrics`, liveness at `/healthz`, readiness at `/readyz`. One entry: [`serve`].
//!
//! Every scrape renders the node's status — the same numbers `meridian status` shows — in
//! Prometheus's text format, named in its conventions (units in names, `_total` counters).
//! Nothing here names a key or a value. The listener is plain HTTP without tokens: bind it
//! where only operators and their Prometheus reach (as etcd's `--listen-metrics-urls`).

use crate::metrics::{Observed, Scrape, ScrapeSource};
use meridian_proto::kv as pb;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Longest one HTTP request may take (a scrape renders in well under a millisecond).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Most HTTP requests served at once; past it a request waits for a slot (then times out).
const CONCURRENT_MAX: usize = 64;

/// Serves `/metrics`, `/healthz` and `/readyz` — and with a `gateway`, the HTTP/JSON gateway's
/// routes and `/openapi.json` — on `listener` until `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    status: ScrapeSource,
    ready_lag: Duration,
    gateway: Option<crate::gateway::Gateway>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let limit = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_MAX));
    let guarded = move |f: fn(&Scrape, Duration) -> Reply| {
        let status = status.clone();
        let limit = limit.clone();
        move || {
            let status = status.clone();
            let limit = limit.clone();
            async move {
                let work = async {
                    let _slot = limit.acquire().await;
                    let s = tokio::task::spawn_blocking(move || status())
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok::<_, String>(f(&s, ready_lag))
                };
                match tokio::time::timeout(REQUEST_TIMEOUT, work).await {
                    Ok(Ok(reply)) => reply,
                    Ok(Err(e)) => Reply::unavailable(format!("status failed: {e}\n")),
                    Err(_) => Reply::unavailable("status took too long\n".into()),
                }
                .into_axum()
            }
        }
    };
    let app = axum::Router::new()
        .route("/metrics", get(guarded(|s, _| Reply::metrics(render(s)))))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(guarded(readiness)));
    let app = match gateway {
        Some(g) => app.merge(g.routes()),
        None => app,
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
}

/// An HTTP answer: status code, content type, body.
struct Reply {
    code: u16,
    content_type: &'static str,
    body: String,
}

impl Reply {
    fn metrics(body: String) -> Self {
        Self {
            code: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body,
        }
    }

    fn text(code: u16, body: String) -> Self {
        Self {
            code,
            content_type: "text/plain; charset=utf-8",
            body,
        }
    }

    fn unavailable(body: String) -> Self {
        Self::text(503, body)
    }

    fn into_axum(self) -> axum::response::Response {
        use axum::response::IntoResponse;
        let code = axum::http::StatusCode::from_u16(self.code)
            .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        (
            code,
            [(axum::http::header::CONTENT_TYPE, self.content_type)],
            self.body,
        )
            .into_response()
    }
}

/// `/readyz`: `200 ready`, or 503 with each reason [`crate::health::unready`] gives on a line.
fn readiness(s: &Scrape, max_lag: Duration) -> Reply {
    let reasons = crate::health::unready(&s.status, max_lag);
    if reasons.is_empty() {
        Reply::text(200, "ready\n".into())
    } else {
        Reply::unavailable(reasons.iter().map(|r| format!("{r}\n")).collect())
    }
}

/// A label value escaped for the text format (backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The text format's family header and samples, built one family at a time.
struct Families(String);

impl Families {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn histogram(&mut self, o: &Observed) {
        let labels: Vec<(&str, &str)> = o.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let bucket = format!("{}_bucket", o.name);
        for (le, n) in &o.histogram.buckets {
            let le = le.to_string();
            let mut l = labels.clone();
            l.push(("le", &le));
            self.sample(&bucket, &l, *n as f64);
        }
        let mut l = labels.clone();
        l.push(("le", "+Inf"));
        self.sample(&bucket, &l, o.histogram.count as f64);
        self.sample(&format!("{}_sum", o.name), &labels, o.histogram.sum);
        self.sample(
            &format!("{}_count", o.name),
            &labels,
            o.histogram.count as f64,
        );
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
            .collect();
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {value}");
        } else {
            let _ = writeln!(self.0, "{name}{{{}}} {value}", labels.join(","));
        }
    }
}

/// Per-group gauges and counters: (name, type, help, value of a group's status).
type GroupMetric = (
    &'static str,
    &'static str,
    &'static str,
    fn(&pb::GroupStatus) -> f64,
);

const GROUP_METRICS: &[GroupMetric] = &[
    (
        "meridian_group_term",
        "gauge",
        "The group's current Raft term as this replica knows it.",
        |g| g.term as f64,
    ),
    (
        "meridian_group_leader_id",
        "gauge",
        "The node id of the group's leader (0: none known).",
        |g| g.leader as f64,
    ),
    (
        "meridian_group_is_leader",
        "gauge",
        "1 if this node leads the group.",
        |g| f64::from(u8::from(g.state == "Leader")),
    ),
    (
        "meridian_group_last_log_index",
        "gauge",
        "The last index of this replica's log.",
        |g| g.last_log_index as f64,
    ),
    (
        "meridian_group_commit_index",
        "gauge",
        "The commit index as the leader knows it (0 on other replicas).",
        |g| g.committed as f64,
    ),
    (
        "meridian_group_applied_index",
        "gauge",
        "The last log index this replica applied.",
        |g| g.applied as f64,
    ),
    (
        "meridian_group_lag_seconds",
        "gauge",
        "How far this replica is known to lag its leader (0 on the leader).",
        |g| g.lag_ms as f64 / 1000.0,
    ),
    (
        "meridian_group_membership_drift",
        "gauge",
        "Members whose live role (voter, learner, none) differs from the topology file.",
        |g| g.drift.len() as f64,
    ),
    (
        "meridian_group_sync_rounds_total",
        "counter",
        "Read-index sync rounds this router sent for the group.",
        |g| g.syncs_sent as f64,
    ),
    (
        "meridian_group_synced_reads_total",
        "counter",
        "Reads this router served after a sync of the group.",
        |g| g.synced_reads as f64,
    ),
];

/// Per-node counters: (name, help, value).
type NodeMetric = (&'static str, &'static str, fn(&pb::StatusResponse) -> f64);

const NODE_METRICS: &[NodeMetric] = &[
    (
        "meridian_forwarded_writes_total",
        "Writes this router forwarded to another node's leader.",
        |s| s.forwarded_writes as f64,
    ),
    (
        "meridian_lease_keepalive_requests_total",
        "Lease keepalive calls this router received.",
        |s| s.keepalive_requests as f64,
    ),
    (
        "meridian_lease_keepalive_refreshes_total",
        "Aggregated lease refresh entries this router proposed.",
        |s| s.keepalive_refreshes as f64,
    ),
    (
        "meridian_auth_refused_total",
        "Requests this node refused: tokens, TLS handshakes, peer admission.",
        |s| s.auth_refused as f64,
    ),
];

/// `scrape` in Prometheus's text format (version 0.0.4).
pub fn render(scrape: &Scrape) -> String {
    let s = &scrape.status;
    let mut f = Families(String::new());
    let node = s.node.to_string();
    f.family(
        "meridian_node_info",
        "gauge",
        "This node: its id, region and version (always 1).",
    );
    f.sample(
        "meridian_node_info",
        &[
            ("node", &node),
            ("region", &s.region),
            ("version", &s.version),
        ],
        1.0,
    );
    for (name, help, value) in NODE_METRICS {
        f.family(name, "counter", help);
        f.sample(name, &[], value(s));
    }
    f.family(
        "meridian_group_replica_info",
        "gauge",
        "A group this node hosts, with this replica's role (voter or learner) and Raft state (always 1).",
    );
    for g in &s.groups {
        let id = g.group.to_string();
        f.sample(
            "meridian_group_replica_info",
            &[
                ("group", &id),
                ("name", &g.name),
                ("role", &g.role),
                ("state", &g.state),
            ],
            1.0,
        );
    }
    for (name, kind, help, value) in GROUP_METRICS {
        f.family(name, kind, help);
        for g in &s.groups {
            // A lag not known yet (the status says u64::MAX) has no sample.
            if *name == "meridian_group_lag_seconds" && g.lag_ms == u64::MAX {
                continue;
            }
            let id = g.group.to_string();
            f.sample(name, &[("group", &id), ("name", &g.name)], value(g));
        }
    }
    f.family(
        "meridian_group_member_lag_entries",
        "gauge",
        "On a group's leader: how many log entries each member is behind its last index.",
    );
    for g in s.groups.iter().filter(|g| g.state == "Leader") {
        let id = g.group.to_string();
        for m in &g.members {
            let member = m.node.to_string();
            f.sample(
                "meridian_group_member_lag_entries",
                &[
                    ("group", &id),
                    ("name", &g.name),
                    ("member", &member),
                    ("member_region", &m.region),
                ],
                m.lag_entries as f64,
            );
        }
    }
    f.family(
        "meridian_grpc_requests_total",
        "counter",
        "gRPC requests this node answered, by method and status code.",
    );
    for (method, code, n) in &scrape.rpcs {
        f.sample(
            "meridian_grpc_requests_total",
            &[("method", method), ("code", code)],
            *n as f64,
        );
    }
    let mut names: Vec<&str> = Vec::new();
    for g in &scrape.gauges {
        if !names.contains(&g.name) {
            names.push(g.name);
        }
    }
    for name in names {
        let family: Vec<&crate::metrics::Gauge> =
            scrape.gauges.iter().filter(|g| g.name == name).collect();
        f.family(name, family[0].kind, family[0].help);
        for g in family {
            let labels: Vec<(&str, &str)> =
                g.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            f.sample(name, &labels, g.value);
        }
    }
    let mut names: Vec<&str> = Vec::new();
    for o in &scrape.histograms {
        if !names.contains(&o.name) {
            names.push(o.name);
        }
    }
    for name in names {
        let family: Vec<&Observed> = scrape
            .histograms
            .iter()
            .filter(|o| o.name == name)
            .collect();
        f.family(name, "histogram", family[0].help);
        for o in family {
            f.histogram(o);
        }
    }
    f.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape() -> Scrape {
        let h = meridian_types::metrics::Histogram::default();
        h.observe(Duration::from_millis(3));
        Scrape {
            status: status(),
            rpcs: vec![("/meridian.v1.Kv/Get".into(), "NOT_FOUND", 3)],
            gauges: vec![crate::metrics::Gauge {
                name: "meridian_group_leases",
                kind: "gauge",
                help: "leases",
                labels: vec![("group", "1".into())],
                value: 2.0,
            }],
            histograms: vec![Observed {
                name: "meridian_fsync_duration_seconds",
                help: "fsyncs",
                labels: Vec::new(),
                histogram: h.snapshot(),
            }],
        }
    }

    fn status() -> pb::StatusResponse {
        pb::StatusResponse {
            node: 2,
            region: "eu-\"west\"".into(),
            version: "0.1.0".into(),
            forwarded_writes: 7,
            groups: vec![
                pb::GroupStatus {
                    group: 1,
                    name: "us-east".into(),
                    leader: 1,
                    term: 3,
                    applied: 40,
                    state: "Learner".into(),
                    role: "learner".into(),
                    lag_ms: 120,
                    syncs_sent: 5,
                    ..Default::default()
                },
                pb::GroupStatus {
                    group: 2,
                    name: "eu-west".into(),
                    leader: 2,
                    state: "Leader".into(),
                    role: "voter".into(),
                    last_log_index: 9,
                    members: vec![pb::MemberStatus {
                        node: 5,
                        region: "eu-west".into(),
                        lag_entries: 4,
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn the_status_renders_as_prometheus_text() {
        let text = render(&scrape());
        for line in [
            "meridian_node_info{node=\"2\",region=\"eu-\\\"west\\\"\",version=\"0.1.0\"} 1",
            "meridian_forwarded_writes_total 7",
            "meridian_group_applied_index{group=\"1\",name=\"us-east\"} 40",
            "meridian_group_lag_seconds{group=\"1\",name=\"us-east\"} 0.12",
            "meridian_group_is_leader{group=\"2\",name=\"eu-west\"} 1",
            "meridian_group_sync_rounds_total{group=\"1\",name=\"us-east\"} 5",
            "meridian_group_member_lag_entries{group=\"2\",name=\"eu-west\",member=\"5\",member_region=\"eu-west\"} 4",
            "# TYPE meridian_group_synced_reads_total counter",
            "# TYPE meridian_fsync_duration_seconds histogram",
            "meridian_fsync_duration_seconds_bucket{le=\"0.0025\"} 0",
            "meridian_fsync_duration_seconds_bucket{le=\"0.005\"} 1",
            "meridian_fsync_duration_seconds_bucket{le=\"+Inf\"} 1",
            "meridian_fsync_duration_seconds_sum 0.003",
            "meridian_fsync_duration_seconds_count 1",
            "meridian_grpc_requests_total{method=\"/meridian.v1.Kv/Get\",code=\"NOT_FOUND\"} 3",
            "meridian_group_leases{group=\"1\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
        }
        // Each family is declared once.
        let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        let names: std::collections::BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        assert_eq!(types, names.len());
    }

    #[test]
    fn readiness_names_every_group_that_is_not_ready() {
        let mut s = scrape();
        let lag = Duration::from_millis(100);
        let r = readiness(&s, lag);
        assert_eq!(r.code, 503);
        assert!(
            r.body
                .contains("group 1 (us-east): this replica lags its leader by 120 ms"),
            "{}",
            r.body
        );
        assert!(!r.body.contains("group 2"), "{}", r.body);
        assert_eq!(readiness(&s, Duration::from_secs(1)).code, 200);
        s.status.groups[1].leader = 0;
        let r = readiness(&s, Duration::from_secs(1));
        assert_eq!(r.code, 503);
        assert!(
            r.body.contains("group 2 (eu-west): no known leader"),
            "{}",
            r.body
        );
        s.status.groups.clear();
        assert_eq!(readiness(&s, lag).code, 503);
    }
}
