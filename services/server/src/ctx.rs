//! What every request handler shares: the node's identity, its groups, the peer pool, limits,
//! the placement; and the two primitives reads and writes are built from. A write goes to the
//! group's leader — proposed here when this node leads, forwarded otherwise (one hop to the
//! owner's leader, however far). A read is served by the local replica once the router's plan
//! (see [`crate::router`]) says it may.

use crate::config::Limits;
use crate::error::{Error, Result};
use crate::proposer::{Proposer, WriteError};
use crate::syncs::Syncers;
use meridian_consensus::{GroupHandle, Host, PeerPool};
use meridian_proto::kv as pb;
use meridian_proto::peer::forward_client::ForwardClient;
use meridian_proto::peer::ProposeRequest;
use meridian_proto::PEER_MESSAGE_BYTES;
use meridian_router::VersionVector;
use meridian_topology::Topology;
use meridian_types::hlc::Timestamp;
use meridian_types::{Command, CommandResult, GroupId};
use openraft::async_runtime::watch::WatchReceiver;
use openraft::ServerState;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// Most times one write follows `NotLeader` hints before giving up.
const FORWARD_HOPS_MAX: usize = 3;
/// Longest a move's target leader holds a handed-over write for the import.
const IMPORT_WAIT: Duration = Duration::from_secs(2);
/// How long a write waits through a failover — no leader known, or the known leader not
/// reachable (a regional group elects again 1.1–1.4 s after losing its leader) — before it is
/// refused as Unavailable; at most half the write timeout, so the client still gets the answer.
const LEADER_WAIT: Duration = Duration::from_millis(3_000);
/// How often a write waiting for a leader looks again.
const LEADER_POLL: Duration = Duration::from_millis(50);

pub struct NodeCtx {
    pub node_id: u64,
    pub region: String,
    pub address: String,
    pub host: Arc<Host>,
    pub pool: Arc<PeerPool>,
    pub limits: Limits,
    pub topology: Arc<Topology>,
    /// The placement map this router follows (from its replica of the global group).
    pub placement: Arc<crate::placement::PlacementView>,
    pub watches: Arc<crate::watches::Watches>,
    /// Shared upstream watches: one feed per watched key or prefix (`fanout.rs`).
    pub fanout: Arc<crate::fanout::Fanout>,
    /// The write batcher of each group this node votes in.
    pub proposers: BTreeMap<GroupId, Proposer>,
    /// Coalesced syncs per group.
    pub syncers: Syncers,
    /// Sync before a read that switches groups. Only the test that proves the anomaly turns
    /// this off.
    pub sync_on_switch: bool,
    /// Reads by closed timestamps instead of sync-before-read (docs/closed-timestamps.md).
    pub closed_reads: Option<ClosedReads>,
    pub forwarded_writes: AtomicU64,
    /// The only clock lease deadlines are measured on (monotonic; injectable for tests).
    pub clock: Arc<dyn meridian_locks::Clock>,
    /// The node's hybrid logical clock: what its proposers stamp entries from
    /// (docs/closed-timestamps.md).
    pub timestamps: Arc<meridian_types::hlc::NodeClock>,
    /// How far ahead of now the leaders close (`global-reads`; 0 otherwise): a session
    /// timestamp may run this much further ahead of a node's clock than the maximum offset.
    pub timestamp_lead_us: u64,
    /// Whether that clock agrees with the peers' (reads by timestamp stop when it does not).
    pub clock_check: Arc<crate::clock_check::ClockCheck>,
    /// Lease deadlines of each group this node votes in, while it leads.
    pub leader_leases: BTreeMap<GroupId, crate::lease_driver::SharedLeaderLeases>,
    /// Queued lock acquires waiting for their grant, per group hosted here.
    pub lock_waits: BTreeMap<GroupId, Arc<crate::lock_waits::LockWaits>>,
}

/// How this router serves reads by closed timestamps.
#[derive(Clone, Copy, Debug)]
pub struct ClosedReads {
    /// A closed timestamp that has not moved for this long is no longer waited for.
    pub stale_after: Duration,
}

impl NodeCtx {
    /// Refuses a session timestamp no node could have given: further ahead of this node's
    /// clock than the maximum offset (plus the `global-reads` lead).
    pub fn check_session_timestamp(&self, t: Timestamp) -> Result<()> {
        crate::convert::session_timestamp(t, &self.timestamps, self.timestamp_lead_us)
    }

    pub fn group(&self, group: GroupId) -> Result<GroupHandle> {
        self.host.get(group).ok_or_else(|| {
            Error::Unavailable(format!(
                "group {} has no replica on node {} (region {}); use an endpoint in a region that hosts it",
                self.group_label(group),
                self.node_id,
                self.region
            ))
        })
    }

    /// "name (id)" of a group, for messages.
    pub fn group_label(&self, group: GroupId) -> String {
        match self.topology.group(group) {
            Some(g) => format!("{} ({})", g.name, group),
            None => group.to_string(),
        }
    }

    /// The header of a response from `h` at `revision`, carrying the session's vector.
    pub fn header(
        &self,
        h: &GroupHandle,
        revision: u64,
        vector: &VersionVector,
    ) -> pb::ResponseHeader {
        let mut vector = vector.clone();
        vector.observe(h.shared.group, revision);
        pb::ResponseHeader {
            group: h.shared.group.0,
            revision,
            node: self.node_id,
            raft_term: h.raft.metrics().borrow_watched().current_term,
            vector: vector.to_wire(),
            lag_ms: 0,
            synced: false,
            timestamp: None,
        }
    }

    /// The leader of `h`'s group as (id, address), if one is known.
    pub fn leader(&self, h: &GroupHandle) -> Option<(u64, String)> {
        let m = h.raft.metrics().borrow_watched().clone();
        let leader = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())?;
        Some((leader, addr))
    }

    fn no_leader(&self, group: GroupId) -> Error {
        Error::Unavailable(format!(
            "group {} has no known leader right now (election in progress, or its home region is \
             unreachable from here); retry shortly",
            self.group_label(group)
        ))
    }

    /// Commits `cmd` in `group` and returns the local handle, the entry's revision and the
    /// result. Proposed here when this node leads; forwarded to the leader otherwise.
    pub async fn write(
        &self,
        group: GroupId,
        cmd: Command,
    ) -> Result<(GroupHandle, u64, CommandResult)> {
        let (h, rev, result, _) = self.write_at(group, cmd, Timestamp::ZERO).await?;
        Ok((h, rev, result))
    }

    /// As [`Self::write`], committed above the writer's session timestamp `after`; also returns
    /// the entry's commit timestamp (docs/closed-timestamps.md).
    pub async fn write_at(
        &self,
        group: GroupId,
        cmd: Command,
        after: Timestamp,
    ) -> Result<(GroupHandle, u64, CommandResult, Option<Timestamp>)> {
        let h = self.group(group)?;
        let (rev, result, at) = self.commit_at(group, cmd, after).await?;
        Ok((h, rev, result, at))
    }

    /// Commits `cmd` in `group`, which this node need not hold a replica of (a move's driver
    /// writes to groups of other regions): proposed here when this node leads, otherwise sent
    /// to the leader — as this node's replica knows it, or found from the group's voters.
    pub async fn commit(&self, group: GroupId, cmd: Command) -> Result<(u64, CommandResult)> {
        let (rev, result, _) = self.commit_at(group, cmd, Timestamp::ZERO).await?;
        Ok((rev, result))
    }

    /// As [`Self::commit`], above the writer's session timestamp `after`; also returns the
    /// entry's commit timestamp (`None` for an entry made without a proposer).
    pub async fn commit_at(
        &self,
        group: GroupId,
        cmd: Command,
        after: Timestamp,
    ) -> Result<(u64, CommandResult, Option<Timestamp>)> {
        let local = self.host.get(group);
        crate::telemetry::record_group(group, None);
        let timeout = Duration::from_millis(self.limits.write_timeout_ms);
        // While no leader is known (an election) or the known one cannot be reached (it
        // died; the group has not elected yet), wait — boundedly, as etcd holds a proposal
        // until a leader is elected — instead of answering Unavailable at once; then
        // Unavailable (the write was never proposed), never a Deadline.
        let patience = tokio::time::Instant::now() + LEADER_WAIT.min(timeout / 2);
        let work = async {
            loop {
                match self
                    .commit_once(group, &cmd, after, local.as_ref(), timeout)
                    .await
                {
                    Ok(done) => return Ok(done),
                    Err(Once::Failed(e)) => return Err(e),
                    Err(Once::Retry(_)) if tokio::time::Instant::now() < patience => {
                        tokio::time::sleep(LEADER_POLL).await;
                    }
                    Err(Once::Retry(e)) => return Err(e),
                }
            }
        };
        match tokio::time::timeout(timeout, work).await {
            Err(_) => Err(Error::Deadline(format!(
                "the write was not committed within {} ms; it may still be applied",
                self.limits.write_timeout_ms
            ))),
            Ok(Err(e)) => Err(e),
            Ok(Ok((rev, result))) => match result.unstamped() {
                // The key's subtree moved away from this group (nothing changed).
                (CommandResult::WrongGroup { epoch }, _) => Err(Error::WrongGroup {
                    epoch,
                    group: group.0,
                }),
                (result, at) => Ok((rev, result, at)),
            },
        }
    }

    /// One try of [`Self::commit`]: proposed here when this node leads, else forwarded to the
    /// leader as far as it is known.
    async fn commit_once(
        &self,
        group: GroupId,
        cmd: &Command,
        after: Timestamp,
        local: Option<&GroupHandle>,
        timeout: Duration,
    ) -> std::result::Result<(u64, CommandResult), Once> {
        let mut targets: Vec<String> = match self.write_local(group, cmd.clone(), after).await {
            Ok((rev, result)) => return Ok((rev, result)),
            Err(LocalWrite::NotLeader(Some((_, addr)))) => vec![addr],
            Err(LocalWrite::NotLeader(None)) => return Err(Once::Retry(self.no_leader(group))),
            Err(LocalWrite::NoProposer) => match local {
                Some(h) => match self.leader(h) {
                    Some((_, addr)) => vec![addr],
                    None => return Err(Once::Retry(self.no_leader(group))),
                },
                None => self.voter_addresses(group),
            },
            Err(LocalWrite::Failed(e)) => return Err(Once::Failed(e)),
        };
        targets.reverse();
        let mut hops = 0;
        while let Some(target) = targets.pop() {
            match self.forward(&target, group, cmd, after, timeout).await {
                Ok(Forwarded::Done(rev, result)) => return Ok((rev, result)),
                Ok(Forwarded::NotLeader(Some(next))) if next != target => {
                    hops += 1;
                    if hops > FORWARD_HOPS_MAX {
                        break;
                    }
                    targets.push(next);
                }
                Ok(Forwarded::NotLeader(_)) => {}
                // A voter that never got it: try the next one (only when this node has no
                // replica to ask for the leader).
                Err(Error::Unavailable(_)) if local.is_none() && !targets.is_empty() => {}
                // `forward` says Unavailable only for a write the leader never proposed (no
                // connection, or refused before proposing): safe to try again.
                Err(e @ Error::Unavailable(_)) => return Err(Once::Retry(e)),
                Err(e) => return Err(Once::Failed(e)),
            }
        }
        Err(Once::Retry(self.no_leader(group)))
    }

    /// The addresses of `group`'s voters, nearest first.
    pub fn voter_addresses(&self, group: GroupId) -> Vec<String> {
        self.nearest_first(self.topology.voters(group))
    }

    /// The addresses of `nodes`, nearest to this router's region first (ties by node id).
    pub fn nearest_first<'a>(
        &self,
        nodes: impl IntoIterator<Item = &'a meridian_topology::NodeSpec>,
    ) -> Vec<String> {
        let mut by_rtt: Vec<(u64, u64, &str)> = nodes
            .into_iter()
            .map(|n| {
                (
                    self.topology.rtt_ms(&self.region, &n.region),
                    n.id,
                    n.address.as_str(),
                )
            })
            .collect();
        by_rtt.sort();
        by_rtt.into_iter().map(|(_, _, a)| a.to_string()).collect()
    }

    /// Proposes on this node, which must lead `group`, above the writer's session timestamp
    /// `after`; the result is `CommandResult::Stamped` when the entry was stamped.
    pub async fn write_local(
        &self,
        group: GroupId,
        cmd: Command,
        after: Timestamp,
    ) -> std::result::Result<(u64, CommandResult), LocalWrite> {
        let Some(proposer) = self.proposers.get(&group) else {
            // A learner promoted by `meridian member promote` that now leads: started as a
            // learner, it has no batching proposer; each write goes alone.
            return match self.host.get(group) {
                Some(h) if h.raft.metrics().borrow_watched().state == ServerState::Leader => {
                    local_outcome(
                        crate::proposer::propose_alone(
                            group,
                            &h.raft,
                            cmd,
                            &self.timestamps,
                            after,
                            self.closed_reads
                                .map(|_| crate::proposer::commit_wait_max(self.timestamp_lead_us)),
                        )
                        .await,
                    )
                }
                _ => Err(LocalWrite::NoProposer),
            };
        };
        if let Command::AfterImport { id, .. } = &cmd {
            self.await_import(group, *id).await;
        }
        local_outcome(proposer.propose_after(cmd, after).await)
    }

    /// A write handed over to move `id`'s target may arrive before the import (the source's
    /// answer to the freeze is still on its way): the target's leader holds it until its own
    /// replica has the import — or the rollback's discard — bounded by IMPORT_WAIT, rather than
    /// refuse it and cost the router a round trip. The state machine decides either way.
    async fn await_import(&self, group: GroupId, id: u64) {
        let Some(h) = self.host.get(group) else {
            return;
        };
        if h.raft.metrics().borrow_watched().state != ServerState::Leader {
            return;
        }
        let until = tokio::time::Instant::now() + IMPORT_WAIT;
        while h.shared.read().import_outcome(id).is_none() && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn forward(
        &self,
        addr: &str,
        group: GroupId,
        cmd: &Command,
        after: Timestamp,
        timeout: Duration,
    ) -> Result<Forwarded> {
        let command = bincode::serialize(cmd)
            .map_err(|e| Error::Internal(format!("encoding a forwarded write: {e}")))?;
        let channel = self
            .pool
            .channel(addr)
            .map_err(|e| Error::Unavailable(format!("leader at {addr}: {e}")))?;
        let mut client = ForwardClient::new(channel)
            .max_decoding_message_size(PEER_MESSAGE_BYTES)
            .max_encoding_message_size(PEER_MESSAGE_BYTES);
        let mut req = tonic::Request::new(ProposeRequest {
            group: group.0,
            command,
            after_physical_us: after.physical,
            after_logical: after.logical,
        });
        req.set_timeout(timeout);
        let span = crate::step_span!(
            "forward",
            otel.kind = "client",
            meridian.group = group.0,
            peer.address = addr
        );
        span.in_scope(|| meridian_proto::trace::inject(&mut req));
        self.forwarded_writes.fetch_add(1, Ordering::Relaxed);
        let reply = client
            .propose(req)
            .instrument(span)
            .await
            .map_err(|s| {
                let what = format!(
                    "forwarding the write to the leader of group {} at {addr}",
                    self.group_label(group)
                );
                // Safe to retry only if it never reached the leader (no connection) or the
                // leader refused it before proposing (its typed Unavailable). Anything else —
                // a connection that broke after sending (tonic says Unavailable for that too),
                // a deadline — may have come after the leader committed it: say so instead
                // of inviting a blind retry that would apply it twice.
                if meridian_proto::io::never_sent(&s) || meridian_proto::io::refused_by_service(&s)
                {
                    Error::Unavailable(format!("{what}: {}", s.message()))
                } else {
                    Error::Deadline(format!(
                        "{what}: {} — the write may have been applied; read before retrying",
                        s.message()
                    ))
                }
            })?
            .into_inner();
        if reply.not_leader {
            let next = (!reply.leader_address.is_empty()).then_some(reply.leader_address);
            return Ok(Forwarded::NotLeader(next));
        }
        let result = bincode::deserialize(&reply.result)
            .map_err(|e| Error::Internal(format!("decoding a forwarded write's result: {e}")))?;
        Ok(Forwarded::Done(reply.revision, result))
    }

    /// The group's read index: leadership confirmed by a quorum of its voters. Asked of the
    /// local Raft when this node leads, of the leader over the peer connection otherwise.
    pub async fn read_index(&self, h: &GroupHandle, wait: Duration) -> Result<u64> {
        let is_leader = h.raft.metrics().borrow_watched().state == ServerState::Leader;
        if is_leader {
            return h.read_index(wait).await.map_err(Error::Unavailable);
        }
        let Some((_, addr)) = self.leader(h) else {
            return Err(self.no_leader(h.shared.group));
        };
        self.pool
            .read_index(&addr, h.shared.group, wait)
            .await
            .map_err(|s| {
                Error::Unavailable(format!(
                    "read index of group {} from its leader at {addr}: {}",
                    self.group_label(h.shared.group),
                    s.message()
                ))
            })
    }

    /// Waits (bounded) until the local replica of `h` applied `target`.
    pub async fn wait_applied(&self, h: &GroupHandle, target: u64) -> Result<()> {
        if h.shared.applied() >= target {
            return Ok(());
        }
        let wait = Duration::from_millis(self.limits.sync_wait_ms_max);
        match h.shared.wait_applied(target, wait).await {
            Some(_) => Ok(()),
            None => Err(Error::Unavailable(format!(
                "this replica of group {} is at revision {} and did not reach revision {} within \
                 {} ms; it refuses rather than serve an older view — retry or use another endpoint",
                self.group_label(h.shared.group),
                h.shared.applied(),
                target,
                self.limits.sync_wait_ms_max
            ))),
        }
    }
}

/// Why a write could not be proposed on this node.
pub enum LocalWrite {
    /// This node holds no voter of the group.
    NoProposer,
    NotLeader(Option<(u64, String)>),
    Failed(Error),
}

/// Why one try of a commit did not end it.
enum Once {
    /// Not proposed, worth another try once the group has failed over: no leader is known
    /// yet, or the leader (or every voter asked) could not be reached. The error is what the
    /// client hears if the failover outlasts the wait.
    Retry(Error),
    Failed(Error),
}

enum Forwarded {
    Done(u64, CommandResult),
    NotLeader(Option<String>),
}

/// What a local proposal's outcome means to the write path.
fn local_outcome(
    r: Result<crate::proposer::Outcome>,
) -> std::result::Result<(u64, CommandResult), LocalWrite> {
    match r {
        Err(e) => Err(LocalWrite::Failed(e)),
        Ok(Ok((rev, result))) => Ok((rev, result)),
        Ok(Err(WriteError::ForwardToLeader { leader })) => Err(LocalWrite::NotLeader(leader)),
        // Raft failed after the entry may have been appended: not safe to retry blindly.
        Ok(Err(WriteError::Failed(msg))) => Err(LocalWrite::Failed(Error::Deadline(format!(
            "{msg}; the write may have been applied"
        )))),
    }
}
