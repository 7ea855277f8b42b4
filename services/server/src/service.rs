//! The client API (`meridian.v1.Kv`): validates, routes to the group, and converts results.

use crate::convert;
use crate::ctx::NodeCtx;
use crate::error::Error;
use crate::gate::Gate;
use crate::residency::Caller;
use crate::router::Session;
use crate::watch::watch_stream;
use meridian_auth::Op as Access;
use meridian_proto::kv as pb;
use meridian_proto::kv::kv_client::KvClient;
use meridian_proto::kv::kv_server::Kv;
use meridian_types::{Command, CommandResult, GroupId, OpResult};
use openraft::async_runtime::watch::WatchReceiver;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

#[derive(Clone)]
pub struct KvService {
    ctx: Arc<NodeCtx>,
    /// Only for the status's keepalive counters.
    keepalives: Arc<crate::keepalive::KeepAlives>,
    gate: Arc<Gate>,
    /// Where served reads' latencies are counted (`/metrics`).
    metrics: Arc<crate::metrics::Metrics>,
}

impl KvService {
    pub fn new(
        ctx: Arc<NodeCtx>,
        keepalives: Arc<crate::keepalive::KeepAlives>,
        gate: Arc<Gate>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        Self {
            ctx,
            keepalives,
            gate,
            metrics,
        }
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

impl KvService {
    /// `ls` of a path above several domains (e.g. "/"): the children the path's own group holds
    /// (if a domain owns the path) plus the first segment of every domain nested below it, so
    /// that `ls /` shows where things live.
    async fn list_across_domains(
        &self,
        req: pb::ListRequest,
        path: &str,
        after: Option<String>,
        limit: usize,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let current = self.ctx.placement.current();
        let mut names: std::collections::BTreeSet<String> = current
            .lookup
            .domains()
            .iter()
            .filter_map(|d| d.prefix.strip_prefix(path))
            .filter_map(|rest| rest.split('/').next())
            .filter(|seg| !seg.is_empty())
            .map(str::to_string)
            .collect();
        let mut header = None;
        if let Some((group, _)) = current.lookup.group_of(path) {
            let mut r = self
                .ctx
                .prepare_read(group, req.read.as_ref(), req.session.as_ref())
                .await?;
            let ((children, _), rev) = {
                let s = r.handle.shared.read();
                r.at = r.timestamp(s.stamps);
                (s.children(path, None, usize::MAX), s.revision)
            };
            names.extend(children);
            header = Some(r.header(&self.ctx, rev));
        }
        let mut children: Vec<String> = names
            .into_iter()
            .filter(|n| after.as_deref().is_none_or(|a| n.as_str() > a))
            .collect();
        let more = children.len() > limit;
        children.truncate(limit);
        Ok(Response::new(pb::ListResponse {
            header,
            children,
            more,
        }))
    }
}

/// Where a write was answered.
enum Written<T> {
    /// By the router it was proxied to (residency): its answer, unchanged.
    Elsewhere(Response<T>),
    /// Here (committed through this router): the response header and the result.
    Here(Box<pb::ResponseHeader>, CommandResult),
}

/// Requests that carry a session.
trait WithSession {
    fn session(&self) -> Option<&pb::Session>;
}

macro_rules! with_session {
    ($($t:ty),*) => {$(
        impl WithSession for $t {
            fn session(&self) -> Option<&pb::Session> {
                self.session.as_ref()
            }
        }
    )*};
}
with_session!(pb::PutRequest, pb::DeleteRequest, pb::TxnRequest);

impl KvService {
    /// A write: converted by `to_cmd`, routed, proxied whole when residency says so (`call`
    /// sends it), otherwise committed through this router (proposed here or forwarded to the
    /// group's leader).
    async fn write<M, T, F, Fut>(
        &self,
        request: Request<M>,
        to_cmd: impl FnOnce(M) -> Result<Command, Error>,
        call: F,
    ) -> Result<Written<T>, Status>
    where
        M: Clone + WithSession,
        F: Fn(KvClient<tonic::transport::Channel>, Request<M>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<T>, Status>>,
    {
        let caller = Caller::of(&request).map_err(|m| self.gate.deny(m, "write"))?;
        let (meta, _, req) = request.into_parts();
        let session = Session::from_pb(req.session());
        let cmd = to_cmd(req.clone())?;
        self.gate.check(&meta, "write", &crate::gate::needs(&cmd))?;
        self.ctx.check_session_timestamp(session.timestamp)?;
        let mut group = self.ctx.route_command(&cmd)?;
        let deadline = self.deadline();
        // (source, move id) while the write is handed over to a move's target.
        let mut handed: Option<(GroupId, u64)> = None;
        loop {
            if let Some(answer) = self
                .ctx
                .answer_elsewhere(group, &cmd.scopes(), &caller, &req, &call)
                .await?
            {
                return Ok(Written::Elsewhere(answer));
            }
            let attempt = match handed {
                Some((_, id)) => Command::AfterImport {
                    id,
                    cmd: Box::new(cmd.clone()),
                },
                None => cmd.clone(),
            };
            match self.ctx.write_at(group, attempt, session.timestamp).await {
                Ok((h, rev, result, at)) => {
                    let mut header = self.ctx.header(&h, rev, &session.vector);
                    header.timestamp = at.and_then(crate::convert::timestamp_out);
                    return Ok(Written::Here(Box::new(header), result));
                }
                // The keys are moving, or moved, to another group: nothing changed. While the
                // move is under way the write goes to its target, which takes it once it holds
                // the import; otherwise (or when the target did not take it) route again once
                // this router's map shows where they went.
                Err(Error::WrongGroup { epoch, .. }) => {
                    let (from, epoch) = handed.take().unwrap_or((group, epoch));
                    match crate::moves::handover(&self.ctx, from, epoch, &cmd.scopes()) {
                        Some(to) if to != group => {
                            handed = Some((from, epoch));
                            group = to;
                        }
                        _ => {
                            group = self
                                .ctx
                                .reroute(from, epoch, deadline, |_| self.ctx.route_command(&cmd))
                                .await?;
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// How long a request may wait for a domain move to finish before the caller sees it.
    fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_millis(self.ctx.limits.write_timeout_ms)
    }

    /// A read of `scope` (a key, or every key under it with `prefix`) served by this router:
    /// from the local replica of its group, which must hold the domain's copy (`since`) and
    /// still own it. A subtree frozen for a move is read at the move's target once its replica
    /// holds the import (the target may take writes from then on); failing that, or once
    /// released, it is routed again by the map. `read` runs on the replica's state; `route`
    /// says where the scope lives by a map. A read served is counted by consistency in the
    /// node's read histograms.
    async fn read_here<R>(
        &self,
        scope: &str,
        prefix: bool,
        opts: (Option<&pb::ReadOptions>, Option<&pb::Session>),
        route: impl Fn(&meridian_placement::Placement) -> Result<GroupId, Error>,
        read: impl Fn(&meridian_storage::KvState) -> R,
        mut group: GroupId,
    ) -> Result<(R, crate::router::ReadyRead, u64), Error> {
        let start = std::time::Instant::now();
        let consistency = opts
            .0
            .map_or(pb::Consistency::Sequential, |o| o.consistency());
        let out: Result<(R, crate::router::ReadyRead, u64), Error> = async {
            let deadline = self.deadline();
            loop {
                let floor = self.ctx.domain_floor(group, scope);
                let mut r = self
                    .ctx
                    .prepare_read_from(group, opts.0, opts.1, floor)
                    .await?;
                let (out, (at, rev), frozen) = {
                    let s = r.handle.shared.read();
                    let at = if prefix {
                        (r.timestamp(s.stamps), s.revision)
                    } else {
                        r.key(&s, scope)
                    };
                    (read(&s), at, s.frozen_at(scope, prefix))
                };
                r.at = at;
                match frozen {
                    None => return Ok((out, r, rev)),
                    Some(epoch) => {
                        // Moving away: the target serves it once it holds the import (from then
                        // on it may take writes, so the source's frozen copy would be stale).
                        if let Some(to) =
                            crate::moves::handover(&self.ctx, group, epoch, &[(scope, prefix)])
                        {
                            let mut r = self.ctx.prepare_read_from(to, opts.0, opts.1, 0).await?;
                            if crate::moves::imported(&self.ctx, to, epoch, deadline)
                                .await
                                .is_some()
                            {
                                let (out, rev) = {
                                    let s = r.handle.shared.read();
                                    r.at = r.timestamp(s.stamps);
                                    (read(&s), s.revision)
                                };
                                return Ok((out, r, rev));
                            }
                        }
                        group = self.ctx.reroute(group, epoch, deadline, &route).await?;
                        // The new owner may be served elsewhere (residency); the caller routes
                        // such a request from the start.
                        if !matches!(
                            self.ctx.residency(group, &[(scope, prefix)], None)?,
                            crate::residency::Route::Local
                        ) {
                            return Err(Error::WrongGroup {
                                epoch,
                                group: group.0,
                            });
                        }
                    }
                }
            }
        }
        .await;
        if out.is_ok() {
            self.metrics.read(consistency).observe(start.elapsed());
        }
        out
    }
}

impl KvService {
    /// Every child of the request's path, as this router or the one it proxies to sees them.
    async fn list_all(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let caller = Caller::of(&request).map_err(|m| self.gate.deny(m, "list"))?;
        let req = request.into_inner();
        let path = convert::prefix(&req.path)?;
        let after = convert::after(&req.after)?;
        let limit = self.limit(req.limit);
        if self
            .ctx
            .placement
            .current()
            .lookup
            .groups_under(&path)
            .len()
            > 1
        {
            return self.list_across_domains(req, &path, after, limit).await;
        }
        let group = self.ctx.route_prefix(&path)?;
        if let Some(answer) = self
            .ctx
            .answer_elsewhere(
                group,
                &[(&path, true)],
                &caller,
                &req,
                |mut c, r| async move { c.list(r).await },
            )
            .await?
        {
            return Ok(answer);
        }
        let ((children, more), r, rev) = self
            .read_here(
                &path,
                true,
                (req.read.as_ref(), req.session.as_ref()),
                |l| self.ctx.prefix_in(l, &path),
                |s| s.children(&path, after.as_deref(), limit),
                group,
            )
            .await?;
        Ok(Response::new(pb::ListResponse {
            header: Some(r.header(&self.ctx, rev)),
            children,
            more,
        }))
    }
}

fn single(result: CommandResult) -> Result<OpResult, Status> {
    match result {
        CommandResult::Op(r) => Ok(r),
        CommandResult::Rejected(r) => Err(Error::from(r).into()),
        other => Err(Error::Internal(format!("unexpected result {other:?}")).into()),
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let (header, result) = match self
            .write(
                request,
                |r| Ok(Command::Put(convert::put(r)?)),
                |mut c, r| async move { c.put(r).await },
            )
            .await?
        {
            Written::Elsewhere(answer) => return Ok(answer),
            Written::Here(header, result) => (*header, result),
        };
        match convert::op_result_out(single(result)?, &header).result {
            Some(pb::txn_op_result::Result::Put(p)) => Ok(Response::new(p)),
            _ => Err(Error::Internal("put answered with another result".into()).into()),
        }
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let caller = Caller::of(&request).map_err(|m| self.gate.deny(m, "get"))?;
        let (meta, _, req) = request.into_parts();
        let key = convert::key(&req.key)?;
        self.gate.check(&meta, "get", &[(Access::Read, &key)])?;
        let group = self.ctx.route_key(&key)?;
        if let Some(answer) = self
            .ctx
            .answer_elsewhere(
                group,
                &[(&key, false)],
                &caller,
                &req,
                |mut c, r| async move { c.get(r).await },
            )
            .await?
        {
            return Ok(answer);
        }
        let (kv, r, rev) = self
            .read_here(
                &key,
                false,
                (req.read.as_ref(), req.session.as_ref()),
                |l| self.ctx.key_in(l, &key),
                |s| s.get(&key).cloned(),
                group,
            )
            .await?;
        Ok(Response::new(pb::GetResponse {
            header: Some(r.header(&self.ctx, rev)),
            kv: kv.map(convert::kv_out),
        }))
    }

    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let caller = Caller::of(&request).map_err(|m| self.gate.deny(m, "range"))?;
        let (meta, _, req) = request.into_parts();
        let prefix = convert::prefix(&req.prefix)?;
        self.gate
            .check(&meta, "range", &[(Access::Read, &prefix)])?;
        let after = convert::after(&req.after)?;
        let limit = self.limit(req.limit);
        let group = self.ctx.route_prefix(&prefix)?;
        if let Some(answer) = self
            .ctx
            .answer_elsewhere(
                group,
                &[(&prefix, true)],
                &caller,
                &req,
                |mut c, r| async move { c.range(r).await },
            )
            .await?
        {
            return Ok(answer);
        }
        let ((kvs, more), r, rev) = self
            .read_here(
                &prefix,
                true,
                (req.read.as_ref(), req.session.as_ref()),
                |l| self.ctx.prefix_in(l, &prefix),
                |s| s.range(&prefix, after.as_deref(), limit),
                group,
            )
            .await?;
        let out = if req.keys_only {
            kvs.into_iter().map(convert::kv_keys_only).collect()
        } else {
            kvs.into_iter().map(convert::kv_out).collect()
        };
        Ok(Response::new(pb::RangeResponse {
            header: Some(r.header(&self.ctx, rev)),
            kvs: out,
            more,
        }))
    }

    /// `ls`: what the token may see — every child when it may read the whole path, otherwise
    /// only the children on the way to something it may read.
    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let token = self.gate.token(request.metadata(), "ls")?;
        let path = convert::prefix(&request.get_ref().path)?;
        let now = std::time::SystemTime::now();
        if token
            .as_deref()
            .is_some_and(|t| !t.reaches(Access::Read, &path, now))
        {
            return Err(self.gate.refuse_op(Access::Read, &path, "ls"));
        }
        let mut answer = self.list_all(request).await?;
        if let Some(t) = token.as_deref() {
            if t.authorize(Access::Read, &path, now).is_err() {
                answer
                    .get_mut()
                    .children
                    .retain(|c| t.reaches(Access::Read, &format!("{path}{c}"), now));
            }
        }
        Ok(answer)
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let (header, result) = match self
            .write(
                request,
                |r| Ok(Command::Delete(convert::delete(r)?)),
                |mut c, r| async move { c.delete(r).await },
            )
            .await?
        {
            Written::Elsewhere(answer) => return Ok(answer),
            Written::Here(header, result) => (*header, result),
        };
        match convert::op_result_out(single(result)?, &header).result {
            Some(pb::txn_op_result::Result::Delete(d)) => Ok(Response::new(d)),
            _ => Err(Error::Internal("delete answered with another result".into()).into()),
        }
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let (header, result) = match self
            .write(
                request,
                convert::txn,
                |mut c, r| async move { c.txn(r).await },
            )
            .await?
        {
            Written::Elsewhere(answer) => return Ok(answer),
            Written::Here(header, result) => (*header, result),
        };
        match result {
            CommandResult::Txn { succeeded, results } => Ok(Response::new(pb::TxnResponse {
                header: Some(header.clone()),
                succeeded,
                results: results
                    .into_iter()
                    .map(|r| convert::op_result_out(r, &header))
                    .collect(),
            })),
            CommandResult::Rejected(r) => Err(Error::from(r).into()),
            other => Err(Error::Internal(format!("txn answered {other:?}")).into()),
        }
    }

    type WatchStream = crate::watch::WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let caller = Caller::of(&request).map_err(|m| self.gate.deny(m, "watch"))?;
        let (meta, _, req) = request.into_parts();
        let key = convert::watched(&req.key, req.prefix)?;
        self.gate.check(&meta, "watch", &[(Access::Watch, &key)])?;
        let stream = watch_stream(self.ctx.clone(), req, &caller).await?;
        Ok(Response::new(stream))
    }

    type WatchStreamStream = crate::watch_many::WatchManyStream;

    async fn watch_stream(
        &self,
        request: Request<tonic::Streaming<pb::WatchStreamRequest>>,
    ) -> Result<Response<Self::WatchStreamStream>, Status> {
        let caller = Caller::of(&request).map_err(|m| self.gate.deny(m, "watch stream"))?;
        let (meta, _, requests) = request.into_parts();
        // A valid token opens the stream; each watch is then checked on its own key.
        self.gate.token(&meta, "watch")?;
        Ok(Response::new(crate::watch_many::serve(
            self.ctx.clone(),
            self.gate.clone(),
            meta,
            caller,
            requests,
        )))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        // Any valid token may see the cluster's shape (no keys, no values).
        self.gate.token(request.metadata(), "status")?;
        // The other nodes are asked with the caller's token.
        let token = crate::gate::carried(request.metadata());
        let mut me = node_status(&self.ctx, &self.keepalives, &self.gate);
        if request.into_inner().cluster {
            let others: Vec<_> = self
                .ctx
                .topology
                .nodes
                .iter()
                .filter(|n| n.id != self.ctx.node_id)
                .map(|n| {
                    let ctx = self.ctx.clone();
                    let addr = n.address.clone();
                    let (id, region) = (n.id, n.region.clone());
                    let token = token.clone();
                    async move {
                        let res = async {
                            let channel = ctx.pool.channel(&addr).map_err(|e| e.to_string())?;
                            let mut c = KvClient::new(channel);
                            let mut req = Request::new(pb::StatusRequest { cluster: false });
                            req.set_timeout(STATUS_PEER_TIMEOUT);
                            if let Some(t) = token {
                                req.metadata_mut().insert(meridian_proto::TOKEN, t);
                            }
                            tokio::time::timeout(STATUS_PEER_TIMEOUT, c.status(req))
                                .await
                                .map_err(|_| "no answer in time".to_string())?
                                .map(|r| r.into_inner())
                                .map_err(|s| s.message().to_string())
                        }
                        .await;
                        res.map_err(|e| format!("node {id} ({region}) at {addr}: {e}"))
                    }
                })
                .collect();
            for res in futures::future::join_all(others).await {
                match res {
                    Ok(s) => me.nodes.push(s),
                    Err(e) => me.unreachable.push(e),
                }
            }
        }
        Ok(Response::new(me))
    }
}

/// Longest a cluster status waits for each other node.
const STATUS_PEER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// This node's status, as its `Status` RPC answers it without `cluster` (and `/metrics` shows).
pub(crate) fn node_status(
    ctx: &NodeCtx,
    keepalives: &crate::keepalive::KeepAlives,
    gate: &crate::gate::Gate,
) -> pb::StatusResponse {
    let groups = ctx
        .host
        .groups()
        .into_iter()
        .map(|(g, h)| group_status(ctx, g, &h))
        .collect();
    pb::StatusResponse {
        node: ctx.node_id,
        address: ctx.address.clone(),
        region: ctx.region.clone(),
        groups,
        version: env!("CARGO_PKG_VERSION").into(),
        nodes: Vec::new(),
        unreachable: Vec::new(),
        forwarded_writes: ctx
            .forwarded_writes
            .load(std::sync::atomic::Ordering::Relaxed),
        keepalive_requests: keepalives
            .requests
            .load(std::sync::atomic::Ordering::Relaxed),
        keepalive_refreshes: keepalives
            .refreshes
            .load(std::sync::atomic::Ordering::Relaxed),
        auth_refused: gate.refused(),
    }
}

fn group_status(
    ctx: &NodeCtx,
    group: GroupId,
    h: &meridian_consensus::GroupHandle,
) -> pb::GroupStatus {
    let m = h.raft.metrics().borrow_watched().clone();
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
            region: ctx
                .topology
                .node(*id)
                .map(|n| n.region.clone())
                .unwrap_or_default(),
            lag_entries: if m.state == openraft::ServerState::Leader {
                m.last_log_index.unwrap_or(0).saturating_sub(matched(id))
            } else {
                0
            },
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
    let (syncs_sent, synced_reads) = ctx.syncers.counters(group);
    let learners: std::collections::BTreeSet<u64> = membership
        .nodes()
        .map(|(id, _)| *id)
        .filter(|id| !voters.contains(id))
        .collect();
    let drift = ctx.topology.drift(group, &voters, &learners);
    let role = if voters.contains(&ctx.node_id) {
        "voter"
    } else {
        "learner"
    };
    pb::GroupStatus {
        group: group.0,
        name: ctx
            .topology
            .group(group)
            .map(|g| g.name.clone())
            .unwrap_or_default(),
        role: role.into(),
        lag_ms: h.lag_ms().unwrap_or(u64::MAX),
        syncs_sent,
        synced_reads,
        leader: m.current_leader.unwrap_or(0),
        leader_address,
        term: m.current_term,
        last_log_index: m.last_log_index.unwrap_or(0),
        committed,
        applied: m.last_applied.map_or(0, |l| l.index),
        state: format!("{:?}", m.state),
        members,
        compacted_revision: h.shared.compacted(),
        drift,
    }
}
