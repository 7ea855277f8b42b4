//! When this node made a group's entries durable (the log writer's append and fsync) and when
//! it applied them, for its last [`STEPS_MAX`] batches: the server's tracing turns them into
//! the `raft.append` and `raft.apply` spans of the requests those entries carried. Nothing is
//! recorded until tracing turns it on ([`record_steps`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

/// Batches remembered per group and kind.
pub const STEPS_MAX: usize = 256;

static ON: AtomicBool = AtomicBool::new(false);

/// Turns recording on or off for every group of this process.
pub fn record_steps(on: bool) {
    ON.store(on, Ordering::Relaxed);
}

/// Whether steps are recorded (tracing is on).
pub fn recording() -> bool {
    ON.load(Ordering::Relaxed)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepKind {
    /// Written to the log and fsynced.
    Append,
    /// Applied to the state machine.
    Apply,
}

#[derive(Clone, Copy, Debug)]
struct Step {
    first: u64,
    last: u64,
    start: SystemTime,
    end: SystemTime,
}

/// One group's recent steps.
#[derive(Default)]
pub struct Steps {
    append: Mutex<VecDeque<Step>>,
    apply: Mutex<VecDeque<Step>>,
}

impl Steps {
    fn ring(&self, kind: StepKind) -> &Mutex<VecDeque<Step>> {
        match kind {
            StepKind::Append => &self.append,
            StepKind::Apply => &self.apply,
        }
    }

    /// Entries `first..=last` went through `kind` from `start` to `end`.
    pub fn record(
        &self,
        kind: StepKind,
        first: u64,
        last: u64,
        start: SystemTime,
        end: SystemTime,
    ) {
        let mut ring = self.ring(kind).lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() >= STEPS_MAX {
            ring.pop_front();
        }
        ring.push_back(Step {
            first,
            last,
            start,
            end,
        });
    }

    /// When the entry at `index` went through `kind` (the latest such batch), if remembered.
    pub fn find(&self, kind: StepKind, index: u64) -> Option<(SystemTime, SystemTime)> {
        let ring = self.ring(kind).lock().unwrap_or_else(|p| p.into_inner());
        ring.iter()
            .rev()
            .find(|s| s.first <= index && index <= s.last)
            .map(|s| (s.start, s.end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn finds_the_latest_batch_holding_an_index_and_forgets_the_oldest() {
        let steps = Steps::default();
        let t = |ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        steps.record(StepKind::Append, 1, 3, t(1), t(2));
        // Truncated and appended again: the later one counts.
        steps.record(StepKind::Append, 3, 4, t(5), t(6));
        assert_eq!(steps.find(StepKind::Append, 2), Some((t(1), t(2))));
        assert_eq!(steps.find(StepKind::Append, 3), Some((t(5), t(6))));
        assert_eq!(steps.find(StepKind::Apply, 3), None);
        for i in 0..STEPS_MAX as u64 {
            steps.record(StepKind::Append, 10 + i, 10 + i, t(10), t(11));
        }
        assert_eq!(steps.find(StepKind::Append, 2), None);
        assert!(steps
            .find(StepKind::Append, 10 + STEPS_MAX as u64 - 1)
            .is_some());
    }
}
