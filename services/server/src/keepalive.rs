//! Aggregated keepalives: every client keepalive a router receives for a group's leases joins
//! the group's next `Refresh` entry; one entry per (router, group) per interval, however many
//! sessions the router serves. A client is answered once the entry that started after its
//! keepalive arrived is committed — so the lease's new deadline on the leader is later than the
//! moment the client sent it, which is what the SDK counts from.

use crate::ctx::NodeCtx;
use crate::error::{Error, Result};
use meridian_types::{Command, CommandResult, GroupId, LeaseCommand, LeaseResult};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::oneshot;

/// Most lease ids one `Refresh` entry carries; the rest wait for the next one.
const REFRESH_IDS_MAX: usize = 50_000;

/// Per lease id of a flushed refresh: its TTL, or `None` when it no longer exists.
type Answers = Arc<BTreeMap<u64, Option<u64>>>;
type Reply = oneshot::Sender<std::result::Result<Answers, String>>;

#[derive(Default)]
struct Pending {
    ids: BTreeSet<u64>,
    waiters: Vec<(Vec<u64>, Reply)>,
    flusher: bool,
}

#[derive(Default)]
pub struct KeepAlives {
    groups: Mutex<BTreeMap<GroupId, Arc<Mutex<Pending>>>>,
    /// Refresh entries proposed (for `status` and the benchmark: messages per second).
    pub refreshes: AtomicU64,
    /// Client keepalive requests received.
    pub requests: AtomicU64,
}

impl KeepAlives {
    fn pending(&self, group: GroupId) -> Arc<Mutex<Pending>> {
        self.groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(group)
            .or_default()
            .clone()
    }
}

fn guard(p: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps `ids` (all of `group`) alive; answers each id's TTL or `None` when it is gone.
pub async fn keep_alive(
    ctx: &Arc<NodeCtx>,
    keepalives: &Arc<KeepAlives>,
    group: GroupId,
    ids: Vec<u64>,
) -> Result<Answers> {
    keepalives.requests.fetch_add(1, Ordering::Relaxed);
    let pending = keepalives.pending(group);
    let (tx, rx) = oneshot::channel();
    {
        let mut p = guard(&pending);
        if p.ids.len() + ids.len() > ctx.limits.keepalive_pending_max {
            return Err(Error::Unavailable(format!(
                "this router already holds {} keepalives for group {} (limit {}); retry shortly",
                p.ids.len(),
                ctx.group_label(group),
                ctx.limits.keepalive_pending_max
            )));
        }
        p.ids.extend(ids.iter().copied());
        p.waiters.push((ids, tx));
        if !p.flusher {
            p.flusher = true;
            tokio::spawn(flush_loop(
                Arc::downgrade(ctx),
                Arc::downgrade(keepalives),
                group,
                Arc::downgrade(&pending),
            ));
        }
    }
    let wait =
        Duration::from_millis(ctx.limits.write_timeout_ms + 2 * ctx.limits.keepalive_interval_ms);
    match tokio::time::timeout(wait, rx).await {
        Ok(Ok(Ok(a))) => Ok(a),
        Ok(Ok(Err(msg))) => Err(Error::Unavailable(msg)),
        Ok(Err(_)) => Err(Error::Unavailable("the keepalive was dropped".into())),
        Err(_) => Err(Error::Unavailable(format!(
            "the keepalive for group {} was not committed within {} ms",
            ctx.group_label(group),
            wait.as_millis()
        ))),
    }
}

/// One per (router, group) while keepalives arrive: every interval, one `Refresh` entry for
/// whatever arrived since the last one. Exits once an interval passes with nothing to send.
async fn flush_loop(
    ctx: Weak<NodeCtx>,
    keepalives: Weak<KeepAlives>,
    group: GroupId,
    pending: Weak<Mutex<Pending>>,
) {
    loop {
        let (Some(ctx), Some(keepalives)) = (ctx.upgrade(), keepalives.upgrade()) else {
            return;
        };
        tokio::time::sleep(Duration::from_millis(ctx.limits.keepalive_interval_ms)).await;
        let Some(pending) = pending.upgrade() else {
            return;
        };
        let (ids, waiters) = {
            let mut p = guard(&pending);
            if p.ids.is_empty() {
                p.flusher = false;
                return;
            }
            if p.ids.len() <= REFRESH_IDS_MAX {
                (std::mem::take(&mut p.ids), std::mem::take(&mut p.waiters))
            } else {
                // Too many for one entry: send whole requests up to the cap, the rest next time.
                let mut ids = BTreeSet::new();
                let mut take = Vec::new();
                let mut keep = Vec::new();
                for (req, tx) in std::mem::take(&mut p.waiters) {
                    if ids.is_empty() || ids.len() + req.len() <= REFRESH_IDS_MAX {
                        ids.extend(req.iter().copied());
                        take.push((req, tx));
                    } else {
                        keep.push((req, tx));
                    }
                }
                p.ids = keep.iter().flat_map(|(r, _)| r.iter().copied()).collect();
                p.waiters = keep;
                (ids, take)
            }
        };
        keepalives.refreshes.fetch_add(1, Ordering::Relaxed);
        let ids: Vec<u64> = ids.into_iter().collect();
        let cmd = Command::Lease(LeaseCommand::Refresh { ids: ids.clone() });
        let outcome = match ctx.write(group, cmd).await {
            Ok((_, _, CommandResult::Lease(LeaseResult::Refreshed(ttls)))) => Ok(Arc::new(
                ids.iter().copied().zip(ttls).collect::<BTreeMap<_, _>>(),
            )),
            Ok((_, _, other)) => Err(format!("a refresh answered {other:?}")),
            Err(e) => Err(e.to_string()),
        };
        for (_, tx) in waiters {
            let _ = tx.send(outcome.clone());
        }
    }
}
