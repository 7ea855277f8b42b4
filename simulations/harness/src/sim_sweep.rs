//! `meridian sim sweep SCENARIO --seeds N [--from S] [--jobs J]`: the deterministic simulation
//! over many seeds, each with the faults its seed draws (the scenario's `random_faults`), every
//! history checked by the sequential-consistency and linearizability checkers. A progress line
//! while it runs; for every failing seed the violation, the drawn schedule, the shortest failing
//! prefix of the history and the command that replays it; a summary at the end. Exits 1 if any
//! seed failed.

use anyhow::Context;
use meridian_sim::scenario::parse_scenario;
use meridian_sim::sweep::{run_seed, RunVerdict};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

/// Most seeds one sweep runs (a long sweep is several commands with `--from`).
const SEEDS_MAX: u64 = 10_000_000;
/// Most operations of a shortened history printed.
const PRINT_OPS_MAX: usize = 20;

#[derive(clap::Args, Debug)]
pub struct SimSweepArgs {
    /// The scenario file (see simulations/scenarios/sweep.toml).
    scenario: PathBuf,
    /// How many seeds.
    #[arg(long)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    from: u64,
    /// Seeds simulated at once (each on its own thread).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Stop after the first failing seed.
    #[arg(long)]
    fail_fast: bool,
    /// Write every run's history (writes and linearizable reads) into this directory as Jepsen
    /// EDN, `seed-S-runK-MODE.edn`, for `meridian sim check` or Knossos/Elle.
    #[arg(long)]
    export: Option<PathBuf>,
}

struct Totals {
    runs: u64,
    operations: u64,
    watch_events: u64,
    holds: u64,
    moves: u64,
    faults: u64,
    failed_seeds: Vec<u64>,
}

pub fn run(args: SimSweepArgs) -> anyhow::Result<ExitCode> {
    let name = args.scenario.display().to_string();
    let text =
        std::fs::read_to_string(&args.scenario).with_context(|| format!("reading {name}"))?;
    let s = parse_scenario(&text, &name)?;
    if args.seeds == 0 || args.seeds > SEEDS_MAX {
        anyhow::bail!(
            "--seeds must be between 1 and {SEEDS_MAX} (got {})",
            args.seeds
        );
    }
    if args.jobs == 0 || args.jobs > 64 {
        anyhow::bail!("--jobs must be between 1 and 64 (got {})", args.jobs);
    }
    let end = args
        .from
        .checked_add(args.seeds)
        .context("--from + --seeds is past the last seed")?;
    let base = match &s.topology {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        None => meridian_topology::LOCAL_3REGION.to_string(),
    };
    // Fail on a bad scenario or topology before starting any thread.
    meridian_topology::Topology::parse(&base, "scenario topology")?;
    if s.modes.iter().any(|m| m == "c") {
        eprintln!(
            "note: mode c runs without sync-on-switch and is expected to fail sequential \
             consistency; its failures count like any other"
        );
    }
    if let Some(dir) = &args.export {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the export directory {}", dir.display()))?;
    }
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(args.from));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (tx, rx) = mpsc::sync_channel::<(u64, anyhow::Result<Vec<RunVerdict>>)>(args.jobs * 2);
    let mut workers = Vec::new();
    for _ in 0..args.jobs {
        let (s, base, next, stop, tx) = (
            s.clone(),
            base.clone(),
            next.clone(),
            stop.clone(),
            tx.clone(),
        );
        workers.push(std::thread::spawn(move || loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let seed = next.fetch_add(1, Ordering::Relaxed);
            if seed >= end {
                return;
            }
            let verdict = run_seed(&s, &base, seed);
            if tx.send((seed, verdict)).is_err() {
                return;
            }
        }));
    }
    drop(tx);
    let mut totals = Totals {
        runs: 0,
        operations: 0,
        watch_events: 0,
        holds: 0,
        moves: 0,
        faults: 0,
        failed_seeds: Vec::new(),
    };
    let mut done = 0u64;
    for (seed, verdict) in rx {
        done += 1;
        // The scenario was checked before any seed ran: a simulation that stops (a node that
        // could not start again on what its disk kept, say) is that seed's failure.
        let runs = match verdict {
            Ok(runs) => runs,
            Err(e) => {
                totals.failed_seeds.push(seed);
                eprintln!();
                eprintln!("FAILED seed {seed}: the simulation stopped: {e:#}");
                eprintln!("  replay: meridian sim run {name} --deterministic --seed {seed}");
                if args.fail_fast {
                    stop.store(true, Ordering::Relaxed);
                }
                continue;
            }
        };
        if let Some(dir) = &args.export {
            for (k, v) in runs.iter().enumerate() {
                let path = dir.join(format!("seed-{seed}-run{k}-{}.edn", v.mode));
                std::fs::write(&path, &v.history)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        for v in &runs {
            totals.runs += 1;
            totals.operations += v.operations as u64;
            totals.watch_events += v.watch.as_ref().map_or(0, |n| *n as u64);
            totals.holds += v.locks.as_ref().map_or(0, |n| *n as u64);
            totals.moves += v.moves_committed as u64;
            totals.faults += (v.faults + v.skewed) as u64;
        }
        let failures: Vec<&RunVerdict> = runs.iter().filter(|v| v.failed()).collect();
        if !failures.is_empty() {
            totals.failed_seeds.push(seed);
            eprintln!();
            for v in failures {
                report_failure(&name, seed, v);
            }
            if args.fail_fast {
                stop.store(true, Ordering::Relaxed);
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        let eta = elapsed / done as f64 * (args.seeds - done) as f64;
        eprint!(
            "\r[{done}/{}] seeds, {} failed, {:.0} s elapsed, ~{:.0} s left   ",
            args.seeds,
            totals.failed_seeds.len(),
            elapsed,
            eta
        );
        let _ = std::io::stderr().flush();
    }
    eprintln!();
    for w in workers {
        let _ = w.join();
    }
    let wall = started.elapsed().as_secs_f64();
    println!(
        "sweep {}: seeds {}..{} ({done} run), {} simulated runs, {} operations, {} watch events \
         and {} lock holds checked, {} domain moves committed, {} faults injected, {} failing \
         seed(s){}; {:.0} s wall, \
         {:.0} seeds/hour",
        s.name,
        args.from,
        end - 1,
        totals.runs,
        totals.operations,
        totals.watch_events,
        totals.holds,
        totals.moves,
        totals.faults,
        totals.failed_seeds.len(),
        if totals.failed_seeds.is_empty() {
            String::new()
        } else {
            format!(" ({:?})", totals.failed_seeds)
        },
        wall,
        done as f64 / wall.max(1e-9) * 3600.0
    );
    Ok(if totals.failed_seeds.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn report_failure(scenario: &str, seed: u64, v: &RunVerdict) {
    let mix = v.mix;
    eprintln!(
        "FAILED seed {seed}, mode {}, read {} local {} burst {} ({} operations, {} without an answer)",
        v.mode, mix.read_ratio, mix.locality, mix.burst, v.operations, v.errors
    );
    if let Err(e) = &v.sequential {
        eprintln!("  sequential consistency: {e}");
    }
    if let Err(e) = &v.linearizable {
        eprintln!("  linearizability: {e}");
    }
    if let Err(e) = &v.watch {
        eprintln!("  watch validators: {e}");
    }
    if let Err(e) = &v.locks {
        eprintln!("  locks: {e}");
    }
    if let Err(e) = &v.independent {
        eprintln!("  the checkers DISAGREE: {e}");
    }
    if v.schedule.is_empty() {
        eprintln!("  drawn faults: none");
    } else {
        eprintln!("  drawn faults:");
        for line in v.schedule.lines() {
            eprintln!("    {line}");
        }
    }
    if let Some(sh) = &v.shrunk {
        eprintln!(
            "  shortest failing prefix: {} of {} operations (started before virtual {:.3} s){}",
            sh.records.len(),
            v.operations,
            sh.cut_us as f64 / 1e6,
            if sh.records.len() > PRINT_OPS_MAX {
                format!(", its last {PRINT_OPS_MAX}:")
            } else {
                ":".into()
            }
        );
        let mut ops: Vec<_> = sh.records.iter().collect();
        ops.sort_by_key(|r| r.start_us);
        for r in ops.iter().skip(ops.len().saturating_sub(PRINT_OPS_MAX)) {
            let end = r.end_us.map_or("no answer".to_string(), |e| {
                format!("{:.3} s", e as f64 / 1e6)
            });
            eprintln!(
                "    {:.3} s .. {end}  client {} ({}): {}",
                r.start_us as f64 / 1e6,
                r.client,
                r.region,
                r.op
            );
        }
    }
    eprintln!("  replay: meridian sim run {scenario} --deterministic --seed {seed}");
}
