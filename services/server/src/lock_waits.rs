//! Herd-free lock waits: an acquire that queued registers its waiter key here, and one task per
//! group looks only at the keys each applied entry touched — a waiter is woken when its own key
//! is granted (touched with a fencing revision) or deleted, never by other waiters' changes.

use meridian_storage::{GroupShared, Notice};
use meridian_types::EventKind;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::oneshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// Granted at this revision (the fencing token).
    Granted(u64),
    /// The waiter's key is gone (its lease expired, or someone released it).
    Gone,
}

#[derive(Default)]
pub struct LockWaits {
    waiting: Mutex<BTreeMap<String, oneshot::Sender<WaitOutcome>>>,
}

impl LockWaits {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, oneshot::Sender<WaitOutcome>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `key`, then checks the applied state once (so a grant applied before the
    /// registration is not missed).
    pub fn register(&self, shared: &GroupShared, key: &str) -> oneshot::Receiver<WaitOutcome> {
        let (tx, rx) = oneshot::channel();
        self.map().insert(key.to_string(), tx);
        if let Some(outcome) = outcome_of(shared, key) {
            self.resolve(key, outcome);
        }
        rx
    }

    pub fn unregister(&self, key: &str) {
        self.map().remove(key);
    }

    fn resolve(&self, key: &str, outcome: WaitOutcome) {
        if let Some(tx) = self.map().remove(key) {
            let _ = tx.send(outcome);
        }
    }

    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }
}

/// The waiter's fate as the applied state shows it, if decided.
fn outcome_of(shared: &GroupShared, key: &str) -> Option<WaitOutcome> {
    let st = shared.read();
    match st.waiter(key) {
        None => Some(WaitOutcome::Gone),
        Some(w) => w.granted.map(WaitOutcome::Granted),
    }
}

/// Runs for the life of the group's replica on this node.
pub async fn run(
    shared: Arc<GroupShared>,
    waits: Arc<LockWaits>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut notices = shared.subscribe();
    loop {
        let next = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            n = notices.recv() => n,
        };
        match next {
            Ok(n) => {
                if let Notice::Applied { events, .. } = n.as_ref() {
                    if waits.is_empty() {
                        continue;
                    }
                    for ev in events {
                        let key = ev.kv.key.as_str();
                        if !waits.map().contains_key(key) {
                            continue;
                        }
                        let outcome = match ev.kind {
                            EventKind::Delete | EventKind::Dropped => Some(WaitOutcome::Gone),
                            EventKind::Put | EventKind::Placed => outcome_of(&shared, key),
                        };
                        if let Some(o) = outcome {
                            waits.resolve(key, o);
                        }
                    }
                } else {
                    recheck_all(&shared, &waits);
                }
            }
            Err(RecvError::Lagged(_)) => recheck_all(&shared, &waits),
            Err(RecvError::Closed) => return,
        }
    }
}

fn recheck_all(shared: &GroupShared, waits: &LockWaits) {
    let keys: Vec<String> = waits.map().keys().cloned().collect();
    for key in keys {
        if let Some(o) = outcome_of(shared, &key) {
            waits.resolve(&key, o);
        }
    }
}
