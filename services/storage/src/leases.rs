//! Lease records and the keys attached to them: the replicated half of leases, as data. The
//! rules that change them (grant, keepalive checkpoints, expiry, revocation, attaching and
//! detaching keys) run inside [`crate::kv::KvState::apply`] and are [`crate::lease_rules`];
//! lock queues, whose waiter keys are attached to leases, are [`crate::locks`].
//!
//! A lease refers to a lock waiter's key by the lock's shared name and the sequence
//! ([`KeyRef::Waiter`]), not by a copy of the key; persisted lease key sets are strings, as they
//! always were.

use crate::locks::{parse_waiter_key, waiter_key, LockState};
use crate::sequence::SEQUENCE_DIGITS;
use meridian_types::LeaseRecord;
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A lease and the keys attached to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseState {
    pub record: LeaseRecord,
    pub keys: LeaseKeys,
}

/// A key attached to a lease. Equal, ordered and persisted as the key string, whichever the
/// form: `Waiter(name, seq)` is the key `name/<seq, 20 digits>` (the lock table's own name,
/// shared), `Key` any other key.
#[derive(Clone, Debug)]
pub enum KeyRef {
    Key(Box<str>),
    Waiter(Arc<str>, u64),
}

impl KeyRef {
    /// The form `key` takes: a waiter's key of a lock in `locks` shares the lock's name.
    pub(crate) fn new(locks: &BTreeMap<Arc<str>, LockState>, key: &str) -> Self {
        parse_waiter_key(key)
            .and_then(|(name, seq)| {
                let (name, _) = locks.get_key_value(name)?;
                Some(Self::Waiter(name.clone(), seq))
            })
            .unwrap_or_else(|| Self::Key(key.into()))
    }

    pub fn to_key(&self) -> String {
        match self {
            Self::Key(k) => k.to_string(),
            Self::Waiter(name, seq) => waiter_key(name, *seq),
        }
    }

    /// The key's bytes, in three pieces (`digits` holds a waiter's sequence).
    fn pieces<'a>(&'a self, digits: &'a mut [u8; SEQUENCE_DIGITS]) -> [&'a [u8]; 3] {
        match self {
            Self::Key(k) => [k.as_bytes(), &[], &[]],
            Self::Waiter(name, seq) => {
                let mut n = *seq;
                for d in digits.iter_mut().rev() {
                    *d = b'0' + (n % 10) as u8;
                    n /= 10;
                }
                [name.as_bytes(), b"/", &digits[..]]
            }
        }
    }
}

impl Ord for KeyRef {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Self::Key(a), Self::Key(b)) => a.cmp(b),
            (Self::Waiter(a, x), Self::Waiter(b, y)) if a == b => x.cmp(y),
            _ => {
                let (mut da, mut db) = ([0; SEQUENCE_DIGITS], [0; SEQUENCE_DIGITS]);
                let (a, b) = (self.pieces(&mut da), other.pieces(&mut db));
                a.iter().copied().flatten().cmp(b.iter().copied().flatten())
            }
        }
    }
}

impl PartialOrd for KeyRef {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for KeyRef {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for KeyRef {}

impl Serialize for KeyRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Key(k) => s.serialize_str(k),
            Self::Waiter(..) => s.serialize_str(&self.to_key()),
        }
    }
}

/// The keys attached to a lease, in key order. Most leases have one (a session's lock or its
/// registration): it is kept inline, a set only from the second on. Persisted as a set of
/// strings, as it always was.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LeaseKeys {
    #[default]
    Empty,
    One(KeyRef),
    /// Two or more.
    Many(BTreeSet<KeyRef>),
}

impl LeaseKeys {
    pub fn len(&self) -> usize {
        match self {
            Self::Empty => 0,
            Self::One(_) => 1,
            Self::Many(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, Self::Empty)
    }

    /// In key order.
    pub fn iter(&self) -> impl Iterator<Item = &KeyRef> {
        let (one, many) = match self {
            Self::Empty => (None, None),
            Self::One(k) => (Some(k), None),
            Self::Many(s) => (None, Some(s.iter())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    pub fn contains(&self, key: &str) -> bool {
        let probe = KeyRef::Key(key.into());
        match self {
            Self::Empty => false,
            Self::One(k) => *k == probe,
            Self::Many(s) => s.contains(&probe),
        }
    }

    pub(crate) fn insert(&mut self, key: KeyRef) {
        *self = match std::mem::take(self) {
            Self::Empty => Self::One(key),
            Self::One(k) if k == key => Self::One(k),
            Self::One(k) => Self::Many(BTreeSet::from([k, key])),
            Self::Many(mut s) => {
                s.insert(key);
                Self::Many(s)
            }
        };
    }

    pub(crate) fn remove(&mut self, key: &str) {
        let probe = KeyRef::Key(key.into());
        match self {
            Self::Empty => {}
            Self::One(k) => {
                if *k == probe {
                    *self = Self::Empty;
                }
            }
            Self::Many(s) => {
                s.remove(&probe);
                if s.len() == 1 {
                    if let Some(k) = s.pop_first() {
                        *self = Self::One(k);
                    }
                }
            }
        }
    }
}

impl Serialize for LeaseKeys {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // With its length first (bincode needs it; the chained iterator cannot tell).
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for k in self.iter() {
            seq.serialize_element(k)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for LeaseKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut keys = Self::Empty;
        for k in BTreeSet::<String>::deserialize(d)? {
            keys.insert(KeyRef::Key(k.into_boxed_str()));
        }
        Ok(keys)
    }
}

/// What one apply changed outside the keys: records the store must rewrite (or remove).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dirty {
    pub leases: BTreeSet<u64>,
    pub locks: BTreeSet<String>,
}
