//! What the node measures for `/metrics` beyond its status (server/src/http.rs renders both):
//! latency histograms of client reads by consistency level, of each group's sync rounds
//! (`syncs.rs`) and of the log writer's fsyncs (`meridian_storage::writer`), and gRPC answers
//! by method and code ([`CountRpcs`], a tower layer over the node's gRPC server). One entry:
//! [`Metrics`], handed by `node.rs` to the Kv service; [`Scrape`] is one reading of it all.

use meridian_proto::kv as pb;
use meridian_types::metrics::{Histogram, HistogramSnapshot};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The node's own histograms.
#[derive(Default)]
pub struct Metrics {
    /// Served reads (get, range) by consistency: sequential, linearizable, stale.
    reads: [Histogram; 3],
}

/// The label of each consistency level, in [`Metrics::reads`]' order.
const CONSISTENCY: [&str; 3] = ["sequential", "linearizable", "stale"];

impl Metrics {
    /// Where a read served at consistency `c` is counted.
    pub fn read(&self, c: pb::Consistency) -> &Histogram {
        &self.reads[match c {
            pb::Consistency::Sequential => 0,
            pb::Consistency::Linearizable => 1,
            pb::Consistency::Stale => 2,
        }]
    }

    /// The read histograms, labelled.
    pub fn observed(&self) -> Vec<Observed> {
        CONSISTENCY
            .iter()
            .zip(&self.reads)
            .map(|(c, h)| Observed {
                name: "meridian_read_duration_seconds",
                help: "Reads (get, range) this router served, by consistency level.",
                labels: vec![("consistency", c.to_string())],
                histogram: h.snapshot(),
            })
            .collect()
    }
}

/// One labelled histogram of a scrape.
#[derive(Clone, Debug)]
pub struct Observed {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub histogram: HistogramSnapshot,
}

/// One labelled gauge or counter of a scrape.
#[derive(Clone, Debug)]
pub struct Gauge {
    pub name: &'static str,
    /// `gauge` or `counter`.
    pub kind: &'static str,
    pub help: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

/// The gauges of one group's replica: its leases, the locks held and the acquires waiting.
/// Reads the whole lock table (under the state's read lock), once per scrape.
pub fn group_gauges(group: u64, name: &str, s: &meridian_storage::KvState) -> Vec<Gauge> {
    let (mut held, mut waiting) = (0usize, 0usize);
    for lock in s.locks.values() {
        let h = lock
            .waiters
            .iter()
            .filter(|(_, w)| w.granted.is_some() && !w.is_delay())
            .count();
        let d = lock.waiters.iter().filter(|(_, w)| w.is_delay()).count();
        held += h;
        waiting += lock.waiters.len() - h - d;
    }
    let labels = || vec![("group", group.to_string()), ("name", name.to_string())];
    vec![
        Gauge {
            name: "meridian_group_leases",
            kind: "gauge",
            help: "Leases alive in the group, as this replica has applied them.",
            labels: labels(),
            value: s.leases.len() as f64,
        },
        Gauge {
            name: "meridian_group_locks_held",
            kind: "gauge",
            help: "Lock holders in the group (a shared lock may have several).",
            labels: labels(),
            value: held as f64,
        },
        Gauge {
            name: "meridian_group_lock_waiters",
            kind: "gauge",
            help: "Lock acquires queued behind a holder in the group.",
            labels: labels(),
            value: waiting as f64,
        },
    ]
}

/// One group's proposer: commands and entries proposed (counters), the commit histogram and
/// the batch sizes (commands per entry).
pub fn proposer_samples(
    group: u64,
    name: &str,
    stats: &crate::proposer::ProposerStats,
) -> (Vec<Gauge>, [Observed; 2]) {
    let labels = || vec![("group", group.to_string()), ("name", name.to_string())];
    (
        vec![
            Gauge {
                name: "meridian_group_proposals_total",
                kind: "counter",
                help: "Commands this node proposed to the group (as its leader).",
                labels: labels(),
                value: stats.commands.load(Ordering::Relaxed) as f64,
            },
            Gauge {
                name: "meridian_group_proposal_entries_total",
                kind: "counter",
                help: "Raft entries those commands went in (proposals / entries = batch size).",
                labels: labels(),
                value: stats.entries.load(Ordering::Relaxed) as f64,
            },
        ],
        [
            Observed {
                name: "meridian_group_commit_duration_seconds",
                help: "An entry's proposal to its result on the leader (quorum fsync and apply).",
                labels: labels(),
                histogram: stats.commit.snapshot(),
            },
            Observed {
                name: "meridian_group_proposal_batch_commands",
                help: "Commands per Raft entry this node proposed to the group (the batch size).",
                labels: labels(),
                histogram: stats.batch.snapshot(),
            },
        ],
    )
}

/// Where the operator's listener and the health service read the node: a fresh [`Scrape`]
/// at each call.
pub type ScrapeSource = Arc<dyn Fn() -> Scrape + Send + Sync>;

/// One reading of the node: its status, its histograms and gauges, and its gRPC answers by
/// method and code.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    pub status: pb::StatusResponse,
    pub histograms: Vec<Observed>,
    pub gauges: Vec<Gauge>,
    pub rpcs: Vec<(String, &'static str, u64)>,
}

/// gRPC requests this node answered, by method (its path, `/meridian.v1.Kv/Get`) and status
/// code. Methods are the node's own services, so the map stays small; past
/// [`RPC_METHODS_MAX`] methods (a client probing made-up paths) the rest count as `other`.
#[derive(Default)]
pub struct RpcCounts {
    by_method: std::sync::RwLock<std::collections::HashMap<String, Counter>>,
}

/// Most distinct method paths counted one by one.
pub const RPC_METHODS_MAX: usize = 256;

impl RpcCounts {
    fn counter(&self, method: &str) -> Counter {
        if let Some(c) = self
            .by_method
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(method)
        {
            return c.clone();
        }
        let mut map = self.by_method.write().unwrap_or_else(|p| p.into_inner());
        let key = if map.len() >= RPC_METHODS_MAX && !map.contains_key(method) {
            "other"
        } else {
            method
        };
        map.entry(key.to_string()).or_default().clone()
    }

    /// Counts one answer of `method` with gRPC status `code` (0 OK … 16 Unauthenticated; an
    /// unknown code counts as 2, Unknown).
    pub fn count(&self, method: &str, code: u16) {
        count(&self.counter(method), code);
    }

    /// (method, code name, answers) for every nonzero count, sorted.
    pub fn snapshot(&self) -> Vec<(String, &'static str, u64)> {
        let map = self.by_method.read().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for (method, counts) in map.iter() {
            for (code, n) in counts.iter().enumerate() {
                let n = n.load(Ordering::Relaxed);
                if n > 0 {
                    out.push((method.clone(), CODE_NAMES[code], n));
                }
            }
        }
        out.sort();
        out
    }
}

/// gRPC status codes' names, by number.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// A tower layer over the node's gRPC server that counts every answer in [`RpcCounts`]: by
/// the `grpc-status` of its headers (an error answered at once) or of its trailers (the end of
/// a unary answer or a stream). A stream that ends without trailers (the client went away) is
/// counted as `CANCELLED`.
#[derive(Clone)]
pub struct CountRpcs(pub Arc<RpcCounts>);

impl<S> tower::Layer<S> for CountRpcs {
    type Service = Counting<S>;

    fn layer(&self, inner: S) -> Counting<S> {
        Counting {
            inner,
            counts: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Counting<S> {
    inner: S,
    counts: Arc<RpcCounts>,
}

fn grpc_status(headers: &http::HeaderMap) -> Option<u16> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Counting<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Unpin,
{
    type Response = http::Response<CountedBody<ResBody>>;
    type Error = S::Error;
    type Future = CountingFuture<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        // The method's counters are found before the call: no allocation per request.
        let counter = Some(self.counts.counter(req.uri().path()));
        CountingFuture {
            answer: self.inner.call(req),
            counter,
        }
    }
}

/// One method's counters, by status code.
type Counter = Arc<[AtomicU64; 17]>;

fn count(counter: &Counter, code: u16) {
    let i = if code <= 16 { code as usize } else { 2 };
    counter[i].fetch_add(1, Ordering::Relaxed);
}

/// The answer of one call, counted when its headers carry a status, else handed to its body.
pub struct CountingFuture<F> {
    answer: F,
    counter: Option<Counter>,
}

impl<F, B, E> std::future::Future for CountingFuture<F>
where
    F: std::future::Future<Output = Result<http::Response<B>, E>> + Unpin,
{
    type Output = Result<http::Response<CountedBody<B>>, E>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let res = match std::pin::Pin::new(&mut self.answer).poll(cx) {
            std::task::Poll::Pending => return std::task::Poll::Pending,
            std::task::Poll::Ready(r) => r,
        };
        let counter = self.counter.take();
        std::task::Poll::Ready(res.map(|res| {
            let pending = match (grpc_status(res.headers()), counter) {
                (Some(code), Some(c)) => {
                    count(&c, code);
                    None
                }
                (_, c) => c,
            };
            res.map(|inner| CountedBody { inner, pending })
        }))
    }
}

/// An answer's body that counts its request when the trailers go by (or when it is dropped
/// without them).
pub struct CountedBody<B> {
    inner: B,
    /// Where to count, until counted.
    pending: Option<Counter>,
}

impl<B> Drop for CountedBody<B> {
    fn drop(&mut self) {
        if let Some(c) = self.pending.take() {
            count(&c, 1);
        }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                if let Some(c) = self.pending.take() {
                    count(&c, code);
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
