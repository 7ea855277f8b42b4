//! When a read must sync, and what the local replica must have applied before it answers.

use meridian_types::GroupId;
use std::collections::BTreeMap;

/// The consistency a read asks for (DESIGN.md §2.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadLevel {
    /// Sequentially consistent across groups (the default): sync when the session switches
    /// groups; never older than the session's vector.
    Sequential,
    /// Always sync: read index from the owner's leader.
    Linearizable,
    /// No sync; any replica known to be at most `max_lag_ms` behind (0 = any lag). Still never
    /// older than the session's vector.
    Stale { max_lag_ms: u64 },
}

/// How a router makes a read that switches groups sequentially consistent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchRule {
    /// Sync-before-read (DESIGN.md §2): a read index from the group's leader first.
    Sync,
    /// Closed timestamps (docs/closed-timestamps.md): every sequential or linearizable read
    /// waits until the replica's closed timestamp reaches the session's, and is served at a
    /// timestamp at least the session's; no sync for a switch.
    ClosedTimestamps,
    /// Neither: only the test that proves the anomaly exists without a rule uses it.
    UnsafeNone,
}

/// What the router does for one read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadPlan {
    /// Ask the group's leader for a read index (coalesced) and wait until the local replica
    /// applied it.
    pub sync: bool,
    /// The local replica must have applied at least this (the session's vector entry) —
    /// waiting, bounded, else refusing.
    pub min_applied: u64,
    /// Refuse when the replica is known to lag more than this (ms).
    pub max_lag_ms: Option<u64>,
    /// Wait until the replica's closed timestamp reaches the session's timestamp, and serve
    /// the read at a timestamp at least the session's.
    pub at_timestamp: bool,
}

/// Decides how to serve a read of `target` for a session whose previous operation was on
/// `last_group` and whose vector says `vector`, under the router's `rule`.
pub fn plan_read(
    level: ReadLevel,
    target: GroupId,
    last_group: Option<GroupId>,
    vector: &VersionVector,
    rule: SwitchRule,
) -> ReadPlan {
    let min_applied = vector.get(target);
    let by_timestamp = rule == SwitchRule::ClosedTimestamps;
    match level {
        // A linearizable read still asks the leader; by timestamps it also waits for the
        // session's timestamp, so the timestamp order places it after what its session saw.
        ReadLevel::Linearizable => ReadPlan {
            sync: true,
            min_applied,
            max_lag_ms: None,
            at_timestamp: by_timestamp,
        },
        ReadLevel::Sequential => ReadPlan {
            sync: rule == SwitchRule::Sync && last_group.is_some_and(|g| g != target),
            min_applied,
            max_lag_ms: None,
            at_timestamp: by_timestamp,
        },
        ReadLevel::Stale { max_lag_ms } => ReadPlan {
            sync: false,
            min_applied,
            max_lag_ms: (max_lag_ms > 0).then_some(max_lag_ms),
            at_timestamp: false,
        },
    }
}

/// A session's `group → highest revision observed`. Entries only grow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionVector(BTreeMap<GroupId, u64>);

impl VersionVector {
    pub fn new() -> Self {
        Self::default()
    }

    /// The entry of `group` (0 if the session never saw it).
    pub fn get(&self, group: GroupId) -> u64 {
        self.0.get(&group).copied().unwrap_or(0)
    }

    /// Records that the session observed `group` at `revision`; never lowers an entry.
    pub fn observe(&mut self, group: GroupId, revision: u64) {
        let e = self.0.entry(group).or_insert(0);
        *e = (*e).max(revision);
    }

    /// Entry-wise maximum with `other`.
    pub fn merge(&mut self, other: &VersionVector) {
        for (g, r) in &other.0 {
            self.observe(*g, *r);
        }
    }

    pub fn from_wire(map: &std::collections::HashMap<u64, u64>) -> Self {
        let mut v = Self::new();
        for (g, r) in map {
            v.observe(GroupId(*g), *r);
        }
        v
    }

    pub fn to_wire(&self) -> std::collections::HashMap<u64, u64> {
        self.0.iter().map(|(g, r)| (g.0, *r)).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (GroupId, u64)> + '_ {
        self.0.iter().map(|(g, r)| (*g, *r))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: GroupId = GroupId(1);
    const B: GroupId = GroupId(2);

    fn vv(entries: &[(GroupId, u64)]) -> VersionVector {
        let mut v = VersionVector::new();
        for (g, r) in entries {
            v.observe(*g, *r);
        }
        v
    }

    /// Every combination of level × previous group × switch rule.
    #[test]
    fn sync_decision_table() {
        let v = vv(&[(A, 7), (B, 3)]);
        let levels = [
            ReadLevel::Sequential,
            ReadLevel::Linearizable,
            ReadLevel::Stale { max_lag_ms: 0 },
            ReadLevel::Stale { max_lag_ms: 500 },
        ];
        for level in levels {
            for last in [None, Some(A), Some(B)] {
                for rule in [
                    SwitchRule::Sync,
                    SwitchRule::ClosedTimestamps,
                    SwitchRule::UnsafeNone,
                ] {
                    let p = plan_read(level, B, last, &v, rule);
                    let expect_sync = match level {
                        ReadLevel::Linearizable => true,
                        ReadLevel::Sequential => rule == SwitchRule::Sync && last == Some(A),
                        ReadLevel::Stale { .. } => false,
                    };
                    assert_eq!(p.sync, expect_sync, "{level:?} last={last:?} {rule:?}");
                    let expect_at = rule == SwitchRule::ClosedTimestamps
                        && !matches!(level, ReadLevel::Stale { .. });
                    assert_eq!(
                        p.at_timestamp, expect_at,
                        "{level:?} last={last:?} {rule:?}"
                    );
                    assert_eq!(p.min_applied, 3, "the vector entry of the target group");
                    let expect_lag = match level {
                        ReadLevel::Stale { max_lag_ms: 500 } => Some(500),
                        _ => None,
                    };
                    assert_eq!(p.max_lag_ms, expect_lag);
                }
            }
        }
    }

    /// Consecutive reads of one group never sync; the first read of a session never does.
    #[test]
    fn same_group_and_fresh_session_do_not_sync() {
        let v = VersionVector::new();
        assert!(!plan_read(ReadLevel::Sequential, A, Some(A), &v, SwitchRule::Sync).sync);
        assert!(!plan_read(ReadLevel::Sequential, A, None, &v, SwitchRule::Sync).sync);
        assert_eq!(
            plan_read(ReadLevel::Sequential, A, None, &v, SwitchRule::Sync).min_applied,
            0
        );
    }

    #[test]
    fn vector_never_goes_backwards() {
        let mut v = vv(&[(A, 10)]);
        v.observe(A, 4);
        assert_eq!(v.get(A), 10);
        v.observe(A, 12);
        assert_eq!(v.get(A), 12);
        let mut w = vv(&[(A, 11), (B, 5)]);
        w.merge(&v);
        assert_eq!((w.get(A), w.get(B)), (12, 5));
        assert_eq!(w.get(GroupId(9)), 0);
    }

    #[test]
    fn wire_round_trip() {
        let v = vv(&[(A, 10), (B, 2)]);
        assert_eq!(VersionVector::from_wire(&v.to_wire()), v);
        assert_eq!(v.len(), 2);
        assert!(!v.is_empty());
        assert_eq!(v.iter().collect::<Vec<_>>(), vec![(A, 10), (B, 2)]);
    }
}
