//! Closed timestamps (issue 19; docs/closed-timestamps.md): the leader's side ([`Closer`]:
//! commit timestamps that increase with the log, and the timestamps it closes) and a
//! replica's side ([`ReplicaClosed`]: up to which timestamp it knows everything of its group,
//! and whether a read at a session's timestamp can be served now, must wait, or must fall back
//! to a sync). No IO: the caller passes the clocks in.
//!
//! A closed timestamp `T` published at log index `i` promises that every entry after `i`
//! carries a commit timestamp above `T`. Promises travel only inside the log (so a new leader
//! finds every promise its predecessors made in its own log, and starts its [`Closer`] above
//! them); a replica applies them in log order.

use meridian_types::hlc::Timestamp;

/// How a domain's group closes timestamps (recorded per domain in the placement map).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// Close a little in the past (`lag_us` behind the leader's clock): writes stay local and
    /// fast; a read that switches to the group waits about a one-way delay plus the close
    /// interval.
    LocalWrites { lag_us: u64 },
    /// Close in the future (`lead_us` ahead: the farthest one-way delay plus the maximum clock
    /// offset): reads in every region are served at once; each write waits until its
    /// timestamp has passed before it is acknowledged (commit wait).
    GlobalReads { lead_us: u64 },
}

impl Profile {
    /// The timestamp the leader closes when its clock reads `now`.
    pub fn target(self, now: Timestamp) -> Timestamp {
        match self {
            Profile::LocalWrites { lag_us } => {
                Timestamp::new(now.physical.saturating_sub(lag_us), 0)
            }
            Profile::GlobalReads { lead_us } => {
                Timestamp::new(now.physical.saturating_add(lead_us), 0)
            }
        }
    }

    /// How long (µs of physical time) a write committed at `commit` waits before its answer
    /// when the physical clock reads `physical_us`: none for `local-writes`; until the commit
    /// timestamp has passed for `global-reads`.
    pub fn commit_wait_us(self, commit: Timestamp, physical_us: u64) -> u64 {
        match self {
            Profile::LocalWrites { .. } => 0,
            Profile::GlobalReads { .. } => commit.physical.saturating_sub(physical_us),
        }
    }
}

/// The leader's commit timestamps and closed timestamp for one group.
#[derive(Clone, Debug)]
pub struct Closer {
    /// The highest timestamp closed so far (by this leader or, found in the log, an earlier one).
    closed: Timestamp,
    /// The last commit timestamp assigned.
    last: Timestamp,
}

impl Closer {
    /// A leader whose log holds promises and commit timestamps up to `floor` (the largest of
    /// both found in its whole log when it took over): it assigns nothing at or below it.
    pub fn new(floor: Timestamp) -> Self {
        Self {
            closed: floor,
            last: floor,
        }
    }

    /// The commit timestamp of the next entry, given the leader's clock `now` and the largest
    /// session timestamp among the entry's writes: above all three, above every timestamp
    /// closed, and above the previous entry's (commit timestamps increase with the log).
    ///
    /// Preconditions the caller keeps: entries are appended in the order they are stamped; a
    /// promise is closed (`close`) before the entry that carries it is stamped; and a session
    /// timestamp further ahead of `now` than the profile's lead plus the maximum clock offset
    /// is refused before it gets here (it can only be crafted). Session and commit timestamps
    /// are compared here, never taken into the node's `Hlc` (a `global-reads` timestamp is in
    /// the future by design, and would trip the offset check).
    pub fn stamp(&mut self, now: Timestamp, session: Timestamp) -> Timestamp {
        let t = now
            .max(session.next())
            .max(self.closed.next())
            .max(self.last.next());
        self.last = t;
        t
    }

    /// Closes `target` (or keeps the timestamp closed before, if that is higher) and returns
    /// what to publish with the next entry. Every later [`Closer::stamp`] is above it.
    pub fn close(&mut self, target: Timestamp) -> Timestamp {
        self.closed = self.closed.max(target);
        self.closed
    }
}

/// The timestamp of a read served by closed timestamps for a session at `session`, from a
/// state whose last commit timestamp is `applied`: the larger. Every later entry commits above
/// both (the replica had closed the session's timestamp), so the read sees exactly the entries
/// at or below its timestamp; the session's own order is kept (never below `session`).
pub fn read_timestamp(session: Timestamp, applied: Timestamp) -> Timestamp {
    session.max(applied)
}

/// What a replica does with a read at a session's timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadAt {
    /// Everything at or below the session's timestamp is applied here: serve now, from the
    /// current state, whose timestamp is `at` (the session's timestamp becomes at least this).
    Serve { at: Timestamp },
    /// Not yet, but the closed timestamp is moving: wait for it (bounded by the caller).
    Wait,
    /// The closed timestamp has not moved for longer than allowed (a cut link, a leader
    /// gone): never serve an older view — fall back to a sync, or refuse.
    Fallback,
}

/// What one replica knows of one group's closed timestamps.
#[derive(Clone, Debug, Default)]
pub struct ReplicaClosed {
    /// Everything with a commit timestamp at or below this is applied here.
    closed: Timestamp,
    /// The commit timestamp of the last entry applied.
    applied: Timestamp,
    /// When (monotonic ms) `closed` last moved forward.
    moved_ms: u64,
}

impl ReplicaClosed {
    /// A replica that starts from a snapshot or restarts: `applied` is the commit timestamp of
    /// the last entry its state holds and `closed` the largest promise applied with it, both
    /// kept in the snapshot's metadata and the durable state (starting from zero would let it
    /// serve reads below writes its state already holds).
    pub fn restored(applied: Timestamp, closed: Timestamp, now_ms: u64) -> Self {
        Self {
            closed: applied.max(closed),
            applied,
            moved_ms: now_ms,
        }
    }

    /// Applies an entry of commit timestamp `commit`, carrying the promise `closed` if it has
    /// one, at monotonic time `now_ms`.
    pub fn applied(&mut self, commit: Timestamp, closed: Option<Timestamp>, now_ms: u64) {
        self.applied = self.applied.max(commit);
        // Entries after this one are above `commit` (timestamps increase with the log) and
        // above the promise: both are closed once this entry is applied.
        let known = self.applied.max(closed.unwrap_or(Timestamp::ZERO));
        if known > self.closed {
            self.closed = known;
            self.moved_ms = now_ms;
        }
    }

    /// Up to which timestamp everything of the group is applied here.
    pub fn closed(&self) -> Timestamp {
        self.closed
    }

    /// When (monotonic ms) a closed timestamp that does not move becomes too stale to wait
    /// for ([`ReadAt::Fallback`] after this).
    pub fn stale_at_ms(&self, stale_after_ms: u64) -> u64 {
        self.moved_ms.saturating_add(stale_after_ms)
    }

    /// A read for a session that has seen up to `session`, at monotonic time `now_ms`, when a
    /// closed timestamp that has not moved for `stale_after_ms` is no longer trusted to move.
    pub fn read_at(&self, session: Timestamp, now_ms: u64, stale_after_ms: u64) -> ReadAt {
        if self.closed >= session {
            return ReadAt::Serve {
                at: read_timestamp(session, self.applied),
            };
        }
        if now_ms.saturating_sub(self.moved_ms) > stale_after_ms {
            ReadAt::Fallback
        } else {
            ReadAt::Wait
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(p: u64) -> Timestamp {
        Timestamp::new(p, 0)
    }

    #[test]
    fn commit_timestamps_increase_and_stay_above_what_was_closed() {
        let mut c = Closer::new(ts(100));
        // The leader's clock is behind its log's promises: the stamp goes above them.
        assert_eq!(c.stamp(ts(50), Timestamp::ZERO), Timestamp::new(100, 1));
        assert_eq!(c.stamp(ts(200), Timestamp::ZERO), ts(200));
        // A session from the future (another group's timestamp) lifts the stamp.
        assert_eq!(c.stamp(ts(201), ts(300)), Timestamp::new(300, 1));
        // Closing in the future (global-reads): the next stamp is above it.
        assert_eq!(c.close(ts(1_000)), ts(1_000));
        assert_eq!(c.stamp(ts(400), Timestamp::ZERO), Timestamp::new(1_000, 1));
        // Closing never goes back.
        assert_eq!(c.close(ts(10)), ts(1_000));
    }

    #[test]
    fn the_profiles_close_behind_or_ahead_and_only_global_reads_wait() {
        let now = Timestamp::new(10_000, 4);
        let local = Profile::LocalWrites { lag_us: 3_000 };
        let global = Profile::GlobalReads { lead_us: 250_000 };
        assert_eq!(local.target(now), ts(7_000));
        assert_eq!(global.target(now), ts(260_000));
        assert_eq!(local.commit_wait_us(ts(260_000), 10_000), 0);
        assert_eq!(global.commit_wait_us(ts(260_000), 10_000), 250_000);
        assert_eq!(global.commit_wait_us(ts(260_000), 300_000), 0);
        assert_eq!(Profile::LocalWrites { lag_us: 1 << 40 }.target(now), ts(0));
    }

    #[test]
    fn a_replica_serves_once_its_closed_timestamp_reaches_the_session() {
        let mut r = ReplicaClosed::default();
        r.applied(ts(100), None, 0);
        assert_eq!(r.read_at(ts(100), 0, 500), ReadAt::Serve { at: ts(100) });
        assert_eq!(r.read_at(ts(150), 10, 500), ReadAt::Wait);
        // An idle group's promise closes past its last commit.
        r.applied(ts(120), Some(ts(200)), 20);
        assert_eq!(r.closed(), ts(200));
        assert_eq!(r.read_at(ts(150), 20, 500), ReadAt::Serve { at: ts(150) });
        // Nothing moves for longer than allowed: never an older view, a fallback.
        assert_eq!(r.read_at(ts(250), 400, 500), ReadAt::Wait);
        assert_eq!(r.read_at(ts(250), 521, 500), ReadAt::Fallback);
        // The next entry is above the promise (rule 2); a promise of its below what is known
        // adds nothing, the commit moves the closed timestamp.
        r.applied(ts(260), Some(ts(150)), 600);
        assert_eq!(r.closed(), ts(260));
        assert_eq!(r.read_at(ts(250), 600, 500), ReadAt::Serve { at: ts(260) });
    }

    #[test]
    fn a_read_is_placed_at_the_state_it_sees_not_below_it() {
        // The replica holds an entry stamped above the session's timestamp: the read sees it,
        // so it is placed at that entry's timestamp, and the session moves up to it.
        let mut r = ReplicaClosed::default();
        r.applied(ts(300), None, 0);
        assert_eq!(r.read_at(ts(100), 0, 500), ReadAt::Serve { at: ts(300) });
    }

    #[test]
    fn a_restored_replica_starts_from_what_its_state_holds() {
        let r = ReplicaClosed::restored(ts(100), ts(400), 7);
        assert_eq!(r.closed(), ts(400));
        assert_eq!(
            r.read_at(Timestamp::ZERO, 7, 500),
            ReadAt::Serve { at: ts(100) }
        );
        assert_eq!(r.read_at(ts(401), 8, 500), ReadAt::Wait);
    }

    /// The promise the replica relies on, checked over a leader's whole run: whatever the
    /// clocks, sessions and closes, once a replica has applied an entry, every later entry's
    /// commit timestamp is above what that replica then calls closed.
    #[test]
    fn no_entry_lands_at_or_below_a_timestamp_a_replica_called_closed() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..200 {
            let mut c = Closer::new(ts(rnd(1_000)));
            let mut log: Vec<(Timestamp, Option<Timestamp>)> = Vec::new();
            let mut clock = 1_000u64;
            for _ in 0..100 {
                if !log.is_empty() && rnd(10) == 0 {
                    // A leader change: the deposed leader's uncommitted tail may be cut, and the
                    // new leader (its clock anywhere near) starts above everything its log holds.
                    let keep = log.len() - rnd(3).min(log.len() as u64 - 1) as usize;
                    log.truncate(keep);
                    let floor = log
                        .iter()
                        .map(|(commit, closed)| (*commit).max(closed.unwrap_or(Timestamp::ZERO)))
                        .max()
                        .unwrap_or(Timestamp::ZERO);
                    c = Closer::new(floor);
                    clock = clock.saturating_sub(rnd(300)) + rnd(300);
                }
                clock = clock + rnd(50) - rnd(40).min(clock);
                let closed = match rnd(3) {
                    0 => {
                        Some(c.close(Profile::GlobalReads { lead_us: rnd(500) }.target(ts(clock))))
                    }
                    1 => Some(c.close(Profile::LocalWrites { lag_us: rnd(500) }.target(ts(clock)))),
                    _ => None,
                };
                let commit = c.stamp(ts(clock), ts((clock + rnd(100)).saturating_sub(50)));
                log.push((commit, closed));
            }
            let mut r = ReplicaClosed::default();
            for (i, (commit, closed)) in log.iter().enumerate() {
                r.applied(*commit, *closed, i as u64);
                for (later, _) in &log[i + 1..] {
                    assert!(
                        *later > r.closed(),
                        "entry {later} at or below closed {}",
                        r.closed()
                    );
                }
            }
        }
    }
}
