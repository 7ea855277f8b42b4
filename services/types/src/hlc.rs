//! Hybrid logical clocks (issue 19's first step; docs/closed-timestamps.md).
//!
//! A [`Timestamp`] is a physical part (microseconds since the Unix epoch, read from the wall
//! clock by the caller) and a logical counter. An [`Hlc`] hands out timestamps that never go
//! back and that stay close to physical time (Kulkarni et al., "Logical Physical Clocks",
//! 2014): every local event and every message received advances it. A message whose timestamp
//! is further ahead of this node's physical clock than the configured maximum offset is
//! refused, and the clock is left as it was: taking it would push this node's timestamps past
//! what the offset bound promises to every reader, so the node stops serving timestamped
//! operations rather than break that promise, and says why ([`OffsetExceeded`]).
//!
//! No IO: the caller passes the physical time in, so the deterministic simulation can skew
//! each node's clock and tests can drive it by hand.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A hybrid logical clock timestamp; ordered by physical time, then by the logical counter.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Timestamp {
    /// Microseconds since the Unix epoch.
    pub physical: u64,
    pub logical: u32,
}

impl Timestamp {
    pub const ZERO: Timestamp = Timestamp {
        physical: 0,
        logical: 0,
    };

    pub const fn new(physical: u64, logical: u32) -> Self {
        Self { physical, logical }
    }

    /// The largest timestamp (`u64::MAX` µs is some 584,000 years after 1970: no clock reaches
    /// it; only a crafted timestamp can, and the server refuses those before they are used).
    pub const MAX: Timestamp = Timestamp {
        physical: u64::MAX,
        logical: u32::MAX,
    };

    /// The smallest timestamp above `self`; [`Timestamp::MAX`] stays itself (never lower).
    pub fn next(self) -> Self {
        match self.logical.checked_add(1) {
            Some(logical) => Self {
                physical: self.physical,
                logical,
            },
            None if self.physical == u64::MAX => Self::MAX,
            None => Self {
                physical: self.physical + 1,
                logical: 0,
            },
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:06},{}",
            self.physical / 1_000_000,
            self.physical % 1_000_000,
            self.logical
        )
    }
}

/// A received timestamp ahead of this node's physical clock by more than the maximum offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "a peer's clock is {ahead_us} µs ahead of this node's, more than the configured maximum \
     clock offset of {max_offset_us} µs: this node serves no timestamped operation until the \
     clocks agree again (check NTP/chrony on both nodes) — received {remote}, local physical \
     time {local_physical_us}"
)]
pub struct OffsetExceeded {
    pub remote: Timestamp,
    pub local_physical_us: u64,
    pub ahead_us: u64,
    pub max_offset_us: u64,
}

/// One node's hybrid logical clock.
#[derive(Clone, Debug)]
pub struct Hlc {
    last: Timestamp,
    max_offset_us: u64,
}

impl Hlc {
    /// A clock that refuses timestamps more than `max_offset_us` ahead of its physical time.
    pub fn new(max_offset_us: u64) -> Self {
        Self {
            last: Timestamp::ZERO,
            max_offset_us,
        }
    }

    /// The last timestamp handed out or taken in (never decreases).
    pub fn last(&self) -> Timestamp {
        self.last
    }

    /// A timestamp for a local event (or a message to send) at physical time `physical_us`:
    /// above every timestamp this clock handed out or took in before.
    pub fn now(&mut self, physical_us: u64) -> Timestamp {
        self.advance_past(self.last, physical_us)
    }

    /// Takes in a received timestamp at physical time `physical_us` and returns the timestamp
    /// of the receipt: above both `remote` and everything this clock handed out before. A
    /// `remote` more than the maximum offset ahead of `physical_us` is refused and the clock
    /// does not move.
    pub fn update(
        &mut self,
        remote: Timestamp,
        physical_us: u64,
    ) -> Result<Timestamp, OffsetExceeded> {
        let ahead = remote.physical.saturating_sub(physical_us);
        if ahead > self.max_offset_us {
            return Err(OffsetExceeded {
                remote,
                local_physical_us: physical_us,
                ahead_us: ahead,
                max_offset_us: self.max_offset_us,
            });
        }
        Ok(self.advance_past(self.last.max(remote), physical_us))
    }

    /// Moves the clock to the smallest timestamp above `top` that is at least physical time.
    fn advance_past(&mut self, top: Timestamp, physical_us: u64) -> Timestamp {
        self.last = if physical_us > top.physical {
            Timestamp::new(physical_us, 0)
        } else {
            top.next()
        };
        self.last
    }
}

/// What a group's leader writes into an entry (docs/closed-timestamps.md): the commit
/// timestamp it chose and, optionally, a promise that no later entry of the group commits at or
/// below `closed`. Promises travel only inside the log, so every later leader has them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub at: Timestamp,
    pub closed: Option<Timestamp>,
}

/// What a replica knows of its group's timestamps from the entries it applied: the last commit
/// timestamp and the largest promise. Persisted with the state it describes (and carried in
/// snapshots), so a restarted or newly caught-up replica starts from it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamps {
    pub applied: Timestamp,
    pub closed: Timestamp,
}

impl Stamps {
    /// Applies the next stamped entry; returns its commit timestamp: the leader's stamp raised
    /// above every earlier entry's commit timestamp and every promise already applied. This
    /// depends on the log alone, so every replica computes the same timestamp, commit
    /// timestamps increase with the log, and no entry commits at or below a promise made
    /// before it — whatever order a leader's concurrent stamps reached the log in, and whatever
    /// a new leader knew of its predecessors' promises.
    pub fn apply(&mut self, stamp: &Stamp) -> Timestamp {
        let at = stamp.at.max(self.applied.next()).max(self.closed.next());
        self.applied = at;
        if let Some(closed) = stamp.closed {
            self.closed = self.closed.max(closed);
        }
        at
    }

    /// Applies the next entry that carries no stamp (made without a proposer: a
    /// learner-turned-leader's write, a read-index barrier): it commits just above everything
    /// before it, so every entry that changes state has a commit timestamp and none lands at
    /// or below a promise.
    pub fn apply_unstamped(&mut self) -> Timestamp {
        self.apply(&Stamp {
            at: Timestamp::ZERO,
            closed: None,
        })
    }

    /// The highest timestamp this replica knows no future entry of the group can commit at or
    /// below: its last commit timestamp or its largest promise.
    pub fn closed(&self) -> Timestamp {
        self.applied.max(self.closed)
    }
}

/// A node's physical time: microseconds since the Unix epoch. The wall clock in production;
/// simulated time (with the simulation's skew) in the deterministic simulation. It only feeds
/// timestamps — timeouts and expiry stay on monotonic clocks.
pub type Physical = std::sync::Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system's wall clock as [`Physical`] time.
pub fn system_physical() -> Physical {
    std::sync::Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    })
}

/// A node's monotonic time: microseconds since an arbitrary start, never stepped (tokio's
/// clock in a node, so the deterministic simulation's virtual time there).
pub type Monotonic = Physical;

/// A node's hybrid logical clock over its physical time, shared by its groups.
///
/// The physical time it stamps with is the wall clock *held to the monotonic clock's pace*: a
/// reading more than half the maximum clock offset ahead of where the last one plus the
/// monotonic time since would put it (an NTP step, an operator's `date -s`, a VM resumed with a
/// stale clock corrected at once) is not taken; the clock goes on at the monotonic pace from
/// the last reading instead. Otherwise a leader whose clock jumped a minute ahead would stamp
/// commits and close timestamps a minute ahead until the clock check noticed (up to a probe
/// round), and its group would commit in the future for that minute. A jump back is taken (the
/// hybrid clock never goes back anyway). The clock check ([`NodeClock::wall_us`] against the
/// peers') decides when a held-back wall clock is right after all: [`NodeClock::accept_wall`].
pub struct NodeClock {
    hlc: std::sync::Mutex<Hlc>,
    physical: Physical,
    monotonic: Monotonic,
    pace: std::sync::Mutex<Pace>,
    /// Half the maximum offset: the largest step ahead of the monotonic pace taken at once.
    jump_tolerance_us: u64,
}

/// The last physical time handed out, against the monotonic time it was read at.
#[derive(Default)]
struct Pace {
    last: Option<(u64, u64)>,
    /// How far the wall clock was ahead of the time handed out at the last reading.
    held_back_us: u64,
}

/// A reading of the wall clock with the monotonic time it was taken at: what the clock check
/// probes with, and what [`NodeClock::accept_wall`] accepts (that reading, not whatever the
/// wall clock says later).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WallReading {
    pub wall_us: u64,
    pub monotonic_us: u64,
}

impl NodeClock {
    pub fn new(max_offset_us: u64, physical: Physical, monotonic: Monotonic) -> Self {
        Self {
            hlc: std::sync::Mutex::new(Hlc::new(max_offset_us)),
            physical,
            monotonic,
            pace: std::sync::Mutex::new(Pace::default()),
            jump_tolerance_us: max_offset_us / 2,
        }
    }

    /// The physical time now, µs since the Unix epoch: the wall clock, unless it jumped ahead
    /// of the monotonic clock's pace by more than half the maximum offset (then held back).
    pub fn physical_us(&self) -> u64 {
        let tolerance = self.jump_tolerance_us;
        let mut pace = self.pace.lock().unwrap_or_else(|p| p.into_inner());
        let wall = (self.physical)();
        let mono = (self.monotonic)();
        let out = match pace.last {
            Some((last, at)) => {
                let paced = last.saturating_add(mono.saturating_sub(at));
                if wall > paced.saturating_add(tolerance) {
                    paced
                } else {
                    wall
                }
            }
            None => wall,
        };
        pace.held_back_us = wall.saturating_sub(out);
        pace.last = Some((out, mono));
        out
    }

    /// The wall clock as it reads now, held back or not: what the clock check compares with
    /// the peers'.
    pub fn wall_us(&self) -> u64 {
        (self.physical)()
    }

    /// The wall clock now, with the monotonic time of the reading.
    pub fn read_wall(&self) -> WallReading {
        WallReading {
            wall_us: (self.physical)(),
            monotonic_us: (self.monotonic)(),
        }
    }

    /// How far ahead of the time handed out the wall clock stood at the last reading (0 when
    /// it is followed).
    pub fn held_back_us(&self) -> u64 {
        self.pace
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .held_back_us
    }

    /// As [`NodeClock::held_back_us`], from a reading taken now (a node that stamps nothing
    /// would otherwise report its last reading's, however old).
    pub fn held_back_now_us(&self) -> u64 {
        self.physical_us();
        self.held_back_us()
    }

    /// The clock check found `checked` right (most of the cluster agrees with it): the time
    /// handed out follows on from it at the monotonic pace, so the wall clock is followed again
    /// — up to a jump after `checked`, which is held back like any other.
    pub fn accept_wall(&self, checked: WallReading) {
        let mut pace = self.pace.lock().unwrap_or_else(|p| p.into_inner());
        pace.last = Some((checked.wall_us, checked.monotonic_us));
        pace.held_back_us = 0;
    }

    /// The largest offset between two nodes' clocks this clock assumes.
    pub fn max_offset_us(&self) -> u64 {
        self.hlc
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .max_offset_us
    }

    /// A timestamp above every one this clock gave before (a local event).
    pub fn now(&self) -> Timestamp {
        let physical = self.physical_us();
        self.hlc
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .now(physical)
    }
}

impl fmt::Debug for NodeClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeClock").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(physical: u64, closed: Option<u64>) -> Stamp {
        Stamp {
            at: Timestamp::new(physical, 0),
            closed: closed.map(|c| Timestamp::new(c, 0)),
        }
    }

    #[test]
    fn applied_stamps_increase_with_the_log_and_stay_above_every_promise() {
        let mut s = Stamps::default();
        assert_eq!(s.apply(&stamp(100, None)), Timestamp::new(100, 0));
        // A stamp that reached the log late (concurrent proposals) still commits above.
        assert_eq!(s.apply(&stamp(90, None)), Timestamp::new(100, 1));
        // A promise far ahead (global reads): the entry carrying it commits at its own stamp,
        // every later one above the promise.
        assert_eq!(s.apply(&stamp(110, Some(500))), Timestamp::new(110, 0));
        assert_eq!(s.closed(), Timestamp::new(500, 0));
        assert_eq!(s.apply(&stamp(120, None)), Timestamp::new(500, 1));
        // An older promise changes nothing.
        assert_eq!(s.apply(&stamp(130, Some(50))), Timestamp::new(500, 2));
        assert_eq!(s.closed(), Timestamp::new(500, 2));
        // An entry without a stamp commits just above.
        assert_eq!(s.apply_unstamped(), Timestamp::new(500, 3));
    }

    #[test]
    fn a_node_clock_follows_its_physical_time_and_never_goes_back() {
        let t = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1_000));
        let source = t.clone();
        let mono = t.clone();
        let clock = NodeClock::new(
            500_000,
            std::sync::Arc::new(move || source.load(std::sync::atomic::Ordering::Relaxed)),
            std::sync::Arc::new(move || mono.load(std::sync::atomic::Ordering::Relaxed)),
        );
        assert_eq!(clock.now(), Timestamp::new(1_000, 0));
        t.store(400, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(clock.now(), Timestamp::new(1_000, 1));
        t.store(2_000, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(clock.now(), Timestamp::new(2_000, 0));
        let wall = system_physical()();
        assert!(wall > 1_700_000_000_000_000, "the wall clock in µs: {wall}");
    }

    /// A wall clock that jumps a minute ahead is held to the monotonic clock's pace (so
    /// nothing is stamped a minute ahead) until the clock check accepts it; one that jumps back
    /// is followed; a step within half the maximum offset is taken at once.
    #[test]
    fn a_wall_clock_jump_ahead_is_held_to_the_monotonic_pace_until_accepted() {
        use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
        let wall = std::sync::Arc::new(AtomicU64::new(1_000_000_000));
        let mono = std::sync::Arc::new(AtomicU64::new(0));
        let (w, m) = (wall.clone(), mono.clone());
        let clock = NodeClock::new(
            250_000,
            std::sync::Arc::new(move || w.load(Relaxed)),
            std::sync::Arc::new(move || m.load(Relaxed)),
        );
        assert_eq!(clock.physical_us(), 1_000_000_000);
        // 10 ms later on both clocks, and a step of 100 ms (< half the offset): followed.
        wall.store(1_000_110_000, Relaxed);
        mono.store(10_000, Relaxed);
        assert_eq!(clock.physical_us(), 1_000_110_000);
        assert_eq!(clock.held_back_us(), 0);
        // The wall clock jumps 60 s ahead while 1 ms passes: held to the monotonic pace.
        wall.store(1_060_111_000, Relaxed);
        mono.store(11_000, Relaxed);
        assert_eq!(clock.physical_us(), 1_000_111_000);
        assert_eq!(clock.held_back_us(), 60_000_000);
        assert_eq!(clock.now(), Timestamp::new(1_000_111_000, 0));
        assert_eq!(
            clock.wall_us(),
            1_060_111_000,
            "the clock check sees the jump"
        );
        // It stays held back as time goes on.
        wall.store(1_060_611_000, Relaxed);
        mono.store(511_000, Relaxed);
        assert_eq!(clock.physical_us(), 1_000_611_000);
        // The clock check found the wall clock (read as the round began) right after all:
        // followed from there.
        let checked = clock.read_wall();
        assert_eq!(clock.held_back_now_us(), 60_000_000);
        clock.accept_wall(checked);
        assert_eq!(clock.now(), Timestamp::new(1_060_611_000, 0));
        assert_eq!(clock.held_back_us(), 0);
        // A second jump, during a round, is not what that round checked: still held.
        let checked = clock.read_wall();
        wall.store(1_120_612_000, Relaxed);
        mono.store(512_000, Relaxed);
        clock.accept_wall(checked);
        assert_eq!(clock.now(), Timestamp::new(1_060_612_000, 0));
        assert_eq!(clock.held_back_us(), 60_000_000);
        // Once the wall clock is back at the pace, it is followed again.
        wall.store(1_060_613_000, Relaxed);
        mono.store(513_000, Relaxed);
        assert_eq!(clock.now(), Timestamp::new(1_060_613_000, 0));
        assert_eq!(clock.held_back_us(), 0);
        // An acceptance lets no later jump through: accepted, then a jump.
        clock.accept_wall(clock.read_wall());
        wall.store(1_160_614_000, Relaxed);
        mono.store(514_000, Relaxed);
        assert_eq!(clock.physical_us(), 1_060_614_000);
        // A jump back is followed (timestamps never go back: the logical part carries them).
        wall.store(1_000_700_000, Relaxed);
        mono.store(600_000, Relaxed);
        assert_eq!(clock.physical_us(), 1_000_700_000);
        assert_eq!(clock.now(), Timestamp::new(1_060_613_000, 1));
    }

    #[test]
    fn local_events_follow_physical_time_and_never_go_back() {
        let mut c = Hlc::new(500_000);
        assert_eq!(c.now(1_000), Timestamp::new(1_000, 0));
        // The physical clock stepped back (NTP): the logical part carries the order.
        assert_eq!(c.now(900), Timestamp::new(1_000, 1));
        assert_eq!(c.now(1_000), Timestamp::new(1_000, 2));
        assert_eq!(c.now(1_001), Timestamp::new(1_001, 0));
    }

    #[test]
    fn a_receipt_is_above_the_message_and_the_local_clock() {
        let mut c = Hlc::new(500_000);
        c.now(1_000);
        let t = c.update(Timestamp::new(1_200, 7), 1_100).unwrap();
        assert_eq!(t, Timestamp::new(1_200, 8));
        // An older message still moves the clock forward.
        let t = c.update(Timestamp::new(50, 3), 1_150).unwrap();
        assert_eq!(t, Timestamp::new(1_200, 9));
        // Physical time overtakes both: the logical part resets.
        assert_eq!(
            c.update(Timestamp::new(1_200, 9), 2_000).unwrap(),
            Timestamp::new(2_000, 0)
        );
    }

    #[test]
    fn a_timestamp_beyond_the_offset_is_refused_and_the_clock_stays() {
        let mut c = Hlc::new(250);
        c.now(1_000);
        let err = c.update(Timestamp::new(1_251, 0), 1_000).unwrap_err();
        assert_eq!(err.ahead_us, 251);
        assert_eq!(err.max_offset_us, 250);
        assert!(
            err.to_string().contains("maximum clock offset of 250"),
            "{err}"
        );
        assert_eq!(c.last(), Timestamp::new(1_000, 0));
        // Exactly at the bound is accepted.
        assert_eq!(
            c.update(Timestamp::new(1_250, 0), 1_000).unwrap(),
            Timestamp::new(1_250, 1)
        );
    }

    #[test]
    fn the_logical_counter_overflows_into_the_next_microsecond() {
        let t = Timestamp::new(10, u32::MAX);
        assert_eq!(t.next(), Timestamp::new(11, 0));
        assert!(t.next() > t);
        assert_eq!(Timestamp::MAX.next(), Timestamp::MAX);
        assert_eq!(
            Timestamp::new(u64::MAX, 7).next(),
            Timestamp::new(u64::MAX, 8)
        );
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum Step {
            /// The physical clock moves by this many µs (either way: NTP steps back too).
            Tick(i32),
            Now,
            Receive {
                ahead: i32,
                logical: u32,
            },
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                (-2_000i32..5_000).prop_map(Step::Tick),
                Just(Step::Now),
                (-5_000i32..5_000, any::<u32>())
                    .prop_map(|(ahead, logical)| Step::Receive { ahead, logical }),
            ]
        }

        proptest! {
            /// Whatever the leader stamped and promised, in whatever order it reached the log:
            /// each entry commits above the one before, at or above its stamp and above every
            /// earlier promise; and a replica that starts from the state after any entry
            /// gives the later ones the same commit timestamps.
            #[test]
            fn every_replica_gives_an_entry_the_same_commit_timestamp_above_every_promise(
                log in proptest::collection::vec(
                    (0u64..1_000, proptest::option::of(0u64..2_000)),
                    1..60,
                ),
                k in 0usize..60,
            ) {
                let log: Vec<Stamp> = log
                    .into_iter()
                    .map(|(at, closed)| Stamp {
                        at: Timestamp::new(at, 0),
                        closed: closed.map(|c| Timestamp::new(c, 0)),
                    })
                    .collect();
                let mut a = Stamps::default();
                let ats: Vec<Timestamp> = log.iter().map(|s| a.apply(s)).collect();
                let k = k.min(log.len());
                let mut restored = Stamps::default();
                for s in &log[..k] {
                    restored.apply(s);
                }
                let rest: Vec<Timestamp> = log[k..].iter().map(|s| restored.apply(s)).collect();
                prop_assert_eq!(&ats[k..], &rest[..]);
                let mut promised = Timestamp::ZERO;
                for (i, (s, at)) in log.iter().zip(&ats).enumerate() {
                    prop_assert!(*at > promised, "entry {} at {} is not above {}", i, at, promised);
                    prop_assert!(i == 0 || *at > ats[i - 1]);
                    prop_assert!(*at >= s.at);
                    if let Some(c) = s.closed {
                        promised = promised.max(c);
                    }
                }
            }

            /// Whatever the physical clock and the messages do: every timestamp handed out is
            /// above every earlier one and above the message it answers, and the clock never
            /// runs further ahead of the largest physical time seen than the offset bound.
            #[test]
            fn timestamps_strictly_increase_and_stay_within_the_offset(
                steps in proptest::collection::vec(step(), 1..200),
                offset in 0u64..3_000,
            ) {
                let mut c = Hlc::new(offset);
                let mut physical: u64 = 1_000_000;
                let mut max_physical = physical;
                let mut prev = Timestamp::ZERO;
                for s in steps {
                    match s {
                        Step::Tick(d) => {
                            physical = physical.saturating_add_signed(i64::from(d));
                            max_physical = max_physical.max(physical);
                        }
                        Step::Now => {
                            let t = c.now(physical);
                            prop_assert!(t > prev);
                            prev = t;
                        }
                        Step::Receive { ahead, logical } => {
                            let remote = Timestamp::new(
                                physical.saturating_add_signed(i64::from(ahead)),
                                logical,
                            );
                            match c.update(remote, physical) {
                                Ok(t) => {
                                    prop_assert!(t > prev);
                                    prop_assert!(t > remote);
                                    prev = t;
                                }
                                Err(e) => {
                                    prop_assert!(e.ahead_us > offset);
                                    prop_assert_eq!(c.last(), prev);
                                }
                            }
                        }
                    }
                    prop_assert!(c.last().physical <= max_physical + offset + 1);
                }
            }
        }
    }
}
