//! Human-readable and JSON renderings of results. JSON is one object per line.

use meridian_sdk::pb;
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
}

pub fn kv_json(kv: &pb::KeyValue) -> Value {
    json!({
        "key": kv.key,
        "value": String::from_utf8_lossy(&kv.value),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
        "lease": kv.lease,
    })
}

pub fn header_json(h: Option<&pb::ResponseHeader>) -> Value {
    match h {
        Some(h) => {
            let vector: std::collections::BTreeMap<String, u64> =
                h.vector.iter().map(|(g, r)| (g.to_string(), *r)).collect();
            json!({
                "group": h.group, "revision": h.revision, "node": h.node,
                "lag_ms": (h.lag_ms != u64::MAX).then_some(h.lag_ms), "synced": h.synced,
                "vector": vector,
            })
        }
        None => Value::Null,
    }
}

pub fn event_json(ev: &pb::Event) -> Value {
    let kind = if ev.r#type == pb::event::EventType::Delete as i32 {
        "DELETE"
    } else {
        "PUT"
    };
    json!({"type": kind, "kv": ev.kv.as_ref().map(kv_json)})
}

/// One result: JSON on one line, or the human text.
pub struct Rendered {
    pub json: Value,
    pub human: String,
}

impl Rendered {
    pub fn print(&self, format: Format) {
        match format {
            Format::Json => println!("{}", self.json),
            Format::Human => {
                if !self.human.is_empty() {
                    println!("{}", self.human)
                }
            }
        }
    }
}

pub fn error_json(e: &meridian_sdk::Error) -> Value {
    let rule = e.rule().map(str::to_string);
    json!({"error": {"message": e.to_string(), "rule": rule}})
}
