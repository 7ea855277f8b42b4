//! What both openraft versions share in this harness: the precise delay line every network hop
//! and every fsync waits on, the log device model, the per-entry timeline the learner lag is
//! computed from, and the load driver.

use hdrhistogram::Histogram;
use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::BinaryHeap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// The learner's node id; 0, 1 and 2 are the voters.
pub const LEARNER: u64 = 3;
/// The voters.
pub const VOTERS: [u64; 3] = [0, 1, 2];

/// The cluster model one run uses.
#[derive(Clone, Debug)]
pub struct Params {
    /// One-way delay between two voters.
    pub voter_one_way: Duration,
    /// One-way delay between the learner and any voter.
    pub learner_one_way: Duration,
    /// How long a log flush takes once it starts (one flush covers every append queued before).
    pub fsync: Duration,
    /// openraft's `heartbeat_interval` (0.9 also uses it as the AppendEntries deadline).
    pub heartbeat: Duration,
    /// Length of each measured phase.
    pub phase: Duration,
    /// Concurrent clients of the throughput phase.
    pub clients: u32,
}

impl Params {
    /// One-way delay of a message between `from` and `to`.
    pub fn one_way(&self, from: u64, to: u64) -> Duration {
        if from == LEARNER || to == LEARNER {
            self.learner_one_way
        } else {
            self.voter_one_way
        }
    }

    /// Election timeouts as Meridian scales them: 8 and 14 heartbeats.
    pub fn election_timeout_ms(&self) -> (u64, u64) {
        let hb = self.heartbeat.as_millis() as u64;
        (8 * hb, 14 * hb)
    }
}

/// A timer with sub-millisecond precision. tokio's timer wheel rounds every sleep up to the next
/// whole millisecond, which would turn a 0.5 ms hop into 1–2 ms; this one thread sleeps on a
/// condition variable until the earliest deadline instead (tens of microseconds late at most).
#[derive(Clone)]
pub struct DelayLine {
    shared: Arc<Shared>,
}

struct Shared {
    timers: Mutex<Timers>,
    wake: Condvar,
}

#[derive(Default)]
struct Timers {
    heap: BinaryHeap<Reverse<Timer>>,
    next_seq: u64,
    stopped: bool,
}

struct Timer {
    at: Instant,
    seq: u64,
    fire: oneshot::Sender<()>,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Timer {}

impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timer {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl DelayLine {
    /// Starts the timer thread.
    pub fn start() -> Self {
        let shared = Arc::new(Shared {
            timers: Mutex::default(),
            wake: Condvar::new(),
        });
        let worker = shared.clone();
        std::thread::Builder::new()
            .name("delay-line".into())
            .spawn(move || worker.run())
            .expect("spawn the delay-line thread");
        Self { shared }
    }

    /// Completes at `at` (at once if it has passed).
    pub async fn sleep_until(&self, at: Instant) {
        if at <= Instant::now() {
            return;
        }
        let (fire, fired) = oneshot::channel();
        {
            let mut timers = self.shared.lock();
            let earliest = timers.heap.peek().is_none_or(|Reverse(t)| at < t.at);
            let seq = timers.next_seq;
            timers.next_seq += 1;
            timers.heap.push(Reverse(Timer { at, seq, fire }));
            if earliest {
                self.shared.wake.notify_one();
            }
        }
        // An error means the line stopped: nothing is left to wait for.
        let _ = fired.await;
    }

    /// Completes after `d`.
    pub async fn sleep(&self, d: Duration) {
        if !d.is_zero() {
            self.sleep_until(Instant::now() + d).await;
        }
    }

    /// Stops the timer thread; pending and later sleeps complete at once.
    pub fn stop(&self) {
        self.shared.lock().stopped = true;
        self.shared.wake.notify_one();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Timers> {
        self.timers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run(&self) {
        let mut timers = self.lock();
        loop {
            if timers.stopped {
                timers.heap.clear();
                return;
            }
            let now = Instant::now();
            while timers.heap.peek().is_some_and(|Reverse(t)| t.at <= now) {
                if let Some(Reverse(t)) = timers.heap.pop() {
                    let _ = t.fire.send(());
                }
            }
            timers = match timers.heap.peek() {
                None => self.wake.wait(timers).unwrap_or_else(|p| p.into_inner()),
                Some(Reverse(t)) => {
                    let left = t.at.saturating_duration_since(now);
                    self.wake
                        .wait_timeout(timers, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }
}

type Flushed = Box<dyn FnOnce() + Send>;

/// One node's log device. An append is readable at once (openraft requires that) and durable
/// `fsync` after its flush starts. Flushes run one at a time, in order, and one flush covers
/// every append queued while the previous one ran (group commit), as a WAL with one fsync
/// thread does. The store never waits: the flush callback comes from this task.
#[derive(Clone)]
pub struct Disk {
    queue: mpsc::UnboundedSender<Flushed>,
}

impl Disk {
    /// Starts the device's flush task on the current runtime.
    pub fn spawn(delay: DelayLine, fsync: Duration) -> Self {
        let (queue, mut pending) = mpsc::unbounded_channel::<Flushed>();
        tokio::spawn(async move {
            while let Some(first) = pending.recv().await {
                let mut batch = vec![first];
                while let Ok(more) = pending.try_recv() {
                    batch.push(more);
                }
                delay.sleep(fsync).await;
                for done in batch {
                    done();
                }
            }
        });
        Self { queue }
    }

    /// Runs `done` once everything appended so far is durable.
    pub fn flush(&self, done: impl FnOnce() + Send + 'static) {
        if let Err(refused) = self.queue.send(Box::new(done)) {
            // The device task is gone (runtime shutting down): report at once.
            (refused.0)();
        }
    }
}

/// When each log index reached a point of interest, in nanoseconds since `epoch` (0: not yet).
pub struct Marks {
    epoch: Instant,
    leader: AtomicU64,
    last_committed: AtomicU64,
    committed: Vec<AtomicU64>,
    learner_flushed: Vec<AtomicU64>,
    learner_applied: Vec<AtomicU64>,
}

/// Which mark a node records.
#[derive(Clone, Copy, Debug)]
pub enum Mark {
    /// The leader applied the entry: it is committed and its client is answered.
    Committed,
    /// The learner's log holds the entry durably.
    LearnerFlushed,
    /// The learner applied the entry: a read at the learner sees it.
    LearnerApplied,
}

impl Marks {
    /// Room for `capacity` log indexes; later ones are not recorded.
    pub fn new(capacity: usize) -> Self {
        let slots = || (0..capacity).map(|_| AtomicU64::new(0)).collect();
        Self {
            epoch: Instant::now(),
            leader: AtomicU64::new(u64::MAX),
            last_committed: AtomicU64::new(0),
            committed: slots(),
            learner_flushed: slots(),
            learner_applied: slots(),
        }
    }

    /// The node whose applies count as commits.
    pub fn set_leader(&self, id: u64) {
        self.leader.store(id, Ordering::Relaxed);
    }

    /// Node `node` reached `index`: records what that means, if anything.
    pub fn applied(&self, node: u64, index: u64) {
        if node == self.leader.load(Ordering::Relaxed) {
            self.record(Mark::Committed, index);
            self.last_committed.fetch_max(index, Ordering::Relaxed);
        } else if node == LEARNER {
            self.record(Mark::LearnerApplied, index);
        }
    }

    /// Records `mark` for `index` now, unless it was recorded before.
    pub fn record(&self, mark: Mark, index: u64) {
        let slots = match mark {
            Mark::Committed => &self.committed,
            Mark::LearnerFlushed => &self.learner_flushed,
            Mark::LearnerApplied => &self.learner_applied,
        };
        if let Some(slot) = usize::try_from(index).ok().and_then(|i| slots.get(i)) {
            let at = self.epoch.elapsed().as_nanos().max(1) as u64;
            let _ = slot.compare_exchange(0, at, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    fn get(slots: &[AtomicU64], index: u64) -> Option<u64> {
        let at = slots
            .get(usize::try_from(index).ok()?)?
            .load(Ordering::Relaxed);
        (at != 0).then_some(at)
    }

    /// The greatest index the leader applied.
    pub fn last_committed(&self) -> u64 {
        self.last_committed.load(Ordering::Relaxed)
    }

    /// Waits up to `limit` until the learner holds and applied `index`; tells whether it did.
    pub async fn wait_learner(&self, index: u64, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while !self.learner_has(index) {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Whether the learner both applied `index` and holds it durably (it may apply a committed
    /// entry before its own flush of it completes).
    pub fn learner_has(&self, index: u64) -> bool {
        Self::get(&self.learner_applied, index).is_some()
            && Self::get(&self.learner_flushed, index).is_some()
    }

    /// For each index in `from..=to` that the leader committed: microseconds until the learner's
    /// log held it (`flushed`) and until the learner applied it (`applied`). Returns also how
    /// many were missing on the learner.
    pub fn learner_lag(&self, from: u64, to: u64) -> (Histogram<u64>, Histogram<u64>, u64) {
        let mut flushed = histogram();
        let mut applied = histogram();
        let mut missing = 0;
        for index in from..=to {
            let Some(committed) = Self::get(&self.committed, index) else {
                continue;
            };
            let lag = |slots: &[AtomicU64], h: &mut Histogram<u64>| match Self::get(slots, index) {
                Some(at) => {
                    h.saturating_record(at.saturating_sub(committed) / 1_000);
                    true
                }
                None => false,
            };
            let f = lag(&self.learner_flushed, &mut flushed);
            let a = lag(&self.learner_applied, &mut applied);
            if !(f && a) {
                if std::env::var_os("RC_DEBUG").is_some() {
                    eprintln!("missing {index}: flushed {f} applied {a}");
                }
                missing += 1;
            }
        }
        (flushed, applied, missing)
    }
}

/// A latency histogram in microseconds, 1 µs to 100 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}

/// What the load driver needs from a cluster of either version.
pub trait Cluster: Send + Sync + 'static {
    /// One client write through the leader; resolves to the entry's log index once applied there.
    fn write(&self, client: u32, seq: u64) -> impl Future<Output = Result<u64, String>> + Send;

    /// One linearizable read check at the leader, with the version's read method named `how`.
    fn read(&self, how: ReadKind) -> impl Future<Output = Result<(), String>> + Send;
}

/// How a read is made linearizable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadKind {
    /// A quorum round from the leader (0.9 `ensure_linearizable`, 0.10 `ReadPolicy::ReadIndex`).
    ReadIndex,
    /// The leader's lease, no round (0.10 `ReadPolicy::LeaseRead`; 0.9 has none).
    LeaseRead,
}

/// Meridian's write path in front of either version (services/server/src/proposer.rs): client
/// writes queue; when one of [`Proposer::ENTRIES_IN_FLIGHT_MAX`] entry slots is free, everything
/// queued (up to [`Proposer::BATCH_COMMANDS_MAX`]) becomes one entry, and each client gets that
/// entry's answer. The harness's commands never conflict, so no batch is cut short by keys.
pub struct Proposer<C> {
    inner: Arc<C>,
    queue: mpsc::Sender<oneshot::Sender<Result<u64, String>>>,
}

impl<C: Cluster> Proposer<C> {
    /// Entries proposed and not yet applied (Meridian's `ENTRIES_IN_FLIGHT_MAX`).
    pub const ENTRIES_IN_FLIGHT_MAX: usize = 2;
    /// Most commands in one entry (Meridian's `BATCH_COMMANDS_MAX`).
    pub const BATCH_COMMANDS_MAX: usize = 512;

    /// Starts the batching task on the current runtime.
    pub fn start(inner: Arc<C>) -> Self {
        let (queue, mut queued) = mpsc::channel::<oneshot::Sender<Result<u64, String>>>(16_384);
        let cluster = inner.clone();
        tokio::spawn(async move {
            let in_flight = Arc::new(Semaphore::new(Self::ENTRIES_IN_FLIGHT_MAX));
            let mut seq = 0;
            while let Some(first) = queued.recv().await {
                // Wait for room first: the longer an entry waits, the more writes it carries.
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    return;
                };
                let mut batch = vec![first];
                while batch.len() < Self::BATCH_COMMANDS_MAX {
                    let Ok(next) = queued.try_recv() else { break };
                    batch.push(next);
                }
                let cluster = cluster.clone();
                seq += 1;
                tokio::spawn(async move {
                    let _permit = permit;
                    let outcome = cluster.write(u32::MAX, seq).await;
                    for reply in batch {
                        let _ = reply.send(outcome.clone());
                    }
                });
            }
        });
        Self { inner, queue }
    }
}

impl<C: Cluster> Cluster for Proposer<C> {
    async fn write(&self, _client: u32, _seq: u64) -> Result<u64, String> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(reply)
            .await
            .map_err(|_| "the proposer stopped".to_string())?;
        answer
            .await
            .map_err(|_| "the proposer dropped the write".to_string())?
    }

    async fn read(&self, how: ReadKind) -> Result<(), String> {
        self.inner.read(how).await
    }
}

/// What one measured phase produced.
pub struct Phase {
    /// Latency of each operation, µs.
    pub latency: Histogram<u64>,
    /// Operations completed.
    pub ops: u64,
    /// Operations that failed.
    pub errors: u64,
    /// How long the phase ran.
    pub elapsed: Duration,
    /// Smallest and largest log index written (writes only).
    pub indexes: Option<(u64, u64)>,
    /// The first error seen, if any.
    pub first_error: Option<String>,
}

impl Phase {
    /// Operations per second.
    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `clients` closed-loop writers against `cluster` for `length`.
pub async fn run_writes<C: Cluster>(cluster: Arc<C>, clients: u32, length: Duration) -> Phase {
    run_phase(clients, length, move |client, seq| {
        let cluster = cluster.clone();
        async move { cluster.write(client, seq).await.map(Some) }
    })
    .await
}

/// Runs one closed-loop reader against `cluster` for `length`.
pub async fn run_reads<C: Cluster>(cluster: Arc<C>, how: ReadKind, length: Duration) -> Phase {
    run_phase(1, length, move |_, _| {
        let cluster = cluster.clone();
        async move { cluster.read(how).await.map(|()| None) }
    })
    .await
}

async fn run_phase<F, Fut>(clients: u32, length: Duration, op: F) -> Phase
where
    F: Fn(u32, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Option<u64>, String>> + Send,
{
    let start = Instant::now();
    let end = start + length;
    let mut tasks = Vec::new();
    for client in 0..clients {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut phase = Phase {
                latency: histogram(),
                ops: 0,
                errors: 0,
                elapsed: Duration::ZERO,
                indexes: None,
                first_error: None,
            };
            let mut seq = 0;
            while Instant::now() < end {
                let t0 = Instant::now();
                match op(client, seq).await {
                    Ok(index) => {
                        phase
                            .latency
                            .saturating_record(t0.elapsed().as_micros() as u64);
                        phase.ops += 1;
                        if let Some(i) = index {
                            phase.indexes = Some(match phase.indexes {
                                None => (i, i),
                                Some((lo, hi)) => (lo.min(i), hi.max(i)),
                            });
                        }
                    }
                    Err(e) => {
                        phase.errors += 1;
                        phase.first_error.get_or_insert(e);
                        // Do not spin on a failing cluster.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                seq += 1;
            }
            phase
        }));
    }
    let mut total = Phase {
        latency: histogram(),
        ops: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        indexes: None,
        first_error: None,
    };
    for task in tasks {
        let Ok(p) = task.await else {
            total.errors += 1;
            continue;
        };
        let _ = total.latency.add(&p.latency);
        total.ops += p.ops;
        total.errors += p.errors;
        total.indexes = match (total.indexes, p.indexes) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (x, None) | (None, x) => x,
        };
        if total.first_error.is_none() {
            total.first_error = p.first_error;
        }
    }
    total.elapsed = start.elapsed();
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The point of the delay line: sub-millisecond hops stay sub-millisecond.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delay_line_is_sub_millisecond() {
        let delay = DelayLine::start();
        let mut h = histogram();
        for _ in 0..200 {
            let t0 = Instant::now();
            delay.sleep(Duration::from_micros(500)).await;
            h.saturating_record(t0.elapsed().as_micros() as u64);
        }
        delay.stop();
        assert!(h.min() >= 500, "woke early: {} µs", h.min());
        // tokio's own timer would give ≥ 1,000 µs here; allow for a loaded machine.
        assert!(
            h.value_at_quantile(0.5) < 900,
            "p50 {} µs",
            h.value_at_quantile(0.5)
        );
    }

    #[tokio::test]
    async fn disk_groups_flushes_in_order() {
        let delay = DelayLine::start();
        let disk = Disk::spawn(delay.clone(), Duration::from_millis(2));
        let done = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = oneshot::channel();
        let mut tx = Some(tx);
        for i in 0..10 {
            let done = done.clone();
            let last = if i == 9 { tx.take() } else { None };
            disk.flush(move || {
                done.lock().unwrap_or_else(|p| p.into_inner()).push(i);
                if let Some(tx) = last {
                    let _ = tx.send(());
                }
            });
        }
        rx.await.expect("the last flush completes");
        delay.stop();
        let order = done.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert_eq!(order, (0..10).collect::<Vec<_>>());
    }
}
