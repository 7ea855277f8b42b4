//! The `Maintenance` service (docs/operations.md, "Backup and restore"): one group's state at a
//! linearizable point, streamed in 1 MiB parts, for `meridian snapshot save`; and membership
//! changes, which it hands to `membership.rs`. One entry: [`MaintenanceService`].

use crate::ctx::NodeCtx;
use crate::error::Error;
use crate::gate::Gate;
use futures::Stream;
use meridian_auth::Op as Access;
use meridian_proto::kv as pb;
use meridian_proto::kv::maintenance_server::Maintenance;
use meridian_types::GroupId;
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Bytes of a copy per message.
pub const CHUNK_BYTES: usize = 1024 * 1024;

pub struct MaintenanceService {
    ctx: Arc<NodeCtx>,
    gate: Arc<Gate>,
}

impl MaintenanceService {
    pub fn new(ctx: Arc<NodeCtx>, gate: Arc<Gate>) -> Self {
        Self { ctx, gate }
    }
}

type Chunks = Pin<Box<dyn Stream<Item = Result<pb::GroupSnapshotChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    type GroupSnapshotStream = Chunks;

    /// Membership changes live in `membership.rs`; the service only checks the token.
    async fn change_membership(
        &self,
        request: Request<pb::ChangeMembershipRequest>,
    ) -> Result<Response<pb::ChangeMembershipReply>, Status> {
        let (meta, _, req) = request.into_parts();
        self.gate
            .check(&meta, "membership change", &[(Access::Admin, "/")])?;
        Ok(Response::new(
            crate::membership::change(&self.ctx, req).await?,
        ))
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderReply>, Status> {
        let (meta, _, req) = request.into_parts();
        self.gate
            .check(&meta, "leader transfer", &[(Access::Admin, "/")])?;
        Ok(Response::new(
            crate::membership::transfer(&self.ctx, req).await?,
        ))
    }

    async fn group_snapshot(
        &self,
        request: Request<pb::GroupSnapshotRequest>,
    ) -> Result<Response<Chunks>, Status> {
        let (meta, _, req) = request.into_parts();
        self.gate
            .check(&meta, "snapshot", &[(Access::Admin, "/")])?;
        let group = GroupId(req.group);
        let Some(spec) = self.ctx.topology.group(group) else {
            return Err(Error::invalid(
                "unknown_group",
                "group",
                format!("no group {} in the topology", req.group),
            )
            .into());
        };
        // A linearizable point: the replica has applied everything the leader had committed
        // when the call arrived.
        let linearizable = pb::ReadOptions {
            consistency: pb::Consistency::Linearizable as i32,
            ..Default::default()
        };
        self.ctx
            .prepare_read(group, Some(&linearizable), None)
            .await?;
        let h = self.ctx.group(group)?;
        // Copied under the read lock (with the applied index), encoded outside it.
        let (state, applied) = {
            let guard = h.shared.read();
            (guard.clone(), h.shared.applied())
        };
        let (copy, revision, keys, leases) =
            tokio::task::spawn_blocking(move || meridian_storage::backup::encode(&state, applied))
                .await
                .map_err(|e| Error::Internal(format!("encoding the copy: {e}")))?
                .map_err(|e| Error::Internal(format!("encoding the copy: {e}")))?;
        let total = copy.len() as u64;
        let (name, topology) = (spec.name.clone(), self.ctx.topology.name.clone());
        let mut parts: Vec<Vec<u8>> = copy.chunks(CHUNK_BYTES).map(<[u8]>::to_vec).collect();
        if parts.is_empty() {
            parts.push(Vec::new());
        }
        let chunks = parts.into_iter().enumerate().map(move |(i, data)| {
            Ok(pb::GroupSnapshotChunk {
                group: group.0,
                name: if i == 0 { name.clone() } else { String::new() },
                revision,
                total_bytes: total,
                keys,
                leases,
                data,
                topology: if i == 0 {
                    topology.clone()
                } else {
                    String::new()
                },
            })
        });
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }
}
