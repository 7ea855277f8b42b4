//! Membership changes (docs/operations.md, "Membership and leadership"): a node of the topology
//! joins a group as a learner, a learner becomes a voter, a voter or learner leaves — each made
//! by the group's leader through openraft's joint consensus, so the group keeps a quorum of the
//! old and the new voters at every step. Entries: [`change`] and [`transfer`], served by the
//! `Maintenance` service (`admin`).
//!
//! A leadership transfer (`transfer`) gives up this node's read lease first (see
//! `GroupHandle::transfer_leadership`) and answers once the chosen voter leads.
//!
//! What is checked first, with nothing changed on a refusal: the group is hosted here and this
//! node leads it (else `NotLeader` names the leader); the node is in the topology (mTLS admits
//! only topology nodes, and its address comes from there); the change makes sense for the
//! node's current role; a remove never leaves the group without a voter.

use crate::ctx::NodeCtx;
use crate::error::{Error, Result};
use meridian_proto::kv as pb;
use meridian_types::GroupId;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::{BasicNode, ChangeMembers, ServerState};
use std::collections::BTreeSet;
use std::time::Duration;

/// How long one change may take to commit (a learner's catch-up is not waited for).
pub const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Applies `req` to its group on this node, which must lead the group; the membership after.
pub async fn change(
    ctx: &NodeCtx,
    req: pb::ChangeMembershipRequest,
) -> Result<pb::ChangeMembershipReply> {
    let group = GroupId(req.group);
    let what = pb::MembershipChange::try_from(req.change)
        .ok()
        .filter(|c| *c != pb::MembershipChange::Unspecified)
        .ok_or_else(|| {
            Error::invalid(
                "unknown_membership_change",
                "change",
                format!(
                    "unknown membership change {}: add-learner, promote or remove",
                    req.change
                ),
            )
        })?;
    let h = hosted(ctx, group)?;
    let m = h.raft.metrics().borrow_watched().clone();
    if m.state != ServerState::Leader {
        return Err(not_leading(ctx, &h));
    }
    let node = ctx.topology.node(req.node).ok_or_else(|| {
        Error::invalid(
            "unknown_node",
            "node",
            format!(
                "node {} is not in the topology: add it to the topology file of every node first \
                 (peers admit only the topology's nodes, and its address comes from there)",
                req.node
            ),
        )
    })?;
    let membership = m.membership_config.membership().clone();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let member = membership.get_node(&req.node).is_some();
    let id = req.node;
    let refuse = |msg: String| Err(Error::invalid("membership_change", "node", msg));
    let raft = h.raft.clone();
    let work = async {
        match what {
            pb::MembershipChange::AddLearner => {
                if member {
                    return refuse(format!(
                        "node {id} is already a member of group {}",
                        group.0
                    ));
                }
                raft.add_learner(id, BasicNode::new(node.address.clone()), false)
                    .await
                    .map(|r| r.log_id.index)
                    .map_err(|e| Error::Unavailable(format!("adding node {id} as a learner: {e}")))
            }
            pb::MembershipChange::Promote => {
                if !member {
                    return refuse(format!(
                        "node {id} is not a member of group {}: add it as a learner first",
                        group.0
                    ));
                }
                if voters.contains(&id) {
                    return refuse(format!("node {id} is already a voter of group {}", group.0));
                }
                raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
                    .await
                    .map(|r| r.log_id.index)
                    .map_err(|e| Error::Unavailable(format!("promoting node {id}: {e}")))
            }
            pb::MembershipChange::Remove => {
                if !member {
                    return refuse(format!("node {id} is not a member of group {}", group.0));
                }
                let change = if voters.contains(&id) {
                    if voters.len() == 1 {
                        return refuse(format!(
                            "node {id} is group {}'s only voter: promote another first",
                            group.0
                        ));
                    }
                    ChangeMembers::RemoveVoters(BTreeSet::from([id]))
                } else {
                    ChangeMembers::RemoveNodes(BTreeSet::from([id]))
                };
                raft.change_membership(change, false)
                    .await
                    .map(|r| r.log_id.index)
                    .map_err(|e| Error::Unavailable(format!("removing node {id}: {e}")))
            }
            pb::MembershipChange::Unspecified => refuse("no change named".into()),
        }
    };
    let log_index = tokio::time::timeout(CHANGE_TIMEOUT, work)
        .await
        .map_err(|_| {
            Error::Deadline(format!(
                "the membership change of group {} was not committed within {CHANGE_TIMEOUT:?}; \
                 it may still be (see `meridian member list`)",
                group.0
            ))
        })??;
    let after = h.raft.metrics().borrow_watched().clone();
    let after = after.membership_config.membership();
    let (voters, learners) = roles(
        &after.nodes().map(|(id, _)| *id).collect(),
        &after.voter_ids().collect(),
    );
    tracing::info!(
        group = group.0,
        node = id,
        ?what,
        ?voters,
        ?learners,
        "membership changed"
    );
    Ok(pb::ChangeMembershipReply {
        group: group.0,
        voters,
        learners,
        log_index,
    })
}

/// How long a leadership transfer may take: the target's election, once it has the log.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(10);

/// Hands the leadership of `req.group`, which this node leads, to voter `req.to`; answers once
/// `to` leads (or at once if it already does).
pub async fn transfer(
    ctx: &NodeCtx,
    req: pb::TransferLeaderRequest,
) -> Result<pb::TransferLeaderReply> {
    let group = GroupId(req.group);
    let h = hosted(ctx, group)?;
    let m = h.raft.metrics().borrow_watched().clone();
    let voters: BTreeSet<u64> = m.membership_config.membership().voter_ids().collect();
    if !voters.contains(&req.to) {
        return Err(Error::invalid(
            "not_a_voter",
            "to",
            format!(
                "node {} is not a voter of group {} (voters: {voters:?}); only a voter can lead",
                req.to, req.group
            ),
        ));
    }
    if m.current_leader == Some(req.to) {
        return Ok(pb::TransferLeaderReply {
            group: group.0,
            leader: req.to,
            term: m.current_term,
        });
    }
    if m.state != ServerState::Leader {
        return Err(not_leading(ctx, &h));
    }
    h.transfer_leadership(req.to)
        .await
        .map_err(|e| Error::Internal(format!("group {}: {e}", group.0)))?;
    let to = req.to;
    match h
        .raft
        .wait(Some(TRANSFER_TIMEOUT))
        .metrics(|m| m.current_leader == Some(to), "leadership transferred")
        .await
    {
        Ok(m) => {
            tracing::info!(
                group = group.0,
                to,
                term = m.current_term,
                "leadership transferred"
            );
            Ok(pb::TransferLeaderReply {
                group: group.0,
                leader: to,
                term: m.current_term,
            })
        }
        Err(_) => {
            let now = h.raft.metrics().borrow_watched().current_leader;
            Err(Error::Deadline(format!(
                "group {}: node {to} did not take the lead within {TRANSFER_TIMEOUT:?} (the \
                 leader is now {}); this node serves no lease reads of its old term",
                group.0,
                now.map_or("unknown".to_string(), |n| format!("node {n}"))
            )))
        }
    }
}

/// The handle of `group`, a group of the topology hosted here.
fn hosted(ctx: &NodeCtx, group: GroupId) -> Result<meridian_consensus::GroupHandle> {
    if ctx.topology.group(group).is_none() {
        return Err(Error::invalid(
            "unknown_group",
            "group",
            format!("no group {} in the topology", group.0),
        ));
    }
    ctx.group(group)
}

/// Why this node, which does not lead `h`'s group, does not act: the leader it knows of.
fn not_leading(ctx: &NodeCtx, h: &meridian_consensus::GroupHandle) -> Error {
    let group = h.shared.group;
    match ctx.leader(h) {
        Some((leader, address)) => Error::NotLeader {
            group: group.0,
            leader,
            address,
        },
        None => Error::Unavailable(format!(
            "group {} has no known leader right now; retry shortly",
            group.0
        )),
    }
}

/// (voters, learners) of a membership given its members and voters.
fn roles(members: &BTreeSet<u64>, voters: &BTreeSet<u64>) -> (Vec<u64>, Vec<u64>) {
    let learners = members.difference(voters).copied().collect();
    (voters.iter().copied().collect(), learners)
}
