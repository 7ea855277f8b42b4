//! The cluster on openraft 0.9.25 (storage-v2), as Meridian runs it today: `RaftNetwork` with one
//! unary AppendEntries per call, `RaftLogStorage::append` with a `LogFlushed` callback.

use crate::common::{Cluster, DelayLine, Disk, Mark, Marks, Params, ReadKind, LEARNER, VOTERS};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StoredMembership, Vote,
};
use openraft09 as openraft;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

/// The application command: who wrote it, and its sequence number.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cmd {
    pub client: u32,
    pub seq: u64,
}

openraft::declare_raft_types!(
    pub Tc:
        D = Cmd,
        R = u64,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<Tc>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

type Raft = openraft::Raft<Tc>;
type Result<T> = std::result::Result<T, StorageError<u64>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Log store: entries in memory, flushes through the node's `Disk`.

#[derive(Default)]
struct Log {
    entries: BTreeMap<u64, Entry<Tc>>,
    vote: Option<Vote<u64>>,
    committed: Option<LogId<u64>>,
    purged: Option<LogId<u64>>,
}

#[derive(Clone)]
struct LogStore {
    id: u64,
    log: Arc<Mutex<Log>>,
    disk: Disk,
    marks: Arc<Marks>,
}

impl RaftLogReader<Tc> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<Tc>>> {
        Ok(lock(&self.log)
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<Tc> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<Tc>> {
        let log = lock(&self.log);
        let last = log.entries.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: log.purged,
            last_log_id: last.or(log.purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<()> {
        lock(&self.log).vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>> {
        Ok(lock(&self.log).vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<()> {
        lock(&self.log).committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>> {
        Ok(lock(&self.log).committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<Tc>) -> Result<()>
    where
        I: IntoIterator<Item = Entry<Tc>> + Send,
        I::IntoIter: Send,
    {
        let mut indexes = Vec::new();
        {
            let mut log = lock(&self.log);
            for e in entries {
                indexes.push(e.log_id.index);
                log.entries.insert(e.log_id.index, e);
            }
        }
        let (id, marks) = (self.id, self.marks.clone());
        self.disk.flush(move || {
            if id == LEARNER {
                for i in indexes {
                    marks.record(Mark::LearnerFlushed, i);
                }
            }
            callback.log_io_completed(Ok(()));
        });
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<()> {
        lock(&self.log).entries.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<()> {
        let mut log = lock(&self.log);
        log.purged = Some(log_id);
        log.entries = log.entries.split_off(&(log_id.index + 1));
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// State machine: counts entries; snapshots carry no data (the runs never build one).

struct StateMachine {
    id: u64,
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    marks: Arc<Marks>,
}

impl RaftSnapshotBuilder<Tc> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<openraft::Snapshot<Tc>> {
        Ok(self.snapshot())
    }
}

impl StateMachine {
    fn snapshot(&self) -> openraft::Snapshot<Tc> {
        openraft::Snapshot {
            meta: SnapshotMeta {
                last_log_id: self.last_applied,
                last_membership: self.membership.clone(),
                snapshot_id: format!("{:?}", self.last_applied),
            },
            snapshot: Box::new(Cursor::new(Vec::new())),
        }
    }
}

impl RaftStateMachine<Tc> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>)> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<u64>>
    where
        I: IntoIterator<Item = Entry<Tc>> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        for e in entries {
            if let EntryPayload::Membership(m) = &e.payload {
                self.membership = StoredMembership::new(Some(e.log_id), m.clone());
            }
            self.last_applied = Some(e.log_id);
            self.marks.applied(self.id, e.log_id.index);
            out.push(e.log_id.index);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        StateMachine {
            id: self.id,
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            marks: self.marks.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        _snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<()> {
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<openraft::Snapshot<Tc>>> {
        Ok(None)
    }
}

// ---------------------------------------------------------------------------------------------
// Network: a unary call waits one way, runs on the target, and waits one way back.

#[derive(Clone)]
struct Router {
    nodes: Arc<RwLock<BTreeMap<u64, Raft>>>,
    params: Params,
    delay: DelayLine,
}

impl Router {
    fn get(&self, id: u64) -> Option<Raft> {
        self.nodes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }
}

struct Net {
    from: u64,
    to: u64,
    router: Router,
}

fn unreachable<E: std::error::Error>(to: u64) -> RPCError<u64, BasicNode, E> {
    RPCError::Network(NetworkError::new(&AnyError::error(format!(
        "node {to} is not running"
    ))))
}

impl Net {
    async fn call<T, E, F, Fut>(&self, f: F) -> std::result::Result<T, RPCError<u64, BasicNode, E>>
    where
        E: std::error::Error,
        F: FnOnce(Raft) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, E>>,
    {
        let one_way = self.router.params.one_way(self.from, self.to);
        self.router.delay.sleep(one_way).await;
        let target = self
            .router
            .get(self.to)
            .ok_or_else(|| unreachable(self.to))?;
        let res = f(target).await;
        self.router.delay.sleep(one_way).await;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.to, e)))
    }
}

impl RaftNetwork<Tc> for Net {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<Tc>,
        _option: RPCOption,
    ) -> std::result::Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>>
    {
        self.call(|raft| async move { raft.append_entries(rpc).await })
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<Tc>,
        _option: RPCOption,
    ) -> std::result::Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.call(|raft| async move { raft.install_snapshot(rpc).await })
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> std::result::Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(|raft| async move { raft.vote(rpc).await }).await
    }
}

struct NetFactory {
    from: u64,
    router: Router,
}

impl RaftNetworkFactory<Tc> for NetFactory {
    type Network = Net;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> Self::Network {
        Net {
            from: self.from,
            to: target,
            router: self.router.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The cluster.

/// Three voters and a learner on openraft 0.9.25.
pub struct Cluster09 {
    router: Router,
    leader: Raft,
}

impl Cluster09 {
    /// Starts the nodes, elects node 0 and adds the learner.
    pub async fn start(
        params: &Params,
        delay: DelayLine,
        marks: Arc<Marks>,
    ) -> std::result::Result<Self, String> {
        let (election_min, election_max) = params.election_timeout_ms();
        let config = openraft::Config {
            cluster_name: "raft-compare".into(),
            heartbeat_interval: params.heartbeat.as_millis() as u64,
            election_timeout_min: election_min,
            election_timeout_max: election_max,
            max_payload_entries: 1024,
            snapshot_policy: openraft::SnapshotPolicy::Never,
            ..Default::default()
        };
        let config = Arc::new(config.validate().map_err(|e| e.to_string())?);
        let router = Router {
            nodes: Arc::default(),
            params: params.clone(),
            delay: delay.clone(),
        };
        for id in VOTERS.into_iter().chain([LEARNER]) {
            let store = LogStore {
                id,
                log: Arc::default(),
                disk: Disk::spawn(delay.clone(), params.fsync),
                marks: marks.clone(),
            };
            let sm = StateMachine {
                id,
                last_applied: None,
                membership: StoredMembership::default(),
                marks: marks.clone(),
            };
            let net = NetFactory {
                from: id,
                router: router.clone(),
            };
            let raft = Raft::new(id, config.clone(), net, store, sm)
                .await
                .map_err(|e| e.to_string())?;
            router
                .nodes
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, raft);
        }
        let leader = router.get(0).ok_or("node 0 missing")?;
        let voters: BTreeSet<u64> = VOTERS.into_iter().collect();
        leader.initialize(voters).await.map_err(|e| e.to_string())?;
        let mut metrics = leader.metrics();
        tokio::time::timeout(
            Duration::from_secs(10),
            metrics.wait_for(|m| m.current_leader == Some(0)),
        )
        .await
        .map_err(|_| "node 0 was not elected within 10 s")?
        .map_err(|e| e.to_string())?;
        marks.set_leader(0);
        // Refused until the initial membership is committed. Not blocking: where the learner
        // cannot keep up (0.9 with a learner round trip above the heartbeat), it never would
        // return; the driver waits for the learner with a deadline instead.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while let Err(e) = leader
            .add_learner(LEARNER, BasicNode::default(), false)
            .await
        {
            if tokio::time::Instant::now() > deadline {
                return Err(format!("adding the learner: {e}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self { router, leader })
    }

    /// The leader's term, to check that no election happened during a run.
    pub fn term(&self) -> (u64, Option<u64>) {
        let m = self.leader.metrics().borrow().clone();
        (m.current_term, m.current_leader)
    }

    /// Stops every node.
    pub async fn shutdown(&self) {
        let nodes: Vec<Raft> = self
            .router
            .nodes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for raft in nodes {
            let _ = raft.shutdown().await;
        }
    }
}

impl Cluster for Cluster09 {
    async fn write(&self, client: u32, seq: u64) -> std::result::Result<u64, String> {
        self.leader
            .client_write(Cmd { client, seq })
            .await
            .map(|r| r.data)
            .map_err(|e| e.to_string())
    }

    async fn read(&self, how: ReadKind) -> std::result::Result<(), String> {
        match how {
            ReadKind::ReadIndex => self
                .leader
                .ensure_linearizable()
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            ReadKind::LeaseRead => Err("openraft 0.9 has no lease read".into()),
        }
    }
}
