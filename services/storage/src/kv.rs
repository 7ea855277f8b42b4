//! The key-value state of one group, in memory, and the deterministic rules that change it.
//!
//! Applying a command yields its result and the list of [`Event`]s it caused; persistence
//! layers derive their writes from those events, so the fjall and the in-memory stores share
//! every rule here.

use crate::leases::{Dirty, LeaseState};
use crate::locks::LockState;
use crate::sequence::SEQUENCE_DIGITS;
use meridian_types::{
    Command, CommandResult, Compare, CompareResult, CompareTarget, DeleteOp, Event, EventKind,
    KeyValue, LeaseCommand, Op, OpResult, PutOp, Rejection,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;

/// All keys of a group plus the counter behind sequential keys.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvState {
    pub keys: BTreeMap<String, KeyValue>,
    /// Last suffix handed to a sequential put.
    pub sequence: u64,
    /// Log index of the last entry applied to these keys: the revision a read of them is at.
    pub revision: u64,
    /// Live leases, with the keys attached to each.
    pub leases: BTreeMap<u64, LeaseState>,
    /// Lock queues by lock name. A lease refers to a waiter's key by this very name
    /// (`leases::KeyRef`), hence the `Arc`. Persisted as it always was (`locks::serde_locks`).
    #[serde(with = "crate::locks::serde_locks")]
    pub locks: BTreeMap<Arc<str>, LockState>,
    /// Leases and locks changed since the store last took this (not part of the state).
    #[serde(skip)]
    pub dirty: Dirty,
    /// The group's commit timestamp and largest closed-timestamp promise as of `revision`
    /// (docs/closed-timestamps.md): beside the state, so a read sees the two together; kept
    /// out of the state's encoding (stores and snapshots keep them after it).
    #[serde(skip)]
    pub stamps: meridian_types::hlc::Stamps,
    /// The commit timestamps of recent changes (not part of the state; in memory only), so a
    /// read by closed timestamps is served at the lowest timestamp its answer holds at.
    #[serde(skip)]
    pub recent: crate::recent::Recent,
}

/// A command the state machine refuses, with the rule it broke; nothing changes.
pub(crate) fn reject(rule: &str, message: String) -> CommandResult {
    CommandResult::Rejected(Rejection {
        rule: rule.to_string(),
        message,
    })
}

fn missing_lease(id: u64) -> CommandResult {
    CommandResult::Rejected(Rejection {
        rule: "lease_not_found".into(),
        message: format!(
            "lease {id} does not exist (it expired, was revoked, or was never granted); nothing was written"
        ),
    })
}

impl KvState {
    /// Applies `cmd` at `revision` (the entry's log index). Returns the result and the changes.
    pub fn apply(&mut self, revision: u64, cmd: &Command) -> (CommandResult, Vec<Event>) {
        let mut events = Vec::new();
        self.revision = self.revision.max(revision);
        let result = self.apply_one(revision, cmd, &mut events);
        (result, events)
    }

    pub(crate) fn apply_one(
        &mut self,
        revision: u64,
        cmd: &Command,
        events: &mut Vec<Event>,
    ) -> CommandResult {
        // The state machine takes an entry's stamp off before it gets here (sm.rs): one inside
        // another command was not made by a proposer.
        if let Command::Stamped { .. } = cmd {
            return reject(
                "nested_stamp",
                "a stamp is put by a group's proposer around a whole entry; a stamped command \
                 inside another is refused, nothing was written"
                    .into(),
            );
        }
        // Judged by the move's import first; the write inside it by the usual rules.
        if let Command::AfterImport { id, cmd } = cmd {
            return self.apply_after_import(revision, *id, cmd, events);
        }
        if let Some(epoch) = self.moved_away(cmd) {
            return CommandResult::WrongGroup { epoch };
        }
        match cmd {
            Command::Batch(cmds) => CommandResult::Batch(
                cmds.iter()
                    .map(|c| match c {
                        // Never nested: the proposer builds batches of plain commands only.
                        Command::Batch(_) => CommandResult::Batch(Vec::new()),
                        c => self.apply_one(revision, c, events),
                    })
                    .collect(),
            ),
            Command::Move(m) => self.apply_move(revision, m, events),
            // Judged above, before the freeze check.
            Command::AfterImport { id, cmd } => self.apply_after_import(revision, *id, cmd, events),
            // Refused above.
            Command::Stamped { .. } => CommandResult::Batch(Vec::new()),
            Command::Put(op) => {
                if !self.lease_usable(op.lease) {
                    return missing_lease(op.lease);
                }
                CommandResult::Op(self.put(revision, op, events))
            }
            Command::Lease(l) => self.apply_lease(revision, l, events),
            Command::Placement(c) => self.apply_placement(revision, c, events),
            Command::Delete(op) => CommandResult::Op(self.delete(revision, op, events)),
            Command::Txn {
                compares,
                success,
                failure,
            } => {
                let succeeded = compares.iter().all(|c| self.compare(c));
                let ops = if succeeded { success } else { failure };
                for op in ops {
                    if let Op::Put(p) = op {
                        if !self.lease_usable(p.lease) {
                            return missing_lease(p.lease);
                        }
                    }
                }
                let results = ops
                    .iter()
                    .map(|op| match op {
                        Op::Put(p) => self.put(revision, p, events),
                        Op::Delete(d) => self.delete(revision, d, events),
                        Op::Get { key } => OpResult::Get {
                            kv: self.keys.get(key).cloned(),
                        },
                    })
                    .collect();
                CommandResult::Txn { succeeded, results }
            }
        }
    }

    /// The epoch a key or lock `cmd` writes moved away at, if any did (`moves.rs`). Costs one
    /// map probe when nothing is frozen (the common case: this is on every write).
    fn moved_away(&self, cmd: &Command) -> Option<u64> {
        if !self.any_frozen() {
            return None;
        }
        let lock_name = match cmd {
            Command::Lease(LeaseCommand::Acquire { name: key, .. })
            | Command::Lease(LeaseCommand::Proclaim { key, .. }) => Some(key.as_str()),
            _ => None,
        };
        lock_name
            .map(|k| (k, false))
            .into_iter()
            .chain(cmd.scopes())
            .find_map(|(k, prefix)| self.frozen_at(k, prefix))
    }

    fn conditions_hold(
        current: Option<&KeyValue>,
        expected_version: Option<u64>,
        expected_mod_revision: Option<u64>,
    ) -> bool {
        let version = current.map_or(0, |kv| kv.version);
        let mod_revision = current.map_or(0, |kv| kv.mod_revision);
        expected_version.is_none_or(|v| v == version)
            && expected_mod_revision.is_none_or(|r| r == mod_revision)
    }

    fn put(&mut self, revision: u64, op: &PutOp, events: &mut Vec<Event>) -> OpResult {
        let key = if op.sequential {
            self.sequence += 1;
            format!(
                "{}{:0width$}",
                op.key,
                self.sequence,
                width = SEQUENCE_DIGITS
            )
        } else {
            op.key.clone()
        };
        let current = self.keys.get(&key);
        if !Self::conditions_hold(current, op.expected_version, op.expected_mod_revision) {
            return OpResult::Put {
                key,
                succeeded: false,
                prev_kv: None,
                current: current.cloned(),
            };
        }
        let prev = current.cloned();
        if let Some(p) = &prev {
            if p.lease != op.lease {
                self.detach(&key, p.lease);
            }
        }
        self.attach(&key, op.lease);
        let kv = KeyValue {
            key: key.clone(),
            value: op.value.clone(),
            create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
            mod_revision: revision,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            lease: op.lease,
        };
        self.keys.insert(key.clone(), kv.clone());
        events.push(Event {
            kind: EventKind::Put,
            kv,
            prev_kv: prev.clone(),
        });
        OpResult::Put {
            key,
            succeeded: true,
            prev_kv: if op.prev_kv { prev } else { None },
            current: None,
        }
    }

    fn delete(&mut self, revision: u64, op: &DeleteOp, events: &mut Vec<Event>) -> OpResult {
        let victims: Vec<String> = if op.prefix {
            self.scan_keys(&op.key).collect()
        } else {
            let current = self.keys.get(&op.key);
            if !Self::conditions_hold(current, op.expected_version, op.expected_mod_revision) {
                return OpResult::Delete {
                    succeeded: false,
                    deleted: 0,
                    prev_kvs: Vec::new(),
                };
            }
            current.map(|kv| kv.key.clone()).into_iter().collect()
        };
        let mut prev_kvs = Vec::new();
        for key in &victims {
            if let Some(prev) = self.remove_key(revision, key, false, events) {
                if op.prev_kv {
                    prev_kvs.push(prev);
                }
            }
        }
        OpResult::Delete {
            succeeded: true,
            deleted: victims.len() as u64,
            prev_kvs,
        }
    }

    fn compare(&self, c: &Compare) -> bool {
        let kv = self.keys.get(&c.key);
        let ord = match c.target {
            CompareTarget::Exists => return kv.is_some() == c.exists,
            CompareTarget::Value => match kv {
                // Comparing the value of a missing key is false, whatever the operator (etcd).
                None => return false,
                Some(kv) => kv.value.as_slice().cmp(c.value.as_slice()),
            },
            CompareTarget::Version => kv.map_or(0, |k| k.version).cmp(&c.number),
            CompareTarget::ModRevision => kv.map_or(0, |k| k.mod_revision).cmp(&c.number),
            CompareTarget::CreateRevision => kv.map_or(0, |k| k.create_revision).cmp(&c.number),
        };
        match c.result {
            CompareResult::Equal => ord.is_eq(),
            CompareResult::NotEqual => ord.is_ne(),
            CompareResult::Greater => ord.is_gt(),
            CompareResult::Less => ord.is_lt(),
        }
    }

    fn scan_keys<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = String> + 'a {
        self.keys
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
    }

    pub fn get(&self, key: &str) -> Option<&KeyValue> {
        self.keys.get(key)
    }

    /// The timestamp and revision a read of `key` by closed timestamps is served at, for a
    /// session at `session` that has seen this group up to revision `seen`, once this replica
    /// has closed `session`: the lowest timestamp at which the key is as this state holds it
    /// (at or above the commit that wrote it, or the last removal for a key that is absent,
    /// and above everything up to `seen`), never below the session's. Nothing of the group
    /// commits between the key's change and the replica's closed timestamp, so the read sees
    /// exactly what a read at that timestamp would (docs/closed-timestamps.md).
    pub fn key_read_at(
        &self,
        key: &str,
        session: meridian_types::hlc::Timestamp,
        seen: u64,
    ) -> (meridian_types::hlc::Timestamp, u64) {
        let applied = self.stamps.applied;
        let seen = seen.min(self.revision);
        let changed = match self.keys.get(key) {
            Some(kv) => self.recent.as_of(kv.mod_revision, applied),
            None => self.recent.removed(applied),
        };
        let at = session.max(changed).max(self.recent.as_of(seen, applied));
        (at, self.recent.revision_at(at, self.revision).max(seen))
    }

    /// Keys starting with `prefix`, strictly after `after` (if any), at most `limit`.
    /// Returns the page and whether more keys follow.
    pub fn range(&self, prefix: &str, after: Option<&str>, limit: usize) -> (Vec<KeyValue>, bool) {
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a),
            _ => Bound::Included(prefix),
        };
        let mut iter = self
            .keys
            .range::<str, _>((start, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone());
        let page: Vec<KeyValue> = iter.by_ref().take(limit).collect();
        let more = iter.next().is_some();
        (page, more)
    }

    /// Names of the direct children of `path` (one segment each), sorted, strictly after
    /// `after`, at most `limit`. A child exists when some key lies under it.
    pub fn children(&self, path: &str, after: Option<&str>, limit: usize) -> (Vec<String>, bool) {
        let prefix = if path.ends_with('/') {
            path.to_string()
        } else {
            format!("{path}/")
        };
        let mut names = BTreeSet::new();
        let mut more = false;
        for (key, _) in self
            .keys
            .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(&prefix))
        {
            let rest = &key[prefix.len()..];
            let name = rest.split('/').next().unwrap_or(rest);
            if after.is_some_and(|a| name <= a) {
                continue;
            }
            names.insert(name.to_string());
            if names.len() > limit {
                names.pop_last();
                more = true;
            }
        }
        (names.into_iter().collect(), more)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> Command {
        Command::Put(PutOp {
            prev_kv: true,
            ..PutOp::new(key, value)
        })
    }

    /// Applies `cmd` at `revision` committed at physical time `at`, as the state machine does.
    fn stamped(s: &mut KvState, revision: u64, at: u64, cmd: &Command) {
        use meridian_types::hlc::{Stamp, Timestamp};
        let previous = s.stamps.applied;
        let at = s.stamps.apply(&Stamp {
            at: Timestamp::new(at, 0),
            closed: None,
        });
        let (_, ev) = s.apply(revision, cmd);
        s.recent.record(revision, at, previous, &ev);
    }

    /// A key's read by closed timestamps is at its own change, not at the last commit; an
    /// absent key's at the last removal; never below the session or what it has seen.
    #[test]
    fn a_key_is_read_at_its_own_change() {
        use meridian_types::hlc::Timestamp;
        let ts = |p| Timestamp::new(p, 0);
        let mut s = KvState::default();
        stamped(&mut s, 1, 100, &put("/a", "1"));
        stamped(&mut s, 2, 200, &put("/b", "1"));
        stamped(
            &mut s,
            3,
            300,
            &Command::Delete(DeleteOp {
                key: "/b".into(),
                prefix: false,
                expected_version: None,
                expected_mod_revision: None,
                prev_kv: false,
            }),
        );
        stamped(&mut s, 4, 400, &put("/c", "1"));
        stamped(&mut s, 5, 500, &put("/c", "2"));
        assert_eq!(s.key_read_at("/a", Timestamp::ZERO, 0), (ts(100), 1));
        assert_eq!(s.key_read_at("/c", Timestamp::ZERO, 0), (ts(500), 5));
        // Absent: at the last removal (it may have been deleted there).
        assert_eq!(s.key_read_at("/b", Timestamp::ZERO, 0), (ts(300), 3));
        assert_eq!(s.key_read_at("/zz", Timestamp::ZERO, 0), (ts(300), 3));
        // The session's timestamp is a floor; the revision reported is the state there.
        assert_eq!(s.key_read_at("/a", ts(250), 0), (ts(250), 2));
        // So is what the session has seen of the group.
        assert_eq!(s.key_read_at("/a", Timestamp::ZERO, 4), (ts(400), 4));
    }

    /// Puts count versions, keep create_revision, and emit one event each.
    #[test]
    fn put_counts_versions() {
        let mut s = KvState::default();
        s.apply(3, &put("/a", "1"));
        let (res, ev) = s.apply(5, &put("/a", "2"));
        let kv = s.get("/a").unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (3, 5, 2));
        assert_eq!(ev.len(), 1);
        match res {
            CommandResult::Op(OpResult::Put { prev_kv, .. }) => {
                assert_eq!(prev_kv.unwrap().value, b"1")
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// A conditional put whose version does not match changes nothing and reports the key.
    #[test]
    fn conditional_put() {
        let mut s = KvState::default();
        let mut cmd = put("/a", "1");
        if let Command::Put(p) = &mut cmd {
            p.expected_version = Some(0);
        }
        s.apply(1, &cmd);
        let (res, ev) = s.apply(2, &cmd);
        assert!(ev.is_empty());
        assert!(matches!(
            res,
            CommandResult::Op(OpResult::Put {
                succeeded: false,
                current: Some(_),
                ..
            })
        ));
        assert_eq!(s.get("/a").unwrap().mod_revision, 1);
    }

    /// Sequential keys get increasing zero-padded suffixes.
    #[test]
    fn sequential_keys() {
        let mut s = KvState::default();
        let mut cmd = put("/q/n-", "x");
        if let Command::Put(p) = &mut cmd {
            p.sequential = true;
        }
        s.apply(1, &cmd);
        s.apply(2, &cmd);
        let keys: Vec<_> = s.keys.keys().cloned().collect();
        assert_eq!(
            keys,
            vec!["/q/n-00000000000000000001", "/q/n-00000000000000000002"]
        );
    }

    /// Prefix deletes remove exactly the keys under the prefix, one event each.
    #[test]
    fn prefix_delete_and_children() {
        let mut s = KvState::default();
        for k in ["/a/x", "/a/y/z", "/a-b", "/b"] {
            s.apply(1, &put(k, "v"));
        }
        assert_eq!(
            s.children("/a", None, 10),
            (vec!["x".into(), "y".into()], false)
        );
        assert_eq!(s.children("/", None, 10).0, vec!["a", "a-b", "b"]);
        assert_eq!(s.children("/", Some("a"), 1), (vec!["a-b".into()], true));
        let (_, ev) = s.apply(
            2,
            &Command::Delete(DeleteOp {
                key: "/a/".into(),
                prefix: true,
                expected_version: None,
                expected_mod_revision: None,
                prev_kv: false,
            }),
        );
        assert_eq!(ev.len(), 2);
        assert_eq!(s.keys.len(), 2);
    }

    /// A txn runs `success` when every compare holds and `failure` otherwise.
    #[test]
    fn txn_branches() {
        let mut s = KvState::default();
        s.apply(1, &put("/a", "1"));
        let txn = |v: &str| Command::Txn {
            compares: vec![Compare {
                key: "/a".into(),
                target: CompareTarget::Value,
                result: CompareResult::Equal,
                value: v.as_bytes().to_vec(),
                number: 0,
                exists: false,
            }],
            success: vec![Op::Put(match put("/b", "ok") {
                Command::Put(p) => p,
                _ => unreachable!(),
            })],
            failure: vec![Op::Get { key: "/a".into() }],
        };
        let (res, _) = s.apply(2, &txn("2"));
        assert!(matches!(
            res,
            CommandResult::Txn {
                succeeded: false,
                ..
            }
        ));
        assert!(s.get("/b").is_none());
        let (res, _) = s.apply(3, &txn("1"));
        assert!(matches!(
            res,
            CommandResult::Txn {
                succeeded: true,
                ..
            }
        ));
        assert_eq!(s.get("/b").unwrap().mod_revision, 3);
    }

    /// A batch applies each command at the same revision and answers each in order.
    #[test]
    fn batch_applies_in_order_at_one_revision() {
        let mut s = KvState::default();
        let (res, ev) = s.apply(9, &Command::Batch(vec![put("/a", "1"), put("/b", "2")]));
        match res {
            CommandResult::Batch(r) => assert_eq!(r.len(), 2),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(ev.len(), 2);
        assert!(ev.iter().all(|e| e.revision() == 9));
        assert_eq!(s.get("/b").unwrap().mod_revision, 9);
    }

    /// Only commands on disjoint keys may share an entry; prefix deletes share with none.
    #[test]
    fn batch_key_sets() {
        assert_eq!(put("/a", "1").keys(), Some(vec!["/a"]));
        let prefix_delete = Command::Delete(DeleteOp {
            key: "/a/".into(),
            prefix: true,
            expected_version: None,
            expected_mod_revision: None,
            prev_kv: false,
        });
        assert_eq!(prefix_delete.keys(), None);
    }

    /// Range pages continue strictly after the last key returned.
    #[test]
    fn range_pages() {
        let mut s = KvState::default();
        for k in ["/p/1", "/p/2", "/p/3", "/q"] {
            s.apply(1, &put(k, "v"));
        }
        let (page, more) = s.range("/p/", None, 2);
        assert_eq!(page.len(), 2);
        assert!(more);
        let (page, more) = s.range("/p/", Some(&page[1].key), 2);
        assert_eq!(
            page.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
            vec!["/p/3"]
        );
        assert!(!more);
    }
}
