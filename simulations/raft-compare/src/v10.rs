//! The same cluster on openraft 0.10.0-alpha.37: `RaftNetworkV2`, `RaftLogStorage::append` with
//! an `IOFlushed` callback, and the state machine's `apply` over a stream of entry/responder
//! pairs. Two transports:
//!
//! - unary: only `append_entries` is implemented, so openraft's default `stream_append` sends one
//!   request and awaits its response before the next (`stream_append_sequential`);
//! - pipelined: `stream_append` is overridden with an ordered stream to the target's
//!   `Raft::stream_append`: every request leaves as soon as openraft produces it, each arrives one
//!   way later, and responses come back in order, so several are in flight per target.

use crate::common::{Cluster, DelayLine, Disk, Mark, Marks, Params, ReadKind, LEARNER, VOTERS};
use futures::{Stream, StreamExt, TryStreamExt};
use openraft::async_runtime::watch::WatchReceiver;
use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed};
use openraft::error::{StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, VoteRequest,
    VoteResponse,
};
use openraft::storage::{EntryResponder, IOFlushed, LogState, RaftLogStorage, RaftStateMachine};
use openraft::type_config::alias::{
    LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf, VoteOf,
};
use openraft::{
    AnyError, BasicNode, EntryPayload, RaftLogReader, RaftSnapshotBuilder, ReadPolicy,
    SnapshotMeta, StoredMembership,
};
use openraft10 as openraft;
use std::collections::BTreeMap;
use std::fmt::{self, Debug};
use std::future::Future;
use std::io;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// The application command: who wrote it, and its sequence number.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cmd {
    pub client: u32,
    pub seq: u64,
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.client, self.seq)
    }
}

openraft::declare_raft_types!(
    pub Tc:
        D = Cmd,
        R = u64,
        NodeId = u64,
        Node = BasicNode,
);

type Entry = <Tc as openraft::RaftTypeConfig>::Entry;
type LogId = LogIdOf<Tc>;
type Vote = VoteOf<Tc>;
type Raft = openraft::Raft<Tc, StateMachine>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Log store: entries in memory, flushes through the node's `Disk`.

#[derive(Default)]
struct Log {
    entries: BTreeMap<u64, Entry>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
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
    ) -> io::Result<Vec<Entry>> {
        Ok(lock(&self.log)
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        Ok(lock(&self.log).vote)
    }
}

impl RaftLogStorage<Tc> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> io::Result<LogState<Tc>> {
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

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        lock(&self.log).vote = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        lock(&self.log).committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        Ok(lock(&self.log).committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<Tc>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + Send,
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
            callback.io_completed(Ok(()));
        });
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        let from = last_log_id.map_or(0, |l| l.index + 1);
        lock(&self.log).entries.split_off(&from);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        let mut log = lock(&self.log);
        log.purged = Some(log_id);
        log.entries = log.entries.split_off(&(log_id.index + 1));
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// State machine: counts entries; snapshots carry no data (the runs never build one).

pub struct StateMachine {
    id: u64,
    last_applied: Option<LogId>,
    membership: StoredMembershipOf<Tc>,
    marks: Arc<Marks>,
}

impl StateMachine {
    fn snapshot(&self) -> SnapshotOf<Tc, Vec<u8>> {
        SnapshotOf::<Tc, Vec<u8>> {
            meta: SnapshotMeta {
                last_log_id: self.last_applied,
                last_membership: self.membership.clone(),
            },
            snapshot: Vec::new(),
        }
    }
}

impl RaftSnapshotBuilder<Tc> for StateMachine {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> io::Result<SnapshotOf<Tc, Vec<u8>>> {
        Ok(self.snapshot())
    }
}

impl RaftStateMachine<Tc> for StateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembershipOf<Tc>)> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = io::Result<EntryResponder<Tc>>> + Unpin + Send,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            if let EntryPayload::Membership(m) = &entry.payload {
                self.membership = StoredMembership::new(Some(entry.log_id), m.clone());
            }
            self.last_applied = Some(entry.log_id);
            self.marks.applied(self.id, entry.log_id.index);
            if let Some(responder) = responder {
                responder.send(entry.log_id.index);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        StateMachine {
            id: self.id,
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            marks: self.marks.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<Tc>,
        _snapshot: Vec<u8>,
    ) -> io::Result<()> {
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<SnapshotOf<Tc, Vec<u8>>>> {
        Ok(None)
    }
}

// ---------------------------------------------------------------------------------------------
// Network.

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
    pipelined: bool,
}

fn not_running(to: u64) -> AnyError {
    AnyError::error(format!("node {to} is not running"))
}

impl Net {
    /// A unary call: one way there, run on the target, one way back.
    async fn call<T, E, F, Fut>(&self, f: F) -> Result<T, RPCError<Tc, E>>
    where
        E: std::error::Error,
        F: FnOnce(Raft) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let one_way = self.router.params.one_way(self.from, self.to);
        self.router.delay.sleep(one_way).await;
        let target = self
            .router
            .get(self.to)
            .ok_or_else(|| RPCError::Network(NetworkError::new(&not_running(self.to))))?;
        let res = f(target).await;
        self.router.delay.sleep(one_way).await;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.to, e)))
    }
}

/// Carries `input` over a link of one-way delay `one_way`: each item is taken as soon as it is
/// ready and delivered `one_way` after, in order, with any number in flight. The link closes when
/// `input` ends or when `stop` completes (the consumer is gone).
fn link<T, S>(
    input: S,
    delay: DelayLine,
    one_way: Duration,
    stop: impl Future<Output = ()> + Send + 'static,
) -> impl Stream<Item = T> + Send + 'static
where
    T: Send + 'static,
    S: Stream<Item = T> + Send + Unpin + 'static,
{
    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<(Instant, T)>();
    let (arrived_tx, arrived_rx) = mpsc::unbounded_channel::<T>();
    tokio::spawn(async move {
        let mut input = input;
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                item = input.next() => match item {
                    Some(item) => {
                        if sent_tx.send((Instant::now() + one_way, item)).is_err() {
                            return;
                        }
                    }
                    None => return,
                },
                _ = &mut stop => return,
            }
        }
    });
    tokio::spawn(async move {
        while let Some((at, item)) = sent_rx.recv().await {
            delay.sleep_until(at).await;
            if arrived_tx.send(item).is_err() {
                return;
            }
        }
    });
    futures::stream::unfold(arrived_rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// The response stream handed to openraft; dropping it closes the request link.
struct Responses<S> {
    inner: S,
    _close: oneshot::Sender<()>,
}

impl<S: Stream + Unpin> Stream for Responses<S> {
    type Item = S::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

impl RaftNetworkV2<Tc> for Net {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<Tc>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<Tc>, RPCError<Tc>> {
        self.call(|raft| async move { raft.append_entries(rpc).await })
            .await
            .map_err(|e: RPCError<Tc, RaftError<Tc>>| {
                RPCError::Unreachable(Unreachable::new(&AnyError::error(e.to_string())))
            })
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<BoxStream<'s, Result<StreamAppendResult<Tc>, RPCError<Tc>>>, RPCError<Tc>>,
    >
    where
        S: Stream<Item = AppendEntriesRequest<Tc>> + Send + Unpin + 'static,
    {
        if !self.pipelined {
            return openraft::network::stream_append_sequential(self, input, option);
        }
        let one_way = self.router.params.one_way(self.from, self.to);
        let delay = self.router.delay.clone();
        let target = self.router.get(self.to);
        let to = self.to;
        Box::pin(async move {
            let raft =
                target.ok_or_else(|| RPCError::Unreachable(Unreachable::new(&not_running(to))))?;
            let (close, closed) = oneshot::channel();
            let closed = async move {
                let _ = closed.await;
            };
            let requests = link(input, delay.clone(), one_way, closed);
            let answers = Box::pin(raft.stream_append(requests));
            // The return link ends with its input, the target's answer stream.
            let answers = link(answers, delay, one_way, std::future::pending());
            let answers = answers.map(move |r| {
                r.map_err(|fatal| {
                    RPCError::Unreachable(Unreachable::new(&AnyError::error(fatal.to_string())))
                })
            });
            let stream: BoxStream<'s, _> = Box::pin(Responses {
                inner: Box::pin(answers),
                _close: close,
            });
            Ok(stream)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<Tc>,
        _option: RPCOption,
    ) -> Result<VoteResponse<Tc>, RPCError<Tc>> {
        self.call(|raft| async move { raft.vote(rpc).await })
            .await
            .map_err(|e: RPCError<Tc, RaftError<Tc>>| {
                RPCError::Unreachable(Unreachable::new(&AnyError::error(e.to_string())))
            })
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: SnapshotOf<Tc, Vec<u8>>,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<Tc>, StreamingError<Tc>> {
        self.call(|raft| async move { raft.install_full_snapshot(vote, snapshot).await })
            .await
            .map_err(|e| {
                StreamingError::Unreachable(Unreachable::new(&AnyError::error(e.to_string())))
            })
    }
}

struct NetFactory {
    from: u64,
    router: Router,
    pipelined: bool,
}

impl RaftNetworkFactory<Tc> for NetFactory {
    type Network = Net;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> Self::Network {
        Net {
            from: self.from,
            to: target,
            router: self.router.clone(),
            pipelined: self.pipelined,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The cluster.

/// Three voters and a learner on openraft 0.10.0-alpha.37.
pub struct Cluster10 {
    router: Router,
    leader: Raft,
}

impl Cluster10 {
    /// Starts the nodes, elects node 0 and adds the learner.
    pub async fn start(
        params: &Params,
        delay: DelayLine,
        marks: Arc<Marks>,
        pipelined: bool,
    ) -> Result<Self, String> {
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
                pipelined,
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
        // 0.10 takes a bare id set only for `()`/`EmptyNode` nodes; `BasicNode` needs the map.
        let voters: BTreeMap<u64, BasicNode> = VOTERS
            .into_iter()
            .map(|id| (id, BasicNode::default()))
            .collect();
        leader.initialize(voters).await.map_err(|e| e.to_string())?;
        leader
            .wait(Some(Duration::from_secs(10)))
            .current_leader(0, "node 0 elected")
            .await
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
        let m = self.leader.metrics().borrow_watched().clone();
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

impl Cluster for Cluster10 {
    async fn write(&self, client: u32, seq: u64) -> Result<u64, String> {
        self.leader
            .client_write(Cmd { client, seq })
            .await
            .map(|r| r.data)
            .map_err(|e| e.to_string())
    }

    async fn read(&self, how: ReadKind) -> Result<(), String> {
        let policy = match how {
            ReadKind::ReadIndex => ReadPolicy::ReadIndex,
            ReadKind::LeaseRead => ReadPolicy::LeaseRead,
        };
        self.leader
            .ensure_linearizable(policy)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
