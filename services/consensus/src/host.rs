//! The groups one node hosts, and the peer service that routes each incoming Raft message to
//! its group by the group id it carries.

use crate::admission::Admission;
use crate::lease::{LeaderLease, VoteGuard};
use crate::Raft;
use futures::{Stream, StreamExt};
use meridian_proto::peer::peer_server::Peer;
use meridian_proto::peer::{RaftMessage, ReadIndexReply, ReadIndexRequest};
use meridian_router::{Join, Rounds};
use meridian_storage::GroupShared;
use meridian_types::raft::{Snapshot, SnapshotData, SnapshotMeta, TypeConfig, Vote};
use meridian_types::Command;
use meridian_types::GroupId;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::raft::{AppendEntriesRequest, StreamAppendError};
use openraft::{ReadPolicy, ServerState};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tonic::{Request, Response, Status, Streaming};

#[derive(Clone)]
pub struct GroupHandle {
    pub raft: Raft,
    pub shared: Arc<GroupShared>,
    /// (term, index) of an entry this process committed as leader in that term.
    barrier: Arc<Mutex<Option<(u64, u64)>>>,
    confirmations: Arc<Mutex<Rounds<ConfirmReply>>>,
    contacts: Arc<Mutex<Contacts>>,
    /// The read lease while this node leads (never valid without [`GroupHandle::with_lease`]).
    lease: Arc<LeaderLease>,
    /// Refuses votes this node promised not to give (see [`VoteGuard`]).
    vote_guard: Arc<VoteGuard>,
}

type ConfirmReply = oneshot::Sender<Result<u64, String>>;

/// Most reads one leadership confirmation answers; more wait for the next round.
const READS_PER_CONFIRMATION_MAX: usize = 4096;
/// Most linearizable reads waiting for a confirmation; past that a read is refused at once.
const READS_WAITING_MAX: usize = 65_536;
/// Leader contacts remembered for the lag estimate.
const CONTACTS_MAX: usize = 64;

/// When this replica last heard from its leader, and the leader's commit index then: a
/// replica that has applied `c` was current as of the last contact that reported commit ≤ `c`.
#[derive(Default)]
struct Contacts {
    seen: VecDeque<(Instant, u64)>,
}

impl GroupHandle {
    pub fn new(raft: Raft, shared: Arc<GroupShared>) -> Self {
        Self {
            raft,
            shared,
            barrier: Arc::default(),
            confirmations: Arc::new(Mutex::new(Rounds::new(
                READS_WAITING_MAX,
                READS_PER_CONFIRMATION_MAX,
            ))),
            contacts: Arc::default(),
            lease: Arc::new(LeaderLease::new(Duration::ZERO)),
            vote_guard: Arc::new(VoteGuard::new(Duration::ZERO, false)),
        }
    }

    /// Serve linearizable reads under `lease` while it holds (the group's network factory feeds
    /// it), and refuse votes as `vote_guard` says.
    pub fn with_lease(mut self, lease: Arc<LeaderLease>, vote_guard: Arc<VoteGuard>) -> Self {
        self.lease = lease;
        self.vote_guard = vote_guard;
        self
    }

    /// The read index under this node's leader lease, if it leads and the lease holds: its
    /// commit index, or its replica's applied index if that is newer (the metrics may lag).
    /// Every write this leader acknowledged was applied here before its answer left, and the
    /// term's first entry (the caller's barrier) covers every earlier leader's; entries not
    /// committed yet are left out, so a leader cut off with an uncommitted tail still answers
    /// reads while its lease holds instead of waiting for entries that cannot commit.
    fn lease_read_index(&self) -> Option<u64> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        if m.state != ServerState::Leader {
            return None;
        }
        let voters: BTreeSet<u64> = m.membership_config.membership().voter_ids().collect();
        let until = self.lease.valid_until(m.id, &m.vote, &voters)?;
        let committed = m.cluster_committed.map_or(0, |c| c.index);
        (self.lease.now() < until).then_some(committed.max(self.shared.applied()))
    }

    /// The group's members (voters and learners) as this replica knows them; empty before it
    /// knows any.
    pub fn members(&self) -> BTreeSet<u64> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        m.membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect()
    }

    /// Why this node must refuse a vote now, if it must: it promised a leader (see
    /// [`VoteGuard`]), or it leads under a lease that still holds.
    pub fn vote_refusal(&self) -> Option<String> {
        self.vote_refusal_of(false)
    }

    /// As [`Self::vote_refusal`], for a vote request that says whether it is part of a
    /// leadership transfer. Such a request comes from the node the leader chose, and the leader
    /// gave up its read lease before choosing it ([`Self::transfer_leadership`]): the promise
    /// [`VoteGuard`] keeps protects that lease only, so it does not stand in the way (as
    /// openraft's own lease does not; members are trusted to tell the truth, as Raft assumes).
    pub fn vote_refusal_of(&self, leadership_transfer: bool) -> Option<String> {
        if !leadership_transfer {
            if let Some(r) = self.vote_guard.refusal() {
                return Some(r);
            }
        }
        self.lease_read_index()
            .map(|_| "this node leads under a read lease that still holds".to_string())
    }

    /// Hands this node's leadership of the group to voter `to`: first gives up the read lease of
    /// its current vote (from now on its reads ask a quorum, so none can miss a write of the
    /// next leader), then has openraft send `to` the transfer. Ignored by openraft unless this
    /// node leads.
    pub async fn transfer_leadership(&self, to: u64) -> Result<(), String> {
        let vote = self.raft.metrics().borrow_watched().vote;
        self.lease.relinquish(vote);
        self.raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| e.to_string())
    }

    /// This node accepted an AppendEntries of its leader.
    pub fn heard_leader(&self) {
        self.vote_guard.heard_leader();
    }

    /// Records an AppendEntries (or heartbeat) from the leader reporting `leader_commit`.
    pub fn leader_contact(&self, leader_commit: u64) {
        let mut c = self.contacts.lock().unwrap_or_else(|p| p.into_inner());
        if c.seen.len() >= CONTACTS_MAX {
            c.seen.pop_front();
        }
        c.seen.push_back((Instant::now(), leader_commit));
    }

    /// How far behind its leader this replica is known to be, in ms: 0 on the leader; the time
    /// since the last leader contact whose commit this replica has applied, otherwise. `None`
    /// when no such contact is known (never heard from a leader since start).
    pub fn lag_ms(&self) -> Option<u64> {
        if self.raft.metrics().borrow_watched().state == ServerState::Leader {
            return Some(0);
        }
        let applied = self.shared.applied();
        let c = self.contacts.lock().unwrap_or_else(|p| p.into_inner());
        c.seen
            .iter()
            .rev()
            .find(|(_, commit)| *commit <= applied)
            .map(|(at, _)| at.elapsed().as_millis() as u64)
    }

    /// openraft's read log id, with one quorum round shared by every read that arrived before
    /// the round started (a round that started earlier could predate a read's write).
    async fn confirmed_read_log_id(&self, timeout: Duration) -> Result<u64, String> {
        let (tx, rx) = oneshot::channel();
        let join = self
            .confirmations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join(tx);
        match join {
            Err(_) => {
                return Err(format!(
                    "{READS_WAITING_MAX} linearizable reads are already waiting; retry shortly"
                ))
            }
            Ok(Join::Queued) => {}
            Ok(Join::Drive) => {
                let raft = self.raft.clone();
                let confirmations = self.confirmations.clone();
                tokio::spawn(async move {
                    loop {
                        let round = confirmations
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .next_round();
                        let Some(waiters) = round else { return };
                        let res = match tokio::time::timeout(
                            timeout,
                            raft.get_read_log_id(ReadPolicy::ReadIndex),
                        )
                        .await
                        {
                            Ok(Ok((read_log_id, _))) => Ok(read_log_id.index()),
                            Ok(Err(e)) => Err(format!("leadership not confirmed: {e}")),
                            Err(_) => Err(format!(
                                "leadership not confirmed by a quorum within {} ms",
                                timeout.as_millis()
                            )),
                        };
                        for w in waiters {
                            let _ = w.send(res.clone());
                        }
                    }
                });
            }
        }
        rx.await
            .map_err(|_| "the read-index round was dropped".to_string())?
    }

    /// The index a replica must apply before serving a linearizable read. This node must lead.
    ///
    /// openraft's read index is max(committed, first entry of the leader's term). A node that
    /// restarts keeps leading the same term without a new first entry, and its committed index
    /// may be older than writes it acknowledged before the crash. So the first read of each
    /// (process, term) commits an empty entry first: committing it commits everything before it.
    pub async fn read_index(&self, timeout: Duration) -> Result<u64, String> {
        let term = self.raft.metrics().borrow_watched().current_term;
        let known = *self.barrier.lock().unwrap_or_else(|p| p.into_inner());
        let barrier = match known {
            Some((t, index)) if t == term => index,
            _ => {
                let res =
                    tokio::time::timeout(timeout, write(&self.raft, Command::Batch(Vec::new())))
                        .await
                        .map_err(|_| {
                            format!("leadership not confirmed within {} ms", timeout.as_millis())
                        })?
                        .map_err(|e| format!("leadership not confirmed: {e}"))?;
                let index = res.log_id.index;
                *self.barrier.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((res.log_id.leader_id.term, index));
                index
            }
        };
        if let Some(index) = self.lease_read_index() {
            return Ok(index.max(barrier));
        }
        let read_index = self.confirmed_read_log_id(timeout).await?;
        Ok(read_index.max(barrier))
    }
}

/// Longest a write waits for a new leader's first quorum acknowledgement (see [`write`]).
pub const LEASE_WAIT_MAX: Duration = Duration::from_secs(2);

/// `raft.client_write(cmd)`, waiting out openraft 0.10's refusal of a leader that has no fresh
/// quorum acknowledgement (`ForwardReason::LeaseExpired`: right after an election, or after a
/// stall): such a refusal happens before anything is appended, so the write is retried every
/// few ms for up to [`LEASE_WAIT_MAX`], then the refusal is returned. While the leader's
/// metrics show a fresh acknowledgement (the common case) the command goes as is, with no copy
/// kept for a retry.
pub async fn write(
    raft: &Raft,
    cmd: Command,
) -> Result<
    openraft::raft::ClientWriteResponse<TypeConfig>,
    openraft::error::RaftError<TypeConfig, openraft::error::ClientWriteError<TypeConfig>>,
> {
    use openraft::error::{ClientWriteError, ForwardReason, RaftError};
    let started = Instant::now();
    loop {
        if quorum_acked_lately(raft) || started.elapsed() >= LEASE_WAIT_MAX {
            return raft.client_write(cmd).await;
        }
        let res = raft.client_write(cmd.clone()).await;
        match &res {
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))
                if f.reason == ForwardReason::LeaseExpired =>
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            _ => return res,
        }
    }
}

/// Whether `raft` leads with a quorum acknowledgement younger than half its leader lease
/// (openraft's lease is `election_timeout_max`), going by its metrics: they lag the leader's
/// own record, never lead it, so a write now will not be refused as `LeaseExpired`.
fn quorum_acked_lately(raft: &Raft) -> bool {
    let half_lease = Duration::from_millis(raft.config().election_timeout_max / 2);
    let m = raft.metrics();
    let m = m.borrow_watched();
    m.state == ServerState::Leader
        && m.last_quorum_acked
            .as_ref()
            .is_some_and(|acked| openraft::Instant::elapsed(&acked.into_inner()) < half_lease)
}

#[derive(Default)]
pub struct Host {
    groups: RwLock<BTreeMap<GroupId, GroupHandle>>,
}

impl Host {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn insert(&self, group: GroupId, handle: GroupHandle) {
        self.groups
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(group, handle);
    }

    pub fn get(&self, group: GroupId) -> Option<GroupHandle> {
        self.groups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&group)
            .cloned()
    }

    pub fn groups(&self) -> Vec<(GroupId, GroupHandle)> {
        let mut v: Vec<_> = self
            .groups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(g, h)| (*g, h.clone()))
            .collect();
        v.sort_by_key(|(g, _)| *g);
        v
    }

    /// Stops every group's Raft.
    pub async fn shutdown(&self) {
        for (_, h) in self.groups() {
            let _ = h.raft.shutdown().await;
        }
    }
}

/// Longest the leader spends confirming a read index for a follower.
const READ_INDEX_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `meridian.peer.v1.Peer` for every group of a [`Host`].
#[derive(Clone)]
pub struct PeerService {
    host: Arc<Host>,
    /// Turns true when the node stops: replication streams end then (a server's graceful
    /// shutdown waits for every open stream, and a leader's never ends by itself).
    stop: Option<tokio::sync::watch::Receiver<bool>>,
    /// Who may send (mTLS: a node of the topology, a member of the message's group).
    admission: Arc<Admission>,
}

impl PeerService {
    pub fn new(host: Arc<Host>) -> Self {
        Self {
            host,
            stop: None,
            admission: Arc::new(Admission::open()),
        }
    }

    /// Admits only the senders `admission` admits.
    pub fn admit(mut self, admission: Arc<Admission>) -> Self {
        self.admission = admission;
        self
    }

    /// Ends every replication stream this service serves once `stop` turns true.
    pub fn stop_on(mut self, stop: tokio::sync::watch::Receiver<bool>) -> Self {
        self.stop = Some(stop);
        self
    }

    fn handle(&self, group: u64) -> Result<GroupHandle, Status> {
        self.host
            .get(GroupId(group))
            .ok_or_else(|| Status::not_found(format!("group {group} is not hosted on this node")))
    }
}

impl PeerService {
    /// A vote (or pre-vote) request, unless this node must refuse it now (see
    /// [`GroupHandle::vote_refusal`]).
    async fn guarded_vote(
        &self,
        request: Request<RaftMessage>,
        pre: bool,
    ) -> Result<Response<RaftMessage>, Status> {
        let what = if pre { "pre-vote" } else { "vote" };
        let group = request.get_ref().group;
        let handle = self.handle(group)?;
        self.admission
            .member(&request, group, || handle.members(), what)?;
        let msg = request.into_inner();
        let req: openraft::raft::VoteRequest<meridian_types::TypeConfig> = decode(&msg)?;
        if let Some(refusal) = handle.vote_refusal_of(req.leadership_transfer) {
            return Err(Status::unavailable(format!(
                "group {}: {what} refused: {refusal}",
                msg.group
            )));
        }
        let res = if pre {
            handle.raft.pre_vote(req).await
        } else {
            handle.raft.vote(req).await
        };
        encode(msg.group, res)
    }
}

/// Largest snapshot a node takes (Meridian's groups hold small metadata: this is far above
/// any real one, and bounds what a broken or hostile sender can make a node buffer).
pub const SNAPSHOT_BYTES_MAX: u64 = 4 * 1024 * 1024 * 1024;

/// Most memory reserved up front for an incoming snapshot (it grows past this as bytes come).
const SNAPSHOT_PREALLOC_MAX: u64 = 64 * 1024 * 1024;

fn decode<T: DeserializeOwned>(msg: &RaftMessage) -> Result<T, Status> {
    bincode::deserialize(&msg.payload)
        .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))
}

/// A unary answer: the Raft's result, its error as text (openraft 0.10's errors are not meant
/// to cross versions; the sender only reports them).
fn encode<T: Serialize, E: std::fmt::Display>(
    group: u64,
    result: Result<T, E>,
) -> Result<Response<RaftMessage>, Status> {
    let result: Result<T, String> = result.map_err(|e| e.to_string());
    let payload = bincode::serialize(&result).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftMessage { group, payload }))
}

/// Most requests of one replication stream taken in and not yet answered (openraft's own
/// pipeline holds 64); each one's leader commit waits here for its answer.
const STREAM_COMMITS_MAX: usize = 1024;

type AnswerStream = Pin<Box<dyn Stream<Item = Result<RaftMessage, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Peer for PeerService {
    type StreamAppendStream = AnswerStream;

    /// A leader's replication stream for one group: each request goes to the group's
    /// `Raft::stream_append` as it arrives; each answer goes back in order. A malformed
    /// message, or one for another group, ends the stream with `InvalidArgument` after the
    /// answers to what came before it.
    async fn stream_append(
        &self,
        request: Request<Streaming<RaftMessage>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        let group: u64 = request
            .metadata()
            .get(crate::network::GROUP_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "a replication stream names its group in `{}`",
                    crate::network::GROUP_HEADER
                ))
            })?;
        let handle = self.handle(group)?;
        self.admission
            .member(&request, group, || handle.members(), "replication stream")?;
        let commits: Arc<Mutex<VecDeque<u64>>> = Arc::default();
        let broken: Arc<Mutex<Option<Status>>> = Arc::default();
        let inbound = request.into_inner();
        let input = {
            let (commits, broken) = (commits.clone(), broken.clone());
            futures::stream::unfold(inbound, move |mut inbound| {
                let (commits, broken) = (commits.clone(), broken.clone());
                async move {
                    let fail = |status: Status| {
                        *broken.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
                    };
                    let msg = match inbound.message().await {
                        Ok(Some(msg)) => msg,
                        Ok(None) => return None,
                        Err(status) => {
                            fail(status);
                            return None;
                        }
                    };
                    if msg.group != group {
                        fail(Status::invalid_argument(format!(
                            "a message for group {} on group {group}'s replication stream",
                            msg.group
                        )));
                        return None;
                    }
                    let req: AppendEntriesRequest<TypeConfig> = match decode(&msg) {
                        Ok(r) => r,
                        Err(status) => {
                            fail(status);
                            return None;
                        }
                    };
                    let mut c = commits.lock().unwrap_or_else(|p| p.into_inner());
                    if c.len() >= STREAM_COMMITS_MAX {
                        drop(c);
                        fail(Status::resource_exhausted(format!(
                            "more than {STREAM_COMMITS_MAX} requests unanswered on one stream"
                        )));
                        return None;
                    }
                    c.push_back(req.leader_commit.map_or(0, |l| l.index));
                    drop(c);
                    Some((req, inbound))
                }
            })
        };
        let answers = handle.raft.stream_append(input).map(move |res| match res {
            Ok(answer) => {
                let commit = commits
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .pop_front();
                if !matches!(answer, Err(StreamAppendError::HigherVote(_))) {
                    handle.heard_leader();
                    if let (Ok(_), Some(commit)) = (&answer, commit) {
                        handle.leader_contact(commit);
                    }
                }
                let payload = bincode::serialize(&answer)
                    .map_err(|e| Status::internal(format!("encoding an answer: {e}")))?;
                Ok(RaftMessage { group, payload })
            }
            Err(fatal) => Err(Status::unavailable(format!(
                "group {group} stopped: {fatal}"
            ))),
        });
        // After the answers, why the input ended early (if it did).
        let tail = futures::stream::once(async move {
            broken.lock().unwrap_or_else(|p| p.into_inner()).take()
        })
        .filter_map(|b| async move { b.map(Err) });
        let stop = self.stop.clone();
        let stopped = async move {
            match stop {
                Some(mut stop) => {
                    let _ = stop.wait_for(|s| *s).await;
                }
                None => std::future::pending().await,
            }
        };
        Ok(Response::new(Box::pin(
            answers.chain(tail).take_until(stopped),
        )))
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.guarded_vote(request, false).await
    }

    /// The group's leader chose this node to lead next: openraft starts an election at once.
    async fn transfer_leader(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let group = request.get_ref().group;
        let handle = self.handle(group)?;
        self.admission
            .member(&request, group, || handle.members(), "leader transfer")?;
        let msg = request.into_inner();
        let req = decode(&msg)?;
        encode(msg.group, handle.raft.handle_transfer_leader(req).await)
    }

    /// A candidate asks whether it could win; refused for the same reasons as a vote.
    async fn pre_vote(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.guarded_vote(request, true).await
    }

    /// A snapshot arrives in chunks (see [`crate::network::SNAPSHOT_CHUNK_BYTES`]): the first
    /// message names the vote, the snapshot and its length; the bytes that follow must add up
    /// to exactly that length (at most [`SNAPSHOT_BYTES_MAX`]) before openraft installs it.
    async fn install_snapshot(
        &self,
        request: Request<Streaming<RaftMessage>>,
    ) -> Result<Response<RaftMessage>, Status> {
        let sender = self.admission.sender(&request, "snapshot")?;
        let mut parts = request.into_inner();
        let head = parts
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("an empty snapshot stream"))?;
        let group = head.group;
        let handle = self.handle(group)?;
        self.admission
            .check_member(sender, group, || handle.members(), "snapshot")?;
        let raft = handle.raft;
        let (vote, meta, len): (Vote, SnapshotMeta, u64) = decode(&head)?;
        if len > SNAPSHOT_BYTES_MAX {
            return Err(Status::invalid_argument(format!(
                "a snapshot of {len} bytes for group {group}: at most {SNAPSHOT_BYTES_MAX} are taken"
            )));
        }
        let mut data: SnapshotData = Vec::with_capacity(len.min(SNAPSHOT_PREALLOC_MAX) as usize);
        while let Some(part) = parts.message().await? {
            if part.group != group {
                return Err(Status::invalid_argument(format!(
                    "a snapshot for group {group} carried a part for group {}",
                    part.group
                )));
            }
            if (data.len() + part.payload.len()) as u64 > len {
                return Err(Status::invalid_argument(format!(
                    "a snapshot for group {group} announced {len} bytes and sent more"
                )));
            }
            data.extend_from_slice(&part.payload);
        }
        if data.len() as u64 != len {
            return Err(Status::invalid_argument(format!(
                "a snapshot for group {group} ended after {} of its {len} bytes",
                data.len()
            )));
        }
        let res = raft
            .install_full_snapshot(
                vote,
                Snapshot {
                    meta,
                    snapshot: data,
                },
            )
            .await;
        encode(group, res)
    }

    async fn read_index(
        &self,
        request: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexReply>, Status> {
        // Any node of the topology: a router syncs groups it holds no replica of.
        self.admission.sender(&request, "read index")?;
        let group = request.into_inner().group;
        // The request's span (when traced: the server's `TraceRpcs`) names its group.
        tracing::Span::current().record("meridian.group", group);
        let handle = self.host.get(GroupId(group)).ok_or_else(|| {
            Status::not_found(format!("group {group} is not hosted on this node"))
        })?;
        match handle.read_index(READ_INDEX_TIMEOUT).await {
            Ok(read_index) => Ok(Response::new(ReadIndexReply { read_index })),
            Err(e) => Err(Status::failed_precondition(format!("group {group}: {e}"))),
        }
    }
}
