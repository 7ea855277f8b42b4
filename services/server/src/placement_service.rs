//! `meridian.v1.Placement`: show the map this router follows; change a domain's policy through
//! the global group (which refuses a change that breaks a policy, naming domain, policy and
//! regions). A change is answered once this router has installed it, so a `show` at the same
//! endpoint right after sees it.

use crate::ctx::NodeCtx;
use crate::error::Error;
use crate::gate::Gate;
use crate::placement::{map_out, policy_in};
use meridian_auth::Op as Access;
use meridian_proto::kv as pb;
use meridian_proto::kv::placement_server::Placement;
use meridian_types::{Command, CommandResult, PlacementChange, ReadProfile};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

pub struct PlacementService {
    ctx: Arc<NodeCtx>,
    gate: Arc<Gate>,
}

impl PlacementService {
    pub fn new(ctx: Arc<NodeCtx>, gate: Arc<Gate>) -> Self {
        Self { ctx, gate }
    }

    async fn change(&self, change: PlacementChange) -> Result<u64, Error> {
        let Some(global) = self.ctx.topology.global_group().map(|g| g.id) else {
            return Err(Error::invalid(
                "no_global_group",
                "placement",
                "this cluster has no global group, so its placement is the topology file's and \
                 cannot change while it runs",
            ));
        };
        let (_, revision, result) = self.ctx.write(global, Command::Placement(change)).await?;
        match result {
            CommandResult::Applied => {}
            CommandResult::Rejected(r) => return Err(r.into()),
            other => {
                return Err(Error::Internal(format!(
                    "placement change answered {other:?}"
                )))
            }
        }
        let wait = Duration::from_millis(self.ctx.limits.sync_wait_ms_max);
        if !self.ctx.placement.wait_epoch(revision, wait).await {
            return Err(Error::Unavailable(format!(
                "the change was committed at epoch {revision}, but this router's replica of the \
                 global group has not applied it within {} ms; other routers will follow",
                self.ctx.limits.sync_wait_ms_max
            )));
        }
        Ok(revision)
    }
}

/// A malformed domain prefix is an invalid argument whatever the token allows (the token check
/// would call it a prefix the token does not cover).
fn valid_prefix(prefix: &str) -> Result<(), Error> {
    meridian_placement::validate_domain_prefix(prefix)
        .map_err(|e| Error::invalid("bad_prefix", "prefix", e))
}

#[tonic::async_trait]
impl Placement for PlacementService {
    async fn show(
        &self,
        request: Request<pb::PlacementShowRequest>,
    ) -> Result<Response<pb::PlacementShowResponse>, Status> {
        // Any valid token may see where domains live (no keys, no values).
        self.gate.token(request.metadata(), "placement show")?;
        let current = self.ctx.placement.current();
        Ok(Response::new(map_out(
            &current.map,
            self.ctx.node_id,
            &self.ctx.region,
        )))
    }

    async fn r#move(
        &self,
        request: Request<pb::PlacementMoveRequest>,
    ) -> Result<Response<pb::PlacementMoveResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        valid_prefix(&req.prefix)?;
        self.gate
            .check(&meta, "placement move", &[(Access::Admin, &req.prefix)])?;
        let current = self.ctx.placement.current();
        let to = req.to.trim();
        let group = current
            .map
            .groups
            .iter()
            .find(|(id, g)| g.name == to || id.0.to_string() == to || id.to_string() == to)
            .map(|(id, _)| *id);
        let Some(group) = group else {
            let names: Vec<String> = current
                .map
                .groups
                .iter()
                .map(|(id, g)| format!("{} ({id})", g.name))
                .collect();
            return Err(Error::invalid(
                "unknown_group",
                "to",
                format!("no group {to:?} to move to (groups: {})", names.join(", ")),
            )
            .into());
        };
        let change = PlacementChange::BeginMove {
            prefix: req.prefix.clone(),
            to: group,
            expected_epoch: (req.expected_epoch != 0).then_some(req.expected_epoch),
        };
        let id = self.change(change).await?;
        let from = self
            .ctx
            .placement
            .current()
            .map
            .domains
            .iter()
            .find(|d| d.prefix == req.prefix)
            .and_then(|d| d.moving.as_ref().map(|m| m.from.0))
            .unwrap_or_default();
        Ok(Response::new(pb::PlacementMoveResponse {
            id,
            from,
            to: group.0,
        }))
    }

    async fn set_policy(
        &self,
        request: Request<pb::PlacementSetPolicyRequest>,
    ) -> Result<Response<pb::PlacementSetPolicyResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        valid_prefix(&req.prefix)?;
        self.gate.check(
            &meta,
            "placement set-policy",
            &[(Access::Admin, &req.prefix)],
        )?;
        let policy = req.policy.as_ref().map(policy_in).transpose()?;
        let change = PlacementChange::SetPolicy {
            prefix: req.prefix,
            policy,
            expected_epoch: (req.expected_epoch != 0).then_some(req.expected_epoch),
        };
        let epoch = self.change(change).await?;
        Ok(Response::new(pb::PlacementSetPolicyResponse { epoch }))
    }

    async fn set_profile(
        &self,
        request: Request<pb::PlacementSetProfileRequest>,
    ) -> Result<Response<pb::PlacementSetProfileResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        valid_prefix(&req.prefix)?;
        // The profile decides how the domain's whole group closes (and whether its writes
        // wait): admin on every domain the group owns.
        let current = self.ctx.placement.current();
        let group = current
            .map
            .domains
            .iter()
            .find(|d| d.prefix == req.prefix)
            .map(|d| d.group);
        let mut scopes: Vec<&str> = current
            .map
            .domains
            .iter()
            .filter(|d| Some(d.group) == group)
            .map(|d| d.prefix.as_str())
            .collect();
        if scopes.is_empty() {
            scopes.push(&req.prefix);
        }
        let needs: Vec<(Access, &str)> = scopes.iter().map(|p| (Access::Admin, *p)).collect();
        self.gate.check(&meta, "placement set-profile", &needs)?;
        let profile = match req.profile.as_str() {
            "" => None,
            text => Some(ReadProfile::parse(text).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "profile: {text:?} is not a timestamp profile (local-writes, global-reads, or \
                     empty for the nodes' default)"
                ))
            })?),
        };
        if self.ctx.closed_reads.is_none() {
            return Err(Status::failed_precondition(
                "this cluster reads by sync ([timestamps] profile = \"sync\" on this node): a \
                 domain's timestamp profile needs closed timestamps on every node \
                 (docs/closed-timestamps.md); nothing changed",
            ));
        }
        let change = PlacementChange::SetProfile {
            prefix: req.prefix,
            profile,
            expected_epoch: (req.expected_epoch != 0).then_some(req.expected_epoch),
        };
        let epoch = self.change(change).await?;
        Ok(Response::new(pb::PlacementSetProfileResponse { epoch }))
    }
}
