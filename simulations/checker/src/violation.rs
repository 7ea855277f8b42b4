//! What the checker says when a history fails: a message, and for an ordering failure the cycle
//! of operations that cannot all come before one another.

use std::fmt;

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
