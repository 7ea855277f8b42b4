//! Closed timestamps (issue 19; docs/closed-timestamps.md): what a leader closes
//! ([`Profile::target`]) and a replica's side ([`ReplicaClosed`]: up to which timestamp it
//! knows everything of its group, and whether a read at a session's timestamp can be served
//! now, must wait, or must fall back to a sync). No IO: the caller passes the clocks in.
//!
//! A closed timestamp `T` published at log index `i` promises that every entry after `i`
//! carries a commit timestamp above `T`. Promises travel only inside the log, and every replica
//! gives each entry its commit timestamp from the log alone (`meridian_types::hlc::Stamps`:
//! above the entry's stamp, the previous commit timestamp and every promise applied), so the
//! promise holds whatever a leader knew of its predecessors'; a replica applies them in log
//! order.

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
    fn the_profiles_close_behind_or_ahead() {
        let now = Timestamp::new(10_000, 4);
        let local = Profile::LocalWrites { lag_us: 3_000 };
        let global = Profile::GlobalReads { lead_us: 250_000 };
        assert_eq!(local.target(now), ts(7_000));
        assert_eq!(global.target(now), ts(260_000));
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

    /// The promise the replica relies on, checked over whole logs: whatever the leaders'
    /// clocks, the writers' session timestamps, the promises of either profile and the leader
    /// changes (a deposed leader's tail cut), once a replica has applied an entry, every later
    /// entry's commit timestamp — what every replica computes from the log alone,
    /// `Stamps::apply` — is above what that replica then calls closed.
    #[test]
    fn no_entry_lands_at_or_below_a_timestamp_a_replica_called_closed() {
        use meridian_types::hlc::{Stamp, Stamps};
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..200 {
            let mut log: Vec<Stamp> = Vec::new();
            let mut clock = 1_000u64;
            for _ in 0..100 {
                if !log.is_empty() && rnd(10) == 0 {
                    // A leader change: the deposed leader's uncommitted tail may be cut, and the
                    // new leader's clock is anywhere near.
                    let keep = log.len() - rnd(3).min(log.len() as u64 - 1) as usize;
                    log.truncate(keep);
                    clock = clock.saturating_sub(rnd(300)) + rnd(300);
                }
                clock = clock + rnd(50) - rnd(40).min(clock);
                let closed = match rnd(3) {
                    0 => Some(Profile::GlobalReads { lead_us: rnd(500) }.target(ts(clock))),
                    1 => Some(Profile::LocalWrites { lag_us: rnd(500) }.target(ts(clock))),
                    _ => None,
                };
                // The proposer's stamp: its clock, above the writer's session timestamp.
                let session = ts((clock + rnd(100)).saturating_sub(50));
                let at = ts(clock).max(session.next());
                log.push(Stamp { at, closed });
            }
            let mut stamps = Stamps::default();
            let commits: Vec<(Timestamp, Option<Timestamp>)> =
                log.iter().map(|s| (stamps.apply(s), s.closed)).collect();
            let mut r = ReplicaClosed::default();
            for (i, (commit, closed)) in commits.iter().enumerate() {
                r.applied(*commit, *closed, i as u64);
                for (later, _) in &commits[i + 1..] {
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
