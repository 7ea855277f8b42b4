//! Flattening and validating a history before any ordering question is asked.
//!
//! Everything here is a property of the record itself, not of an order: each key has one group,
//! each (key, value) names one write, each read names a write that exists, revisions agree, and
//! each write whose outcome the client never learned either gets a revision from a read that saw
//! it or is dropped because nobody did.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use crate::history::{History, Op, OpKind};
use crate::violation::{op_ref, Violation};

/// Problems listed in a malformed-history message; the rest are only counted.
const HISTORY_ERRORS_SHOWN_MAX: usize = 5;

/// An operation together with its place in the history.
pub(crate) struct FlatOp<'h> {
    pub session: usize,
    pub index: usize,
    pub op: &'h Op,
}

impl FlatOp<'_> {
    fn at(&self) -> String {
        op_ref(self.session, self.index)
    }
}

/// A validated history: ops numbered 0.. session by session, each session in program order.
pub(crate) struct Prepared<'h> {
    pub ops: Vec<FlatOp<'h>>,
    /// Per op: the revision of a write that takes part in the check (its own, or for an
    /// indeterminate write the mod_revision a read saw); None for reads and dropped writes.
    pub write_revision: Vec<Option<u64>>,
    /// Per op: for a read that returned a value, the op that wrote it.
    pub reads_from: Vec<Option<usize>>,
    /// Per op: false only for an indeterminate write that no read observed.
    pub included: Vec<bool>,
}

/// For an indeterminate write: the mod_revision a read saw it at, and that read.
type SeenAt = Option<(u64, usize)>;

/// A write as reads look it up: by (key, value).
struct WriteEntry {
    op: usize,
    revision: Option<u64>,
}

pub(crate) fn prepare(history: &History) -> Result<Prepared<'_>, Violation> {
    let mut errors = Vec::new();
    let ops = flatten(history, &mut errors);
    check_key_groups(&ops, &mut errors);
    let writes = index_writes(&ops, &mut errors);
    let (reads_from, observed_at) = resolve_reads(&ops, &writes, &mut errors);
    let (write_revision, included) = resolve_writes(&ops, &reads_from, &observed_at, &mut errors);
    if !errors.is_empty() {
        return Err(malformed(errors));
    }
    Ok(Prepared {
        ops,
        write_revision,
        reads_from,
        included,
    })
}

fn malformed(errors: Vec<String>) -> Violation {
    let message = match errors.as_slice() {
        [only] => format!("malformed history: {only}"),
        _ => {
            let shown = errors.len().min(HISTORY_ERRORS_SHOWN_MAX);
            format!(
                "malformed history: {} problems (first {shown} shown): {}",
                errors.len(),
                errors[..shown].join("; ")
            )
        }
    };
    Violation {
        message,
        cycle: Vec::new(),
    }
}

fn flatten<'h>(history: &'h History, errors: &mut Vec<String>) -> Vec<FlatOp<'h>> {
    let mut ops = Vec::with_capacity(history.len());
    for (session, session_ops) in history.sessions() {
        for (index, op) in session_ops.iter().enumerate() {
            if op.session != session {
                errors.push(format!(
                    "{} says it belongs to session {} but is recorded in session {session}",
                    op_ref(session, index),
                    op.session
                ));
            }
            ops.push(FlatOp { session, index, op });
        }
    }
    ops
}

/// Every key belongs to exactly one group; one error per key that does not.
fn check_key_groups(ops: &[FlatOp<'_>], errors: &mut Vec<String>) {
    // key -> (first op seen on it, already reported)
    let mut first_use: HashMap<&str, (usize, bool)> = HashMap::new();
    for (id, flat) in ops.iter().enumerate() {
        let key = flat.op.kind.key();
        match first_use.entry(key) {
            Entry::Vacant(entry) => {
                entry.insert((id, false));
            }
            Entry::Occupied(mut entry) => {
                let (first, reported) = entry.get_mut();
                let first = &ops[*first];
                if first.op.group != flat.op.group && !*reported {
                    *reported = true;
                    errors.push(format!(
                        "key {key} is used in group {} by {} and in group {} by {}; every key \
                         belongs to exactly one group",
                        first.op.group,
                        first.at(),
                        flat.op.group,
                        flat.at()
                    ));
                }
            }
        }
    }
}

/// Maps (key, value) to its write; a reused value would make reads ambiguous.
fn index_writes<'h>(
    ops: &[FlatOp<'h>],
    errors: &mut Vec<String>,
) -> HashMap<(&'h str, &'h str), WriteEntry> {
    let mut writes = HashMap::new();
    for (id, flat) in ops.iter().enumerate() {
        let OpKind::Write {
            key,
            value,
            revision,
        } = &flat.op.kind
        else {
            continue;
        };
        match writes.entry((key.as_str(), value.as_str())) {
            Entry::Vacant(entry) => {
                entry.insert(WriteEntry {
                    op: id,
                    revision: *revision,
                });
            }
            Entry::Occupied(entry) => {
                let first: &WriteEntry = entry.get();
                errors.push(format!(
                    "{} and {} both write {value:?} to {key}; write values must be unique per key \
                     so that a read names exactly one write",
                    ops[first.op].at(),
                    flat.at()
                ));
            }
        }
    }
    writes
}

/// Links each read to the write it names; for indeterminate writes, records the mod_revision
/// a read saw (with that read, for messages).
fn resolve_reads(
    ops: &[FlatOp<'_>],
    writes: &HashMap<(&str, &str), WriteEntry>,
    errors: &mut Vec<String>,
) -> (Vec<Option<usize>>, Vec<SeenAt>) {
    let mut reads_from = vec![None; ops.len()];
    let mut observed_at: Vec<SeenAt> = vec![None; ops.len()];
    for (id, flat) in ops.iter().enumerate() {
        let OpKind::Read {
            key,
            value,
            mod_revision,
        } = &flat.op.kind
        else {
            continue;
        };
        let Some(value) = value else {
            if let Some(mod_revision) = mod_revision {
                errors.push(format!(
                    "{} read {key} as absent yet reports mod_revision {mod_revision}; an absent \
                     key has no mod_revision",
                    flat.at()
                ));
            }
            continue;
        };
        let Some(write) = writes.get(&(key.as_str(), value.as_str())) else {
            errors.push(format!(
                "{} read {key} = {value:?}, a value no write to {key} produced",
                flat.at()
            ));
            continue;
        };
        reads_from[id] = Some(write.op);
        let Some(seen) = *mod_revision else {
            continue;
        };
        match (write.revision, observed_at[write.op]) {
            (Some(committed), _) if committed != seen => errors.push(format!(
                "{} read {key} = {value:?} with mod_revision {seen}, but {} wrote that value at \
                 revision {committed}",
                flat.at(),
                ops[write.op].at()
            )),
            (None, Some((earlier, reader))) if earlier != seen => errors.push(format!(
                "the indeterminate write {} of {key} = {value:?} was seen at mod_revision \
                 {earlier} by {} and at {seen} by {}",
                ops[write.op].at(),
                ops[reader].at(),
                flat.at()
            )),
            (None, None) => observed_at[write.op] = Some((seen, id)),
            _ => {}
        }
    }
    (reads_from, observed_at)
}

/// Gives every write its revision, drops unobserved indeterminate writes, and rejects two writes
/// of one key at one revision.
fn resolve_writes(
    ops: &[FlatOp<'_>],
    reads_from: &[Option<usize>],
    observed_at: &[SeenAt],
    errors: &mut Vec<String>,
) -> (Vec<Option<u64>>, Vec<bool>) {
    let mut observed = vec![false; ops.len()];
    for write in reads_from.iter().flatten() {
        observed[*write] = true;
    }
    let mut write_revision = vec![None; ops.len()];
    let mut included = vec![true; ops.len()];
    // A key lives in one group, so (key, revision) identifies a slot of that group's log.
    let mut at_revision: HashMap<(&str, u64), usize> = HashMap::new();
    for (id, flat) in ops.iter().enumerate() {
        let OpKind::Write {
            key,
            value,
            revision,
        } = &flat.op.kind
        else {
            continue;
        };
        let resolved = match (*revision, observed[id], observed_at[id]) {
            (Some(revision), _, _) => revision,
            (None, false, _) => {
                included[id] = false;
                continue;
            }
            (None, true, Some((seen, _))) => seen,
            (None, true, None) => {
                errors.push(format!(
                    "indeterminate write observed without revision: {} wrote {key} = {value:?} \
                     with unknown outcome, a read returned it, and no read of it reported a \
                     mod_revision; record mod_revision on reads",
                    flat.at()
                ));
                continue;
            }
        };
        write_revision[id] = Some(resolved);
        match at_revision.entry((key.as_str(), resolved)) {
            Entry::Vacant(entry) => {
                entry.insert(id);
            }
            Entry::Occupied(entry) => errors.push(format!(
                "{} and {} both write {key} at revision {resolved} of group {}; a revision holds \
                 at most one write per key",
                ops[*entry.get()].at(),
                flat.at(),
                flat.op.group
            )),
        }
    }
    (write_revision, included)
}
