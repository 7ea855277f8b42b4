//! `meridian leader transfer GROUP --to NODE`: a group's leadership handed to another voter
//! (`meridian.v1.Cluster`, admin on `/`).

use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum LeaderCmd {
    /// Hand GROUP's leadership (its id or name, as `meridian status` shows) to voter --to;
    /// answers once that node leads.
    Transfer {
        group: String,
        /// The node to lead: one of the group's voters.
        #[arg(long)]
        to: u64,
    },
}

/// `meridian leader transfer GROUP --to NODE`.
pub async fn leader(
    client: meridian_sdk::Client,
    format: crate::output::Format,
    cmd: LeaderCmd,
) -> anyhow::Result<ExitCode> {
    let LeaderCmd::Transfer { group, to } = cmd;
    let id = match group.parse::<u64>() {
        Ok(id) => id,
        Err(_) => {
            let status = client.status(false).await?;
            let found = status.groups.iter().find(|g| g.name == group);
            match found {
                Some(g) => g.group,
                None => {
                    let names: Vec<&str> = status.groups.iter().map(|g| g.name.as_str()).collect();
                    anyhow::bail!("no group named {group:?} here (groups: {names:?})");
                }
            }
        }
    };
    let r = client.transfer_leader(id, to).await?;
    match format {
        crate::output::Format::Json => println!(
            "{}",
            serde_json::json!({"group": id, "leader": r.leader, "term": r.term})
        ),
        crate::output::Format::Human => {
            println!("group {group}: node {} leads (term {})", r.leader, r.term)
        }
    }
    Ok(ExitCode::SUCCESS)
}
