//! Tracing (issue 15, docs/operations.md "Tracing"): when `[telemetry] otlp_endpoint` is set,
//! the node's spans go to an OpenTelemetry collector over OTLP/gRPC. One entry: [`install`]
//! builds the `tracing` layer and the provider behind it; [`TraceRpcs`] opens a span per gRPC
//! request, continuing the caller's trace (`meridian_proto::trace` carries it between nodes).
//!
//! What a trace holds: the request (`meridian.v1.Kv/Put`, …) with its group and consistency,
//! the router's sync round and the read index it asks of a leader in another region, a forward
//! to the leader, and there the Raft proposal with the log append (fsync) and the apply. The
//! node and its region are the resource's attributes. No key's value is ever an attribute.

use crate::config::{ConfigError, TelemetryConfig};
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter,
};
use opentelemetry_sdk::Resource;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Whether spans are exported: with no collector, request paths skip building spans.
static ON: AtomicBool = AtomicBool::new(false);
/// The share of client requests that start a trace here, in millionths (`sample_ratio`).
static SAMPLE_PPM: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Spans queued for export at most; more are dropped (and counted by the SDK).
pub const SPAN_QUEUE_MAX: usize = 8192;
/// Spans per export request at most.
pub const EXPORT_BATCH_MAX: usize = 512;
/// How long spans wait to be exported.
pub const EXPORT_DELAY: Duration = Duration::from_secs(1);
/// The deadline of one export request to the collector.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// The target of request spans, and of the steps inside them: the only ones exported.
pub const RPC_TARGET: &str = "meridian::rpc";
pub const STEP_TARGET: &str = "meridian::step";

/// Whether this process exports traces.
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// The exporting half of tracing: flushes what is queued when shut down.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Exports what is queued (bounded by the export deadline) and stops.
    pub fn shutdown(self) {
        ON.store(false, Ordering::Relaxed);
        meridian_storage::steps::record_steps(false);
        if let Err(e) = self.provider.shutdown() {
            eprintln!("meridian: flushing traces at exit: {e}");
        }
    }
}

/// The OTLP exporter runs on the node's runtime: the SDK's batch thread has no Tokio reactor of
/// its own, and tonic needs one.
#[derive(Debug)]
struct OnRuntime {
    inner: Arc<opentelemetry_otlp::SpanExporter>,
    runtime: tokio::runtime::Handle,
}

impl SpanExporter for OnRuntime {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let inner = self.inner.clone();
        match self
            .runtime
            .spawn(async move { inner.export(batch).await })
            .await
        {
            Ok(r) => r,
            Err(e) => Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                e.to_string(),
            )),
        }
    }
}

/// The `tracing` layer that exports this process's spans, if `cfg` names a collector. Call
/// within the node's Tokio runtime. `node` (id, region) become the resource's attributes when
/// the process is one node.
#[allow(clippy::type_complexity)]
pub fn install<S>(
    cfg: &TelemetryConfig,
    node: Option<(u64, &str)>,
) -> Result<
    Option<(
        Box<dyn tracing_subscriber::Layer<S> + Send + Sync>,
        Telemetry,
    )>,
    ConfigError,
>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
{
    cfg.validate()?;
    let Some(endpoint) = &cfg.otlp_endpoint else {
        return Ok(None);
    };
    let resource = Resource::builder().with_service_name("meridian");
    let resource = match node {
        Some((id, region)) => resource.with_attributes([
            KeyValue::new("meridian.node", id as i64),
            KeyValue::new("meridian.region", region.to_string()),
            KeyValue::new("service.instance.id", format!("node-{id}")),
        ]),
        // `meridian dev` runs its nodes in one process: each request span names its node.
        None => resource.with_attributes([KeyValue::new("service.instance.id", "meridian-dev")]),
    }
    .build();
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| ConfigError::Invalid(format!("telemetry.otlp_endpoint {endpoint}: {e}")))?;
    // The provider hands the resource to its exporter; ours is behind an Arc, so do it here.
    exporter.set_resource(&resource);
    let exporter = OnRuntime {
        inner: Arc::new(exporter),
        runtime: tokio::runtime::Handle::try_current().map_err(|_| {
            ConfigError::Invalid("telemetry: must be installed within the node's runtime".into())
        })?,
    };
    let batch = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(SPAN_QUEUE_MAX)
                .with_max_export_batch_size(EXPORT_BATCH_MAX)
                .with_scheduled_delay(EXPORT_DELAY)
                .build(),
        )
        .build();
    // The ratio is applied where a request arrives (`TraceRpcs`), before any span exists: an
    // unsampled request then costs one random draw, not a span built and dropped.
    let provider = SdkTracerProvider::builder()
        .with_span_processor(batch)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .with_resource(resource)
        .build();
    SAMPLE_PPM.store((cfg.sample_ratio * 1e6).round() as u32, Ordering::Relaxed);
    let tracer = provider.tracer("meridian");
    let _ = TRACER.set(tracer.clone());
    // Only the request spans and their steps: not h2's, tonic's or openraft's, and no log
    // event (a log line may name a key).
    let filter = tracing_subscriber::filter::Targets::new()
        .with_target(RPC_TARGET, tracing::Level::INFO)
        .with_target(STEP_TARGET, tracing::Level::INFO)
        .with_default(tracing::level_filters::LevelFilter::OFF);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(filter);
    ON.store(true, Ordering::Relaxed);
    meridian_storage::steps::record_steps(true);
    Ok(Some((Box::new(layer), Telemetry { provider })))
}

use tracing_subscriber::Layer as _;

/// A tower layer over the node's gRPC server: while tracing is on, each request runs in a
/// span named by its method, the child of the trace context it carries (`traceparent`) if any.
/// The handlers record `meridian.group` and `meridian.consistency` on it.
/// Each span names the node and its region (in-process clusters share one resource).
#[derive(Clone)]
pub struct TraceRpcs {
    node: u64,
    region: Arc<str>,
}

impl TraceRpcs {
    pub fn new(node: u64, region: &str) -> Self {
        Self {
            node,
            region: region.into(),
        }
    }
}

impl<S> tower::Layer<S> for TraceRpcs {
    type Service = Traced<S>;

    fn layer(&self, inner: S) -> Traced<S> {
        Traced {
            inner,
            node: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Traced<S> {
    inner: S,
    node: TraceRpcs,
}

impl<S, ReqBody> tower::Service<http::Request<ReqBody>> for Traced<S>
where
    S: tower::Service<http::Request<ReqBody>>,
    S::Future: Unpin,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = tracing::instrument::Instrumented<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let span = if on() && traced(req.uri().path()) {
            request_span(&req, &self.node).unwrap_or_else(tracing::Span::none)
        } else {
            tracing::Span::none()
        };
        let _entered = span.enter();
        let answer = self.inner.call(req);
        drop(_entered);
        answer.instrument(span)
    }
}

/// Client requests and the node-to-node RPCs that serve one (forwards, read indexes); not
/// Raft's own traffic (replication streams, votes, snapshots) nor probes.
fn traced(path: &str) -> bool {
    if let Some(peer) = path.strip_prefix("/meridian.peer.v1.Peer/") {
        return peer == "ReadIndex";
    }
    path.starts_with("/meridian.")
}

/// The request's span if it is traced: it carries a sampled trace context, or it comes from a
/// client and wins the `sample_ratio` draw. A node-to-node request (forward, read index) never
/// starts a trace of its own: its sender decided.
fn request_span<B>(req: &http::Request<B>, node: &TraceRpcs) -> Option<tracing::Span> {
    let parent = meridian_proto::trace::extract(req.headers());
    let sampled = match &parent {
        Some(cx) => cx.span().span_context().is_sampled(),
        // A request from another node (a forward, a read index, a request proxied whole) never
        // starts a trace: the node it came from decided.
        None => {
            !req.uri().path().starts_with("/meridian.peer.")
                && !req.headers().contains_key(meridian_proto::PROXIED)
                && rand::random::<u32>() % 1_000_000 < SAMPLE_PPM.load(Ordering::Relaxed)
        }
    };
    if !sampled {
        return None;
    }
    let method = req.uri().path().trim_start_matches('/');
    let span = tracing::info_span!(
        target: "meridian::rpc",
        "rpc",
        otel.name = method,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.method = method,
        meridian.node = node.node,
        meridian.region = &*node.region,
        meridian.group = tracing::field::Empty,
        meridian.consistency = tracing::field::Empty,
    );
    if let Some(parent) = parent {
        let _ = span.set_parent(parent);
    }
    Some(span)
}

/// Records the group (and, for a read, its consistency level) on the request's span.
pub fn record_group(group: meridian_types::GroupId, consistency: Option<&'static str>) {
    if !on() {
        return;
    }
    let span = tracing::Span::current();
    span.record("meridian.group", group.0);
    if let Some(c) = consistency {
        span.record("meridian.consistency", c);
    }
}

/// A span of this node's own work within the current trace (a sync round, a forward, a
/// proposal): `Span::none()` while tracing is off or the request is not traced.
#[macro_export]
macro_rules! step_span {
    ($name:expr $(, $($fields:tt)*)?) => {
        if $crate::telemetry::on() && !tracing::Span::current().is_none() {
            tracing::info_span!(target: "meridian::step", $name $(, $($fields)*)?)
        } else {
            tracing::Span::none()
        }
    };
}

/// Adds a finished child span `name` from `start` to `end` under `parent` (work done on
/// another thread for many requests at once: the log append with its fsync, the apply), if
/// `parent` is sampled.
pub fn finished_child(
    parent: &tracing::Span,
    name: &'static str,
    start: SystemTime,
    end: SystemTime,
    attrs: Vec<KeyValue>,
) {
    if !on() {
        return;
    }
    let cx = parent.context();
    if !cx.span().span_context().is_sampled() {
        return;
    }
    if let Some(t) = TRACER.get() {
        let mut span = t
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .with_start_time(start)
            .with_attributes(attrs)
            .start_with_context(t, &cx);
        opentelemetry::trace::Span::end_with_timestamp(&mut span, end);
    }
}

static TRACER: std::sync::OnceLock<opentelemetry_sdk::trace::SdkTracer> =
    std::sync::OnceLock::new();

#[cfg(test)]
mod tests {
    use super::traced;
    use crate::config::TelemetryConfig;

    #[test]
    fn a_broken_telemetry_section_says_what_is_wrong() {
        let bad = |endpoint: Option<&str>, ratio: f64| {
            TelemetryConfig {
                otlp_endpoint: endpoint.map(str::to_string),
                sample_ratio: ratio,
            }
            .validate()
            .expect_err("refused")
            .to_string()
        };
        assert!(bad(None, 1.5).contains("sample_ratio must be between 0.0 and 1.0, not 1.5"));
        assert!(bad(None, f64::NAN).contains("sample_ratio"));
        for e in ["localhost:4317", "grpc://collector:4317", "http://"] {
            assert!(bad(Some(e), 0.01).contains("otlp_endpoint"), "{e}");
        }
        let ok = TelemetryConfig {
            otlp_endpoint: Some("http://127.0.0.1:4317".into()),
            sample_ratio: 1.0,
        };
        assert!(ok.validate().is_ok());
    }

    #[test]
    fn client_requests_and_their_node_to_node_rpcs_are_traced_raft_traffic_is_not() {
        for p in [
            "/meridian.v1.Kv/Put",
            "/meridian.v1.Lock/Acquire",
            "/meridian.peer.v1.Forward/Propose",
            "/meridian.peer.v1.Peer/ReadIndex",
        ] {
            assert!(traced(p), "{p}");
        }
        for p in [
            "/meridian.peer.v1.Peer/StreamAppend",
            "/meridian.peer.v1.Peer/Vote",
            "/meridian.peer.v1.Peer/InstallSnapshot",
            "/grpc.health.v1.Health/Check",
        ] {
            assert!(!traced(p), "{p}");
        }
    }
}
