//! The client API (`meridian.v1.Kv`): validates, routes to the group, and converts results.

use crate::convert;
use crate::ctx::{NodeCtx, ReadLevel};
use crate::error::Error;
use crate::watch::watch_stream;
use meridian_proto::kv as pb;
use meridian_proto::kv::kv_server::Kv;
use meridian_types::{Command, CommandResult, OpResult};
use std::sync::Arc;
use tonic::{Request, Response, Status};

#[derive(Clone)]
pub struct KvService {
    ctx: Arc<NodeCtx>,
}

impl KvService {
    pub fn new(ctx: Arc<NodeCtx>) -> Self {
        Self { ctx }
    }

    fn limit(&self, requested: u32) -> usize {
        let max = self.ctx.limits.range_keys_max;
        (if requested == 0 {
            max
        } else {
            requested.min(max)
        }) as usize
    }
}

fn single(result: CommandResult) -> Result<OpResult, Status> {
    match result {
        CommandResult::Op(r) => Ok(r),
        other => Err(Error::Internal(format!("unexpected result {other:?}")).into()),
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let op = convert::put(request.into_inner())?;
        let (h, rev, result) = self
            .ctx
            .write(self.ctx.default_group, Command::Put(op))
            .await?;
        let header = self.ctx.header(&h, rev);
        match convert::op_result_out(single(result)?, &header).result {
            Some(pb::txn_op_result::Result::Put(p)) => Ok(Response::new(p)),
            _ => Err(Error::Internal("put answered with another result".into()).into()),
        }
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let req = request.into_inner();
        let key = convert::key(&req.key)?;
        let level = ReadLevel::from_pb(req.read.as_ref())?;
        let h = self.ctx.prepare_read(self.ctx.default_group, level).await?;
        let (kv, rev) = {
            let s = h.shared.read();
            (s.get(&key).cloned(), s.revision)
        };
        Ok(Response::new(pb::GetResponse {
            header: Some(self.ctx.header(&h, rev)),
            kv: kv.map(convert::kv_out),
        }))
    }

    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let req = request.into_inner();
        let prefix = convert::prefix(&req.prefix)?;
        let after = convert::after(&req.after)?;
        let level = ReadLevel::from_pb(req.read.as_ref())?;
        let limit = self.limit(req.limit);
        let h = self.ctx.prepare_read(self.ctx.default_group, level).await?;
        let ((kvs, more), rev) = {
            let s = h.shared.read();
            (s.range(&prefix, after.as_deref(), limit), s.revision)
        };
        let out = if req.keys_only {
            kvs.into_iter().map(convert::kv_keys_only).collect()
        } else {
            kvs.into_iter().map(convert::kv_out).collect()
        };
        Ok(Response::new(pb::RangeResponse {
            header: Some(self.ctx.header(&h, rev)),
            kvs: out,
            more,
        }))
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let req = request.into_inner();
        let path = convert::prefix(&req.path)?;
        let after = convert::after(&req.after)?;
        let level = ReadLevel::from_pb(req.read.as_ref())?;
        let limit = self.limit(req.limit);
        let h = self.ctx.prepare_read(self.ctx.default_group, level).await?;
        let ((children, more), rev) = {
            let s = h.shared.read();
            (s.children(&path, after.as_deref(), limit), s.revision)
        };
        Ok(Response::new(pb::ListResponse {
            header: Some(self.ctx.header(&h, rev)),
            children,
            more,
        }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let op = convert::delete(request.into_inner())?;
        let (h, rev, result) = self
            .ctx
            .write(self.ctx.default_group, Command::Delete(op))
            .await?;
        let header = self.ctx.header(&h, rev);
        match convert::op_result_out(single(result)?, &header).result {
            Some(pb::txn_op_result::Result::Delete(d)) => Ok(Response::new(d)),
            _ => Err(Error::Internal("delete answered with another result".into()).into()),
        }
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let cmd = convert::txn(request.into_inner())?;
        let (h, rev, result) = self.ctx.write(self.ctx.default_group, cmd).await?;
        let header = self.ctx.header(&h, rev);
        match result {
            CommandResult::Txn { succeeded, results } => Ok(Response::new(pb::TxnResponse {
                header: Some(header),
                succeeded,
                results: results
                    .into_iter()
                    .map(|r| convert::op_result_out(r, &header))
                    .collect(),
            })),
            other => Err(Error::Internal(format!("txn answered {other:?}")).into()),
        }
    }

    type WatchStream = crate::watch::WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let stream = watch_stream(self.ctx.clone(), request.into_inner()).await?;
        Ok(Response::new(stream))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let groups = self
            .ctx
            .host
            .groups()
            .into_iter()
            .map(|(g, h)| group_status(&self.ctx, g.0, &h))
            .collect();
        Ok(Response::new(pb::StatusResponse {
            node: self.ctx.node_id,
            address: self.ctx.address.clone(),
            region: self.ctx.region.clone(),
            groups,
            version: env!("CARGO_PKG_VERSION").into(),
        }))
    }
}

fn group_status(ctx: &NodeCtx, group: u64, h: &meridian_consensus::GroupHandle) -> pb::GroupStatus {
    let m = h.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
    let matched = |id: &u64| -> u64 {
        m.replication
            .as_ref()
            .and_then(|r| r.get(id).cloned().flatten())
            .map_or(0, |l| l.index)
    };
    let members: Vec<pb::MemberStatus> = membership
        .nodes()
        .map(|(id, node)| pb::MemberStatus {
            node: *id,
            address: node.addr.clone(),
            voter: voters.contains(id),
            matched: matched(id),
        })
        .collect();
    // The leader knows the commit index as the highest index a majority of voters matched.
    let committed = if m.state == openraft::ServerState::Leader {
        let mut idx: Vec<u64> = voters.iter().map(matched).collect();
        idx.sort_unstable_by(|a, b| b.cmp(a));
        idx.get(voters.len() / 2).copied().unwrap_or(0)
    } else {
        0
    };
    let leader_address = ctx.leader(h).map(|(_, a)| a).unwrap_or_default();
    pb::GroupStatus {
        group,
        leader: m.current_leader.unwrap_or(0),
        leader_address,
        term: m.current_term,
        last_log_index: m.last_log_index.unwrap_or(0),
        committed,
        applied: m.last_applied.map_or(0, |l| l.index),
        state: format!("{:?}", m.state),
        members,
        compacted_revision: h.shared.compacted(),
    }
}
