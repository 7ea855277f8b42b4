//! `meridian.v1.Tokens`: revoke tokens through the global group, list the revoked ids (both
//! `admin` on `/`). The list itself, and how every router follows it, is [`crate::revocation`].

use crate::ctx::NodeCtx;
use crate::error::Error;
use crate::gate::Gate;
use crate::revocation::{
    check_id, Revocations, REVOCATIONS_KEY, REVOKED_MAX, REVOKED_PREFIX, REVOKE_IDS_MAX,
};
use meridian_auth::Op as Access;
use meridian_proto::kv as pb;
use meridian_proto::kv::tokens_server::Tokens;
use meridian_types::{Command, CommandResult, Op, PutOp};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

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
