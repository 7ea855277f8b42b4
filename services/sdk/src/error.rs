//! Errors as the SDK reports them, decoded once from the status and its typed detail.

use meridian_proto::kv::{error_detail::Kind, ErrorDetail};
use prost::Message;
use tonic::Code;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("{message}")]
    InvalidArgument { rule: String, message: String },
    #[error("not the leader; the leader is at {address}")]
    NotLeader { leader: u64, address: String },
    #[error("{message}")]
    Compacted {
        oldest: u64,
        requested: u64,
        message: String,
    },
    #[error("{message}")]
    FutureRevision {
        requested: u64,
        current: u64,
        message: String,
    },
    /// A residency policy keeps the domain out of the region of the endpoint (mode "strict").
    #[error("{message}")]
    PolicyDenied {
        domain: String,
        policy: String,
        region: String,
        message: String,
    },
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("{code:?}: {message}")]
    Other { code: Code, message: String },
    #[error("client configuration: {0}")]
    Config(String),
}

impl Error {
    pub fn from_status(status: tonic::Status) -> Self {
        let message = status.message().to_string();
        let detail = ErrorDetail::decode(status.details())
            .ok()
            .and_then(|d| d.kind);
        match (status.code(), detail) {
            (_, Some(Kind::InvalidArgument(a))) => Error::InvalidArgument {
                rule: a.rule,
                message,
            },
            (_, Some(Kind::NotLeader(n))) => Error::NotLeader {
                leader: n.leader,
                address: n.leader_address,
            },
            (_, Some(Kind::Compacted(c))) => Error::Compacted {
                oldest: c.oldest,
                requested: c.requested,
                message,
            },
            (_, Some(Kind::FutureRevision(f))) => Error::FutureRevision {
                requested: f.requested,
                current: f.current,
                message,
            },
            (_, Some(Kind::PolicyDenied(p))) => Error::PolicyDenied {
                domain: p.domain,
                policy: p.policy,
                region: p.region,
                message,
            },
            // The router's certificate failed verification (or ours was refused): trying
            // again will not help.
            (Code::Unavailable, _) if meridian_proto::io::handshake_refused(&status) => {
                Error::Other {
                    code: Code::Unauthenticated,
                    message,
                }
            }
            (Code::Unavailable, _) => Error::Unavailable(message),
            (Code::InvalidArgument, None) => Error::InvalidArgument {
                rule: String::new(),
                message,
            },
            (code, _) => Error::Other { code, message },
        }
    }

    /// Whether another endpoint or a later attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unavailable(_) => true,
            Error::Other { code, .. } => matches!(code, Code::Unknown | Code::Cancelled),
            _ => false,
        }
    }

    /// The rule an invalid argument broke, if that is what this is.
    pub fn rule(&self) -> Option<&str> {
        match self {
            Error::InvalidArgument { rule, .. } => Some(rule),
            _ => None,
        }
    }
}
