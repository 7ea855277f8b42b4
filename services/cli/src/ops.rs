//! Operator commands that need no cluster (`meridian topology check`, unless `--live`), the
//! standalone WAN emulator (`meridian wan-proxy`) and its control (`meridian wan cut|heal|status`).

use anyhow::Context;
use meridian_topology::Topology;
use meridian_wan::{LinkSpec, Wan};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Subcommand, Debug)]
pub enum TopologyCmd {
    /// Validate a topology file; print every problem with its location (exit 1), or a summary.
    /// With --live, also compare it with the running cluster's membership (--endpoint): one
    /// line per node whose live role differs from the file's (exit 1).
    Check {
        file: PathBuf,
        /// Compare with the live membership each group's leader reports.
        #[arg(long)]
        live: bool,
    },
    /// Render a deployment: every node's node.toml and systemd unit, and terraform.tfvars.json
    /// for terraform/ (docs/deploy.md). Pure: the same topology gives the same bytes.
    Render(crate::render_cli::RenderArgs),
}

pub async fn topology(
    cmd: TopologyCmd,
    client: impl FnOnce() -> anyhow::Result<meridian_sdk::Client>,
) -> anyhow::Result<ExitCode> {
    match cmd {
        TopologyCmd::Render(args) => crate::render_cli::run(args),
        TopologyCmd::Check { file, live } => {
            let t = match Topology::load(&file) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            println!(
                "ok: {} — {} regions, {} nodes, {} groups, {} domains",
                file.display(),
                t.regions.len(),
                t.nodes.len(),
                t.groups.len(),
                t.domains.len()
            );
            if !live {
                return Ok(ExitCode::SUCCESS);
            }
            let status = client()?
                .status(true)
                .await
                .context("reading the cluster's status")?;
            let drift = t.live_drift(&live_membership(&status));
            if drift.is_empty() {
                println!("live: every group's membership matches {}", file.display());
                return Ok(ExitCode::SUCCESS);
            }
            for d in &drift {
                println!("drift: {d}");
            }
            for u in &status.unreachable {
                println!("unreachable: {u}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Each group's (voters, learners) as its leader reports them, from a cluster status.
fn live_membership(
    s: &meridian_proto::kv::StatusResponse,
) -> std::collections::BTreeMap<
    meridian_types::GroupId,
    (
        std::collections::BTreeSet<u64>,
        std::collections::BTreeSet<u64>,
    ),
> {
    // Two nodes may both say leader across a change of term: the newer term's wins.
    crate::member_cli::groups_in(s)
        .into_iter()
        .filter_map(|id| crate::member_cli::leader_of(s, id))
        .map(|g| {
            let voters = g.members.iter().filter(|m| m.voter).map(|m| m.node);
            let learners = g.members.iter().filter(|m| !m.voter).map(|m| m.node);
            (
                meridian_types::GroupId(g.group),
                (voters.collect(), learners.collect()),
            )
        })
        .collect()
}

#[derive(clap::Args, Debug)]
pub struct WanProxyArgs {
    /// Round trip of a region pair: A,B,MS (repeatable).
    #[arg(long = "rtt", value_name = "A,B,MS")]
    rtts: Vec<String>,
    /// Take the round trips from a topology file.
    #[arg(long)]
    topology: Option<PathBuf>,
    /// A relay: FROM_REGION,TO_REGION,LISTEN,TARGET (repeatable). Connections to LISTEN are
    /// forwarded to TARGET with the pair's one-way delay in each direction. TARGET is
    /// host:port or a service's `meridian://` address (docs/naming.md): resolved once, at
    /// start, through --endpoint's cluster, to a live instance in TO_REGION if it has one.
    #[arg(long = "relay", value_name = "FROM,TO,LISTEN,TARGET", required = true)]
    relays: Vec<String>,
    /// Extra random delay per chunk, in ms (never reorders bytes).
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Bandwidth cap per connection and direction, in Mbit/s.
    #[arg(long)]
    bandwidth_mbit: Option<u64>,
    /// Control port for `meridian wan cut|heal|status`.
    #[arg(long, default_value = "127.0.0.1:7700")]
    control: SocketAddr,
}

fn fields<const N: usize>(s: &str, what: &str) -> anyhow::Result<[String; N]> {
    let parts: Vec<String> = s.split(',').map(|p| p.trim().to_string()).collect();
    parts
        .try_into()
        .map_err(|_| anyhow::anyhow!("{what} {s:?}: expected {N} comma-separated fields"))
}

/// The socket address of `target`: host:port as given, or a live instance of the
/// `meridian://` service it names (one in `region` if there is one).
async fn relay_target(
    target: &str,
    region: &str,
    client: &mut dyn FnMut() -> anyhow::Result<meridian_sdk::Client>,
) -> anyhow::Result<SocketAddr> {
    let address = if meridian_sdk::naming::is_service_uri(target) {
        let service = meridian_sdk::naming::service_of_uri(target)?;
        let mut resolver = client()?.resolver(&service).await?;
        let snapshot = resolver.snapshot();
        let instance = meridian_sdk::naming::preferred(&snapshot, region)
            .first()
            .map(|i| i.address.clone())
            .with_context(|| format!("{target}: no live instance of {service}"))?;
        instance
    } else {
        target.to_string()
    };
    let found = tokio::net::lookup_host(address.as_str())
        .await
        .with_context(|| format!("target {address:?}"))?
        .next();
    found.with_context(|| format!("target {address:?} resolves to no address"))
}

pub async fn wan_proxy(
    args: WanProxyArgs,
    mut client: impl FnMut() -> anyhow::Result<meridian_sdk::Client>,
) -> anyhow::Result<ExitCode> {
    let wan = Wan::new();
    let spec = |rtt: u64| LinkSpec {
        jitter: Duration::from_millis(args.jitter_ms),
        bandwidth_bytes_per_sec: args.bandwidth_mbit.map(|m| m * 1_000_000 / 8),
        ..LinkSpec::from_rtt_ms(rtt)
    };
    if let Some(path) = &args.topology {
        let t = Topology::load(path)?;
        for (i, a) in t.regions.iter().enumerate() {
            for b in t.regions.iter().skip(i + 1) {
                wan.set_link(&a.name, &b.name, spec(t.rtt_ms(&a.name, &b.name)));
            }
        }
    }
    for r in &args.rtts {
        let [a, b, ms] = fields::<3>(r, "--rtt")?;
        let ms: u64 = ms
            .parse()
            .with_context(|| format!("--rtt {r:?}: {ms:?} is not a number of ms"))?;
        wan.set_link(&a, &b, spec(ms));
    }
    let mut relays = Vec::new();
    for r in &args.relays {
        let [from, to, listen, target] = fields::<4>(r, "--relay")?;
        let listen: SocketAddr = listen
            .parse()
            .with_context(|| format!("--relay {r:?}: listen address {listen:?}"))?;
        let target = relay_target(&target, &to, &mut client)
            .await
            .with_context(|| format!("--relay {r:?}"))?;
        let relay = wan
            .relay(listen, &from, &to, target)
            .await
            .with_context(|| format!("--relay {r:?}"))?;
        println!("relay {} -> {target} ({from} -> {to})", relay.local_addr);
        relays.push(relay);
    }
    let (control, _task) = meridian_wan::serve_control(wan.clone(), args.control).await?;
    println!("control: {control} (meridian wan status --control {control})");
    crate::wait_for_signal().await;
    drop(relays);
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Subcommand, Debug)]
pub enum WanCmd {
    /// Cut the link between regions A and B (existing connections close; new ones hang).
    Cut { a: String, b: String },
    /// Heal the link between regions A and B.
    Heal { a: String, b: String },
    /// Cut every link of a region.
    CutRegion { region: String },
    /// Heal every link of a region.
    HealRegion { region: String },
    /// Heal every link.
    HealAll,
    /// Every link: round trip, cut or not, connections.
    Status,
}

#[derive(clap::Args, Debug)]
pub struct WanArgs {
    /// The emulator's control address (printed by `meridian dev` and `meridian wan-proxy`);
    /// accepted before or after the subcommand (`meridian wan status --control ADDR`).
    #[arg(
        long,
        global = true,
        env = "MERIDIAN_WAN_CONTROL",
        default_value = "127.0.0.1:7700"
    )]
    control: String,
    #[command(subcommand)]
    cmd: WanCmd,
}

/// Deadline of one control request.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn wan(args: WanArgs) -> anyhow::Result<ExitCode> {
    let line = match &args.cmd {
        WanCmd::Cut { a, b } => format!("cut {a} {b}"),
        WanCmd::Heal { a, b } => format!("heal {a} {b}"),
        WanCmd::CutRegion { region } => format!("cut-region {region}"),
        WanCmd::HealRegion { region } => format!("heal-region {region}"),
        WanCmd::HealAll => "heal-all".to_string(),
        WanCmd::Status => "status".to_string(),
    };
    let answer = meridian_wan::control(&args.control, &line, CONTROL_TIMEOUT)
        .await
        .map_err(|e| match e {
            meridian_wan::WanError::Io(e) => anyhow::anyhow!(
                "cannot reach the WAN emulator's control port {}: {e} \
                 (the address `meridian dev` or `meridian wan-proxy` printed; --control ADDR)",
                args.control
            ),
            e => e.into(),
        })?;
    let answer = answer.trim();
    if args.cmd_is_status() {
        for part in answer.split("; ") {
            println!("{part}");
        }
    } else if answer.is_empty() {
        println!("ok");
    } else {
        println!("ok {answer}");
    }
    Ok(ExitCode::SUCCESS)
}

impl WanArgs {
    fn cmd_is_status(&self) -> bool {
        matches!(self.cmd, WanCmd::Status)
    }
}
