//! Leases, ephemeral keys and lock queues: the replicated half. Every rule here is
//! deterministic and runs inside [`KvState::apply`]; time never appears — deadlines live on
//! the leader (`meridian-locks`), which turns them into `Expire`, `Checkpoint` and `DelayEnd`
//! commands.
//!
//! A lock `NAME` is a queue of waiter keys `NAME/<20-digit sequence>`, each attached to its
//! holder's lease, in the group that owns `NAME`. Waiters are granted strictly in queue order
//! (a waiter is granted only when those ahead of it allow it), and a grant touches only the
//! granted waiter's key: its `mod_revision` becomes the grant revision, the fencing token.
//! When a holder's lease expires (not on an explicit release) its place is kept by a
//! lock-delay placeholder for the holder's `lock_delay_ms`, ended by the leader's `DelayEnd`.

use crate::kv::{KvState, SEQUENCE_DIGITS};
use meridian_types::{
    CommandResult, Event, EventKind, KeyValue, LeaseCommand, LeaseRecord, LeaseResult, LockKind,
    LockMode, Rejection, LEASE_GROUP_SHIFT,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A lease and the keys attached to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseState {
    pub record: LeaseRecord,
    pub keys: BTreeSet<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    /// The waiter's key; empty for a lock-delay placeholder.
    pub key: String,
    pub lease: u64,
    pub mode: LockMode,
    /// Revision of the grant (the fencing token), once granted.
    pub granted: Option<u64>,
    pub lock_delay_ms: u64,
}

impl Waiter {
    pub fn is_delay(&self) -> bool {
        self.key.is_empty()
    }
}

/// One lock's queue, in sequence order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockState {
    pub kind: LockKind,
    pub waiters: BTreeMap<u64, Waiter>,
}

impl LockState {
    /// Whether an entry of `mode` at `position` (entries ahead: `ahead`) may hold the lock.
    fn may_hold(kind: LockKind, mode: LockMode, position: usize, exclusive_ahead: bool) -> bool {
        match kind {
            LockKind::Semaphore(n) => position < n as usize,
            LockKind::Mutex => position == 0,
            LockKind::ReadWrite => match mode {
                LockMode::Exclusive => position == 0,
                LockMode::Shared => !exclusive_ahead,
            },
        }
    }

    fn effective_mode(kind: LockKind, mode: LockMode) -> LockMode {
        match kind {
            LockKind::Mutex => LockMode::Exclusive,
            LockKind::Semaphore(_) => LockMode::Shared,
            LockKind::ReadWrite => mode,
        }
    }

    /// Whether a new entry of `mode` appended now would be granted at once.
    fn would_grant(&self, mode: LockMode) -> bool {
        let exclusive_ahead = self.waiters.values().any(|w| w.mode == LockMode::Exclusive);
        Self::may_hold(self.kind, mode, self.waiters.len(), exclusive_ahead)
    }

    /// Grants every waiter the queue now allows; returns the sequences newly granted.
    fn regrant(&mut self, revision: u64) -> Vec<u64> {
        let mut granted = Vec::new();
        let mut exclusive_ahead = false;
        for (position, (seq, w)) in self.waiters.iter_mut().enumerate() {
            if Self::may_hold(self.kind, w.mode, position, exclusive_ahead) {
                if w.granted.is_none() && !w.is_delay() {
                    w.granted = Some(revision);
                    granted.push(*seq);
                }
            } else if self.kind != LockKind::ReadWrite {
                break;
            }
            exclusive_ahead |= w.mode == LockMode::Exclusive;
        }
        granted
    }

    pub fn holders(&self) -> impl Iterator<Item = &Waiter> {
        self.waiters
            .values()
            .filter(|w| w.granted.is_some() && !w.is_delay())
    }
}

/// What one apply changed outside the keys: records the store must rewrite (or remove).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dirty {
    pub leases: BTreeSet<u64>,
    pub locks: BTreeSet<String>,
}

fn reject(rule: &str, message: String) -> CommandResult {
    CommandResult::Rejected(Rejection {
        rule: rule.to_string(),
        message,
    })
}

fn lease_missing(id: u64) -> CommandResult {
    reject(
        "lease_not_found",
        format!("lease {id} does not exist (it expired, was revoked, or was never granted)"),
    )
}

/// Splits a waiter key `NAME/<20 digits>` into the lock name and the sequence.
pub fn parse_waiter_key(key: &str) -> Option<(&str, u64)> {
    let (name, tail) = key.rsplit_once('/')?;
    if tail.len() != SEQUENCE_DIGITS || !tail.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((name, tail.parse().ok()?))
}

impl KvState {
    pub(crate) fn apply_lease(
        &mut self,
        revision: u64,
        cmd: &LeaseCommand,
        events: &mut Vec<Event>,
    ) -> CommandResult {
        match cmd {
            LeaseCommand::Grant { group, ttl_ms } => {
                if *ttl_ms == 0 {
                    return reject("lease_ttl", "a lease's TTL must be above 0".into());
                }
                self.sequence += 1;
                let id =
                    (group << LEASE_GROUP_SHIFT) | (self.sequence & ((1 << LEASE_GROUP_SHIFT) - 1));
                self.leases.insert(
                    id,
                    LeaseState {
                        record: LeaseRecord {
                            id,
                            ttl_ms: *ttl_ms,
                            refreshed: revision,
                            idle_ms: 0,
                        },
                        keys: BTreeSet::new(),
                    },
                );
                self.dirty.leases.insert(id);
                CommandResult::Lease(LeaseResult::Granted {
                    id,
                    ttl_ms: *ttl_ms,
                })
            }
            LeaseCommand::Refresh { ids } => {
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    match self.leases.get_mut(id) {
                        Some(l) => {
                            l.record.refreshed = revision;
                            l.record.idle_ms = 0;
                            self.dirty.leases.insert(*id);
                            out.push(Some(l.record.ttl_ms));
                        }
                        None => out.push(None),
                    }
                }
                CommandResult::Lease(LeaseResult::Refreshed(out))
            }
            LeaseCommand::Revoke { id } => {
                if !self.leases.contains_key(id) {
                    return lease_missing(*id);
                }
                let deleted = self.end_lease(revision, *id, false, events);
                CommandResult::Lease(LeaseResult::Revoked {
                    keys_deleted: deleted,
                })
            }
            LeaseCommand::Expire { leases } => {
                let mut n = 0;
                for (id, refreshed) in leases {
                    if self
                        .leases
                        .get(id)
                        .is_some_and(|l| l.record.refreshed == *refreshed)
                    {
                        self.end_lease(revision, *id, true, events);
                        n += 1;
                    }
                }
                CommandResult::Lease(LeaseResult::Done(n))
            }
            LeaseCommand::Checkpoint { leases } => {
                let mut n = 0;
                for (id, refreshed, idle_ms) in leases {
                    if let Some(l) = self.leases.get_mut(id) {
                        if l.record.refreshed == *refreshed && *idle_ms > l.record.idle_ms {
                            l.record.idle_ms = *idle_ms;
                            self.dirty.leases.insert(*id);
                            n += 1;
                        }
                    }
                }
                CommandResult::Lease(LeaseResult::Done(n))
            }
            LeaseCommand::Acquire {
                name,
                lease,
                kind,
                mode,
                value,
                lock_delay_ms,
                wait,
            } => self.acquire(
                revision,
                name,
                *lease,
                *kind,
                *mode,
                value,
                *lock_delay_ms,
                *wait,
                events,
            ),
            LeaseCommand::Release { key } => {
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
            LeaseCommand::Proclaim { key, value } => {
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
                    value: value.clone(),
                    mod_revision: revision,
                    version: prev.version + 1,
                    ..prev.clone()
                };
                self.keys.insert(key.clone(), kv.clone());
                events.push(Event {
                    kind: EventKind::Put,
                    kv,
                    prev_kv: Some(prev),
                });
                CommandResult::Lease(LeaseResult::Proclaimed { revision })
            }
            LeaseCommand::DelayEnd { name, seq } => {
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
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn acquire(
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
                    holders: lock.holders().map(|w| w.key.clone()).collect(),
                });
            }
        }
        self.sequence += 1;
        let seq = self.sequence;
        let key = format!("{name}/{seq:0width$}", width = SEQUENCE_DIGITS);
        let kv = KeyValue {
            key: key.clone(),
            value: value.to_vec(),
            create_revision: revision,
            mod_revision: revision,
            version: 1,
            lease,
        };
        self.keys.insert(key.clone(), kv.clone());
        self.attach(&key, lease);
        events.push(Event {
            kind: EventKind::Put,
            kv,
            prev_kv: None,
        });
        let lock = self
            .locks
            .entry(name.to_string())
            .or_insert_with(|| LockState {
                kind,
                waiters: BTreeMap::new(),
            });
        lock.waiters.insert(
            seq,
            Waiter {
                key: key.clone(),
                lease,
                mode,
                granted: None,
                lock_delay_ms,
            },
        );
        self.after_queue_change(revision, name, events);
        let granted = self
            .locks
            .get(name)
            .and_then(|l| l.waiters.get(&seq))
            .and_then(|w| w.granted);
        CommandResult::Lease(LeaseResult::Queued { key, granted })
    }

    /// The waiter whose key is `key`, if `key` is one.
    pub fn waiter(&self, key: &str) -> Option<&Waiter> {
        let (name, seq) = parse_waiter_key(key)?;
        self.locks
            .get(name)?
            .waiters
            .get(&seq)
            .filter(|w| w.key == key)
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
        let granted: Vec<String> = lock
            .regrant(revision)
            .into_iter()
            .filter_map(|seq| lock.waiters.get(&seq).map(|w| w.key.clone()))
            .collect();
        for key in granted {
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

    pub(crate) fn attach(&mut self, key: &str, lease: u64) {
        if lease == 0 {
            return;
        }
        if let Some(l) = self.leases.get_mut(&lease) {
            l.keys.insert(key.to_string());
        }
    }

    pub(crate) fn detach(&mut self, key: &str, lease: u64) {
        if lease == 0 {
            return;
        }
        if let Some(l) = self.leases.get_mut(&lease) {
            l.keys.remove(key);
        }
    }

    /// Whether `lease` may have keys attached (0 means none).
    pub(crate) fn lease_usable(&self, lease: u64) -> bool {
        lease == 0 || self.leases.contains_key(&lease)
    }

    /// Deletes `key` (if present): detaches it from its lease, and when it is a lock waiter,
    /// leaves the queue — keeping its place as a lock-delay when `expired` and it held.
    pub(crate) fn remove_key(
        &mut self,
        revision: u64,
        key: &str,
        expired: bool,
        events: &mut Vec<Event>,
    ) -> Option<KeyValue> {
        let prev = self.keys.remove(key)?;
        self.detach(key, prev.lease);
        events.push(Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: key.to_string(),
                value: Vec::new(),
                create_revision: 0,
                mod_revision: revision,
                version: 0,
                lease: 0,
            },
            prev_kv: Some(prev.clone()),
        });
        if let Some((name, seq)) = parse_waiter_key(key) {
            let name = name.to_string();
            if let Some(lock) = self.locks.get_mut(&name) {
                if lock.waiters.get(&seq).is_some_and(|w| w.key == key) {
                    let keep_delay = lock
                        .waiters
                        .get(&seq)
                        .is_some_and(|w| expired && w.granted.is_some() && w.lock_delay_ms > 0);
                    if keep_delay {
                        if let Some(w) = lock.waiters.get_mut(&seq) {
                            w.key.clear();
                            w.lease = 0;
                        }
                    } else {
                        lock.waiters.remove(&seq);
                    }
                    self.after_queue_change(revision, &name, events);
                }
            }
        }
        Some(prev)
    }

    /// Deletes every key of lease `id` and the lease. Returns how many keys went.
    fn end_lease(&mut self, revision: u64, id: u64, expired: bool, events: &mut Vec<Event>) -> u64 {
        let Some(lease) = self.leases.remove(&id) else {
            return 0;
        };
        self.dirty.leases.insert(id);
        let mut n = 0;
        for key in &lease.keys {
            if self.remove_key(revision, key, expired, events).is_some() {
                n += 1;
            }
        }
        n
    }

    /// Takes the leases and locks changed since the last call, as the store writes them.
    #[allow(clippy::type_complexity)]
    pub fn take_dirty(
        &mut self,
    ) -> (
        Vec<(u64, Option<LeaseRecord>)>,
        Vec<(String, Option<LockState>)>,
    ) {
        let dirty = std::mem::take(&mut self.dirty);
        let leases = dirty
            .leases
            .into_iter()
            .map(|id| (id, self.leases.get(&id).map(|l| l.record.clone())))
            .collect();
        let locks = dirty
            .locks
            .into_iter()
            .map(|name| {
                let lock = self.locks.get(&name).cloned();
                (name, lock)
            })
            .collect();
        (leases, locks)
    }

    /// Rebuilds each lease's set of keys from the keys themselves (after loading).
    pub fn rebuild_lease_keys(&mut self) {
        for l in self.leases.values_mut() {
            l.keys.clear();
        }
        for (key, kv) in &self.keys {
            if let Some(l) = self.leases.get_mut(&kv.lease) {
                l.keys.insert(key.clone());
            }
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
                    .map(move |(seq, w)| (name.clone(), *seq, w.lock_delay_ms))
            })
            .collect()
    }

    /// Whether `token` (a grant revision) belongs to a current holder of lock `name`.
    pub fn fence_valid(&self, name: &str, token: u64) -> bool {
        self.locks
            .get(name)
            .is_some_and(|l| l.holders().any(|w| w.granted == Some(token)))
    }
}

pub fn kind_name(kind: LockKind) -> String {
    match kind {
        LockKind::Mutex => "mutex".into(),
        LockKind::ReadWrite => "read-write lock".into(),
        LockKind::Semaphore(n) => format!("semaphore of {n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_types::{Command, DeleteOp, PutOp};

    fn lease_cmd(s: &mut KvState, rev: u64, c: LeaseCommand) -> (CommandResult, Vec<Event>) {
        s.apply(rev, &Command::Lease(c))
    }

    fn grant(s: &mut KvState, rev: u64) -> u64 {
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

    fn acquire(
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

    fn queued(r: CommandResult) -> (String, Option<u64>) {
        match r {
            CommandResult::Lease(LeaseResult::Queued { key, granted }) => (key, granted),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn rejected(r: &CommandResult) -> &str {
        match r {
            CommandResult::Rejected(r) => r.rule.as_str(),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    /// Lease ids carry their group; ephemeral keys go with their lease, in the same entry.
    #[test]
    fn ephemeral_keys_go_with_the_lease() {
        let mut s = KvState::default();
        let id = grant(&mut s, 1);
        assert_eq!(meridian_types::lease_group(id), 3);
        let put = |k: &str, lease| {
            Command::Put(PutOp {
                lease,
                ..PutOp::new(k, "v")
            })
        };
        s.apply(2, &put("/a", id));
        s.apply(3, &put("/b", id));
        s.apply(4, &put("/b", 0)); // detached by an overwrite without the lease
        assert_eq!(s.leases[&id].keys.len(), 1);
        let refreshed = s.leases[&id].record.refreshed;
        let (res, ev) = lease_cmd(
            &mut s,
            5,
            LeaseCommand::Expire {
                leases: vec![(id, refreshed)],
            },
        );
        assert_eq!(res, CommandResult::Lease(LeaseResult::Done(1)));
        assert_eq!(ev.len(), 1);
        assert!(ev
            .iter()
            .all(|e| e.kind == EventKind::Delete && e.revision() == 5));
        assert!(s.get("/a").is_none() && s.get("/b").is_some());
        assert!(s.leases.is_empty());
    }

    /// An expiry decided before a refresh landed does nothing.
    #[test]
    fn stale_expiry_is_ignored() {
        let mut s = KvState::default();
        let id = grant(&mut s, 1);
        lease_cmd(&mut s, 2, LeaseCommand::Refresh { ids: vec![id, 999] });
        let (res, _) = lease_cmd(
            &mut s,
            3,
            LeaseCommand::Expire {
                leases: vec![(id, 1)],
            },
        );
        assert_eq!(res, CommandResult::Lease(LeaseResult::Done(0)));
        assert!(s.leases.contains_key(&id));
        // Checkpoints only move idle time forward, and only for the refresh they saw.
        lease_cmd(
            &mut s,
            4,
            LeaseCommand::Checkpoint {
                leases: vec![(id, 2, 300), (id, 1, 900)],
            },
        );
        assert_eq!(s.leases[&id].record.idle_ms, 300);
        lease_cmd(&mut s, 5, LeaseCommand::Refresh { ids: vec![id] });
        assert_eq!(s.leases[&id].record.idle_ms, 0);
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
        let mut s = KvState::default();
        let (a, b) = (grant(&mut s, 1), grant(&mut s, 2));
        let (_, _) = queued(acquire(
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
        let mut s = KvState::default();
        let (a, b) = (grant(&mut s, 1), grant(&mut s, 2));
        let (_, _) = queued(acquire(
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
}
