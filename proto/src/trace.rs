//! The W3C trace context (`traceparent`, `tracestate`) on gRPC metadata, so that a request's
//! trace continues on the node it is forwarded to (docs/operations.md, "Tracing"). With no
//! OpenTelemetry layer installed the current span has no context and nothing is sent.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct Inject<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for Inject<'_> {
    fn set(&mut self, key: &str, value: String) {
        let Ok(key) = tonic::metadata::MetadataKey::from_bytes(key.as_bytes()) else {
            return;
        };
        if let Ok(value) = value.parse() {
            self.0.insert(key, value);
        }
    }
}

struct Extract<'a>(&'a http::HeaderMap);

impl Extractor for Extract<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Adds the current span's trace context to `req`, if it has one.
pub fn inject<T>(req: &mut tonic::Request<T>) {
    let cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        return;
    }
    TraceContextPropagator::new().inject_context(&cx, &mut Inject(req.metadata_mut()));
}

/// The trace context a request's headers carry (`traceparent`), if any.
pub fn extract(headers: &http::HeaderMap) -> Option<opentelemetry::Context> {
    headers.get("traceparent")?;
    let cx = TraceContextPropagator::new().extract(&Extract(headers));
    cx.span().span_context().is_valid().then_some(cx)
}
