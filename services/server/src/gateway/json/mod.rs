//! The gateway's JSON shapes (docs/http.md) and their conversions to and from the gRPC
//! messages. Field names are the proto's; values travel as `value` (UTF-8 text) or
//! `value_base64` (any bytes); lease ids are decimal strings (JavaScript's numbers end at 2^53
//! and a lease id carries its group in its top 16 bits).

use base64::Engine as _;
use meridian_proto::kv as pb;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

mod errors;
mod kv;
mod leases;
mod locks;
mod status;
pub use errors::*;
pub use kv::*;
pub use leases::*;
pub use locks::*;
pub use status::*;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A request field that is wrong before any service sees it (names the field).
#[derive(Debug)]
pub struct BadField {
    pub field: &'static str,
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> BadField {
    BadField {
        field,
        message: message.into(),
    }
}

/// A value given either as text or as base64 (at most one of them).
fn value_in(text: &Option<String>, b64: &Option<String>) -> Result<Vec<u8>, BadField> {
    match (text, b64) {
        (Some(_), Some(_)) => Err(bad(
            "value",
            "give the value once: `value` (text) or `value_base64`, not both",
        )),
        (Some(t), None) => Ok(t.clone().into_bytes()),
        (None, Some(b)) => B64
            .decode(b)
            .map_err(|e| bad("value_base64", format!("value_base64 is not base64: {e}"))),
        (None, None) => Ok(Vec::new()),
    }
}

/// Bytes out as (`value`, `value_base64`): text when they are UTF-8, base64 otherwise.
fn value_out(bytes: Vec<u8>) -> (Option<String>, Option<String>) {
    match String::from_utf8(bytes) {
        Ok(t) => (Some(t), None),
        Err(e) => (None, Some(B64.encode(e.into_bytes()))),
    }
}

/// A lease id: a decimal string (or 0 / absent for none).
fn lease_in(field: &'static str, s: &Option<String>) -> Result<u64, BadField> {
    match s.as_deref() {
        None | Some("") => Ok(0),
        Some(t) => t.parse().map_err(|_| {
            bad(
                field,
                format!("{field} must be a lease id in decimal digits, not {t:?}"),
            )
        }),
    }
}

fn lease_out(id: u64) -> Option<String> {
    (id != 0).then(|| id.to_string())
}

/// Which replica may answer a read (docs/consistency.md).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// The local replica once it has applied what the session has seen (the default).
    #[default]
    Sequential,
    /// After a read index from the group's leader.
    Linearizable,
    /// Any replica at most `max_lag_ms` behind its leader; no sync.
    Stale,
}

/// How a read is served.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadOptions {
    #[serde(default)]
    pub consistency: Consistency,
    /// For `stale`: the largest acceptable lag in ms (0 = any lag).
    #[serde(default)]
    #[schema(minimum = 0)]
    pub max_lag_ms: u64,
}

impl ReadOptions {
    fn wire(&self) -> pb::ReadOptions {
        pb::ReadOptions {
            consistency: match self.consistency {
                Consistency::Sequential => pb::Consistency::Sequential,
                Consistency::Linearizable => pb::Consistency::Linearizable,
                Consistency::Stale => pb::Consistency::Stale,
            } as i32,
            min_revision: 0,
            max_lag_ms: self.max_lag_ms,
        }
    }

    /// Whether the read leaves the session's last group as it was (a stale read does).
    pub fn stale(&self) -> bool {
        self.consistency == Consistency::Stale
    }
}

/// Which group answered, at which revision, and the session's vector after the call.
#[derive(Debug, Serialize, ToSchema)]
pub struct Header {
    pub group: u64,
    pub revision: u64,
    pub node: u64,
    pub raft_term: u64,
    /// group → highest revision observed (what the `meridian-session` header carries).
    pub vector: BTreeMap<String, u64>,
    /// For reads: how far behind its leader the answering replica was known to be (ms).
    pub lag_ms: u64,
    /// The router synced the group before this read.
    pub synced: bool,
    /// A write's commit timestamp, a read's the commit timestamp of what its replica had
    /// applied (docs/closed-timestamps.md); absent when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Timestamp>,
}

/// A hybrid logical clock timestamp: µs since the Unix epoch, then a counter.
#[derive(Debug, Serialize, ToSchema)]
pub struct Timestamp {
    pub physical_us: u64,
    pub logical: u32,
}

impl Header {
    pub fn of(h: Option<pb::ResponseHeader>) -> Option<Self> {
        h.map(|h| Self {
            group: h.group,
            revision: h.revision,
            node: h.node,
            raft_term: h.raft_term,
            vector: h
                .vector
                .into_iter()
                .map(|(g, r)| (g.to_string(), r))
                .collect(),
            lag_ms: h.lag_ms,
            synced: h.synced,
            timestamp: h.timestamp.map(|t| Timestamp {
                physical_us: t.physical_us,
                logical: t.logical,
            }),
        })
    }
}

/// A key and its value with their revisions.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyValue {
    pub key: String,
    /// The value when it is UTF-8 text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The value in base64 when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
    pub create_revision: u64,
    pub mod_revision: u64,
    pub version: u64,
    /// The lease the key is attached to (decimal), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
}

impl KeyValue {
    fn of(kv: pb::KeyValue) -> Self {
        let (value, value_base64) = value_out(kv.value);
        Self {
            key: kv.key,
            value,
            value_base64,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: lease_out(kv.lease),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_travel_as_text_or_base64() {
        assert_eq!(
            value_in(&Some("hé".into()), &None).unwrap(),
            "hé".as_bytes()
        );
        assert_eq!(value_in(&None, &Some("AP8=".into())).unwrap(), vec![0, 255]);
        assert!(value_in(&Some("a".into()), &Some("YQ==".into())).is_err());
        let e = value_in(&None, &Some("not base64!".into())).unwrap_err();
        assert_eq!(e.field, "value_base64");
        assert_eq!(value_out(b"text".to_vec()), (Some("text".into()), None));
        assert_eq!(value_out(vec![0, 255]), (None, Some("AP8=".into())));
    }

    #[test]
    fn lease_ids_are_decimal_strings() {
        let big = (31u64 << 48) + 7;
        assert_eq!(lease_in("lease", &Some(big.to_string())).unwrap(), big);
        assert_eq!(lease_in("lease", &None).unwrap(), 0);
        let e = lease_in("lease", &Some("12x".into())).unwrap_err();
        assert!(e.message.contains("decimal"), "{}", e.message);
        assert_eq!(lease_out(0), None);
        assert_eq!(lease_out(big), Some(big.to_string()));
    }

    #[test]
    fn a_txn_op_is_exactly_one_member() {
        let op: TxnOp = serde_json::from_str(r#"{"put":{"key":"/a","value":"1"}}"#).unwrap();
        assert!(matches!(op, TxnOp::Put(_)));
        assert!(
            serde_json::from_str::<TxnOp>(r#"{"put":{"key":"/a"},"get":{"key":"/a"}}"#).is_err()
        );
        assert!(serde_json::from_str::<PutRequest>(r#"{"key":"/a","valu":"1"}"#).is_err());
    }
}
