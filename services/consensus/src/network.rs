//! The peer transport. A [`PeerPool`] keeps one lazily connected HTTP/2 channel per peer
//! address; every group's [`GroupNetworkFactory`] borrows from it, so N groups between two nodes
//! share one connection. Payloads are openraft's types, bincode-encoded, wrapped with the group.

use meridian_proto::io::Dialer;
use meridian_proto::peer::peer_client::PeerClient;
use meridian_proto::peer::{RaftMessage, ReadIndexRequest};
use meridian_proto::PEER_MESSAGE_BYTES;
use meridian_types::raft::TypeConfig;
use meridian_types::GroupId;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, LogId};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
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
        let reply = tokio::time::timeout(timeout, client.read_index(req))
            .await
            .map_err(|_| tonic::Status::deadline_exceeded("read index timed out"))??;
        Ok(reply.into_inner().read_index)
    }
}

pub struct GroupNetworkFactory {
    group: GroupId,
    pool: Arc<PeerPool>,
    /// Nodes that are only ever learners of this group, with their round trip from here.
    learners: Arc<std::collections::BTreeMap<u64, Duration>>,
    applied: Option<tokio::sync::watch::Receiver<u64>>,
    lease: Option<Arc<crate::LeaderLease>>,
}

impl GroupNetworkFactory {
    pub fn new(group: GroupId, pool: Arc<PeerPool>) -> Self {
        Self {
            group,
            pool,
            learners: Arc::default(),
            applied: None,
            lease: None,
        }
    }

    /// The group's leader lease: every voter's answer to an AppendEntries feeds it.
    pub fn with_lease(mut self, lease: Arc<crate::LeaderLease>) -> Self {
        self.lease = Some(lease);
        self
    }

    /// This node's applied index of the group: while it leads, the commit index (moments
    /// later). With it, a target whose append is still out hears of a commit beside it
    /// (see [`GroupPeer`]).
    pub fn with_applied(mut self, applied: tokio::sync::watch::Receiver<u64>) -> Self {
        self.applied = Some(applied);
        self
    }

    /// Nodes that are only ever learners of this group (never voters), each with its round
    /// trip in milliseconds from this node's region: their appends run on their own deadline
    /// and their empty AppendEntries are thinned out (see [`GroupPeer`]). Invariant: a node
    /// listed here is not promoted to voter while this factory lives.
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
        GroupPeer {
            link: PeerLink {
                group: self.group,
                target,
                addr: node.addr.clone(),
                pool: self.pool.clone(),
            },
            learner: self.learners.contains_key(&target),
            rtt: self.learners.get(&target).copied().unwrap_or_default(),
            last_sent: None,
            confirmed: None,
            carried: None,
            commit_notices: None,
            applied: self.applied.clone(),
            lease: self.lease.clone(),
        }
    }
}

/// Most entry bytes one AppendEntries carries (a single larger entry still goes alone).
pub const APPEND_BYTES_MAX: u64 = 1024 * 1024;

/// How many leading entries fit in `budget` bytes (at least one when there are any).
fn entries_within(entries: &[openraft::Entry<TypeConfig>], budget: u64) -> usize {
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

/// HTTP/2 flow-control windows of peer connections. The defaults (64 KiB) cap a connection
/// at one window per round trip — 0.4 MB/s over a 170 ms link, too little for a learner.
pub const STREAM_WINDOW_BYTES: u32 = 8 * 1024 * 1024;
pub const CONNECTION_WINDOW_BYTES: u32 = 32 * 1024 * 1024;

/// The network to one target of one group.
///
/// openraft 0.9 sends an empty AppendEntries to every idle target each time the commit index
/// moves, and allows one request in flight per target. Over a WAN link to a learner those
/// commit-only heartbeats (one round trip each) sit in front of the next batch of entries and
/// halve, or worse, what the learner receives under load. So an empty AppendEntries to a
/// learner goes out in line only if nothing was sent to it for 3/4 of the RPC deadline (= of
/// the heartbeat interval, so openraft's periodic heartbeat still goes out); otherwise it is
/// answered here with `Success` for the `prev_log_id` the learner already confirmed, and a copy
/// is sent *beside* the replication stream (see [`commit_notifier`]): the learner still hears
/// of the commit one way later, not at the next heartbeat, and entries never queue behind it.
/// The same holds for a voter's replication stream (a Global Lock release would otherwise wait
/// behind its acquire's commit notice for a round trip); what confirms leadership is untouched:
/// openraft's read-index rounds use fresh clients, whose empty appends always go out, and the
/// read lease ([`crate::LeaderLease`]) counts only real answers.
///
/// The other half of the same limit: while an append is out to a far target (a voter or a
/// learner in another region), openraft sends nothing else to it, so a commit of those very
/// entries (made by nearer voters' acknowledgements) reaches it only with the next request —
/// one and a half round trips after the append left. So while an append is out for longer
/// than [`NOTICE_AFTER`], a commit of its entries is sent beside it as a commit-only
/// AppendEntries whose `prev_log_id` is the append's last entry: the target processes it after
/// the append (one connection, one Raft core, in order) and commits at half a round trip after
/// the commit; should it overtake the append, the target answers `Conflict`, changes nothing,
/// and the next request tells it. The answer is only logged; the leader's view of the target
/// comes from the append's own answer.
///
/// Per-target deadlines: openraft 0.9 cuts every AppendEntries at its heartbeat interval, which
/// would tie the heartbeat — and the election timeout, and so failover — to the slowest append
/// (a learner 240 ms away, a 1 MiB payload behind a loaded disk). So every append is *carried*
/// ([`GroupPeer::append_carried`]): sent by a task of its own on the target's deadline
/// ([`learner_deadline`] of its round trip, at least ten heartbeats), and openraft's call waits
/// for its answer at most 3/4 heartbeat. If the answer is not in and the request starts where
/// the target is known to match (`prev_log_id` = the last match a real answer established), the
/// call answers `PartialSuccess(prev_log_id)` — "no progress yet", which is true — and openraft,
/// finding entries unsent, asks again at once with the same `prev_log_id`: that call joins the
/// carried append instead of sending another. Still one append in flight per target. openraft
/// 0.9 uses such an answer only for the target's progress (unchanged) and a metric; the read
/// lease counts real answers only.
pub struct GroupPeer {
    link: PeerLink,
    /// The target is only ever a learner of this group (never counts toward a commit).
    learner: bool,
    /// The target's round trip from here, when known (learners); zero otherwise.
    rtt: Duration,
    last_sent: Option<tokio::time::Instant>,
    /// The target's log matches the leader's up to here, as a real answer established.
    confirmed: Option<LogId<u64>>,
    /// The append out to the target, if any (see [`Carried`]).
    carried: Option<Carried>,
    /// The newest commit-only AppendEntries answered here, for [`commit_notifier`] (started
    /// on first use; it ends when this peer is dropped).
    commit_notices: Option<tokio::sync::watch::Sender<Option<AppendEntriesRequest<TypeConfig>>>>,
    /// The leader's applied index, for commit notices while an append is out.
    applied: Option<tokio::sync::watch::Receiver<u64>>,
    /// Fed with a voter's every answer that accepts the leader's vote.
    lease: Option<Arc<crate::LeaderLease>>,
}

type AppendReply = Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>>;

/// An append running on its target's own deadline (see [`GroupPeer`]), whatever openraft's:
/// the call that sent it, or the next one that asks for the same entries, takes its answer.
struct Carried {
    vote: openraft::Vote<u64>,
    prev: Option<LogId<u64>>,
    /// The last entry sent (`prev` for an empty append).
    last: Option<LogId<u64>>,
    sent_at: tokio::time::Instant,
    reply: tokio::sync::watch::Receiver<Option<AppendReply>>,
    task: tokio::task::AbortHandle,
}

impl Drop for Carried {
    /// A carried append nobody will ask for again stops (no-op once it has its answer).
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A copy of an append's answer (openraft 0.9's `AppendEntriesResponse` is not `Clone`). The
/// error is openraft's own type, as `RaftNetwork` returns it: large, not ours to box.
#[allow(clippy::result_large_err)]
fn clone_reply(reply: &AppendReply) -> AppendReply {
    match reply {
        Ok(AppendEntriesResponse::Success) => Ok(AppendEntriesResponse::Success),
        Ok(AppendEntriesResponse::PartialSuccess(m)) => {
            Ok(AppendEntriesResponse::PartialSuccess(*m))
        }
        Ok(AppendEntriesResponse::Conflict) => Ok(AppendEntriesResponse::Conflict),
        Ok(AppendEntriesResponse::HigherVote(v)) => Ok(AppendEntriesResponse::HigherVote(*v)),
        Err(e) => Err(e.clone()),
    }
}

/// How long an append to a learner `rtt` away may take: ten round trips, at least 2 s (a full
/// 1 MiB payload over a loaded WAN link).
pub fn learner_deadline(rtt: Duration) -> Duration {
    (rtt * 10).max(Duration::from_secs(2))
}

/// Where one group's messages to one target go.
#[derive(Clone)]
struct PeerLink {
    group: GroupId,
    target: u64,
    addr: String,
    pool: Arc<PeerPool>,
}

/// An append out this long is a far target's: a commit of its entries goes beside it.
const NOTICE_AFTER: Duration = Duration::from_millis(5);

/// Most commit notices in flight to one learner; more wait (the newest wins).
const COMMIT_NOTICES_IN_FLIGHT_MAX: usize = 16;
/// Least time between two commit notices to one learner: 1/16 of the RPC deadline (= the
/// heartbeat, about two round trips), at least 5 ms — an eighth of a round trip of delay at
/// most, and a few dozen messages a second per learner, not one per commit.
fn commit_notice_gap(ttl: Duration) -> Duration {
    (ttl / 16).max(Duration::from_millis(5))
}

/// Sends the newest thinned commit-only AppendEntries to a learner, beside openraft's
/// one-in-flight replication stream: at most one every [`commit_notice_gap`], only when the
/// commit moved since the last one sent, at most
/// [`COMMIT_NOTICES_IN_FLIGHT_MAX`] unanswered, each within `ttl`; only the newest waiting one
/// is sent. The answers are only logged: a learner never counts toward a commit, and a notice
/// it applies late is harmless (the follower commits min(its accepted log, the leader's commit),
/// neither of which goes back; a notice from a deposed leader is refused by its vote).
async fn commit_notifier(
    link: PeerLink,
    mut rx: tokio::sync::watch::Receiver<Option<AppendEntriesRequest<TypeConfig>>>,
    ttl: Duration,
) {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(COMMIT_NOTICES_IN_FLIGHT_MAX));
    let gap = commit_notice_gap(ttl);
    let mut last_commit = None;
    while rx.changed().await.is_ok() {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let Some(req) = rx.borrow_and_update().clone() else {
            continue;
        };
        // Nothing new to tell (a notice without a commit tells nothing either).
        if req.leader_commit == last_commit {
            continue;
        }
        last_commit = req.leader_commit;
        let link = link.clone();
        tokio::spawn(async move {
            let option = RPCOption::new(ttl);
            let res: Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> =
                link.call(Rpc::Append, &req, &option).await;
            if let Err(e) = res {
                tracing::debug!(group = %link.group, target = link.target, "commit notice: {e}");
            }
            drop(permit);
        });
        tokio::time::sleep(gap).await;
    }
}

#[derive(Clone, Copy)]
enum Rpc {
    Append,
    Vote,
    Snapshot,
}

impl PeerLink {
    async fn call<Req, Resp, E>(
        &self,
        rpc: Rpc,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload =
            bincode::serialize(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut client = self
            .pool
            .client(&self.addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let ttl = option.hard_ttl();
        let sent_bytes = payload.len();
        let mut request = tonic::Request::new(RaftMessage {
            group: self.group.0,
            payload,
        });
        request.set_timeout(ttl);
        let fut = async {
            match rpc {
                Rpc::Append => client.append_entries(request).await,
                Rpc::Vote => client.vote(request).await,
                Rpc::Snapshot => client.install_snapshot(request).await,
            }
        };
        let started = tokio::time::Instant::now();
        let res = tokio::time::timeout(ttl, fut).await;
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
                return Err(RPCError::Network(NetworkError::new(&e)));
            }
            Ok(Err(status)) if status.code() == tonic::Code::Unavailable => {
                return Err(RPCError::Unreachable(Unreachable::new(&status)));
            }
            Ok(Err(status)) => return Err(RPCError::Network(NetworkError::new(&status))),
            Ok(Ok(r)) => r.into_inner(),
        };
        let result: Result<Resp, E> = bincode::deserialize(&reply.payload)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl GroupPeer {
    /// Hands a thinned commit-only AppendEntries to this peer's [`commit_notifier`].
    fn notify_commit(&mut self, rpc: AppendEntriesRequest<TypeConfig>, ttl: Duration) {
        let tx = self.commit_notices.get_or_insert_with(|| {
            let (tx, rx) = tokio::sync::watch::channel(None);
            tokio::spawn(commit_notifier(self.link.clone(), rx, ttl));
            tx
        });
        tx.send_replace(Some(rpc));
    }
}

/// Sends `rpc` (entries) and, while it is out, a commit notice each time the leader's
/// commit (its applied index) moves into its entries — at most one per entry range.
async fn call_with_notices(
    link: &PeerLink,
    rpc: &AppendEntriesRequest<TypeConfig>,
    option: &RPCOption,
    mut applied: tokio::sync::watch::Receiver<u64>,
) -> AppendReply {
    let (Some(first), Some(last)) = (rpc.entries.first(), rpc.entries.last()) else {
        return link.call(Rpc::Append, rpc, option).await;
    };
    let (first, last) = (first.log_id.index, last.log_id);
    let sent_at = tokio::time::Instant::now();
    let mut told = rpc.leader_commit.map_or(0, |c| c.index);
    let call = link.call(Rpc::Append, rpc, option);
    tokio::pin!(call);
    loop {
        tokio::select! {
            reply = &mut call => return reply,
            changed = applied.changed() => {
                if changed.is_err() {
                    return call.await;
                }
                let upto = (*applied.borrow_and_update()).min(last.index);
                if upto < first || upto <= told || sent_at.elapsed() < NOTICE_AFTER {
                    continue;
                }
                let Ok(i) = usize::try_from(upto - first) else { continue };
                let Some(commit) = rpc.entries.get(i).map(|e| e.log_id) else { continue };
                told = upto;
                let notice: AppendEntriesRequest<TypeConfig> = AppendEntriesRequest {
                    vote: rpc.vote,
                    prev_log_id: Some(last),
                    entries: Vec::new(),
                    leader_commit: Some(commit),
                };
                let link = link.clone();
                let ttl = option.hard_ttl();
                tokio::spawn(async move {
                    let res: Result<
                        AppendEntriesResponse<u64>,
                        RPCError<u64, BasicNode, RaftError<u64>>,
                    > = link.call(Rpc::Append, &notice, &RPCOption::new(ttl)).await;
                    match res {
                        Ok(AppendEntriesResponse::Success) => {}
                        other => tracing::debug!(group = %link.group, target = link.target, "commit notice beside an append: {other:?}"),
                    }
                });
            }
        }
    }
}

impl GroupPeer {
    /// An append (see [`GroupPeer`]): an empty one is thinned; the rest are carried on the
    /// target's own deadline, and this call waits for the answer for at most 3/4 of openraft's
    /// deadline when it may answer "no progress yet" instead.
    async fn append_carried(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> AppendReply {
        let heartbeat = option.hard_ttl();
        // A learner's pace: what openraft's heartbeat was before per-target timing, two round
        // trips; a voter's: the heartbeat.
        let span = heartbeat.max(self.rtt * 2);
        self.harvest_heartbeat();
        if rpc.entries.is_empty() {
            let window = span * 3 / 4;
            if self.carried.is_some() || self.last_sent.is_some_and(|t| t.elapsed() < window) {
                self.notify_commit(rpc, span);
                return Ok(AppendEntriesResponse::Success);
            }
        }
        let asked_last = rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id);
        let joins = self
            .carried
            .as_ref()
            .is_some_and(|c| c.prev == rpc.prev_log_id && c.last > c.prev);
        if !joins {
            let keep = entries_within(&rpc.entries, APPEND_BYTES_MAX);
            rpc.entries.truncate(keep);
            let deadline = learner_deadline(self.rtt).max(heartbeat * 10);
            self.carry(rpc, deadline);
        }
        let Some(carried) = self.carried.as_ref() else {
            unreachable!("an append was just carried or joined");
        };
        let prev = carried.prev;
        let mut reply = carried.reply.clone();
        // "No progress yet" is a true answer only from where the target is known to match
        // (and openraft refuses a match of nothing).
        let quiet = prev.is_some() && prev == self.confirmed;
        let answer = if quiet {
            match tokio::time::timeout(heartbeat * 3 / 4, reply.wait_for(Option::is_some)).await {
                Err(_) => return Ok(AppendEntriesResponse::PartialSuccess(prev)),
                Ok(answer) => answer.map(|a| a.as_ref().map(clone_reply)),
            }
        } else {
            reply
                .wait_for(Option::is_some)
                .await
                .map(|a| a.as_ref().map(clone_reply))
        };
        let carried = self.carried.take();
        let (Ok(Some(answer)), Some(carried)) = (answer, carried) else {
            let e = std::io::Error::other("an append ended without an answer");
            return Err(RPCError::Network(NetworkError::new(&e)));
        };
        let answer = answer?;
        // Only an answered request vouches for the target until the next real heartbeat; a
        // voter's answer that accepts the vote feeds the read lease.
        self.last_sent = Some(carried.sent_at);
        if let (Some(lease), false) = (&self.lease, self.learner) {
            if !matches!(answer, AppendEntriesResponse::HigherVote(_)) {
                lease.acked(self.link.target, carried.vote, carried.sent_at);
            }
        }
        let matched = match answer {
            AppendEntriesResponse::Success => carried.last,
            AppendEntriesResponse::PartialSuccess(m) => m,
            other => return Ok(other),
        };
        self.confirmed = matched;
        if matched >= asked_last {
            Ok(AppendEntriesResponse::Success)
        } else {
            Ok(AppendEntriesResponse::PartialSuccess(matched))
        }
    }

    /// Sends `rpc` to the target in a task of its own, on `deadline`.
    fn carry(&mut self, rpc: AppendEntriesRequest<TypeConfig>, deadline: Duration) {
        let (tx, rx) = tokio::sync::watch::channel(None);
        let link = self.link.clone();
        let applied = self.applied.clone();
        let prev = rpc.prev_log_id;
        let vote = rpc.vote;
        let last = rpc.entries.last().map(|e| e.log_id).or(prev);
        let task = tokio::spawn(async move {
            let option = RPCOption::new(deadline);
            let reply = match applied {
                Some(applied) if !rpc.entries.is_empty() => {
                    call_with_notices(&link, &rpc, &option, applied).await
                }
                _ => link.call(Rpc::Append, &rpc, &option).await,
            };
            tx.send_replace(Some(reply));
        });
        self.carried = Some(Carried {
            vote,
            prev,
            last,
            sent_at: tokio::time::Instant::now(),
            reply: rx,
            task: task.abort_handle(),
        });
    }

    /// Takes in a carried empty append (a heartbeat) that has its answer: nobody asks for it
    /// again, and an answer still vouches for the target.
    fn harvest_heartbeat(&mut self) {
        let done = self
            .carried
            .as_ref()
            .is_some_and(|c| c.last == c.prev && c.reply.borrow().is_some());
        if !done {
            return;
        }
        if let Some(c) = self.carried.take() {
            if matches!(*c.reply.borrow(), Some(Ok(AppendEntriesResponse::Success))) {
                self.last_sent = Some(c.sent_at);
            }
        }
    }
}

impl RaftNetwork<TypeConfig> for GroupPeer {
    /// Sends at most [`APPEND_BYTES_MAX`] of entries (at least one). openraft 0.9 caps a
    /// payload only by entry count, and its deadline is the heartbeat interval: a learner that
    /// fell behind over a WAN link would otherwise be sent ever larger payloads that never
    /// arrive in time, and never catch up. A shortened request answers `PartialSuccess` up to
    /// its last entry; the follower commits no further than what a request carried.
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.append_carried(rpc, option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.link.call(Rpc::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.link.call(Rpc::Vote, &rpc, &option).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

    fn entry(index: u64, bytes: usize) -> Entry<TypeConfig> {
        let op = meridian_types::PutOp::new("/k", vec![b'x'; bytes]);
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
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
}
