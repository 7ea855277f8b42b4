//! The commit timestamps of a group's recent changes, so that a read by closed timestamps can
//! be served at the lowest timestamp its answer is true at (docs/closed-timestamps.md, "A read's
//! timestamp"), not at the replica's last commit.
//!
//! Why it matters: a session's timestamp is the highest it has seen, and a read that switches
//! to another group waits until that group's replica has closed it. A read of one key served at
//! the replica's last commit timestamp (about *now* on a busy group, or on an idle one that
//! closes every few ms) lifts the session to now, so its next switch waits a whole one-way
//! delay. The key's value is the same from the commit that wrote it up to the replica's closed
//! timestamp: served at the larger of the session's timestamp and that commit's, the session
//! stays where its own writes put it, and its next switch waits only if it wrote within the
//! last one-way delay (the cost sequential consistency cannot avoid: Attiya and Welch, 1994).
//!
//! Kept in memory only, bounded ([`RECENT_MAX`] changes): what fell out, or came before the
//! replica started (a restart, a snapshot), is bounded by one timestamp above all of it, which
//! is always safe (a read served higher than needed is still correct, only less useful).

use std::collections::VecDeque;

use meridian_types::command::{Event, EventKind};
use meridian_types::hlc::Timestamp;

/// How many changes (entries that changed a key) keep their own commit timestamp.
pub const RECENT_MAX: usize = 16_384;

/// Commit timestamps of the last changes of a group's keys, by revision.
#[derive(Clone, Debug, Default)]
pub struct Recent {
    /// (revision, commit timestamp) of each entry that changed a key, oldest first; both
    /// increase along the deque.
    changes: VecDeque<(u64, Timestamp)>,
    /// At or above the commit timestamp of every change before `changes` (those evicted, and
    /// those applied before this replica started keeping them). `None` until the first change
    /// is kept: then everything before is bounded by the state's last commit timestamp.
    before: Option<Timestamp>,
    /// At or above the commit timestamp of every entry that removed a key (as `before`).
    removed: Option<Timestamp>,
}

/// Not part of the state (as `Dirty`): two replicas of one state are equal whatever each keeps.
impl PartialEq for Recent {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Recent {}

impl Recent {
    /// Records the entry at `revision`, committed at `at`, whose changes were `events`;
    /// `previous` is the commit timestamp of the entry before it (every earlier entry is at or
    /// below it).
    pub fn record(&mut self, revision: u64, at: Timestamp, previous: Timestamp, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        if self.before.is_none() {
            self.before = Some(previous);
        }
        if self.removed.is_none() {
            self.removed = Some(previous);
        }
        if events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Delete | EventKind::Dropped))
        {
            self.removed = Some(at);
        }
        self.changes.push_back((revision, at));
        while self.changes.len() > RECENT_MAX {
            if let Some((_, t)) = self.changes.pop_front() {
                self.before = Some(self.before.map_or(t, |b| b.max(t)));
            }
        }
    }

    /// At or above the commit timestamp of the last change at or before `revision`, and at or
    /// below `applied` (the state's last commit timestamp): a read at this timestamp or later
    /// sees every key as of `revision`.
    pub fn as_of(&self, revision: u64, applied: Timestamp) -> Timestamp {
        let idx = self.changes.partition_point(|(r, _)| *r <= revision);
        let t = match idx.checked_sub(1) {
            Some(i) => self.changes[i].1,
            None => self.before.unwrap_or(applied),
        };
        t.min(applied)
    }

    /// At or above the commit timestamp of every entry that removed a key.
    pub fn removed(&self, applied: Timestamp) -> Timestamp {
        self.removed.unwrap_or(applied).min(applied)
    }

    /// The revision a read at `at` reports: the last change at or below `at` (the keys there
    /// are the keys at `at`), given that `at` is at or above [`Recent::as_of`] of every
    /// revision the read depends on; `current` when nothing is kept (then `at` is at or above
    /// the state's last commit).
    pub fn revision_at(&self, at: Timestamp, current: u64) -> u64 {
        let idx = self.changes.partition_point(|(_, t)| *t <= at);
        match idx.checked_sub(1) {
            Some(i) => self.changes[i].0,
            None => match self.changes.front() {
                // Below every change kept: the state just before the first of them.
                Some((first, _)) => first.saturating_sub(1),
                None => current,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_types::command::KeyValue;

    fn ts(p: u64) -> Timestamp {
        Timestamp::new(p, 0)
    }

    fn ev(kind: EventKind) -> Vec<Event> {
        vec![Event {
            kind,
            kv: KeyValue {
                key: "/k".into(),
                value: Vec::new(),
                create_revision: 1,
                mod_revision: 1,
                version: 1,
                lease: 0,
            },
            prev_kv: None,
        }]
    }

    #[test]
    fn a_key_is_read_at_its_change_not_at_the_last_commit() {
        let mut r = Recent::default();
        // Nothing kept yet: everything is bounded by the last commit.
        assert_eq!(r.as_of(3, ts(50)), ts(50));
        r.record(10, ts(100), ts(90), &ev(EventKind::Put));
        r.record(11, ts(110), ts(100), &[]); // a promise entry: no change
        r.record(12, ts(120), ts(110), &ev(EventKind::Put));
        r.record(14, ts(140), ts(130), &ev(EventKind::Delete));
        let applied = ts(200);
        assert_eq!(r.as_of(10, applied), ts(100));
        assert_eq!(r.as_of(11, applied), ts(100));
        assert_eq!(r.as_of(13, applied), ts(120));
        // Before the first change kept: bounded by the commit before it.
        assert_eq!(r.as_of(5, applied), ts(90));
        assert_eq!(r.removed(applied), ts(140));
        // Never above the state's last commit.
        assert_eq!(r.as_of(14, ts(130)), ts(130));
        assert_eq!(r.revision_at(ts(100), 20), 10);
        assert_eq!(r.revision_at(ts(125), 20), 12);
        assert_eq!(r.revision_at(ts(95), 20), 9);
        // Above every change: the last change (not a later entry that changed no key).
        assert_eq!(r.revision_at(ts(150), 20), 14);
        assert_eq!(Recent::default().revision_at(ts(150), 20), 20);
    }

    #[test]
    fn what_falls_out_is_bounded_above_not_forgotten() {
        let mut r = Recent::default();
        for i in 0..(RECENT_MAX as u64 + 10) {
            r.record(i + 1, ts(1_000 + i), ts(999 + i), &ev(EventKind::Put));
        }
        let applied = ts(1_000_000);
        // Revisions 1..=10 fell out: bounded by the largest timestamp that fell out.
        assert_eq!(r.as_of(3, applied), ts(1_009));
        assert_eq!(r.as_of(11, applied), ts(1_010));
        // No removal seen: bounded by the commit before the first change kept.
        assert_eq!(r.removed(applied), ts(999));
    }
}
