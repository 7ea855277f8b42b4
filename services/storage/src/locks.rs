//! Lock queues as data: the replicated half of locks, inside [`crate::kv::KvState`] (leases and
//! the keys attached to them are [`crate::leases`]; the rules that change queues are
//! [`crate::lock_rules`]). Deadlines live on the leader (`meridian-locks`), which turns them
//! into `DelayEnd` commands.
//!
//! A lock `NAME` is a queue of waiter keys `NAME/<20-digit sequence>`, each attached to its
//! holder's lease, in the group that owns `NAME`; a queue entry may also be a lock-delay
//! placeholder, the kept place of a holder whose lease expired.
//!
//! Memory: a waiter's key is stored once, in its key-value entry. The queue entry is the
//! sequence and the waiter ([`waiter_key`] rebuilds the key from the lock's name), and the
//! lease refers to the key by the lock's shared name and the sequence
//! ([`crate::leases::KeyRef`]). Persisted queues (`lock/<name>` records, snapshots) keep the
//! shape they always had, every waiter with its key ([`LockRecord`]), checked on reading.

use crate::sequence::SEQUENCE_DIGITS;
use meridian_types::{LockKind, LockMode};
use serde::{Deserialize, Serialize, Serializer};
use std::collections::{BTreeMap, VecDeque};

/// One entry of a lock's queue: a waiter or holder, or a lock-delay placeholder. Its key is
/// not stored here: it is `NAME/<sequence>` ([`waiter_key`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiter {
    /// The lease the waiter's key is attached to; 0 for a lock-delay placeholder.
    pub lease: u64,
    pub mode: LockMode,
    /// Revision of the grant (the fencing token), once granted.
    pub granted: Option<u64>,
    pub lock_delay_ms: u64,
    /// A lock-delay placeholder: the place of a holder whose lease expired (it has no key).
    delay: bool,
}

impl Waiter {
    /// A waiter that has just joined the queue (not granted yet).
    pub(crate) fn new(lease: u64, mode: LockMode, lock_delay_ms: u64) -> Self {
        Self {
            lease,
            mode,
            granted: None,
            lock_delay_ms,
            delay: false,
        }
    }

    pub fn is_delay(&self) -> bool {
        self.delay
    }

    /// Turns this holder into a lock-delay placeholder: it keeps its place, with no lease.
    pub(crate) fn hold_place_for_delay(&mut self) {
        self.delay = true;
        self.lease = 0;
    }
}

/// A lock's queue in sequence order. Sequences only grow, so entries join at the back, and
/// the holder, at the front, is usually the first to leave: a deque does both in O(1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Queue(VecDeque<(u64, Waiter)>);

impl Queue {
    /// A queue of one entry, with room for exactly one (most locks never have a second).
    pub(crate) fn one(seq: u64, w: Waiter) -> Self {
        let mut q = VecDeque::with_capacity(1);
        q.push_back((seq, w));
        Self(q)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn position(&self, seq: u64) -> Result<usize, usize> {
        self.0.binary_search_by_key(&seq, |(s, _)| *s)
    }

    pub fn get(&self, seq: u64) -> Option<&Waiter> {
        self.position(seq).ok().map(|i| &self.0[i].1)
    }

    pub(crate) fn get_mut(&mut self, seq: u64) -> Option<&mut Waiter> {
        let i = self.position(seq).ok()?;
        Some(&mut self.0[i].1)
    }

    pub(crate) fn insert(&mut self, seq: u64, w: Waiter) {
        match self.position(seq) {
            Ok(i) => self.0[i].1 = w,
            Err(i) => self.0.insert(i, (seq, w)),
        }
    }

    pub(crate) fn remove(&mut self, seq: u64) -> Option<Waiter> {
        let i = self.position(seq).ok()?;
        let (_, w) = self.0.remove(i)?;
        // A long queue that drained gives its room back.
        if self.0.capacity() > 4 * self.0.len().max(1) {
            self.0.shrink_to(2 * self.0.len());
        }
        Some(w)
    }

    /// (sequence, entry), in queue order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (u64, &Waiter)> + '_ {
        self.0.iter().map(|(seq, w)| (*seq, w))
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &Waiter> + '_ {
        self.0.iter().map(|(_, w)| w)
    }
}

/// One lock's queue, in sequence order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockState {
    pub kind: LockKind,
    pub waiters: Queue,
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

    pub(crate) fn effective_mode(kind: LockKind, mode: LockMode) -> LockMode {
        match kind {
            LockKind::Mutex => LockMode::Exclusive,
            LockKind::Semaphore(_) => LockMode::Shared,
            LockKind::ReadWrite => mode,
        }
    }

    /// Whether a new entry of `mode` appended now would be granted at once.
    pub(crate) fn would_grant(&self, mode: LockMode) -> bool {
        let exclusive_ahead = self.waiters.values().any(|w| w.mode == LockMode::Exclusive);
        Self::may_hold(self.kind, mode, self.waiters.len(), exclusive_ahead)
    }

    /// Grants every waiter the queue now allows; returns the sequences newly granted.
    pub(crate) fn regrant(&mut self, revision: u64) -> Vec<u64> {
        let mut granted = Vec::new();
        let mut exclusive_ahead = false;
        for (position, (seq, w)) in self.waiters.0.iter_mut().enumerate() {
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

    /// The holders (granted, not placeholders): (sequence, entry), in queue order.
    pub fn holders(&self) -> impl Iterator<Item = (u64, &Waiter)> {
        self.waiters
            .iter()
            .filter(|(_, w)| w.granted.is_some() && !w.is_delay())
    }

    /// The queue as it is persisted under lock `name` (serialize it).
    pub fn record<'a>(&'a self, name: &'a str) -> LockRecord<'a> {
        LockRecord {
            kind: self.kind,
            waiters: RecordWaiters { name, lock: self },
        }
    }

    /// Reads a persisted queue of lock `name` (bincode of a [`LockRecord`]).
    pub fn decode(name: &str, bytes: &[u8]) -> crate::Result<Self> {
        let stored: StoredLock = bincode::deserialize(bytes)?;
        Self::from_stored(name, stored).map_err(crate::Error::Corrupt)
    }

    /// Checks each persisted waiter's key is `name/<its sequence>` (or empty for a
    /// placeholder) before dropping it.
    fn from_stored(name: &str, stored: StoredLock) -> Result<Self, String> {
        let mut waiters = VecDeque::with_capacity(stored.waiters.len());
        for (seq, w) in stored.waiters {
            let delay = w.key.is_empty();
            if !delay && parse_waiter_key(&w.key) != Some((name, seq)) {
                return Err(format!(
                    "lock {name:?}: waiter {seq} has key {:?}, not {:?}",
                    w.key,
                    waiter_key(name, seq)
                ));
            }
            waiters.push_back((
                seq,
                Waiter {
                    lease: w.lease,
                    mode: w.mode,
                    granted: w.granted,
                    lock_delay_ms: w.lock_delay_ms,
                    delay,
                },
            ));
        }
        Ok(Self {
            kind: stored.kind,
            waiters: Queue(waiters),
        })
    }
}

/// A queue as persisted (`lock/<name>` records and snapshots): the shape the queue has always
/// had on disk, `{kind, waiters: sequence → {key, lease, mode, granted, lock_delay_ms}}`, the
/// key empty for a lock-delay placeholder. Written from [`LockState::record`].
#[derive(Serialize)]
#[serde(rename = "LockState")]
pub struct LockRecord<'a> {
    kind: LockKind,
    waiters: RecordWaiters<'a>,
}

struct RecordWaiters<'a> {
    name: &'a str,
    lock: &'a LockState,
}

impl Serialize for RecordWaiters<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.lock.waiters.iter().map(|(seq, w)| {
            let key = if w.is_delay() {
                String::new()
            } else {
                waiter_key(self.name, seq)
            };
            (
                seq,
                StoredWaiter {
                    key,
                    lease: w.lease,
                    mode: w.mode,
                    granted: w.granted,
                    lock_delay_ms: w.lock_delay_ms,
                },
            )
        }))
    }
}

#[derive(Deserialize)]
#[serde(rename = "LockState")]
struct StoredLock {
    kind: LockKind,
    waiters: BTreeMap<u64, StoredWaiter>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename = "Waiter")]
struct StoredWaiter {
    key: String,
    lease: u64,
    mode: LockMode,
    granted: Option<u64>,
    lock_delay_ms: u64,
}

/// `KvState::locks` in snapshots: a map of name → [`LockRecord`], as it always was.
pub(crate) mod serde_locks {
    use super::{LockState, StoredLock};
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    pub fn serialize<S: Serializer>(
        locks: &BTreeMap<Arc<str>, LockState>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(locks.iter().map(|(name, l)| (&**name, l.record(name))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<Arc<str>, LockState>, D::Error> {
        BTreeMap::<String, StoredLock>::deserialize(d)?
            .into_iter()
            .map(|(name, stored)| {
                let lock = LockState::from_stored(&name, stored).map_err(D::Error::custom)?;
                Ok((Arc::from(name), lock))
            })
            .collect()
    }
}

/// The key of waiter `seq` of lock `name`: `name/<20-digit sequence>`.
pub fn waiter_key(name: &str, seq: u64) -> String {
    format!("{name}/{seq:0width$}", width = SEQUENCE_DIGITS)
}

/// Splits a waiter key `NAME/<20 digits>` into the lock name and the sequence; the inverse of
/// [`waiter_key`].
pub fn parse_waiter_key(key: &str) -> Option<(&str, u64)> {
    let (name, tail) = key.rsplit_once('/')?;
    if tail.len() != SEQUENCE_DIGITS || !tail.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((name, tail.parse().ok()?))
}

pub fn kind_name(kind: LockKind) -> String {
    match kind {
        LockKind::Mutex => "mutex".into(),
        LockKind::ReadWrite => "read-write lock".into(),
        LockKind::Semaphore(n) => format!("semaphore of {n}"),
    }
}
