//! `meridian sim …`: simulations that help decide where data should live.
//! `sim plan`: the what-if placement planner (`meridian-planner`); `sim chart`: a results
//! file's chart drawn again.

use anyhow::Context;
use meridian_topology::Topology;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum SimCmd {
    /// Run a scenario (deployment modes × workload mixes) under the WAN emulator.
    Run(meridian_harness::sim_run::SimRunArgs),
    /// Run the deterministic simulation over many seeds, each with the faults it draws
    /// (`random_faults`), and check every history; print how to replay a failing seed.
    Sweep(meridian_harness::sim_sweep::SimSweepArgs),
    /// The real-process nemesis: `meridian dev --processes` under SIGKILLs, leader kills,
    /// SIGSTOPs past the lock TTL, region cuts and wall-clock jumps (libfaketime), with clients,
    /// watchers and lockers in every region; exit 1 if any checker finds a violation.
    Nemesis(meridian_harness::nemesis::NemesisArgs),
    /// Predict, per domain and allowed owner, the latency every region's clients would see;
    /// recommend an owner.
    Plan {
        #[arg(long)]
        topology: PathBuf,
        #[arg(long)]
        workload: PathBuf,
        /// Also write the plan as JSON (`meridian placement apply` executes it).
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Check a recorded history (Jepsen EDN, as `sim sweep --export` writes it) with
    /// Meridian's linearizability checker and an independent one (stateright); exit 1 if it is
    /// not linearizable, 2 if the file does not read or the checkers disagree.
    Check { history: PathBuf },
    /// Draw the chart of a results file written by `sim run --json` (or the comparison's
    /// merged JSON) again, without running anything.
    Chart {
        /// The results JSON.
        results: PathBuf,
        /// Where the SVG goes.
        #[arg(long)]
        svg: PathBuf,
    },
}

pub async fn run(cmd: SimCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        SimCmd::Run(args) => meridian_harness::sim_run::run(args).await,
        SimCmd::Nemesis(args) => meridian_harness::nemesis::run(args).await,
        SimCmd::Sweep(args) => {
            tokio::task::spawn_blocking(move || meridian_harness::sim_sweep::run(args)).await?
        }
        SimCmd::Plan {
            topology,
            workload,
            json,
        } => {
            let t = Topology::load(&topology)?;
            let name = workload.display().to_string();
            let text =
                std::fs::read_to_string(&workload).with_context(|| format!("reading {name}"))?;
            let w = meridian_planner::Workload::parse(&text, &name)?;
            let plans = meridian_planner::plan(&t, &w, &name)?;
            print!("{}", meridian_planner::render(&plans));
            if let Some(path) = json {
                let out = serde_json::to_string_pretty(&plan_json(&t, &plans)?)?;
                std::fs::write(&path, out + "\n")
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        SimCmd::Check { history } => {
            tokio::task::spawn_blocking(move || meridian_harness::sim_check::run(&history)).await?
        }
        SimCmd::Chart { results, svg } => {
            let name = results.display().to_string();
            let text =
                std::fs::read_to_string(&results).with_context(|| format!("reading {name}"))?;
            let out: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("{name} is not JSON"))?;
            if !out["runs"].is_array() {
                anyhow::bail!(
                    "{name} has no \"runs\" list: not a results file of `sim run --json`"
                );
            }
            std::fs::write(&svg, meridian_sim::svg(&out))
                .with_context(|| format!("writing {}", svg.display()))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The group that would own a domain for `owner`: the global group, or the region's own group
/// (the one named after it, else the first regional group at home there).
fn owner_group(t: &Topology, owner: &meridian_planner::Owner) -> Option<String> {
    match owner {
        meridian_planner::Owner::Global { .. } => t.global_group().map(|g| g.name.clone()),
        meridian_planner::Owner::Region(r) => t
            .groups
            .iter()
            .find(|g| g.home.as_deref() == Some(r) && g.name == *r)
            .or_else(|| t.groups.iter().find(|g| g.home.as_deref() == Some(r)))
            .map(|g| g.name.clone()),
    }
}

/// The plan as `meridian placement apply` reads it: per domain, the recommended owner and its
/// group, every candidate's predicted mean latency, and each timestamp profile's at that owner
/// with the one recommended.
pub fn plan_json(
    t: &Topology,
    plans: &[meridian_planner::DomainPlan],
) -> anyhow::Result<serde_json::Value> {
    let mut domains = Vec::new();
    for p in plans {
        let Some(best) = p.candidates.get(p.recommended) else {
            continue;
        };
        let group = owner_group(t, &best.owner).with_context(|| {
            format!(
                "no group of the topology is at home in {} ({})",
                best.owner, p.prefix
            )
        })?;
        domains.push(serde_json::json!({
            "prefix": p.prefix,
            "recommended": {"owner": best.owner.to_string(), "group": group, "mean_ms": best.weighted_ms},
            "candidates": p.candidates.iter().map(|c| serde_json::json!({
                "owner": c.owner.to_string(),
                "mean_ms": c.weighted_ms,
            })).collect::<Vec<_>>(),
            "recommended_profile": p.recommended_profile.to_string(),
            "profiles": p.profiles.iter().map(|e| serde_json::json!({
                "profile": e.profile.to_string(),
                "mean_ms": e.weighted_ms,
            })).collect::<Vec<_>>(),
        }));
    }
    Ok(serde_json::json!({ "domains": domains }))
}
