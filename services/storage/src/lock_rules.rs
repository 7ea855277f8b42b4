//! The lock rules: how a command changes lock queues, as methods of [`KvState`] run inside
//! [`KvState::apply`]. Waiters are granted strictly in queue order (a waiter is granted only
//! when those ahead of it allow it), and a grant touches only the granted waiter's key: its
//! `mod_revision` becomes the grant revision, the fencing token. When a holder's lease expires
//! (not on an explicit release) its place is kept by a lock-delay placeholder for the holder's
//! `lock_delay_ms`, ended by the leader's `DelayEnd`. The queues themselves are
//! [`crate::locks`].

use crate::kv::reject;
use crate::kv::KvState;
use crate::lease_rules::lease_missing;
use crate::locks::{kind_name, parse_waiter_key, waiter_key, LockState, Queue, Waiter};
use meridian_types::{CommandResult, Event, EventKind, KeyValue, LeaseResult, LockKind, LockMode};
use std::sync::Arc;

impl KvState {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn acquire(
        &mut self,
        revision: u64,
        name: &str,
        lease: u64,
        kind: LockKind,
        mode: LockMode,
        value: &[u8],
        lock_delay_ms: u64,
        wait: bool,
        events: &mut Vec<Event>,
    ) -> CommandResult {
        if kind == LockKind::Semaphore(0) {
            return reject(
                "semaphore_zero",
                "a semaphore needs at least 1 holder (N = 0 can never be acquired)".into(),
            );
        }
        if !self.leases.contains_key(&lease) {
            return lease_missing(lease);
        }
        let mode = LockState::effective_mode(kind, mode);
        if let Some(lock) = self.locks.get(name) {
            if lock.kind != kind {
                return reject(
                    "lock_kind_mismatch",
                    format!(
                        "lock {name:?} is a {} and is in use; it cannot be taken as a {}",
                        kind_name(lock.kind),
                        kind_name(kind)
                    ),
                );
            }
            if !wait && !lock.would_grant(mode) {
                return CommandResult::Lease(LeaseResult::Busy {
                    holders: lock
                        .holders()
                        .map(|(seq, _)| waiter_key(name, seq))
                        .collect(),
                });
            }
        }
        self.sequence += 1;
        let seq = self.sequence;
        let key = waiter_key(name, seq);
        let kv = KeyValue {
            key: key.clone(),
            value: value.to_vec(),
            create_revision: revision,
            mod_revision: revision,
            version: 1,
            lease,
        };
        self.keys.insert(key.clone(), kv.clone());
        events.push(Event {
            kind: EventKind::Put,
            kv,
            prev_kv: None,
        });
        let waiter = Waiter::new(lease, mode, lock_delay_ms);
        match self.locks.get_mut(name) {
            Some(lock) => lock.waiters.insert(seq, waiter),
            None => {
                self.locks.insert(
                    Arc::from(name),
                    LockState {
                        kind,
                        waiters: Queue::one(seq, waiter),
                    },
                );
            }
        }
        // After the queue entry exists, so the lease refers to the key by the lock's name.
        self.attach(&key, lease);
        self.after_queue_change(revision, name, events);
        let granted = self
            .locks
            .get(name)
            .and_then(|l| l.waiters.get(seq))
            .and_then(|w| w.granted);
        CommandResult::Lease(LeaseResult::Queued { key, granted })
    }

    pub(crate) fn release_lock(
        &mut self,
        revision: u64,
        key: &str,
        events: &mut Vec<Event>,
    ) -> CommandResult {
        let Some(w) = self.waiter(key) else {
            return reject(
                "lock_not_held",
                format!("{key:?} is not held or awaited by anyone: nothing to release"),
            );
        };
        let was_holder = w.granted.is_some();
        self.remove_key(revision, key, false, events);
        CommandResult::Lease(LeaseResult::Released { was_holder })
    }

    pub(crate) fn proclaim(
        &mut self,
        revision: u64,
        key: &str,
        value: &[u8],
        events: &mut Vec<Event>,
    ) -> CommandResult {
        if self.waiter(key).is_none_or(|w| w.granted.is_none()) {
            return reject(
                "lock_not_held",
                format!("{key:?} does not hold its lock: only the holder may proclaim"),
            );
        }
        let Some(prev) = self.keys.get(key).cloned() else {
            return reject("lock_not_held", format!("{key:?} does not exist"));
        };
        let kv = KeyValue {
            value: value.to_vec(),
            mod_revision: revision,
            version: prev.version + 1,
            ..prev.clone()
        };
        self.keys.insert(key.to_string(), kv.clone());
        events.push(Event {
            kind: EventKind::Put,
            kv,
            prev_kv: Some(prev),
        });
        CommandResult::Lease(LeaseResult::Proclaimed { revision })
    }

    /// Ends lock `name`'s lock-delay placeholder `seq` (the leader's `DelayEnd`).
    pub(crate) fn delay_end(
        &mut self,
        revision: u64,
        name: &str,
        seq: u64,
        events: &mut Vec<Event>,
    ) -> CommandResult {
        let Some(lock) = self.locks.get_mut(name) else {
            return CommandResult::Lease(LeaseResult::Done(0));
        };
        if !lock.waiters.get(seq).is_some_and(Waiter::is_delay) {
            return CommandResult::Lease(LeaseResult::Done(0));
        }
        lock.waiters.remove(seq);
        self.after_queue_change(revision, name, events);
        CommandResult::Lease(LeaseResult::Done(1))
    }

    /// The waiter whose key is `key`, if `key` is one (a placeholder has no key).
    pub fn waiter(&self, key: &str) -> Option<&Waiter> {
        let (name, seq) = parse_waiter_key(key)?;
        self.locks
            .get(name)?
            .waiters
            .get(seq)
            .filter(|w| !w.is_delay())
    }

    /// After waiter key `key` was deleted: when it is a waiter's, leaves the queue — keeping
    /// its place as a lock-delay when `expired` and it held.
    pub(crate) fn leave_queue(
        &mut self,
        revision: u64,
        key: &str,
        expired: bool,
        events: &mut Vec<Event>,
    ) {
        let Some((name, seq)) = parse_waiter_key(key) else {
            return;
        };
        let Some(lock) = self.locks.get_mut(name) else {
            return;
        };
        let Some(w) = lock.waiters.get_mut(seq).filter(|w| !w.is_delay()) else {
            return;
        };
        if expired && w.granted.is_some() && w.lock_delay_ms > 0 {
            w.hold_place_for_delay();
        } else {
            lock.waiters.remove(seq);
        }
        self.after_queue_change(revision, name, events);
    }

    /// Regrants `name`'s queue after a change; a granted waiter's key is touched at
    /// `revision` (its fencing token) unless it was created by this very revision.
    fn after_queue_change(&mut self, revision: u64, name: &str, events: &mut Vec<Event>) {
        self.dirty.locks.insert(name.to_string());
        let Some(lock) = self.locks.get_mut(name) else {
            return;
        };
        if lock.waiters.is_empty() {
            self.locks.remove(name);
            return;
        }
        for seq in lock.regrant(revision) {
            let key = waiter_key(name, seq);
            let Some(prev) = self.keys.get(&key).cloned() else {
                continue;
            };
            if prev.mod_revision == revision {
                continue;
            }
            let kv = KeyValue {
                mod_revision: revision,
                version: prev.version + 1,
                ..prev.clone()
            };
            self.keys.insert(key, kv.clone());
            events.push(Event {
                kind: EventKind::Put,
                kv,
                prev_kv: Some(prev),
            });
        }
    }

    /// Every lock-delay placeholder: (lock, sequence, delay in ms).
    pub fn lock_delays(&self) -> Vec<(String, u64, u64)> {
        self.locks
            .iter()
            .flat_map(|(name, l)| {
                l.waiters
                    .iter()
                    .filter(|(_, w)| w.is_delay())
                    .map(move |(seq, w)| (name.to_string(), seq, w.lock_delay_ms))
            })
            .collect()
    }

    /// Whether `token` (a grant revision) belongs to a current holder of lock `name`.
    pub fn fence_valid(&self, name: &str, token: u64) -> bool {
        self.locks
            .get(name)
            .is_some_and(|l| l.holders().any(|(_, w)| w.granted == Some(token)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::leases::LeaseState;
    use meridian_types::{Command, DeleteOp, LeaseCommand, PutOp};

    pub(crate) fn lease_cmd(
        s: &mut KvState,
        rev: u64,
        c: LeaseCommand,
    ) -> (CommandResult, Vec<Event>) {
        s.apply(rev, &Command::Lease(c))
    }

    pub(crate) fn grant(s: &mut KvState, rev: u64) -> u64 {
        match lease_cmd(
            s,
            rev,
            LeaseCommand::Grant {
                group: 3,
                ttl_ms: 1000,
            },
        )
        .0
        {
            CommandResult::Lease(LeaseResult::Granted { id, .. }) => id,
            other => panic!("unexpected {other:?}"),
        }
    }

    pub(crate) fn acquire(
        s: &mut KvState,
        rev: u64,
        lease: u64,
        kind: LockKind,
        mode: LockMode,
        wait: bool,
    ) -> CommandResult {
        lease_cmd(
            s,
            rev,
            LeaseCommand::Acquire {
                name: "/l".into(),
                lease,
                kind,
                mode,
                value: b"me".to_vec(),
                lock_delay_ms: 500,
                wait,
            },
        )
        .0
    }

    /// Two leases (revisions 1, 2), each queued on the mutex `/l` (3: holds it, 4: waits):
    /// the state and (lease a, lease b, a's key, b's key).
    fn two_mutex_waiters() -> (KvState, u64, u64, String, String) {
        let mut s = KvState::default();
        let (a, b) = (grant(&mut s, 1), grant(&mut s, 2));
        let (ka, _) = queued(acquire(
            &mut s,
            3,
            a,
            LockKind::Mutex,
            LockMode::Exclusive,
            true,
        ));
        let (kb, _) = queued(acquire(
            &mut s,
            4,
            b,
            LockKind::Mutex,
            LockMode::Exclusive,
            true,
        ));
        (s, a, b, ka, kb)
    }

    pub(crate) fn queued(r: CommandResult) -> (String, Option<u64>) {
        match r {
            CommandResult::Lease(LeaseResult::Queued { key, granted }) => (key, granted),
            other => panic!("unexpected {other:?}"),
        }
    }

    pub(crate) fn rejected(r: &CommandResult) -> &str {
        match r {
            CommandResult::Rejected(r) => r.rule.as_str(),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    /// Bad input changes nothing: unknown lease, TTL 0, N = 0, release of a lock not held.
    #[test]
    fn bad_input_is_rejected_and_changes_nothing() {
        let mut s = KvState::default();
        let id = grant(&mut s, 1);
        let before = s.clone();
        let r = lease_cmd(
            &mut s,
            2,
            LeaseCommand::Grant {
                group: 1,
                ttl_ms: 0,
            },
        )
        .0;
        assert_eq!(rejected(&r), "lease_ttl");
        let r = lease_cmd(&mut s, 2, LeaseCommand::Revoke { id: 77 }).0;
        assert_eq!(rejected(&r), "lease_not_found");
        let r = acquire(
            &mut s,
            2,
            id,
            LockKind::Semaphore(0),
            LockMode::Shared,
            true,
        );
        assert_eq!(rejected(&r), "semaphore_zero");
        let r = acquire(&mut s, 2, 77, LockKind::Mutex, LockMode::Exclusive, true);
        assert_eq!(rejected(&r), "lease_not_found");
        let r = lease_cmd(
            &mut s,
            2,
            LeaseCommand::Release {
                key: "/l/00000000000000000009".into(),
            },
        )
        .0;
        assert_eq!(rejected(&r), "lock_not_held");
        let r = s
            .apply(
                2,
                &Command::Put(PutOp {
                    lease: 77,
                    ..PutOp::new("/x", "v")
                }),
            )
            .0;
        assert_eq!(rejected(&r), "lease_not_found");
        let mut cleaned = s.clone();
        cleaned.revision = before.revision;
        cleaned.dirty = before.dirty.clone();
        assert_eq!(cleaned, before);
    }

    /// A mutex grants in queue order, and each grant's token is above the last.
    #[test]
    fn mutex_grants_in_order_with_increasing_tokens() {
        let mut s = KvState::default();
        let (a, b, c) = (grant(&mut s, 1), grant(&mut s, 2), grant(&mut s, 3));
        let (ka, ta) = queued(acquire(
            &mut s,
            4,
            a,
            LockKind::Mutex,
            LockMode::Exclusive,
            true,
        ));
        let (kb, tb) = queued(acquire(
            &mut s,
            5,
            b,
            LockKind::Mutex,
            LockMode::Exclusive,
            true,
        ));
        assert_eq!((ta, tb), (Some(4), None));
        // A try-acquire of a taken lock leaves no trace.
        let busy = acquire(&mut s, 6, c, LockKind::Mutex, LockMode::Exclusive, false);
        assert_eq!(
            busy,
            CommandResult::Lease(LeaseResult::Busy {
                holders: vec![ka.clone()]
            })
        );
        assert_eq!(s.locks["/l"].waiters.len(), 2);
        let (_, ev) = lease_cmd(&mut s, 7, LeaseCommand::Release { key: ka });
        // Only the successor's key is touched: its mod_revision is its token.
        assert_eq!(ev.len(), 2);
        assert_eq!(s.waiter(&kb).and_then(|w| w.granted), Some(7));
        assert_eq!(s.get(&kb).map(|kv| kv.mod_revision), Some(7));
        assert!(s.fence_valid("/l", 7) && !s.fence_valid("/l", 4));
        let r = acquire(&mut s, 8, c, LockKind::Semaphore(2), LockMode::Shared, true);
        assert_eq!(rejected(&r), "lock_kind_mismatch");
    }

    /// Expiry of a holder keeps its place for the lock-delay; an explicit release does not.
    #[test]
    fn lock_delay_after_expiry_only() {
        let (mut s, a, b, _, kb) = two_mutex_waiters();
        lease_cmd(
            &mut s,
            5,
            LeaseCommand::Expire {
                leases: vec![(a, 1)],
            },
        );
        assert_eq!(
            s.waiter(&kb).and_then(|w| w.granted),
            None,
            "granted during the lock-delay"
        );
        let delays = s.lock_delays();
        assert_eq!(delays.len(), 1);
        assert_eq!(delays[0].2, 500);
        assert!(
            !s.fence_valid("/l", 3),
            "an expired holder's token is no longer valid"
        );
        let (name, seq, _) = delays[0].clone();
        lease_cmd(&mut s, 6, LeaseCommand::DelayEnd { name, seq });
        assert_eq!(s.waiter(&kb).and_then(|w| w.granted), Some(6));
        // Explicit release: no delay.
        let c = grant(&mut s, 7);
        let (kc, _) = queued(acquire(
            &mut s,
            8,
            c,
            LockKind::Mutex,
            LockMode::Exclusive,
            true,
        ));
        lease_cmd(&mut s, 9, LeaseCommand::Revoke { id: b });
        assert_eq!(s.waiter(&kc).and_then(|w| w.granted), Some(9));
        assert!(s.lock_delays().is_empty());
    }

    /// Readers share, a writer waits for the readers ahead, readers behind a writer wait.
    #[test]
    fn read_write_and_semaphore() {
        let mut s = KvState::default();
        let ids: Vec<u64> = (1..=5).map(|r| grant(&mut s, r)).collect();
        let rw = |s: &mut KvState, rev, i: usize, mode| {
            queued(acquire(s, rev, ids[i], LockKind::ReadWrite, mode, true))
        };
        let (r1, g1) = rw(&mut s, 10, 0, LockMode::Shared);
        let (_, g2) = rw(&mut s, 11, 1, LockMode::Shared);
        let (w, gw) = rw(&mut s, 12, 2, LockMode::Exclusive);
        let (r3, g3) = rw(&mut s, 13, 3, LockMode::Shared);
        assert_eq!((g1, g2, gw, g3), (Some(10), Some(11), None, None));
        lease_cmd(&mut s, 14, LeaseCommand::Release { key: r1 });
        assert!(s.waiter(&w).and_then(|x| x.granted).is_none());
        lease_cmd(&mut s, 15, LeaseCommand::Revoke { id: ids[1] });
        assert_eq!(s.waiter(&w).and_then(|x| x.granted), Some(15));
        assert!(s.waiter(&r3).and_then(|x| x.granted).is_none());
        // A semaphore of 2 on another lock.
        let sem = |s: &mut KvState, rev, lease| {
            queued(
                s.apply(
                    rev,
                    &Command::Lease(LeaseCommand::Acquire {
                        name: "/sem".into(),
                        lease,
                        kind: LockKind::Semaphore(2),
                        mode: LockMode::Exclusive,
                        value: Vec::new(),
                        lock_delay_ms: 0,
                        wait: true,
                    }),
                )
                .0,
            )
        };
        let grants: Vec<Option<u64>> = [0, 2, 3]
            .iter()
            .enumerate()
            .map(|(n, &i)| sem(&mut s, 20 + n as u64, ids[i]).1)
            .collect();
        assert_eq!(grants, vec![Some(20), Some(21), None]);
    }

    /// A user's delete of a waiter key leaves the queue like a release; prefix deletes too.
    #[test]
    fn deleting_waiter_keys_releases() {
        let (mut s, _, _, _, kb) = two_mutex_waiters();
        s.apply(
            5,
            &Command::Delete(DeleteOp {
                key: "/l/".into(),
                prefix: true,
                expected_version: None,
                expected_mod_revision: None,
                prev_kv: false,
            }),
        );
        assert!(s.locks.is_empty(), "{:?}", s.locks);
        assert!(s.waiter(&kb).is_none());
        assert!(s.leases.values().all(|l| l.keys.is_empty()));
    }

    /// Proclaim changes the holder's value, keeps its token; a waiter may not proclaim.
    #[test]
    fn proclaim_only_by_the_holder() {
        let (mut s, _, _, ka, kb) = two_mutex_waiters();
        let r = lease_cmd(
            &mut s,
            5,
            LeaseCommand::Proclaim {
                key: kb,
                value: b"x".to_vec(),
            },
        )
        .0;
        assert_eq!(rejected(&r), "lock_not_held");
        lease_cmd(
            &mut s,
            6,
            LeaseCommand::Proclaim {
                key: ka.clone(),
                value: b"new".to_vec(),
            },
        );
        assert_eq!(s.get(&ka).map(|k| k.value.clone()), Some(b"new".to_vec()));
        assert!(s.fence_valid("/l", 3));
    }

    /// Lease and lock records survive a snapshot round trip with their key sets.
    #[test]
    fn snapshot_round_trip() {
        let mut s = KvState::default();
        let a = grant(&mut s, 1);
        queued(acquire(
            &mut s,
            2,
            a,
            LockKind::Mutex,
            LockMode::Exclusive,
            true,
        ));
        let bytes = bincode::serialize(&s).expect("encode");
        let mut back: KvState = bincode::deserialize(&bytes).expect("decode");
        back.dirty = s.dirty.clone();
        assert_eq!(back, s);
        let mut rebuilt = s.clone();
        rebuilt.rebuild_lease_keys();
        assert_eq!(rebuilt.leases, s.leases);
    }

    /// The shapes queues and snapshots were persisted in before waiters stopped storing their
    /// keys (copied from that code): what the stores hold must still load, byte for byte.
    mod before {
        use meridian_types::{KeyValue, LeaseRecord, LockKind, LockMode};
        use serde::{Deserialize, Serialize};
        use std::collections::{BTreeMap, BTreeSet};

        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        pub struct LeaseState {
            pub record: LeaseRecord,
            pub keys: BTreeSet<String>,
        }

        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        pub struct Waiter {
            pub key: String,
            pub lease: u64,
            pub mode: LockMode,
            pub granted: Option<u64>,
            pub lock_delay_ms: u64,
        }

        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        pub struct LockState {
            pub kind: LockKind,
            pub waiters: BTreeMap<u64, Waiter>,
        }

        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        pub struct KvState {
            pub keys: BTreeMap<String, KeyValue>,
            pub sequence: u64,
            pub revision: u64,
            pub leases: BTreeMap<u64, LeaseState>,
            pub locks: BTreeMap<String, LockState>,
        }
    }

    /// A state with a holder, waiters of both modes, a lock-delay placeholder and a lease with
    /// a lock and a plain key.
    fn busy_state() -> KvState {
        let mut s = KvState::default();
        let ids: Vec<u64> = (1..=4).map(|r| grant(&mut s, r)).collect();
        queued(acquire(
            &mut s,
            5,
            ids[0],
            LockKind::Mutex,
            LockMode::Exclusive,
            true,
        ));
        queued(acquire(
            &mut s,
            6,
            ids[1],
            LockKind::Mutex,
            LockMode::Exclusive,
            true,
        ));
        let expire = LeaseCommand::Expire {
            leases: vec![(ids[0], 1)],
        };
        lease_cmd(&mut s, 7, expire);
        for (rev, (i, mode)) in [(2, LockMode::Shared), (3, LockMode::Exclusive)]
            .into_iter()
            .enumerate()
        {
            lease_cmd(
                &mut s,
                8 + rev as u64,
                LeaseCommand::Acquire {
                    name: "/rw".into(),
                    lease: ids[i],
                    kind: LockKind::ReadWrite,
                    mode,
                    value: Vec::new(),
                    lock_delay_ms: 0,
                    wait: true,
                },
            );
        }
        s.apply(
            10,
            &Command::Put(PutOp {
                lease: ids[1],
                ..PutOp::new("/eph", "v")
            }),
        );
        assert_eq!(s.lock_delays().len(), 1, "{:?}", s.locks);
        s
    }

    /// Snapshots and `lock/<name>` records keep their shape: the old code's bytes decode to
    /// the same state, and the new code writes the old code's bytes.
    #[test]
    fn persisted_shapes_are_unchanged() {
        let s = busy_state();
        let bytes = bincode::serialize(&s).expect("encode");
        let old: before::KvState = bincode::deserialize(&bytes).expect("decode as before");
        assert_eq!(bincode::serialize(&old).expect("encode"), bytes);
        let placeholder = &old.locks["/l"]
            .waiters
            .values()
            .next()
            .expect("placeholder");
        assert_eq!(placeholder.key, "");
        let waiter = old.locks["/l"].waiters.values().nth(1).expect("waiter");
        assert_eq!(s.waiter(&waiter.key).map(|w| w.lease), Some(waiter.lease));
        let lease = &old.leases[&waiter.lease];
        assert_eq!(
            lease.keys.iter().collect::<Vec<_>>(),
            vec!["/eph", waiter.key.as_str()]
        );
        let mut back: KvState = bincode::deserialize(&bytes).expect("decode");
        back.dirty = s.dirty.clone();
        assert_eq!(back, s);
        for (name, lock) in &s.locks {
            let record = bincode::serialize(&lock.record(name)).expect("encode");
            assert_eq!(
                record,
                bincode::serialize(&old.locks[&**name]).expect("encode")
            );
            assert_eq!(LockState::decode(name, &record).expect("decode"), *lock);
        }
    }

    /// A persisted queue whose waiter key names another lock or sequence is refused.
    #[test]
    fn a_misplaced_waiter_key_is_corrupt() {
        let s = busy_state();
        let record = bincode::serialize(&s.locks["/rw"].record("/rw")).expect("encode");
        assert!(LockState::decode("/rw", &record).is_ok());
        let err = LockState::decode("/other", &record).expect_err("wrong name");
        assert!(err.to_string().contains("not \"/other/"), "{err}");
    }

    /// What one held lock costs beyond its key-value entry stays small (docs/benchmarks.md,
    /// "Memory per held lock"): a queue entry and a lease with its one key inline.
    #[test]
    fn per_lock_records_stay_small() {
        assert!(std::mem::size_of::<(u64, Waiter)>() <= 48);
        assert!(std::mem::size_of::<LockState>() <= 40);
        assert!(std::mem::size_of::<LeaseState>() <= 72);
    }
}
