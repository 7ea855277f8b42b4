//! A running node: opens the store, starts the group's Raft, serves clients and peers on one
//! address, bootstraps the group on first start, and shuts all of it down on request.

use crate::config::NodeConfig;
use crate::ctx::NodeCtx;
use crate::proposer::Proposer;
use crate::service::KvService;
use meridian_consensus::{GroupHandle, GroupNetworkFactory, Host, PeerPool, PeerService, Raft};
use meridian_proto::kv::kv_server::KvServer;
use meridian_proto::peer::peer_server::PeerServer;
use meridian_proto::MAX_MESSAGE_BYTES;
use meridian_storage::NodeStore;
use meridian_types::GroupId;
use openraft::BasicNode;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Longest each shutdown step (stop serving, stop groups, final sync) may take.
const SHUTDOWN_STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// The one group of a single-region cluster.
pub const REGION_GROUP: GroupId = GroupId(1);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("storage at {path}: {source}")]
    Storage {
        path: String,
        source: meridian_storage::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("raft: {0}")]
    Raft(String),
}

pub struct Node {
    pub ctx: Arc<NodeCtx>,
    pub local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
    store: NodeStore,
}

impl Node {
    pub async fn start(config: NodeConfig) -> Result<Node, StartError> {
        config.validate()?;
        let raft_config = config
            .raft
            .raft_config(&config.cluster_name)
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let store = NodeStore::open(&config.data_dir).map_err(|source| StartError::Storage {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let (log, sm) = store
            .group(REGION_GROUP, config.limits.history_revisions_max)
            .map_err(|source| StartError::Storage {
                path: config.data_dir.display().to_string(),
                source,
            })?;
        let shared = sm.shared();
        let pool = PeerPool::new();
        let network = GroupNetworkFactory::new(REGION_GROUP, pool.clone());
        let raft = Raft::new(config.node_id, raft_config, network, log, sm)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let host = Host::new();
        host.insert(REGION_GROUP, GroupHandle::new(raft.clone(), shared));

        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: config.listen.clone(),
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Listen {
            addr: config.listen.clone(),
            source,
        })?;
        let address = config
            .advertise
            .clone()
            .unwrap_or_else(|| local_addr.to_string());
        let ctx = Arc::new(NodeCtx {
            node_id: config.node_id,
            region: config.region.clone(),
            address,
            host: host.clone(),
            pool,
            limits: config.limits.clone(),
            default_group: REGION_GROUP,
            watches: Arc::new(tokio::sync::Semaphore::new(config.limits.watches_max)),
            proposers: [(REGION_GROUP, Proposer::start(REGION_GROUP, raft.clone()))].into(),
        });
        let (shutdown, mut shutdown_rx) = watch::channel(false);
        let kv = KvServer::new(KvService::new(ctx.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let peer = PeerServer::new(PeerService::new(host.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        // With a custom incoming, the builder's tcp_nodelay does not apply: set it here, or
        // Nagle plus delayed ACKs add ~40 ms to small responses.
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let server = tokio::spawn(async move {
            let res = tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(Duration::from_secs(10)))
                .http2_keepalive_timeout(Some(Duration::from_secs(10)))
                .add_service(kv)
                .add_service(peer)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = shutdown_rx.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = res {
                tracing::error!(error = %e, "server stopped");
            }
        });

        if config.bootstrap && !config.peers.is_empty() {
            let initialized = raft
                .is_initialized()
                .await
                .map_err(|e| StartError::Raft(e.to_string()))?;
            if !initialized {
                let members: BTreeMap<u64, BasicNode> = config
                    .peers
                    .iter()
                    .map(|p| (p.id, BasicNode::new(p.address.clone())))
                    .collect();
                // Every node proposes the same initial membership; openraft refuses it on a node
                // that already has a log, which is what makes this safe to repeat.
                if let Err(e) = raft.initialize(members).await {
                    tracing::info!(error = %e, "group already initialized");
                }
            }
        }
        tracing::info!(node = config.node_id, addr = %local_addr, "node serving");
        Ok(Node {
            ctx,
            local_addr,
            shutdown,
            server,
            store,
        })
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
        match tokio::time::timeout(SHUTDOWN_STEP_TIMEOUT, self.store.sync()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "final sync of the store failed"),
            Err(_) => tracing::error!("final sync did not finish within {SHUTDOWN_STEP_TIMEOUT:?}"),
        }
    }
}
