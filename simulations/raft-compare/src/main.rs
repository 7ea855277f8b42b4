//! raft-compare: the measurement behind issue 13 — openraft 0.9.25 against 0.10.0-alpha.37 on
//! one model of a Meridian group: three voters close together, one learner far away, a log
//! whose flush takes a fixed time. Every node runs in this process over an in-process network
//! with injected one-way delays; see README.md.

mod common;
#[cfg(test)]
mod compat;
mod v09;
mod v10;

use common::{run_reads, run_writes, Cluster, DelayLine, Marks, Params, Phase, Proposer, ReadKind};
use hdrhistogram::Histogram;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

/// Log indexes the timeline has room for (3 × 8 bytes each).
const MARKS_CAPACITY: usize = 1 << 22;

/// One column of the table: a version, its transport, and whether Meridian's proposer batches
/// client writes in front of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Impl {
    version: Version,
    proposer: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    /// openraft 0.9.25, `RaftNetwork::append_entries`.
    V09,
    /// openraft 0.10.0-alpha.37, unary `append_entries` (default sequential `stream_append`).
    V10,
    /// openraft 0.10.0-alpha.37, pipelined `stream_append`.
    V10Pipe,
}

impl Impl {
    const ALL: &'static [&'static str] = &["v09", "v09-prop", "v10", "v10-pipe", "v10-pipe-prop"];

    fn name(self) -> String {
        let version = match self.version {
            Version::V09 => "0.9.25",
            Version::V10 => "0.10-α37 unary",
            Version::V10Pipe => "0.10-α37 pipelined",
        };
        if self.proposer {
            format!("{version} + proposer")
        } else {
            version.to_string()
        }
    }

    fn parse(s: &str) -> Result<Self, String> {
        let (base, proposer) = match s.strip_suffix("-prop") {
            Some(base) => (base, true),
            None => (s, false),
        };
        let version = match base {
            "v09" => Version::V09,
            "v10" => Version::V10,
            "v10-pipe" => Version::V10Pipe,
            _ => {
                return Err(format!(
                    "unknown implementation {s:?} ({})",
                    Self::ALL.join(", ")
                ))
            }
        };
        Ok(Self { version, proposer })
    }
}

struct Args {
    impls: Vec<Impl>,
    params: Params,
    warmup: Duration,
    reads: Duration,
}

const USAGE: &str =
    "usage: raft-compare [--impls v09,v09-prop,v10,v10-pipe,v10-pipe-prop] [--secs 5]
    [--clients 16] [--voter-one-way-ms 0.5] [--learner-one-way-ms 37.5] [--fsync-ms 4]
    [--heartbeat-ms 100] [--warmup-secs 1] [--read-secs 2]
Default implementations: v09, v09-prop, v10, v10-pipe (-prop: Meridian's batching proposer in
front of client writes).";

fn parse_args() -> Result<Args, String> {
    let ms = |v: f64| Duration::from_secs_f64(v / 1000.0);
    let mut args = Args {
        impls: ["v09", "v09-prop", "v10", "v10-pipe"]
            .iter()
            .map(|s| Impl::parse(s))
            .collect::<Result<_, _>>()?,
        params: Params {
            voter_one_way: ms(0.5),
            learner_one_way: ms(37.5),
            fsync: ms(4.0),
            heartbeat: ms(100.0),
            phase: Duration::from_secs(5),
            clients: 16,
        },
        warmup: Duration::from_secs(1),
        reads: Duration::from_secs(2),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.into());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let num = || {
            value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| format!("{flag}: {value:?} is not a non-negative number"))
        };
        match flag.as_str() {
            "--impls" => {
                args.impls = value
                    .split(',')
                    .map(Impl::parse)
                    .collect::<Result<_, _>>()?
            }
            "--secs" => args.params.phase = Duration::from_secs_f64(num()?),
            "--clients" => args.params.clients = num()?.max(1.0) as u32,
            "--voter-one-way-ms" => args.params.voter_one_way = ms(num()?),
            "--learner-one-way-ms" => args.params.learner_one_way = ms(num()?),
            "--fsync-ms" => args.params.fsync = ms(num()?),
            "--heartbeat-ms" => args.params.heartbeat = ms(num()?.max(1.0)),
            "--warmup-secs" => args.warmup = Duration::from_secs_f64(num()?),
            "--read-secs" => args.reads = Duration::from_secs_f64(num()?),
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    Ok(args)
}

/// Everything one implementation's run measured.
struct Run {
    one_client: Phase,
    many_clients: Phase,
    lag_flushed: Histogram<u64>,
    lag_applied: Histogram<u64>,
    lag_missing: u64,
    learner_caught_up: bool,
    read_index: Phase,
    lease_read: Option<Phase>,
    elections: String,
}

/// The phases, the same for every implementation.
async fn measure<C: Cluster>(
    cluster: Arc<C>,
    marks: &Marks,
    args: &Args,
    term: impl Fn() -> (u64, Option<u64>),
    lease: bool,
) -> Run {
    let p = &args.params;
    let caught_up = marks
        .wait_learner(marks.last_committed(), Duration::from_secs(10))
        .await;
    let before = term();
    if !args.warmup.is_zero() {
        run_writes(cluster.clone(), p.clients, args.warmup).await;
    }
    let one_client = run_writes(cluster.clone(), 1, p.phase).await;
    let many_clients = run_writes(cluster.clone(), p.clients, p.phase).await;

    // The learner gets up to 10 s to catch up with the last write of the loaded phase.
    let (mut lag_flushed, mut lag_applied, mut lag_missing) =
        (common::histogram(), common::histogram(), 0);
    if let Some((lo, hi)) = many_clients.indexes {
        marks.wait_learner(hi, Duration::from_secs(10)).await;
        (lag_flushed, lag_applied, lag_missing) = marks.learner_lag(lo, hi);
    }

    let read_index = run_reads(cluster.clone(), ReadKind::ReadIndex, args.reads).await;
    let lease_read = if lease {
        Some(run_reads(cluster.clone(), ReadKind::LeaseRead, args.reads).await)
    } else {
        None
    };
    let after = term();
    let elections = if before == after {
        format!("none (term {})", after.0)
    } else {
        format!(
            "term {} → {}, leader {:?} → {:?}",
            before.0, after.0, before.1, after.1
        )
    };
    Run {
        one_client,
        many_clients,
        lag_flushed,
        lag_applied,
        lag_missing,
        learner_caught_up: caught_up,
        read_index,
        lease_read,
        elections,
    }
}

fn run_one(which: Impl, args: &Args, delay: &DelayLine) -> Result<Run, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let run = runtime.block_on(async {
        let marks = Arc::new(Marks::new(MARKS_CAPACITY));
        match which.version {
            Version::V09 => {
                let c = Arc::new(
                    v09::Cluster09::start(&args.params, delay.clone(), marks.clone()).await?,
                );
                let t = c.clone();
                let term = move || t.term();
                let run = if which.proposer {
                    let p = Arc::new(Proposer::start(c.clone()));
                    measure(p, &marks, args, term, false).await
                } else {
                    measure(c.clone(), &marks, args, term, false).await
                };
                c.shutdown().await;
                Ok::<_, String>(run)
            }
            Version::V10 | Version::V10Pipe => {
                let pipelined = which.version == Version::V10Pipe;
                let c = Arc::new(
                    v10::Cluster10::start(&args.params, delay.clone(), marks.clone(), pipelined)
                        .await?,
                );
                let t = c.clone();
                let term = move || t.term();
                let run = if which.proposer {
                    let p = Arc::new(Proposer::start(c.clone()));
                    measure(p, &marks, args, term, true).await
                } else {
                    measure(c.clone(), &marks, args, term, true).await
                };
                c.shutdown().await;
                Ok(run)
            }
        }
    })?;
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(run)
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn quantiles(h: &Histogram<u64>, qs: &[f64]) -> String {
    if h.is_empty() {
        return "–".into();
    }
    qs.iter()
        .map(|q| ms(h.value_at_quantile(*q)))
        .collect::<Vec<_>>()
        .join(" / ")
}

fn errors(p: &Phase) -> String {
    match &p.first_error {
        None => String::new(),
        Some(e) => format!(" ({} errors, first: {e})", p.errors),
    }
}

fn table(args: &Args, runs: &[(Impl, Run)]) -> String {
    let p = &args.params;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "voters {:?} one way, learner {:?} one way, fsync {:?}, heartbeat {:?}, \
         election timeout {:?} ms, {:?} per phase, {} clients\n",
        p.voter_one_way,
        p.learner_one_way,
        p.fsync,
        p.heartbeat,
        p.election_timeout_ms(),
        p.phase,
        p.clients
    );
    let header: Vec<String> = runs.iter().map(|(i, _)| i.name()).collect();
    let _ = writeln!(out, "| metric | {} |", header.join(" | "));
    let _ = writeln!(out, "|---|{}", "---:|".repeat(runs.len()));
    let mut row = |name: &str, cell: &dyn Fn(&Run) -> String| {
        let cells: Vec<String> = runs.iter().map(|(_, r)| cell(r)).collect();
        let _ = writeln!(out, "| {name} | {} |", cells.join(" | "));
    };
    row("(a) 1 client: write p50 / p99 (ms)", &|r| {
        format!(
            "{}{}",
            quantiles(&r.one_client.latency, &[0.5, 0.99]),
            errors(&r.one_client)
        )
    });
    row("(a) 1 client: writes/s", &|r| {
        format!("{:.0}", r.one_client.rate())
    });
    row(&format!("(b) {} clients: writes/s", p.clients), &|r| {
        format!("{:.0}", r.many_clients.rate())
    });
    row(
        &format!("(b) {} clients: write p50 / p99 (ms)", p.clients),
        &|r| {
            format!(
                "{}{}",
                quantiles(&r.many_clients.latency, &[0.5, 0.99]),
                errors(&r.many_clients)
            )
        },
    );
    row("(c) learner lag, commit → applied p50 / p95 (ms)", &|r| {
        quantiles(&r.lag_applied, &[0.5, 0.95])
    });
    row(
        "(c) learner lag, commit → in its log p50 / p95 (ms)",
        &|r| quantiles(&r.lag_flushed, &[0.5, 0.95]),
    );
    row("(c) entries the learner lacked after 10 s", &|r| {
        r.lag_missing.to_string()
    });
    row("learner caught up before the load (10 s limit)", &|r| {
        if r.learner_caught_up { "yes" } else { "no" }.to_string()
    });
    row("read, quorum round (ReadIndex) p50 / p99 (ms)", &|r| {
        format!(
            "{}{}",
            quantiles(&r.read_index.latency, &[0.5, 0.99]),
            errors(&r.read_index)
        )
    });
    row("read, LeaseRead p50 / p99 (ms)", &|r| match &r.lease_read {
        None => "n/a".into(),
        Some(p) => format!("{}{}", quantiles(&p.latency, &[0.5, 0.99]), errors(p)),
    });
    row("elections during the run", &|r| r.elections.clone());
    out
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let delay = DelayLine::start();
    let mut runs = Vec::new();
    for which in args.impls.clone() {
        eprintln!("running {} ...", which.name());
        match run_one(which, &args, &delay) {
            Ok(run) => runs.push((which, run)),
            Err(e) => {
                eprintln!("{}: {e}", which.name());
                std::process::exit(1);
            }
        }
    }
    delay.stop();
    print!("{}", table(&args, &runs));
}
