//! A running node: opens the store, starts the group's Raft, serves clients and peers on one
//! address, bootstraps the group on first start, and shuts all of it down on request.

use crate::config::{ConfigError, NodeConfig};
use crate::ctx::NodeCtx;
use crate::forward::ForwardService;
use crate::keepalive::KeepAlives;
use crate::lease_driver::LeaderLeases;
use crate::lock_service::LockService;
use crate::lock_waits::LockWaits;
use crate::placement_service::PlacementService;
use crate::proposer::{Proposer, SecondPlace};
use crate::service::KvService;
use crate::syncs::Syncers;
use futures::TryStreamExt;
use meridian_consensus::admission::Admission;
use meridian_consensus::network::{CONNECTION_WINDOW_BYTES, STREAM_WINDOW_BYTES};
use meridian_consensus::{
    GroupHandle, GroupNetworkFactory, Host, LeaderLease, LeaseClock, PeerPool, PeerService, Raft,
    VoteGuard,
};
use meridian_locks::{Clock, MonotonicClock};
use meridian_proto::io::{Coalesce, Dialer, Incoming};
use meridian_proto::kv::kv_server::KvServer;
use meridian_proto::kv::lease_server::LeaseServer;
use meridian_proto::kv::lock_server::LockServer;
use meridian_proto::kv::placement_server::PlacementServer;
use meridian_proto::kv::tokens_server::TokensServer;
use meridian_proto::peer::forward_server::ForwardServer;
use meridian_proto::peer::peer_server::PeerServer;
use meridian_proto::{MAX_MESSAGE_BYTES, PEER_MESSAGE_BYTES};
use meridian_storage::{MemDisk, NodeStore};
use meridian_topology::{Role, Topology};
use meridian_types::GroupId;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::BasicNode;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Longest each shutdown step (stop serving, stop groups, final sync) may take.
const SHUTDOWN_STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a voter that leads checks that its group has every learner the topology asks for.
const LEARNER_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The round trips a group's Raft timing must allow for: (between its voters, between any two
/// members). Its heartbeat and election timeouts follow its voters (a regional group's are in
/// one region: 0); learners only stretch its snapshot deadline, their appends having their own
/// (see [`learner_round_trips`]).
pub fn group_round_trips(topology: &Topology, group: GroupId) -> (u64, u64) {
    (
        topology.voters_max_rtt_ms(group),
        topology.group_max_rtt_ms(group),
    )
}

/// The learners of `group` with their round trip from `region` (where this node, leading the
/// group, sends from).
pub fn learner_round_trips(topology: &Topology, group: GroupId, region: &str) -> Vec<(u64, u64)> {
    topology
        .learners(group)
        .iter()
        .map(|n| (n.id, topology.rtt_ms(region, &n.region)))
        .collect()
}

/// While this node leads `group`, adds every topology learner missing from its membership.
/// Non-blocking adds: openraft's blocking add waits, without a deadline, for a learner that
/// may be unreachable.
async fn keep_learners(
    raft: Raft,
    group: GroupId,
    learners: Vec<(u64, String)>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(LEARNER_CHECK_INTERVAL) => {}
        }
        let m = raft.metrics().borrow_watched().clone();
        if m.state != openraft::ServerState::Leader {
            continue;
        }
        let membership = m.membership_config.membership().clone();
        for (id, addr) in &learners {
            if membership.get_node(id).is_some() {
                continue;
            }
            let add = raft.add_learner(*id, BasicNode::new(addr.clone()), false);
            match tokio::time::timeout(Duration::from_secs(10), add).await {
                Ok(Ok(_)) => tracing::info!(%group, learner = id, "learner added"),
                Ok(Err(e)) => {
                    tracing::warn!(%group, learner = id, error = %e, "adding a learner failed")
                }
                Err(_) => tracing::warn!(%group, learner = id, "adding a learner timed out"),
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    /// Not `#[source]`: the message already carries the cause, and a chain would repeat it.
    #[error("storage at {path}: {cause}")]
    Storage {
        path: String,
        cause: meridian_storage::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("raft: {0}")]
    Raft(String),
    #[error("topology: {0}")]
    Topology(String),
}

pub struct Node {
    pub ctx: Arc<NodeCtx>,
    /// The bound TCP address (a simulated node reports its topology address's port on 0.0.0.0).
    pub local_addr: SocketAddr,
    /// The bound address of the operator's HTTP listener (`[http] listen`), if it has one.
    pub http_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
    /// None for a simulated node (its state lives in a [`MemDisk`]).
    store: Option<NodeStore>,
}

/// What a node of a deterministic simulation runs on instead of TCP and fjall: connections
/// accepted and dialed through the simulator, state in a [`MemDisk`] that outlives the node.
pub struct SimEnv {
    pub incoming: Incoming,
    pub dialer: Dialer,
    pub disk: MemDisk,
    /// The node's physical time (the simulation's clock): what its timestamps follow.
    pub physical: meridian_types::hlc::Physical,
}

/// Where a node accepts connections.
enum Listener {
    Tcp(tokio::net::TcpListener),
    Injected(Incoming),
}

/// Where a node's groups keep their state.
enum Stores {
    Disk(NodeStore),
    Memory(MemDisk),
}

impl Node {
    /// Starts a node: with `config.topology` from that file, else in the single-region shape.
    pub async fn start(config: NodeConfig) -> Result<Node, StartError> {
        let topology = match &config.topology {
            Some(path) => Topology::load(path).map_err(|e| StartError::Topology(e.to_string()))?,
            None => {
                let peers: Vec<(u64, String)> = if config.peers.is_empty() {
                    vec![(config.node_id, config.advertise().to_string())]
                } else {
                    config
                        .peers
                        .iter()
                        .map(|p| (p.id, p.address.clone()))
                        .collect()
                };
                Topology::single_region(&config.region, &peers)
            }
        };
        let legacy = config.topology.is_none();
        Self::launch(
            config,
            Arc::new(topology),
            legacy,
            Arc::new(MonotonicClock::default()),
            None,
        )
        .await
    }

    /// Starts a node of `topology` (already validated); `config.topology` is not read.
    pub async fn start_with(
        config: NodeConfig,
        topology: Arc<Topology>,
    ) -> Result<Node, StartError> {
        Self::launch(
            config,
            topology,
            false,
            Arc::new(MonotonicClock::default()),
            None,
        )
        .await
    }

    /// As [`Node::start_with`], with lease deadlines measured on `clock` (tests inject one).
    pub async fn start_with_clock(
        config: NodeConfig,
        topology: Arc<Topology>,
        clock: Arc<dyn Clock>,
    ) -> Result<Node, StartError> {
        Self::launch(config, topology, false, clock, None).await
    }

    /// A node of a deterministic simulation: the real node code over `env`'s simulated
    /// network and in-memory store (see [`SimEnv`]).
    pub async fn start_simulated(
        config: NodeConfig,
        topology: Arc<Topology>,
        clock: Arc<dyn Clock>,
        env: SimEnv,
    ) -> Result<Node, StartError> {
        Self::launch(config, topology, false, clock, Some(env)).await
    }

    /// `legacy`: the single-region shape built from `peers` (or this node alone).
    async fn launch(
        config: NodeConfig,
        topology: Arc<Topology>,
        legacy: bool,
        clock: Arc<dyn Clock>,
        sim: Option<SimEnv>,
    ) -> Result<Node, StartError> {
        config.validate()?;
        let me = topology.node(config.node_id).cloned().ok_or_else(|| {
            StartError::Topology(format!(
                "node {} is not in topology {}",
                config.node_id, topology.name
            ))
        })?;
        // Single-region clusters configured by peer list bootstrap only when given peers.
        let bootstrap = config.bootstrap && (!legacy || !config.peers.is_empty());
        let storage_err = |cause| StartError::Storage {
            path: config.data_dir.display().to_string(),
            cause,
        };
        let tls = match (&sim, config.security.tls()?) {
            (_, None) => None,
            (Some(_), Some(_)) => {
                return Err(StartError::Config(crate::config::ConfigError::Invalid(
                    "security.ca/cert/key: mTLS runs over real sockets, not in a simulation".into(),
                )))
            }
            (None, Some(files)) => Some(
                meridian_tls::NodeTls::load(files, config.node_id).map_err(|e| {
                    StartError::Config(crate::config::ConfigError::Invalid(format!(
                        "security (mTLS): {e}"
                    )))
                })?,
            ),
        };
        // With mTLS, peer traffic only from nodes of the topology (each group's from its
        // members), and peers dialed as the node they must be.
        let admission = Arc::new(match &tls {
            Some(_) => Admission::nodes(topology.nodes.iter().map(|n| n.id)),
            None => Admission::open(),
        });
        // Commit timestamps (docs/closed-timestamps.md) follow the wall clock, or the
        // simulation's clock in a simulated node.
        let (stores, incoming, dialer, physical) = match sim {
            Some(env) => (
                Stores::Memory(env.disk),
                Some(env.incoming),
                Some(env.dialer),
                env.physical,
            ),
            None => (
                Stores::Disk(NodeStore::open(&config.data_dir).map_err(storage_err)?),
                None,
                None,
                meridian_types::hlc::system_physical(),
            ),
        };
        let dialer = match &tls {
            Some(tls) => {
                let mut names = HashMap::new();
                for n in &topology.nodes {
                    names.insert(n.address.clone(), n.id);
                    if let Some(relay) = config.dial.get(&n.address) {
                        names.insert(relay.clone(), n.id);
                    }
                }
                Some(tls.dialer(names))
            }
            None => dialer,
        };
        let pool = PeerPool::with_dialer(config.dial.clone().into_iter().collect(), dialer);
        let host = Host::new();
        let mut proposers = BTreeMap::new();
        let mut voted = Vec::new();
        let mut lock_waits = BTreeMap::new();
        let mut leader_leases = BTreeMap::new();
        let mut shareds = Vec::new();
        let lease_clock = LeaseClock::with_rate(config.raft.lease_clock_rate.unwrap_or(1.0));
        let max_offset_us = config.timestamps.max_clock_offset_us();
        // Its pace is held to tokio's monotonic clock (the simulation's virtual time there).
        let started = tokio::time::Instant::now();
        let monotonic: meridian_types::hlc::Monotonic =
            Arc::new(move || u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
        let timestamps = Arc::new(meridian_types::hlc::NodeClock::new(
            max_offset_us,
            physical,
            monotonic,
        ));
        // The farthest one-way delay between two regions: how far ahead `global-reads` closes,
        // with the maximum clock offset.
        let one_way_max_us = topology
            .regions
            .iter()
            .flat_map(|a| {
                topology
                    .regions
                    .iter()
                    .map(|b| topology.rtt_ms(&a.name, &b.name))
            })
            .max()
            .unwrap_or(0)
            * 1_000
            / 2;
        let lead_us = one_way_max_us + max_offset_us;
        let placement = Arc::new(crate::placement::PlacementView::new(
            topology.placement_map(),
        ));
        let closing = config
            .timestamps
            .closing(lead_us)
            .map(|default| crate::proposer::Closing {
                default,
                lag_us: config.timestamps.lag_ms * 1_000,
                lead_us,
                interval: Duration::from_millis(config.timestamps.close_interval_ms),
                profile_of: {
                    let placement = placement.clone();
                    Arc::new(move |group| placement.current().map.group_profile(group))
                },
            });
        for (group, role) in topology.groups_of_node(config.node_id) {
            let (voters_rtt, members_rtt) = group_round_trips(&topology, group);
            let raft_config = config
                .raft
                .for_group(voters_rtt, members_rtt)
                .raft_config(&config.cluster_name)
                .map_err(|e| StartError::Raft(e.to_string()))?;
            let election_max = Duration::from_millis(raft_config.election_timeout_max);
            let lease = Arc::new(LeaderLease::new(election_max).with_clock(lease_clock));
            let network = GroupNetworkFactory::new(group, pool.clone())
                .with_lease(lease.clone())
                .with_learners(learner_round_trips(&topology, group, &me.region));
            let history = config.limits.history_revisions_max;
            let (raft, shared) = match &stores {
                Stores::Disk(store) => {
                    let (log, sm) = store.group(group, history).map_err(storage_err)?;
                    let shared = sm.shared();
                    (
                        Raft::new(config.node_id, raft_config, network, log, sm).await,
                        shared,
                    )
                }
                Stores::Memory(disk) => {
                    let (log, sm) = disk.group(group, history).map_err(storage_err)?;
                    let shared = sm.shared();
                    (
                        Raft::new(config.node_id, raft_config, network, log, sm).await,
                        shared,
                    )
                }
            };
            let raft = raft.map_err(|e| StartError::Raft(e.to_string()))?;
            lock_waits.insert(group, Arc::new(LockWaits::default()));
            shareds.push((group, shared.clone()));
            let knew_leader = raft.metrics().borrow_watched().vote.committed;
            let guard = Arc::new(VoteGuard::new(election_max, knew_leader).with_clock(lease_clock));
            let steps = shared.steps().clone();
            host.insert(
                group,
                GroupHandle::new(raft.clone(), shared).with_lease(lease, guard),
            );
            if role == Role::Voter {
                leader_leases.insert(group, Arc::new(std::sync::Mutex::new(LeaderLeases::new())));
                proposers.insert(
                    group,
                    Proposer::start(
                        group,
                        raft.clone(),
                        steps,
                        timestamps.clone(),
                        closing.clone(),
                        SecondPlace::for_voters_rtt_ms(voters_rtt),
                    ),
                );
                voted.push((group, raft));
            }
        }

        let listen_err = |source| StartError::Listen {
            addr: config.listen.clone(),
            source,
        };
        let (listener, local_addr) = match incoming {
            Some(incoming) => {
                let addr = config.listen.parse().map_err(|e| {
                    listen_err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
                })?;
                (Listener::Injected(incoming), addr)
            }
            None => {
                let l = tokio::net::TcpListener::bind(&config.listen)
                    .await
                    .map_err(listen_err)?;
                let addr = l.local_addr().map_err(listen_err)?;
                (Listener::Tcp(l), addr)
            }
        };
        // The operator's HTTP listener, bound now so that a taken port stops the start.
        let http = match &config.http.listen {
            Some(http) => {
                let l = tokio::net::TcpListener::bind(http)
                    .await
                    .map_err(|source| StartError::Listen {
                        addr: format!("{http} ([http] listen)"),
                        source,
                    })?;
                let addr = l.local_addr().map_err(|source| StartError::Listen {
                    addr: http.clone(),
                    source,
                })?;
                Some((l, addr))
            }
            None => None,
        };
        let address = match (&config.advertise, legacy) {
            (Some(a), _) => a.clone(),
            (None, false) => me.address.clone(),
            (None, true) => local_addr.to_string(),
        };
        let ctx = Arc::new(NodeCtx {
            node_id: config.node_id,
            region: me.region.clone(),
            address,
            host: host.clone(),
            pool,
            limits: config.limits.clone(),
            placement,
            topology: topology.clone(),
            watches: crate::watches::Watches::new(config.limits.watches_max),
            fanout: crate::fanout::Fanout::new(config.limits.watch_queue_max),
            proposers,
            syncers: Syncers::default(),
            sync_on_switch: config.router.sync_on_switch,
            closed_reads: closing.as_ref().map(|_| crate::ctx::ClosedReads {
                stale_after: Duration::from_millis(config.timestamps.stale_after_ms),
            }),
            forwarded_writes: AtomicU64::new(0),
            clock: clock.clone(),
            timestamps: timestamps.clone(),
            // Any domain may be made global-reads: sessions may run ahead by the lead.
            timestamp_lead_us: closing.as_ref().map_or(0, |_| lead_us),
            clock_check: Arc::new(crate::clock_check::ClockCheck::new(max_offset_us)),
            leader_leases,
            lock_waits,
        });
        if !config.router.sync_on_switch {
            tracing::warn!(
                "router.sync_on_switch is off: reads across groups are NOT sequentially consistent"
            );
        }
        let (shutdown, mut shutdown_rx) = watch::channel(false);
        // Aggregated keepalives of this router's clients: the Lease service feeds them, the
        // status reports their counters.
        let keepalives = Arc::new(KeepAlives::default());
        let revocations = Arc::new(crate::revocation::Revocations::default());
        let root = config.security.root()?;
        let tokens_on = root.is_some();
        let gate = match root {
            Some(root) => crate::gate::Gate::new(root, revocations.clone()),
            None => crate::gate::Gate::open(),
        };
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let rpcs = Arc::new(crate::metrics::RpcCounts::default());
        let kv_service = Arc::new(KvService::new(
            ctx.clone(),
            keepalives.clone(),
            gate.clone(),
            metrics.clone(),
        ));
        let kv = KvServer::from_arc(kv_service.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        // What the operator's HTTP listener shows (src/scrape.rs).
        let status_source = crate::scrape::source(
            ctx.clone(),
            keepalives.clone(),
            gate.clone(),
            metrics,
            rpcs.clone(),
            match &stores {
                Stores::Disk(s) => Some(s.fsync_latency()),
                Stores::Memory(_) => None,
            },
        );
        {
            let a = admission.clone();
            gate.count_also(Box::new(move || a.refused()));
        }
        if let Some(tls) = &tls {
            let t = tls.clone();
            gate.count_also(Box::new(move || t.refused()));
            tokio::spawn(reload_on_hangup(tls.clone(), shutdown_rx.clone()));
        }
        let peer = PeerServer::new(
            PeerService::new(host.clone())
                .stop_on(shutdown_rx.clone())
                .admit(admission.clone()),
        )
        .max_decoding_message_size(PEER_MESSAGE_BYTES)
        .max_encoding_message_size(PEER_MESSAGE_BYTES);
        let global = topology.global_group().map(|g| g.id);
        for (group, shared) in &shareds {
            if Some(*group) != global {
                continue;
            }
            tokio::spawn(crate::placement::follow(
                ctx.placement.clone(),
                shared.clone(),
                shutdown_rx.clone(),
            ));
            tokio::spawn(crate::revocation::follow(
                revocations.clone(),
                shared.clone(),
                shutdown_rx.clone(),
            ));
            if let Some(proposer) = ctx.proposers.get(group) {
                tokio::spawn(crate::placement::seed(
                    proposer.clone(),
                    shared.clone(),
                    topology.placement_map(),
                    shutdown_rx.clone(),
                ));
                if let Some(h) = ctx.host.get(*group) {
                    tokio::spawn(crate::moves::drive(ctx.clone(), h, shutdown_rx.clone()));
                }
            }
        }
        for (group, shared) in shareds {
            if let Some(w) = ctx.lock_waits.get(&group) {
                tokio::spawn(crate::lock_waits::run(
                    shared,
                    w.clone(),
                    shutdown_rx.clone(),
                ));
            }
        }
        let timing = crate::lease_driver::DriverTiming {
            tick: Duration::from_millis(config.limits.lease_tick_ms),
            write_timeout: Duration::from_millis(config.limits.write_timeout_ms),
        };
        for (group, state) in &ctx.leader_leases {
            let (Some(h), Some(proposer)) = (ctx.host.get(*group), ctx.proposers.get(group)) else {
                continue;
            };
            tokio::spawn(crate::lease_driver::run(
                h,
                proposer.clone(),
                state.clone(),
                clock.clone(),
                timing,
                shutdown_rx.clone(),
            ));
        }
        tokio::spawn(crate::clock_check::run(
            ctx.clock_check.clone(),
            ctx.timestamps.clone(),
            ctx.pool.clone(),
            topology
                .nodes
                .iter()
                .filter(|n| n.id != config.node_id)
                .map(|n| (n.id, n.address.clone()))
                .collect(),
            ctx.closed_reads.is_some().then(|| ctx.host.clone()),
            shutdown_rx.clone(),
        ));
        let lock_service = Arc::new(LockService::new(ctx.clone(), keepalives, gate.clone()));
        let placement_service = Arc::new(PlacementService::new(ctx.clone(), gate.clone()));
        let gateway = config.http.gateway.then(|| {
            crate::gateway::Gateway::new(
                kv_service,
                lock_service.clone(),
                placement_service.clone(),
            )
        });
        let lease = LeaseServer::from_arc(lock_service.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let lock = LockServer::from_arc(lock_service)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let forward = ForwardServer::new(ForwardService::new(ctx.clone(), admission))
            .max_decoding_message_size(PEER_MESSAGE_BYTES)
            .max_encoding_message_size(PEER_MESSAGE_BYTES);
        let placement = PlacementServer::from_arc(placement_service)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let tokens = TokensServer::new(crate::tokens_service::TokensService::new(
            ctx.clone(),
            gate.clone(),
            revocations,
        ))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let maintenance = meridian_proto::kv::maintenance_server::MaintenanceServer::new(
            crate::backup::MaintenanceService::new(ctx.clone(), gate.clone()),
        )
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let (health, reflection, reflection_alpha) = crate::health::services(
            status_source.clone(),
            Duration::from_millis(config.http.ready_lag_ms),
            shutdown_rx.clone(),
        )
        .map_err(|e| StartError::Config(ConfigError::Invalid(format!("gRPC reflection: {e}"))))?;
        let mut stop_server = shutdown_rx.clone();
        let trace_rpcs = crate::telemetry::TraceRpcs::new(config.node_id, &config.region);
        let server = tokio::spawn(async move {
            let router = tonic::transport::Server::builder()
                .layer(crate::metrics::CountRpcs(rpcs))
                .layer(trace_rpcs)
                .initial_stream_window_size(Some(STREAM_WINDOW_BYTES))
                .initial_connection_window_size(Some(CONNECTION_WINDOW_BYTES))
                .max_concurrent_streams(Some(config.limits.streams_per_connection_max))
                .http2_keepalive_interval(Some(Duration::from_secs(10)))
                .http2_keepalive_timeout(Some(Duration::from_secs(10)))
                .add_service(kv)
                .add_service(peer)
                .add_service(forward)
                .add_service(lease)
                .add_service(lock)
                .add_service(placement)
                .add_service(tokens)
                .add_service(maintenance)
                .add_service(health)
                .add_service(reflection)
                .add_service(reflection_alpha);
            let stop = async move {
                let _ = stop_server.wait_for(|s| *s).await;
            };
            let res = match (listener, tls) {
                // With a custom incoming, the builder's tcp_nodelay does not apply: set it here,
                // or Nagle plus delayed ACKs add ~40 ms to small responses.
                (Listener::Tcp(l), Some(tls)) => {
                    let incoming = meridian_tls::incoming(l, tls).map_ok(Coalesce::new);
                    router.serve_with_incoming_shutdown(incoming, stop).await
                }
                (Listener::Tcp(l), None) => {
                    let incoming = tonic::transport::server::TcpIncoming::from(l)
                        .with_nodelay(Some(true))
                        .map_ok(Coalesce::new);
                    router.serve_with_incoming_shutdown(incoming, stop).await
                }
                (Listener::Injected(incoming), _) => {
                    router.serve_with_incoming_shutdown(incoming, stop).await
                }
            };
            if let Err(e) = res {
                tracing::error!(error = %e, "server stopped");
            }
        });

        start_groups(voted, &topology, bootstrap, &shutdown_rx).await?;
        let http_addr = http.as_ref().map(|(_, a)| *a);
        if let (Some(addr), true, true) = (http_addr, gateway.is_some(), tokens_on) {
            if !addr.ip().is_loopback() {
                tracing::warn!(
                    %addr,
                    "the HTTP/JSON gateway is plain HTTP: tokens sent to it travel in clear \
                     beyond this machine; put a TLS-terminating proxy in front, or set \
                     [http] gateway = false (docs/http.md)"
                );
            }
        }
        if let Some((listener, addr)) = http {
            let mut stop = shutdown_rx.clone();
            let lag = Duration::from_millis(config.http.ready_lag_ms);
            tokio::spawn(async move {
                let stop = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                if let Err(e) =
                    crate::http::serve(listener, status_source, lag, gateway, stop).await
                {
                    tracing::error!(error = %e, %addr, "the HTTP listener stopped");
                }
            });
            tracing::info!(node = config.node_id, %addr, "metrics and health on http");
        }
        let _ = shutdown_rx.borrow_and_update();
        tracing::info!(node = config.node_id, addr = %local_addr, "node serving");
        Ok(Node {
            ctx,
            local_addr,
            http_addr,
            shutdown,
            server,
            store: match stores {
                Stores::Disk(s) => Some(s),
                Stores::Memory(_) => None,
            },
        })
    }

    /// Resolves with the first failed write or fsync of this node's store (never, for a
    /// simulated node). The store then acknowledges nothing more; `meridian server` exits on
    /// it so that a restart recovers from what the disk really holds (docs/reliability.md).
    pub fn storage_failure(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        let rx = self.store.as_ref().map(|s| s.failure());
        async move {
            let Some(mut rx) = rx else {
                return std::future::pending().await;
            };
            let failed = match rx.wait_for(|f| f.is_some()).await {
                Ok(f) => f.clone().unwrap_or_default(),
                Err(_) => "the log writer stopped".to_string(),
            };
            failed
        }
    }

    /// Stops serving, then stops every group.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = tokio::time::timeout(SHUTDOWN_STEP_TIMEOUT, self.server).await;
        if tokio::time::timeout(SHUTDOWN_STEP_TIMEOUT, self.ctx.host.shutdown())
            .await
            .is_err()
        {
            tracing::error!("raft groups did not stop within {SHUTDOWN_STEP_TIMEOUT:?}");
        }
        let Some(store) = self.store else {
            return;
        };
        match tokio::time::timeout(SHUTDOWN_STEP_TIMEOUT, store.sync()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "final sync of the store failed"),
            Err(_) => tracing::error!("final sync did not finish within {SHUTDOWN_STEP_TIMEOUT:?}"),
        }
    }
}

/// Bootstraps each group this node votes in on its first start (every voter proposes the same
/// initial membership), then keeps the group's learners added (`keep_learners`).
async fn start_groups(
    voted: Vec<(GroupId, Raft)>,
    topology: &Topology,
    bootstrap: bool,
    shutdown: &watch::Receiver<bool>,
) -> Result<(), StartError> {
    for (group, raft) in voted {
        if bootstrap {
            let initialized = tokio::time::timeout(SHUTDOWN_STEP_TIMEOUT, raft.is_initialized())
                .await
                .map_err(|_| {
                    StartError::Raft(format!(
                        "group {group} did not report its state within {SHUTDOWN_STEP_TIMEOUT:?}"
                    ))
                })?
                .map_err(|e| StartError::Raft(e.to_string()))?;
            if !initialized {
                let members: BTreeMap<u64, BasicNode> = topology
                    .voters(group)
                    .iter()
                    .map(|n| (n.id, BasicNode::new(n.address.clone())))
                    .collect();
                // Every voter proposes the same initial membership; openraft refuses it on
                // a node that already has a log, which is what makes this safe to repeat.
                match tokio::time::timeout(SHUTDOWN_STEP_TIMEOUT, raft.initialize(members)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::info!(error = %e, %group, "group already initialized")
                    }
                    Err(_) => tracing::warn!(
                        %group,
                        "initializing the group did not complete within {SHUTDOWN_STEP_TIMEOUT:?}; \
                         continuing (an election will follow if it was recorded)"
                    ),
                }
            }
        }
        let learners: Vec<(u64, String)> = topology
            .learners(group)
            .iter()
            .map(|n| (n.id, n.address.clone()))
            .collect();
        if !learners.is_empty() {
            tokio::spawn(keep_learners(raft, group, learners, shutdown.clone()));
        }
    }
    Ok(())
}

/// Reloads the node's TLS files on every SIGHUP (certificate rotation without downtime: new
/// connections use the new certificate, open ones go on). A broken file keeps the old ones and
/// says what is wrong. Ends on shutdown.
async fn reload_on_hangup(tls: Arc<meridian_tls::NodeTls>, mut shutdown: watch::Receiver<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: TLS files reload only on restart");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            h = hangups.recv() => {
                if h.is_none() {
                    return;
                }
                match tls.reload() {
                    Ok(()) => tracing::info!("SIGHUP: TLS certificate and CA reloaded"),
                    Err(e) => tracing::error!("SIGHUP: TLS files not reloaded, the old ones stay: {e}"),
                }
            }
        }
    }
}
