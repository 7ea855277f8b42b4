//! Per-key linearizability of a register history whose writes carry their revision.
//!
//! Raft orders every key's writes, and each acknowledged write reports its revision, so the
//! order of writes per key is known: the Wing–Gong–Lowe search collapses to a graph check. A
//! key's history is linearizable iff the graph with these edges (`a -> b`: `a` takes effect
//! before `b`) is acyclic:
//!
//! - real time: `a` ended before `b` started;
//! - write order: each write before the key's next write by revision;
//! - reads-from: a read that returned write `w` comes after `w` and before `w`'s successor;
//! - a read that found the key absent comes before the key's first write.
//!
//! The argument is the sequential checker's (see the crate docs) with real-time order in place
//! of session order: a topological order is a legal sequential register history that respects
//! real time, and any linearization satisfies every edge.
//!
//! A write whose outcome is unknown (`revision: None`, or no answer) may take effect at any
//! time after it started: its interval never ends. If a read returned it with a `mod_revision`
//! it takes that place in the order; otherwise it is left out (as if it never happened).

use crate::history::{Op, OpKind};
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// An operation and its real-time interval (any unit). `end: None`: no answer came.
#[derive(Clone, Debug)]
pub struct Timed {
    pub op: Op,
    pub start: u64,
    pub end: Option<u64>,
}

/// Why a key's history is not linearizable (or cannot be checked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinViolation {
    pub key: String,
    pub reason: String,
    /// Operations of a cycle, each forced before the next (empty for a malformed history).
    pub cycle: Vec<String>,
}

impl fmt::Display for LinViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key {}: {}", self.key, self.reason)?;
        for c in &self.cycle {
            write!(f, "\n  {c}")?;
        }
        Ok(())
    }
}

/// Checks every key of `ops` (writes, and the reads that promise linearizability). Ok: the
/// number of keys checked.
pub fn check_linearizable(ops: &[Timed]) -> Result<usize, LinViolation> {
    let mut by_key: BTreeMap<&str, Vec<&Timed>> = BTreeMap::new();
    for t in ops {
        by_key.entry(t.op.kind.key()).or_default().push(t);
    }
    for (key, ops) in &by_key {
        check_key(key, ops)?;
    }
    Ok(by_key.len())
}

fn describe(t: &Timed) -> String {
    match t.end {
        Some(end) => format!("{} [{}..{}]", t.op, t.start, end),
        None => format!("{} [{}..no answer]", t.op, t.start),
    }
}

fn check_key(key: &str, ops: &[&Timed]) -> Result<(), LinViolation> {
    let bad = |reason: String| LinViolation {
        key: key.to_string(),
        reason,
        cycle: Vec::new(),
    };
    // Revisions of unknown-outcome writes that some read observed.
    let mut observed: HashMap<&str, u64> = HashMap::new();
    for t in ops {
        if let OpKind::Read {
            value: Some(v),
            mod_revision: Some(r),
            ..
        } = &t.op.kind
        {
            observed.insert(v.as_str(), *r);
        }
    }
    // Nodes: included ops with their interval (end u64::MAX = open).
    struct Node<'a> {
        t: &'a Timed,
        start: u64,
        end: u64,
    }
    let mut nodes: Vec<Node> = Vec::new();
    let mut writes: Vec<(u64, usize)> = Vec::new(); // (revision, node)
    let mut by_value: HashMap<&str, usize> = HashMap::new();
    for t in ops {
        if let OpKind::Write {
            value, revision, ..
        } = &t.op.kind
        {
            let (rev, open) = match revision {
                Some(r) => (Some(*r), false),
                None => (observed.get(value.as_str()).copied(), true),
            };
            let Some(rev) = rev else { continue };
            let end = match (open, t.end) {
                (false, Some(e)) => e,
                _ => u64::MAX,
            };
            if by_value.insert(value.as_str(), nodes.len()).is_some() {
                return Err(bad(format!("value {value:?} written twice")));
            }
            writes.push((rev, nodes.len()));
            nodes.push(Node {
                t,
                start: t.start,
                end,
            });
        }
    }
    writes.sort_unstable();
    if let Some(w) = writes.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(bad(format!("two writes at revision {}", w[0].0)));
    }
    let order: HashMap<usize, usize> = writes
        .iter()
        .enumerate()
        .map(|(i, &(_, n))| (n, i))
        .collect();
    let mut edges: Vec<(usize, usize, &'static str)> = Vec::new();
    for w in writes.windows(2) {
        edges.push((w[0].1, w[1].1, "next write by revision"));
    }
    for t in ops {
        let OpKind::Read {
            value,
            mod_revision,
            ..
        } = &t.op.kind
        else {
            continue;
        };
        let Some(end) = t.end else { continue };
        let r = nodes.len();
        nodes.push(Node {
            t,
            start: t.start,
            end,
        });
        match value {
            Some(v) => {
                let Some(&w) = by_value.get(v.as_str()) else {
                    return Err(bad(format!(
                        "a read returned {v:?}, which no write of this history produced"
                    )));
                };
                let i = order[&w];
                if let Some(m) = mod_revision {
                    if *m != writes[i].0 {
                        return Err(bad(format!(
                            "a read reported {v:?} at mod_revision {m}, its write is at {}",
                            writes[i].0
                        )));
                    }
                }
                edges.push((w, r, "read returned this write"));
                if let Some(&(_, next)) = writes.get(i + 1) {
                    edges.push((r, next, "read returned the previous write"));
                }
            }
            None => {
                if let Some(&(_, first)) = writes.first() {
                    edges.push((r, first, "read found the key absent"));
                }
            }
        }
    }
    // Real time: a -> b when a ended before b started. Sorted by start, the candidates of a are
    // a suffix.
    let mut by_start: Vec<usize> = (0..nodes.len()).collect();
    by_start.sort_by_key(|&i| nodes[i].start);
    for a in 0..nodes.len() {
        let end = nodes[a].end;
        if end == u64::MAX {
            continue;
        }
        let from = by_start.partition_point(|&i| nodes[i].start <= end);
        for &b in &by_start[from..] {
            edges.push((a, b, "ended before the next started"));
        }
    }
    // Kahn's algorithm; what remains contains a cycle.
    let n = nodes.len();
    let mut indegree = vec![0usize; n];
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut preds: Vec<Vec<(usize, &'static str)>> = vec![Vec::new(); n];
    for &(a, b, why) in &edges {
        indegree[b] += 1;
        out[a].push(b);
        preds[b].push((a, why));
    }
    let mut ready: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut done = vec![false; n];
    while let Some(a) = ready.pop() {
        done[a] = true;
        for &b in &out[a] {
            indegree[b] -= 1;
            if indegree[b] == 0 {
                ready.push(b);
            }
        }
    }
    let Some(start) = (0..n).find(|&i| !done[i]) else {
        return Ok(());
    };
    // Walk predecessors among the remaining nodes until one repeats: that is a cycle.
    let mut seen: HashMap<usize, usize> = HashMap::new();
    let mut path: Vec<(usize, &'static str)> = Vec::new();
    let mut cur = start;
    loop {
        if let Some(&at) = seen.get(&cur) {
            let mut cycle: Vec<String> = path[at..]
                .iter()
                .rev()
                .map(|&(node, why)| format!("{} — then, because {why}:", describe(nodes[node].t)))
                .collect();
            cycle.push(describe(nodes[cur].t));
            return Err(LinViolation {
                key: key.to_string(),
                reason: "no linearization exists".into(),
                cycle,
            });
        }
        let Some(&(p, why)) = preds[cur].iter().find(|(p, _)| !done[*p]) else {
            return Err(bad(
                "internal: a remaining node without remaining predecessor".into(),
            ));
        };
        seen.insert(cur, path.len());
        path.push((p, why));
        cur = p;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(value: &str, rev: Option<u64>, start: u64, end: Option<u64>) -> Timed {
        Timed {
            op: Op {
                session: 0,
                group: 1,
                kind: OpKind::Write {
                    key: "k".into(),
                    value: value.into(),
                    revision: rev,
                },
            },
            start,
            end,
        }
    }

    fn r(value: Option<&str>, start: u64, end: u64) -> Timed {
        Timed {
            op: Op {
                session: 1,
                group: 1,
                kind: OpKind::Read {
                    key: "k".into(),
                    value: value.map(str::to_string),
                    mod_revision: None,
                },
            },
            start,
            end: Some(end),
        }
    }

    #[test]
    fn concurrent_reads_may_see_either_value() {
        let h = [
            w("a", Some(1), 0, Some(10)),
            w("b", Some(2), 20, Some(40)),
            r(Some("a"), 25, 30),
            r(Some("b"), 26, 35),
            r(None, 0, 5),
        ];
        assert_eq!(check_linearizable(&h), Ok(1));
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_caught() {
        let h = [
            w("a", Some(1), 0, Some(10)),
            w("b", Some(2), 20, Some(30)),
            r(Some("a"), 40, 50),
        ];
        let e = check_linearizable(&h).expect_err("stale read");
        assert_eq!(e.key, "k");
        assert!(e.cycle.len() >= 2, "{e}");
    }

    #[test]
    fn reads_must_not_go_back_in_real_time() {
        // b's write is concurrent with both reads, but once one read saw b, a later read
        // must not see a again.
        let h = [
            w("a", Some(1), 0, Some(10)),
            w("b", Some(2), 20, Some(100)),
            r(Some("b"), 30, 40),
            r(Some("a"), 50, 60),
        ];
        assert!(check_linearizable(&h).is_err());
    }

    #[test]
    fn revision_order_must_respect_real_time() {
        let h = [w("a", Some(2), 0, Some(10)), w("b", Some(1), 20, Some(30))];
        assert!(check_linearizable(&h).is_err());
    }

    #[test]
    fn unknown_writes_are_dropped_or_placed_by_what_reads_saw() {
        // Never observed: as if it never happened.
        let h = [
            w("a", Some(1), 0, Some(10)),
            w("x", None, 12, None),
            r(Some("a"), 50, 60),
        ];
        assert_eq!(check_linearizable(&h), Ok(1));
        // Observed with a revision: it took effect, possibly long after its call.
        let mut seen = r(Some("x"), 100, 110);
        if let OpKind::Read { mod_revision, .. } = &mut seen.op.kind {
            *mod_revision = Some(2);
        }
        let h = [w("a", Some(1), 0, Some(10)), w("x", None, 12, None), seen];
        assert_eq!(check_linearizable(&h), Ok(1));
    }

    #[test]
    fn malformed_histories_are_named() {
        let h = [w("a", Some(1), 0, Some(10)), r(Some("zz"), 20, 30)];
        let e = check_linearizable(&h).expect_err("phantom");
        assert!(e.reason.contains("no write"), "{e}");
        let h = [w("a", Some(1), 0, Some(10)), w("b", Some(1), 20, Some(30))];
        assert!(check_linearizable(&h)
            .expect_err("dup")
            .reason
            .contains("revision 1"));
    }
}
