//! What every request handler shares: the node's identity, its groups, the peer pool, limits;
//! and the two primitives reads and writes are built from.

use crate::config::Limits;
use crate::error::{Error, Result};
use crate::proposer::{Proposer, WriteError};
use meridian_consensus::{GroupHandle, Host, PeerPool};
use meridian_proto::kv as pb;
use meridian_types::{Command, CommandResult, GroupId};
use openraft::ServerState;
use std::collections::HashMap;
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
    /// The write batcher of each group.
    pub proposers: HashMap<GroupId, Proposer>,
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
        let proposer = self.proposers.get(&group).ok_or_else(|| {
            Error::Unavailable(format!("group {group} takes no writes on this node"))
        })?;
        let timeout = Duration::from_millis(self.limits.write_timeout_ms);
        match tokio::time::timeout(timeout, proposer.propose(cmd)).await {
            Err(_) => Err(Error::Deadline(format!(
                "the write was not committed within {} ms; it may still be applied",
                self.limits.write_timeout_ms
            ))),
            Ok(Err(e)) => Err(e),
            Ok(Ok(Ok((rev, result)))) => Ok((h, rev, result)),
            Ok(Ok(Err(WriteError::ForwardToLeader { leader }))) => Err(self.not_leader(&h, leader)),
            Ok(Ok(Err(WriteError::Failed(msg)))) => Err(Error::Unavailable(msg)),
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
            return h.read_index(wait).await.map_err(Error::Unavailable);
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
