//! `meridian`: the server, the local dev cluster, the client verbs, the shell and the bench.
//!
//! - [`verbs`]: put/get/del/ls/txn/watch/status, their human and JSON output, and the shell.
//! - [`dev`]: `meridian dev`, a whole local cluster in one process; [`dev_security`]: its root
//!   key and token (security on unless `--insecure`), which the CLI here picks up.
//! - [`bench`]: `meridian bench`, throughput and latency percentiles with hdrhistogram.
//! - [`locks_cli`]: `meridian lease`, `meridian lock NAME -- COMMAND`, `meridian elect`.
//! - [`placement_cli`]: `meridian placement show|set-policy`.
//! - [`ops`]: `meridian topology check`, `meridian wan-proxy`, `meridian wan cut|heal|status`.
//! - [`token_cli`]: `meridian token keygen|mint|attenuate|inspect|verify` (capability tokens).

mod bench;
mod dev;
mod dev_security;
mod locks_cli;
mod member_cli;
mod naming_cli;
mod ops;
mod output;
mod placement_cli;
mod render_cli;
mod sim;
mod snapshot_cli;
mod token_cli;
mod txn_parse;
mod verbs;

use clap::{Parser, Subcommand};

// Allocation is a large share of a busy node's CPU; mimalloc is markedly cheaper than glibc's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "meridian",
    version,
    about = "Geo-distributed coordination service"
)]
struct Cli {
    /// Endpoint(s) to talk to, host:port, comma-separated.
    #[arg(
        long,
        global = true,
        env = "MERIDIAN_ENDPOINT",
        default_value = "127.0.1.1:7400"
    )]
    endpoint: String,
    /// Home region: learn the cluster's routers from --endpoint (any router) and talk to one
    /// of this region's, failing over to its others, then to the nearest region's.
    #[arg(long, global = true, env = "MERIDIAN_REGION")]
    region: Option<String>,
    /// Output format.
    #[arg(long, global = true, env = "MERIDIAN_OUTPUT", value_enum, default_value_t = output::Format::Human)]
    output: output::Format,
    /// Capability token sent with every request (docs/security.md).
    #[arg(long, global = true, env = "MERIDIAN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Connect over TLS, verifying routers against this CA certificate (PEM).
    #[arg(long, global = true, env = "MERIDIAN_CA")]
    ca: Option<PathBuf>,
    /// Client certificate (PEM, of the cluster's CA) to present over TLS; with --tls-key.
    #[arg(long, global = true, env = "MERIDIAN_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, global = true, env = "MERIDIAN_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node from a configuration file.
    Server {
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a local cluster until Ctrl-C: by default 9 nodes in 3 regions, with the WAN emulator.
    Dev(dev::DevArgs),
    /// One node of `meridian dev --processes` (started by it).
    #[command(hide = true)]
    DevNode(dev::DevNodeArgs),
    /// Read commands from stdin, one per line, and run them all in one session.
    Shell,
    /// Measure put/get throughput and latency percentiles.
    Bench(bench::BenchArgs),
    /// Measure the router under the WAN emulator (starts its own dev clusters).
    BenchGeo(meridian_harness::geo::BenchGeoArgs),
    /// Measure locks and leases: latency, failover, keepalive aggregation, memory.
    BenchLocks(meridian_harness::locks::BenchLocksArgs),
    /// Measure residency forwarding and how fast a placement change reaches every router.
    BenchPlacement(meridian_harness::placement::BenchPlacementArgs),
    /// Topology files.
    #[command(subcommand)]
    Topology(ops::TopologyCmd),
    /// Capability tokens: keygen, mint, attenuate, inspect, verify (offline); revoke, revoked.
    #[command(subcommand)]
    Token(token_cli::TokenCmd),
    /// The placement map (domains, owners, residency policies, epoch): show, set-policy.
    #[command(subcommand)]
    Placement(placement_cli::PlacementCmd),
    /// Backups: save every group's state to a file, check one, restore a new cluster from it.
    #[command(subcommand)]
    Snapshot(snapshot_cli::SnapshotCmd),
    /// Group membership: list, add a learner, promote it, remove a member (docs/operations.md).
    #[command(subcommand)]
    Member(member_cli::MemberCmd),
    /// Group leadership: transfer it to another voter (docs/operations.md).
    #[command(subcommand)]
    Leader(member_cli::LeaderCmd),
    /// Run the WAN emulator standalone: relays that add a region pair's latency to any TCP traffic.
    WanProxy(ops::WanProxyArgs),
    /// Control a running WAN emulator: cut, heal, status.
    Wan(ops::WanArgs),
    /// Simulations: `sim plan` predicts latency per placement and recommends one.
    #[command(subcommand)]
    Sim(sim::SimCmd),
    /// Leases: grant, keepalive, revoke, ttl, list.
    #[command(subcommand)]
    Lease(locks_cli::LeaseCmd),
    /// Run COMMAND while holding lock NAME (fencing token in MERIDIAN_FENCING_TOKEN); the
    /// command is terminated if the lock is lost.
    Lock(locks_cli::LockArgs),
    /// Campaign in election NAME with VALUE, or observe its leader without VALUE.
    Elect(locks_cli::ElectArgs),
    /// Register INSTANCE of SERVICE at ADDRESS until Ctrl-C (gone TTL after a crash).
    Register(naming_cli::RegisterArgs),
    /// The live instances of SERVICE; --watch follows them.
    Resolve(naming_cli::ResolveArgs),
    /// A naive lock client for fault tests (records its history).
    #[command(hide = true)]
    LockProbe(locks_cli::LockProbeArgs),
    #[command(flatten)]
    Verb(verbs::Verb),
}

fn main() -> ExitCode {
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    // `resolve --region R` also filters instances to R; MERIDIAN_REGION alone does not.
    let region_given =
        matches.value_source("region") == Some(clap::parser::ValueSource::CommandLine);
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let node_config = match &cli.command {
        Command::Server { config } => Some(Some(config.clone())),
        Command::DevNode(args) => Some(Some(args.config_path().to_path_buf())),
        // Its nodes run in this process (unless --processes): the environment's [telemetry].
        Command::Dev(args) if !args.processes => Some(None),
        _ => None,
    };
    // A sweep crashes and cuts off simulated nodes on purpose: their warnings are noise there.
    let quiet = matches!(&cli.command, Command::Sim(sim::SimCmd::Sweep(_)));
    let telemetry = {
        let _runtime = rt.enter();
        init_logging(node_config.as_ref().map(|c| c.as_deref()), quiet)
    };
    let endpoints: Vec<String> = cli
        .endpoint
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let access = Access {
        token: cli.token.clone(),
        ca: cli.ca.clone(),
        identity: cli.tls_cert.clone().zip(cli.tls_key.clone()),
    };
    let result = rt.block_on(async move {
        // --region: the cluster's routers, this region's first (commands that talk to a
        // cluster only).
        let endpoints = match (&cli.region, talks_to_cluster(&cli.command)) {
            (Some(region), true) => {
                let options = access.options(&endpoints)?;
                meridian_sdk::discovery::regional_endpoints(&endpoints, &options, Some(region))
                    .await?
                    .endpoints
            }
            _ => endpoints,
        };
        let filter_region = cli.region.clone().filter(|_| region_given);
        match cli.command {
            Command::Server { config } => run_server(config).await,
            Command::Dev(args) => dev::run(args).await,
            Command::DevNode(args) => dev::run_node(args).await,
            Command::Shell => verbs::shell(client(endpoints, &access)?, cli.output).await,
            Command::Bench(args) => {
                let options = access.options(&endpoints)?;
                bench::run(args, endpoints, options).await
            }
            Command::BenchGeo(args) => meridian_harness::geo::run(args).await,
            Command::BenchLocks(args) => meridian_harness::locks::run(args).await,
            Command::BenchPlacement(args) => meridian_harness::placement::run(args).await,
            Command::Topology(cmd) => ops::topology(cmd, || client(endpoints, &access)).await,
            Command::Token(token_cli::TokenCmd::Revoke { ids }) => {
                token_cli::revoke(client(endpoints, &access)?, cli.output, ids).await
            }
            Command::Token(token_cli::TokenCmd::Revoked) => {
                token_cli::revoked(client(endpoints, &access)?, cli.output).await
            }
            Command::Token(cmd) => token_cli::run(cmd, cli.output),
            Command::Placement(cmd) => {
                placement_cli::run(client(endpoints, &access)?, cli.output, cmd).await
            }
            Command::Leader(cmd) => {
                member_cli::leader(|eps| client(eps, &access), endpoints, cli.output, cmd).await
            }
            Command::Member(cmd) => {
                member_cli::run(|eps| client(eps, &access), endpoints, cli.output, cmd).await
            }
            Command::Snapshot(cmd) => {
                snapshot_cli::run(|| client(endpoints, &access), cli.output, cmd).await
            }
            Command::WanProxy(args) => {
                ops::wan_proxy(args, || client(endpoints.clone(), &access)).await
            }
            Command::Wan(args) => ops::wan(args).await,
            Command::Sim(cmd) => sim::run(cmd).await,
            Command::Lease(cmd) => {
                locks_cli::lease(client(endpoints, &access)?, cli.output, cmd).await
            }
            Command::Lock(args) => {
                locks_cli::lock(client(endpoints, &access)?, cli.output, args).await
            }
            Command::Elect(args) => {
                locks_cli::elect(client(endpoints, &access)?, cli.output, args).await
            }
            Command::Register(args) => {
                naming_cli::register(client(endpoints, &access)?, cli.output, args).await
            }
            Command::Resolve(args) => {
                naming_cli::resolve(client(endpoints, &access)?, cli.output, args, filter_region)
                    .await
            }
            Command::LockProbe(args) => {
                locks_cli::lock_probe(client(endpoints, &access)?, args).await
            }
            Command::Verb(v) => verbs::run_one(client(endpoints, &access)?, cli.output, v).await,
        }
    });
    if let Some(t) = telemetry {
        t.shutdown();
    }
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What the CLI presents to a cluster: the global `--token`, `--ca`, `--tls-cert`/`--tls-key` (or
/// their `MERIDIAN_` variables).
struct Access {
    token: Option<String>,
    ca: Option<PathBuf>,
    identity: Option<(PathBuf, PathBuf)>,
}

impl Access {
    /// Client options for `endpoints`: what was given, else what a `meridian dev` on this
    /// machine left for a loopback endpoint of its port (its root token, its CA).
    fn options(&self, endpoints: &[String]) -> anyhow::Result<meridian_sdk::Options> {
        let options = meridian_sdk::Options {
            token: self
                .token
                .clone()
                .or_else(|| dev_security::token_for(endpoints)),
            ..Default::default()
        };
        let ca = self.ca.clone().or_else(|| dev_security::ca_for(endpoints));
        Ok(match ca {
            Some(ca) => options.with_tls(
                &ca,
                self.identity
                    .as_ref()
                    .map(|(c, k)| (c.as_path(), k.as_path())),
            )?,
            None => options,
        })
    }
}

/// Whether `cmd` talks to a running cluster through --endpoint (so --region applies).
fn talks_to_cluster(cmd: &Command) -> bool {
    match cmd {
        // Offline but for these: `topology check --live`, `token revoke|revoked`.
        Command::Topology(t) => matches!(t, ops::TopologyCmd::Check { live: true, .. }),
        Command::Token(t) => matches!(
            t,
            token_cli::TokenCmd::Revoke { .. } | token_cli::TokenCmd::Revoked
        ),
        _ => !matches!(
            cmd,
            Command::Server { .. }
                | Command::Dev(_)
                | Command::DevNode(_)
                | Command::BenchGeo(_)
                | Command::BenchLocks(_)
                | Command::BenchPlacement(_)
                | Command::Wan(_)
                | Command::Sim(_)
        ),
    }
}

/// A client of `endpoints` with [`Access::options`].
fn client(endpoints: Vec<String>, access: &Access) -> anyhow::Result<meridian_sdk::Client> {
    let options = access.options(&endpoints)?;
    Ok(meridian_sdk::Client::new(endpoints, options)?)
}

/// Logs to stderr (`MERIDIAN_LOG`, default `warn`, `error` when `quiet`); a node whose configuration names an OTLP
/// collector (`[telemetry]`) also exports its spans there. A configuration that does not load
/// is reported by the command itself.
fn init_logging(
    node_config: Option<Option<&std::path::Path>>,
    quiet: bool,
) -> Option<meridian_server::telemetry::Telemetry> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::EnvFilter::try_from_env("MERIDIAN_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if quiet {
            "error,openraft=off"
        } else {
            "warn,openraft=off"
        })
    });
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter);
    // A node's file and environment (a file that does not load is the command's to report);
    // an in-process dev's environment only.
    let cfg = match node_config {
        Some(Some(p)) => meridian_server::NodeConfig::load(Some(p))
            .ok()
            .map(|c| Ok((c.telemetry, Some((c.node_id, c.region))))),
        Some(None) => Some(meridian_server::config::TelemetryConfig::from_env().map(|t| (t, None))),
        None => None,
    };
    let (otel, telemetry, problem) = match cfg.map(|c| {
        c.and_then(|(t, node)| {
            meridian_server::telemetry::install(&t, node.as_ref().map(|(id, r)| (*id, r.as_str())))
        })
    }) {
        Some(Ok(Some((layer, t)))) => (Some(layer), Some(t), None),
        Some(Err(e)) => (None, None, Some(e)),
        _ => (None, None, None),
    };
    tracing_subscriber::registry().with(fmt).with(otel).init();
    if let Some(e) = problem {
        tracing::error!("tracing is off: {e}");
    }
    telemetry
}

async fn run_server(config: PathBuf) -> anyhow::Result<ExitCode> {
    let cfg = meridian_server::NodeConfig::load(Some(&config))?;
    cfg.validate()?;
    warn_insecure(&cfg)?;
    let node = meridian_server::Node::start(cfg).await?;
    println!(
        "meridian node {} serving on {}",
        node.ctx.node_id, node.local_addr
    );
    tokio::select! {
        _ = wait_for_signal() => {}
        _ = stop_on_storage_failure(&node) => {}
    }
    node.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// A node process's exit status after a failed write or fsync (EX_IOERR of sysexits.h).
const STORAGE_FAILURE_EXIT: i32 = 74;

/// Ends the process with status 74 on `node`'s first storage failure, saying why. At once:
/// returning would drop the store, and fjall fsyncs its journal when dropped — which could
/// report as durable what the failed fsync lost. A supervisor then restarts the node on what
/// the disk really holds.
pub async fn stop_on_storage_failure(node: &meridian_server::Node) {
    let what = node.storage_failure().await;
    tracing::error!("storage failure, stopping: {what}");
    eprintln!(
        "meridian node {}: storage failure, stopping: {what}",
        node.ctx.node_id
    );
    std::process::exit(STORAGE_FAILURE_EXIT);
}

/// Resolves on Ctrl-C or SIGTERM; ends the process (status 74, as [`stop_on_storage_failure`])
/// at the first storage failure of any of `nodes` — the in-process nodes of `meridian dev`,
/// whose process is their supervisor's unit.
pub async fn until_signal_or_storage_failure(nodes: &[meridian_server::Node]) {
    let failure = async {
        if nodes.is_empty() {
            return std::future::pending::<()>().await;
        }
        futures::future::select_all(nodes.iter().map(|n| Box::pin(stop_on_storage_failure(n))))
            .await;
    };
    tokio::select! {
        _ = wait_for_signal() => {}
        _ = failure => {}
    }
}

/// Refuses a configuration without tokens and mTLS unless it says `security.mode =
/// "insecure"`, and then warns about what is off, at every start.
pub fn warn_insecure(cfg: &meridian_server::NodeConfig) -> anyhow::Result<()> {
    let off = cfg.security.required()?;
    if !off.is_empty() {
        tracing::warn!(
            "security.mode = \"insecure\": running without {}; anyone who can reach {} is \
             served (docs/security.md)",
            off.join(" and "),
            cfg.listen
        );
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--region` applies to every command that reaches a cluster through --endpoint, the
    /// cluster-facing subcommands of otherwise offline groups included.
    #[test]
    fn which_commands_talk_to_a_cluster() {
        let talks = |args: &[&str]| {
            let cli = Cli::try_parse_from(std::iter::once("meridian").chain(args.iter().copied()))
                .unwrap_or_else(|e| panic!("{args:?}: {e}"));
            talks_to_cluster(&cli.command)
        };
        assert!(talks(&["get", "/a"]));
        assert!(talks(&["topology", "check", "t.toml", "--live"]));
        assert!(!talks(&["topology", "check", "t.toml"]));
        assert!(!talks(&[
            "topology",
            "render",
            "t.toml",
            "--out",
            "d",
            "--insecure"
        ]));
        assert!(talks(&["token", "revoked"]));
        assert!(talks(&["token", "revoke", "abc"]));
        assert!(!talks(&["token", "keygen", "--out", "k"]));
        assert!(!talks(&["dev"]));
    }
}
