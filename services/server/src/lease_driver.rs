//! The leader's lease clock, driven: while this node leads a group it keeps every lease's
//! deadline in a [`meridian_locks::ExpiryTracker`] on the node's monotonic clock and proposes
//! what the tracker decides — `Expire` (deleting the leases' keys in the same entry),
//! `Checkpoint` (idle time, so repeated elections cannot keep a dead lease alive) and
//! `DelayEnd` (lock-delays). A node that stops leading forgets its deadlines; the next leader
//! starts from the replicated records (docs/leases.md).

use crate::proposer::Proposer;
use meridian_consensus::GroupHandle;
use meridian_locks::{Clock, ExpiryTracker, TrackerConfig};
use meridian_storage::{GroupShared, Notice};
use meridian_types::{Command, CommandResult, GroupId, LeaseCommand};
use openraft::async_runtime::watch::WatchReceiver;
use openraft::ServerState;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast::error::TryRecvError;
use tokio::sync::watch;

/// How often idle time is checkpointed (at most).
const CHECKPOINT_TICK: Duration = Duration::from_millis(250);
/// Longest the takeover barrier (read index + apply) may take before trying again.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// What the leader of one group knows about its leases' deadlines.
#[derive(Default)]
pub struct LeaderLeases {
    tracker: ExpiryTracker,
    /// The term this node took over in, while it still leads.
    active_term: Option<u64>,
}

impl LeaderLeases {
    pub fn new() -> Self {
        Self {
            tracker: ExpiryTracker::new(TrackerConfig::default()),
            active_term: None,
        }
    }

    /// What is left of each lease on this leader's clock; `None` when this node is not the
    /// group's active leader.
    pub fn remaining(&self, ids: &[u64], now_ms: u64) -> Option<Vec<Option<u64>>> {
        self.active_term?;
        Some(
            ids.iter()
                .map(|id| self.tracker.remaining(*id, now_ms))
                .collect(),
        )
    }
}

/// The driver's two timings: how often it looks at the clock, and how long a proposal may take.
#[derive(Clone, Copy, Debug)]
pub struct DriverTiming {
    pub tick: Duration,
    pub write_timeout: Duration,
}

pub type SharedLeaderLeases = Arc<Mutex<LeaderLeases>>;

fn lock(s: &SharedLeaderLeases) -> std::sync::MutexGuard<'_, LeaderLeases> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs for the life of the node on every node that votes in `group`.
///
/// It gets only what it uses: the group's replica, its proposer (it proposes only while it
/// leads), the lease state it shares with the lease service, the clock and its two timings.
pub async fn run(
    h: GroupHandle,
    proposer: Proposer,
    state: SharedLeaderLeases,
    clock: Arc<dyn Clock>,
    timing: DriverTiming,
    mut shutdown: watch::Receiver<bool>,
) {
    let group = h.shared.group;
    let tick = timing.tick;
    let mut metrics = h.raft.metrics();
    loop {
        // Wait to lead.
        let term = loop {
            let (leading, term) = {
                let m = metrics.borrow_and_update();
                (m.state == ServerState::Leader, m.current_term)
            };
            if leading {
                break term;
            }
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                r = metrics.changed() => if r.is_err() { return },
            }
        };
        // Barrier: everything committed before this term is applied here before deadlines
        // are set, so no refresh of an earlier leader is missed.
        let ready = async {
            // Asked of the local Raft: this node leads (if it lost leadership meanwhile, the
            // barrier fails and the loop waits to lead again).
            let index = h.read_index(TAKEOVER_WAIT).await.ok()?;
            h.shared.wait_applied(index, TAKEOVER_WAIT).await
        };
        let ready = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            r = ready => r,
        };
        if ready.is_none() {
            tokio::time::sleep(tick).await;
            continue;
        }
        let mut notices = h.shared.subscribe();
        {
            let st = h.shared.read();
            let mut s = lock(&state);
            s.tracker.take_over(
                clock.now_ms(),
                st.leases.values().map(|l| &l.record),
                st.lock_delays(),
            );
            s.active_term = Some(term);
            tracing::info!(%group, term, leases = s.tracker.len(), "lease clock taken over");
        }
        let mut last_checkpoint = tokio::time::Instant::now();
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                _ = interval.tick() => {}
            }
            let still = {
                let m = metrics.borrow_watched();
                m.state == ServerState::Leader && m.current_term == term
            };
            if !still {
                lock(&state).active_term = None;
                break;
            }
            absorb(&h.shared, &mut notices, &state, clock.as_ref());
            let now = clock.now_ms();
            let (due, delays, checkpoints) = {
                let mut s = lock(&state);
                let cps = if last_checkpoint.elapsed() >= CHECKPOINT_TICK {
                    last_checkpoint = tokio::time::Instant::now();
                    s.tracker.checkpoints(now)
                } else {
                    Vec::new()
                };
                (s.tracker.due(now), s.tracker.due_delays(now), cps)
            };
            if !due.is_empty() {
                tracing::debug!(%group, n = due.len(), "leases expired");
                propose(
                    &proposer,
                    timing.write_timeout,
                    group,
                    LeaseCommand::Expire { leases: due },
                )
                .await;
            }
            for (name, seq) in delays {
                propose(
                    &proposer,
                    timing.write_timeout,
                    group,
                    LeaseCommand::DelayEnd { name, seq },
                )
                .await;
            }
            if !checkpoints.is_empty() {
                propose(
                    &proposer,
                    timing.write_timeout,
                    group,
                    LeaseCommand::Checkpoint {
                        leases: checkpoints,
                    },
                )
                .await;
            }
        }
    }
}

/// Folds applied changes into the tracker: leases granted, refreshed, checkpointed or gone;
/// lock-delays that appeared or ended. A receiver that fell behind rescans everything.
fn absorb(
    shared: &GroupShared,
    notices: &mut tokio::sync::broadcast::Receiver<Arc<Notice>>,
    state: &SharedLeaderLeases,
    clock: &dyn Clock,
) {
    let mut leases = BTreeSet::new();
    let mut locks = BTreeSet::new();
    let mut rescan = false;
    loop {
        match notices.try_recv() {
            Ok(n) => match n.as_ref() {
                Notice::Applied {
                    leases: l,
                    locks: k,
                    ..
                } => {
                    leases.extend(l.iter().copied());
                    locks.extend(k.iter().cloned());
                }
                Notice::Reset { .. } => rescan = true,
            },
            Err(TryRecvError::Lagged(_)) => rescan = true,
            Err(TryRecvError::Empty) | Err(TryRecvError::Closed) => break,
        }
    }
    if leases.is_empty() && locks.is_empty() && !rescan {
        return;
    }
    let now = clock.now_ms();
    let st = shared.read();
    let mut s = lock(state);
    if rescan {
        leases = st.leases.keys().copied().collect();
        locks = st.locks.keys().map(|n| n.to_string()).collect();
    }
    for id in leases {
        match st.leases.get(&id) {
            Some(l) => s.tracker.observe(now, &l.record),
            None => s.tracker.forget(id),
        }
    }
    for name in locks {
        let mut present = Vec::new();
        if let Some(l) = st.locks.get(name.as_str()) {
            for (seq, w) in l.waiters.iter() {
                if w.is_delay() {
                    s.tracker.observe_delay(now, &name, seq, w.lock_delay_ms);
                    present.push(seq);
                }
            }
        }
        s.tracker.retain_delays(&name, &present);
    }
}

async fn propose(proposer: &Proposer, timeout: Duration, group: GroupId, cmd: LeaseCommand) {
    let Ok(res) = tokio::time::timeout(timeout, proposer.propose(Command::Lease(cmd))).await else {
        tracing::warn!(%group, "lease command not committed within {timeout:?}");
        return;
    };
    match res {
        Ok(Ok((_, CommandResult::Rejected(r)))) => {
            tracing::warn!(%group, rule = %r.rule, "lease command refused: {}", r.message)
        }
        Ok(Ok(_)) => {}
        Ok(Err(_)) | Err(_) => {
            tracing::debug!(%group, "lease command not committed (leadership moved?)")
        }
    }
}
