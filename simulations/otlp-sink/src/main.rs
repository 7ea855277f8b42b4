//! `meridian-otlp-sink ADDR [--spans FILE]`: accepts OTLP/gRPC trace exports on ADDR
//! (host:port), counts their spans and drops them; prints the count every 5 s and when stopped
//! (SIGINT/SIGTERM). The collector of `simulations/bench-tracing.sh`: what a node pays to
//! export, not what a real collector pays to store. With `--spans FILE` it also writes every
//! span as one JSON line (`trace`, `span`, `parent`, `name`, `node`, `start_ns`, `end_ns`) — the
//! raw material of a latency breakdown (docs/benchmarks.md).

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Default)]
struct Sink {
    /// Spans received.
    count: Arc<AtomicU64>,
    /// Where each span is written as a JSON line (`--spans FILE`).
    out: Option<Arc<Mutex<BufWriter<File>>>>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The resource's `service.instance.id` (`node-N` for a Meridian node), else its `service.name`.
fn node_of(resource: Option<&opentelemetry_proto::tonic::resource::v1::Resource>) -> String {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    let attrs = resource
        .map(|r| r.attributes.as_slice())
        .unwrap_or_default();
    let find = |key: &str| {
        attrs.iter().find(|a| a.key == key).and_then(|a| {
            a.value.as_ref().and_then(|v| match &v.value {
                Some(Value::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
        })
    };
    find("service.instance.id")
        .or_else(|| find("service.name"))
        .unwrap_or_default()
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let request = request.into_inner();
        let spans: usize = request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        if let Some(out) = &self.out {
            let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
            for rs in &request.resource_spans {
                let node = node_of(rs.resource.as_ref());
                for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
                    let line = serde_json::json!({
                        "trace": hex(&span.trace_id), "span": hex(&span.span_id),
                        "parent": hex(&span.parent_span_id), "name": span.name, "node": node,
                        "start_ns": span.start_time_unix_nano, "end_ns": span.end_time_unix_nano,
                    });
                    if let Err(e) = writeln!(out, "{line}") {
                        return Err(tonic::Status::internal(format!("writing spans: {e}")));
                    }
                }
            }
        }
        self.count.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (addr, spans_file) = match args.as_slice() {
        [addr] => (addr.clone(), None),
        [addr, flag, file] if flag == "--spans" => (addr.clone(), Some(file.clone())),
        _ => {
            eprintln!("usage: meridian-otlp-sink HOST:PORT [--spans FILE]");
            return std::process::ExitCode::from(2);
        }
    };
    let out = match spans_file.map(File::create).transpose() {
        Ok(f) => f.map(|f| Arc::new(Mutex::new(BufWriter::new(f)))),
        Err(e) => {
            eprintln!("meridian-otlp-sink: cannot create the spans file: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("meridian-otlp-sink: cannot listen on {addr}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let sink = Sink {
        count: Arc::default(),
        out: out.clone(),
    };
    let count = sink.count.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            eprintln!("spans: {}", count.load(Ordering::Relaxed));
        }
    });
    let stop = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| eprintln!("meridian-otlp-sink: {e}"))
            .ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    let served = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(sink.clone()))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            stop,
        )
        .await;
    println!("spans: {}", sink.count.load(Ordering::Relaxed));
    if let Some(out) = out {
        if let Err(e) = out.lock().unwrap_or_else(|p| p.into_inner()).flush() {
            eprintln!("meridian-otlp-sink: writing spans: {e}");
            return std::process::ExitCode::FAILURE;
        }
    }
    match served {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meridian-otlp-sink: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn span(name: &str, id: u8, parent: &[u8], start: u64, end: u64) -> Span {
        Span {
            trace_id: vec![0xab; 16],
            span_id: vec![id; 8],
            parent_span_id: parent.to_vec(),
            name: name.into(),
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn every_span_is_written_as_a_json_line_with_its_node() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spans.jsonl");
        let out = Arc::new(Mutex::new(BufWriter::new(File::create(&path).unwrap())));
        let sink = Sink {
            count: Arc::default(),
            out: Some(out.clone()),
        };
        let resource = Resource {
            attributes: vec![KeyValue {
                key: "service.instance.id".into(),
                value: Some(AnyValue {
                    value: Some(Value::StringValue("node-2".into())),
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource),
                scope_spans: vec![ScopeSpans {
                    spans: vec![
                        span("meridian.v1.Kv/Put", 1, &[], 100, 900),
                        span("raft.propose", 2, &[1; 8], 150, 850),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        sink.export(tonic::Request::new(request)).await.unwrap();
        out.lock().unwrap().flush().unwrap();
        assert_eq!(sink.count.load(Ordering::Relaxed), 2);
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["name"], "raft.propose");
        assert_eq!(lines[1]["node"], "node-2");
        assert_eq!(lines[1]["parent"], "0101010101010101");
        assert_eq!(lines[1]["span"], "0202020202020202");
        assert_eq!(lines[1]["trace"], "ab".repeat(16));
        assert_eq!(lines[1]["start_ns"], 150);
        assert_eq!(lines[1]["end_ns"], 850);
        assert_eq!(lines[0]["parent"], "");
    }
}
