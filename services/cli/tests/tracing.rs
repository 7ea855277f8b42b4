//! Tracing over OTLP (issue 15, docs/operations.md "Tracing"): a 3-region `meridian dev` (mTLS,
//! tokens, the WAN emulator) whose nodes export to an OTLP receiver built in this test on the
//! OTLP protobuf service. A write from eu-west to a key of us-east's domain is one trace across
//! both regions — the request at eu-west's router, its forward, and at us-east's leader the
//! forwarded request, the Raft proposal, the log append (fsync) and the apply — and a read
//! that switches to us-east's group is one trace with its sync round and the read index it
//! asks of us-east. No attribute carries the value written.

mod common;

use common::DevCluster;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One exported span, flattened: its node's region and id (resource attributes), its name,
/// ids and attributes.
#[derive(Clone, Debug)]
struct Got {
    region: String,
    node: i64,
    name: String,
    trace: Vec<u8>,
    id: Vec<u8>,
    parent: Vec<u8>,
    attrs: Vec<KeyValue>,
    /// Its events' attributes (log lines are not exported: expected empty).
    event_attrs: Vec<KeyValue>,
}

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Got>>>);

fn text(v: &KeyValue) -> String {
    match v.value.as_ref().and_then(|a| a.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a KeyValue> {
    attrs.iter().find(|a| a.key == key)
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.0.lock().expect("spans");
        for rs in request.into_inner().resource_spans {
            let res = rs.resource.map(|r| r.attributes).unwrap_or_default();
            let region = attr(&res, "meridian.region").map(text).unwrap_or_default();
            let node = attr(&res, "meridian.node")
                .map(text)
                .and_then(|n| n.parse().ok())
                .unwrap_or(-1);
            for ss in rs.scope_spans {
                for s in ss.spans {
                    got.push(Got {
                        region: region.clone(),
                        node,
                        name: s.name,
                        trace: s.trace_id,
                        id: s.span_id,
                        parent: s.parent_span_id,
                        attrs: s.attributes,
                        event_attrs: s.events.into_iter().flat_map(|e| e.attributes).collect(),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// The spans of the first trace for which `want` holds, waiting up to a minute.
fn wait_trace(got: &Receiver, what: &str, want: impl Fn(&[Got]) -> bool) -> Vec<Got> {
    let start = Instant::now();
    loop {
        let spans = got.0.lock().expect("spans").clone();
        let mut by_trace: BTreeMap<Vec<u8>, Vec<Got>> = BTreeMap::new();
        for s in spans.iter() {
            by_trace.entry(s.trace.clone()).or_default().push(s.clone());
        }
        if let Some(t) = by_trace.into_values().find(|t| want(t)) {
            return t;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no trace {what} among {} spans: {:#?}",
            spans.len(),
            spans
                .iter()
                .map(|s| format!("{} {} {}", s.region, s.node, s.name))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn has(t: &[Got], region: &str, name: &str) -> bool {
    t.iter().any(|s| s.region == region && s.name == name)
}

#[test]
fn a_forwarded_write_and_a_switching_read_are_each_one_trace_across_regions() {
    common::watchdog(Duration::from_secs(300));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let receiver = Receiver::default();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let otlp = format!("http://{}", listener.local_addr().expect("addr"));
    let server = TraceServiceServer::new(receiver.clone());
    rt.spawn(
        tonic::transport::Server::builder()
            .add_service(server)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    // One process per node: each exports as its own resource (node id, region).
    let dev = DevCluster::start_env(
        &["--processes"],
        "warn,openraft=warn",
        &[
            ("MERIDIAN_TELEMETRY__OTLP_ENDPOINT", &otlp),
            ("MERIDIAN_TELEMETRY__SAMPLE_RATIO", "1.0"),
        ],
    );
    let value = "do-not-export-this-value-7f3a";
    rt.block_on(async {
        let eu = dev.client("eu-west", Duration::from_secs(20));
        // us-east's domain, from eu-west: forwarded to us-east's leader.
        eu.put("/us-east/traced/x", value).await.expect("put");
        // Back to eu-west's group, then a sequential read of us-east's: a switch, so a sync.
        eu.put("/eu-west/traced/y", "y").await.expect("put y");
        let got = eu.get("/us-east/traced/x").await.expect("get");
        assert_eq!(got.map(|kv| kv.value), Some(value.as_bytes().to_vec()));
    });

    // The write: eu-west's request, its forward, and us-east's leader's side of it.
    let write = wait_trace(&receiver, "of the forwarded write", |t| {
        has(t, "eu-west", "meridian.v1.Kv/Put")
            && has(t, "eu-west", "forward")
            && has(t, "us-east", "meridian.peer.v1.Forward/Propose")
            && has(t, "us-east", "raft.propose")
            && has(t, "us-east", "raft.append")
            && has(t, "us-east", "raft.apply")
    });
    let nodes: std::collections::BTreeSet<i64> = write.iter().map(|s| s.node).collect();
    assert!(nodes.len() >= 2, "one trace spans two nodes: {write:#?}");
    // Every span but the root has its parent in the same trace.
    let ids: Vec<&Vec<u8>> = write.iter().map(|s| &s.id).collect();
    let roots: Vec<&Got> = write
        .iter()
        .filter(|s| s.parent.is_empty() || !ids.contains(&&s.parent))
        .collect();
    assert_eq!(roots.len(), 1, "one root: {roots:#?}");
    assert_eq!(roots[0].name, "meridian.v1.Kv/Put");
    let put = write
        .iter()
        .find(|s| s.name == "meridian.v1.Kv/Put")
        .expect("put span");
    assert!(
        attr(&put.attrs, "meridian.group").is_some(),
        "the request names its group: {put:#?}"
    );

    // The switching read: its sync round asks us-east for a read index, in the same trace.
    // (`meridian dev` reads too, linearizably, while it starts: this one is sequential.)
    let sequential =
        |s: &Got| attr(&s.attrs, "meridian.consistency").map(text).as_deref() == Some("sequential");
    let read = wait_trace(&receiver, "of the switching read", |t| {
        t.iter()
            .any(|s| s.region == "eu-west" && s.name == "meridian.v1.Kv/Get" && sequential(s))
            && has(t, "eu-west", "sync")
            && has(t, "eu-west", "sync.round")
            && has(t, "us-east", "meridian.peer.v1.Peer/ReadIndex")
    });
    assert!(
        read.iter()
            .all(|s| s.name != "meridian.v1.Kv/Get" || sequential(s)),
        "{read:#?}"
    );

    // Never a value in an attribute.
    let all = receiver.0.lock().expect("spans").clone();
    for s in &all {
        for a in s.attrs.iter().chain(&s.event_attrs) {
            assert!(!text(a).contains(value), "a value leaked into {s:#?}");
        }
    }
}
