//! Batches concurrent client writes of one group into single Raft entries.
//!
//! One entry per client write costs a group one log append (and its share of an fsync) per
//! write. The proposer drains whatever writes are queued, packs those with disjoint keys into one `Command::Batch` entry (one fsync for all),
//! and keeps a bounded number of entries in flight. A command whose keys overlap the current
//! batch, or that may touch a whole prefix, starts the next entry, so every key still changes at
//! most once per revision.

use crate::error::{Error, Result};
use meridian_consensus::Raft;
use meridian_router::Profile;
use meridian_storage::steps::{StepKind, Steps};
use meridian_types::hlc::{NodeClock, Stamp, Timestamp};
use meridian_types::metrics::Histogram;
use meridian_types::ReadProfile;
use meridian_types::{Command, CommandResult, GroupId};
use openraft::error::{ClientWriteError, RaftError};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Most client writes waiting for a batch; callers wait when it is full.
pub const PROPOSAL_QUEUE_MAX: usize = 16_384;
/// Most commands in one entry.
pub const BATCH_COMMANDS_MAX: usize = 512;
/// Most payload bytes in one entry (a single larger command still goes alone).
pub const BATCH_BYTES_MAX: usize = 2 * 1024 * 1024;
/// Entries proposed and not yet applied, per group.
pub const ENTRIES_IN_FLIGHT_MAX: usize = 2;
/// Longest an entry holds its place in flight: one that Raft has not answered by then (it
/// should not happen) gives its place back, so a lost answer never stops the group's writes;
/// its writers hear that the write may still be applied.
pub const ENTRY_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// What a proposal comes back with: the entry's revision and this command's result, or the
/// error the whole entry met (e.g. not the leader).
pub type Outcome = std::result::Result<(u64, CommandResult), WriteError>;

#[derive(Debug, Clone)]
pub enum WriteError {
    ForwardToLeader { leader: Option<(u64, String)> },
    Failed(String),
}

struct Proposal {
    cmd: Command,
    /// The writer's session timestamp: the entry is stamped above it.
    after: Timestamp,
    reply: oneshot::Sender<Outcome>,
    /// `raft.propose` in the request's trace (`Span::none()` while tracing is off).
    span: tracing::Span,
}

#[derive(Clone)]
pub struct Proposer {
    group: GroupId,
    tx: mpsc::Sender<Proposal>,
    stats: Arc<ProposerStats>,
}

/// What one group's proposer did (`/metrics`).
#[derive(Default)]
pub struct ProposerStats {
    /// Commands proposed.
    pub commands: AtomicU64,
    /// Raft entries they went in (a batch is one entry): commands / entries = the batch size.
    pub entries: AtomicU64,
    /// From an entry's proposal to its result on this node (the leader): quorum and apply.
    pub commit: Histogram,
    /// Commands per entry.
    pub batch: meridian_types::metrics::Sizes,
    /// Entries made only to carry a promise (an idle group's closed timestamp).
    pub promises: AtomicU64,
}

impl Proposer {
    /// `steps` are the group's append and apply times (the trace's `raft.append`/`raft.apply`);
    /// each entry is stamped with a commit timestamp from `clock` (docs/closed-timestamps.md).
    /// With `closing`, every entry carries a promise and an idle group gets an empty entry
    /// with one every close interval, while this node leads.
    pub fn start(
        group: GroupId,
        raft: Raft,
        steps: Arc<Steps>,
        clock: Arc<NodeClock>,
        closing: Option<Closing>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(PROPOSAL_QUEUE_MAX);
        let stats = Arc::new(ProposerStats::default());
        tokio::spawn(run(group, raft, rx, stats.clone(), steps, clock, closing));
        Self { group, tx, stats }
    }

    /// Its counters and commit latencies.
    pub fn stats(&self) -> &ProposerStats {
        &self.stats
    }

    /// Queues `cmd` and waits for its outcome (without the entry's commit timestamp).
    pub async fn propose(&self, cmd: Command) -> Result<Outcome> {
        let outcome = self.propose_after(cmd, Timestamp::ZERO).await?;
        Ok(outcome.map(|(rev, result)| (rev, result.unstamped().0)))
    }

    /// Queues `cmd`, to be committed above the writer's session timestamp `after`, and waits
    /// for its outcome: the result is `CommandResult::Stamped` with the entry's commit
    /// timestamp.
    pub async fn propose_after(&self, cmd: Command, after: Timestamp) -> Result<Outcome> {
        let (reply, rx) = oneshot::channel();
        let span = crate::step_span!(
            "raft.propose",
            meridian.group = self.group.0,
            meridian.revision = tracing::field::Empty,
            meridian.batch_commands = tracing::field::Empty
        );
        self.tx
            .send(Proposal {
                cmd,
                after,
                reply,
                span,
            })
            .await
            .map_err(|_| Error::Unavailable("the group is shutting down".into()))?;
        // Queued, so possibly proposed: the caller must not retry blindly.
        rx.await.map_err(|_| unanswered())
    }
}

/// What a writer hears when its proposal's answer never came.
fn unanswered() -> Error {
    Error::Deadline(
        "the group did not answer (it stopped, or the entry outlived its wait); the write may \
         have been applied"
            .into(),
    )
}

/// How a leader closes timestamps (docs/closed-timestamps.md): at least every `interval`, by
/// its group's profile in the placement map (`global-reads` when a domain it owns asks for
/// it), else by the nodes' `default`.
#[derive(Clone)]
pub struct Closing {
    pub default: Profile,
    /// `local-writes`: how far behind the clock it closes.
    pub lag_us: u64,
    /// `global-reads`: how far ahead.
    pub lead_us: u64,
    pub interval: std::time::Duration,
    /// The profile the placement map gives a group now, if any.
    pub profile_of: Arc<dyn Fn(GroupId) -> Option<ReadProfile> + Send + Sync>,
}

impl Closing {
    /// The profile `group` closes with now.
    pub fn profile(&self, group: GroupId) -> Profile {
        match (self.profile_of)(group) {
            Some(ReadProfile::GlobalReads) => Profile::GlobalReads {
                lead_us: self.lead_us,
            },
            Some(ReadProfile::LocalWrites) => Profile::LocalWrites {
                lag_us: self.lag_us,
            },
            None => self.default,
        }
    }
}

/// An entry's stamp: the node's clock, raised above the writers' session timestamp `after`,
/// with the promise `closing` makes now (taken first: the entry's own stamp is above it, and
/// the state machine commits every later entry above it, `Stamps::apply`).
fn stamp_above(clock: &NodeClock, after: Timestamp, closing: Option<Profile>) -> Stamp {
    let closed = closing.map(|p| p.target(clock.now()));
    Stamp {
        at: clock.now().max(after.next()),
        closed,
    }
}

/// Proposes `cmd` alone, without a proposer (a node started as the group's learner, promoted
/// since, that now leads it), stamped from `clock` above the writer's session timestamp
/// `after`, as a proposer would; the result is `CommandResult::Stamped`. With
/// `commit_wait_max` (the cluster reads by closed timestamps) the answer waits for the commit
/// timestamp to pass, at most that long.
pub async fn propose_alone(
    group: GroupId,
    raft: &Raft,
    cmd: Command,
    clock: &Arc<NodeClock>,
    after: Timestamp,
    commit_wait_max: Option<std::time::Duration>,
) -> Result<Outcome> {
    let (reply, rx) = oneshot::channel();
    let stamp = stamp_above(clock, after, None);
    let proposal = Proposal {
        cmd,
        after,
        reply,
        span: tracing::Span::none(),
    };
    submit(
        group,
        raft,
        vec![proposal],
        &Steps::default(),
        Some(Stamping {
            stamp,
            clock: clock.clone(),
            commit_wait_max,
        }),
    )
    .await;
    rx.await.map_err(|_| unanswered())
}

fn size_of(cmd: &Command) -> usize {
    match cmd {
        Command::Put(p) => p.key.len() + p.value.len(),
        Command::Delete(d) => d.key.len(),
        // A txn may carry up to 128 values: measure it, so a batch stays within its bytes.
        Command::AfterImport { cmd, .. } | Command::Stamped { cmd, .. } => size_of(cmd) + 16,
        Command::Txn { .. }
        | Command::Batch(_)
        | Command::Lease(_)
        | Command::Placement(_)
        | Command::Move(_) => bincode::serialized_size(cmd).map_or(BATCH_BYTES_MAX, |n| {
            usize::try_from(n).unwrap_or(BATCH_BYTES_MAX)
        }),
    }
}

async fn run(
    group: GroupId,
    raft: Raft,
    mut rx: mpsc::Receiver<Proposal>,
    stats: Arc<ProposerStats>,
    steps: Arc<Steps>,
    clock: Arc<NodeClock>,
    closing: Option<Closing>,
) {
    let in_flight = Arc::new(Semaphore::new(ENTRIES_IN_FLIGHT_MAX));
    let mut carry: Option<Proposal> = None;
    // When the last promise went out (with an entry, or alone).
    let mut promised = tokio::time::Instant::now();
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match next(group, &mut rx, closing.as_ref(), promised).await {
                Next::Proposal(p) => p,
                Next::Stop => return,
                Next::Close(profile) => {
                    promised = tokio::time::Instant::now();
                    if !is_leader(&raft) {
                        // A follower's timer wakes ten times less often.
                        if let Some(c) = &closing {
                            promised += c.interval * 9;
                        }
                    } else {
                        // Only into a free place: an entry in flight carries a promise anyway,
                        // and a write must never wait behind an empty one.
                        if let Ok(permit) = in_flight.clone().try_acquire_owned() {
                            let stamp = stamp_above(&clock, Timestamp::ZERO, Some(profile));
                            stats.promises.fetch_add(1, Ordering::Relaxed);
                            tokio::spawn(promise_alone(group, raft.clone(), stamp, permit));
                        }
                    }
                    continue;
                }
            },
        };
        promised = tokio::time::Instant::now();
        // Wait for room first: the longer an entry waits, the more writes it can carry.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        if let Some(first_keys) = batch[0].cmd.keys() {
            let mut keys: HashSet<String> = first_keys.into_iter().map(str::to_string).collect();
            let mut bytes = size_of(&batch[0].cmd);
            while batch.len() < BATCH_COMMANDS_MAX && bytes < BATCH_BYTES_MAX {
                let Ok(next) = rx.try_recv() else { break };
                let fits = next.cmd.keys().is_some_and(|ks| {
                    ks.iter().all(|k| !keys.contains(*k))
                        && bytes + size_of(&next.cmd) <= BATCH_BYTES_MAX
                });
                if !fits {
                    carry = Some(next);
                    break;
                }
                if let Some(ks) = next.cmd.keys() {
                    keys.extend(ks.into_iter().map(str::to_string));
                }
                bytes += size_of(&next.cmd);
                batch.push(next);
            }
        }
        stats
            .commands
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        stats.entries.fetch_add(1, Ordering::Relaxed);
        stats.batch.observe(batch.len() as u64);
        let raft = raft.clone();
        let stats = stats.clone();
        let steps = steps.clone();
        // Concurrent entries may reach the log in either order: the state machine raises each
        // stamp above the one before it (`Stamps::apply`), the same on every replica.
        let after = batch.iter().map(|p| p.after).max().unwrap_or_default();
        let stamp = stamp_above(&clock, after, closing.as_ref().map(|c| c.profile(group)));
        let stamping = Stamping {
            stamp,
            clock: clock.clone(),
            commit_wait_max: closing.as_ref().map(|c| commit_wait_max(c.lead_us)),
        };
        tokio::spawn(async move {
            let _permit = permit;
            let start = std::time::Instant::now();
            let entry = submit(group, &raft, batch, &steps, Some(stamping));
            match tokio::time::timeout(ENTRY_WAIT_MAX, entry).await {
                Ok(true) => stats.commit.observe(start.elapsed()),
                Ok(false) => {}
                Err(_) => tracing::warn!(
                    %group,
                    "an entry was not answered within {ENTRY_WAIT_MAX:?}; its place in flight \
                     is given back (its writes may still be applied)"
                ),
            }
        });
    }
}

/// The least a write's answer may wait for its commit timestamp to pass
/// ([`commit_wait_max`]).
pub const COMMIT_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// The longest a write's answer waits for its commit timestamp to pass when leaders close
/// `lead_us` ahead: twice the lead (its own promise, plus an earlier leader's clock up to the
/// offset ahead), at least [`COMMIT_WAIT_MAX`]. A timestamp further ahead comes from a clock
/// that is off (the clock check says so).
pub fn commit_wait_max(lead_us: u64) -> std::time::Duration {
    COMMIT_WAIT_MAX.max(std::time::Duration::from_micros(lead_us.saturating_mul(2)))
}

/// An entry's stamp, the clock it came from, and (when the cluster reads by closed
/// timestamps) the longest its writers' answers wait for its commit timestamp to pass.
struct Stamping {
    stamp: Stamp,
    clock: Arc<NodeClock>,
    commit_wait_max: Option<std::time::Duration>,
}

/// How long until the clock passes the commit timestamp `at`: none without closed timestamps
/// (no session's order depends on it) or without a timestamp.
fn commit_wait(at: Option<Timestamp>, stamping: Option<&Stamping>) -> std::time::Duration {
    let (Some(at), Some(s)) = (at, stamping) else {
        return std::time::Duration::ZERO;
    };
    let Some(max) = s.commit_wait_max else {
        return std::time::Duration::ZERO;
    };
    let ahead = at.physical.saturating_sub(s.clock.physical_us());
    let wait = std::time::Duration::from_micros(ahead);
    if wait > max {
        tracing::warn!(
            commit = %at,
            "a commit timestamp is {wait:?} ahead of this node's clock: answered after \
             {max:?} (a clock is off)"
        );
    }
    wait.min(max)
}

fn answer(answers: Vec<(oneshot::Sender<Outcome>, Outcome)>) {
    for (reply, outcome) in answers {
        let _ = reply.send(outcome);
    }
}

enum Next {
    Proposal(Proposal),
    /// The close interval passed with no entry: time for a promise alone, by this profile.
    Close(Profile),
    Stop,
}

/// The next proposal, or (when closing) the close interval's end since the last promise.
async fn next(
    group: GroupId,
    rx: &mut mpsc::Receiver<Proposal>,
    closing: Option<&Closing>,
    promised: tokio::time::Instant,
) -> Next {
    let Some(c) = closing else {
        return rx.recv().await.map_or(Next::Stop, Next::Proposal);
    };
    tokio::select! {
        p = rx.recv() => p.map_or(Next::Stop, Next::Proposal),
        () = tokio::time::sleep_until(promised + c.interval) => Next::Close(c.profile(group)),
    }
}

fn is_leader(raft: &Raft) -> bool {
    use openraft::async_runtime::watch::WatchReceiver;
    raft.metrics().borrow_watched().state == openraft::ServerState::Leader
}

/// Commits an entry that only carries `stamp`'s promise (an idle group's): the group's
/// replicas then know everything up to it is applied. A failure (leadership lost meanwhile)
/// is the next leader's to make up: it closes from its own log.
async fn promise_alone(
    group: GroupId,
    raft: Raft,
    stamp: Stamp,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let cmd = Command::Stamped {
        stamp,
        cmd: Box::new(Command::Batch(Vec::new())),
    };
    let entry = meridian_consensus::host::write(&raft, cmd);
    match tokio::time::timeout(ENTRY_WAIT_MAX, entry).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::debug!(%group, "a promise entry was not committed: {e}"),
        Err(_) => {
            tracing::warn!(%group, "a promise entry was not answered within {ENTRY_WAIT_MAX:?}")
        }
    }
}

/// Ends each traced proposal of the entry at `rev` with the entry's log append (and fsync) and
/// its apply on this node, as child spans.
fn trace_steps(spans: &[tracing::Span], rev: u64, commands: usize, steps: &Steps) {
    if spans.is_empty() {
        return;
    }
    let append = steps.find(StepKind::Append, rev);
    let apply = steps.find(StepKind::Apply, rev);
    for span in spans {
        span.record("meridian.revision", rev);
        span.record("meridian.batch_commands", commands);
        for (name, step) in [("raft.append", append), ("raft.apply", apply)] {
            if let Some((start, end)) = step {
                let attrs = vec![opentelemetry::KeyValue::new(
                    "meridian.revision",
                    rev as i64,
                )];
                crate::telemetry::finished_child(span, name, start, end, attrs);
            }
        }
    }
}

/// Proposes `batch` as one entry (with the stamp, when given) and answers each proposal once
/// the entry's commit timestamp is not ahead of the node's `clock` (commit wait: a session
/// never holds a timestamp further ahead of a clock than the offset and the lead allow);
/// whether the entry committed. The wait does not hold the entry's place in flight.
async fn submit(
    group: GroupId,
    raft: &Raft,
    batch: Vec<Proposal>,
    steps: &Steps,
    stamping: Option<Stamping>,
) -> bool {
    let mut spans = Vec::new();
    let (mut cmds, replies): (Vec<Command>, Vec<oneshot::Sender<Outcome>>) = batch
        .into_iter()
        .map(|p| {
            if !p.span.is_none() {
                spans.push(p.span);
            }
            (p.cmd, p.reply)
        })
        .unzip();
    let single = cmds.len() == 1;
    let cmd = match cmds.pop() {
        Some(only) if single => only,
        Some(last) => {
            cmds.push(last);
            Command::Batch(cmds)
        }
        None => return false,
    };
    let cmd = match &stamping {
        Some(s) => Command::Stamped {
            stamp: s.stamp,
            cmd: Box::new(cmd),
        },
        None => cmd,
    };
    match meridian_consensus::host::write(raft, cmd).await {
        Ok(resp) => {
            let rev = resp.log_id.index;
            let commands = replies.len();
            // Each writer hears its own result with the entry's commit timestamp.
            let (data, at) = resp.data.unstamped();
            let answers: Vec<(oneshot::Sender<Outcome>, Outcome)> = match data {
                CommandResult::Batch(results) if !single => replies
                    .into_iter()
                    .zip(results)
                    .map(|(reply, r)| (reply, Ok((rev, r.stamped(at)))))
                    .collect(),
                result => replies
                    .into_iter()
                    .map(|reply| (reply, Ok((rev, result.clone().stamped(at)))))
                    .collect(),
            };
            let wait = commit_wait(at, stamping.as_ref());
            if wait.is_zero() {
                answer(answers);
            } else {
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    answer(answers);
                });
            }
            // After the answers: tracing never delays a write.
            trace_steps(&spans, rev, commands, steps);
            true
        }
        Err(e) => {
            let err = match e {
                RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                    WriteError::ForwardToLeader {
                        leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
                    }
                }
                other => WriteError::Failed(format!("write to group {group} failed: {other}")),
            };
            for reply in replies {
                let _ = reply.send(Err(err.clone()));
            }
            false
        }
    }
}
