//! `meridian dev`: a whole local cluster in this process — 3 nodes on distinct loopback
//! addresses, data in a temporary directory (or `--data-dir`, which survives restarts).

use anyhow::Context;
use meridian_sdk::{Client, Consistency};
use meridian_server::{Node, NodeConfig, Peer};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Keep data here (default: a temporary directory removed on exit).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Write this JSON file once the cluster serves writes.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Port every node listens on (each node has its own loopback address).
    #[arg(long, default_value_t = 7400)]
    port: u16,
    /// Number of voters.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
}

/// Longest `meridian dev` waits for its cluster to serve writes.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub const DEV_REGION: &str = "local";

pub fn node_address(id: u64, port: u16) -> String {
    format!("127.0.1.{id}:{port}")
}

pub async fn run(args: DevArgs) -> anyhow::Result<ExitCode> {
    if args.nodes == 0 || args.nodes > 9 {
        anyhow::bail!("--nodes must be between 1 and 9 (got {})", args.nodes);
    }
    let temp;
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::tempdir().context("creating a temporary data directory")?;
            temp.path().to_path_buf()
        }
    };
    let peers: Vec<Peer> = (1..=args.nodes)
        .map(|id| Peer {
            id,
            address: node_address(id, args.port),
        })
        .collect();
    let mut nodes = Vec::new();
    for p in &peers {
        let cfg = NodeConfig {
            node_id: p.id,
            region: DEV_REGION.into(),
            listen: p.address.clone(),
            data_dir: data_dir.join(format!("node-{}", p.id)),
            peers: peers.clone(),
            ..NodeConfig::default()
        };
        let node = Node::start(cfg)
            .await
            .with_context(|| format!("starting node {} on {}", p.id, p.address))?;
        nodes.push(node);
    }
    let endpoints: Vec<String> = peers.iter().map(|p| p.address.clone()).collect();
    let client = Client::new(endpoints.clone(), Default::default())?;
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    // Serving writes needs a leader confirmed by a quorum: a linearizable read proves both.
    loop {
        match client
            .get_with("/meridian", Consistency::Linearizable)
            .await
        {
            Ok(_) => break,
            Err(e) if tokio::time::Instant::now() > deadline => {
                anyhow::bail!("the cluster did not become ready within {READY_TIMEOUT:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    println!(
        "meridian dev: {} nodes in region {DEV_REGION}, data in {}",
        nodes.len(),
        data_dir.display()
    );
    println!("endpoint: {}", endpoints.join(","));
    println!("try: meridian --endpoint {} put /hello world", endpoints[0]);
    if let Some(path) = &args.ready_file {
        let ready = json!({
            "regions": { DEV_REGION: { "endpoint": endpoints[0], "endpoints": endpoints } },
            "data_dir": data_dir,
        });
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&ready)?)
            .context("writing the ready file")?;
        std::fs::rename(&tmp, path).context("writing the ready file")?;
    }
    crate::wait_for_signal().await;
    println!("meridian dev: stopping");
    for n in nodes {
        n.shutdown().await;
    }
    Ok(ExitCode::SUCCESS)
}
