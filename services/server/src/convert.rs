//! Conversions between the wire types and the domain types, with every input rule checked
//! here, once, before anything reaches Raft.

use crate::error::{Error, Result};
use meridian_proto::kv as pb;
use meridian_types::path::validate_key_bytes;
use meridian_types::{
    validate_prefix, validate_value, Command, Compare, CompareResult, CompareTarget, DeleteOp,
    Event, EventKind, KeyValue, Op, OpResult, PutOp, TXN_OPS_MAX,
};

pub fn key(raw: &[u8]) -> Result<String> {
    Ok(validate_key_bytes(raw)?.to_string())
}

/// A watch request's key, or its prefix when `prefix` is set.
pub fn watched(raw: &[u8], prefix: bool) -> Result<String> {
    if prefix {
        self::prefix(raw)
    } else {
        key(raw)
    }
}

pub fn prefix(raw: &[u8]) -> Result<String> {
    let s = std::str::from_utf8(raw)
        .map_err(|e| Error::Path(meridian_types::PathError::InvalidUtf8(e.valid_up_to())))?;
    validate_prefix(s)?;
    Ok(s.to_string())
}

/// An optional continuation key: empty means "from the start".
pub fn after(raw: &[u8]) -> Result<Option<String>> {
    if raw.is_empty() {
        return Ok(None);
    }
    std::str::from_utf8(raw)
        .map(|s| Some(s.to_string()))
        .map_err(|e| Error::Path(meridian_types::PathError::InvalidUtf8(e.valid_up_to())))
}

pub fn revision(value: i64, field: &'static str) -> Result<u64> {
    u64::try_from(value).map_err(|_| {
        Error::invalid(
            "negative_revision",
            field,
            format!("{field} is {value}; revisions are never negative"),
        )
    })
}

fn opt_revision(value: Option<i64>, field: &'static str) -> Result<Option<u64>> {
    value.map(|v| revision(v, field)).transpose()
}

/// A lease id as given; whether it exists (and in the key's group) is checked by the router
/// and by the state machine.
fn lease(id: u64) -> Result<u64> {
    Ok(id)
}

pub fn put(req: pb::PutRequest) -> Result<PutOp> {
    let key = key(&req.key)?;
    validate_value(&req.value)?;
    Ok(PutOp {
        key,
        value: req.value,
        expected_version: opt_revision(req.expected_version, "expected_version")?,
        expected_mod_revision: opt_revision(req.expected_mod_revision, "expected_mod_revision")?,
        sequential: req.sequential,
        lease: lease(req.lease)?,
        prev_kv: req.prev_kv,
    })
}

pub fn delete(req: pb::DeleteRequest) -> Result<DeleteOp> {
    let key = if req.prefix {
        prefix(&req.key)?
    } else {
        key(&req.key)?
    };
    if req.prefix && (req.expected_version.is_some() || req.expected_mod_revision.is_some()) {
        return Err(Error::invalid(
            "conditional_prefix_delete",
            "prefix",
            "a prefix delete cannot be conditional; use a txn with compares instead",
        ));
    }
    Ok(DeleteOp {
        key,
        prefix: req.prefix,
        expected_version: opt_revision(req.expected_version, "expected_version")?,
        expected_mod_revision: opt_revision(req.expected_mod_revision, "expected_mod_revision")?,
        prev_kv: req.prev_kv,
    })
}

fn compare(c: pb::Compare) -> Result<Compare> {
    let target = match pb::compare::Target::try_from(c.target) {
        Ok(pb::compare::Target::Value) => CompareTarget::Value,
        Ok(pb::compare::Target::Version) => CompareTarget::Version,
        Ok(pb::compare::Target::ModRevision) => CompareTarget::ModRevision,
        Ok(pb::compare::Target::CreateRevision) => CompareTarget::CreateRevision,
        Ok(pb::compare::Target::Exists) => CompareTarget::Exists,
        Err(_) => {
            return Err(Error::invalid(
                "unknown_compare_target",
                "compare.target",
                format!("unknown compare target {}", c.target),
            ))
        }
    };
    let result = match pb::compare::Result::try_from(c.result) {
        Ok(pb::compare::Result::Equal) => CompareResult::Equal,
        Ok(pb::compare::Result::NotEqual) => CompareResult::NotEqual,
        Ok(pb::compare::Result::Greater) => CompareResult::Greater,
        Ok(pb::compare::Result::Less) => CompareResult::Less,
        Err(_) => {
            return Err(Error::invalid(
                "unknown_compare_result",
                "compare.result",
                format!("unknown compare operator {}", c.result),
            ))
        }
    };
    validate_value(&c.value)?;
    Ok(Compare {
        key: key(&c.key)?,
        target,
        result,
        value: c.value,
        number: revision(c.number, "compare.number")?,
        exists: c.exists,
    })
}

fn txn_op(op: pb::TxnOp) -> Result<Op> {
    match op.op {
        Some(pb::txn_op::Op::Put(p)) => Ok(Op::Put(put(p)?)),
        Some(pb::txn_op::Op::Delete(d)) => Ok(Op::Delete(delete(d)?)),
        Some(pb::txn_op::Op::Get(g)) => Ok(Op::Get { key: key(&g.key)? }),
        None => Err(Error::invalid(
            "empty_txn_op",
            "op",
            "a txn op names no operation",
        )),
    }
}

pub fn txn(req: pb::TxnRequest) -> Result<Command> {
    for (list, len) in [
        ("compare", req.compare.len()),
        ("success", req.success.len()),
        ("failure", req.failure.len()),
    ] {
        if len > TXN_OPS_MAX {
            return Err(Error::invalid(
                "txn_too_many_ops",
                "txn",
                format!("txn has {len} {list} operations; the limit is {TXN_OPS_MAX}"),
            ));
        }
    }
    Ok(Command::Txn {
        compares: req
            .compare
            .into_iter()
            .map(compare)
            .collect::<Result<_>>()?,
        success: req.success.into_iter().map(txn_op).collect::<Result<_>>()?,
        failure: req.failure.into_iter().map(txn_op).collect::<Result<_>>()?,
    })
}

/// A timestamp as the wire carries it; `None` for none yet (zero).
pub fn timestamp_out(t: meridian_types::hlc::Timestamp) -> Option<pb::HlcTimestamp> {
    (t != meridian_types::hlc::Timestamp::ZERO).then_some(pb::HlcTimestamp {
        physical_us: t.physical,
        logical: t.logical,
    })
}

/// A wire timestamp (absent: zero).
pub fn timestamp_in(t: Option<&pb::HlcTimestamp>) -> meridian_types::hlc::Timestamp {
    t.map_or(meridian_types::hlc::Timestamp::ZERO, |t| {
        meridian_types::hlc::Timestamp::new(t.physical_us, t.logical)
    })
}

/// The rule a forged session timestamp breaks ([`session_timestamp`]).
pub const SESSION_TIMESTAMP_AHEAD: &str = "session_timestamp_ahead";

/// Refuses a session timestamp further ahead of this node's clock than the maximum clock
/// offset: no session can have seen one (every timestamp comes from some node's clock), so it
/// was made up, and a write stamped above it would carry the group's timestamps past every
/// clock (docs/closed-timestamps.md).
pub fn session_timestamp(
    t: meridian_types::hlc::Timestamp,
    clock: &meridian_types::hlc::NodeClock,
    lead_us: u64,
) -> Result<()> {
    let now = clock.physical_us();
    let ahead = t.physical.saturating_sub(now);
    let bound = clock.max_offset_us().saturating_add(lead_us);
    if ahead > bound {
        return Err(Error::invalid(
            SESSION_TIMESTAMP_AHEAD,
            "session.timestamp",
            format!(
                "the session's timestamp {t} is {ahead} µs ahead of this node's clock, more \
                 than the maximum clock offset and the timestamps' lead allow ({bound} µs): no \
                 node gave it; refused, nothing was read or written"
            ),
        ));
    }
    Ok(())
}

pub fn kv_out(kv: KeyValue) -> pb::KeyValue {
    pb::KeyValue {
        key: kv.key,
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease,
    }
}

pub fn kv_keys_only(kv: KeyValue) -> pb::KeyValue {
    pb::KeyValue {
        value: Vec::new(),
        ..kv_out(kv)
    }
}

pub fn event_out(ev: &Event, prev_kv: bool) -> pb::Event {
    pb::Event {
        r#type: match ev.kind {
            EventKind::Put | EventKind::Placed => pb::event::EventType::Put as i32,
            // Watchers never receive these (watch.rs filters them); a delete is the nearest.
            EventKind::Delete | EventKind::Dropped => pb::event::EventType::Delete as i32,
        },
        kv: Some(kv_out(ev.kv.clone())),
        prev_kv: if prev_kv {
            ev.prev_kv.clone().map(kv_out)
        } else {
            None
        },
    }
}

pub fn op_result_out(r: OpResult, header: &pb::ResponseHeader) -> pb::TxnOpResult {
    let result = match r {
        OpResult::Put {
            key,
            succeeded,
            prev_kv,
            current,
        } => pb::txn_op_result::Result::Put(pb::PutResponse {
            header: Some(header.clone()),
            key,
            prev_kv: prev_kv.map(kv_out),
            succeeded,
            current: current.map(kv_out),
        }),
        OpResult::Delete {
            succeeded,
            deleted,
            prev_kvs,
        } => pb::txn_op_result::Result::Delete(pb::DeleteResponse {
            header: Some(header.clone()),
            deleted,
            prev_kvs: prev_kvs.into_iter().map(kv_out).collect(),
            succeeded,
        }),
        OpResult::Get { kv } => pb::txn_op_result::Result::Get(pb::GetResponse {
            header: Some(header.clone()),
            kv: kv.map(kv_out),
        }),
    };
    pb::TxnOpResult {
        result: Some(result),
    }
}
