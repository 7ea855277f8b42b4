//! The token revocation list (docs/security.md) and the `meridian.v1.Tokens` service.
//!
//! Revoked ids live in the global group as reserved keys, [`REVOKED_PREFIX`]`<id>`, that no
//! client path can name (client paths start with `/`), plus [`REVOCATIONS_KEY`], rewritten by
//! every change so that its `mod_revision` is the list's epoch. Like the placement map, each
//! router follows the list through its local replica of the global group ([`follow`]) and its
//! [`Gate`] refuses a token any of whose blocks is listed — in every region once its replica
//! has applied the change, about one round trip after the commit.

use crate::ctx::NodeCtx;
use crate::error::Error;
use crate::gate::Gate;
use meridian_auth::Op as Access;
use meridian_proto::kv as pb;
use meridian_proto::kv::tokens_server::Tokens;
use meridian_storage::GroupShared;
use meridian_types::{Command, CommandResult, Op, PutOp};
use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

/// Where a revoked id is kept in the global group: `@revoked/<id>`.
pub const REVOKED_PREFIX: &str = "@revoked/";

/// Rewritten by every revocation: its `mod_revision` is the list's epoch.
pub const REVOCATIONS_KEY: &str = "@revocations";

/// Most ids one request revokes.
pub const REVOKE_IDS_MAX: usize = 64;

/// Most ids the list holds; past it a revocation is refused (rotate the root key instead).
pub const REVOKED_MAX: usize = 100_000;

/// The revoked ids this router knows, at the epoch it applied them.
pub struct Revocations {
    ids: RwLock<Arc<BTreeSet<String>>>,
    epoch: watch::Sender<u64>,
}

impl Default for Revocations {
    fn default() -> Self {
        Self {
            ids: RwLock::default(),
            epoch: watch::channel(0).0,
        }
    }
}

impl Revocations {
    /// The first of `ids` that is revoked.
    pub fn revoked<'a>(&self, ids: impl IntoIterator<Item = &'a String>) -> Option<&'a String> {
        let set = self.ids.read().unwrap_or_else(|p| p.into_inner());
        if set.is_empty() {
            return None;
        }
        ids.into_iter().find(|id| set.contains(id.as_str()))
    }

    pub fn all(&self) -> Arc<BTreeSet<String>> {
        self.ids.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn epoch(&self) -> u64 {
        *self.epoch.borrow()
    }

    fn install(&self, epoch: u64, ids: BTreeSet<String>) {
        if epoch <= self.epoch() {
            return;
        }
        *self.ids.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ids);
        self.epoch.send_replace(epoch);
    }

    /// Waits (bounded) until the list applied here is at `epoch` or later.
    pub async fn wait_epoch(&self, epoch: u64, timeout: Duration) -> bool {
        let mut rx = self.epoch.subscribe();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|e| *e >= epoch)).await;
        matches!(reached, Ok(Ok(_)))
    }
}

/// Follows the global group's local replica: reloads the list whenever its epoch moved. Ends
/// on shutdown.
pub async fn follow(
    revocations: Arc<Revocations>,
    global: Arc<GroupShared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut notices = global.subscribe();
    loop {
        let epoch = global
            .read()
            .get(REVOCATIONS_KEY)
            .map_or(0, |kv| kv.mod_revision);
        if epoch > revocations.epoch() {
            let (page, _) = global.read().range(REVOKED_PREFIX, None, REVOKED_MAX);
            let ids = page
                .into_iter()
                .filter_map(|kv| kv.key.strip_prefix(REVOKED_PREFIX).map(str::to_string))
                .collect();
            revocations.install(epoch, ids);
        }
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            n = notices.recv() => {
                if let Err(tokio::sync::broadcast::error::RecvError::Closed) = n {
                    return;
                }
            }
        }
    }
}

/// A revocation id as biscuit makes them: lowercase hex of a 64-byte signature.
fn check_id(id: &str) -> Result<(), Error> {
    let ok = id.len() == 128
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        return Ok(());
    }
    Err(Error::invalid(
        "bad_revocation_id",
        "ids",
        format!(
            "{:?} is not a revocation id (128 lowercase hex digits, as `meridian token inspect` \
             prints them)",
            id.chars().take(140).collect::<String>()
        ),
    ))
}

pub struct TokensService {
    ctx: Arc<NodeCtx>,
    gate: Arc<Gate>,
    revocations: Arc<Revocations>,
}

impl TokensService {
    pub fn new(ctx: Arc<NodeCtx>, gate: Arc<Gate>, revocations: Arc<Revocations>) -> Self {
        Self {
            ctx,
            gate,
            revocations,
        }
    }
}

#[tonic::async_trait]
impl Tokens for TokensService {
    async fn revoke(
        &self,
        request: Request<pb::TokensRevokeRequest>,
    ) -> Result<Response<pb::TokensRevokeResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        self.gate
            .check(&meta, "tokens revoke", &[(Access::Admin, "/")])?;
        if req.ids.is_empty() || req.ids.len() > REVOKE_IDS_MAX {
            return Err(Error::invalid(
                "revocation_ids",
                "ids",
                format!(
                    "revoke between 1 and {REVOKE_IDS_MAX} ids at a time (got {})",
                    req.ids.len()
                ),
            )
            .into());
        }
        for id in &req.ids {
            check_id(id)?;
        }
        let Some(global) = self.ctx.topology.global_group().map(|g| g.id) else {
            return Err(Error::invalid(
                "no_global_group",
                "ids",
                "this cluster has no global group to keep a revocation list in; rotate the root \
                 key instead (docs/security.md)",
            )
            .into());
        };
        let known = self.revocations.all();
        let fresh: BTreeSet<&String> = req.ids.iter().filter(|id| !known.contains(*id)).collect();
        if known.len() + fresh.len() > REVOKED_MAX {
            return Err(Error::invalid(
                "revocation_list_full",
                "ids",
                format!(
                    "the revocation list holds {} ids, at most {REVOKED_MAX}: rotate the root key \
                     instead (docs/security.md)",
                    known.len()
                ),
            )
            .into());
        }
        let mut success: Vec<Op> = req
            .ids
            .iter()
            .map(|id| Op::Put(PutOp::new(format!("{REVOKED_PREFIX}{id}"), Vec::new())))
            .collect();
        success.push(Op::Put(PutOp::new(REVOCATIONS_KEY, Vec::new())));
        let cmd = Command::Txn {
            compares: Vec::new(),
            success,
            failure: Vec::new(),
        };
        let (revision, result) = self.ctx.commit(global, cmd).await?;
        if let CommandResult::Rejected(r) = result {
            return Err(Error::from(r).into());
        }
        let wait = Duration::from_millis(self.ctx.limits.sync_wait_ms_max);
        if !self.revocations.wait_epoch(revision, wait).await {
            return Err(Error::Unavailable(format!(
                "the revocation was committed at revision {revision}, but this router's replica \
                 of the global group has not applied it within {} ms; other routers will follow",
                self.ctx.limits.sync_wait_ms_max
            ))
            .into());
        }
        Ok(Response::new(pb::TokensRevokeResponse {
            revision,
            newly_revoked: fresh.len() as u32,
        }))
    }

    async fn revoked(
        &self,
        request: Request<pb::TokensRevokedRequest>,
    ) -> Result<Response<pb::TokensRevokedResponse>, Status> {
        self.gate.check(
            request.metadata(),
            "tokens revoked",
            &[(Access::Admin, "/")],
        )?;
        Ok(Response::new(pb::TokensRevokedResponse {
            ids: self.revocations.all().iter().cloned().collect(),
            revision: self.revocations.epoch(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocation_ids_are_checked() {
        assert!(check_id(&"ab".repeat(64)).is_ok());
        assert!(check_id(&"AB".repeat(64)).is_err());
        assert!(check_id("abcd").is_err());
        assert!(check_id(&"zz".repeat(64)).is_err());
    }

    #[test]
    fn a_revoked_block_is_found_and_an_older_epoch_is_ignored() {
        let r = Revocations::default();
        let ids = vec!["a".to_string(), "b".to_string()];
        assert_eq!(r.revoked(&ids), None);
        r.install(5, BTreeSet::from(["b".to_string()]));
        assert_eq!(r.revoked(&ids).map(String::as_str), Some("b"));
        r.install(3, BTreeSet::new());
        assert_eq!(r.epoch(), 5);
        assert_eq!(r.revoked(&ids).map(String::as_str), Some("b"));
    }
}
