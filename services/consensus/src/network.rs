//! The peer transport. A [`PeerPool`] keeps one lazily connected HTTP/2 channel per peer
//! address; every group's [`GroupNetworkFactory`] borrows from it, so N groups between two nodes
//! share one connection. Payloads are openraft's types, bincode-encoded, wrapped with the group.
//!
//! Replication is a stream ([`GroupPeer`]): openraft 0.10 hands each target's AppendEntries
//! requests to `stream_append` as it produces them, and they go out on one gRPC bidirectional
//! stream (`Peer/StreamAppend`) into the target's `Raft::stream_append`, any number in flight;
//! the answers come back in order. Over a WAN link the entries reach a learner one way after
//! they are written, not one round trip after the previous batch was answered.

use crate::LeaderLease;
use futures::{Stream, StreamExt};
use meridian_proto::io::Dialer;
use meridian_proto::peer::peer_client::PeerClient;
use meridian_proto::peer::{RaftMessage, ReadIndexRequest};
use meridian_proto::PEER_MESSAGE_BYTES;
use meridian_types::raft::{Entry, Snapshot, SnapshotData, TypeConfig, Vote};
use meridian_types::GroupId;
use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendError,
    StreamAppendResult, VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

/// Deadline for establishing a connection to a peer.
pub const CONNECT_TIMEOUT_MS: u64 = 1_000;

#[derive(Default)]
pub struct PeerPool {
    channels: Mutex<HashMap<String, Channel>>,
    /// Where to connect to reach an advertised address (e.g. the WAN emulator's relay for a
    /// node in another region). Addresses not in the map are dialed as they are.
    dial: HashMap<String, String>,
    /// Opens the connections (simulation injects its sockets); None: tonic's TCP connector.
    dialer: Option<Dialer>,
}

impl PeerPool {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A pool that reaches `advertised` addresses through `dial[advertised]` when present.
    pub fn with_dial(dial: HashMap<String, String>) -> Arc<Self> {
        Arc::new(Self {
            channels: Mutex::default(),
            dial,
            dialer: None,
        })
    }

    /// As [`PeerPool::with_dial`], opening connections through `dialer` when given.
    pub fn with_dialer(dial: HashMap<String, String>, dialer: Option<Dialer>) -> Arc<Self> {
        Arc::new(Self {
            channels: Mutex::default(),
            dial,
            dialer,
        })
    }

    /// Number of peer channels (one per peer address, shared by every group).
    pub fn channel_count(&self) -> usize {
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// The shared channel to the node advertised as `addr` (host:port), created on first use.
    pub fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match map.get(addr) {
            Some(c) => c.clone(),
            None => {
                let dial = self.dial.get(addr).map_or(addr, String::as_str);
                let endpoint = Endpoint::from_shared(format!("http://{dial}"))?
                    .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
                    .tcp_nodelay(true)
                    .initial_stream_window_size(STREAM_WINDOW_BYTES)
                    .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
                    .http2_keep_alive_interval(Duration::from_secs(5))
                    .keep_alive_timeout(Duration::from_secs(5));
                let c = match &self.dialer {
                    Some(d) => d.channel(endpoint, dial),
                    None => endpoint.connect_lazy(),
                };
                map.insert(addr.to_string(), c.clone());
                c
            }
        };
        Ok(channel)
    }

    /// The shared Raft client for `addr` (host:port).
    pub fn client(&self, addr: &str) -> Result<PeerClient<Channel>, tonic::transport::Error> {
        let channel = self.channel(addr)?;
        Ok(PeerClient::new(channel)
            .max_decoding_message_size(PEER_MESSAGE_BYTES)
            .max_encoding_message_size(PEER_MESSAGE_BYTES))
    }

    /// Asks the leader at `addr` for a read index of `group` (leadership confirmed by a quorum).
    pub async fn read_index(
        &self,
        addr: &str,
        group: GroupId,
        timeout: Duration,
    ) -> Result<u64, tonic::Status> {
        let mut client = self
            .client(addr)
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let mut req = tonic::Request::new(ReadIndexRequest { group: group.0 });
        req.set_timeout(timeout);
        meridian_proto::trace::inject(&mut req);
        let reply = tokio::time::timeout(timeout, client.read_index(req))
            .await
            .map_err(|_| tonic::Status::deadline_exceeded("read index timed out"))??;
        Ok(reply.into_inner().read_index)
    }
}

/// Metadata naming the group of a `StreamAppend` stream (its messages carry it too).
pub const GROUP_HEADER: &str = "meridian-group";

pub struct GroupNetworkFactory {
    group: GroupId,
    pool: Arc<PeerPool>,
    /// Nodes that are only ever learners of this group, with their round trip from here.
    learners: Arc<BTreeMap<u64, Duration>>,
    lease: Option<Arc<LeaderLease>>,
}

impl GroupNetworkFactory {
    pub fn new(group: GroupId, pool: Arc<PeerPool>) -> Self {
        Self {
            group,
            pool,
            learners: Arc::default(),
            lease: None,
        }
    }

    /// The group's leader lease: every voter's answer to an AppendEntries feeds it.
    pub fn with_lease(mut self, lease: Arc<LeaderLease>) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Nodes that are only ever learners of this group (never voters), each with its round
    /// trip in milliseconds from this node's region: their answers are awaited on their own
    /// deadline ([`learner_deadline`]) and never feed the lease. Invariant: a node listed here
    /// is not promoted to voter while this factory lives.
    pub fn with_learners(mut self, learners: impl IntoIterator<Item = (u64, u64)>) -> Self {
        self.learners = Arc::new(
            learners
                .into_iter()
                .map(|(id, rtt_ms)| (id, Duration::from_millis(rtt_ms)))
                .collect(),
        );
        self
    }
}

impl RaftNetworkFactory<TypeConfig> for GroupNetworkFactory {
    type Network = GroupPeer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Self::Network {
        let learner = self.learners.get(&target).copied();
        GroupPeer {
            link: PeerLink {
                group: self.group,
                target,
                addr: node.addr.clone(),
                pool: self.pool.clone(),
            },
            learner_rtt: learner,
            lease: if learner.is_some() {
                None
            } else {
                self.lease.clone()
            },
            failures: 0,
        }
    }
}

/// Most entry bytes one AppendEntries message carries (a single larger entry still goes alone).
pub const APPEND_BYTES_MAX: u64 = 1024 * 1024;

/// Most AppendEntries messages out on one stream without an answer; past it the stream waits.
/// openraft's own pipeline to a target is shorter (64); this bounds the bookkeeping.
pub const STREAM_IN_FLIGHT_MAX: usize = 256;

/// How many leading entries fit in `budget` bytes (at least one when there are any).
fn entries_within(entries: &[Entry], budget: u64) -> usize {
    let mut total = 0u64;
    for (i, e) in entries.iter().enumerate() {
        let size = bincode::serialized_size(e).unwrap_or(u64::MAX);
        if i > 0 && total.saturating_add(size) > budget {
            return i;
        }
        total = total.saturating_add(size);
    }
    entries.len()
}

/// `req` as messages of at most [`APPEND_BYTES_MAX`] of entries each (one for an empty
/// request), chained: each starts where the previous one ends. The target commits no further
/// than what a message carried, so every part may carry the leader's commit.
fn split(req: AppendEntriesRequest<TypeConfig>) -> Vec<AppendEntriesRequest<TypeConfig>> {
    let AppendEntriesRequest {
        vote,
        mut prev_log_id,
        leader_commit,
        mut entries,
    } = req;
    let mut parts = Vec::new();
    loop {
        let keep = entries_within(&entries, APPEND_BYTES_MAX);
        let rest = entries.split_off(keep);
        let last = entries.last().map(|e| e.log_id).or(prev_log_id);
        parts.push(AppendEntriesRequest {
            vote,
            prev_log_id,
            leader_commit,
            entries,
        });
        if rest.is_empty() {
            return parts;
        }
        prev_log_id = last;
        entries = rest;
    }
}

/// HTTP/2 flow-control windows of peer connections. The defaults (64 KiB) cap a connection
/// at one window per round trip — 0.4 MB/s over a 170 ms link, too little for a learner.
pub const STREAM_WINDOW_BYTES: u32 = 8 * 1024 * 1024;
pub const CONNECTION_WINDOW_BYTES: u32 = 32 * 1024 * 1024;

/// Bytes of a snapshot per message of its stream (`Peer/InstallSnapshot`).
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

/// How long an answer from a learner `rtt` away may take: ten round trips, at least 2 s (a full
/// 1 MiB payload over a loaded WAN link).
pub fn learner_deadline(rtt: Duration) -> Duration {
    (rtt * 10).max(Duration::from_secs(2))
}

/// The network to one target of one group.
///
/// Replication ([`GroupPeer::stream_append`]): every request openraft produces leaves at once
/// on the target's stream, cut into messages of at most [`APPEND_BYTES_MAX`] of entries; the
/// target answers each in order, and the parts of one request are answered as one. An answer
/// overdue by the target's deadline (its [`learner_deadline`], at least ten heartbeats) ends the
/// stream as unreachable, and openraft opens another after its backoff. Heartbeats are streams
/// of one request (openraft 0.10's heartbeat worker), on the heartbeat's deadline.
///
/// A voter's every answer that accepts the leader's vote feeds the read lease
/// ([`LeaderLease`]) with the time its request left.
pub struct GroupPeer {
    link: PeerLink,
    /// The target's round trip from here when it is a learner of the group; None for a voter.
    learner_rtt: Option<Duration>,
    /// Fed with the target's answers when it is a voter (never for a learner).
    lease: Option<Arc<LeaderLease>>,
    /// Streams that failed to open in a row (see [`open_backoff`]).
    failures: u32,
}

/// How long a failed stream open is held before it is reported: 10 ms, doubling with each
/// failure in a row, at most 500 ms. openraft opens the next stream as soon as it hears of the
/// failure, and a refused connection fails at once: without this, a leader would dial a
/// stopped peer in a busy loop.
fn open_backoff(failures: u32) -> Duration {
    Duration::from_millis(10u64 << failures.min(6)).min(Duration::from_millis(500))
}

/// Where one group's messages to one target go.
#[derive(Clone)]
struct PeerLink {
    group: GroupId,
    target: u64,
    addr: String,
    pool: Arc<PeerPool>,
}

#[derive(Clone, Copy)]
enum Rpc {
    Vote,
    PreVote,
    TransferLeader,
}

fn unreachable<E: std::error::Error + 'static>(e: &E) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::new(e))
}

fn network<E: std::error::Error + 'static>(e: &E) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(e))
}

impl PeerLink {
    fn client(&self) -> Result<PeerClient<Channel>, RPCError<TypeConfig>> {
        self.pool.client(&self.addr).map_err(|e| unreachable(&e))
    }

    /// A unary call within `ttl`. The answer is the peer's `Result<Resp, String>`: an error
    /// there (the target's Raft refused or stopped) counts as unreachable.
    async fn call<Req, Resp>(
        &self,
        rpc: Rpc,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let payload = bincode::serialize(req).map_err(|e| network(&e))?;
        let mut client = self.client()?;
        let sent_bytes = payload.len();
        let mut request = tonic::Request::new(RaftMessage {
            group: self.group.0,
            payload,
        });
        request.set_timeout(ttl);
        let call = async {
            match rpc {
                Rpc::Vote => client.vote(request).await,
                Rpc::PreVote => client.pre_vote(request).await,
                Rpc::TransferLeader => client.transfer_leader(request).await,
            }
        };
        self.answer(sent_bytes, ttl, call).await
    }

    /// A snapshot as [`SNAPSHOT_CHUNK_BYTES`] chunks on one client stream, after a first
    /// message with (vote, meta, length); each chunk gets `ttl`, and the answer `ttl` more.
    async fn send_snapshot(
        &self,
        vote: Vote,
        snapshot: Snapshot,
        ttl: Duration,
    ) -> Result<SnapshotResponse<TypeConfig>, RPCError<TypeConfig>> {
        let group = self.group.0;
        let data = snapshot.snapshot;
        let len = data.len();
        let head =
            bincode::serialize(&(vote, snapshot.meta, len as u64)).map_err(|e| network(&e))?;
        let chunks = len.div_ceil(SNAPSHOT_CHUNK_BYTES);
        let body = (0..chunks).map(move |i| RaftMessage {
            group,
            payload: data[i * SNAPSHOT_CHUNK_BYTES..len.min((i + 1) * SNAPSHOT_CHUNK_BYTES)]
                .to_vec(),
        });
        let messages = std::iter::once(RaftMessage {
            group,
            payload: head,
        })
        .chain(body);
        let total = ttl.saturating_mul(u32::try_from(chunks + 1).unwrap_or(u32::MAX));
        let mut client = self.client()?;
        let mut request = tonic::Request::new(futures::stream::iter(messages));
        request.set_timeout(total);
        let call = client.install_snapshot(request);
        self.answer(len, total, call).await
    }

    /// The peer's answer to a call, within `ttl`.
    async fn answer<Resp: DeserializeOwned>(
        &self,
        sent_bytes: usize,
        ttl: Duration,
        call: impl Future<Output = Result<tonic::Response<RaftMessage>, tonic::Status>>,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        let started = Instant::now();
        let res = tokio::time::timeout(ttl, call).await;
        tracing::debug!(
            group = %self.group,
            target = self.target,
            bytes = sent_bytes,
            ms = started.elapsed().as_millis() as u64,
            ok = matches!(res, Ok(Ok(_))),
            "peer rpc"
        );
        let reply = match res {
            Err(_) => {
                let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "peer rpc deadline");
                return Err(network(&e));
            }
            Ok(Err(status)) if status.code() == tonic::Code::Unavailable => {
                return Err(unreachable(&status));
            }
            Ok(Err(status)) => return Err(network(&status)),
            Ok(Ok(r)) => r.into_inner(),
        };
        let result: Result<Resp, String> =
            bincode::deserialize(&reply.payload).map_err(|e| network(&e))?;
        result.map_err(|e| unreachable(&std::io::Error::other(e)))
    }
}

/// One request of a stream, out on the wire, waiting for its answers.
struct Sent {
    /// Messages it was cut into (as many answers make its one).
    parts: usize,
    vote: Vote,
    sent_at: Instant,
}

/// The requests of one stream that have left and are not answered yet, oldest first.
#[derive(Default)]
struct InFlight {
    queue: Mutex<VecDeque<Sent>>,
    /// Signalled when a request leaves or room frees up.
    changed: tokio::sync::Notify,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Sent>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The answer of a request cut into parts: the first refusal, else the last part's match.
fn merge(
    answers: impl IntoIterator<Item = StreamAppendResult<TypeConfig>>,
) -> Option<StreamAppendResult<TypeConfig>> {
    let mut merged = None;
    for a in answers {
        if a.is_err() {
            return Some(a);
        }
        merged = Some(a);
    }
    merged
}

type Answers = BoxStream<'static, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>;

impl GroupPeer {
    /// How long the oldest request out may wait for its answer: the learner's deadline, or ten
    /// of openraft's deadlines (its heartbeat) for a voter.
    fn deadline(&self, ttl: Duration) -> Duration {
        match self.learner_rtt {
            Some(rtt) => learner_deadline(rtt).max(ttl * 10),
            None => ttl * 10,
        }
    }

    /// [`GroupPeer::open_stream`], holding a failure for its [`open_backoff`].
    async fn open<S>(
        &mut self,
        input: S,
        deadline: Duration,
    ) -> Result<Answers, RPCError<TypeConfig>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        match self.open_stream(input, deadline).await {
            Ok(answers) => {
                self.failures = 0;
                Ok(answers)
            }
            Err(e) => {
                tokio::time::sleep(open_backoff(self.failures)).await;
                self.failures = self.failures.saturating_add(1);
                Err(e)
            }
        }
    }

    /// Opens the stream: requests leave as openraft yields them (cut and recorded in
    /// `in_flight`), answers are merged per request and checked against the deadline.
    async fn open_stream<S>(
        &self,
        input: S,
        deadline: Duration,
    ) -> Result<Answers, RPCError<TypeConfig>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        let link = self.link.clone();
        let mut client = link.client()?;
        let in_flight = Arc::new(InFlight::default());
        let group = link.group.0;
        let sending = in_flight.clone();
        let requests = futures::stream::unfold(
            (input, sending, VecDeque::<RaftMessage>::new()),
            move |(mut input, in_flight, mut ready)| async move {
                loop {
                    if let Some(msg) = ready.pop_front() {
                        return Some((msg, (input, in_flight, ready)));
                    }
                    // Room first: a full stream waits for answers before taking more.
                    loop {
                        let notified = in_flight.changed.notified();
                        if in_flight.lock().len() < STREAM_IN_FLIGHT_MAX {
                            break;
                        }
                        notified.await;
                    }
                    let req = input.next().await?;
                    let vote = req.vote;
                    let parts = split(req);
                    for part in &parts {
                        match bincode::serialize(part) {
                            Ok(payload) => ready.push_back(RaftMessage { group, payload }),
                            Err(e) => {
                                tracing::error!(group, "an AppendEntries does not encode: {e}");
                                return None;
                            }
                        }
                    }
                    in_flight.lock().push_back(Sent {
                        parts: parts.len(),
                        vote,
                        sent_at: Instant::now(),
                    });
                    in_flight.changed.notify_waiters();
                }
            },
        );
        let mut request = tonic::Request::new(requests);
        // No grpc-timeout: the stream lasts as long as this leader replicates; each answer
        // has its deadline below.
        if let Ok(v) = group.to_string().parse() {
            request.metadata_mut().insert(GROUP_HEADER, v);
        }
        let opened = tokio::time::timeout(deadline, client.stream_append(request))
            .await
            .map_err(|_| {
                let e = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "opening the replication stream timed out",
                );
                unreachable(&e)
            })?
            .map_err(|status| unreachable(&status))?;
        let answers = opened.into_inner();
        let lease = self.lease.clone();
        let target = link.target;
        let stream =
            futures::stream::unfold(Some((answers, in_flight, lease)), move |state| async move {
                let (mut answers, in_flight, lease) = state?;
                let next = next_answer(&mut answers, &in_flight, deadline).await;
                let (sent, answer) = match next {
                    Ok(Some(x)) => x,
                    Ok(None) => return None,
                    Err(e) => return Some((Err(e), None)),
                };
                if let (Some(lease), false) = (
                    &lease,
                    matches!(answer, Err(StreamAppendError::HigherVote(_))),
                ) {
                    lease.acked(target, sent.vote, sent.sent_at);
                }
                let go_on = answer.is_ok();
                let item = Ok(answer);
                Some((item, go_on.then_some((answers, in_flight, lease))))
            });
        Ok(Box::pin(stream))
    }
}

/// The next request's merged answer, with what was recorded when it left: `None` when the
/// target ended the stream with nothing out; an error when it broke the stream, answered what
/// was not asked, or the oldest request's answer is overdue by `deadline`.
async fn next_answer(
    answers: &mut tonic::Streaming<RaftMessage>,
    in_flight: &InFlight,
    deadline: Duration,
) -> Result<Option<(Sent, StreamAppendResult<TypeConfig>)>, RPCError<TypeConfig>> {
    // Wait for a request to leave (nothing can be answered before).
    let (parts, due) = loop {
        let notified = in_flight.changed.notified();
        if let Some(front) = in_flight.lock().front() {
            break (front.parts, front.sent_at + deadline);
        }
        tokio::select! {
            _ = notified => continue,
            msg = answers.message() => match msg {
                Ok(None) => return Ok(None),
                Ok(Some(_)) => {
                    let e = std::io::Error::other("an answer came with no request out");
                    return Err(network(&e));
                }
                Err(status) => return Err(unreachable(&status)),
            },
        }
    };
    let mut got = Vec::with_capacity(parts);
    while got.len() < parts {
        let msg = match tokio::time::timeout_at(due, answers.message()).await {
            Err(_) => {
                let e = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {} ms", deadline.as_millis()),
                );
                return Err(unreachable(&e));
            }
            Ok(Err(status)) => return Err(unreachable(&status)),
            Ok(Ok(None)) => {
                let e = std::io::Error::other("the target ended the stream with requests out");
                return Err(unreachable(&e));
            }
            Ok(Ok(Some(msg))) => msg,
        };
        let answer: StreamAppendResult<TypeConfig> =
            bincode::deserialize(&msg.payload).map_err(|e| network(&e))?;
        let refused = answer.is_err();
        got.push(answer);
        if refused {
            break;
        }
    }
    let sent = in_flight.lock().pop_front();
    in_flight.changed.notify_waiters();
    let (Some(sent), Some(answer)) = (sent, merge(got)) else {
        let e = std::io::Error::other("an answer without its request");
        return Err(network(&e));
    };
    Ok(Some((sent, answer)))
}

impl RaftNetworkV2<TypeConfig> for GroupPeer {
    type SnapshotData = SnapshotData;

    /// One request on a stream of its own (openraft 0.10 replicates through
    /// [`GroupPeer::stream_append`]; this serves any other caller).
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let deadline = self.deadline(option.hard_ttl());
        let input = futures::stream::iter([rpc]);
        let mut answers = self.open(input, deadline).await?;
        match answers.next().await {
            Some(Ok(Ok(_))) => Ok(AppendEntriesResponse::Success),
            Some(Ok(Err(StreamAppendError::Conflict(_)))) => Ok(AppendEntriesResponse::Conflict),
            Some(Ok(Err(StreamAppendError::HigherVote(v)))) => {
                Ok(AppendEntriesResponse::HigherVote(v))
            }
            Some(Err(e)) => Err(e),
            None => Err(unreachable(&std::io::Error::other(
                "the target ended the stream without an answer",
            ))),
        }
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
            RPCError<TypeConfig>,
        >,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        let deadline = self.deadline(option.hard_ttl());
        Box::pin(async move {
            let answers: BoxStream<'s, _> = self.open(input, deadline).await?;
            Ok(answers)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.link.call(Rpc::Vote, &rpc, option.hard_ttl()).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.link.call(Rpc::PreVote, &rpc, option.hard_ttl()).await
    }

    /// The leader's transfer to the target (see `GroupHandle::transfer_leadership`).
    async fn transfer_leader(
        &mut self,
        req: openraft::raft::TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<openraft::raft::TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.link
            .call(Rpc::TransferLeader, &req, option.hard_ttl())
            .await
    }

    /// The whole snapshot, in chunks on one stream ([`PeerLink::send_snapshot`]), each within
    /// openraft's snapshot deadline.
    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let call = self.link.send_snapshot(vote, snapshot, option.hard_ttl());
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            res = call => res.map_err(|e| match e {
                RPCError::Timeout(t) => StreamingError::Timeout(t),
                RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                RPCError::Network(n) => StreamingError::Network(n),
                RPCError::RemoteError(r) => match r.source {},
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::EntryPayload;

    /// A log id of term 1, node 1.
    fn lid(index: u64) -> meridian_types::raft::LogId {
        meridian_types::raft::log_id(1, 1, index)
    }

    fn entry(index: u64, bytes: usize) -> Entry {
        let op = meridian_types::PutOp::new("/k", vec![b'x'; bytes]);
        Entry {
            log_id: lid(index),
            payload: EntryPayload::Normal(meridian_types::Command::Put(op)),
        }
    }

    #[test]
    fn append_payload_is_cut_by_bytes_but_never_empty() {
        let small: Vec<_> = (1..=10).map(|i| entry(i, 100)).collect();
        assert_eq!(entries_within(&small, APPEND_BYTES_MAX), 10);
        let big: Vec<_> = (1..=10).map(|i| entry(i, 300_000)).collect();
        assert_eq!(entries_within(&big, APPEND_BYTES_MAX), 3);
        let huge = vec![entry(1, 2_000_000), entry(2, 10)];
        assert_eq!(
            entries_within(&huge, APPEND_BYTES_MAX),
            1,
            "one entry always goes"
        );
        assert_eq!(entries_within(&[], APPEND_BYTES_MAX), 0);
    }

    #[test]
    fn a_large_request_is_cut_into_chained_parts_carrying_the_commit() {
        let req = AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: Some(lid(3)),
            leader_commit: Some(lid(5)),
            entries: (4..=13).map(|i| entry(i, 300_000)).collect(),
        };
        let parts = split(req);
        assert_eq!(parts.len(), 4, "3 + 3 + 3 + 1 entries");
        let mut prev = Some(lid(3));
        for p in &parts {
            assert_eq!(p.prev_log_id, prev, "each part starts where the last ended");
            assert_eq!(p.leader_commit, Some(lid(5)));
            prev = p.entries.last().map(|e| e.log_id);
        }
        assert_eq!(prev, Some(lid(13)));
        let empty = AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: Some(lid(3)),
            leader_commit: None,
            entries: Vec::new(),
        };
        assert_eq!(split(empty).len(), 1, "a heartbeat is one message");
    }

    #[test]
    fn parts_answer_as_one_the_first_refusal_wins() {
        assert_eq!(
            merge([Ok(Some(lid(3))), Ok(Some(lid(6)))]),
            Some(Ok(Some(lid(6))))
        );
        let conflict = Err(StreamAppendError::Conflict(lid(4)));
        assert_eq!(
            merge([Ok(Some(lid(3))), conflict.clone(), Ok(Some(lid(9)))]),
            Some(conflict)
        );
        assert_eq!(merge([]), None);
    }
}
