//! Shared by the test binaries: op builders, an independent witness validator, and a generator of
//! legal histories (a sequential execution on one global state) with a stale-read mutation.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

use meridian_checker::{check_sequential, History, Op, OpKind, Violation};

pub fn write(session: usize, group: u64, key: &str, value: &str, revision: Option<u64>) -> Op {
    Op {
        session,
        group,
        kind: OpKind::Write {
            key: key.to_owned(),
            value: value.to_owned(),
            revision,
        },
    }
}

pub fn read(
    session: usize,
    group: u64,
    key: &str,
    value: Option<&str>,
    mod_revision: Option<u64>,
) -> Op {
    Op {
        session,
        group,
        kind: OpKind::Read {
            key: key.to_owned(),
            value: value.map(str::to_owned),
            mod_revision,
        },
    }
}

pub fn history(ops: impl IntoIterator<Item = Op>) -> History {
    let mut history = History::new();
    for op in ops {
        history.push(op);
    }
    history
}

/// Checks a history expected to pass, and validates its witness independently of the checker.
pub fn assert_passes(history: &History) -> Vec<(usize, usize)> {
    match check_sequential(history) {
        Ok(witness) => {
            assert_witness_valid(history, &witness);
            witness
        }
        Err(violation) => panic!("expected a pass, got:\n{violation}"),
    }
}

/// Checks a history expected to fail with a message containing `needle`.
pub fn assert_fails(history: &History, needle: &str) -> Violation {
    match check_sequential(history) {
        Ok(witness) => {
            panic!("expected a violation containing {needle:?}, got witness {witness:?}")
        }
        Err(violation) => {
            assert!(
                violation.message.contains(needle),
                "expected {needle:?} in:\n{violation}"
            );
            violation
        }
    }
}

/// Replays `witness` on an empty store and asserts the three conditions of sequential
/// consistency directly; it shares no code with the checker's graph.
pub fn assert_witness_valid(history: &History, witness: &[(usize, usize)]) {
    let mut position: HashMap<(usize, usize), usize> = HashMap::new();
    for (i, &at) in witness.iter().enumerate() {
        assert!(
            history.get(at.0, at.1).is_some(),
            "witness names {at:?}, not in the history"
        );
        assert!(
            position.insert(at, i).is_none(),
            "witness lists {at:?} twice"
        );
    }
    for (session, ops) in history.sessions() {
        let mut last = None;
        for (index, op) in ops.iter().enumerate() {
            let unknown = matches!(op.kind, OpKind::Write { revision: None, .. });
            let Some(&p) = position.get(&(session, index)) else {
                assert!(unknown, "witness leaves out s{session}[{index}] {op}");
                continue;
            };
            if let Some(last) = last {
                assert!(
                    last < p,
                    "witness breaks program order at s{session}[{index}]"
                );
            }
            // An unanswered write follows what its session did before it; what the session
            // does after it need not follow it (it may land later).
            if !unknown {
                last = Some(p);
            }
        }
    }
    let mut highest_revision: HashMap<u64, u64> = HashMap::new();
    let mut store: HashMap<&str, &str> = HashMap::new();
    for &(session, index) in witness {
        let Some(op) = history.get(session, index) else {
            continue;
        };
        match &op.kind {
            OpKind::Write {
                key,
                value,
                revision,
            } => {
                if let Some(revision) = revision {
                    let highest = highest_revision.entry(op.group).or_insert(0);
                    assert!(
                        *revision >= *highest,
                        "witness puts s{session}[{index}] {op} after revision {highest}"
                    );
                    *highest = *revision;
                }
                store.insert(key, value);
            }
            OpKind::Read { key, value, .. } => {
                assert_eq!(
                    store.get(key.as_str()).copied(),
                    value.as_deref(),
                    "witness makes s{session}[{index}] {op} illegal"
                );
            }
        }
    }
}

/// xorshift64: a tiny deterministic PRNG, so every generated history is reproducible by seed.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        // Spread small seeds over the state; xorshift must never hold zero.
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    pub fn index(&mut self, len: usize) -> usize {
        (self.next() % len as u64) as usize
    }

    pub fn percent(&mut self, chance: u64) -> bool {
        self.below(100) < chance
    }
}

pub struct Shape {
    pub sessions: usize,
    pub groups: u64,
    pub keys_per_group: usize,
    pub ops: usize,
}

/// A history produced by one sequential execution: sessions take turns at random on a single
/// store with one revision counter per group, so it is sequentially consistent by construction.
/// It has batches (several keys at one revision), reads with and without mod_revision, and writes
/// of unknown outcome that did or did not take effect.
pub fn legal_history(seed: u64, shape: &Shape) -> History {
    let mut rng = XorShift::new(seed);
    let keys: Vec<(u64, String)> = (0..shape.groups)
        .flat_map(|g| (0..shape.keys_per_group).map(move |k| (g, format!("/g{g}/k{k}"))))
        .collect();
    let mut revision: Vec<u64> = vec![0; shape.groups as usize];
    // key -> (value, mod_revision, written with unknown outcome)
    let mut store: HashMap<String, (String, u64, bool)> = HashMap::new();
    let mut values = 0u64;
    let mut history = History::new();
    while history.len() < shape.ops {
        let session = rng.index(shape.sessions);
        let (group, key) = keys[rng.index(keys.len())].clone();
        let roll = rng.below(100);
        if roll < 45 {
            let (value, mod_revision) = match store.get(&key) {
                Some((value, mod_revision, unknown)) => {
                    let report = *unknown || rng.percent(80);
                    (Some(value.as_str()), report.then_some(*mod_revision))
                }
                None => (None, None),
            };
            history.push(read(session, group, &key, value, mod_revision));
            continue;
        }
        values += 1;
        let value = format!("v{values}");
        if roll < 85 {
            revision[group as usize] += 1;
            let rev = revision[group as usize];
            history.push(write(session, group, &key, &value, Some(rev)));
            store.insert(key, (value, rev, false));
        } else if roll < 95 {
            // A batch: distinct keys of one group, one revision, consecutive in the session.
            revision[group as usize] += 1;
            let rev = revision[group as usize];
            let size = 2 + rng.index(shape.keys_per_group.max(2) - 1);
            let mut batch: Vec<&(u64, String)> = keys.iter().filter(|(g, _)| *g == group).collect();
            batch.truncate(size);
            for (_, key) in batch {
                values += 1;
                let value = format!("v{values}");
                history.push(write(session, group, key, &value, Some(rev)));
                store.insert(key.clone(), (value, rev, false));
            }
        } else {
            history.push(write(session, group, &key, &value, None));
            if rng.percent(50) {
                revision[group as usize] += 1;
                let rev = revision[group as usize];
                store.insert(key, (value, rev, true));
            }
        }
    }
    history
}

/// Makes one read return an older value of its key than one its session had already observed
/// (by its own write or an earlier read). Returns None when no such read exists.
pub fn with_stale_read(history: &History, seed: u64) -> Option<History> {
    // (key, value) -> revision, from writes and from reads' mod_revision.
    let mut revision_of: HashMap<(&str, &str), u64> = HashMap::new();
    let mut writes_by_key: BTreeMap<&str, Vec<(u64, &str)>> = BTreeMap::new();
    for (_, ops) in history.sessions() {
        for op in ops {
            if let OpKind::Write {
                key,
                value,
                revision: Some(revision),
            } = &op.kind
            {
                revision_of.insert((key, value), *revision);
                writes_by_key
                    .entry(key)
                    .or_default()
                    .push((*revision, value));
            }
        }
    }
    for (_, ops) in history.sessions() {
        for op in ops {
            if let OpKind::Read {
                key,
                value: Some(value),
                mod_revision: Some(m),
            } = &op.kind
            {
                revision_of.insert((key, value), *m);
            }
        }
    }
    // Every (session, index, older value, its revision) that would be a stale read.
    let mut candidates: Vec<(usize, usize, String, u64)> = Vec::new();
    for (session, ops) in history.sessions() {
        let mut seen: HashMap<&str, u64> = HashMap::new();
        for (index, op) in ops.iter().enumerate() {
            let key = op.kind.key();
            if let (OpKind::Read { .. }, Some(&newest)) = (&op.kind, seen.get(key)) {
                let older = writes_by_key.get(key).into_iter().flatten();
                // The newest value older than the one seen: the subtlest stale read.
                if let Some(&(rev, value)) = older.filter(|(rev, _)| *rev < newest).max() {
                    candidates.push((session, index, value.to_owned(), rev));
                }
            }
            let observed = match &op.kind {
                OpKind::Write {
                    key,
                    value,
                    revision: Some(_),
                }
                | OpKind::Read {
                    key,
                    value: Some(value),
                    ..
                } => revision_of.get(&(key.as_str(), value.as_str())).copied(),
                _ => None,
            };
            if let Some(rev) = observed {
                let newest = seen.entry(key).or_insert(rev);
                *newest = (*newest).max(rev);
            }
        }
    }
    if candidates.is_empty() {
        return None;
    }
    let (stale_session, stale_index, value, rev) =
        candidates[XorShift::new(seed).index(candidates.len())].clone();
    let mut mutated = History::new();
    for (session, ops) in history.sessions() {
        for (index, op) in ops.iter().enumerate() {
            if (session, index) == (stale_session, stale_index) {
                mutated.push(read(
                    session,
                    op.group,
                    op.kind.key(),
                    Some(&value),
                    Some(rev),
                ));
            } else {
                mutated.push(op.clone());
            }
        }
    }
    Some(mutated)
}
