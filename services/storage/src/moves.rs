//! A domain move's source and target halves inside a group's state (docs/placement.md). A
//! frozen subtree is one reserved key, `@frozen` + the prefix, holding the epoch it moved at —
//! no client path can name it, and like every key it is fsynced, snapshotted and replayed.
//! Writes under a frozen subtree are answered `WrongGroup{epoch}` and change nothing; reads are
//! still served (the data does not change while frozen).

use crate::kv::{reject, KvState};
use meridian_types::{
    Command, CommandResult, Event, EventKind, KeyValue, MoveCommand, MOVE_BYTES_MAX,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::ops::Bound;

/// Reserved key prefix of frozen subtrees.
pub const FROZEN: &str = "@frozen";
/// Reserved key prefix of imports already applied (by move id).
pub const IMPORTED: &str = "@imported/";
/// Reserved key prefix of pre-copies under way (by move id); the value is the prefix.
pub const STAGED: &str = "@staged/";
/// Most bytes of keys and values one pre-copy page carries.
const EXPORT_PAGE_BYTES: usize = 1024 * 1024;
/// The value of an import marker whose move was rolled back.
const DISCARDED: &[u8] = b"discarded";
/// Most keys a refusal lists.
const LISTED_MAX: usize = 10;

/// How an import tells which staged keys the source no longer has.
enum Staged {
    /// The name of every key under the prefix at the source.
    Exactly(Vec<String>),
    /// How many there are: enough when nothing was deleted during the pre-copy.
    Count(u64),
}

/// What a frozen subtree's marker holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frozen {
    /// The epoch (move id) it froze at.
    pub epoch: u64,
    /// Nested domains that stay: not frozen, not exported, not released.
    pub except: Vec<String>,
    /// The target owns it now and this group dropped its keys: reads are refused too.
    pub released: bool,
}

impl Frozen {
    fn covers(&self, frozen: &str, key: &str, prefix: bool) -> bool {
        let under = key.starts_with(frozen) && !self.except.iter().any(|e| key.starts_with(e));
        under || (prefix && frozen.starts_with(key))
    }
}

impl KvState {
    /// The epoch `key` (or, with `prefix`, any key under it) was frozen at, if its subtree
    /// moved away.
    pub fn frozen_at(&self, key: &str, prefix: bool) -> Option<u64> {
        self.frozen_covering(key, prefix).map(|f| f.epoch)
    }

    /// The epoch `key` (or any key under a `prefix`) was released at: this group no longer
    /// holds it, so a read of it here must be answered `WrongGroup`.
    pub fn released_at(&self, key: &str, prefix: bool) -> Option<u64> {
        if !self.any_frozen() {
            return None;
        }
        self.frozen_covering(key, prefix)
            .filter(|f| f.released)
            .map(|f| f.epoch)
    }

    fn frozen_covering(&self, key: &str, prefix: bool) -> Option<Frozen> {
        self.frozen_markers().find_map(|(k, kv)| {
            let frozen = k.get(FROZEN.len()..)?;
            let marker = decode(&kv.value);
            marker.covers(frozen, key, prefix).then_some(marker)
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

    fn marker(&self, prefix: &str) -> Option<Frozen> {
        self.keys
            .get(&format!("{FROZEN}{prefix}"))
            .map(|kv| decode(&kv.value))
    }

    /// The keys of the subtree that move with it.
    fn moving_keys<'a>(
        &'a self,
        prefix: &'a str,
        except: &'a [String],
    ) -> impl Iterator<Item = &'a KeyValue> + 'a {
        self.keys
            .range(prefix.to_string()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .filter(move |(k, _)| !except.iter().any(|e| k.starts_with(e.as_str())))
            .map(|(_, kv)| kv)
    }

    pub(crate) fn apply_move(
        &mut self,
        revision: u64,
        cmd: &MoveCommand,
        events: &mut Vec<Event>,
    ) -> CommandResult {
        match cmd {
            MoveCommand::Freeze {
                prefix,
                epoch,
                except,
            } => match self.freeze(revision, prefix, *epoch, except, events) {
                Ok(m) => {
                    CommandResult::Exported(self.moving_keys(prefix, &m.except).cloned().collect())
                }
                Err(refused) => *refused,
            },
            MoveCommand::FreezeAfter {
                prefix,
                epoch,
                except,
                after,
                names,
            } => match self.freeze(revision, prefix, *epoch, except, events) {
                Ok(m) => {
                    let mut changed = Vec::new();
                    let mut present = Vec::new();
                    let mut count = 0;
                    for kv in self.moving_keys(prefix, &m.except) {
                        if kv.mod_revision > *after {
                            changed.push(kv.clone());
                        }
                        if *names {
                            present.push(kv.key.clone());
                        }
                        count += 1;
                    }
                    CommandResult::Delta {
                        changed,
                        count,
                        present,
                    }
                }
                Err(refused) => *refused,
            },
            MoveCommand::Unfreeze { prefix, epoch } => match self.marker(prefix) {
                Some(m) if m.epoch == *epoch && !m.released => {
                    self.remove_key(revision, &format!("{FROZEN}{prefix}"), false, events);
                    CommandResult::Applied
                }
                Some(m) if m.epoch == *epoch => reject(
                    "move_step",
                    format!("{prefix} was released to its new owner; the move cannot be undone"),
                ),
                Some(m) => reject(
                    "no_such_move",
                    format!(
                        "{prefix} was frozen by the move of epoch {}, not {epoch}",
                        m.epoch
                    ),
                ),
                None => CommandResult::Applied,
            },
            MoveCommand::Release { prefix, epoch } => {
                match self.release(revision, prefix, *epoch, usize::MAX, events) {
                    CommandResult::Released { .. } => CommandResult::Applied,
                    other => other,
                }
            }
            MoveCommand::ReleaseSome {
                prefix,
                epoch,
                limit,
            } => self.release(revision, prefix, *epoch, (*limit).max(1) as usize, events),
            MoveCommand::Discard { prefix, id, except } => {
                let done = format!("{IMPORTED}{id}");
                let staged = format!("{STAGED}{id}");
                match self.import_outcome(*id) {
                    Some(0) => return CommandResult::Applied,
                    // The import is where this group took the subtree over (writes may have
                    // followed it): too late to roll back — the driver commits instead.
                    Some(at) => return CommandResult::Imported { at },
                    None => {}
                }
                if self.keys.contains_key(&staged) {
                    let gone: Vec<String> = self
                        .moving_keys(prefix, except)
                        .map(|kv| kv.key.clone())
                        .collect();
                    for key in gone {
                        self.drop_key(revision, key, events);
                    }
                    self.remove_key(revision, &staged, false, events);
                }
                // The marker stays, saying "discarded": a copy still in flight whose import
                // lands after this changes nothing.
                self.put_internal(revision, &done, DISCARDED.to_vec(), events);
                CommandResult::Applied
            }
            MoveCommand::Import { prefix, id, keys } => {
                let staged = Staged::Exactly(keys.iter().map(|kv| kv.key.clone()).collect());
                self.import(revision, prefix, *id, &[], keys, &staged, events)
            }
            MoveCommand::ImportDelta {
                prefix,
                id,
                except,
                changed,
                present,
                count,
            } => {
                let staged = match present {
                    Some(names) => Staged::Exactly(names.clone()),
                    None => Staged::Count(*count),
                };
                self.import(revision, prefix, *id, except, changed, &staged, events)
            }
            MoveCommand::Export {
                prefix,
                except,
                after,
                limit,
            } => {
                if self.marker(prefix).is_some_and(|m| m.released) {
                    return reject(
                        "move_step",
                        format!("{prefix} was already released to its new owner"),
                    );
                }
                let from = if after.as_str() >= prefix.as_str() {
                    Bound::Excluded(after.as_str())
                } else {
                    Bound::Included(prefix.as_str())
                };
                let mut bytes = 0;
                let page = self
                    .keys
                    .range::<str, _>((from, Bound::Unbounded))
                    .map(|(_, kv)| kv)
                    .take_while(|kv| kv.key.starts_with(prefix.as_str()))
                    .filter(|kv| !except.iter().any(|e| kv.key.starts_with(e.as_str())))
                    .take((*limit).max(1) as usize)
                    .take_while(|kv| {
                        let fits = bytes < EXPORT_PAGE_BYTES;
                        bytes += kv.key.len() + kv.value.len();
                        fits
                    })
                    .cloned()
                    .collect();
                CommandResult::Exported(page)
            }
            MoveCommand::Stage { prefix, id, keys } => {
                if let Some(at) = self.import_outcome(*id) {
                    return CommandResult::Imported { at };
                }
                if let Some(k) = keys.iter().find(|kv| !kv.key.starts_with(prefix.as_str())) {
                    return reject(
                        "bad_import",
                        format!("{} is not under the moved prefix {prefix}", k.key),
                    );
                }
                for kv in keys {
                    self.place(revision, kv, events);
                }
                let staged = format!("{STAGED}{id}");
                if !self.keys.contains_key(&staged) {
                    self.put_internal(revision, &staged, prefix.as_bytes().to_vec(), events);
                }
                CommandResult::Applied
            }
        }
    }

    /// A write sent here before the router's map showed move `id` committed: applied once the
    /// import is here (this group owns the subtree from then on), else `WrongGroup{id}`.
    pub(crate) fn apply_after_import(
        &mut self,
        revision: u64,
        id: u64,
        cmd: &Command,
        events: &mut Vec<Event>,
    ) -> CommandResult {
        let prefix = match self.keys.get(&format!("{IMPORTED}{id}")) {
            Some(kv) if kv.value != DISCARDED => String::from_utf8_lossy(&kv.value).into_owned(),
            _ => return CommandResult::WrongGroup { epoch: id },
        };
        if matches!(
            cmd,
            Command::AfterImport { .. }
                | Command::Batch(_)
                | Command::Move(_)
                | Command::Stamped { .. }
        ) {
            return reject(
                "bad_handover",
                "only a key write can follow a move's import".into(),
            );
        }
        let scopes = cmd.scopes();
        if scopes.is_empty() || scopes.iter().any(|(k, _)| !k.starts_with(prefix.as_str())) {
            return reject(
                "bad_handover",
                format!("the write reaches outside {prefix}, the subtree move {id} brought here"),
            );
        }
        self.apply_one(revision, cmd, events)
    }

    /// Freezes `prefix` for move `epoch` (or finds it frozen by it): the checks of a first
    /// freeze, then the marker.
    fn freeze(
        &mut self,
        revision: u64,
        prefix: &str,
        epoch: u64,
        except: &[String],
        events: &mut Vec<Event>,
    ) -> Result<Frozen, Box<CommandResult>> {
        let marker = match self.marker(prefix) {
            Some(m) if m.epoch != epoch => {
                return Err(Box::new(reject(
                    "move_conflict",
                    format!(
                        "{prefix} is frozen by the move of epoch {}, not {epoch}",
                        m.epoch
                    ),
                )))
            }
            Some(m) => m,
            None => {
                let bytes: usize = self
                    .moving_keys(prefix, except)
                    .map(|kv| kv.key.len() + kv.value.len())
                    .sum();
                if bytes > MOVE_BYTES_MAX {
                    return Err(Box::new(reject(
                        "move_too_large",
                        format!(
                            "{prefix} holds {bytes} bytes of keys and values, more than the \
                             {MOVE_BYTES_MAX} one move carries; move smaller prefixes under it \
                             one at a time"
                        ),
                    )));
                }
                let blocked = self.move_blockers(prefix, except);
                if !blocked.is_empty() {
                    return Err(Box::new(reject(
                        "move_blocked",
                        format!(
                            "{prefix} cannot move while keys under it are attached to leases or \
                             locks under it are held or queued for (release them or let their \
                             leases expire, then move): {}",
                            blocked.join(", ")
                        ),
                    )));
                }
                let m = Frozen {
                    epoch,
                    except: except.to_vec(),
                    released: false,
                };
                self.put_internal(revision, &format!("{FROZEN}{prefix}"), encode(&m), events);
                m
            }
        };
        if marker.released {
            return Err(Box::new(reject(
                "move_step",
                format!("{prefix} was already released to its new owner (move {epoch})"),
            )));
        }
        Ok(marker)
    }

    /// Refuses reads under `prefix` from now on and drops at most `limit` of its keys.
    fn release(
        &mut self,
        revision: u64,
        prefix: &str,
        epoch: u64,
        limit: usize,
        events: &mut Vec<Event>,
    ) -> CommandResult {
        let Some(mut m) = self.marker(prefix).filter(|m| m.epoch == epoch) else {
            return reject(
                "no_such_move",
                format!("{prefix} is not frozen by the move of epoch {epoch}"),
            );
        };
        if !m.released {
            m.released = true;
            self.put_internal(revision, &format!("{FROZEN}{prefix}"), encode(&m), events);
        }
        let gone: Vec<String> = self
            .moving_keys(prefix, &m.except)
            .take(limit)
            .map(|kv| kv.key.clone())
            .collect();
        for key in gone {
            self.drop_key(revision, key, events);
        }
        CommandResult::Released {
            left: self.moving_keys(prefix, &m.except).count() as u64,
        }
    }

    /// What became of move `id`'s import here: its revision, 0 when rolled back, `None` when
    /// it has not happened.
    pub fn import_outcome(&self, id: u64) -> Option<u64> {
        self.keys.get(&format!("{IMPORTED}{id}")).map(|kv| {
            if kv.value == DISCARDED {
                0
            } else {
                kv.mod_revision
            }
        })
    }

    /// The import of move `id`, once: `changed` written at this revision; staged keys the
    /// source no longer has are dropped (`staged` says how to tell).
    #[allow(clippy::too_many_arguments)]
    fn import(
        &mut self,
        revision: u64,
        prefix: &str,
        id: u64,
        except: &[String],
        changed: &[KeyValue],
        staged: &Staged,
        events: &mut Vec<Event>,
    ) -> CommandResult {
        if let Some(at) = self.import_outcome(id) {
            return CommandResult::Imported { at };
        }
        if let Some(k) = changed.iter().find(|kv| !kv.key.starts_with(prefix)) {
            return reject(
                "bad_import",
                format!("{} is not under the moved prefix {prefix}", k.key),
            );
        }
        match staged {
            Staged::Exactly(present) => {
                let keep: BTreeSet<&str> = present.iter().map(String::as_str).collect();
                let fresh: BTreeSet<&str> = changed.iter().map(|kv| kv.key.as_str()).collect();
                if let Some(missing) = keep
                    .iter()
                    .find(|k| !fresh.contains(**k) && !self.keys.contains_key(**k))
                {
                    return reject(
                        "bad_import",
                        format!(
                            "{missing} is under {prefix} at the source but the pre-copy did not \
                             bring it; copy again"
                        ),
                    );
                }
                let stale: Vec<String> = self
                    .moving_keys(prefix, except)
                    .filter(|kv| {
                        !keep.contains(kv.key.as_str()) && !fresh.contains(kv.key.as_str())
                    })
                    .map(|kv| kv.key.clone())
                    .collect();
                for key in stale {
                    self.drop_key(revision, key, events);
                }
            }
            // Every key the source has is staged or changed, so the two sets are equal exactly
            // when their sizes are: more here means a staged key was deleted at the source.
            Staged::Count(count) => {
                let here = self.moving_keys(prefix, except).count() as u64;
                let new = changed
                    .iter()
                    .filter(|kv| !self.keys.contains_key(&kv.key))
                    .count() as u64;
                if here + new != *count {
                    return reject(
                        "names_needed",
                        format!(
                            "{prefix} would hold {} keys here but {count} at the source: keys \
                             were deleted during the pre-copy; import with their names",
                            here + new
                        ),
                    );
                }
            }
        }
        // A subtree that once moved away from here and now comes back.
        let marker = format!("{FROZEN}{prefix}");
        if self.keys.contains_key(&marker) {
            self.remove_key(revision, &marker, false, events);
        }
        for kv in changed {
            self.place(revision, kv, events);
        }
        let staged = format!("{STAGED}{id}");
        if self.keys.contains_key(&staged) {
            self.remove_key(revision, &staged, false, events);
        }
        self.put_internal(
            revision,
            &format!("{IMPORTED}{id}"),
            prefix.as_bytes().to_vec(),
            events,
        );
        CommandResult::Imported { at: revision }
    }

    /// Writes a moved key at `revision` with its version (its history here starts now).
    fn place(&mut self, revision: u64, kv: &KeyValue, events: &mut Vec<Event>) {
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
            kind: EventKind::Placed,
            kv: new,
            prev_kv: prev,
        });
    }

    /// Removes `key` as a move does: not a change of the data, so no watcher sees it.
    fn drop_key(&mut self, revision: u64, key: String, events: &mut Vec<Event>) {
        if let Some(prev) = self.keys.remove(&key) {
            events.push(Event {
                kind: EventKind::Dropped,
                kv: KeyValue {
                    key,
                    value: Vec::new(),
                    create_revision: 0,
                    mod_revision: revision,
                    version: 0,
                    lease: 0,
                },
                prev_kv: Some(prev),
            });
        }
    }

    /// Keys under `prefix` with a lease, and locks under it with holders or waiters.
    fn move_blockers(&self, prefix: &str, except: &[String]) -> Vec<String> {
        let mut out: Vec<String> = self
            .moving_keys(prefix, except)
            .filter(|kv| kv.lease != 0)
            .map(|kv| kv.key.clone())
            .take(LISTED_MAX)
            .collect();
        out.extend(
            self.locks
                .keys()
                .filter(|name| name.starts_with(prefix))
                .filter(|name| !except.iter().any(|e| name.starts_with(e.as_str())))
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

fn encode(m: &Frozen) -> Vec<u8> {
    bincode::serialize(m).unwrap_or_default()
}

/// A marker this version cannot read freezes everything under it (the safe side).
fn decode(bytes: &[u8]) -> Frozen {
    bincode::deserialize(bytes).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_types::{DeleteOp, LeaseCommand, LockKind, LockMode, Op, PutOp};

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
            except: Vec::new(),
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

    /// A subtree larger than one move carries is refused with its size; nothing changes.
    #[test]
    fn too_large_a_subtree_is_refused() {
        let mut s = KvState::default();
        let big = vec![b'x'; 1024 * 1024];
        for i in 0..17 {
            s.apply(
                i + 1,
                &Command::Put(PutOp::new(format!("/a/{i}"), big.clone())),
            );
        }
        let (r, ev) = mv(&mut s, 20, freeze("/a/", 20));
        match r {
            CommandResult::Rejected(r) => {
                assert_eq!(r.rule, "move_too_large");
                assert!(r.message.contains("smaller prefixes"), "{}", r.message);
            }
            other => panic!("{other:?}"),
        }
        assert!(ev.is_empty());
        assert!(s.frozen_at("/a/1", false).is_none(), "nothing frozen");
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
        assert_eq!(r, CommandResult::Imported { at: 7 });
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
        assert_eq!(
            r,
            CommandResult::Imported { at: 7 },
            "a repeat answers the first import's revision"
        );
        assert!(ev.is_empty(), "a repeated import changes nothing");
        // The import decided the move: a rollback asked for afterwards changes nothing and
        // answers the import's revision, so the driver commits instead.
        let discard = MoveCommand::Discard {
            prefix: "/a/".into(),
            id: 3,
            except: vec![],
        };
        let (r, ev) = mv(&mut dst, 9, discard);
        assert_eq!(r, CommandResult::Imported { at: 7 });
        assert!(
            ev.is_empty() && dst.get("/a/k").is_some(),
            "nothing dropped"
        );
        // A rollback before any import leaves the marker, so a late import is ignored too.
        let early = MoveCommand::Discard {
            prefix: "/a/".into(),
            id: 5,
            except: vec![],
        };
        let mut fresh = KvState::default();
        assert_eq!(mv(&mut fresh, 12, early).0, CommandResult::Applied);
        let late = MoveCommand::Import {
            prefix: "/a/".into(),
            id: 5,
            keys: keys.clone(),
        };
        let (r, _) = mv(&mut fresh, 13, late);
        assert_eq!(r, CommandResult::Imported { at: 0 });
        assert!(
            fresh.get("/a/k").is_none(),
            "a late import of a rolled-back move is ignored"
        );
        let stray = MoveCommand::Import {
            prefix: "/c/".into(),
            id: 4,
            keys,
        };
        assert!(
            matches!(mv(&mut dst, 9, stray).0, CommandResult::Rejected(ref r) if r.rule == "bad_import")
        );
    }

    /// Nested domains that stay are neither frozen nor exported; a release drops the moved keys
    /// (no watcher-visible event), refuses reads under it from then on, and is repeatable.
    #[test]
    fn nested_domains_stay_and_release_drops_the_rest() {
        let mut s = KvState::default();
        put(&mut s, 1, "/a/1", "x");
        put(&mut s, 2, "/a/keep/1", "k");
        let f = MoveCommand::Freeze {
            prefix: "/a/".into(),
            epoch: 5,
            except: vec!["/a/keep/".into()],
        };
        let CommandResult::Exported(keys) = mv(&mut s, 3, f.clone()).0 else {
            panic!("export")
        };
        assert_eq!(
            keys.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
            vec!["/a/1"]
        );
        assert!(matches!(
            put(&mut s, 4, "/a/keep/2", "k"),
            CommandResult::Op(_)
        ));
        assert_eq!(
            put(&mut s, 4, "/a/2", "n"),
            CommandResult::WrongGroup { epoch: 5 }
        );
        let other = MoveCommand::Freeze {
            prefix: "/a/".into(),
            epoch: 6,
            except: vec![],
        };
        assert!(
            matches!(mv(&mut s, 5, other).0, CommandResult::Rejected(ref r) if r.rule == "move_conflict")
        );
        assert_eq!(
            s.released_at("/a/1", false),
            None,
            "reads go on until the release"
        );
        let release = MoveCommand::Release {
            prefix: "/a/".into(),
            epoch: 5,
        };
        let (r, ev) = mv(&mut s, 6, release.clone());
        assert_eq!(r, CommandResult::Applied);
        assert!(ev
            .iter()
            .any(|e| e.kind == EventKind::Dropped && e.kv.key == "/a/1"));
        assert!(ev.iter().all(|e| e.kind != EventKind::Delete));
        assert!(s.get("/a/1").is_none());
        assert!(s.get("/a/keep/1").is_some(), "the nested domain stays");
        assert_eq!(s.released_at("/a/1", false), Some(5));
        assert_eq!(s.released_at("/a/", true), Some(5));
        assert_eq!(s.released_at("/a/keep/1", false), None);
        let (r, ev) = mv(&mut s, 7, release);
        assert_eq!(r, CommandResult::Applied);
        assert!(ev.is_empty(), "a repeated release changes nothing");
        let undo = MoveCommand::Unfreeze {
            prefix: "/a/".into(),
            epoch: 5,
        };
        assert!(
            matches!(mv(&mut s, 8, undo).0, CommandResult::Rejected(ref r) if r.rule == "move_step")
        );
        assert!(
            matches!(mv(&mut s, 8, f).0, CommandResult::Rejected(ref r) if r.rule == "move_step")
        );
    }

    /// The pre-copy: pages exported while writes go on, staged at the target where no read
    /// sees them; the freeze answers only what changed after the first page plus every name;
    /// the import completes it (updated, created and deleted keys all right), once. A rollback
    /// drops staged keys too.
    #[test]
    fn a_pre_copy_then_a_delta_brings_exactly_the_source_state() {
        let mut src = KvState::default();
        for i in 0..7 {
            put(&mut src, i + 1, &format!("/a/{i}"), "old");
        }
        put(&mut src, 8, "/b/x", "elsewhere");
        let export = |after: &str| MoveCommand::Export {
            prefix: "/a/".into(),
            except: vec![],
            after: after.into(),
            limit: 3,
        };
        let mut dst = KvState::default();
        let mut rev = 10;
        let mut after_key = String::new();
        let mut first = None;
        loop {
            rev += 1;
            let (r, ev) = mv(&mut src, rev, export(&after_key));
            assert!(ev.is_empty(), "an export changes nothing");
            let CommandResult::Exported(page) = r else {
                panic!("{r:?}")
            };
            first.get_or_insert(rev);
            let Some(last) = page.last() else { break };
            assert!(page.len() <= 3);
            after_key = last.key.clone();
            let stage = MoveCommand::Stage {
                prefix: "/a/".into(),
                id: 4,
                keys: page,
            };
            assert_eq!(mv(&mut dst, rev, stage).0, CommandResult::Applied);
            // Writes go on at the source between pages.
            if rev == 11 {
                put(&mut src, 12, "/a/0", "new");
                src.apply(
                    13,
                    &Command::Delete(DeleteOp {
                        key: "/a/1".into(),
                        prefix: false,
                        expected_version: None,
                        expected_mod_revision: None,
                        prev_kv: false,
                    }),
                );
                put(&mut src, 14, "/a/9", "created");
                rev = 14;
            }
        }
        let after = first.expect("a page");
        let freeze = |names: bool| MoveCommand::FreezeAfter {
            prefix: "/a/".into(),
            epoch: 4,
            except: vec![],
            after,
            names,
        };
        let (r, _) = mv(&mut src, 30, freeze(false));
        let CommandResult::Delta {
            changed,
            count,
            present,
        } = r
        else {
            panic!("{r:?}")
        };
        let changed_keys: Vec<&str> = changed.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(
            changed_keys,
            vec!["/a/0", "/a/9"],
            "only what changed after the first page"
        );
        assert_eq!((count, present.len()), (7, 0), "names only when asked");
        // A key was deleted during the pre-copy: the count gives it away, nothing changes.
        let by_count = MoveCommand::ImportDelta {
            prefix: "/a/".into(),
            id: 4,
            except: vec![],
            changed: changed.clone(),
            present: None,
            count,
        };
        let (r, ev) = mv(&mut dst, 31, by_count);
        assert!(
            matches!(r, CommandResult::Rejected(ref r) if r.rule == "names_needed"),
            "{r:?}"
        );
        assert!(ev.is_empty());
        let (r, _) = mv(&mut src, 31, freeze(true));
        let CommandResult::Delta { present, .. } = r else {
            panic!("{r:?}")
        };
        assert_eq!(present.len(), 7);
        let import = MoveCommand::ImportDelta {
            prefix: "/a/".into(),
            id: 4,
            except: vec![],
            changed,
            present: Some(present),
            count,
        };
        let (r, ev) = mv(&mut dst, 31, import.clone());
        assert_eq!(r, CommandResult::Imported { at: 31 });
        assert!(ev
            .iter()
            .any(|e| e.kind == EventKind::Dropped && e.kv.key == "/a/1"));
        let view = |s: &KvState| -> Vec<(String, Vec<u8>)> {
            s.keys
                .range("/a/".to_string()..)
                .take_while(|(k, _)| k.starts_with("/a/"))
                .map(|(k, kv)| (k.clone(), kv.value.clone()))
                .collect()
        };
        assert_eq!(
            view(&dst),
            view(&src),
            "the target holds exactly the source's subtree"
        );
        assert_eq!(dst.get("/a/0").map(|k| k.version), Some(2), "versions kept");
        assert!(!dst.keys.contains_key(&format!("{STAGED}4")));
        let (r, ev) = mv(&mut dst, 32, import);
        assert_eq!(r, CommandResult::Imported { at: 31 });
        assert!(ev.is_empty(), "a repeated import changes nothing");
        // A late stage of the same move changes nothing either.
        let late = MoveCommand::Stage {
            prefix: "/a/".into(),
            id: 4,
            keys: vec![KeyValue {
                key: "/a/1".into(),
                value: b"zombie".to_vec(),
                create_revision: 1,
                mod_revision: 1,
                version: 1,
                lease: 0,
            }],
        };
        assert_eq!(mv(&mut dst, 33, late).0, CommandResult::Imported { at: 31 });
        assert!(dst.get("/a/1").is_none());

        // A pre-copy that is rolled back: its staged keys go; a late import is ignored.
        let mut t = KvState::default();
        put(&mut t, 1, "/t/own", "mine");
        let stage = MoveCommand::Stage {
            prefix: "/a/".into(),
            id: 6,
            keys: vec![KeyValue {
                key: "/a/1".into(),
                value: b"old".to_vec(),
                create_revision: 1,
                mod_revision: 1,
                version: 1,
                lease: 0,
            }],
        };
        assert_eq!(mv(&mut t, 2, stage).0, CommandResult::Applied);
        let discard = MoveCommand::Discard {
            prefix: "/a/".into(),
            id: 6,
            except: vec![],
        };
        assert_eq!(mv(&mut t, 3, discard).0, CommandResult::Applied);
        assert!(t.get("/a/1").is_none() && t.get("/t/own").is_some());
        let late = MoveCommand::ImportDelta {
            prefix: "/a/".into(),
            id: 6,
            except: vec![],
            changed: vec![],
            present: None,
            count: 1,
        };
        assert_eq!(mv(&mut t, 4, late).0, CommandResult::Imported { at: 0 });
        // An import naming a key the pre-copy never brought is refused, changing nothing.
        let gap = MoveCommand::ImportDelta {
            prefix: "/a/".into(),
            id: 7,
            except: vec![],
            changed: vec![],
            present: Some(vec!["/a/never".into()]),
            count: 1,
        };
        let (r, ev) = mv(&mut t, 5, gap);
        assert!(
            matches!(r, CommandResult::Rejected(ref r) if r.rule == "bad_import"),
            "{r:?}"
        );
        assert!(ev.is_empty());
    }

    /// A release in slices refuses reads from its first slice and drops the rest in bounded
    /// steps, counting what is left.
    #[test]
    fn a_release_goes_in_slices() {
        let mut s = KvState::default();
        for i in 0..5 {
            put(&mut s, i + 1, &format!("/a/{i}"), "v");
        }
        mv(&mut s, 6, freeze("/a/", 6));
        let some = MoveCommand::ReleaseSome {
            prefix: "/a/".into(),
            epoch: 6,
            limit: 2,
        };
        assert_eq!(
            mv(&mut s, 7, some.clone()).0,
            CommandResult::Released { left: 3 }
        );
        assert_eq!(
            s.released_at("/a/4", false),
            Some(6),
            "reads refused from the first slice"
        );
        assert_eq!(
            mv(&mut s, 8, some.clone()).0,
            CommandResult::Released { left: 1 }
        );
        let (r, ev) = mv(&mut s, 9, some.clone());
        assert_eq!(r, CommandResult::Released { left: 0 });
        assert_eq!(ev.len(), 1);
        let (r, ev) = mv(&mut s, 10, some);
        assert_eq!(r, CommandResult::Released { left: 0 });
        assert!(ev.is_empty());
        let export = MoveCommand::Export {
            prefix: "/a/".into(),
            except: vec![],
            after: String::new(),
            limit: 10,
        };
        assert!(
            matches!(mv(&mut s, 11, export).0, CommandResult::Rejected(ref r) if r.rule == "move_step")
        );
    }

    /// A write handed over to the target before the map shows the commit waits for the import:
    /// refused (`WrongGroup{id}`, nothing changed) before it, applied after it, and only inside
    /// the imported subtree; a rolled-back move never takes it.
    #[test]
    fn a_handed_over_write_needs_the_import() {
        let mut dst = KvState::default();
        let write = |key: &str| Command::AfterImport {
            id: 4,
            cmd: Box::new(Command::Put(PutOp::new(key, "w"))),
        };
        let (r, ev) = dst.apply(1, &write("/a/1"));
        assert_eq!(r, CommandResult::WrongGroup { epoch: 4 });
        assert!(ev.is_empty() && dst.get("/a/1").is_none());
        let import = MoveCommand::Import {
            prefix: "/a/".into(),
            id: 4,
            keys: vec![],
        };
        mv(&mut dst, 2, import);
        assert!(matches!(
            dst.apply(3, &write("/a/1")).0,
            CommandResult::Op(_)
        ));
        assert_eq!(dst.get("/a/1").map(|k| k.mod_revision), Some(3));
        let (r, ev) = dst.apply(4, &write("/b/1"));
        assert!(
            matches!(r, CommandResult::Rejected(ref r) if r.rule == "bad_handover"),
            "{r:?}"
        );
        assert!(ev.is_empty());
        // Discarded before any import: never taken.
        let discard = MoveCommand::Discard {
            prefix: "/c/".into(),
            id: 5,
            except: vec![],
        };
        mv(&mut dst, 5, discard);
        let late = Command::AfterImport {
            id: 5,
            cmd: Box::new(Command::Put(PutOp::new("/c/1", "w"))),
        };
        assert_eq!(
            dst.apply(6, &late).0,
            CommandResult::WrongGroup { epoch: 5 }
        );
        assert!(dst.get("/c/1").is_none());
    }

    /// Nothing deleted during the pre-copy: the count is enough, and the import completes it.
    #[test]
    fn without_deletes_the_count_is_enough() {
        let mut src = KvState::default();
        for i in 0..4 {
            put(&mut src, i + 1, &format!("/a/{i}"), "old");
        }
        let export = MoveCommand::Export {
            prefix: "/a/".into(),
            except: vec![],
            after: String::new(),
            limit: 100,
        };
        let CommandResult::Exported(page) = mv(&mut src, 5, export).0 else {
            panic!("export")
        };
        let mut dst = KvState::default();
        let stage = MoveCommand::Stage {
            prefix: "/a/".into(),
            id: 2,
            keys: page,
        };
        mv(&mut dst, 1, stage);
        put(&mut src, 6, "/a/1", "new");
        put(&mut src, 7, "/a/7", "created");
        let freeze = MoveCommand::FreezeAfter {
            prefix: "/a/".into(),
            epoch: 2,
            except: vec![],
            after: 5,
            names: false,
        };
        let CommandResult::Delta { changed, count, .. } = mv(&mut src, 8, freeze).0 else {
            panic!("delta")
        };
        assert_eq!((changed.len(), count), (2, 5));
        let import = MoveCommand::ImportDelta {
            prefix: "/a/".into(),
            id: 2,
            except: vec![],
            changed,
            present: None,
            count,
        };
        assert_eq!(mv(&mut dst, 2, import).0, CommandResult::Imported { at: 2 });
        let values: Vec<(&str, &[u8])> = dst
            .keys
            .range("/a/".to_string()..)
            .take_while(|(k, _)| k.starts_with("/a/"))
            .map(|(k, kv)| (k.as_str(), kv.value.as_slice()))
            .collect();
        assert_eq!(
            values,
            vec![
                ("/a/0", &b"old"[..]),
                ("/a/1", b"new"),
                ("/a/2", b"old"),
                ("/a/3", b"old"),
                ("/a/7", b"created")
            ]
        );
    }
}
