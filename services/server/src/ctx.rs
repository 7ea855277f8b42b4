//! What every request handler shares: the node's identity, its groups, the peer pool, limits;
//! and the two primitives reads and writes are built from.

use crate::config::Limits;
use crate::error::{Error, Result};
use meridian_consensus::{GroupHandle, Host, PeerPool};
use meridian_proto::kv as pb;
use meridian_types::{Command, CommandResult, GroupId};
use openraft::error::{ClientWriteError, RaftError};
use openraft::ServerState;
use std::sync::Arc;
use std::time::Duration;

pub struct NodeCtx {
    pub node_id: u64,
    pub region: String,
    pub address: String,
    pub host: Arc<Host>,
    pub pool: Arc<PeerPool>,
    pub limits: Limits,
    /// The group every key belongs to until placement arrives (multi-region composition).
    pub default_group: GroupId,
    pub watches: Arc<tokio::sync::Semaphore>,
}

/// How a read must be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadLevel {
    /// Serve once this replica has applied `min_revision`.
    Sequential { min_revision: u64 },
    /// Serve once this replica has applied the leader's read index.
    Linearizable,
}

impl ReadLevel {
    pub fn from_pb(opts: Option<&pb::ReadOptions>) -> Result<Self> {
        let Some(o) = opts else {
            return Ok(ReadLevel::Sequential { min_revision: 0 });
        };
        let min_revision = crate::convert::revision(o.min_revision, "read.min_revision")?;
        match pb::Consistency::try_from(o.consistency) {
            Ok(pb::Consistency::Sequential) => Ok(ReadLevel::Sequential { min_revision }),
            Ok(pb::Consistency::Linearizable) => Ok(ReadLevel::Linearizable),
            Err(_) => Err(Error::invalid(
                "unknown_consistency",
                "read.consistency",
                format!("unknown consistency level {}", o.consistency),
            )),
        }
    }
}

impl NodeCtx {
    pub fn group(&self, group: GroupId) -> Result<GroupHandle> {
        self.host
            .get(group)
            .ok_or_else(|| Error::Unavailable(format!("group {group} is not hosted on this node")))
    }

    pub fn header(&self, h: &GroupHandle, revision: u64) -> pb::ResponseHeader {
        pb::ResponseHeader {
            group: h.shared.group.0,
            revision,
            node: self.node_id,
            raft_term: h.raft.metrics().borrow().current_term,
        }
    }

    /// The leader of `h`'s group as (id, address), if one is known.
    pub fn leader(&self, h: &GroupHandle) -> Option<(u64, String)> {
        let m = h.raft.metrics().borrow().clone();
        let leader = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())?;
        Some((leader, addr))
    }

    fn not_leader(&self, h: &GroupHandle, leader: Option<(u64, String)>) -> Error {
        match leader {
            Some((leader, address)) => Error::NotLeader {
                group: h.shared.group.0,
                leader,
                address,
            },
            None => Error::Unavailable(format!(
                "group {} has no leader right now (election in progress); retry shortly",
                h.shared.group
            )),
        }
    }

    /// Proposes `cmd` to the group's leader (this node must be it) and waits until applied.
    pub async fn write(
        &self,
        group: GroupId,
        cmd: Command,
    ) -> Result<(GroupHandle, u64, CommandResult)> {
        let h = self.group(group)?;
        let timeout = Duration::from_millis(self.limits.write_timeout_ms);
        match tokio::time::timeout(timeout, h.raft.client_write(cmd)).await {
            Err(_) => Err(Error::Deadline(format!(
                "the write was not committed within {} ms; it may still be applied",
                self.limits.write_timeout_ms
            ))),
            Ok(Ok(resp)) => Ok((h, resp.log_id.index, resp.data)),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                let leader = f.leader_id.zip(f.leader_node.map(|n| n.addr));
                Err(self.not_leader(&h, leader))
            }
            Ok(Err(e)) => Err(Error::Unavailable(format!("write failed: {e}"))),
        }
    }

    /// Waits until this replica may serve a read at `level`; returns the group.
    pub async fn prepare_read(&self, group: GroupId, level: ReadLevel) -> Result<GroupHandle> {
        let h = self.group(group)?;
        let wait = Duration::from_millis(self.limits.sync_wait_ms_max);
        let target = match level {
            ReadLevel::Sequential { min_revision } => min_revision,
            ReadLevel::Linearizable => self.read_index(&h, wait).await?,
        };
        if h.shared.applied() >= target {
            return Ok(h);
        }
        match h.shared.wait_applied(target, wait).await {
            Some(_) => Ok(h),
            None => Err(Error::Unavailable(format!(
                "this replica of group {} is at revision {} and did not reach revision {} within {} ms; \
                 retry or use another endpoint",
                h.shared.group,
                h.shared.applied(),
                target,
                self.limits.sync_wait_ms_max
            ))),
        }
    }

    async fn read_index(&self, h: &GroupHandle, wait: Duration) -> Result<u64> {
        let is_leader = h.raft.metrics().borrow().state == ServerState::Leader;
        if is_leader {
            let res = tokio::time::timeout(wait, h.raft.get_read_log_id()).await;
            return match res {
                Ok(Ok((read_log_id, _))) => Ok(read_log_id.map_or(0, |l| l.index)),
                Ok(Err(e)) => Err(Error::Unavailable(format!("leadership not confirmed: {e}"))),
                Err(_) => Err(Error::Unavailable(format!(
                    "leadership not confirmed by a quorum within {} ms",
                    wait.as_millis()
                ))),
            };
        }
        let Some((_, addr)) = self.leader(h) else {
            return Err(self.not_leader(h, None));
        };
        self.pool
            .read_index(&addr, h.shared.group, wait)
            .await
            .map_err(|s| {
                Error::Unavailable(format!(
                    "read index from the leader at {addr}: {}",
                    s.message()
                ))
            })
    }
}
