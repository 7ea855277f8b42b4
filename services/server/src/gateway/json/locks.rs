//! The lock calls: acquire (mutex or shared, with its fencing token) and release.

use super::*;

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
