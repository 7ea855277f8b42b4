//! An independent check of recorded histories: stateright's `LinearizabilityTester` — a
//! third-party, well-known implementation of the Wing–Gong search (stateright 0.31, crates.io) —
//! run over the same timed operations `meridian_checker::check_linearizable` checks, so that a
//! bug in Meridian's own checker cannot hide a bug in the server. Both must agree on every
//! history (docs/reliability.md).
//!
//! The model handed to stateright, per key (linearizability is local: a history is
//! linearizable iff each key's is):
//! - a register holding (revision, value id), initially absent at revision 0;
//! - a write of revision r is a valid step only if r is above the register's revision — Raft
//!   orders each key's writes, and Meridian's checker uses that order, so the independent one
//!   must too or the two would answer different questions;
//! - a read returns the value id it saw (or absent);
//! - each operation is invoked at its start and returns at its end, events in time order,
//!   invocations before returns at equal times (touching intervals overlap, as in Meridian's
//!   checker); stateright's "threads" are assigned so that a thread's operations never touch
//!   (its program order is then only real-time order — the one order Meridian's linearizability
//!   checker uses); a write without an answer is invoked and never returns, and is left out if
//!   no read returned it and its revision is unknown — exactly what Meridian's checker does.
//!
//! stateright's search is exhaustive without memoization, so each key's history is cut at its
//! quiescent points (no operation in flight across the cut) and every part is searched on its
//! own, starting from the highest-revision write before it — the state every linearization of
//! the parts before must leave. A part longer than [`OPS_PER_KEY_MAX`] operations is reported as
//! not checked.

pub mod edn;

use meridian_checker::{OpKind, Timed};
use stateright::semantics::{ConsistencyTester, LinearizabilityTester, SequentialSpec};
use std::collections::BTreeMap;

/// Most operations of one key handed to one exhaustive search (one part between quiescent points).
pub const OPS_PER_KEY_MAX: usize = 2_000;

/// A key as a register of (revision, value id); `None`: absent.
#[derive(Clone, Debug, Default, PartialEq)]
struct RevRegister(Option<(u64, String)>);

#[derive(Clone, Debug, PartialEq)]
enum RegOp {
    Write(u64, String),
    Read,
}

#[derive(Clone, Debug, PartialEq)]
enum RegRet {
    WriteOk,
    /// The value id read (None: absent), or a write applied out of revision order.
    ReadOk(Option<String>),
    OutOfOrder,
}

impl SequentialSpec for RevRegister {
    type Op = RegOp;
    type Ret = RegRet;

    fn invoke(&mut self, op: &RegOp) -> RegRet {
        match op {
            RegOp::Write(rev, v) => {
                if self.0.as_ref().is_some_and(|(r, _)| r >= rev) {
                    return RegRet::OutOfOrder;
                }
                self.0 = Some((*rev, v.clone()));
                RegRet::WriteOk
            }
            RegOp::Read => RegRet::ReadOk(self.0.as_ref().map(|(_, v)| v.clone())),
        }
    }
}

/// The verdict of the independent checker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every key is linearizable; the number of keys.
    Linearizable(usize),
    /// This key's history is not.
    NotLinearizable { key: String },
    /// The history could not be handed to the tester (too long, or malformed); why.
    NotChecked(String),
}

/// Stack of the thread the search runs on: stateright recurses once per operation of a part.
const SEARCH_STACK_BYTES: usize = 1 << 30;

/// Longest the search may take over one history: stateright's search is exponential where
/// many operations overlap, and a history it cannot decide in time is reported as not checked.
pub const SEARCH_BUDGET: std::time::Duration = std::time::Duration::from_secs(60);

/// Checks `ops` (writes and linearizable reads, as for `check_linearizable`) with stateright,
/// on a thread of its own with a deep stack (the search recurses once per operation), waiting
/// at most [`SEARCH_BUDGET`]; a search past it is left to finish in the background and the
/// history is reported as not checked.
pub fn check(ops: &[Timed]) -> Verdict {
    let owned = ops.to_vec();
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("crosscheck".into())
        .stack_size(SEARCH_STACK_BYTES)
        .spawn(move || {
            let _ = tx.send(check_here(&owned));
        });
    if let Err(e) = spawned {
        return Verdict::NotChecked(format!("no thread for the search: {e}"));
    }
    match rx.recv_timeout(SEARCH_BUDGET) {
        Ok(v) => v,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Verdict::NotChecked(format!(
            "the search did not finish within {} s",
            SEARCH_BUDGET.as_secs()
        )),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            Verdict::NotChecked("the search panicked".into())
        }
    }
}

fn check_here(ops: &[Timed]) -> Verdict {
    // A write's revision: its own, or the mod_revision a read reported for its value.
    let mut observed: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for t in ops {
        if let OpKind::Read {
            key,
            value: Some(v),
            mod_revision: Some(r),
        } = &t.op.kind
        {
            observed.insert((key.as_str(), v.as_str()), *r);
        }
    }
    let mut by_key: BTreeMap<&str, Vec<&Timed>> = BTreeMap::new();
    for t in ops {
        by_key.entry(t.op.kind.key()).or_default().push(t);
    }
    for (key, list) in &by_key {
        // The operations handed to the tester: (start, end, op, what it returned).
        let mut items: Vec<Item> = Vec::new();
        for t in list {
            let op = match &t.op.kind {
                OpKind::Write {
                    key,
                    value,
                    revision,
                } => revision
                    .or_else(|| observed.get(&(key.as_str(), value.as_str())).copied())
                    .map(|r| (RegOp::Write(r, value.clone()), RegRet::WriteOk)),
                OpKind::Read { .. } if t.end.is_none() => None,
                OpKind::Read { value, .. } => Some((RegOp::Read, RegRet::ReadOk(value.clone()))),
            };
            if let Some((op, ret)) = op {
                items.push(Item {
                    start: t.start,
                    end: t.end,
                    op,
                    ret,
                });
            }
        }
        items.sort_by_key(|i| i.start);
        // Cut at quiescent points (every operation before the cut ended before any after it
        // began): whatever the linearization of the part before, it applies that part's writes
        // in revision order, so the register then holds the highest-revision write — the part
        // after starts from that state. Each part is searched on its own.
        let mut state = RevRegister::default();
        let mut from = 0;
        let mut ended = 0u64;
        for i in 0..=items.len() {
            let quiescent = i == items.len() || (i > from && ended < items[i].start);
            if quiescent && i > from {
                let part = &items[from..i];
                if part.len() > OPS_PER_KEY_MAX {
                    return Verdict::NotChecked(format!(
                        "{key} has {} operations between two quiescent points, more than {OPS_PER_KEY_MAX}",
                        part.len()
                    ));
                }
                match linearizable(part, &state) {
                    Ok(true) => {}
                    Ok(false) => {
                        return Verdict::NotLinearizable {
                            key: key.to_string(),
                        }
                    }
                    Err(e) => return Verdict::NotChecked(format!("{key}: {e}")),
                }
                for it in part {
                    if let RegOp::Write(r, v) = &it.op {
                        if state.0.as_ref().is_none_or(|(cur, _)| cur < r) {
                            state.0 = Some((*r, v.clone()));
                        }
                    }
                }
                from = i;
            }
            if let Some(it) = items.get(i) {
                ended = ended.max(it.end.unwrap_or(u64::MAX));
            }
        }
    }
    Verdict::Linearizable(by_key.len())
}

/// One operation of a key as the tester sees it.
struct Item {
    start: u64,
    end: Option<u64>,
    op: RegOp,
    ret: RegRet,
}

/// stateright's verdict on `part`, from register state `init`. Its "threads" are assigned so
/// that a thread's operations never touch: a thread is reused only by an operation that starts
/// strictly after its previous one ended (program order is then real-time order, the one order
/// Meridian's checker uses; touching intervals stay concurrent). A write without an answer
/// never returns: its thread is never reused.
fn linearizable(part: &[Item], init: &RevRegister) -> Result<bool, String> {
    let mut thread_end: Vec<Option<u64>> = Vec::new();
    let mut thread_of = vec![0usize; part.len()];
    // (time, is_return, index): invocations before returns at equal times.
    let mut events: Vec<(u64, bool, usize)> = Vec::new();
    for (i, it) in part.iter().enumerate() {
        let free = thread_end
            .iter()
            .position(|e| e.is_some_and(|end| end < it.start));
        let thread = match free {
            Some(th) => th,
            None => {
                thread_end.push(None);
                thread_end.len() - 1
            }
        };
        thread_end[thread] = it.end;
        thread_of[i] = thread;
        events.push((it.start, false, i));
        if let Some(end) = it.end {
            events.push((end, true, i));
        }
    }
    events.sort_by_key(|&(time, is_return, i)| (time, is_return, i));
    let mut tester = LinearizabilityTester::new(init.clone());
    for (_, is_return, i) in events {
        if is_return {
            tester.on_return(thread_of[i], part[i].ret.clone())?;
        } else {
            tester.on_invoke(thread_of[i], part[i].op.clone())?;
        }
    }
    Ok(tester.is_consistent())
}

/// Whether stateright's verdict and Meridian's (`check_linearizable`) agree on `ops`; Err says
/// how they differ. Meridian's checker reads `ops`; stateright reads the history as exported —
/// Jepsen EDN ([`edn::to_edn`]) parsed back by a third-party parser (`edn-format`) — so that
/// the export is checked too: a history that does not survive it cannot agree.
pub fn agree(ops: &[Timed]) -> Result<Verdict, String> {
    agree_exported(ops, &edn::to_edn(ops))
}

/// [`agree`] with the export already made (`exported` = [`edn::to_edn`] of `ops`).
pub fn agree_exported(ops: &[Timed], exported: &str) -> Result<Verdict, String> {
    let exported = edn::from_edn(exported)
        .map_err(|e| format!("the exported history does not read back: {e}"))?;
    let kept = ops
        .iter()
        .filter(|t| t.end.is_some() || matches!(t.op.kind, OpKind::Write { .. }))
        .count();
    if exported.len() != kept {
        return Err(format!(
            "the exported history reads back {} operations of {kept}",
            exported.len()
        ));
    }
    verdicts(meridian_checker::check_linearizable(ops), check(&exported))
}

/// Both checkers over one history file (Jepsen EDN): Ok with the shared verdict, Err when the
/// file does not read or the checkers differ.
pub fn agree_on_edn(text: &str) -> Result<(Verdict, usize), String> {
    let ops = edn::from_edn(text)?;
    let v = verdicts(meridian_checker::check_linearizable(&ops), check(&ops))?;
    Ok((v, ops.len()))
}

fn verdicts(
    ours: Result<usize, meridian_checker::LinViolation>,
    theirs: Verdict,
) -> Result<Verdict, String> {
    match (&ours, &theirs) {
        (Ok(_), Verdict::Linearizable(_)) | (Err(_), Verdict::NotLinearizable { .. }) => {
            Ok(theirs)
        }
        (_, Verdict::NotChecked(why)) => Err(format!("the independent checker could not run: {why}")),
        (Ok(_), Verdict::NotLinearizable { key }) => Err(format!(
            "stateright finds {key} not linearizable where Meridian's checker passes the history"
        )),
        (Err(v), Verdict::Linearizable(_)) => Err(format!(
            "Meridian's checker fails the history ({v}) where stateright finds every key linearizable"
        )),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use meridian_checker::Op;

    /// An operation of `session` on group 1 (shared with `edn`'s tests).
    pub(crate) fn t(session: usize, start: u64, end: Option<u64>, kind: OpKind) -> Timed {
        Timed {
            op: Op {
                session,
                group: 1,
                kind,
            },
            start,
            end,
        }
    }

    fn w(s: usize, a: u64, b: Option<u64>, v: &str, rev: Option<u64>) -> Timed {
        t(
            s,
            a,
            b,
            OpKind::Write {
                key: "/k".into(),
                value: v.into(),
                revision: rev,
            },
        )
    }

    fn r(s: usize, a: u64, b: u64, v: Option<&str>, rev: Option<u64>) -> Timed {
        t(
            s,
            a,
            Some(b),
            OpKind::Read {
                key: "/k".into(),
                value: v.map(Into::into),
                mod_revision: rev,
            },
        )
    }

    /// Textbook cases, each with both checkers' verdicts: they must agree, and the verdict must
    /// be the expected one.
    #[test]
    fn both_checkers_agree_on_textbook_histories() {
        let cases: Vec<(&str, Vec<Timed>, bool)> = vec![
            (
                "sequential write then read",
                vec![
                    w(0, 0, Some(10), "a", Some(1)),
                    r(1, 20, 30, Some("a"), Some(1)),
                ],
                true,
            ),
            (
                "stale read after a completed write",
                vec![
                    w(0, 0, Some(10), "a", Some(1)),
                    w(0, 20, Some(30), "b", Some(2)),
                    r(1, 40, 50, Some("a"), Some(1)),
                ],
                false,
            ),
            (
                "read concurrent with a write may see either",
                vec![
                    w(0, 0, Some(10), "a", Some(1)),
                    w(0, 20, Some(60), "b", Some(2)),
                    r(1, 30, 40, Some("a"), Some(1)),
                    r(2, 45, 50, Some("b"), Some(2)),
                ],
                true,
            ),
            (
                "reads going back in time",
                vec![
                    w(0, 0, Some(100), "a", Some(1)),
                    w(3, 0, Some(100), "b", Some(2)),
                    r(1, 30, 40, Some("b"), Some(2)),
                    r(2, 50, 60, Some("a"), Some(1)),
                ],
                false,
            ),
            (
                "absent after a completed write",
                vec![w(0, 0, Some(10), "a", Some(1)), r(1, 20, 30, None, None)],
                false,
            ),
            (
                "a write without an answer that a read saw",
                vec![
                    w(0, 0, None, "a", None),
                    r(1, 50, 60, Some("a"), Some(1)),
                    r(1, 70, 80, Some("a"), Some(1)),
                ],
                true,
            ),
            (
                "a write without an answer, never read, the session going on",
                vec![
                    w(0, 0, None, "a", None),
                    w(0, 20, Some(30), "b", Some(2)),
                    r(1, 40, 50, Some("b"), Some(2)),
                ],
                true,
            ),
            (
                "writes applied against their revision order",
                vec![
                    w(0, 0, Some(10), "a", Some(2)),
                    w(1, 20, Some(30), "b", Some(1)),
                    r(2, 40, 50, Some("b"), Some(1)),
                ],
                false,
            ),
        ];
        for (name, ops, linearizable) in cases {
            let v = agree(&ops).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                matches!(v, Verdict::Linearizable(_)),
                linearizable,
                "{name}: {v:?}"
            );
        }
    }
}
