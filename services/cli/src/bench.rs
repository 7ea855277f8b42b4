//! `meridian bench`: closed-loop put and get workloads with N concurrent clients against a
//! running cluster; percentiles from hdrhistogram (via `meridian-loadgen`) and throughput.

use anyhow::Context;
use meridian_loadgen::{closed_loop, key, Outcome};
use meridian_sdk::{Client, Consistency};
use serde_json::json;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

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
    /// Key prefix (a domain of the topology; `meridian dev`'s default is us-east's).
    #[arg(long, default_value = "/us-east/bench/")]
    prefix: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    Put,
    Get,
}

async fn drive(
    clients: Arc<Vec<Client>>,
    workload: Workload,
    args: &BenchArgs,
    concurrency: usize,
) -> Outcome {
    let value = Arc::new(vec![b'x'; args.value_size]);
    let keys = args.keys;
    let prefix = Arc::new(args.prefix.clone());
    closed_loop(
        concurrency,
        Duration::from_secs(args.seconds),
        move |task, n| {
            let client = clients[task % clients.len()].clone();
            let value = value.clone();
            let prefix = prefix.clone();
            async move {
                let key = format!(
                    "{prefix}{}",
                    key(n, keys).rsplit('/').next().unwrap_or_default()
                );
                match workload {
                    Workload::Put => client.put(&key, value.as_slice()).await.is_ok(),
                    Workload::Get => client.get_with(&key, Consistency::Sequential).await.is_ok(),
                }
            }
        },
    )
    .await
}

/// Runs the put then get workload at each client count against `endpoints`.
pub async fn run(
    args: BenchArgs,
    endpoints: Vec<String>,
    options: meridian_sdk::Options,
) -> anyhow::Result<ExitCode> {
    println!(
        "{:<10} {:<6} {:>8} {:>12} {:>10} {:>10} {:>10} {:>8}",
        "system", "op", "clients", "ops/s", "p50 us", "p99 us", "p99.9 us", "errors"
    );
    for &concurrency in &args.clients {
        // Separate sessions, each with its own connections, shared round-robin by the tasks.
        let clients: Vec<Client> = (0..args.connections.min(concurrency).max(1))
            .map(|_| Client::new(endpoints.clone(), options.clone()))
            .collect::<Result<_, _>>()
            .context("creating clients")?;
        let clients = Arc::new(clients);
        for workload in [Workload::Put, Workload::Get] {
            let o = drive(clients.clone(), workload, &args, concurrency).await;
            let op = format!("{workload:?}").to_lowercase();
            println!(
                "{:<10} {:<6} {:>8} {:>12.0} {:>10} {:>10} {:>10} {:>8}",
                "meridian",
                op,
                concurrency,
                o.ops_per_sec(),
                o.us(0.5),
                o.us(0.99),
                o.us(0.999),
                o.errors
            );
            eprintln!(
                "{}",
                json!({"system": "meridian", "workload": op, "clients": concurrency, "ops": o.ops,
                       "errors": o.errors, "ops_per_sec": o.ops_per_sec(), "p50_us": o.us(0.5),
                       "p99_us": o.us(0.99), "p999_us": o.us(0.999)})
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
