//! Lease deadlines and lock-delays as the group leader sees them.

use meridian_types::LeaseRecord;
use std::collections::{BTreeSet, HashMap};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackerConfig {
    /// A lease idle for at least half its TTL is checkpointed whenever this much more idle
    /// time has gone unrecorded.
    pub checkpoint_every_ms: u64,
    /// Most leases one `Expire` or `Checkpoint` command carries.
    pub batch_max: usize,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            checkpoint_every_ms: 1_000,
            batch_max: 4_096,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Tracked {
    ttl_ms: u64,
    refreshed: u64,
    /// When this leader saw the last grant/refresh, or took over.
    observed_ms: u64,
    /// Idle time already proved (committed) at `observed_ms`.
    idle_base_ms: u64,
    /// Idle time committed so far (base plus this leader's checkpoints).
    idle_recorded_ms: u64,
}

impl Tracked {
    fn deadline(&self) -> u64 {
        self.observed_ms + self.ttl_ms.saturating_sub(self.idle_base_ms)
    }

    fn idle_now(&self, now: u64) -> u64 {
        self.idle_base_ms + now.saturating_sub(self.observed_ms)
    }
}

/// Deadlines of a group's leases and lock-delays on the leader's monotonic clock.
#[derive(Debug, Default)]
pub struct ExpiryTracker {
    config: TrackerConfig,
    leases: HashMap<u64, Tracked>,
    /// (deadline, id): the next lease to run out first.
    order: BTreeSet<(u64, u64)>,
    /// (lock, sequence) → when its lock-delay ends.
    delays: HashMap<(String, u64), u64>,
}

impl ExpiryTracker {
    pub fn new(config: TrackerConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// A new leader's start: every lease gets `ttl - idle` from `now`, every lock-delay its
    /// whole delay from `now`.
    pub fn take_over<'a>(
        &mut self,
        now: u64,
        leases: impl IntoIterator<Item = &'a LeaseRecord>,
        delays: impl IntoIterator<Item = (String, u64, u64)>,
    ) {
        self.leases.clear();
        self.order.clear();
        self.delays.clear();
        for r in leases {
            self.insert(now, r);
        }
        for (name, seq, delay_ms) in delays {
            self.delays.insert((name, seq), now + delay_ms);
        }
    }

    fn insert(&mut self, now: u64, r: &LeaseRecord) {
        let t = Tracked {
            ttl_ms: r.ttl_ms,
            refreshed: r.refreshed,
            observed_ms: now,
            idle_base_ms: r.idle_ms,
            idle_recorded_ms: r.idle_ms,
        };
        self.order.insert((t.deadline(), r.id));
        self.leases.insert(r.id, t);
    }

    /// The applied record of a lease changed (granted, refreshed, checkpointed) at or before
    /// `now`. A new refresh restarts its time; a checkpoint only records idle time.
    pub fn observe(&mut self, now: u64, r: &LeaseRecord) {
        match self.leases.get_mut(&r.id) {
            Some(t) if t.refreshed == r.refreshed => {
                t.idle_recorded_ms = t.idle_recorded_ms.max(r.idle_ms);
            }
            _ => {
                self.forget(r.id);
                self.insert(now, r);
            }
        }
    }

    /// The lease ended (expired, revoked).
    pub fn forget(&mut self, id: u64) {
        if let Some(t) = self.leases.remove(&id) {
            self.order.remove(&(t.deadline(), id));
        }
    }

    /// Leases whose deadline passed: (id, refreshed revision), at most a batch.
    pub fn due(&self, now: u64) -> Vec<(u64, u64)> {
        self.order
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .take(self.config.batch_max)
            .filter_map(|(_, id)| self.leases.get(id).map(|t| (*id, t.refreshed)))
            .collect()
    }

    /// Milliseconds until the next lease deadline (for the shell's sleep), if any lease.
    pub fn next_deadline(&self) -> Option<u64> {
        self.order.first().map(|(d, _)| *d)
    }

    /// Idle time to commit now: (id, refreshed, idle_ms) for leases idle at least half their
    /// TTL with at least `checkpoint_every_ms` of it unrecorded. Marks them recorded.
    pub fn checkpoints(&mut self, now: u64) -> Vec<(u64, u64, u64)> {
        let every = self.config.checkpoint_every_ms;
        let mut out = Vec::new();
        for (id, t) in self.leases.iter_mut() {
            if out.len() >= self.config.batch_max {
                break;
            }
            let idle = t.idle_now(now);
            if idle >= t.ttl_ms / 2 && idle >= t.idle_recorded_ms + every {
                t.idle_recorded_ms = idle;
                out.push((*id, t.refreshed, idle));
            }
        }
        out.sort_unstable();
        out
    }

    /// What is left of a lease on this leader's clock.
    pub fn remaining(&self, id: u64, now: u64) -> Option<u64> {
        self.leases
            .get(&id)
            .map(|t| t.deadline().saturating_sub(now))
    }

    /// A lock-delay placeholder appeared (expired holder): it ends `delay_ms` after `now`.
    /// Seeing it again changes nothing.
    pub fn observe_delay(&mut self, now: u64, name: &str, seq: u64, delay_ms: u64) {
        self.delays
            .entry((name.to_string(), seq))
            .or_insert(now + delay_ms);
    }

    /// Keeps only these lock-delays of lock `name` (the others ended).
    pub fn retain_delays(&mut self, name: &str, present: &[u64]) {
        self.delays
            .retain(|(n, seq), _| n != name || present.contains(seq));
    }

    pub fn forget_delay(&mut self, name: &str, seq: u64) {
        self.delays.remove(&(name.to_string(), seq));
    }

    /// Lock-delays that are over: (lock, sequence).
    pub fn due_delays(&self, now: u64) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = self
            .delays
            .iter()
            .filter(|(_, end)| **end <= now)
            .map(|((name, seq), _)| (name.clone(), *seq))
            .collect();
        out.sort();
        out
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Clock, ManualClock};

    fn record(id: u64, ttl_ms: u64, refreshed: u64, idle_ms: u64) -> LeaseRecord {
        LeaseRecord {
            id,
            ttl_ms,
            refreshed,
            idle_ms,
        }
    }

    /// A lease runs out exactly a TTL after the leader saw its last refresh, not before.
    #[test]
    fn expires_a_ttl_after_the_last_refresh() {
        let clock = ManualClock::default();
        let mut t = ExpiryTracker::new(TrackerConfig::default());
        t.observe(clock.now_ms(), &record(1, 5_000, 10, 0));
        clock.advance(3_000);
        t.observe(clock.now_ms(), &record(1, 5_000, 20, 0));
        clock.advance(4_999);
        assert!(t.due(clock.now_ms()).is_empty());
        assert_eq!(t.remaining(1, clock.now_ms()), Some(1));
        clock.advance(1);
        assert_eq!(t.due(clock.now_ms()), vec![(1, 20)]);
    }

    /// A new leader gives a full TTL when nothing was checkpointed, `ttl - idle` otherwise.
    #[test]
    fn takeover_gives_what_checkpoints_leave() {
        let mut t = ExpiryTracker::new(TrackerConfig::default());
        let leases = [record(1, 10_000, 5, 0), record(2, 10_000, 5, 7_000)];
        t.take_over(100_000, &leases, Vec::new());
        assert_eq!(t.remaining(1, 100_000), Some(10_000));
        assert_eq!(t.remaining(2, 100_000), Some(3_000));
        assert_eq!(t.due(103_000), vec![(2, 5)]);
    }

    /// Repeated elections do not keep a dead client's lease alive: each leader that lives a
    /// few checkpoint intervals commits idle time, and the next one gives less.
    #[test]
    fn elections_do_not_keep_a_dead_lease_alive() {
        let cfg = TrackerConfig::default();
        let mut committed = record(7, 10_000, 3, 0);
        let mut now = 0u64;
        let mut elections = 0;
        loop {
            // A leader takes over, lives 6 s (less than the TTL), checkpointing each 100 ms.
            let mut t = ExpiryTracker::new(cfg);
            t.take_over(now, [&committed], Vec::new());
            let end = now + 6_000;
            let mut expired = false;
            while now < end {
                now += 100;
                for (id, refreshed, idle) in t.checkpoints(now) {
                    assert_eq!((id, refreshed), (7, 3));
                    committed.idle_ms = idle; // committed through Raft
                    t.observe(now, &committed);
                }
                if !t.due(now).is_empty() {
                    expired = true;
                    break;
                }
            }
            if expired {
                break;
            }
            elections += 1;
            assert!(elections < 10, "the lease outlived {elections} elections");
        }
        // Dead since 0 with a 10 s TTL: gone after at most two 6 s leaderships plus slack.
        assert!(now >= 10_000, "expired early, at {now} ms");
        assert!(
            now <= 10_000 + 2 * cfg.checkpoint_every_ms + 6_000,
            "expired at {now} ms"
        );
    }

    /// A refresh stops checkpoints and restarts the time; live leases are rarely checkpointed.
    #[test]
    fn checkpoints_only_idle_leases() {
        let mut t = ExpiryTracker::new(TrackerConfig::default());
        t.observe(0, &record(1, 9_000, 1, 0));
        assert!(t.checkpoints(4_000).is_empty(), "idle under half the TTL");
        assert_eq!(t.checkpoints(4_500), vec![(1, 1, 4_500)]);
        assert!(
            t.checkpoints(5_000).is_empty(),
            "less than a second since the last"
        );
        t.observe(5_000, &record(1, 9_000, 2, 0));
        assert!(t.checkpoints(8_000).is_empty());
        assert_eq!(t.remaining(1, 8_000), Some(6_000));
        t.forget(1);
        assert!(t.due(1_000_000).is_empty());
    }

    /// Lock-delays end `delay` after they were seen, or after a takeover.
    #[test]
    fn lock_delays() {
        let mut t = ExpiryTracker::new(TrackerConfig::default());
        t.observe_delay(1_000, "/l", 4, 500);
        t.observe_delay(1_400, "/l", 4, 500); // seen again: unchanged
        assert!(t.due_delays(1_499).is_empty());
        assert_eq!(t.due_delays(1_500), vec![("/l".to_string(), 4)]);
        t.take_over(2_000, [], vec![("/l".into(), 4, 500)]);
        assert!(t.due_delays(2_499).is_empty());
        t.forget_delay("/l", 4);
        assert!(t.due_delays(10_000).is_empty());
    }

    /// The tracker reads only the clock it is given: a wall-clock jump cannot expire anything.
    #[test]
    fn only_the_injected_clock_counts() {
        let clock = ManualClock::default();
        let mut t = ExpiryTracker::new(TrackerConfig::default());
        t.observe(clock.now_ms(), &record(1, 2_000, 1, 0));
        // However far the wall clock jumps, the monotonic clock moved 1.9 s.
        clock.advance(1_900);
        assert!(t.due(clock.now_ms()).is_empty());
    }
}
