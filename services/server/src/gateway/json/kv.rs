//! The key-value calls: get, put, range, list, delete, txn and watch.

use super::*;

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
