//! `meridian placement show|set-policy|set-profile|move|apply`: the placement map the
//! endpoint's router follows, and changes through the global group — residency policies,
//! timestamp profiles, online domain moves, a planner's recommended moves (docs/placement.md).

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
    /// Set how a domain's group closes timestamps: local-writes (writes stay fast; a read that
    /// switches to it waits about a one-way delay) or global-reads (reads everywhere at once;
    /// each write waits out the lead), or --clear for the nodes' default. Needs closed
    /// timestamps on (`[timestamps] profile`, docs/closed-timestamps.md).
    SetProfile(SetProfileArgs),
    /// Move a prefix (carved out of its domain when it is not one) to another group while
    /// clients keep working; waits until the move commits or is rolled back.
    Move(MoveArgs),
    /// Execute the moves a `meridian sim plan --json PLAN.json` recommends, one at a time,
    /// each waited for like `placement move`.
    Apply(ApplyArgs),
}

#[derive(clap::Args, Debug)]
pub struct MoveArgs {
    /// The prefix to move, e.g. /us-east/orders/.
    pub prefix: String,
    /// The target group: its name (placement show) or id.
    #[arg(long)]
    pub to: String,
    /// Refuse unless the map is still at this epoch.
    #[arg(long, default_value_t = 0)]
    pub expected_epoch: u64,
    /// Return once the move has begun instead of waiting for its end.
    #[arg(long)]
    pub no_wait: bool,
    /// Longest wait for the move's end, in seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_s: u64,
}

#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    /// A plan written by `meridian sim plan --json`.
    pub plan: std::path::PathBuf,
    /// Print the moves without making them.
    #[arg(long)]
    pub dry_run: bool,
    /// Longest wait for each move, in seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_s: u64,
}

#[derive(clap::Args, Debug)]
pub struct SetProfileArgs {
    /// The domain's prefix, e.g. /us-east/config/.
    pub prefix: String,
    /// local-writes or global-reads.
    #[arg(value_parser = ["local-writes", "global-reads"], required_unless_present = "clear")]
    pub profile: Option<String>,
    /// Back to the nodes' default.
    #[arg(long, conflicts_with = "profile")]
    pub clear: bool,
    /// Refuse unless the map is still at this epoch (see `placement show`).
    #[arg(long, default_value_t = 0)]
    pub expected_epoch: u64,
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
        PlacementCmd::SetProfile(a) => {
            let profile = a.profile.clone().unwrap_or_default();
            let epoch = client
                .set_profile(&a.prefix, &profile, a.expected_epoch)
                .await?;
            let what = if profile.is_empty() {
                format!("profile of {} back to the nodes' default", a.prefix)
            } else {
                format!("profile of {} set to {profile}", a.prefix)
            };
            Rendered {
                json: json!({"prefix": a.prefix, "epoch": epoch, "profile": a.profile}),
                human: format!("{what} (epoch {epoch})"),
            }
            .print(format);
        }
        PlacementCmd::Move(a) => {
            let done = move_and_wait(
                &client,
                &a.prefix,
                &a.to,
                a.expected_epoch,
                !a.no_wait,
                a.timeout_s,
            )
            .await?;
            let ok = done.ok;
            done.rendered.print(format);
            if !ok {
                return Ok(ExitCode::FAILURE);
            }
        }
        PlacementCmd::Apply(a) => return apply(&client, format, &a).await,
    }
    Ok(ExitCode::SUCCESS)
}

/// How one move ended, as printed.
struct MoveDone {
    ok: bool,
    rendered: Rendered,
}

/// Starts a move and (with `wait`) follows it in the map until it commits or is rolled back.
async fn move_and_wait(
    client: &Client,
    prefix: &str,
    to: &str,
    expected_epoch: u64,
    wait: bool,
    timeout_s: u64,
) -> anyhow::Result<MoveDone> {
    let started = std::time::Instant::now();
    let begun = client.move_domain(prefix, to, expected_epoch).await?;
    let id = begun.id;
    if !wait {
        return Ok(MoveDone {
            ok: true,
            rendered: Rendered {
                json: json!({"prefix": prefix, "id": id, "from": begun.from, "to": begun.to, "state": "begun"}),
                human: format!(
                    "move {id} of {prefix} begun (g{} -> g{}); follow it with `meridian placement show`",
                    begun.from, begun.to
                ),
            },
        });
    }
    let deadline = started + std::time::Duration::from_secs(timeout_s);
    let mut last_step = String::new();
    loop {
        let map = client.placement().await?;
        if let Some(r) = map
            .moves_done
            .iter()
            .find(|r| r.id == id && r.prefix == prefix)
        {
            let ms = started.elapsed().as_millis() as u64;
            let json = json!({
                "prefix": prefix, "id": id, "from": r.from, "to": r.to,
                "state": if r.aborted { "rolled_back" } else { "committed" },
                "reason": r.reason, "epoch": r.epoch, "elapsed_ms": ms,
            });
            return Ok(if r.aborted {
                MoveDone {
                    ok: false,
                    rendered: Rendered {
                        json,
                        human: format!(
                            "move {id} of {prefix} was rolled back, nothing changed: {}",
                            r.reason
                        ),
                    },
                }
            } else {
                MoveDone {
                    ok: true,
                    rendered: Rendered {
                        json,
                        human: format!(
                            "moved {prefix} from g{} to g{} in {ms} ms (move {id}, epoch {})",
                            r.from, r.to, r.epoch
                        ),
                    },
                }
            });
        }
        if let Some(m) = map
            .domains
            .iter()
            .find(|d| d.prefix == prefix)
            .and_then(|d| d.moving.as_ref())
            .filter(|m| m.id == id)
        {
            if m.step != last_step {
                eprintln!("move {id} of {prefix}: {}", m.step);
                last_step = m.step.clone();
            }
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!(
                "move {id} of {prefix} has not ended within {timeout_s} s (last step seen: {}); \
                 it goes on — follow it with `meridian placement show`",
                if last_step.is_empty() {
                    "begun"
                } else {
                    &last_step
                }
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// One recommended move of a plan file.
#[derive(Debug, PartialEq)]
pub struct PlannedMove {
    pub prefix: String,
    pub group: String,
}

/// The moves a plan file (`meridian sim plan --json`) recommends; every problem named.
pub fn planned_moves(text: &str, name: &str) -> anyhow::Result<Vec<PlannedMove>> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| anyhow::anyhow!("{name} is not JSON: {e}"))?;
    let Some(domains) = v["domains"].as_array() else {
        anyhow::bail!(
            "{name} has no \"domains\" list: not a plan written by `meridian sim plan --json`"
        );
    };
    let mut out = Vec::new();
    for (i, d) in domains.iter().enumerate() {
        let prefix = d["prefix"].as_str();
        let group = d["recommended"]["group"].as_str();
        match (prefix, group) {
            (Some(p), Some(g)) => out.push(PlannedMove {
                prefix: p.to_string(),
                group: g.to_string(),
            }),
            _ => anyhow::bail!(
                "{name}: domains[{i}] lacks \"prefix\" or \"recommended\".\"group\" (strings)"
            ),
        }
    }
    Ok(out)
}

async fn apply(client: &Client, format: Format, a: &ApplyArgs) -> anyhow::Result<ExitCode> {
    let name = a.plan.display().to_string();
    let text =
        std::fs::read_to_string(&a.plan).map_err(|e| anyhow::anyhow!("reading {name}: {e}"))?;
    let planned = planned_moves(&text, &name)?;
    let mut results = Vec::new();
    let mut failed = false;
    for m in planned {
        let map = client.placement().await?;
        // The group that owns the prefix now: its own domain, or the one it lies in.
        let owner = map
            .domains
            .iter()
            .filter(|d| m.prefix.starts_with(&d.prefix))
            .max_by_key(|d| d.prefix.len());
        let Some(owner) = owner else {
            anyhow::bail!("{name}: {} lies in no domain of this cluster", m.prefix);
        };
        if owner.group_name == m.group || owner.group.to_string() == m.group {
            let line = format!("{} already lives in {}; nothing to do", m.prefix, m.group);
            results.push(Rendered {
                json: json!({"prefix": m.prefix, "to": m.group, "state": "unchanged"}),
                human: line,
            });
            continue;
        }
        if a.dry_run {
            results.push(Rendered {
                json: json!({"prefix": m.prefix, "from": owner.group_name, "to": m.group, "state": "planned"}),
                human: format!("would move {} from {} to {}", m.prefix, owner.group_name, m.group),
            });
            continue;
        }
        let done = move_and_wait(client, &m.prefix, &m.group, 0, true, a.timeout_s).await?;
        results.push(done.rendered);
        if !done.ok {
            failed = true;
            break;
        }
    }
    Rendered {
        json: json!({"moves": results.iter().map(|r| r.json.clone()).collect::<Vec<_>>()}),
        human: results
            .iter()
            .map(|r| r.human.clone())
            .collect::<Vec<_>>()
            .join("\n"),
    }
    .print(format);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
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
        "{:<24} {:<16} {:<9} {:<34} {:<28} {:<28} {}\n",
        "DOMAIN", "GROUP", "STATE", "POLICY", "VOTERS", "LEARNERS", "PROFILE"
    ));
    for d in &map.domains {
        let g = group(d.group);
        let policy = d.policy.as_ref().map_or("-".to_string(), |p| {
            format!("{} ({})", p.allowed.join(","), p.mode)
        });
        human.push_str(&format!(
            "{:<24} {:<16} {:<9} {:<34} {:<28} {:<28} {}\n",
            d.prefix,
            format!("{} (g{})", d.group_name, d.group),
            d.state,
            policy,
            g.map_or("-".into(), |g| counts(&g.voters)),
            g.map_or("-".into(), |g| counts(&g.learners)),
            if d.profile.is_empty() {
                "default"
            } else {
                d.profile.as_str()
            },
        ));
    }
    if !map.moves_done.is_empty() {
        human.push_str("recent moves:\n");
        for r in &map.moves_done {
            human.push_str(&format!(
                "  move {} of {} g{} -> g{}: {} at epoch {}\n",
                r.id,
                r.prefix,
                r.from,
                r.to,
                if r.aborted {
                    format!("rolled back ({})", r.reason)
                } else {
                    "committed".to_string()
                },
                r.epoch
            ));
        }
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
            "moving": d.moving.as_ref().map(|m| json!({"id": m.id, "from": m.from, "to": m.to, "to_name": m.to_name, "step": m.step})),
            "since": d.since,
            "profile": (!d.profile.is_empty()).then_some(d.profile.as_str()),
        })).collect::<Vec<_>>(),
        "moves_done": map.moves_done.iter().map(|r| json!({
            "prefix": r.prefix, "id": r.id, "from": r.from, "to": r.to,
            "aborted": r.aborted, "reason": r.reason, "epoch": r.epoch,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A plan file's moves, and a clear error for anything that is not one.
    #[test]
    fn plan_files_are_read_or_refused_clearly() {
        let ok = r#"{"domains": [{"prefix": "/a/", "recommended": {"owner": "eu-west", "group": "eu-west"}}]}"#;
        assert_eq!(
            planned_moves(ok, "p.json").unwrap(),
            vec![PlannedMove {
                prefix: "/a/".into(),
                group: "eu-west".into()
            }]
        );
        let e = planned_moves("nope", "p.json").unwrap_err().to_string();
        assert!(e.contains("p.json is not JSON"), "{e}");
        let e = planned_moves("{}", "p.json").unwrap_err().to_string();
        assert!(e.contains("no \"domains\" list"), "{e}");
        let e = planned_moves(r#"{"domains": [{"prefix": "/a/"}]}"#, "p.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("domains[0]"), "{e}");
    }
}
