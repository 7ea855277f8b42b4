//! Batches concurrent client writes of one group into single Raft entries.
//!
//! One entry per client write costs a group one log append (and its share of an fsync) per
//! write. The proposer drains whatever writes are queued, packs those with disjoint keys into
//! one `Command::Batch` entry (one fsync for all), and keeps a bounded number of entries in
//! flight. A command whose keys overlap the current batch, or that may touch a whole prefix,
//! starts the next entry, so every key still changes at most once per revision.
//!
//! An entry goes at once when no entry of writes is in flight (an idle group's promise entry
//! never holds writes back). While one is, in a group whose voters share a region, the next
//! batch keeps filling, and goes early (into the second place) only once a limit fills it: a
//! batch that waits for the entry ahead carries every write that came meanwhile, so the group
//! pays its per-entry costs (three fsyncs, two replication messages, an apply) once per round
//! trip of a millisecond. A group whose voters are regions apart ([`SecondPlace::AtOnce`])
//! sends the next batch into the second place at once: there a round trip is tens of
//! milliseconds, worth overlapping rather than waiting for.

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
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Notify, OwnedSemaphorePermit, Semaphore};

/// Most client writes waiting for a batch; callers wait when it is full.
pub const PROPOSAL_QUEUE_MAX: usize = 16_384;
/// Most commands in one entry.
pub const BATCH_COMMANDS_MAX: usize = 512;
/// Most payload bytes in one entry (a single larger command still goes alone).
pub const BATCH_BYTES_MAX: usize = 2 * 1024 * 1024;
/// Entries proposed and not yet applied, per group; the second place only takes a full batch.
pub const ENTRIES_IN_FLIGHT_MAX: usize = 2;
/// A round trip between a group's voters from which [`SecondPlace::AtOnce`] applies.
pub const OVERLAP_RTT_MS_MIN: u64 = 5;

/// When a batch of writes takes the second place in flight beside an entry of writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecondPlace {
    /// Only once a limit fills it; else it waits for the entry ahead, taking the writes that
    /// come meanwhile (voters in one region: an entry's own costs outweigh its round trip).
    WhenFull,
    /// At once (voters regions apart: the round trip outweighs an entry's costs).
    AtOnce,
}

impl SecondPlace {
    /// The policy for a group whose voters are up to `voters_rtt_ms` apart.
    pub fn for_voters_rtt_ms(voters_rtt_ms: u64) -> Self {
        if voters_rtt_ms >= OVERLAP_RTT_MS_MIN {
            SecondPlace::AtOnce
        } else {
            SecondPlace::WhenFull
        }
    }
}

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
        second_place: SecondPlace,
    ) -> Self {
        let (tx, rx) = mpsc::channel(PROPOSAL_QUEUE_MAX);
        let stats = Arc::new(ProposerStats::default());
        let batching = Batching {
            steps,
            clock,
            closing,
            second_place,
        };
        tokio::spawn(run(group, raft, rx, stats.clone(), batching));
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

/// A place in flight: its drop frees the place and wakes the proposer waiting for one.
struct Place {
    permit: Option<OwnedSemaphorePermit>,
    /// The count of entries with writes in flight, when this one carries writes.
    writes: Option<Arc<AtomicUsize>>,
    freed: Arc<Notify>,
}

impl Drop for Place {
    fn drop(&mut self) {
        // The place is free before the wake, so the woken proposer finds it free; and
        // `notify_one` keeps the wake when the proposer is not waiting yet: none is lost.
        if let Some(w) = self.writes.take() {
            w.fetch_sub(1, Ordering::AcqRel);
        }
        drop(self.permit.take());
        self.freed.notify_one();
    }
}

/// The places in flight of one group's entries.
struct Places {
    sem: Arc<Semaphore>,
    /// Entries in flight that carry writes (the others carry only a promise).
    writes: Arc<AtomicUsize>,
    freed: Arc<Notify>,
}

impl Places {
    fn new() -> Self {
        Self {
            sem: Arc::new(Semaphore::new(ENTRIES_IN_FLIGHT_MAX)),
            writes: Arc::new(AtomicUsize::new(0)),
            freed: Arc::new(Notify::new()),
        }
    }

    /// No writes in flight: a batch goes at once (beside a promise, never behind one).
    fn idle(&self) -> bool {
        self.writes.load(Ordering::Acquire) == 0
    }

    /// A place for an entry of writes.
    fn try_take(&self) -> Option<Place> {
        let mut place = self.try_take_for_promise()?;
        self.writes.fetch_add(1, Ordering::AcqRel);
        place.writes = Some(self.writes.clone());
        Some(place)
    }

    /// A place for an entry that only carries a promise.
    fn try_take_for_promise(&self) -> Option<Place> {
        let permit = self.sem.clone().try_acquire_owned().ok()?;
        Some(Place {
            permit: Some(permit),
            writes: None,
            freed: self.freed.clone(),
        })
    }
}

/// The next entry's writes while it fills: disjoint keys, within the command and byte limits.
struct Building {
    batch: Vec<Proposal>,
    keys: HashSet<String>,
    bytes: usize,
    /// Takes nothing more: its first command may touch a whole prefix (it goes alone), or a
    /// later one did not fit (that one starts the entry after).
    closed: bool,
    /// A limit (commands or bytes) stopped it: worth a second place in flight. A batch closed
    /// by an overlapping key is not (the next write would start a new entry anyway).
    full: bool,
}

impl Building {
    fn start(first: Proposal) -> Self {
        let bytes = size_of(&first.cmd);
        let (keys, closed) = match first.cmd.keys() {
            Some(ks) => (ks.into_iter().map(str::to_string).collect(), false),
            None => (HashSet::new(), true),
        };
        let mut b = Self {
            batch: vec![first],
            keys,
            bytes,
            closed,
            full: false,
        };
        b.check_limits();
        b
    }

    fn check_limits(&mut self) {
        if self.batch.len() >= BATCH_COMMANDS_MAX || self.bytes >= BATCH_BYTES_MAX {
            self.full = true;
            self.closed = true;
        }
    }

    /// Adds `p` when it fits; else closes the batch and gives `p` back (the next entry's
    /// first).
    fn offer(&mut self, p: Proposal) -> Option<Proposal> {
        if self.closed {
            return Some(p);
        }
        let size = size_of(&p.cmd);
        if self.bytes + size > BATCH_BYTES_MAX {
            self.full = true;
            self.closed = true;
            return Some(p);
        }
        // A command that may touch a whole prefix (no keys) overlaps everything.
        let keys = p
            .cmd
            .keys()
            .filter(|ks| ks.iter().all(|k| !self.keys.contains(*k)));
        let Some(keys) = keys else {
            self.closed = true;
            return Some(p);
        };
        self.keys.extend(keys.into_iter().map(str::to_string));
        self.bytes += size;
        self.batch.push(p);
        self.check_limits();
        None
    }
}

/// How a group's proposer stamps, traces and sends its entries.
struct Batching {
    steps: Arc<Steps>,
    clock: Arc<NodeClock>,
    closing: Option<Closing>,
    second_place: SecondPlace,
}

async fn run(
    group: GroupId,
    raft: Raft,
    mut rx: mpsc::Receiver<Proposal>,
    stats: Arc<ProposerStats>,
    batching: Batching,
) {
    let Batching {
        steps,
        clock,
        closing,
        second_place,
    } = batching;
    let at_once = second_place == SecondPlace::AtOnce;
    let places = Places::new();
    let mut carry: Option<Proposal> = None;
    // When the last promise went out (with an entry, or alone).
    let mut promised = tokio::time::Instant::now();
    // The queue closed (the group is shutting down) while a batch waited: it still goes, and
    // the next `next` ends the proposer.
    let mut stopping = false;
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
                        if let Some(place) = places.try_take_for_promise() {
                            let stamp = stamp_above(&clock, Timestamp::ZERO, Some(profile));
                            stats.promises.fetch_add(1, Ordering::Relaxed);
                            tokio::spawn(promise_alone(group, raft.clone(), stamp, place));
                        }
                    }
                    continue;
                }
            },
        };
        promised = tokio::time::Instant::now();
        let mut building = Building::start(first);
        // Fill the batch until it may go: at once into an idle group (or into the second
        // place, `AtOnce`), into the second place only when a limit filled it; else it waits
        // for the entry ahead, taking the writes that come meanwhile (until one overlaps its
        // keys: that one starts the entry after).
        let place = loop {
            while !building.closed {
                let Ok(p) = rx.try_recv() else { break };
                carry = building.offer(p);
            }
            if places.idle() || building.full || at_once || stopping {
                if let Some(place) = places.try_take() {
                    break place;
                }
            }
            let freed = places.freed.notified();
            tokio::select! {
                () = freed => {}
                p = rx.recv(), if !building.closed && !at_once && !stopping => match p {
                    Some(p) => carry = building.offer(p),
                    // The group is shutting down: what was queued still goes.
                    None => stopping = true,
                },
            }
        };
        let batch = building.batch;
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
            let _place = place;
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
async fn promise_alone(group: GroupId, raft: Raft, stamp: Stamp, _place: Place) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_types::{DeleteOp, PutOp};

    fn proposal(cmd: Command) -> Proposal {
        let (reply, _) = oneshot::channel();
        Proposal {
            cmd,
            after: Timestamp::ZERO,
            reply,
            span: tracing::Span::none(),
        }
    }

    fn put(key: &str) -> Proposal {
        proposal(Command::Put(PutOp::new(key, b"v".to_vec())))
    }

    fn delete_prefix(key: &str) -> Proposal {
        proposal(Command::Delete(DeleteOp {
            key: key.into(),
            prefix: true,
            expected_version: None,
            expected_mod_revision: None,
            prev_kv: false,
        }))
    }

    fn keys(b: &Building) -> Vec<String> {
        b.batch
            .iter()
            .map(|p| match &p.cmd {
                Command::Put(p) => p.key.clone(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_batch_takes_disjoint_keys_and_hands_back_the_first_overlap() {
        let mut b = Building::start(put("/a"));
        assert!(b.offer(put("/b")).is_none());
        assert!(!b.closed && !b.full);
        let back = b
            .offer(put("/a"))
            .expect("an overlapping key is handed back");
        assert!(matches!(&back.cmd, Command::Put(p) if p.key == "/a"));
        assert!(
            b.closed,
            "closed after an overlap: the next write starts the next entry"
        );
        assert!(
            !b.full,
            "an overlap is no reason for a second place in flight"
        );
        assert!(b.offer(put("/c")).is_some(), "a closed batch takes nothing");
        assert_eq!(keys(&b), ["/a", "/b"]);
    }

    #[test]
    fn a_prefix_delete_goes_alone() {
        let b = Building::start(delete_prefix("/dir/"));
        assert!(
            b.closed,
            "a command that may touch a whole prefix takes no company"
        );
        assert!(!b.full);
        let mut b = Building::start(put("/a"));
        assert!(b.offer(delete_prefix("/dir/")).is_some());
        assert_eq!(keys(&b), ["/a"]);
    }

    #[test]
    fn a_batch_is_full_at_its_command_limit() {
        let mut b = Building::start(put("/k0"));
        for i in 1..BATCH_COMMANDS_MAX {
            assert!(!b.full && !b.closed);
            assert!(b.offer(put(&format!("/k{i}"))).is_none());
        }
        assert!(b.full && b.closed);
        assert!(b.offer(put("/more")).is_some());
        assert_eq!(b.batch.len(), BATCH_COMMANDS_MAX);
    }

    #[test]
    fn a_batch_is_full_at_its_byte_limit() {
        let big = vec![0u8; BATCH_BYTES_MAX / 2];
        let mut b = Building::start(proposal(Command::Put(PutOp::new("/a", big.clone()))));
        let back = b.offer(proposal(Command::Put(PutOp::new("/b", big))));
        assert!(back.is_some(), "two halves and their keys exceed the limit");
        assert!(b.full, "a batch that a write does not fit by bytes is full");
        assert_eq!(b.batch.len(), 1);
    }

    #[tokio::test]
    async fn a_freed_place_wakes_the_waiting_proposer_and_an_early_wake_is_kept() {
        let places = Places::new();
        assert!(places.idle());
        let first = places.try_take().expect("a first place");
        let second = places.try_take().expect("a second place");
        assert!(
            places.try_take().is_none(),
            "only {ENTRIES_IN_FLIGHT_MAX} places"
        );
        assert!(!places.idle());
        // The proposer starts waiting; an entry in flight ends.
        let freed = places.freed.notified();
        drop(first);
        tokio::time::timeout(std::time::Duration::from_secs(5), freed)
            .await
            .expect("the freed place wakes the waiter");
        let again = places
            .try_take()
            .expect("the place is free once the waiter wakes");
        drop((again, second));
        // A wake that comes before anyone waits is kept.
        tokio::time::timeout(std::time::Duration::from_secs(5), places.freed.notified())
            .await
            .expect("a wake before the wait is not lost");
        assert!(places.idle());
    }

    #[test]
    fn voters_regions_apart_overlap_their_entries() {
        assert_eq!(SecondPlace::for_voters_rtt_ms(0), SecondPlace::WhenFull);
        assert_eq!(
            SecondPlace::for_voters_rtt_ms(OVERLAP_RTT_MS_MIN - 1),
            SecondPlace::WhenFull
        );
        assert_eq!(
            SecondPlace::for_voters_rtt_ms(OVERLAP_RTT_MS_MIN),
            SecondPlace::AtOnce
        );
        assert_eq!(SecondPlace::for_voters_rtt_ms(150), SecondPlace::AtOnce);
    }

    #[test]
    fn a_promise_in_flight_leaves_the_group_idle_for_writes() {
        let places = Places::new();
        let promise = places
            .try_take_for_promise()
            .expect("a place for a promise");
        assert!(
            places.idle(),
            "a batch of writes never waits behind an empty entry"
        );
        let writes = places.try_take().expect("the second place");
        assert!(!places.idle());
        assert!(places.try_take_for_promise().is_none());
        drop(promise);
        assert!(!places.idle(), "the writes are still in flight");
        drop(writes);
        assert!(places.idle());
    }
}
