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
    Run(crate::sim_run::SimRunArgs),
    /// Predict, per domain and allowed owner, the latency every region's clients would see;
    /// recommend an owner.
    Plan {
        #[arg(long)]
        topology: PathBuf,
        #[arg(long)]
        workload: PathBuf,
    },
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
        SimCmd::Run(args) => crate::sim_run::run(args).await,
        SimCmd::Plan { topology, workload } => {
            let t = Topology::load(&topology)?;
            let name = workload.display().to_string();
            let text =
                std::fs::read_to_string(&workload).with_context(|| format!("reading {name}"))?;
            let w = meridian_planner::Workload::parse(&text, &name)?;
            let plans = meridian_planner::plan(&t, &w, &name)?;
            print!("{}", meridian_planner::render(&plans));
            Ok(ExitCode::SUCCESS)
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
