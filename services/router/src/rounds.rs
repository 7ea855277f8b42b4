//! Coalesced rounds. A round answers every waiter that joined *before it started*: a round
//! already running may have been sent before a waiter's own write, so the waiter joins the
//! next one. One driver starts rounds while anyone waits: the next one as soon as the last
//! finishes, or — when rounds are long (a sync across the WAN) — [`Rounds::spacing`] after the
//! last one started, so a waiter that just missed a round does not wait for it to come back
//! before its own is sent (rounds overlap; the shell bounds how many are in flight).

use std::time::Duration;

/// Shortest and longest gap [`Rounds::spacing`] gives between overlapping round starts.
pub const SPACING_MIN: Duration = Duration::from_millis(1);
pub const SPACING_MAX: Duration = Duration::from_millis(25);

/// What a caller of [`Rounds::join`] must do.
#[derive(Debug, PartialEq, Eq)]
pub enum Join {
    /// No round was running: the caller drives rounds (call [`Rounds::next_round`] until it
    /// returns `None`).
    Drive,
    /// A driver exists; the caller is answered by the next round it starts.
    Queued,
}

/// Waiters of type `W` (typically a reply channel) and whether a driver is running.
#[derive(Debug)]
pub struct Rounds<W> {
    driving: bool,
    waiting: Vec<W>,
    waiting_max: usize,
    per_round_max: usize,
    rounds_started: u64,
    answered: u64,
    /// Smoothed duration of a round in µs (0: none measured yet).
    round_us: u64,
}

impl<W> Rounds<W> {
    /// At most `waiting_max` waiters queue (more are refused); one round answers at most
    /// `per_round_max` of them (the rest take the following round).
    pub fn new(waiting_max: usize, per_round_max: usize) -> Self {
        Self {
            driving: false,
            waiting: Vec::new(),
            waiting_max: waiting_max.max(1),
            per_round_max: per_round_max.max(1),
            rounds_started: 0,
            answered: 0,
            round_us: 0,
        }
    }

    /// Records how long a finished round took (smoothed, ⅛ weight per round).
    pub fn finished(&mut self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        self.round_us = if self.round_us == 0 {
            us
        } else {
            self.round_us - self.round_us / 8 + us / 8
        };
    }

    /// How long after starting a round the driver may start the next while that one is still
    /// in flight: a thirty-second of a typical round, within [`SPACING_MIN`, `SPACING_MAX`]
    /// (`SPACING_MAX` until a round has been measured). A waiter then waits at most this long
    /// for its round to be sent (a read after a switch costs the round trip plus ~3 %), instead
    /// of up to a whole round; a group sees at most 32 rounds per round trip from one
    /// router, and only while reads wait (a round is one read-index call, answered under the
    /// leader's lease without a quorum round).
    pub fn spacing(&self) -> Duration {
        if self.round_us == 0 {
            return SPACING_MAX;
        }
        Duration::from_micros(self.round_us / 32).clamp(SPACING_MIN, SPACING_MAX)
    }

    /// Adds a waiter. `Err(w)` gives it back when the queue is full.
    pub fn join(&mut self, w: W) -> Result<Join, W> {
        if self.waiting.len() >= self.waiting_max {
            return Err(w);
        }
        self.waiting.push(w);
        if self.driving {
            Ok(Join::Queued)
        } else {
            self.driving = true;
            Ok(Join::Drive)
        }
    }

    /// For the driver: the waiters the round it starts now will answer, or `None` when nobody
    /// waits (the driver stops; the next `join` elects a new one).
    pub fn next_round(&mut self) -> Option<Vec<W>> {
        if self.waiting.is_empty() {
            self.driving = false;
            return None;
        }
        let n = self.waiting.len().min(self.per_round_max);
        self.rounds_started += 1;
        self.answered += n as u64;
        Some(self.waiting.drain(..n).collect())
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_driving(&self) -> bool {
        self.driving
    }

    /// Rounds started so far.
    pub fn rounds_started(&self) -> u64 {
        self.rounds_started
    }

    /// Waiters handed to a round so far.
    pub fn answered(&self) -> u64 {
        self.answered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_joiner_drives_others_queue() {
        let mut r = Rounds::new(10, 10);
        assert_eq!(r.join(1), Ok(Join::Drive));
        assert_eq!(r.join(2), Ok(Join::Queued));
        assert!(r.is_driving());
        assert_eq!(r.next_round(), Some(vec![1, 2]));
        assert_eq!(r.next_round(), None);
        assert!(!r.is_driving());
        assert_eq!(r.join(3), Ok(Join::Drive));
    }

    /// A waiter that arrives while a round runs is not answered by it: it is in the next.
    #[test]
    fn joiner_during_a_round_takes_the_next_one() {
        let mut r = Rounds::new(10, 10);
        assert_eq!(r.join("a"), Ok(Join::Drive));
        let first = r.next_round();
        assert_eq!(first, Some(vec!["a"]));
        // round 1 is in flight now
        assert_eq!(r.join("b"), Ok(Join::Queued));
        assert_eq!(r.join("c"), Ok(Join::Queued));
        assert_eq!(r.next_round(), Some(vec!["b", "c"]));
        assert_eq!(r.next_round(), None);
        assert_eq!(r.rounds_started(), 2);
        assert_eq!(r.answered(), 3);
    }

    #[test]
    fn full_queue_refuses() {
        let mut r = Rounds::new(2, 10);
        assert!(r.join(1).is_ok());
        assert!(r.join(2).is_ok());
        assert_eq!(r.join(3), Err(3));
        assert_eq!(r.waiting(), 2);
    }

    #[test]
    fn per_round_cap_splits_rounds_in_arrival_order() {
        let mut r = Rounds::new(100, 3);
        for i in 0..7 {
            assert!(r.join(i).is_ok());
        }
        assert_eq!(r.next_round(), Some(vec![0, 1, 2]));
        assert_eq!(r.next_round(), Some(vec![3, 4, 5]));
        assert_eq!(r.next_round(), Some(vec![6]));
        assert_eq!(r.next_round(), None);
    }

    /// Many joiners, one driver: rounds ≪ waiters.
    #[test]
    fn coalescing_ratio() {
        let mut r = Rounds::new(10_000, 10_000);
        let mut drivers = 0;
        for i in 0..100 {
            if r.join(i) == Ok(Join::Drive) {
                drivers += 1;
            }
        }
        assert_eq!(drivers, 1);
        while r.next_round().is_some() {}
        assert_eq!(r.rounds_started(), 1);
        assert_eq!(r.answered(), 100);
    }

    #[test]
    fn spacing_is_a_thirty_second_of_a_round_within_bounds() {
        let mut r: Rounds<u8> = Rounds::new(1, 1);
        assert_eq!(r.spacing(), SPACING_MAX, "unmeasured: the cautious end");
        r.finished(Duration::from_millis(160));
        assert_eq!(r.spacing(), Duration::from_millis(5));
        // Smoothed: one fast round moves it by an eighth, not all the way.
        r.finished(Duration::from_millis(0));
        assert!(r.spacing() > Duration::from_millis(4), "{:?}", r.spacing());
        for _ in 0..100 {
            r.finished(Duration::from_micros(300));
        }
        assert_eq!(r.spacing(), SPACING_MIN, "intra-region rounds");
        for _ in 0..100 {
            r.finished(Duration::from_millis(960));
        }
        assert_eq!(r.spacing(), SPACING_MAX, "a 960 ms round trip");
    }

    #[test]
    fn zero_limits_are_raised_to_one() {
        let mut r = Rounds::new(0, 0);
        assert_eq!(r.join(1), Ok(Join::Drive));
        assert_eq!(r.join(2), Err(2));
        assert_eq!(r.next_round(), Some(vec![1]));
    }
}
