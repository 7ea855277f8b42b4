//! A cycle of the ordering graph told as a violation: each operation of the cycle, the edge it
//! leaves by, and a bounded number of lines.

use crate::graph::{Graph, Why};
use crate::prepare::FlatOp;
use crate::violation::{op_ref, Violation, CYCLE_LINES_MAX};

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
