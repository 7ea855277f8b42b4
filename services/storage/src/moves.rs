//! A domain move's source and target halves inside a group's state (docs/placement.md). A
//! frozen subtree is one reserved key, `@frozen` + the prefix, holding the epoch it moved at —
//! no client path can name it, and like every key it is fsynced, snapshotted and replayed.
//! Writes under a frozen subtree are answered `WrongGroup{epoch}` and change nothing; reads are
//! still served (the data does not change while frozen).

use crate::kv::KvState;
use meridian_types::{CommandResult, Event, EventKind, KeyValue, MoveCommand, Rejection};
use std::ops::Bound;

/// Reserved key prefix of frozen subtrees.
pub const FROZEN: &str = "@frozen";
/// Reserved key prefix of imports already applied (by move id).
pub const IMPORTED: &str = "@imported/";
/// Most keys a refusal lists.
const LISTED_MAX: usize = 10;

fn reject(rule: &str, message: String) -> CommandResult {
    CommandResult::Rejected(Rejection {
        rule: rule.to_string(),
        message,
    })
}

impl KvState {
    /// The epoch `key` (or, with `prefix`, any key under it) was frozen at, if its subtree
    /// moved away.
    pub fn frozen_at(&self, key: &str, prefix: bool) -> Option<u64> {
        self.frozen_markers().find_map(|(k, kv)| {
            let frozen = k.get(FROZEN.len()..)?;
            let hit = key.starts_with(frozen) || (prefix && frozen.starts_with(key));
            hit.then(|| epoch_of(&kv.value))
        })
    }

    /// Whether any subtree of this group is frozen.
    pub(crate) fn any_frozen(&self) -> bool {
        self.frozen_markers().next().is_some()
    }

    fn frozen_markers(&self) -> impl Iterator<Item = (&String, &KeyValue)> {
        self.keys
            .range::<str, _>((Bound::Included(FROZEN), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(FROZEN))
    }

    pub(crate) fn apply_move(
        &mut self,
        revision: u64,
        cmd: &MoveCommand,
        events: &mut Vec<Event>,
    ) -> CommandResult {
        match cmd {
            MoveCommand::Freeze { prefix, epoch } => {
                let marker = format!("{FROZEN}{prefix}");
                if !self.keys.contains_key(&marker) {
                    let blocked = self.move_blockers(prefix);
                    if !blocked.is_empty() {
                        return reject(
                            "move_blocked",
                            format!(
                                "{prefix} cannot move while keys under it are attached to leases \
                                 or locks under it are held or queued for (release them or let \
                                 their leases expire, then move): {}",
                                blocked.join(", ")
                            ),
                        );
                    }
                    self.put_internal(revision, &marker, epoch.to_be_bytes().to_vec(), events);
                }
                CommandResult::Exported(
                    self.keys
                        .range(prefix.clone()..)
                        .take_while(|(k, _)| k.starts_with(prefix.as_str()))
                        .map(|(_, kv)| kv.clone())
                        .collect(),
                )
            }
            MoveCommand::Unfreeze { prefix, epoch } => {
                let marker = format!("{FROZEN}{prefix}");
                match self.keys.get(&marker).map(|kv| epoch_of(&kv.value)) {
                    Some(e) if e == *epoch => {
                        self.remove_key(revision, &marker, false, events);
                        CommandResult::Applied
                    }
                    Some(e) => reject(
                        "no_such_move",
                        format!("{prefix} was frozen by the move of epoch {e}, not {epoch}"),
                    ),
                    None => CommandResult::Applied,
                }
            }
            MoveCommand::Import { prefix, id, keys } => {
                let done = format!("{IMPORTED}{id}");
                if self.keys.contains_key(&done) {
                    return CommandResult::Applied;
                }
                if let Some(k) = keys.iter().find(|kv| !kv.key.starts_with(prefix.as_str())) {
                    return reject(
                        "bad_import",
                        format!("{} is not under the moved prefix {prefix}", k.key),
                    );
                }
                // A subtree that once moved away from here and now comes back.
                let marker = format!("{FROZEN}{prefix}");
                if self.keys.contains_key(&marker) {
                    self.remove_key(revision, &marker, false, events);
                }
                for kv in keys {
                    let prev = self.keys.get(&kv.key).cloned();
                    let new = KeyValue {
                        key: kv.key.clone(),
                        value: kv.value.clone(),
                        create_revision: revision,
                        mod_revision: revision,
                        version: kv.version.max(1),
                        lease: 0,
                    };
                    self.keys.insert(kv.key.clone(), new.clone());
                    events.push(Event {
                        kind: EventKind::Put,
                        kv: new,
                        prev_kv: prev,
                    });
                }
                self.put_internal(revision, &done, prefix.as_bytes().to_vec(), events);
                CommandResult::Applied
            }
        }
    }

    /// Keys under `prefix` with a lease, and locks under it with holders or waiters.
    fn move_blockers(&self, prefix: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .keys
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(_, kv)| kv.lease != 0)
            .map(|(k, _)| k.clone())
            .take(LISTED_MAX)
            .collect();
        out.extend(
            self.locks
                .keys()
                .filter(|name| name.starts_with(prefix))
                .map(|name| format!("lock {name}"))
                .take(LISTED_MAX),
        );
        out.truncate(LISTED_MAX);
        out
    }

    pub(crate) fn put_internal(
        &mut self,
        revision: u64,
        key: &str,
        value: Vec<u8>,
        events: &mut Vec<Event>,
    ) {
        let prev = self.keys.get(key).cloned();
        let kv = KeyValue {
            key: key.to_string(),
            value,
            create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
            mod_revision: revision,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            lease: 0,
        };
        self.keys.insert(key.to_string(), kv.clone());
        events.push(Event {
            kind: EventKind::Put,
            kv,
            prev_kv: prev,
        });
    }
}

fn epoch_of(bytes: &[u8]) -> u64 {
    bytes
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_types::{Command, DeleteOp, LeaseCommand, LockKind, LockMode, Op, PutOp};

    fn put(s: &mut KvState, rev: u64, key: &str, value: &str) -> CommandResult {
        s.apply(rev, &Command::Put(PutOp::new(key, value))).0
    }

    fn mv(s: &mut KvState, rev: u64, m: MoveCommand) -> (CommandResult, Vec<Event>) {
        s.apply(rev, &Command::Move(m))
    }

    fn freeze(prefix: &str, epoch: u64) -> MoveCommand {
        MoveCommand::Freeze {
            prefix: prefix.into(),
            epoch,
        }
    }

    /// Freezing exports the subtree and turns every later write under it — put, delete of a
    /// key or of an enclosing prefix, a txn touching it, a lock in it — into `WrongGroup`,
    /// changing nothing; writes elsewhere and reads go on. Unfreezing (abort) undoes it.
    #[test]
    fn a_frozen_subtree_refuses_writes_and_nothing_else() {
        let mut s = KvState::default();
        put(&mut s, 1, "/a/orders/1", "x");
        put(&mut s, 2, "/a/orders/2", "y");
        put(&mut s, 3, "/a/other", "z");
        let (r, _) = mv(&mut s, 4, freeze("/a/orders/", 9));
        let CommandResult::Exported(keys) = r else {
            panic!("{r:?}")
        };
        let names: Vec<&str> = keys.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(names, vec!["/a/orders/1", "/a/orders/2"]);
        let before = s.keys.clone();
        let wrong = CommandResult::WrongGroup { epoch: 9 };
        assert_eq!(put(&mut s, 5, "/a/orders/3", "n"), wrong);
        let del = |key: &str, prefix: bool| {
            Command::Delete(DeleteOp {
                key: key.into(),
                prefix,
                expected_version: None,
                expected_mod_revision: None,
                prev_kv: false,
            })
        };
        assert_eq!(s.apply(6, &del("/a/orders/1", false)).0, wrong);
        assert_eq!(
            s.apply(6, &del("/a/", true)).0,
            wrong,
            "an enclosing prefix"
        );
        let txn = Command::Txn {
            compares: vec![],
            success: vec![
                Op::Put(PutOp::new("/a/other", "t")),
                Op::Put(PutOp::new("/a/orders/1", "t")),
            ],
            failure: vec![],
        };
        assert_eq!(s.apply(6, &txn).0, wrong);
        let lock = Command::Lease(LeaseCommand::Acquire {
            name: "/a/orders/lock".into(),
            lease: 1,
            kind: LockKind::Mutex,
            mode: LockMode::Exclusive,
            value: vec![],
            lock_delay_ms: 0,
            wait: false,
        });
        assert_eq!(s.apply(6, &lock).0, wrong);
        assert_eq!(s.keys, before, "nothing changed");
        assert!(matches!(
            put(&mut s, 7, "/a/other", "w"),
            CommandResult::Op(_)
        ));
        assert_eq!(
            s.get("/a/orders/1").map(|k| k.value.clone()),
            Some(b"x".to_vec())
        );
        // A repeated freeze exports again and changes nothing more.
        let (r, ev) = mv(&mut s, 8, freeze("/a/orders/", 9));
        assert!(matches!(r, CommandResult::Exported(ref k) if k.len() == 2));
        assert!(ev.is_empty());
        // Abort: writes are taken again.
        let unfreeze = |epoch| MoveCommand::Unfreeze {
            prefix: "/a/orders/".into(),
            epoch,
        };
        assert!(
            matches!(mv(&mut s, 9, unfreeze(8)).0, CommandResult::Rejected(ref r) if r.rule == "no_such_move")
        );
        assert_eq!(mv(&mut s, 9, unfreeze(9)).0, CommandResult::Applied);
        assert!(matches!(
            put(&mut s, 10, "/a/orders/3", "n"),
            CommandResult::Op(_)
        ));
    }

    /// A subtree with an ephemeral key or a lock cannot move; the refusal lists them.
    #[test]
    fn leases_and_locks_block_a_move() {
        let mut s = KvState::default();
        let (r, _) = s.apply(
            1,
            &Command::Lease(LeaseCommand::Grant {
                group: 0,
                ttl_ms: 5000,
            }),
        );
        let id = match r {
            CommandResult::Lease(meridian_types::LeaseResult::Granted { id, .. }) => id,
            other => panic!("{other:?}"),
        };
        let mut p = PutOp::new("/a/session", "e");
        p.lease = id;
        s.apply(2, &Command::Put(p));
        let (r, ev) = mv(&mut s, 3, freeze("/a/", 3));
        match r {
            CommandResult::Rejected(r) => {
                assert_eq!(r.rule, "move_blocked");
                assert!(r.message.contains("/a/session"), "{}", r.message);
            }
            other => panic!("{other:?}"),
        }
        assert!(ev.is_empty());
        assert!(s.frozen_at("/a/x", false).is_none());
    }

    /// The target creates the keys at the import's revision with their versions, once per
    /// move id; keys outside the prefix are refused.
    #[test]
    fn import_once_at_its_revision() {
        let mut src = KvState::default();
        put(&mut src, 1, "/a/k", "1");
        put(&mut src, 2, "/a/k", "2");
        let CommandResult::Exported(keys) = mv(&mut src, 3, freeze("/a/", 3)).0 else {
            panic!("export")
        };
        let mut dst = KvState::default();
        put(&mut dst, 1, "/b/x", "b");
        let import = MoveCommand::Import {
            prefix: "/a/".into(),
            id: 3,
            keys: keys.clone(),
        };
        let (r, ev) = mv(&mut dst, 7, import.clone());
        assert_eq!(r, CommandResult::Applied);
        let k = dst.get("/a/k").expect("imported");
        assert_eq!(
            (
                k.value.as_slice(),
                k.version,
                k.create_revision,
                k.mod_revision
            ),
            (&b"2"[..], 2, 7, 7)
        );
        assert!(ev.iter().any(|e| e.kv.key == "/a/k"));
        let (r, ev) = mv(&mut dst, 8, import);
        assert_eq!(r, CommandResult::Applied);
        assert!(ev.is_empty(), "a repeated import changes nothing");
        let stray = MoveCommand::Import {
            prefix: "/c/".into(),
            id: 4,
            keys,
        };
        assert!(
            matches!(mv(&mut dst, 9, stray).0, CommandResult::Rejected(ref r) if r.rule == "bad_import")
        );
    }
}
