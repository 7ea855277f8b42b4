//! What a sweep over many seeds needs (`meridian sim sweep`): [`run_seed`] runs one seed's
//! modes and mixes with every checker (the faults it draws come from [`crate::faults`]).
//!
//! When a seed's history fails a checker, [`shortest_failing_prefix`] cuts it down to the
//! shortest prefix (by start time) that still fails: every operation started before the cut, and
//! the writes those reads observed. Dropping operations only drops constraints, so a prefix that
//! fails is a real witness of the violation, not an artifact of the cut.

use crate::det::{check, Record};
use crate::scenario::{Mix, Scenario};
use meridian_checker::OpKind;
use std::collections::BTreeSet;

/// A failing history cut down: the records kept and the virtual time of the cut.
#[derive(Debug)]
pub struct Shrunk {
    pub records: Vec<Record>,
    pub cut_us: u64,
    pub sequential: Result<(), String>,
    pub linearizable: Result<usize, String>,
}

/// The records that started before `cut_us`, and every write one of their reads observed.
fn prefix(records: &[Record], cut_us: u64) -> Vec<Record> {
    let observed: BTreeSet<(&str, &str)> = records
        .iter()
        .filter(|r| r.start_us < cut_us)
        .filter_map(|r| match &r.op.kind {
            OpKind::Read {
                key,
                value: Some(v),
                ..
            } => Some((key.as_str(), v.as_str())),
            _ => None,
        })
        .collect();
    records
        .iter()
        .filter(|r| {
            r.start_us < cut_us
                || matches!(&r.op.kind, OpKind::Write { key, value, .. }
                    if observed.contains(&(key.as_str(), value.as_str())))
        })
        .cloned()
        .collect()
}

/// The shortest prefix of a failing history that still fails a checker (binary search over the
/// cut; at most ~2 log2(n) checker runs). None if the whole history passes.
pub fn shortest_failing_prefix(records: &[Record]) -> Option<Shrunk> {
    let fails = |rs: &[Record]| {
        let (sq, lin) = check(rs);
        (sq.is_err() || lin.is_err()).then_some((sq, lin))
    };
    let mut starts: Vec<u64> = records.iter().map(|r| r.start_us).collect();
    starts.sort_unstable();
    starts.dedup();
    let (sequential, linearizable) = fails(records)?;
    // Cutting after the last start keeps the whole history, which fails; find the least cut.
    let mut best = Shrunk {
        cut_us: starts.last().map_or(0, |s| s + 1),
        records: records.to_vec(),
        sequential,
        linearizable,
    };
    let (mut lo, mut hi) = (0usize, starts.len().saturating_sub(1));
    while lo < hi {
        let mid = (lo + hi) / 2;
        let cut_us = starts[mid] + 1;
        let kept = prefix(records, cut_us);
        match fails(&kept) {
            Some((sequential, linearizable)) => {
                best = Shrunk {
                    cut_us,
                    records: kept,
                    sequential,
                    linearizable,
                };
                hi = mid;
            }
            None => lo = mid + 1,
        }
    }
    Some(best)
}

/// One mode × mix of one seed: what ran and what the checkers said.
#[derive(Debug)]
pub struct RunVerdict {
    pub mode: String,
    pub mix: Mix,
    pub operations: usize,
    /// Operations without an answer (their effect unknown for writes).
    pub errors: usize,
    /// Faults applied (listed and drawn) and nodes whose lease clock was skewed.
    pub faults: usize,
    pub skewed: usize,
    /// The drawn part of the schedule, as scenario TOML.
    pub schedule: String,
    pub sequential: Result<(), String>,
    pub linearizable: Result<usize, String>,
    /// The watch validators' verdict (Ok: events checked; 0 without watchers).
    pub watch: Result<usize, String>,
    /// The lock checker's verdict (Ok: holds checked; 0 without lockers).
    pub locks: Result<usize, String>,
    /// Domain moves of the scenario that committed (of `moves` scheduled).
    pub moves_committed: usize,
    /// Whether the independent checker (stateright, `meridian-crosscheck`) agrees with
    /// Meridian's linearizability checker on this history; Ok: its verdict.
    pub independent: Result<meridian_crosscheck::Verdict, String>,
    /// On a failure: the shortest prefix of the history that still fails.
    pub shrunk: Option<Shrunk>,
    /// The history's writes and linearizable reads as Jepsen EDN (what the independent checker
    /// read; `sim sweep --export DIR` writes it).
    pub history: String,
}

impl RunVerdict {
    pub fn failed(&self) -> bool {
        self.sequential.is_err()
            || self.linearizable.is_err()
            || self.watch.is_err()
            || self.locks.is_err()
            || self.independent.is_err()
    }
}

/// Runs seed `seed` of scenario `s` (every mode and mix, on `base_topology`'s text) in the
/// deterministic simulation and checks each history; a failing one is cut down.
pub fn run_seed(s: &Scenario, base_topology: &str, seed: u64) -> anyhow::Result<Vec<RunVerdict>> {
    let mut out = Vec::new();
    for mode in &s.modes {
        let text = crate::scenario::mode_topology(base_topology, mode)?;
        for mix in s.mixes() {
            let o = crate::det::simulate(s, &text, mode, mix, seed)?;
            let failed = o.sequential.is_err() || o.linearizable.is_err();
            let timed = crate::det::timed_ops(&o.records);
            let history = meridian_crosscheck::edn::to_edn(&timed);
            let independent = meridian_crosscheck::agree_exported(&timed, &history);
            out.push(RunVerdict {
                mode: mode.clone(),
                mix,
                operations: o.records.len(),
                errors: o.records.iter().filter(|r| r.end_us.is_none()).count(),
                faults: o.faults,
                skewed: o.skewed,
                schedule: o.schedule,
                shrunk: if failed {
                    shortest_failing_prefix(&o.records)
                } else {
                    None
                },
                sequential: o.sequential,
                linearizable: o.linearizable,
                watch: o.watch,
                locks: o.locks,
                moves_committed: o.moves.iter().filter(|m| m.committed).count(),
                independent,
                history,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_checker::Op;

    fn rec(session: usize, start_us: u64, kind: OpKind) -> Record {
        Record {
            client: session,
            region: "r".into(),
            start_us,
            end_us: Some(start_us + 10),
            linearizable: false,
            kind: 0,
            op: Op {
                session,
                group: 1,
                kind,
            },
            served: Some((1, 1)),
        }
    }

    fn w(session: usize, t: u64, key: &str, v: &str, rev: u64) -> Record {
        rec(
            session,
            t,
            OpKind::Write {
                key: key.into(),
                value: v.into(),
                revision: Some(rev),
            },
        )
    }

    fn r(session: usize, t: u64, key: &str, v: Option<&str>, rev: Option<u64>) -> Record {
        rec(
            session,
            t,
            OpKind::Read {
                key: key.into(),
                value: v.map(Into::into),
                mod_revision: rev,
            },
        )
    }

    /// A session that reads a value, then an older one, breaks sequential consistency; the
    /// prefix ends with that read and leaves out what came after, but keeps the writes the
    /// kept reads observed even when they started later.
    #[test]
    fn the_shortest_failing_prefix_ends_at_the_violation() {
        let mut h = vec![
            w(0, 100, "/a", "1", 1),
            w(0, 200, "/a", "2", 2),
            r(1, 300, "/a", Some("2"), Some(2)),
            r(1, 400, "/a", Some("1"), Some(1)),
        ];
        for i in 0..50u64 {
            h.push(w(0, 500 + i * 10, "/b", &format!("v{i}"), 3 + i));
        }
        let s = shortest_failing_prefix(&h).expect("fails");
        assert!(s.sequential.is_err());
        assert_eq!(s.cut_us, 401);
        assert_eq!(s.records.len(), 4, "{:?}", s.records);
        assert!(
            shortest_failing_prefix(&h[..3]).is_none(),
            "a passing history"
        );
        // A read that observed a write started after the cut keeps that write.
        let h2 = vec![
            r(1, 50, "/a", Some("1"), Some(1)),
            r(1, 60, "/a", None, None),
            w(0, 100, "/a", "1", 1),
            w(0, 400, "/b", "x", 2),
        ];
        let s2 = shortest_failing_prefix(&h2).expect("fails");
        assert_eq!(s2.cut_us, 61);
        assert_eq!(
            s2.records.len(),
            3,
            "the read of \"1\" keeps its write: {:?}",
            s2.records
        );
    }
}
