//! `meridian member list|add|promote|remove` and `meridian leader transfer` (docs/operations.md,
//! "Membership and leadership"): each group's live voters and learners, changes of one group's
//! membership and of its leader, asked of its leader (found from the cluster's status). Needs
//! `admin` on `/` for a change.

use crate::output::{Format, Rendered};
use meridian_sdk::{pb, Client};
use serde_json::json;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Subcommand, Debug)]
pub enum MemberCmd {
    /// Every group's voters and learners as its leader reports them, and its drift from the
    /// topology file the nodes run.
    List,
    /// Add NODE (a node of the topology) to GROUP as a learner.
    Add { group: u64, node: u64 },
    /// Make NODE, a learner of GROUP, a voter.
    Promote { group: u64, node: u64 },
    /// Take NODE (a voter or a learner; dead or alive) out of GROUP.
    Remove { group: u64, node: u64 },
}

#[derive(clap::Subcommand, Debug)]
pub enum LeaderCmd {
    /// Hand GROUP's leadership to voter NODE (e.g. before stopping the leader's machine, or to
    /// bring the leader back to the group's home region).
    Transfer {
        group: u64,
        #[arg(long)]
        to: u64,
    },
}

/// `meridian leader transfer GROUP --to NODE`, asked of the group's leader.
pub async fn leader(
    connect: impl Fn(Vec<String>) -> anyhow::Result<Client>,
    endpoints: Vec<String>,
    format: Format,
    cmd: LeaderCmd,
) -> anyhow::Result<ExitCode> {
    let LeaderCmd::Transfer { group, to } = cmd;
    let status = connect(endpoints)?.status(true).await?;
    let (at, now) = at_leader(&connect, &status, group)?;
    let reply = at.transfer_leader(group, to, CHANGE_WAIT).await?;
    Rendered {
        json: json!({"group": reply.group, "leader": reply.leader, "term": reply.term}),
        human: format!(
            "group {}: node {} leads (term {}; was node {})",
            reply.group, reply.leader, reply.term, now.leader
        ),
    }
    .print(format);
    Ok(ExitCode::SUCCESS)
}

/// The longest a change may take, the group's leader's own bound included.
const CHANGE_WAIT: Duration = Duration::from_secs(40);

/// `connect(endpoints)` makes a client with the command line's access (token, CA).
pub async fn run(
    connect: impl Fn(Vec<String>) -> anyhow::Result<Client>,
    endpoints: Vec<String>,
    format: Format,
    cmd: MemberCmd,
) -> anyhow::Result<ExitCode> {
    let status = connect(endpoints)?.status(true).await?;
    let (group, node, change) = match cmd {
        MemberCmd::List => {
            list(&status).print(format);
            return Ok(ExitCode::SUCCESS);
        }
        MemberCmd::Add { group, node } => (group, node, pb::MembershipChange::AddLearner),
        MemberCmd::Promote { group, node } => (group, node, pb::MembershipChange::Promote),
        MemberCmd::Remove { group, node } => (group, node, pb::MembershipChange::Remove),
    };
    let (at, _) = at_leader(&connect, &status, group)?;
    let reply = at
        .change_membership(group, node, change, CHANGE_WAIT)
        .await?;
    Rendered {
        json: json!({
            "group": reply.group, "voters": reply.voters, "learners": reply.learners,
            "log_index": reply.log_index,
        }),
        human: format!(
            "group {}: voters {:?}, learners {:?} (committed at index {})",
            reply.group, reply.voters, reply.learners, reply.log_index
        ),
    }
    .print(format);
    Ok(ExitCode::SUCCESS)
}

/// A client of `group`'s leader as the cluster's status reports it, and that report.
fn at_leader(
    connect: &impl Fn(Vec<String>) -> anyhow::Result<Client>,
    status: &pb::StatusResponse,
    group: u64,
) -> anyhow::Result<(Client, pb::GroupStatus)> {
    let Some(leader) = leader_of(status, group) else {
        anyhow::bail!(
            "no node reports leading group {group} (is it a group of this cluster? `meridian \
             status` shows every group and which nodes answered)"
        );
    };
    Ok((connect(vec![leader.leader_address.clone()])?, leader))
}

/// The replica that leads `group` (the newest term's, if two say so), with its address.
pub(crate) fn leader_of(s: &pb::StatusResponse, group: u64) -> Option<pb::GroupStatus> {
    std::iter::once(s)
        .chain(s.nodes.iter())
        .flat_map(|n| n.groups.iter())
        .filter(|g| g.group == group && g.state == "Leader" && !g.leader_address.is_empty())
        .max_by_key(|g| g.term)
        .cloned()
}

/// Every group some node of the status reports, in order.
pub(crate) fn groups_in(s: &pb::StatusResponse) -> Vec<u64> {
    let mut groups: Vec<u64> = std::iter::once(s)
        .chain(s.nodes.iter())
        .flat_map(|n| n.groups.iter().map(|g| g.group))
        .collect();
    groups.sort_unstable();
    groups.dedup();
    groups
}

fn list(s: &pb::StatusResponse) -> Rendered {
    let groups = groups_in(s);
    let mut human = Vec::new();
    let mut rows = Vec::new();
    for id in groups {
        let Some(g) = leader_of(s, id) else {
            human.push(format!(
                "group {id}: no leader answered; membership unknown"
            ));
            rows.push(json!({"group": id, "leader": null}));
            continue;
        };
        let voters: Vec<u64> = g
            .members
            .iter()
            .filter(|m| m.voter)
            .map(|m| m.node)
            .collect();
        let learners: Vec<u64> = g
            .members
            .iter()
            .filter(|m| !m.voter)
            .map(|m| m.node)
            .collect();
        human.push(format!(
            "group {id} {}: leader {} term {}, voters {voters:?}, learners {learners:?}",
            g.name, g.leader, g.term
        ));
        for d in &g.drift {
            human.push(format!("  drift: {d}"));
        }
        rows.push(json!({
            "group": id, "name": g.name, "leader": g.leader, "term": g.term,
            "voters": voters, "learners": learners, "drift": g.drift,
        }));
    }
    Rendered {
        json: json!({ "groups": rows }),
        human: human.join("\n"),
    }
}
