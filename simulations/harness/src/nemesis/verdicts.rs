//! The nemesis run's verdicts: every checker over the recorded history, the watch streams and
//! the lock holds, and the count of acknowledged writes lost.

use super::Summary;
use anyhow::{Context, Result};
use meridian_checker::{OpKind, WatchLog};
use meridian_sim::det::{check, check_watches, timed_ops, Record};
use meridian_sim::lockers::LockLog;
use std::collections::BTreeMap;
use std::path::Path;

/// Every checker over the history, the watch streams and the lock holds; the history is
/// written to `export` (Jepsen EDN) when asked.
pub(super) fn verdicts(
    records: Vec<Record>,
    watches: &[WatchLog],
    lock_log: &LockLog,
    export: Option<&Path>,
    faults: Vec<String>,
    mut violations: Vec<String>,
) -> Result<Summary> {
    let (acked, indeterminate, lost) = lost_writes(&records);
    if lost > 0 {
        violations.push(format!("{lost} acknowledged write(s) lost"));
    }
    let (sequential, linearizable) = check(&records);
    if let Err(e) = sequential {
        violations.push(format!("sequential consistency: {e}"));
    }
    if let Err(e) = linearizable {
        violations.push(format!("linearizability (Meridian's checker): {e}"));
    }
    let timed = timed_ops(&records);
    let history = meridian_crosscheck::edn::to_edn(&timed);
    match meridian_crosscheck::agree_exported(&timed, &history) {
        Ok(meridian_crosscheck::Verdict::NotLinearizable { key }) => {
            violations.push(format!("linearizability (both checkers agree): key {key}"))
        }
        Ok(_) => {}
        Err(e) => violations.push(format!("the independent checker: {e}")),
    }
    if let Some(path) = export {
        std::fs::write(path, &history).with_context(|| format!("writing {}", path.display()))?;
    }
    let watch_events = match check_watches(&records, watches) {
        Ok(n) => n,
        Err(e) => {
            violations.push(format!("watch validators: {e}"));
            0
        }
    };
    let lock_holds = match lock_log.check() {
        Ok(n) => n,
        Err(e) => {
            violations.push(format!("locks: {e}"));
            0
        }
    };
    Ok(Summary {
        operations: records.len(),
        acked,
        indeterminate,
        lost,
        lock_holds,
        watch_events,
        faults,
        violations,
    })
}

/// (acknowledged, indeterminate, lost) writes: a write is lost when it was acknowledged at a
/// revision and the final linearizable reads (clients 100 and up) find its key lower.
pub fn lost_writes(records: &[Record]) -> (usize, usize, usize) {
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    for r in records.iter().filter(|r| r.client >= 100) {
        if let OpKind::Read {
            key,
            mod_revision: Some(m),
            ..
        } = &r.op.kind
        {
            last.insert(key, *m);
        }
    }
    let (mut acked, mut unknown, mut lost) = (0, 0, 0);
    for r in records {
        if let OpKind::Write { key, revision, .. } = &r.op.kind {
            match (r.end_us, revision) {
                (Some(_), Some(rev)) => {
                    acked += 1;
                    if last.get(key.as_str()).is_none_or(|m| m < rev) {
                        lost += 1;
                    }
                }
                _ => unknown += 1,
            }
        }
    }
    (acked, unknown, lost)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_checker::Op;

    fn write(client: usize, key: &str, revision: Option<u64>, acked: bool) -> Record {
        Record {
            client,
            region: "us-east".into(),
            start_us: 0,
            end_us: acked.then_some(1),
            linearizable: true,
            kind: 2,
            op: Op {
                session: client,
                group: 1,
                kind: OpKind::Write {
                    key: key.into(),
                    value: "v".into(),
                    revision,
                },
            },
            served: None,
        }
    }

    fn final_read(key: &str, mod_revision: u64) -> Record {
        Record {
            client: 100,
            region: "us-east".into(),
            start_us: 2,
            end_us: Some(3),
            linearizable: true,
            kind: 0,
            op: Op {
                session: 100,
                group: 1,
                kind: OpKind::Read {
                    key: key.into(),
                    value: Some("v".into()),
                    mod_revision: Some(mod_revision),
                },
            },
            served: None,
        }
    }

    #[test]
    fn a_write_acknowledged_above_the_final_revision_is_lost() {
        let records = vec![
            write(0, "/a", Some(5), true),
            write(0, "/a", None, false),
            write(1, "/b", Some(9), true),
            final_read("/a", 5),
            final_read("/b", 7),
        ];
        assert_eq!(lost_writes(&records), (2, 1, 1));
        // A key never read at the end loses what was acknowledged on it.
        assert_eq!(lost_writes(&records[..3]), (2, 1, 2));
    }
}
