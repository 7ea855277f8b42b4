//! Checkers over recorded histories: cross-group sequential consistency, per-key
//! linearizability ([`linear`]), and lock safety ([`locks`]: no two valid holders, fencing
//! tokens strictly increasing).
//!
//! - [`history`]: what was recorded — sessions of completed reads and writes ([`History`]).
//! - `prepare`: checks of the record itself (each key in one group, unique write values, reads
//!   that name real writes, consistent revisions) and the fate of writes whose outcome is unknown.
//! - `graph`: the constraint graph, its topological order (the witness) and cycle search.
//! - [`violation`]: what a failure says ([`Violation`]).
//! - [`watch`]: watch validators — a watcher's stream against the history's writes (ordered,
//!   unique, real, atomic, reliable, honest progress) and a resumed watch against another.
//!
//! Pure computation: no IO, no clock, no randomness.
//!
//! # What is checked
//!
//! A history is a set of sessions, each a program-ordered list of completed operations on keys;
//! each key belongs to exactly one Raft group, and a group's writes carry that group's log index
//! as their revision (several writes may share one revision only on different keys: a batch).
//! The history is *sequentially consistent* iff one total order of all operations
//!
//! 1. respects each session's program order,
//! 2. respects each group's revision order (a write at a lower revision of a group comes before
//!    one at a higher revision of the same group), and
//! 3. is legal: every read returns the value of the latest preceding write to its key, or
//!    "absent" if none precedes it (every key starts absent).
//!
//! Groups are otherwise independent: nothing orders two groups' revisions against each other,
//! which is exactly what makes the check cross-group — a session may not see group 2 "go back in
//! time" relative to what it, or the sessions it learned from, saw of group 1.
//!
//! # Algorithm
//!
//! Build a graph whose edges `a -> b` mean "every such order puts `a` before `b`":
//!
//! - consecutive operations of a session;
//! - per group, each batch of writes (one revision) before every write of the next revision
//!   used (through a barrier node when both batches have several writes, to stay linear);
//! - for a read `r` of key `k` that returned write `w`: `w -> r`, and `r -> w'` where `w'` is the
//!   next write to `k` in revision order;
//! - for a read `r` of `k` that returned absent: `r -> ` the first write to `k`.
//!
//! The history is sequentially consistent iff this graph is acyclic, and then any topological
//! order is a witness. Necessity: a legal order satisfying 1 and 2 satisfies every edge — in
//! particular if `w'` came before `r`, then `w'` (after `w` by revision) and not `w` would be
//! the latest write to `k` before `r`. Sufficiency: in a topological order, every write to `k`
//! at or below `w`'s revision is before `r` (chain through `w`), and every other is `w'` or
//! after it, so after `r`; hence `w` is the latest write to `k` before `r`, and likewise for
//! absent reads.
//!
//! This is exact and runs in time linear in the history (plus sorting) only because revisions
//! fix the order of the writes to each key. Without them, deciding sequential consistency is
//! NP-complete (Gibbons and Korach, 1997): the checker would have to guess each key's write order.
//! Reads are tied to writes by value, so write values must be unique per key.
//!
//! # Writes with unknown outcome
//!
//! A write recorded with `revision: None` (the client timed out) may or may not have happened.
//! If no read returned its value, it is dropped: the history is checked as if it never happened
//! and the witness leaves it out. If a read returned it with a `mod_revision`, that is its
//! revision. If reads returned it but none reported a `mod_revision`, its place in the group's
//! order is unknown and the history is rejected as malformed.
//!
//! An included write with unknown outcome follows what its session did before it, but nothing
//! its session does afterwards is ordered after it: the client never learned whether or when
//! it took effect, and it may take effect after the session's next operations (the contract in
//! docs/consistency.md; Jepsen likewise treats a process whose operation ended `:info` as
//! gone). The session's answered operations stay in program order around it.
//!
//! # Failures
//!
//! A malformed history (a value no write produced, a write value used twice on a key, two
//! writes of a key at one revision, a read's `mod_revision` contradicting its write's revision,
//! a key in two groups, an indeterminate write observed without revision) is reported as a
//! [`Violation`] with an empty cycle. An ordering failure is reported with a cycle of operations,
//! each forced before the next, with the reason for every step.

mod explain;
mod graph;
pub mod history;
pub mod linear;
pub mod locks;
mod prepare;
pub mod violation;
pub mod watch;

pub use history::{History, Op, OpKind};
pub use linear::{check_linearizable, LinViolation, Timed};
pub use locks::{FenceRejected, FencedResource, Hold, LockHistory, LockReport, LockViolation};
pub use violation::Violation;
pub use watch::{check_resume, check_watch, WatchItem, WatchLog, WatchViolation, WatchedEvent};

/// Checks that `history` is sequentially consistent across groups.
///
/// Ok: a witness total order as `(session, index)` pairs — every operation except dropped
/// indeterminate writes. Err: why not, or why the history cannot be checked.
pub fn check_sequential(history: &History) -> Result<Vec<(usize, usize)>, Violation> {
    let prepared = prepare::prepare(history)?;
    let graph = graph::Graph::build(&prepared);
    match graph.topological_order() {
        Ok(order) => Ok(order
            .into_iter()
            .filter(|&node| graph.is_op(node) && prepared.included[node])
            .map(|node| {
                let flat = &prepared.ops[node];
                (flat.session, flat.index)
            })
            .collect()),
        Err(emitted) => {
            let cycle = graph.find_cycle(&emitted);
            Err(explain::explain_cycle(&prepared.ops, &graph, &cycle))
        }
    }
}
