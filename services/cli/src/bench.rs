//! `meridian bench`: closed-loop put and get workloads with N concurrent clients against a
//! running cluster, latencies in an hdrhistogram, percentiles and throughput printed.

use anyhow::Context;
use hdrhistogram::Histogram;
use meridian_sdk::{Client, Consistency};
use serde_json::json;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Concurrent clients, comma-separated (one run per value).
    #[arg(long, default_value = "1,16,256", value_delimiter = ',')]
    clients: Vec<usize>,
    /// Seconds per workload and client count.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Distinct keys written and read.
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    /// Connections shared by the clients (HTTP/2 multiplexes the rest).
    #[arg(long, default_value_t = 8)]
    connections: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Put,
    Get,
}

pub struct Outcome {
    pub ops: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub hist: Histogram<u64>,
}

impl Outcome {
    pub fn throughput(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
    pub fn json(&self, system: &str, workload: Workload, clients: usize) -> serde_json::Value {
        json!({
            "system": system, "workload": format!("{workload:?}").to_lowercase(), "clients": clients,
            "ops": self.ops, "errors": self.errors, "ops_per_sec": self.throughput(),
            "p50_us": self.hist.value_at_quantile(0.5), "p99_us": self.hist.value_at_quantile(0.99),
            "p999_us": self.hist.value_at_quantile(0.999),
        })
    }
}

async fn drive(
    clients: Vec<Client>,
    workload: Workload,
    concurrency: usize,
    duration: Duration,
    keys: usize,
    value: Arc<Vec<u8>>,
) -> anyhow::Result<Outcome> {
    let start = Instant::now();
    let stop = start + duration;
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let client = clients[i % clients.len()].clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
            let mut errors = 0u64;
            let mut n = i;
            while Instant::now() < stop {
                let key = format!("/bench/k{:06}", n % keys);
                n += concurrency;
                let t = Instant::now();
                let ok = match workload {
                    Workload::Put => client.put(&key, value.as_slice()).await.is_ok(),
                    Workload::Get => client.get_with(&key, Consistency::Sequential).await.is_ok(),
                };
                if ok {
                    hist.saturating_record(t.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                }
            }
            (hist, errors)
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await?;
        hist.add(&h)?;
        errors += e;
    }
    Ok(Outcome {
        ops: hist.len(),
        errors,
        elapsed: start.elapsed(),
        hist,
    })
}

/// Runs the put then get workload at each client count against `endpoints`.
pub async fn run(args: BenchArgs, endpoints: Vec<String>) -> anyhow::Result<ExitCode> {
    let value = Arc::new(vec![b'x'; args.value_size]);
    println!(
        "{:<10} {:<6} {:>8} {:>12} {:>10} {:>10} {:>10} {:>8}",
        "system", "op", "clients", "ops/s", "p50 us", "p99 us", "p99.9 us", "errors"
    );
    for &concurrency in &args.clients {
        // Separate sessions, each its own connection set, shared round-robin by the tasks.
        let clients: Vec<Client> = (0..args.connections.min(concurrency).max(1))
            .map(|_| Client::new(endpoints.clone(), Default::default()))
            .collect::<Result<_, _>>()
            .context("creating clients")?;
        for workload in [Workload::Put, Workload::Get] {
            let o = drive(
                clients.clone(),
                workload,
                concurrency,
                Duration::from_secs(args.seconds),
                args.keys,
                value.clone(),
            )
            .await?;
            println!(
                "{:<10} {:<6} {:>8} {:>12.0} {:>10} {:>10} {:>10} {:>8}",
                "meridian",
                format!("{workload:?}").to_lowercase(),
                concurrency,
                o.throughput(),
                o.hist.value_at_quantile(0.5),
                o.hist.value_at_quantile(0.99),
                o.hist.value_at_quantile(0.999),
                o.errors
            );
            eprintln!("{}", o.json("meridian", workload, concurrency));
        }
    }
    Ok(ExitCode::SUCCESS)
}
