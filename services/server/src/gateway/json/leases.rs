//! The lease calls: grant, keepalive, revoke, time to live (lease ids as decimal strings).

use super::*;

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
