//! `meridian dev`: a whole local cluster in this process. By default the 3-region topology
//! (`topology/local-3region.toml`): 3 voters per region, learners of every regional group in
//! the other regions, the global group, and the WAN emulator between regions — every
//! inter-region connection goes through a relay that adds the topology's latency. Nodes sit
//! on distinct loopback addresses; data lives in a temporary directory (or `--data-dir`, which
//! survives restarts). `--nodes N` runs the old single-region cluster instead.

use crate::dev_security::DevSecurity;
use anyhow::Context;
use meridian_sdk::{Client, Consistency, Options};
use meridian_server::{Node, NodeConfig, Peer};
use meridian_topology::Topology;
use meridian_wan::{LinkSpec, Wan};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

// The default topology, built in so that `meridian dev` needs no file.
use meridian_topology::LOCAL_3REGION;

#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Keep data here (default: a temporary directory removed on exit).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Write this JSON file once the cluster serves reads and writes in every region.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Port every node listens on (each node has its own loopback address).
    #[arg(long, default_value_t = 7400)]
    port: u16,
    /// Run a single-region cluster of N voters instead of a topology.
    #[arg(long)]
    nodes: Option<u64>,
    /// Topology file (default: the built-in local-3region).
    #[arg(long)]
    topology: Option<PathBuf>,
    /// Run without the WAN emulator (regions talk directly, no added latency).
    #[arg(long)]
    no_wan: bool,
    /// Extra random delay per chunk on every WAN link, in ms (never reorders bytes).
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Bandwidth cap per connection and direction on every WAN link, in Mbit/s.
    #[arg(long)]
    bandwidth_mbit: Option<u64>,
    /// Address of the WAN emulator's control port (`meridian wan cut|heal|status`).
    #[arg(long, default_value = "127.0.0.1:0")]
    wan_control: SocketAddr,
    /// Run every node as its own child process (`meridian dev-node`), so that tests can
    /// SIGKILL, SIGSTOP and restart single nodes; the ready file lists each node's pid and the
    /// command that restarts it.
    #[arg(long)]
    pub(crate) processes: bool,
    /// How reads that switch groups stay sequentially consistent: `sync` (a sync before the
    /// read), `local-writes` or `global-reads` (closed timestamps: no sync; global-reads also
    /// makes each write wait out its lead; docs/closed-timestamps.md).
    #[arg(long, value_enum, default_value_t = DevProfile::Sync)]
    reads: DevProfile,
    /// TEST ONLY: serve reads by closed timestamps without waiting for the replica's closed
    /// timestamp (breaks sequential consistency; proves the x/y test can fail).
    #[arg(long, hide = true)]
    unsafe_read_before_closed: bool,
    /// TEST ONLY: turn off the router's sync-on-switch, which breaks sequential consistency
    /// across groups (the anomaly test uses it to prove it can fail).
    #[arg(long, hide = true)]
    unsafe_no_sync: bool,
    /// Run without security: no TLS, nodes check no tokens (docs/security.md).
    #[arg(long)]
    insecure: bool,
    /// Tokens without TLS: plain TCP between nodes and to clients (to measure what TLS costs,
    /// or behind a mesh that encrypts; docs/security.md).
    #[arg(long, conflicts_with = "insecure")]
    no_tls: bool,
    /// Port of every node's HTTP listener (Prometheus /metrics, /healthz, /readyz), on the
    /// node's own address: by default the gRPC port + 1; 0 picks a free port per node. The
    /// ready file lists them under "http".
    #[arg(long)]
    http_port: Option<u16>,
}

/// Longest `meridian dev` waits for its cluster to serve.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub const DEV_REGION: &str = "local";

pub fn node_address(id: u64, port: u16) -> String {
    format!("127.0.1.{id}:{port}")
}

/// `host:port` with the port replaced.
fn with_port(addr: &str, port: u16) -> String {
    match addr.rsplit_once(':') {
        Some((host, _)) => format!("{host}:{port}"),
        None => format!("{addr}:{port}"),
    }
}

pub async fn run(args: DevArgs) -> anyhow::Result<ExitCode> {
    // A broken MERIDIAN_TELEMETRY__* stops the cluster before it starts, as it stops a node.
    meridian_server::config::TelemetryConfig::from_env()?;
    let temp;
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::tempdir().context("creating a temporary data directory")?;
            temp.path().to_path_buf()
        }
    };
    match args.nodes {
        Some(n) => run_single_region(&args, n, data_dir).await,
        None => run_topology(&args, data_dir).await,
    }
}

/// Security for `nodes` (id, address) unless `--insecure`.
fn secure(
    args: &DevArgs,
    data_dir: &std::path::Path,
    nodes: &[(u64, String)],
) -> anyhow::Result<Option<DevSecurity>> {
    if args.insecure {
        return Ok(None);
    }
    Ok(Some(DevSecurity::prepare(
        data_dir,
        args.port,
        nodes,
        !args.no_tls,
    )?))
}

/// The HTTP listener of the node at `address` (host:port): on its host, at `--http-port` (0: a
/// free port found now) or the gRPC port + 1.
fn http_listen(args: &DevArgs, address: &str) -> anyhow::Result<String> {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    let port = match args.http_port {
        Some(0) => std::net::TcpListener::bind((host, 0))
            .and_then(|l| l.local_addr())
            .with_context(|| format!("finding a free HTTP port on {host}"))?
            .port(),
        Some(p) => p,
        None => args
            .port
            .checked_add(1)
            .context("--port 65535 leaves no port for HTTP: give --http-port")?,
    };
    Ok(with_port(address, port))
}

/// Makes `cfg` as secure as the dev is.
fn configure(security: Option<&DevSecurity>, cfg: &mut NodeConfig) {
    match security {
        Some(s) => s.apply(cfg),
        None => cfg.security.mode = meridian_server::config::SecurityMode::Insecure,
    }
}

/// Client options carrying the dev's root token (over TLS unless `--no-tls`), if security is
/// on.
fn options(security: Option<&DevSecurity>) -> anyhow::Result<Options> {
    match security {
        Some(s) => s.options(),
        None => Ok(Options::default()),
    }
}

/// What `meridian dev` says about security, and the ready file's fields for it.
fn announce(security: Option<&DevSecurity>) -> serde_json::Value {
    match security {
        Some(s) => {
            println!("  {}", s.describe());
            json!({"token": s.token, "token_file": s.token_file, "root_public_key": s.public_key,
                   "ca": s.ca_file})
        }
        None => {
            println!("  security off (--insecure): no TLS, nodes check no tokens");
            json!({})
        }
    }
}

/// `ready` with the fields of `extra` added.
fn merged(mut ready: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    if let (Some(r), serde_json::Value::Object(e)) = (ready.as_object_mut(), extra) {
        r.extend(e);
    }
    ready
}

async fn run_topology(args: &DevArgs, data_dir: PathBuf) -> anyhow::Result<ExitCode> {
    let mut topology = match &args.topology {
        Some(path) => Topology::load(path)?,
        None => Topology::parse(LOCAL_3REGION, "local-3region.toml (built in)")?,
    };
    for n in &mut topology.nodes {
        n.address = with_port(&n.address, args.port);
    }
    let topology = Arc::new(topology);
    let security = secure(
        args,
        &data_dir,
        &topology
            .nodes
            .iter()
            .map(|n| (n.id, n.address.clone()))
            .collect::<Vec<_>>(),
    )?;
    let security = security.as_ref();

    // The WAN emulator: one relay per (viewing region, node of another region).
    let wan = Wan::new();
    let mut relays = Vec::new();
    let mut dial: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let control = if args.no_wan {
        None
    } else {
        for (i, a) in topology.regions.iter().enumerate() {
            for b in topology.regions.iter().skip(i + 1) {
                wan.set_link(
                    &a.name,
                    &b.name,
                    LinkSpec {
                        jitter: Duration::from_millis(args.jitter_ms),
                        bandwidth_bytes_per_sec: args.bandwidth_mbit.map(|m| m * 1_000_000 / 8),
                        ..LinkSpec::from_rtt_ms(topology.rtt_ms(&a.name, &b.name))
                    },
                );
            }
        }
        for (viewer, region) in topology.regions.iter().enumerate() {
            for n in topology.nodes.iter().filter(|n| n.region != region.name) {
                let listen = meridian_deploy::relay_address(viewer, n.id, args.port);
                let target: SocketAddr = n
                    .address
                    .parse()
                    .with_context(|| format!("node {} address {}", n.id, n.address))?;
                let relay = wan
                    .relay(
                        listen
                            .parse()
                            .with_context(|| format!("relay address {listen}"))?,
                        &region.name,
                        &n.region,
                        target,
                    )
                    .await
                    .with_context(|| format!("starting the WAN relay {listen} -> {target}"))?;
                dial.entry(region.name.clone())
                    .or_default()
                    .insert(n.address.clone(), relay.local_addr.to_string());
                relays.push(relay);
            }
        }
        let (addr, _task) = meridian_wan::serve_control(wan.clone(), args.wan_control)
            .await
            .context("starting the WAN emulator's control port")?;
        Some(addr)
    };

    let mut nodes = Vec::new();
    let mut children = Vec::new();
    let mut node_info = serde_json::Map::new();
    let mut http = serde_json::Map::new();
    for n in &topology.nodes {
        let mut cfg = NodeConfig {
            node_id: n.id,
            region: n.region.clone(),
            listen: n.address.clone(),
            advertise: Some(n.address.clone()),
            data_dir: data_dir.join(format!("node-{}", n.id)),
            dial: dial.get(&n.region).cloned().unwrap_or_default(),
            router: meridian_server::config::RouterConfig {
                sync_on_switch: !args.unsafe_no_sync,
            },
            ..NodeConfig::default()
        };
        cfg.timestamps.profile = args.reads.profile();
        cfg.limits.inject_read_before_closed = args.unsafe_read_before_closed;
        configure(security, &mut cfg);
        let listen = http_listen(args, &n.address)?;
        http.insert(n.id.to_string(), json!(listen));
        cfg.http.listen = Some(listen);
        if args.processes {
            let (child, argv) = spawn_node(args, &cfg, &data_dir)?;
            node_info.insert(
                n.id.to_string(),
                json!({"pid": child.id(), "address": n.address, "region": n.region, "restart": argv}),
            );
            children.push(child);
            continue;
        }
        let node = Node::start_with(cfg, topology.clone())
            .await
            .with_context(|| format!("starting node {} on {}", n.id, n.address))?;
        nodes.push(node);
    }

    let mut regions = serde_json::Map::new();
    for r in &topology.regions {
        let endpoints: Vec<String> = topology
            .nodes
            .iter()
            .filter(|n| n.region == r.name)
            .map(|n| n.address.clone())
            .collect();
        regions.insert(
            r.name.clone(),
            json!({"endpoint": endpoints.first(), "endpoints": endpoints, "tags": r.tags}),
        );
    }
    // Ready = from every region, a linearizable read of every domain succeeds: each group has
    // a leader confirmed by a quorum, and each region's replica knows it.
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    for r in &topology.regions {
        let Some(first) = topology.nodes.iter().find(|n| n.region == r.name) else {
            continue;
        };
        let client = Client::new(vec![first.address.clone()], options(security)?)?;
        for d in topology.placement().domains() {
            let probe = format!("{}meridian-ready", d.prefix);
            wait_ready(&client, &probe, deadline).await?;
        }
    }
    println!(
        "meridian dev: topology {} — {} regions, {} nodes, {} groups; data in {}",
        topology.name,
        topology.regions.len(),
        nodes.len() + children.len(),
        topology.groups.len(),
        data_dir.display()
    );
    for r in &topology.regions {
        if let Some(ep) = regions[&r.name]["endpoint"].as_str() {
            println!("  region {:<14} endpoint {ep}", r.name);
        }
    }
    for d in topology.placement().domains() {
        let owner = topology.group(d.group).map_or("?", |g| g.name.as_str());
        println!("  domain {:<20} -> group {owner}", d.prefix);
    }
    match control {
        Some(c) => println!("  WAN emulator control: {c}  (meridian wan status --control {c})"),
        None => println!("  WAN emulator: off"),
    }
    if let Some(first) = http.values().next().and_then(|v| v.as_str()) {
        println!("  metrics: http://{first}/metrics (every node: \"http\" in the ready file)");
        println!("  status page and HTTP/JSON gateway: http://{first}/ (docs/http.md)");
    }
    if let Some(first) = topology.nodes.first() {
        println!(
            "try: meridian --endpoint {} put /{}/hello world",
            first.address, first.region
        );
    }
    let secure = announce(security);
    if let Some(path) = &args.ready_file {
        let ready = json!({
            "topology": topology.name,
            "regions": regions,
            "wan_control": control.map(|c| c.to_string()),
            "data_dir": data_dir,
            "nodes": node_info,
            "http": http,
        });
        write_ready(path, &merged(ready, secure))?;
    }
    crate::until_signal_or_storage_failure(&nodes).await;
    println!("meridian dev: stopping");
    // All at once: each node's server drains its peers' replication streams for up to its
    // shutdown step, and nine in a row would take most of a minute.
    futures::future::join_all(nodes.into_iter().map(|n| n.shutdown())).await;
    for mut c in children {
        if let Some(pid) = c.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        if tokio::time::timeout(Duration::from_secs(20), c.wait())
            .await
            .is_err()
        {
            let _ = c.kill().await;
        }
    }
    drop(relays);
    Ok(ExitCode::SUCCESS)
}

/// Writes `cfg` next to the node's data and starts `meridian dev-node` for it. Returns the
/// child and the command line that starts it again.
fn spawn_node(
    args: &DevArgs,
    cfg: &NodeConfig,
    data_dir: &std::path::Path,
) -> anyhow::Result<(tokio::process::Child, Vec<String>)> {
    std::fs::create_dir_all(data_dir).context("creating the data directory")?;
    let path = data_dir.join(format!("node-{}.toml", cfg.node_id));
    let text = toml::to_string(cfg).context("encoding a node configuration")?;
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    let exe = std::env::current_exe().context("locating the meridian binary")?;
    let mut argv = vec![
        exe.display().to_string(),
        "dev-node".to_string(),
        "--config".to_string(),
        path.display().to_string(),
        "--port".to_string(),
        args.port.to_string(),
    ];
    if let Some(t) = &args.topology {
        argv.push("--topology".into());
        argv.push(t.display().to_string());
    }
    let log = std::fs::File::create(data_dir.join(format!("node-{}.log", cfg.node_id)))
        .context("creating a node log")?;
    let child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting node {}", cfg.node_id))?;
    Ok((child, argv))
}

#[derive(clap::Args, Debug)]
pub struct DevNodeArgs {
    /// The node's configuration (written by `meridian dev --processes`).
    #[arg(long)]
    config: PathBuf,
    /// The port every node of the topology listens on.
    #[arg(long, default_value_t = 7400)]
    port: u16,
    /// Topology file (default: the built-in local-3region).
    #[arg(long)]
    topology: Option<PathBuf>,
}

impl DevNodeArgs {
    /// The node's configuration file.
    pub fn config_path(&self) -> &std::path::Path {
        &self.config
    }
}

/// One node of a `meridian dev --processes` cluster. Exits on SIGTERM, or when the process
/// that started it is gone (so no node outlives its cluster).
pub async fn run_node(args: DevNodeArgs) -> anyhow::Result<ExitCode> {
    let cfg = NodeConfig::load(Some(&args.config))?;
    cfg.validate()?;
    crate::warn_insecure(&cfg)?;
    let mut topology = match &args.topology {
        Some(path) => Topology::load(path)?,
        None => Topology::parse(LOCAL_3REGION, "local-3region.toml (built in)")?,
    };
    for n in &mut topology.nodes {
        n.address = with_port(&n.address, args.port);
    }
    let id = cfg.node_id;
    let node = Node::start_with(cfg, Arc::new(topology))
        .await
        .with_context(|| format!("starting node {id}"))?;
    let parent = std::os::unix::process::parent_id();
    let orphaned = async move {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if std::os::unix::process::parent_id() != parent {
                return;
            }
        }
    };
    tokio::select! {
        _ = crate::wait_for_signal() => {}
        _ = crate::stop_on_storage_failure(&node) => {}
        _ = orphaned => eprintln!("node {id}: the process that started it is gone; stopping"),
    }
    node.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn wait_ready(
    client: &Client,
    probe: &str,
    deadline: tokio::time::Instant,
) -> anyhow::Result<()> {
    loop {
        match client.get_with(probe, Consistency::Linearizable).await {
            Ok(_) => return Ok(()),
            // A strict residency policy keeps this region out: a definite answer from a router
            // that knows the placement (the domain is probed from its allowed regions).
            Err(meridian_sdk::Error::PolicyDenied { .. }) => return Ok(()),
            Err(e) if tokio::time::Instant::now() > deadline => {
                anyhow::bail!("the cluster did not become ready within {READY_TIMEOUT:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn write_ready(path: &std::path::Path, ready: &serde_json::Value) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(ready)?).context("writing the ready file")?;
    std::fs::rename(&tmp, path).context("writing the ready file")?;
    Ok(())
}

async fn run_single_region(args: &DevArgs, n: u64, data_dir: PathBuf) -> anyhow::Result<ExitCode> {
    if n == 0 || n > 9 {
        anyhow::bail!("--nodes must be between 1 and 9 (got {n})");
    }
    let peers: Vec<Peer> = (1..=n)
        .map(|id| Peer {
            id,
            address: node_address(id, args.port),
        })
        .collect();
    let security = secure(
        args,
        &data_dir,
        &peers
            .iter()
            .map(|p| (p.id, p.address.clone()))
            .collect::<Vec<_>>(),
    )?;
    let security = security.as_ref();
    let mut nodes = Vec::new();
    let mut http = serde_json::Map::new();
    for p in &peers {
        let mut cfg = NodeConfig {
            node_id: p.id,
            region: DEV_REGION.into(),
            listen: p.address.clone(),
            data_dir: data_dir.join(format!("node-{}", p.id)),
            peers: peers.clone(),
            ..NodeConfig::default()
        };
        cfg.timestamps.profile = args.reads.profile();
        cfg.limits.inject_read_before_closed = args.unsafe_read_before_closed;
        configure(security, &mut cfg);
        let listen = http_listen(args, &p.address)?;
        http.insert(p.id.to_string(), json!(listen));
        cfg.http.listen = Some(listen);
        let node = Node::start(cfg)
            .await
            .with_context(|| format!("starting node {} on {}", p.id, p.address))?;
        nodes.push(node);
    }
    let endpoints: Vec<String> = peers.iter().map(|p| p.address.clone()).collect();
    let client = Client::new(endpoints.clone(), options(security)?)?;
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    wait_ready(&client, "/meridian", deadline).await?;
    println!(
        "meridian dev: {} nodes in region {DEV_REGION}, data in {}",
        nodes.len(),
        data_dir.display()
    );
    println!("endpoint: {}", endpoints.join(","));
    if let Some(first) = http.values().next().and_then(|v| v.as_str()) {
        println!("metrics: http://{first}/metrics (every node: \"http\" in the ready file)");
        println!("status page and HTTP/JSON gateway: http://{first}/ (docs/http.md)");
    }
    println!("try: meridian --endpoint {} put /hello world", endpoints[0]);
    let secure = announce(security);
    if let Some(path) = &args.ready_file {
        let ready = json!({
            "regions": { DEV_REGION: { "endpoint": endpoints[0], "endpoints": endpoints } },
            "data_dir": data_dir,
            "http": http,
        });
        write_ready(path, &merged(ready, secure))?;
    }
    crate::until_signal_or_storage_failure(&nodes).await;
    println!("meridian dev: stopping");
    // All at once: each node's server drains its peers' replication streams for up to its
    // shutdown step, and nine in a row would take most of a minute.
    futures::future::join_all(nodes.into_iter().map(|n| n.shutdown())).await;
    Ok(ExitCode::SUCCESS)
}

/// `meridian dev --reads`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DevProfile {
    Sync,
    LocalWrites,
    GlobalReads,
}

impl DevProfile {
    fn profile(self) -> meridian_server::config::TimestampProfile {
        match self {
            DevProfile::Sync => meridian_server::config::TimestampProfile::Sync,
            DevProfile::LocalWrites => meridian_server::config::TimestampProfile::LocalWrites,
            DevProfile::GlobalReads => meridian_server::config::TimestampProfile::GlobalReads,
        }
    }
}
