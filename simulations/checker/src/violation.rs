//! What the checker says when a history fails: a message, and for an ordering failure the cycle
//! of operations that cannot all come before one another.

use std::fmt;

use crate::graph::{Graph, Why};
use crate::prepare::FlatOp;

/// Most cycle lines a violation carries; a longer cycle keeps its two ends and counts the middle.
pub(crate) const CYCLE_LINES_MAX: usize = 20;

/// Why a history is not sequentially consistent, or why it could not be checked at all.
///
/// A malformed history (a value no write produced, a reused write value, ...) has a message
/// starting with `malformed history` and an empty `cycle`; an ordering failure has a message
/// starting with `not sequentially consistent` and one line per operation of the cycle.
#[derive(Debug, Clone)]
pub struct Violation {
    pub message: String,
    pub cycle: Vec<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        for line in &self.cycle {
            write!(f, "\n  {line}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Violation {}

/// How an operation is named in messages: `s3[17]` is session 3's 18th operation.
pub(crate) fn op_ref(session: usize, index: usize) -> String {
    format!("s{session}[{index}]")
}

impl Why {
    fn describe(self) -> &'static str {
        match self {
            Why::SessionOrder => "session order",
            Why::RevisionOrder => "lower revision in the same group",
            Why::ReadsFrom => "its value is read by",
            Why::OverwrittenLater => "read before the next write to its key",
            Why::AbsentBeforeFirstWrite => "read as absent, so before the key's first write",
        }
    }
}

/// Turns a graph cycle (each node with the edge it leaves by) into a bounded explanation.
pub(crate) fn explain_cycle(
    ops: &[FlatOp<'_>],
    graph: &Graph,
    cycle: &[(usize, Why)],
) -> Violation {
    let steps: Vec<(String, &FlatOp<'_>, Why)> = cycle
        .iter()
        .filter(|(node, _)| graph.is_op(*node))
        .filter_map(|&(node, why)| {
            let flat = ops.get(node)?;
            Some((op_ref(flat.session, flat.index), flat, why))
        })
        .collect();
    let count = steps.len();
    let first_ref = steps
        .first()
        .map(|(at, _, _)| at.clone())
        .unwrap_or_default();
    let mut lines: Vec<String> = steps
        .iter()
        .enumerate()
        .map(|(i, (at, flat, why))| {
            let back = if i + 1 == count {
                format!(" (back to {first_ref})")
            } else {
                String::new()
            };
            format!("{at} {}  --[{}]-->{back}", flat.op, why.describe())
        })
        .collect();
    if lines.len() > CYCLE_LINES_MAX {
        let head = CYCLE_LINES_MAX / 2;
        let tail = CYCLE_LINES_MAX - head - 1;
        let hidden = lines.len() - head - tail;
        let tail_lines = lines.split_off(lines.len() - tail);
        lines.truncate(head);
        lines.push(format!("... {hidden} more operations ..."));
        lines.extend(tail_lines);
    }
    Violation {
        message: format!(
            "not sequentially consistent: these {count} operations form a cycle, each forced \
             before the next and the last before the first, so no single order of all operations \
             agrees with session order, group revision order and the values read"
        ),
        cycle: lines,
    }
}
