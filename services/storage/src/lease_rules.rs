//! The lease rules: how a command changes leases and the keys attached to them, as methods of
//! [`KvState`] run inside [`KvState::apply`]. Every rule is deterministic; time never appears —
//! deadlines live on the leader (`meridian-locks`), which turns them into `Expire`,
//! `Checkpoint` and `DelayEnd` commands. A lease's keys are deleted in the entry that expires
//! or revokes it. The records themselves are [`crate::leases`].

use crate::kv::{reject, KvState};
use crate::leases::{KeyRef, LeaseKeys, LeaseState};
use crate::locks::LockState;
use meridian_types::{
    CommandResult, Event, EventKind, KeyValue, LeaseCommand, LeaseRecord, LeaseResult,
    LEASE_GROUP_SHIFT,
};

pub(crate) fn lease_missing(id: u64) -> CommandResult {
    reject(
        "lease_not_found",
        format!("lease {id} does not exist (it expired, was revoked, or was never granted)"),
    )
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
                        keys: LeaseKeys::Empty,
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
            LeaseCommand::Release { key } => self.release_lock(revision, key, events),
            LeaseCommand::Proclaim { key, value } => self.proclaim(revision, key, value, events),
            LeaseCommand::DelayEnd { name, seq } => self.delay_end(revision, name, *seq, events),
        }
    }

    pub(crate) fn attach(&mut self, key: &str, lease: u64) {
        if lease == 0 || !self.leases.contains_key(&lease) {
            return;
        }
        let key = KeyRef::new(&self.locks, key);
        if let Some(l) = self.leases.get_mut(&lease) {
            l.keys.insert(key);
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
        self.leave_queue(revision, key, expired, events);
        Some(prev)
    }

    /// Deletes every key of lease `id` and the lease. Returns how many keys went.
    fn end_lease(&mut self, revision: u64, id: u64, expired: bool, events: &mut Vec<Event>) -> u64 {
        let Some(lease) = self.leases.remove(&id) else {
            return 0;
        };
        self.dirty.leases.insert(id);
        let mut n = 0;
        for key in lease.keys.iter() {
            if self
                .remove_key(revision, &key.to_key(), expired, events)
                .is_some()
            {
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
                let lock = self.locks.get(name.as_str()).cloned();
                (name, lock)
            })
            .collect();
        (leases, locks)
    }

    /// Rebuilds each lease's set of keys from the keys themselves (after loading).
    pub fn rebuild_lease_keys(&mut self) {
        for l in self.leases.values_mut() {
            l.keys = LeaseKeys::Empty;
        }
        for (key, kv) in &self.keys {
            if let Some(l) = self.leases.get_mut(&kv.lease) {
                l.keys.insert(KeyRef::new(&self.locks, key));
            }
        }
    }

    /// Gives the lease key sets of a decoded snapshot (strings) the shared form: the same
    /// keys, a waiter's by its lock's name.
    pub fn share_lease_keys(&mut self) {
        for l in self.leases.values_mut() {
            let mut keys = LeaseKeys::Empty;
            for k in l.keys.iter() {
                keys.insert(KeyRef::new(&self.locks, &k.to_key()));
            }
            l.keys = keys;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock_rules::tests::{acquire, grant, lease_cmd, queued};
    use meridian_types::{Command, DeleteOp, LockKind, LockMode, PutOp};
    use std::collections::BTreeSet;
    use std::sync::Arc;

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

    /// A key equals, and sorts as, its string, whichever form holds it.
    #[test]
    fn key_forms_compare_as_their_strings() {
        let name: Arc<str> = Arc::from("/a/b");
        let cases = [
            (KeyRef::Waiter(name.clone(), 7), "/a/b/00000000000000000007"),
            (
                KeyRef::Waiter(name.clone(), u64::MAX),
                "/a/b/18446744073709551615",
            ),
            (
                KeyRef::Waiter(Arc::from("/a"), 3),
                "/a/00000000000000000003",
            ),
            (KeyRef::Key("/a/b".into()), "/a/b"),
            (KeyRef::Key("/a/b/0".into()), "/a/b/0"),
            (KeyRef::Key("/a/b/1".into()), "/a/b/1"),
            (KeyRef::Key("/a/b0".into()), "/a/b0"),
            (KeyRef::Key("/a/c".into()), "/a/c"),
        ];
        for (a, sa) in &cases {
            assert_eq!(a.to_key(), *sa);
            assert_eq!(a, &KeyRef::Key((*sa).into()), "{sa}");
            for (b, sb) in &cases {
                assert_eq!(a.cmp(b), sa.cmp(sb), "{sa} against {sb}");
            }
        }
    }

    /// A lease's key set holds one key inline, a set from two on, and back; persisted it is
    /// the set of strings it always was.
    #[test]
    fn lease_keys_one_many_and_back() {
        let mut s = KvState::default();
        let id = grant(&mut s, 1);
        let (waiter, _) = queued(acquire(
            &mut s,
            2,
            id,
            LockKind::Mutex,
            LockMode::Exclusive,
            true,
        ));
        assert!(matches!(
            &s.leases[&id].keys,
            LeaseKeys::One(KeyRef::Waiter(..))
        ));
        // The lease shares the lock table's name, not a copy of it.
        if let (Some((name, _)), LeaseKeys::One(KeyRef::Waiter(shared, _))) =
            (s.locks.first_key_value(), &s.leases[&id].keys)
        {
            assert!(Arc::ptr_eq(name, shared));
        }
        let put = |k: &str| {
            Command::Put(PutOp {
                lease: id,
                ..PutOp::new(k, "v")
            })
        };
        s.apply(3, &put("/z"));
        s.apply(4, &put("/a"));
        let listed: Vec<String> = s.leases[&id].keys.iter().map(KeyRef::to_key).collect();
        assert_eq!(listed, vec!["/a".to_string(), waiter.clone(), "/z".into()]);
        let old: BTreeSet<String> = listed.iter().cloned().collect();
        let bytes = bincode::serialize(&s.leases[&id].keys).expect("encode");
        assert_eq!(bytes, bincode::serialize(&old).expect("encode"));
        let back: LeaseKeys = bincode::deserialize(&bytes).expect("decode");
        assert_eq!(back, s.leases[&id].keys);
        let delete = |k: &str| {
            Command::Delete(DeleteOp {
                key: k.into(),
                prefix: false,
                expected_version: None,
                expected_mod_revision: None,
                prev_kv: false,
            })
        };
        s.apply(5, &put("/a")); // unchanged: already attached
        s.apply(6, &delete("/z"));
        assert_eq!(s.leases[&id].keys.len(), 2);
        s.apply(7, &delete("/a"));
        assert!(matches!(&s.leases[&id].keys, LeaseKeys::One(k) if k.to_key() == waiter));
        assert!(s.leases[&id].keys.contains(&waiter));
    }
}
