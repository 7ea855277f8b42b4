//! `meridian.peer.v1.Forward`: writes other routers forward to this node because it leads (or
//! led, as far as they knew) the group that owns the key.

use crate::ctx::{LocalWrite, NodeCtx};
use crate::error::Error;
use meridian_consensus::admission::Admission;
use meridian_proto::peer::forward_server::Forward;
use meridian_proto::peer::{
    ClockReply, ClockRequest, LeaseRemainingReply, LeaseRemainingRequest, MoveCopyReply,
    MoveCopyRequest, ProposeReply, ProposeRequest,
};
use meridian_types::{Command, GroupId};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

#[derive(Clone)]
pub struct ForwardService {
    ctx: Arc<NodeCtx>,
    /// Who may forward (mTLS: a node of the topology).
    admission: Arc<Admission>,
}

impl ForwardService {
    pub fn new(ctx: Arc<NodeCtx>, admission: Arc<Admission>) -> Self {
        Self { ctx, admission }
    }

    fn not_leader(&self, group: GroupId, hint: Option<(u64, String)>) -> ProposeReply {
        let hint = hint.or_else(|| self.ctx.group(group).ok().and_then(|h| self.ctx.leader(&h)));
        let (leader, leader_address) = hint.unwrap_or_default();
        ProposeReply {
            not_leader: true,
            leader,
            leader_address,
            ..Default::default()
        }
    }
}

#[tonic::async_trait]
impl Forward for ForwardService {
    async fn propose(
        &self,
        request: Request<ProposeRequest>,
    ) -> Result<Response<ProposeReply>, Status> {
        self.admission.sender(&request, "forwarded write")?;
        let req = request.into_inner();
        let group = GroupId(req.group);
        crate::telemetry::record_group(group, None);
        let cmd: Command = bincode::deserialize(&req.command)
            .map_err(|e| Status::invalid_argument(format!("undecodable forwarded write: {e}")))?;
        // The sender routed it; check it against this node's placement all the same (a move's
        // step names its group itself).
        let owner = match &cmd {
            // A move's step, or a write handed over to its target: the state machine judges.
            Command::Move(_) | Command::AfterImport { .. } => group,
            _ => self.ctx.route_command(&cmd)?,
        };
        if owner != group {
            // The sender's map is older than ours (a domain moved): it waits for our epoch and
            // routes again.
            return Err(Error::WrongGroup {
                epoch: self.ctx.placement.epoch(),
                group: group.0,
            }
            .into());
        }
        let timeout = Duration::from_millis(self.ctx.limits.write_timeout_ms);
        let after = meridian_types::hlc::Timestamp::new(req.after_physical_us, req.after_logical);
        // Checked here too: the router's clock may run ahead of this one by the offset.
        self.ctx.check_session_timestamp(after)?;
        let res = tokio::time::timeout(timeout, self.ctx.write_local(group, cmd, after))
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "the write was not committed within {} ms; it may still be applied",
                    self.ctx.limits.write_timeout_ms
                ))
            })?;
        let reply = match res {
            Ok((revision, result)) => ProposeReply {
                revision,
                result: bincode::serialize(&result)
                    .map_err(|e| Status::internal(format!("encoding a write result: {e}")))?,
                ..Default::default()
            },
            Err(LocalWrite::NotLeader(hint)) => self.not_leader(group, hint),
            Err(LocalWrite::NoProposer) => self.not_leader(group, None),
            Err(LocalWrite::Failed(e)) => return Err(e.into()),
        };
        Ok(Response::new(reply))
    }

    async fn move_copy(
        &self,
        request: Request<MoveCopyRequest>,
    ) -> Result<Response<MoveCopyReply>, Status> {
        self.admission.sender(&request, "move copy")?;
        let reply = crate::moves::serve_copy(&self.ctx, request.into_inner()).await?;
        Ok(Response::new(reply))
    }

    async fn clock(&self, request: Request<ClockRequest>) -> Result<Response<ClockReply>, Status> {
        self.admission.sender(&request, "clock probe")?;
        Ok(Response::new(ClockReply {
            physical_us: self.ctx.timestamps.wall_us(),
        }))
    }

    async fn lease_remaining(
        &self,
        request: Request<LeaseRemainingRequest>,
    ) -> Result<Response<LeaseRemainingReply>, Status> {
        self.admission.sender(&request, "lease remaining")?;
        let req = request.into_inner();
        let now = self.ctx.clock.now_ms();
        let remaining = self
            .ctx
            .leader_leases
            .get(&GroupId(req.group))
            .and_then(|s| {
                s.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remaining(&req.ids, now)
            });
        Ok(Response::new(match remaining {
            Some(r) => LeaseRemainingReply {
                not_leader: false,
                remaining_ms: r
                    .into_iter()
                    .map(|v| v.and_then(|v| i64::try_from(v).ok()).unwrap_or(-1))
                    .collect(),
            },
            None => LeaseRemainingReply {
                not_leader: true,
                remaining_ms: Vec::new(),
            },
        }))
    }
}
