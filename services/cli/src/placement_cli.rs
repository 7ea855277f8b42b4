//! `meridian placement show|set-policy`: the placement map the endpoint's router follows, and
//! residency policy changes through the global group (docs/placement.md).

use crate::output::{Format, Rendered};
use meridian_sdk::{pb, Client};
use serde_json::json;
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum PlacementCmd {
    /// The epoch and every domain: owner group, policy, replicas per region, state.
    Show,
    /// Set a domain's residency policy (or clear it with --clear). Refused, with nothing
    /// changed, when a replica of the domain's group sits in a region the policy excludes.
    SetPolicy(SetPolicyArgs),
}

#[derive(clap::Args, Debug)]
pub struct SetPolicyArgs {
    /// The domain's prefix, e.g. /eu-west/pii/.
    pub prefix: String,
    /// Regions that may hold the data: names (eu-west) or tags (jurisdiction:eu),
    /// comma-separated.
    #[arg(long, value_delimiter = ',', required_unless_present = "clear")]
    pub allowed: Vec<String>,
    /// forward: clients elsewhere are forwarded to an allowed region; strict: they are refused.
    #[arg(long, default_value = "forward", value_parser = ["forward", "strict"])]
    pub mode: String,
    /// Remove the domain's policy.
    #[arg(long, conflicts_with = "allowed")]
    pub clear: bool,
    /// Refuse unless the map is still at this epoch (see `placement show`).
    #[arg(long, default_value_t = 0)]
    pub expected_epoch: u64,
}

pub async fn run(client: Client, format: Format, cmd: PlacementCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        PlacementCmd::Show => {
            let map = client.placement().await?;
            show(&map).print(format);
        }
        PlacementCmd::SetPolicy(a) => {
            let policy = (!a.clear).then(|| pb::PlacementPolicy {
                allowed: a.allowed.clone(),
                mode: a.mode.clone(),
            });
            let epoch = client
                .set_policy(&a.prefix, policy.clone(), a.expected_epoch)
                .await?;
            let what = match &policy {
                Some(p) => format!(
                    "policy of {} set to allowed = {}, mode = {}",
                    a.prefix,
                    p.allowed.join(","),
                    p.mode
                ),
                None => format!("policy of {} cleared", a.prefix),
            };
            Rendered {
                json: json!({"prefix": a.prefix, "epoch": epoch, "policy": policy.as_ref().map(policy_json)}),
                human: format!("{what} (epoch {epoch})"),
            }
            .print(format);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn policy_json(p: &pb::PlacementPolicy) -> serde_json::Value {
    json!({"allowed": p.allowed, "mode": p.mode})
}

fn counts(c: &[pb::RegionCount]) -> String {
    let parts: Vec<String> = c
        .iter()
        .map(|r| format!("{}:{}", r.region, r.nodes))
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(",")
    }
}

fn show(map: &pb::PlacementShowResponse) -> Rendered {
    let group = |id: u64| map.groups.iter().find(|g| g.id == id);
    let mut human = format!(
        "placement epoch {}{} (as router node {} in {} follows it)\n",
        map.epoch,
        if map.epoch == 0 {
            " (the topology's map, not yet committed by the global group)"
        } else {
            ""
        },
        map.node,
        map.region
    );
    human.push_str(&format!(
        "{:<24} {:<16} {:<9} {:<34} {:<28} {}\n",
        "DOMAIN", "GROUP", "STATE", "POLICY", "VOTERS", "LEARNERS"
    ));
    for d in &map.domains {
        let g = group(d.group);
        let policy = d.policy.as_ref().map_or("-".to_string(), |p| {
            format!("{} ({})", p.allowed.join(","), p.mode)
        });
        human.push_str(&format!(
            "{:<24} {:<16} {:<9} {:<34} {:<28} {}\n",
            d.prefix,
            format!("{} (g{})", d.group_name, d.group),
            d.state,
            policy,
            g.map_or("-".into(), |g| counts(&g.voters)),
            g.map_or("-".into(), |g| counts(&g.learners)),
        ));
    }
    let json = json!({
        "epoch": map.epoch,
        "node": map.node,
        "region": map.region,
        "domains": map.domains.iter().map(|d| json!({
            "prefix": d.prefix,
            "group": d.group,
            "group_name": d.group_name,
            "state": d.state,
            "policy": d.policy.as_ref().map(policy_json),
        })).collect::<Vec<_>>(),
        "groups": map.groups.iter().map(|g| json!({
            "id": g.id,
            "name": g.name,
            "voters": g.voters.iter().map(|r| (r.region.clone(), r.nodes)).collect::<std::collections::BTreeMap<_, _>>(),
            "learners": g.learners.iter().map(|r| (r.region.clone(), r.nodes)).collect::<std::collections::BTreeMap<_, _>>(),
        })).collect::<Vec<_>>(),
    });
    Rendered {
        json,
        human: human.trim_end().to_string(),
    }
}
