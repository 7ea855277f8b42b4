//! The server's errors, and the one place they become gRPC statuses with a typed detail.

use meridian_proto::kv::{self, error_detail::Kind, ErrorDetail};
use meridian_types::PathError;
use prost::Message;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Path(#[from] PathError),
    #[error("{message}")]
    InvalidArgument {
        rule: &'static str,
        field: &'static str,
        message: String,
    },
    #[error("not the leader of group {group}; the leader is node {leader} at {address}")]
    NotLeader {
        group: u64,
        leader: u64,
        address: String,
    },
    #[error("revision {requested} was compacted; the oldest available is {oldest} — re-list and watch from there")]
    Compacted { requested: u64, oldest: u64 },
    #[error("revision {requested} is in the future; this replica is at revision {current}")]
    FutureRevision { requested: u64, current: u64 },
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("deadline exceeded: {0}")]
    Deadline(String),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("domain {domain} has a residency policy ({policy}) that keeps it out of region {region}, where this request arrived; use an endpoint in an allowed region")]
    PolicyDenied {
        domain: String,
        policy: String,
        region: String,
    },
    /// The group no longer takes writes under this key: its subtree moved away at `epoch`.
    /// Nothing changed; route again once the placement map is past `epoch`.
    #[error("group {group} no longer owns this key: its subtree moved away at placement epoch {epoch}; retry (the router routes again once it has that epoch)")]
    WrongGroup { epoch: u64, group: u64 },
    /// Another router's answer to a request this one forwarded, passed on unchanged.
    #[error("{}", .0.message())]
    Forwarded(Status),
    /// The state machine refused the command; nothing changed.
    #[error("{message}")]
    Rejected { rule: String, message: String },
    /// A stale read's bound is not met by this replica now (another, or a later try, may).
    #[error("unavailable: this replica of group {label} is {lag_ms} ms behind its leader, more than the {max_lag_ms} ms the read allows")]
    StaleBound {
        group: u64,
        label: String,
        lag_ms: u64,
        max_lag_ms: u64,
    },
}

impl From<meridian_types::Rejection> for Error {
    fn from(r: meridian_types::Rejection) -> Self {
        Error::Rejected {
            rule: r.rule,
            message: r.message,
        }
    }
}

impl Error {
    pub fn invalid(rule: &'static str, field: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            rule,
            field,
            message: message.into(),
        }
    }
}

fn with_detail(code: Code, message: String, kind: Kind) -> Status {
    let detail = ErrorDetail { kind: Some(kind) }.encode_to_vec();
    Status::with_details(code, message, detail.into())
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let message = e.to_string();
        match e {
            Error::Path(p) => with_detail(
                Code::InvalidArgument,
                message,
                Kind::InvalidArgument(kv::InvalidArgument {
                    rule: p.rule().into(),
                    field: if p.rule() == "value_too_large" {
                        "value"
                    } else {
                        "key"
                    }
                    .into(),
                }),
            ),
            Error::InvalidArgument { rule, field, .. } => with_detail(
                Code::InvalidArgument,
                message,
                Kind::InvalidArgument(kv::InvalidArgument {
                    rule: rule.into(),
                    field: field.into(),
                }),
            ),
            Error::NotLeader {
                group,
                leader,
                address,
            } => with_detail(
                Code::FailedPrecondition,
                message,
                Kind::NotLeader(kv::NotLeader {
                    leader,
                    leader_address: address,
                    group,
                }),
            ),
            Error::Compacted { requested, oldest } => with_detail(
                Code::OutOfRange,
                message,
                Kind::Compacted(kv::Compacted { oldest, requested }),
            ),
            Error::FutureRevision { requested, current } => with_detail(
                Code::OutOfRange,
                message,
                Kind::FutureRevision(kv::FutureRevision { requested, current }),
            ),
            Error::Unavailable(reason) => with_detail(
                Code::Unavailable,
                message,
                Kind::Unavailable(kv::Unavailable { reason }),
            ),
            Error::PolicyDenied {
                domain,
                policy,
                region,
            } => with_detail(
                Code::PermissionDenied,
                message,
                Kind::PolicyDenied(kv::PolicyDenied {
                    domain,
                    policy,
                    region,
                }),
            ),
            // Unavailable with a typed detail: refused before anything changed, so a client may
            // retry it (the SDK does) — a router catches up and routes it again.
            Error::StaleBound {
                group,
                lag_ms,
                max_lag_ms,
                ..
            } => with_detail(
                Code::Unavailable,
                message,
                Kind::StaleBound(kv::StaleBound {
                    group,
                    lag_ms,
                    max_lag_ms,
                }),
            ),
            Error::WrongGroup { epoch, group } => with_detail(
                Code::Unavailable,
                message,
                Kind::WrongGroup(kv::WrongGroup { epoch, group }),
            ),
            Error::Forwarded(status) => status,
            Error::Deadline(_) => Status::new(Code::DeadlineExceeded, message),
            Error::Internal(_) => Status::new(Code::Internal, message),
            Error::Rejected { rule, .. } => with_detail(
                if rule == "lease_not_found" {
                    Code::NotFound
                } else {
                    Code::FailedPrecondition
                },
                message,
                Kind::InvalidArgument(kv::InvalidArgument {
                    rule,
                    field: String::new(),
                }),
            ),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
