//! Watch validators, after etcd's robustness tests: what one watcher received, checked against
//! the writes of the recorded history.
//!
//! A [`WatchLog`] is one watcher's stream as its client saw it, across every reconnect: event
//! batches and progress notices. [`check_watch`] checks that the stream is
//! - **ordered**: batches in increasing revision order (a revision split into fragments comes in
//!   consecutive batches), every event at its batch's revision;
//! - **unique**: no key changed twice at one revision;
//! - **real**: every event is a write of the history to that key with that value, at that write's
//!   revision when the history knows it;
//! - **atomic**: every acknowledged write of a delivered revision under the prefix is delivered
//!   with it (a revision is never split across a gap);
//! - **reliable**: every acknowledged write under the prefix whose revision lies between the
//!   watch's start and the last revision the stream vouched for (its last event or progress
//!   notice) was delivered;
//! - **honest in its progress**: a progress notice at revision P vouches that everything up to P
//!   was delivered, so no event at or below P comes after it, and notices never go back.
//!
//! [`check_resume`] checks **resumability**: a watch started at revision R delivers exactly the
//! events another watcher of the same prefix received from R on, over the range both vouched
//! for. Pure computation, like the other checkers.

use crate::history::{Op, OpKind};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// One change as a watcher received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchedEvent {
    pub key: String,
    /// The written value's id (what the history's writes record).
    pub value: String,
    pub mod_revision: u64,
}

/// What one response of a watch carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchItem {
    Events {
        revision: u64,
        events: Vec<WatchedEvent>,
    },
    Progress {
        revision: u64,
    },
}

/// One watcher's stream of a key prefix of one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchLog {
    pub watcher: String,
    pub group: u64,
    pub prefix: String,
    /// The revision asked to start at; 0 = "from now", fixed by the first progress notice.
    pub start: u64,
    pub items: Vec<WatchItem>,
}

/// Why a watch stream is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchViolation {
    pub watcher: String,
    pub rule: &'static str,
    pub detail: String,
}

impl fmt::Display for WatchViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "watch of {} is not {}: {}",
            self.watcher, self.rule, self.detail
        )
    }
}

impl std::error::Error for WatchViolation {}

impl WatchLog {
    /// The first revision this stream covers (for "from now": after its first notice).
    fn first(&self) -> Option<u64> {
        if self.start > 0 {
            return Some(self.start);
        }
        self.items.first().map(|i| match i {
            WatchItem::Progress { revision } => revision + 1,
            WatchItem::Events { revision, .. } => *revision,
        })
    }

    /// The last revision the stream vouched for (its last event or progress notice).
    fn last(&self) -> u64 {
        self.items
            .iter()
            .map(|i| match i {
                WatchItem::Progress { revision } | WatchItem::Events { revision, .. } => *revision,
            })
            .max()
            .unwrap_or(0)
    }

    fn events(&self) -> impl Iterator<Item = &WatchedEvent> {
        self.items.iter().flat_map(|i| match i {
            WatchItem::Events { events, .. } => events.as_slice(),
            WatchItem::Progress { .. } => &[],
        })
    }
}

/// The writes of `history` to keys under `prefix` in `group`: (key, value) → revision if known.
fn writes_under<'a>(
    history: impl IntoIterator<Item = &'a Op>,
    group: u64,
    prefix: &str,
) -> BTreeMap<(String, String), Option<u64>> {
    history
        .into_iter()
        .filter(|op| op.group == group)
        .filter_map(|op| match &op.kind {
            OpKind::Write {
                key,
                value,
                revision,
            } if key.starts_with(prefix) => Some(((key.clone(), value.clone()), *revision)),
            _ => None,
        })
        .collect()
}

/// Checks one watcher's stream against the history's writes; Ok: the events checked.
pub fn check_watch<'a>(
    log: &WatchLog,
    history: impl IntoIterator<Item = &'a Op>,
) -> Result<usize, WatchViolation> {
    let bad = |rule: &'static str, detail: String| WatchViolation {
        watcher: log.watcher.clone(),
        rule,
        detail,
    };
    let writes = writes_under(history, log.group, &log.prefix);
    let mut prev_batch = 0u64;
    let mut vouched = 0u64;
    let mut seen: BTreeSet<(u64, String)> = BTreeSet::new();
    let mut delivered: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    let mut count = 0;
    for (i, item) in log.items.iter().enumerate() {
        match item {
            WatchItem::Progress { revision } => {
                if *revision < vouched {
                    return Err(bad(
                        "honest in its progress",
                        format!("item {i}: a progress notice at {revision} after one at {vouched}"),
                    ));
                }
                vouched = *revision;
            }
            WatchItem::Events { revision, events } => {
                // A revision may repeat only as the next fragment, right after its first.
                let fragment = i > 0
                    && matches!(log.items[i - 1], WatchItem::Events { revision: r, .. } if r == *revision);
                if *revision < prev_batch || (*revision == prev_batch && !fragment) {
                    return Err(bad(
                        "ordered",
                        format!("item {i}: revision {revision} after revision {prev_batch}"),
                    ));
                }
                if *revision <= vouched {
                    return Err(bad(
                        "honest in its progress",
                        format!(
                            "item {i}: an event at revision {revision} after a progress notice \
                             vouched for everything up to {vouched}"
                        ),
                    ));
                }
                if log.start > 0 && *revision < log.start {
                    return Err(bad(
                        "ordered",
                        format!(
                            "item {i}: revision {revision} before the start {}",
                            log.start
                        ),
                    ));
                }
                prev_batch = *revision;
                for e in events {
                    count += 1;
                    if e.mod_revision != *revision || !e.key.starts_with(&log.prefix) {
                        return Err(bad(
                            "ordered",
                            format!(
                                "item {i}: {} at mod_revision {} in a batch of revision {revision} \
                                 (prefix {})",
                                e.key, e.mod_revision, log.prefix
                            ),
                        ));
                    }
                    if !seen.insert((*revision, e.key.clone())) {
                        return Err(bad(
                            "unique",
                            format!("{} at revision {revision} delivered twice", e.key),
                        ));
                    }
                    match writes.get(&(e.key.clone(), e.value.clone())) {
                        None => {
                            return Err(bad(
                                "real",
                                format!(
                                    "{} = {:?} at revision {revision}: no write of the history",
                                    e.key, e.value
                                ),
                            ))
                        }
                        Some(Some(r)) if *r != *revision => {
                            return Err(bad(
                                "real",
                                format!(
                                    "{} = {:?} delivered at revision {revision}, written at {r}",
                                    e.key, e.value
                                ),
                            ))
                        }
                        Some(_) => {}
                    }
                    delivered
                        .entry(*revision)
                        .or_default()
                        .insert(e.key.clone());
                }
            }
        }
    }
    let Some(first) = log.first() else {
        return Ok(count);
    };
    let last = log.last();
    for ((key, value), rev) in &writes {
        let Some(rev) = *rev else { continue };
        if rev < first || rev > last {
            continue;
        }
        if delivered.get(&rev).is_some_and(|keys| keys.contains(key)) {
            continue;
        }
        let rule = if delivered.contains_key(&rev) {
            "atomic"
        } else {
            "reliable"
        };
        return Err(bad(
            rule,
            format!(
                "{key} = {value:?} (acknowledged at revision {rev}) is missing from a stream \
                 that vouched for revisions {first}..={last}"
            ),
        ));
    }
    Ok(count)
}

/// Checks that `later` (started at a revision R) delivered exactly what `earlier`, a watcher of
/// the same group and prefix, received from R on, over the revisions both vouched for.
pub fn check_resume(earlier: &WatchLog, later: &WatchLog) -> Result<usize, WatchViolation> {
    let bad = |detail: String| WatchViolation {
        watcher: later.watcher.clone(),
        rule: "resumable",
        detail,
    };
    if earlier.group != later.group || earlier.prefix != later.prefix {
        return Err(bad(format!(
            "compared with {}, which watches another group or prefix",
            earlier.watcher
        )));
    }
    let (Some(from), Some(e_first)) = (later.first(), earlier.first()) else {
        return Ok(0);
    };
    if e_first > from {
        return Ok(0);
    }
    let upto = earlier.last().min(later.last());
    let pick = |log: &WatchLog| -> Vec<(u64, String, String)> {
        let mut v: Vec<_> = log
            .events()
            .filter(|e| e.mod_revision >= from && e.mod_revision <= upto)
            .map(|e| (e.mod_revision, e.key.clone(), e.value.clone()))
            .collect();
        v.sort();
        v
    };
    let (a, b) = (pick(earlier), pick(later));
    if a != b {
        let first_diff = a
            .iter()
            .zip(&b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len()));
        return Err(bad(format!(
            "from revision {from} to {upto} it received {} events and {} received {}; first \
             difference at event {first_diff}: {:?} vs {:?}",
            b.len(),
            earlier.watcher,
            a.len(),
            b.get(first_diff),
            a.get(first_diff)
        )));
    }
    Ok(a.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(key: &str, value: &str, rev: Option<u64>) -> Op {
        Op {
            session: 0,
            group: 1,
            kind: OpKind::Write {
                key: key.into(),
                value: value.into(),
                revision: rev,
            },
        }
    }

    fn ev(rev: u64, key: &str, value: &str) -> WatchItem {
        WatchItem::Events {
            revision: rev,
            events: vec![WatchedEvent {
                key: key.into(),
                value: value.into(),
                mod_revision: rev,
            }],
        }
    }

    fn log(start: u64, items: Vec<WatchItem>) -> WatchLog {
        WatchLog {
            watcher: "w".into(),
            group: 1,
            prefix: "/p/".into(),
            start,
            items,
        }
    }

    fn history() -> Vec<Op> {
        vec![
            w("/p/a", "1", Some(1)),
            w("/q/x", "9", Some(2)),
            w("/p/b", "2", Some(3)),
            w("/p/a", "3", None),
            w("/p/a", "4", Some(5)),
        ]
    }

    /// A correct stream passes; each rule, broken once, is named.
    #[test]
    fn each_broken_rule_is_caught_and_named() {
        let h = history();
        let good = vec![
            ev(1, "/p/a", "1"),
            WatchItem::Progress { revision: 2 },
            ev(3, "/p/b", "2"),
            ev(4, "/p/a", "3"),
            ev(5, "/p/a", "4"),
            WatchItem::Progress { revision: 6 },
        ];
        assert_eq!(check_watch(&log(1, good.clone()), &h), Ok(4));
        // The write of unknown outcome may be missing (it may not have happened).
        let mut without = good.clone();
        without.remove(3);
        assert_eq!(check_watch(&log(1, without), &h), Ok(3));

        let cases: Vec<(Vec<WatchItem>, &str)> = vec![
            (vec![ev(3, "/p/b", "2"), ev(1, "/p/a", "1")], "ordered"),
            (vec![ev(1, "/p/a", "1"), ev(1, "/p/a", "1")], "unique"),
            (vec![ev(1, "/p/a", "7")], "real"),
            (vec![ev(2, "/p/a", "1")], "real"),
            (
                vec![ev(1, "/p/a", "1"), WatchItem::Progress { revision: 6 }],
                "reliable",
            ),
            (
                vec![
                    ev(1, "/p/a", "1"),
                    WatchItem::Progress { revision: 3 },
                    ev(3, "/p/b", "2"),
                ],
                "honest in its progress",
            ),
            (
                vec![
                    WatchItem::Progress { revision: 4 },
                    WatchItem::Progress { revision: 3 },
                ],
                "honest in its progress",
            ),
        ];
        for (items, rule) in cases {
            let e = check_watch(&log(1, items.clone()), &h).expect_err(rule);
            assert_eq!(e.rule, rule, "{items:?}: {e}");
        }
        // Atomic: two keys written at one revision, one of them delivered.
        let mut h2 = h.clone();
        h2.push(w("/p/c", "5", Some(3)));
        let e = check_watch(&log(3, vec![ev(3, "/p/b", "2")]), &h2).expect_err("atomic");
        assert_eq!(e.rule, "atomic", "{e}");
        // "From now": the first notice fixes the start; what came before is not owed.
        assert_eq!(
            check_watch(
                &log(
                    0,
                    vec![WatchItem::Progress { revision: 3 }, ev(5, "/p/a", "4")]
                ),
                &h
            ),
            Ok(1)
        );
    }

    #[test]
    fn a_resumed_watch_must_deliver_what_the_first_one_got() {
        let full = log(
            1,
            vec![
                ev(1, "/p/a", "1"),
                ev(3, "/p/b", "2"),
                ev(5, "/p/a", "4"),
                WatchItem::Progress { revision: 6 },
            ],
        );
        let mut later = log(3, vec![ev(3, "/p/b", "2"), ev(5, "/p/a", "4")]);
        later.watcher = "late".into();
        assert_eq!(check_resume(&full, &later), Ok(2));
        later.items.remove(0);
        let e = check_resume(&full, &later).expect_err("missing");
        assert_eq!(e.rule, "resumable", "{e}");
    }
}
