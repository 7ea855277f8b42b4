//! The leader's read lease: a linearizable read at the leader without a quorum round while a
//! quorum of voters is known to refuse any other candidate.
//!
//! The argument (docs/consistency.md, "Lease reads"): a voter that answered an AppendEntries of
//! leader vote V sent at `t` refuses votes until it has not heard from V's leader for
//! `election_timeout_max` (openraft's own leader lease, and [`VoteGuard`] here besides, which
//! also covers a voter that restarted). So once a quorum (the leader counts itself) answered
//! requests sent at or after `t`, no other leader can be elected before `t + election_timeout_max`
//! on the voters' clocks. The leader trusts `t + election_timeout_max × (1 − DRIFT) − MARGIN` on
//! its own monotonic clock: clock *rates* may differ by up to [`DRIFT`]; wall time plays no part.
//! A lease is tied to the leader's vote, so it never crosses a leader change.

use meridian_types::raft::Vote;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Largest relative difference between two nodes' monotonic clock rates the lease allows for.
pub const DRIFT: f64 = 0.1;
/// Time taken off every lease for what no clock measures: scheduling between an answer's
/// arrival and its record, a read's own processing.
pub const MARGIN: Duration = Duration::from_millis(20);

/// The monotonic clock a node's lease arithmetic reads: tokio's, at rate 1. The deterministic
/// simulation runs every node on one virtual clock; a rate other than 1 makes this node's lease
/// and vote guard see time pass faster or slower than the others do (`Timing::lease_clock_rate`),
/// which is how it tests the [`DRIFT`] assumption.
#[derive(Clone, Copy, Debug)]
pub struct LeaseClock {
    rate: f64,
    origin: Instant,
}

impl Default for LeaseClock {
    fn default() -> Self {
        Self::with_rate(1.0)
    }
}

impl LeaseClock {
    /// A clock that advances `rate` seconds per second of tokio's clock, from now on.
    pub fn with_rate(rate: f64) -> Self {
        Self {
            rate,
            origin: Instant::now(),
        }
    }

    /// What this clock read when tokio's clock read `at`.
    pub fn reading(&self, at: Instant) -> Instant {
        if self.rate == 1.0 {
            return at;
        }
        match at.checked_duration_since(self.origin) {
            Some(d) => self.origin + d.mul_f64(self.rate),
            None => self.origin - (self.origin - at).mul_f64(self.rate),
        }
    }

    pub fn now(&self) -> Instant {
        self.reading(Instant::now())
    }
}

/// One group's leader lease on this node, fed by the answers its peers send to this node's
/// AppendEntries (see `network::GroupPeer`).
pub struct LeaderLease {
    /// How long a voter refuses other candidates after hearing the leader.
    guard: Duration,
    clock: LeaseClock,
    /// The newest AppendEntries each voter answered for vote V: (V, when it was sent).
    acks: Mutex<BTreeMap<u64, (Vote, Instant)>>,
    /// A vote whose lease this node gave up (it handed its leadership on).
    relinquished: Mutex<Option<Vote>>,
}

impl LeaderLease {
    /// A lease for a group whose election timeout is at most `election_timeout_max`.
    pub fn new(election_timeout_max: Duration) -> Self {
        Self {
            guard: election_timeout_max,
            clock: LeaseClock::default(),
            acks: Mutex::default(),
            relinquished: Mutex::default(),
        }
    }

    /// This lease on `clock` instead of tokio's (the deterministic simulation's clock skew).
    pub fn with_clock(mut self, clock: LeaseClock) -> Self {
        self.clock = clock;
        self
    }

    /// Now, on the clock the lease's deadlines are in ([`Self::valid_until`]).
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// No lease for `vote` from now on, whatever acknowledgements come (a leadership transfer).
    pub fn relinquish(&self, vote: Vote) {
        *self.relinquished.lock().unwrap_or_else(|p| p.into_inner()) = Some(vote);
    }

    /// How long after a quorum's acknowledgement the leader may read alone.
    pub fn length(&self) -> Duration {
        self.guard.mul_f64(1.0 - DRIFT).saturating_sub(MARGIN)
    }

    /// `target` answered (accepting the vote) an AppendEntries of `vote` sent at `sent_at`
    /// (tokio's clock).
    pub fn acked(&self, target: u64, vote: Vote, sent_at: Instant) {
        let sent_at = self.clock.reading(sent_at);
        let mut acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        let newer = acks
            .get(&target)
            .is_none_or(|(v, at)| *v != vote || *at < sent_at);
        if newer {
            acks.insert(target, (vote, sent_at));
        }
    }

    /// Until when node `me`, leading with `vote` among `voters`, may serve reads alone (on
    /// this lease's clock: compare with [`Self::now`]); `None` when no quorum answered this
    /// vote yet.
    pub fn valid_until(&self, me: u64, vote: &Vote, voters: &BTreeSet<u64>) -> Option<Instant> {
        if !voters.contains(&me) {
            return None;
        }
        if *self.relinquished.lock().unwrap_or_else(|p| p.into_inner()) == Some(*vote) {
            return None;
        }
        let quorum = voters.len() / 2 + 1;
        let acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        let mut sent: Vec<Instant> = voters
            .iter()
            .filter(|v| **v != me)
            .filter_map(|v| acks.get(v).filter(|(av, _)| av == vote).map(|(_, at)| *at))
            .collect();
        // The leader counts itself: quorum − 1 others, the oldest of the newest ones decides.
        let others = quorum - 1;
        if others == 0 {
            return Some(self.clock.now() + self.length());
        }
        if sent.len() < others {
            return None;
        }
        sent.sort_unstable_by(|a, b| b.cmp(a));
        Some(sent[others - 1] + self.length())
    }
}

/// Makes this node keep the promise behind every lease it took part in: it refuses votes for
/// `election_timeout_max` after it last heard a leader, and — if it knew a leader before it
/// (re)started — for as long after its start, since a crash forgets when it last heard one.
pub struct VoteGuard {
    guard: Duration,
    clock: LeaseClock,
    started: Instant,
    knew_leader: bool,
    heard: Mutex<Option<Instant>>,
}

impl VoteGuard {
    /// `knew_leader`: the node's persisted vote is a committed one (it followed a leader).
    pub fn new(election_timeout_max: Duration, knew_leader: bool) -> Self {
        Self::started_at(election_timeout_max, knew_leader, Instant::now())
    }

    fn started_at(election_timeout_max: Duration, knew_leader: bool, started: Instant) -> Self {
        Self {
            guard: election_timeout_max,
            clock: LeaseClock::default(),
            started,
            knew_leader,
            heard: Mutex::default(),
        }
    }

    /// This guard on `clock` instead of tokio's (the deterministic simulation's clock skew).
    pub fn with_clock(mut self, clock: LeaseClock) -> Self {
        self.started = clock.reading(self.started);
        self.clock = clock;
        self
    }

    /// The leader's AppendEntries was accepted just now.
    pub fn heard_leader(&self) {
        self.heard_leader_at(self.clock.now());
    }

    fn heard_leader_at(&self, at: Instant) {
        *self.heard.lock().unwrap_or_else(|p| p.into_inner()) = Some(at);
    }

    /// Why a vote request must be refused now, if it must.
    pub fn refusal(&self) -> Option<String> {
        self.refusal_at(self.clock.now())
    }

    fn refusal_at(&self, now: Instant) -> Option<String> {
        if self.knew_leader && now < self.started + self.guard {
            return Some(format!(
                "restarted {} ms ago; refusing votes for {} ms after a restart (leader lease)",
                (now - self.started).as_millis(),
                self.guard.as_millis()
            ));
        }
        let heard = *self.heard.lock().unwrap_or_else(|p| p.into_inner());
        match heard {
            Some(at) if now < at + self.guard => Some(format!(
                "heard the leader {} ms ago; refusing votes for {} ms after that (leader lease)",
                (now - at).as_millis(),
                self.guard.as_millis()
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_types::raft::Vote;

    fn committed(term: u64, node: u64) -> Vote {
        Vote::new_committed(term, node)
    }

    #[test]
    fn a_skewed_clock_scales_the_time_since_it_started() {
        let ms = Duration::from_millis;
        let clock = LeaseClock::with_rate(0.5);
        let t0 = Instant::now();
        let later = t0 + ms(1000);
        // Each reading rounds its own nanoseconds: equal to within a microsecond.
        let half = clock.reading(later) - clock.reading(t0);
        assert!(
            half.abs_diff(ms(500)) <= Duration::from_micros(1),
            "{half:?}"
        );
        let before = clock.reading(t0) - ms(10);
        assert!(clock.reading(t0 - ms(20)) <= before + ms(1));
        let real = LeaseClock::default();
        assert_eq!(real.reading(later), later, "rate 1 is tokio's clock itself");
    }

    #[test]
    fn a_lease_needs_a_quorum_of_the_same_vote_and_runs_from_the_oldest_ack() {
        let lease = LeaderLease::new(Duration::from_millis(700));
        assert_eq!(lease.length(), Duration::from_millis(610));
        let voters: BTreeSet<u64> = [1, 2, 3, 4, 5].into();
        let v = committed(3, 1);
        assert_eq!(lease.valid_until(1, &v, &voters), None);
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(100);
        lease.acked(2, v, t0);
        assert_eq!(
            lease.valid_until(1, &v, &voters),
            None,
            "2 of 5 is no quorum"
        );
        lease.acked(3, v, t1);
        // Quorum 3 = me + 2 and 3: it runs from the older of their acks.
        assert_eq!(lease.valid_until(1, &v, &voters), Some(t0 + lease.length()));
        // An ack of an older vote does not count.
        lease.acked(4, committed(2, 4), t1);
        assert_eq!(lease.valid_until(1, &v, &voters), Some(t0 + lease.length()));
        lease.acked(4, v, t1);
        assert_eq!(lease.valid_until(1, &v, &voters), Some(t1 + lease.length()));
        // A later leader's vote has no lease from these acks; a node outside the voters none.
        assert_eq!(lease.valid_until(2, &committed(4, 2), &voters), None);
        assert_eq!(lease.valid_until(9, &v, &voters), None);
        // An older answer arriving late does not move the lease back.
        lease.acked(3, v, t0);
        assert_eq!(lease.valid_until(1, &v, &voters), Some(t1 + lease.length()));
        // A lone voter needs nobody.
        let alone: BTreeSet<u64> = [1].into();
        assert!(lease.valid_until(1, &v, &alone).is_some());
    }

    #[test]
    fn a_voter_refuses_votes_after_hearing_a_leader_and_after_a_restart() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let guard = VoteGuard::started_at(ms(700), false, t0);
        assert!(guard.refusal_at(t0).is_none(), "a fresh node votes at once");
        guard.heard_leader_at(t0 + ms(10));
        assert!(guard
            .refusal_at(t0 + ms(610))
            .is_some_and(|r| r.contains("heard the leader")));
        assert!(guard.refusal_at(t0 + ms(711)).is_none());

        let restarted = VoteGuard::started_at(ms(700), true, t0);
        assert!(restarted
            .refusal_at(t0 + ms(100))
            .is_some_and(|r| r.contains("restarted")));
        assert!(restarted.refusal_at(t0 + ms(701)).is_none());
    }

    #[test]
    fn a_relinquished_lease_is_gone_for_its_vote_only() {
        let lease = LeaderLease::new(Duration::from_millis(700));
        let voters: BTreeSet<u64> = [1, 2, 3].into();
        let v = committed(3, 1);
        lease.acked(2, v, Instant::now());
        assert!(lease.valid_until(1, &v, &voters).is_some());
        lease.relinquish(v);
        assert_eq!(lease.valid_until(1, &v, &voters), None);
        lease.acked(2, v, Instant::now());
        assert_eq!(
            lease.valid_until(1, &v, &voters),
            None,
            "acks do not bring it back"
        );
        let next = committed(5, 1);
        lease.acked(3, next, Instant::now());
        assert!(
            lease.valid_until(1, &next, &voters).is_some(),
            "a later term leads afresh"
        );
    }
}
