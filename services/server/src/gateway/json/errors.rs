//! The error body every failing call answers with, and its typed detail.

use super::*;

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
