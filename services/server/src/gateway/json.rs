//! The gateway's JSON shapes (docs/http.md) and their conversions to and from the gRPC
//! messages. Field names are the proto's; values travel as `value` (UTF-8 text) or
//! `value_base64` (any bytes); lease ids are decimal strings (JavaScript's numbers end at 2^53
//! and a lease id carries its group in its top 16 bits).

use base64::Engine as _;
use meridian_proto::kv as pb;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

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

/// `POST /v1/kv/get`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GetRequest {
    #[schema(
        pattern = "^(/[A-Za-z0-9_:-][A-Za-z0-9_.:-]*)+$",
        example = "/us-east/app/color"
    )]
    pub key: String,
    #[serde(default)]
    pub read: ReadOptions,
}

impl GetRequest {
    pub fn wire(&self, session: pb::Session) -> pb::GetRequest {
        pb::GetRequest {
            key: self.key.clone().into_bytes(),
            read: Some(self.read.wire()),
            session: Some(session),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GetResponse {
    pub header: Option<Header>,
    /// Absent when the key does not exist.
    pub kv: Option<KeyValue>,
}

impl From<pb::GetResponse> for GetResponse {
    fn from(r: pb::GetResponse) -> Self {
        Self {
            header: Header::of(r.header),
            kv: r.kv.map(KeyValue::of),
        }
    }
}

/// `POST /v1/kv/put`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutRequest {
    #[schema(
        pattern = "^(/[A-Za-z0-9_:-][A-Za-z0-9_.:-]*)+$",
        example = "/us-east/app/color"
    )]
    pub key: String,
    /// The value as text (or give `value_base64`; neither: empty).
    pub value: Option<String>,
    pub value_base64: Option<String>,
    /// Only if the key's current version equals this (0 = must not exist).
    pub expected_version: Option<i64>,
    /// Only if the key's current mod_revision equals this (0 = must not exist).
    pub expected_mod_revision: Option<i64>,
    /// Append a monotonic zero-padded suffix to the key (ZooKeeper's `create -s`).
    #[serde(default)]
    pub sequential: bool,
    /// Attach the key to this lease (decimal id).
    pub lease: Option<String>,
    /// Answer the key's previous value.
    #[serde(default)]
    pub prev_kv: bool,
}

impl PutRequest {
    pub fn wire(&self, session: pb::Session) -> Result<pb::PutRequest, BadField> {
        Ok(pb::PutRequest {
            key: self.key.clone().into_bytes(),
            value: value_in(&self.value, &self.value_base64)?,
            expected_version: self.expected_version,
            expected_mod_revision: self.expected_mod_revision,
            sequential: self.sequential,
            lease: lease_in("lease", &self.lease)?,
            prev_kv: self.prev_kv,
            session: Some(session),
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PutResponse {
    pub header: Option<Header>,
    /// The key written (with its suffix when sequential).
    pub key: String,
    pub prev_kv: Option<KeyValue>,
    /// False when a condition did not hold; nothing was written.
    pub succeeded: bool,
    /// When a condition failed: the key as it is (absent if missing).
    pub current: Option<KeyValue>,
}

impl From<pb::PutResponse> for PutResponse {
    fn from(r: pb::PutResponse) -> Self {
        Self {
            header: Header::of(r.header),
            key: r.key,
            prev_kv: r.prev_kv.map(KeyValue::of),
            succeeded: r.succeeded,
            current: r.current.map(KeyValue::of),
        }
    }
}

/// `POST /v1/kv/range`: every key under a prefix, in key order, a page at a time.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RangeRequest {
    /// A path prefix such as "/app/".
    #[schema(
        pattern = "^/$|^(/[A-Za-z0-9_:-][A-Za-z0-9_.:-]*)+/?$",
        example = "/us-east/app/"
    )]
    pub prefix: String,
    /// Most keys to return (0 or absent: the server's maximum).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 4294967295u32)]
    pub limit: u32,
    /// Continuation: keys strictly after this one.
    pub after: Option<String>,
    #[serde(default)]
    pub keys_only: bool,
    #[serde(default)]
    pub read: ReadOptions,
}

impl RangeRequest {
    pub fn wire(&self, session: pb::Session) -> pb::RangeRequest {
        pb::RangeRequest {
            prefix: self.prefix.clone().into_bytes(),
            limit: self.limit,
            after: self.after.clone().unwrap_or_default().into_bytes(),
            read: Some(self.read.wire()),
            keys_only: self.keys_only,
            session: Some(session),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RangeResponse {
    pub header: Option<Header>,
    pub kvs: Vec<KeyValue>,
    /// More keys follow: pass the last key as `after`.
    pub more: bool,
}

impl From<pb::RangeResponse> for RangeResponse {
    fn from(r: pb::RangeResponse) -> Self {
        Self {
            header: Header::of(r.header),
            kvs: r.kvs.into_iter().map(KeyValue::of).collect(),
            more: r.more,
        }
    }
}

/// `POST /v1/kv/list`: the direct children of a path (`ls`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListRequest {
    /// "/" lists the top level.
    #[schema(
        pattern = "^/$|^(/[A-Za-z0-9_:-][A-Za-z0-9_.:-]*)+/?$",
        example = "/us-east/app/"
    )]
    pub path: String,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 4294967295u32)]
    pub limit: u32,
    pub after: Option<String>,
    #[serde(default)]
    pub read: ReadOptions,
}

impl ListRequest {
    pub fn wire(&self, session: pb::Session) -> pb::ListRequest {
        pb::ListRequest {
            path: self.path.clone().into_bytes(),
            read: Some(self.read.wire()),
            limit: self.limit,
            after: self.after.clone().unwrap_or_default().into_bytes(),
            session: Some(session),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ListResponse {
    pub header: Option<Header>,
    /// Names of direct children (one segment each), sorted.
    pub children: Vec<String>,
    pub more: bool,
}

impl From<pb::ListResponse> for ListResponse {
    fn from(r: pb::ListResponse) -> Self {
        Self {
            header: Header::of(r.header),
            children: r.children,
            more: r.more,
        }
    }
}

/// `POST /v1/kv/delete`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    #[schema(
        pattern = "^/$|^(/[A-Za-z0-9_:-][A-Za-z0-9_.:-]*)+/?$",
        example = "/us-east/app/"
    )]
    pub key: String,
    /// Delete every key under `key` (which must end with "/").
    #[serde(default)]
    pub prefix: bool,
    pub expected_version: Option<i64>,
    pub expected_mod_revision: Option<i64>,
    #[serde(default)]
    pub prev_kv: bool,
}

impl DeleteRequest {
    pub fn wire(&self, session: pb::Session) -> pb::DeleteRequest {
        pb::DeleteRequest {
            key: self.key.clone().into_bytes(),
            prefix: self.prefix,
            expected_version: self.expected_version,
            expected_mod_revision: self.expected_mod_revision,
            prev_kv: self.prev_kv,
            session: Some(session),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeleteResponse {
    pub header: Option<Header>,
    pub deleted: u64,
    pub prev_kvs: Vec<KeyValue>,
    pub succeeded: bool,
}

impl From<pb::DeleteResponse> for DeleteResponse {
    fn from(r: pb::DeleteResponse) -> Self {
        Self {
            header: Header::of(r.header),
            deleted: r.deleted,
            prev_kvs: r.prev_kvs.into_iter().map(KeyValue::of).collect(),
            succeeded: r.succeeded,
        }
    }
}

/// What a txn compares of a key.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CompareTarget {
    Value,
    Version,
    ModRevision,
    CreateRevision,
    Exists,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CompareResult {
    #[default]
    Equal,
    NotEqual,
    Greater,
    Less,
}

/// One condition of a txn.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Compare {
    #[schema(
        pattern = "^(/[A-Za-z0-9_:-][A-Za-z0-9_.:-]*)+$",
        example = "/us-east/app/color"
    )]
    pub key: String,
    pub target: CompareTarget,
    #[serde(default)]
    pub result: CompareResult,
    /// For `value`: text (or `value_base64`).
    pub value: Option<String>,
    pub value_base64: Option<String>,
    /// For `version`, `mod_revision`, `create_revision`.
    #[serde(default)]
    pub number: i64,
    /// For `exists`.
    #[serde(default)]
    pub exists: bool,
}

impl Compare {
    fn wire(&self) -> Result<pb::Compare, BadField> {
        use pb::compare::{Result as R, Target as T};
        Ok(pb::Compare {
            key: self.key.clone().into_bytes(),
            target: match self.target {
                CompareTarget::Value => T::Value,
                CompareTarget::Version => T::Version,
                CompareTarget::ModRevision => T::ModRevision,
                CompareTarget::CreateRevision => T::CreateRevision,
                CompareTarget::Exists => T::Exists,
            } as i32,
            result: match self.result {
                CompareResult::Equal => R::Equal,
                CompareResult::NotEqual => R::NotEqual,
                CompareResult::Greater => R::Greater,
                CompareResult::Less => R::Less,
            } as i32,
            value: value_in(&self.value, &self.value_base64)?,
            number: self.number,
            exists: self.exists,
        })
    }
}

/// One operation of a txn: exactly one of `put`, `delete`, `get`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TxnOp {
    Put(PutRequest),
    Delete(DeleteRequest),
    Get(GetRequest),
}

impl TxnOp {
    fn wire(&self) -> Result<pb::TxnOp, BadField> {
        use pb::txn_op::Op;
        let none = pb::Session::default;
        let op = match self {
            TxnOp::Put(p) => Op::Put(pb::PutRequest {
                session: None,
                ..p.wire(none())?
            }),
            TxnOp::Delete(d) => Op::Delete(pb::DeleteRequest {
                session: None,
                ..d.wire(none())
            }),
            TxnOp::Get(g) => Op::Get(pb::GetRequest {
                session: None,
                ..g.wire(none())
            }),
        };
        Ok(pb::TxnOp { op: Some(op) })
    }
}

/// `POST /v1/kv/txn`: if every compare holds, the `success` ops, else the `failure` ops —
/// atomically, in one group.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TxnRequest {
    #[serde(default)]
    pub compare: Vec<Compare>,
    #[serde(default)]
    pub success: Vec<TxnOp>,
    #[serde(default)]
    pub failure: Vec<TxnOp>,
}

impl TxnRequest {
    pub fn wire(&self, session: pb::Session) -> Result<pb::TxnRequest, BadField> {
        let ops = |v: &[TxnOp]| v.iter().map(TxnOp::wire).collect::<Result<Vec<_>, _>>();
        Ok(pb::TxnRequest {
            compare: self
                .compare
                .iter()
                .map(Compare::wire)
                .collect::<Result<_, _>>()?,
            success: ops(&self.success)?,
            failure: ops(&self.failure)?,
            session: Some(session),
        })
    }
}

/// One operation's result: exactly one of `put`, `delete`, `get`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TxnOpResult {
    Put(PutResponse),
    Delete(DeleteResponse),
    Get(GetResponse),
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TxnResponse {
    pub header: Option<Header>,
    pub succeeded: bool,
    pub results: Vec<TxnOpResult>,
}

impl From<pb::TxnResponse> for TxnResponse {
    fn from(r: pb::TxnResponse) -> Self {
        use pb::txn_op_result::Result as R;
        Self {
            header: Header::of(r.header),
            succeeded: r.succeeded,
            results: r
                .results
                .into_iter()
                .filter_map(|x| {
                    Some(match x.result? {
                        R::Put(p) => TxnOpResult::Put(p.into()),
                        R::Delete(d) => TxnOpResult::Delete(d.into()),
                        R::Get(g) => TxnOpResult::Get(g.into()),
                    })
                })
                .collect(),
        }
    }
}

/// `GET /v1/watch` (query parameters): changes of a key or prefix as server-sent events.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WatchQuery {
    /// The key, or the prefix with `prefix=true`.
    pub key: String,
    #[serde(default)]
    pub prefix: bool,
    /// First revision to send (0 or absent: from now).
    #[serde(default)]
    #[param(minimum = 0)]
    pub start_revision: i64,
    #[serde(default)]
    pub prev_kv: bool,
    /// Progress notices at most this far apart (0: the server's default).
    #[serde(default)]
    #[param(minimum = 0, maximum = 4294967295u32)]
    pub progress_interval_ms: u32,
}

impl WatchQuery {
    pub fn wire(&self, session: pb::Session) -> pb::WatchRequest {
        pb::WatchRequest {
            key: self.key.clone().into_bytes(),
            prefix: self.prefix,
            start_revision: self.start_revision,
            prev_kv: self.prev_kv,
            progress_interval_ms: self.progress_interval_ms,
            session: Some(session),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    Put,
    Delete,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: EventType,
    /// For `delete`: the key and the deletion's mod_revision.
    pub kv: Option<KeyValue>,
    pub prev_kv: Option<KeyValue>,
}

/// One server-sent event's data: a batch of events of one revision, or a progress notice.
#[derive(Debug, Serialize, ToSchema)]
pub struct WatchResponse {
    pub header: Option<Header>,
    pub events: Vec<Event>,
    /// Every change up to `header.revision` has been sent.
    pub progress: bool,
    /// More events of this same revision follow in the next message.
    pub fragment: bool,
}

impl From<pb::WatchResponse> for WatchResponse {
    fn from(r: pb::WatchResponse) -> Self {
        Self {
            header: Header::of(r.header),
            events: r
                .events
                .into_iter()
                .map(|e| Event {
                    kind: if e.r#type == pb::event::EventType::Delete as i32 {
                        EventType::Delete
                    } else {
                        EventType::Put
                    },
                    kv: e.kv.map(KeyValue::of),
                    prev_kv: e.prev_kv.map(KeyValue::of),
                })
                .collect(),
            progress: r.progress,
            fragment: r.fragment,
        }
    }
}

/// `POST /v1/lease/grant`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseGrantRequest {
    /// Any key or prefix in the domain whose group will own the lease (e.g. "/us-east/").
    #[schema(
        pattern = "^/$|^(/[A-Za-z0-9_:-][A-Za-z0-9_.:-]*)+/?$",
        example = "/us-east/app/"
    )]
    pub path: String,
    #[schema(minimum = 0)]
    pub ttl_ms: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LeaseGrantResponse {
    pub header: Option<Header>,
    /// The lease id (decimal; its group is in the top 16 bits).
    pub id: String,
    pub ttl_ms: u64,
}

impl From<pb::LeaseGrantResponse> for LeaseGrantResponse {
    fn from(r: pb::LeaseGrantResponse) -> Self {
        Self {
            header: Header::of(r.header),
            id: r.id.to_string(),
            ttl_ms: r.ttl_ms,
        }
    }
}

/// `POST /v1/lease/keepalive`: refresh leases (at most 1,000 at once).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseKeepAliveRequest {
    #[schema(max_items = 1000)]
    pub ids: Vec<String>,
}

/// Most lease ids one keepalive over HTTP may name.
pub const KEEPALIVE_IDS_MAX: usize = 1000;

impl LeaseKeepAliveRequest {
    pub fn wire(&self) -> Result<pb::LeaseKeepAliveRequest, BadField> {
        if self.ids.len() > KEEPALIVE_IDS_MAX {
            return Err(bad(
                "ids",
                format!(
                    "{} lease ids; at most {KEEPALIVE_IDS_MAX} per keepalive",
                    self.ids.len()
                ),
            ));
        }
        Ok(pb::LeaseKeepAliveRequest {
            ids: self
                .ids
                .iter()
                .map(|i| lease_in("ids", &Some(i.clone())))
                .collect::<Result<_, _>>()?,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LeaseKeepAliveResult {
    pub id: String,
    /// False: the lease is gone (expired or revoked).
    pub found: bool,
    pub ttl_ms: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LeaseKeepAliveResponse {
    pub results: Vec<LeaseKeepAliveResult>,
}

impl From<pb::LeaseKeepAliveResponse> for LeaseKeepAliveResponse {
    fn from(r: pb::LeaseKeepAliveResponse) -> Self {
        Self {
            results: r
                .results
                .into_iter()
                .map(|x| LeaseKeepAliveResult {
                    id: x.id.to_string(),
                    found: x.found,
                    ttl_ms: x.ttl_ms,
                })
                .collect(),
        }
    }
}

/// `POST /v1/lease/revoke`: end a lease now; its keys are deleted and its locks released.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseRevokeRequest {
    pub id: String,
}

impl LeaseRevokeRequest {
    pub fn wire(&self) -> Result<pb::LeaseRevokeRequest, BadField> {
        Ok(pb::LeaseRevokeRequest {
            id: lease_in("id", &Some(self.id.clone()))?,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LeaseRevokeResponse {
    pub header: Option<Header>,
    pub keys_deleted: u64,
}

impl From<pb::LeaseRevokeResponse> for LeaseRevokeResponse {
    fn from(r: pb::LeaseRevokeResponse) -> Self {
        Self {
            header: Header::of(r.header),
            keys_deleted: r.keys_deleted,
        }
    }
}

/// `POST /v1/lease/ttl`: what is left of a lease.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseTtlRequest {
    pub id: String,
    /// Also list the lease's keys.
    #[serde(default)]
    pub keys: bool,
}

impl LeaseTtlRequest {
    pub fn wire(&self) -> Result<pb::LeaseTimeToLiveRequest, BadField> {
        Ok(pb::LeaseTimeToLiveRequest {
            id: lease_in("id", &Some(self.id.clone()))?,
            keys: self.keys,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LeaseTtlResponse {
    pub header: Option<Header>,
    pub id: String,
    pub ttl_ms: u64,
    /// What is left on the group leader's monotonic clock; -1 when it could not be asked.
    pub remaining_ms: i64,
    pub idle_ms: u64,
    pub keys: Vec<String>,
}

impl From<pb::LeaseTimeToLiveResponse> for LeaseTtlResponse {
    fn from(r: pb::LeaseTimeToLiveResponse) -> Self {
        Self {
            header: Header::of(r.header),
            id: r.id.to_string(),
            ttl_ms: r.ttl_ms,
            remaining_ms: r.remaining_ms,
            idle_ms: r.idle_ms,
            keys: r.keys,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LockKind {
    #[default]
    Mutex,
    ReadWrite,
    Semaphore,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LockMode {
    #[default]
    Exclusive,
    Shared,
}

/// Proof of holding a lock: strictly increasing per lock.
#[derive(Debug, Serialize, ToSchema)]
pub struct FencingToken {
    pub group: u64,
    pub revision: u64,
}

/// `POST /v1/lock/acquire`: queue for a lock under a lease; wait at most `wait_ms`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LockAcquireRequest {
    /// The lock's name, a path; its domain decides the group.
    #[schema(
        pattern = "^(/[A-Za-z0-9_:-][A-Za-z0-9_.:-]*)+$",
        example = "/us-east/app/color"
    )]
    pub name: String,
    /// A lease of the lock's group (decimal id); the grant ends with it.
    pub lease: String,
    #[serde(default)]
    pub kind: LockKind,
    #[serde(default)]
    pub mode: LockMode,
    /// For `semaphore`: most holders (>= 1).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 4294967295u32)]
    pub limit: u32,
    /// Stored in the waiter's key, as text (or `value_base64`).
    pub value: Option<String>,
    pub value_base64: Option<String>,
    /// 0: try once; otherwise wait at most this long (the server's limit applies).
    #[serde(default)]
    #[schema(minimum = 0)]
    pub wait_ms: u64,
    /// After the holder's lease expires, the lock is not granted again for this long.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub lock_delay_ms: u64,
}

impl LockAcquireRequest {
    pub fn wire(&self) -> Result<pb::LockAcquireRequest, BadField> {
        Ok(pb::LockAcquireRequest {
            name: self.name.clone(),
            lease: lease_in("lease", &Some(self.lease.clone()))?,
            kind: match self.kind {
                LockKind::Mutex => pb::LockKind::Mutex,
                LockKind::ReadWrite => pb::LockKind::ReadWrite,
                LockKind::Semaphore => pb::LockKind::Semaphore,
            } as i32,
            mode: match self.mode {
                LockMode::Exclusive => pb::LockMode::Exclusive,
                LockMode::Shared => pb::LockMode::Shared,
            } as i32,
            limit: self.limit,
            value: value_in(&self.value, &self.value_base64)?,
            wait_ms: self.wait_ms,
            lock_delay_ms: self.lock_delay_ms,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LockAcquireResponse {
    pub header: Option<Header>,
    pub acquired: bool,
    /// The waiter's key (release with it).
    pub key: String,
    pub token: Option<FencingToken>,
    /// When not acquired: who holds it.
    pub holders: Vec<String>,
}

impl From<pb::LockAcquireResponse> for LockAcquireResponse {
    fn from(r: pb::LockAcquireResponse) -> Self {
        Self {
            header: Header::of(r.header),
            acquired: r.acquired,
            key: r.key,
            token: r.token.map(|t| FencingToken {
                group: t.group,
                revision: t.revision,
            }),
            holders: r.holders,
        }
    }
}

/// `POST /v1/lock/release`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LockReleaseRequest {
    /// The waiter's key `acquire` answered.
    #[schema(
        pattern = "^(/[A-Za-z0-9_:-][A-Za-z0-9_.:-]*)+$",
        example = "/us-east/app/color"
    )]
    pub key: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LockReleaseResponse {
    pub header: Option<Header>,
    pub was_holder: bool,
}

impl From<pb::LockReleaseResponse> for LockReleaseResponse {
    fn from(r: pb::LockReleaseResponse) -> Self {
        Self {
            header: Header::of(r.header),
            was_holder: r.was_holder,
        }
    }
}

/// A member of a group as its leader knows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberStatus {
    pub node: u64,
    pub address: String,
    pub voter: bool,
    pub matched: u64,
    pub region: String,
    pub lag_entries: u64,
}

/// A group this node hosts.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupStatus {
    pub group: u64,
    pub name: String,
    /// This node's role: voter or learner.
    pub role: String,
    pub state: String,
    pub leader: u64,
    pub leader_address: String,
    pub term: u64,
    pub last_log_index: u64,
    pub committed: u64,
    pub applied: u64,
    pub compacted_revision: u64,
    pub lag_ms: u64,
    pub syncs_sent: u64,
    pub synced_reads: u64,
    pub members: Vec<MemberStatus>,
    /// How the live membership differs from the topology (empty: it agrees).
    pub drift: Vec<String>,
}

/// `GET /v1/status`: this node (and with `cluster=true` every other node).
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusResponse {
    pub node: u64,
    pub address: String,
    pub region: String,
    pub version: String,
    pub groups: Vec<GroupStatus>,
    #[schema(no_recursion)]
    pub nodes: Vec<StatusResponse>,
    pub unreachable: Vec<String>,
    pub forwarded_writes: u64,
    pub keepalive_requests: u64,
    pub keepalive_refreshes: u64,
    pub auth_refused: u64,
}

impl From<pb::StatusResponse> for StatusResponse {
    fn from(r: pb::StatusResponse) -> Self {
        Self {
            node: r.node,
            address: r.address,
            region: r.region,
            version: r.version,
            groups: r
                .groups
                .into_iter()
                .map(|g| GroupStatus {
                    group: g.group,
                    name: g.name,
                    role: g.role,
                    state: g.state,
                    leader: g.leader,
                    leader_address: g.leader_address,
                    term: g.term,
                    last_log_index: g.last_log_index,
                    committed: g.committed,
                    applied: g.applied,
                    compacted_revision: g.compacted_revision,
                    lag_ms: g.lag_ms,
                    syncs_sent: g.syncs_sent,
                    synced_reads: g.synced_reads,
                    members: g
                        .members
                        .into_iter()
                        .map(|m| MemberStatus {
                            node: m.node,
                            address: m.address,
                            voter: m.voter,
                            matched: m.matched,
                            region: m.region,
                            lag_entries: m.lag_entries,
                        })
                        .collect(),
                    drift: g.drift,
                })
                .collect(),
            nodes: r.nodes.into_iter().map(Into::into).collect(),
            unreachable: r.unreachable,
            forwarded_writes: r.forwarded_writes,
            keepalive_requests: r.keepalive_requests,
            keepalive_refreshes: r.keepalive_refreshes,
            auth_refused: r.auth_refused,
        }
    }
}

/// A domain's residency policy.
#[derive(Debug, Serialize, ToSchema)]
pub struct Policy {
    /// Regions by name or by tag (`jurisdiction:eu`).
    pub allowed: Vec<String>,
    /// `forward` or `strict`.
    pub mode: String,
}

/// A domain: a key prefix and the group that owns it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Domain {
    pub prefix: String,
    pub group: u64,
    pub group_name: String,
    pub policy: Option<Policy>,
    /// `serving`, or where it is moving.
    pub state: String,
}

/// Nodes of a group in one region.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegionCount {
    pub region: String,
    pub nodes: u32,
}

/// Where a group keeps its replicas.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlacementGroup {
    pub id: u64,
    pub name: String,
    pub voters: Vec<RegionCount>,
    pub learners: Vec<RegionCount>,
}

/// `GET /v1/placement`: the placement map as this router follows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlacementResponse {
    /// 0: the topology's map, not yet committed by the global group.
    pub epoch: u64,
    pub domains: Vec<Domain>,
    pub groups: Vec<PlacementGroup>,
    /// The router that answered, and its region.
    pub node: u64,
    pub region: String,
}

impl From<pb::PlacementShowResponse> for PlacementResponse {
    fn from(r: pb::PlacementShowResponse) -> Self {
        let counts = |v: Vec<pb::RegionCount>| {
            v.into_iter()
                .map(|c| RegionCount {
                    region: c.region,
                    nodes: c.nodes,
                })
                .collect()
        };
        Self {
            epoch: r.epoch,
            domains: r
                .domains
                .into_iter()
                .map(|d| Domain {
                    prefix: d.prefix,
                    group: d.group,
                    group_name: d.group_name,
                    policy: d.policy.map(|p| Policy {
                        allowed: p.allowed,
                        mode: p.mode,
                    }),
                    state: d.state,
                })
                .collect(),
            groups: r
                .groups
                .into_iter()
                .map(|g| PlacementGroup {
                    id: g.id,
                    name: g.name,
                    voters: counts(g.voters),
                    learners: counts(g.learners),
                })
                .collect(),
            node: r.node,
            region: r.region,
        }
    }
}

/// `GET /v1/status` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatusQuery {
    /// Also ask every other node of the topology (bounded wait).
    #[serde(default)]
    pub cluster: bool,
}

/// Every failure: the gRPC code's name, what went wrong, and the typed detail when there is
/// one (the same as gRPC's `meridian.v1.ErrorDetail`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The gRPC status code's name in snake_case (`invalid_argument`, `unavailable`, ...).
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<ErrorDetail>,
}

/// The typed detail of an error: exactly one member.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorDetail {
    /// Not the group's leader: `{leader, leader_address, group}`.
    NotLeader {
        leader: u64,
        leader_address: String,
        group: u64,
    },
    Compacted {
        oldest: u64,
        requested: u64,
    },
    /// The rule broken and the field that broke it.
    InvalidArgument {
        rule: String,
        field: String,
    },
    Unavailable {
        reason: String,
    },
    FutureRevision {
        requested: u64,
        current: u64,
    },
    /// A residency policy keeps the domain out of this region.
    PolicyDenied {
        domain: String,
        policy: String,
        region: String,
    },
    WrongGroup {
        epoch: u64,
        group: u64,
    },
    /// A `stale` read's `max_lag_ms` is not met by this replica now (HTTP 412; try another
    /// node, later, or a larger bound).
    StaleBound {
        group: u64,
        lag_ms: u64,
        max_lag_ms: u64,
    },
}

impl ErrorDetail {
    pub fn of(d: pb::ErrorDetail) -> Option<Self> {
        use pb::error_detail::Kind;
        Some(match d.kind? {
            Kind::NotLeader(x) => Self::NotLeader {
                leader: x.leader,
                leader_address: x.leader_address,
                group: x.group,
            },
            Kind::Compacted(x) => Self::Compacted {
                oldest: x.oldest,
                requested: x.requested,
            },
            Kind::InvalidArgument(x) => Self::InvalidArgument {
                rule: x.rule,
                field: x.field,
            },
            Kind::Unavailable(x) => Self::Unavailable { reason: x.reason },
            Kind::FutureRevision(x) => Self::FutureRevision {
                requested: x.requested,
                current: x.current,
            },
            Kind::PolicyDenied(x) => Self::PolicyDenied {
                domain: x.domain,
                policy: x.policy,
                region: x.region,
            },
            Kind::WrongGroup(x) => Self::WrongGroup {
                epoch: x.epoch,
                group: x.group,
            },
            Kind::StaleBound(x) => Self::StaleBound {
                group: x.group,
                lag_ms: x.lag_ms,
                max_lag_ms: x.max_lag_ms,
            },
        })
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
