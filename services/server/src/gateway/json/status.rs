//! The node's and the cluster's status, and the placement map.

use super::*;

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
