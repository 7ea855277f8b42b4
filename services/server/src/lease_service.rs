//! `meridian.v1.Lease` on the [`LockService`]: grant, aggregated keepalive, revoke,
//! time-to-live (asked of the leader's clock) and list. Every rule is checked before anything
//! is proposed; the state machine checks them again.

use crate::error::{Error, Result};
use crate::gate::Gate;
use crate::keepalive;
use crate::lock_service::{linearizable, LockService};
use meridian_auth::Op as Access;
use meridian_proto::kv as pb;
use meridian_proto::kv::lease_server::Lease;
use meridian_proto::peer::forward_client::ForwardClient;
use meridian_proto::peer::LeaseRemainingRequest;
use meridian_proto::PEER_MESSAGE_BYTES;
use meridian_storage::leases::KeyRef;
use meridian_types::{lease_group, validate_prefix, GroupId, LeaseCommand, LeaseResult};
use std::collections::BTreeMap;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// Most lease ids one keepalive request may carry.
const KEEPALIVE_IDS_MAX: usize = 10_000;
/// Longest the leader is asked for a lease's remaining time.
const REMAINING_WAIT: Duration = Duration::from_secs(2);

impl LockService {
    /// The lease's group, if the id names one of this cluster's groups.
    fn lease_group(&self, id: u64) -> Result<GroupId> {
        let g = GroupId(lease_group(id));
        if id == 0 || self.ctx.topology.group(g).is_none() {
            return Err(Error::Rejected {
                rule: "lease_not_found".into(),
                message: format!(
                    "lease {id} does not exist: its id names no group of this cluster"
                ),
            });
        }
        Ok(g)
    }

    /// What is left of `ids` on the leader's clock: asked locally when this node leads,
    /// of the leader otherwise; `None` each when it cannot be asked.
    async fn remaining(&self, group: GroupId, ids: &[u64]) -> Vec<Option<u64>> {
        if let Some(state) = self.ctx.leader_leases.get(&group) {
            let local = state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remaining(ids, self.ctx.clock.now_ms());
            if let Some(r) = local {
                return r;
            }
        }
        let unknown = vec![None; ids.len()];
        let Ok(h) = self.ctx.group(group) else {
            return unknown;
        };
        let Some((leader, addr)) = self.ctx.leader(&h) else {
            return unknown;
        };
        if leader == self.ctx.node_id {
            return unknown;
        }
        let Ok(channel) = self.ctx.pool.channel(&addr) else {
            return unknown;
        };
        let mut client = ForwardClient::new(channel).max_decoding_message_size(PEER_MESSAGE_BYTES);
        let mut req = Request::new(LeaseRemainingRequest {
            group: group.0,
            ids: ids.to_vec(),
        });
        req.set_timeout(REMAINING_WAIT);
        match tokio::time::timeout(REMAINING_WAIT, client.lease_remaining(req)).await {
            Ok(Ok(r)) if !r.get_ref().not_leader => r
                .into_inner()
                .remaining_ms
                .into_iter()
                .map(|v| u64::try_from(v).ok())
                .collect(),
            _ => unknown,
        }
    }
}

#[tonic::async_trait]
impl Lease for LockService {
    async fn grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> std::result::Result<Response<pb::LeaseGrantResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        validate_prefix(&req.path).map_err(Error::from)?;
        self.gate
            .check(&meta, "lease grant", &[(Access::Lease, &req.path)])?;
        let l = &self.ctx.limits;
        if req.ttl_ms < l.lease_ttl_ms_min || req.ttl_ms > l.lease_ttl_ms_max {
            return Err(Error::invalid(
                "lease_ttl",
                "ttl_ms",
                format!(
                    "a lease TTL must be between {} ms and {} ms; {} ms was asked",
                    l.lease_ttl_ms_min, l.lease_ttl_ms_max, req.ttl_ms
                ),
            )
            .into());
        }
        let group = self.ctx.route_prefix(&req.path)?;
        self.ctx.serve_here(group, &req.path, true)?;
        if let Some(id) = req.reuse.iter().find(|id| lease_group(**id) == group.0) {
            let h = self.ctx.group(group)?;
            let rev = h.shared.applied();
            return Ok(Response::new(pb::LeaseGrantResponse {
                header: self.header(&h, rev),
                id: *id,
                ttl_ms: req.ttl_ms,
            }));
        }
        let (h, rev, res) = self
            .propose(LeaseCommand::Grant {
                group: group.0,
                ttl_ms: req.ttl_ms,
            })
            .await?;
        match res {
            LeaseResult::Granted { id, ttl_ms } => Ok(Response::new(pb::LeaseGrantResponse {
                header: self.header(&h, rev),
                id,
                ttl_ms,
            })),
            other => Err(Error::Internal(format!("a grant answered {other:?}")).into()),
        }
    }

    async fn keep_alive(
        &self,
        request: Request<pb::LeaseKeepAliveRequest>,
    ) -> std::result::Result<Response<pb::LeaseKeepAliveResponse>, Status> {
        // Keeping a lease alive needs only a valid token (as in etcd): it changes no key.
        self.gate.token(request.metadata(), "lease keepalive")?;
        let ids = request.into_inner().ids;
        if ids.is_empty() || ids.len() > KEEPALIVE_IDS_MAX {
            return Err(Error::invalid(
                "keepalive_ids",
                "ids",
                format!(
                    "a keepalive carries 1 to {KEEPALIVE_IDS_MAX} lease ids; {} were given",
                    ids.len()
                ),
            )
            .into());
        }
        let mut by_group: BTreeMap<GroupId, Vec<u64>> = BTreeMap::new();
        let mut results = Vec::new();
        for id in ids {
            match self.lease_group(id) {
                Ok(g) => by_group.entry(g).or_default().push(id),
                Err(_) => results.push(pb::LeaseKeepAliveResult {
                    id,
                    found: false,
                    ttl_ms: 0,
                }),
            }
        }
        // Each answer covers a whole aggregated refresh: report only this request's leases.
        let waits = by_group.into_iter().map(|(g, ids)| async move {
            let answers =
                keepalive::keep_alive(&self.ctx, &self.keepalives, g, ids.clone()).await?;
            Ok::<_, Error>(
                ids.into_iter()
                    .map(|id| {
                        let ttl = answers.get(&id).copied().flatten();
                        pb::LeaseKeepAliveResult {
                            id,
                            found: ttl.is_some(),
                            ttl_ms: ttl.unwrap_or(0),
                        }
                    })
                    .collect::<Vec<_>>(),
            )
        });
        for answers in futures::future::join_all(waits).await {
            results.extend(answers?);
        }
        Ok(Response::new(pb::LeaseKeepAliveResponse { results }))
    }

    async fn revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> std::result::Result<Response<pb::LeaseRevokeResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let id = req.id;
        let group = self.lease_group(id)?;
        // Revoking deletes the lease's keys: the token must allow `lease` on every one of them
        // (as etcd asks write permission on a lease's keys), read linearizably here.
        if let Some(token) = self.gate.token(&meta, "lease revoke")? {
            let ready = self
                .ctx
                .prepare_read(group, Some(&linearizable()), None)
                .await?;
            let keys: Vec<String> = ready
                .handle
                .shared
                .read()
                .leases
                .get(&id)
                .map(|l| l.keys.iter().map(KeyRef::to_key).collect())
                .unwrap_or_default();
            let now = std::time::SystemTime::now();
            if keys
                .iter()
                .any(|k| token.authorize(Access::Lease, k, now).is_err())
            {
                return Err(self.gate.deny(
                    format!("the token does not allow revoking lease {id}: it carries keys outside what the token allows"),
                    "lease revoke",
                ));
            }
        }
        let (h, rev, res) = self.propose(LeaseCommand::Revoke { id }).await?;
        match res {
            LeaseResult::Revoked { keys_deleted } => Ok(Response::new(pb::LeaseRevokeResponse {
                header: self.header(&h, rev),
                keys_deleted,
            })),
            other => Err(Error::Internal(format!("a revoke answered {other:?}")).into()),
        }
    }

    async fn time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> std::result::Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let token = self.gate.token(request.metadata(), "lease ttl")?;
        let req = request.into_inner();
        let group = self.lease_group(req.id)?;
        let ready = self
            .ctx
            .prepare_read(group, Some(&linearizable()), None)
            .await?;
        let (record, keys, revision) = {
            let st = ready.handle.shared.read();
            let Some(l) = st.leases.get(&req.id) else {
                return Err(Error::Rejected {
                    rule: "lease_not_found".into(),
                    message: format!(
                        "lease {} does not exist (it expired, was revoked, or was never granted)",
                        req.id
                    ),
                }
                .into());
            };
            let keys: Vec<String> = if req.keys {
                // Only the keys the token may read.
                l.keys
                    .iter()
                    .map(KeyRef::to_key)
                    .filter(|k| Gate::allows(token.as_deref(), Access::Read, k))
                    .collect()
            } else {
                Vec::new()
            };
            (l.record.clone(), keys, st.revision)
        };
        let remaining = self.remaining(group, &[req.id]).await;
        Ok(Response::new(pb::LeaseTimeToLiveResponse {
            header: Some(ready.header(&self.ctx, revision)),
            id: req.id,
            ttl_ms: record.ttl_ms,
            remaining_ms: remaining
                .first()
                .copied()
                .flatten()
                .and_then(|v| i64::try_from(v).ok())
                .unwrap_or(-1),
            idle_ms: record.idle_ms,
            keys,
        }))
    }

    async fn list(
        &self,
        request: Request<pb::LeaseListRequest>,
    ) -> std::result::Result<Response<pb::LeaseListResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let path = req.path;
        let groups: Vec<GroupId> = if path.is_empty() {
            // Every group's lease ids: administrators only.
            self.gate
                .check(&meta, "lease list", &[(Access::Admin, "/")])?;
            self.ctx.host.groups().into_iter().map(|(g, _)| g).collect()
        } else {
            validate_prefix(&path).map_err(Error::from)?;
            self.gate
                .check(&meta, "lease list", &[(Access::Lease, &path)])?;
            vec![self.ctx.route_prefix(&path)?]
        };
        let mut ids = Vec::new();
        let mut header = None;
        for g in groups {
            let ready = self.ctx.prepare_read(g, None, None).await?;
            let st = ready.handle.shared.read();
            ids.extend(st.leases.keys().copied());
            header = Some(ready.header(&self.ctx, st.revision));
        }
        Ok(Response::new(pb::LeaseListResponse { header, ids }))
    }
}
