//! `meridian.v1.Cluster`: operating the groups. `TransferLeader` (`admin` on `/`) hands a
//! group's leadership to another voter through openraft's leadership transfer: any node that
//! hosts the group takes the request to the group's leader (once: a node that is asked on
//! another's behalf and does not lead says so), and the answer comes once the new leader leads.

use crate::ctx::NodeCtx;
use crate::error::Error;
use crate::gate::Gate;
use meridian_auth::Op as Access;
use meridian_proto::kv as pb;
use meridian_proto::kv::cluster_client::ClusterClient;
use meridian_proto::kv::cluster_server::Cluster;
use meridian_types::GroupId;
use openraft::async_runtime::WatchReceiver;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// Longest a transfer is waited for (the old leader stops taking writes meanwhile; the new one
/// needs an election round).
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(10);

/// Marks a transfer request one node took to the group's leader on a client's behalf.
const FORWARDED: &str = "meridian-forwarded";

pub struct ClusterService {
    ctx: Arc<NodeCtx>,
    gate: Arc<Gate>,
}

impl ClusterService {
    pub fn new(ctx: Arc<NodeCtx>, gate: Arc<Gate>) -> Self {
        Self { ctx, gate }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        self.gate
            .check(&meta, "leader transfer", &[(Access::Admin, "/")])?;
        let group = GroupId(req.group);
        let Some(h) = self.ctx.host.get(group) else {
            let hosted: Vec<u64> = self.ctx.host.groups().iter().map(|(g, _)| g.0).collect();
            return Err(Error::invalid(
                "unknown_group",
                "group",
                format!(
                    "group {} is not hosted on this node (it hosts {hosted:?})",
                    req.group
                ),
            )
            .into());
        };
        let m = h.raft.metrics().borrow_watched().clone();
        let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
        if !voters.contains(&req.to) {
            return Err(Error::invalid(
                "not_a_voter",
                "to",
                format!(
                    "node {} is not a voter of group {} (voters: {voters:?})",
                    req.to, req.group
                ),
            )
            .into());
        }
        let done = |term| {
            Ok(Response::new(pb::TransferLeaderResponse {
                leader: req.to,
                term,
            }))
        };
        if m.current_leader == Some(req.to) {
            return done(m.current_term);
        }
        let Some(leader) = m.current_leader else {
            return Err(Error::Unavailable(format!(
                "group {} has no leader this node knows of; try again",
                req.group
            ))
            .into());
        };
        if leader != self.ctx.node_id {
            if meta.get(FORWARDED).is_some() {
                return Err(Error::Unavailable(format!(
                    "node {} does not lead group {} (node {leader} does, as far as it knows); \
                     try again",
                    self.ctx.node_id, req.group
                ))
                .into());
            }
            let addr = m
                .membership_config
                .membership()
                .get_node(&leader)
                .map(|n| n.addr.clone())
                .ok_or_else(|| Error::Unavailable(format!("no address for node {leader}")))?;
            let channel = self.ctx.pool.channel(&addr).map_err(|e| {
                Error::Unavailable(format!("cannot reach group {}'s leader: {e}", req.group))
            })?;
            let mut ask = Request::new(req);
            ask.set_timeout(TRANSFER_TIMEOUT + Duration::from_secs(2));
            if let Some(t) = crate::gate::carried(&meta) {
                ask.metadata_mut().insert(meridian_proto::TOKEN, t);
            }
            ask.metadata_mut()
                .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
            return ClusterClient::new(channel).transfer_leader(ask).await;
        }
        h.raft
            .trigger()
            .transfer_leader(req.to)
            .await
            .map_err(|e| Error::Internal(format!("group {}: {e}", req.group)))?;
        let to = req.to;
        match h
            .raft
            .wait(Some(TRANSFER_TIMEOUT))
            .metrics(|m| m.current_leader == Some(to), "leadership transferred")
            .await
        {
            Ok(m) => done(m.current_term),
            Err(_) => {
                let now = h.raft.metrics().borrow_watched().current_leader;
                Err(Error::Deadline(format!(
                    "group {}: node {to} did not take the lead within {} s (the leader is now {})",
                    req.group,
                    TRANSFER_TIMEOUT.as_secs(),
                    now.map_or("unknown".to_string(), |n| format!("node {n}"))
                ))
                .into())
            }
        }
    }
}
