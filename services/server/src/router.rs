//! The composition router (DESIGN.md §2): which group a request belongs to (longest-prefix
//! domain), the session it carries, and the read path — sync on a group switch (coalesced),
//! wait for the session's vector, check a stale read's lag. The decisions themselves are in
//! `meridian-router` (IO-free); this is the async shell around them.

use crate::ctx::NodeCtx;
use crate::error::{Error, Result};
use crate::syncs::{GroupSync, SyncReply, SYNC_WAITERS_MAX};
use meridian_consensus::GroupHandle;
use meridian_placement::Placement;
use meridian_proto::kv as pb;
use meridian_router::{
    plan_read, Join, ReadAt, ReadLevel, ReplicaClosed, SwitchRule, VersionVector,
};
use meridian_types::hlc::Timestamp;
use meridian_types::{Command, GroupId, LeaseCommand, Op};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tracing::Instrument;

/// A session as a request presents it.
#[derive(Clone, Debug, Default)]
pub struct Session {
    pub vector: VersionVector,
    pub last_group: Option<GroupId>,
    /// The highest timestamp the session has seen (docs/closed-timestamps.md).
    pub timestamp: meridian_types::hlc::Timestamp,
}

impl Session {
    pub fn from_pb(s: Option<&pb::Session>) -> Self {
        match s {
            None => Self::default(),
            Some(s) => Self {
                vector: VersionVector::from_wire(&s.vector),
                last_group: (s.last_group != 0).then_some(GroupId(s.last_group)),
                timestamp: crate::convert::timestamp_in(s.timestamp.as_ref()),
            },
        }
    }
}

/// A read's consistency and the legacy per-request floor (`min_revision`).
pub fn read_level(opts: Option<&pb::ReadOptions>) -> Result<(ReadLevel, u64)> {
    let Some(o) = opts else {
        return Ok((ReadLevel::Sequential, 0));
    };
    let min_revision = crate::convert::revision(o.min_revision, "read.min_revision")?;
    let level = match pb::Consistency::try_from(o.consistency) {
        Ok(pb::Consistency::Sequential) => ReadLevel::Sequential,
        Ok(pb::Consistency::Linearizable) => ReadLevel::Linearizable,
        Ok(pb::Consistency::Stale) => ReadLevel::Stale {
            max_lag_ms: o.max_lag_ms,
        },
        Err(_) => {
            return Err(Error::invalid(
                "unknown_consistency",
                "read.consistency",
                format!("unknown consistency level {}", o.consistency),
            ))
        }
    };
    Ok((level, min_revision))
}

/// A read ready to be served by the local replica.
pub struct ReadyRead {
    pub handle: GroupHandle,
    pub session: Session,
    pub lag_ms: u64,
    pub synced: bool,
    /// The read's timestamp: the commit timestamp of the last entry the replica had applied
    /// when it was read (set by whoever reads the state, [`ReadyRead::timestamp`]).
    pub at: meridian_types::hlc::Timestamp,
    /// Served by closed timestamps: the replica's closed timestamp had reached the session's.
    pub by_timestamp: bool,
    /// A sequential read by closed timestamps: one key's read may be served below the
    /// replica's last commit ([`ReadyRead::key`]). A linearizable read stays at the last
    /// commit (the read index put it after every write acknowledged before it began).
    pub sequential: bool,
}

impl ReadyRead {
    /// The read's timestamp when it reads a state whose timestamps are `stamps`: the last
    /// commit timestamp applied, or — served by closed timestamps — at least the session's
    /// (every later entry of the group commits above both; docs/consistency.md).
    pub fn timestamp(&self, stamps: meridian_types::hlc::Stamps) -> meridian_types::hlc::Timestamp {
        if self.by_timestamp {
            meridian_router::read_timestamp(self.session.timestamp, stamps.applied)
        } else {
            stamps.applied
        }
    }

    /// Reads `key` of the state `s`: the read's timestamp and the revision to report. By
    /// closed timestamps a sequential read is served at the lowest timestamp the key's value
    /// holds at (its change, the session's, what the session has seen of the group:
    /// `KvState::key_read_at`), so reading a key does not lift the session to the replica's
    /// last commit and the session's next switch need not wait for it; otherwise at the last
    /// commit, as [`ReadyRead::timestamp`].
    pub fn key(
        &self,
        s: &meridian_storage::KvState,
        key: &str,
    ) -> (meridian_types::hlc::Timestamp, u64) {
        if self.by_timestamp && self.sequential {
            let seen = self.session.vector.get(self.handle.shared.group);
            let (at, revision) = s.key_read_at(key, self.session.timestamp, seen);
            // Never below the compaction point, so that a watch from the next revision is
            // served (the key is unchanged from its change up to the state read, so the
            // header is as true there).
            let revision = revision.max(self.handle.shared.compacted().min(s.revision));
            (at, revision)
        } else {
            (self.timestamp(s.stamps), s.revision)
        }
    }

    /// The response header for a read of the replica at `revision`.
    pub fn header(&self, ctx: &NodeCtx, revision: u64) -> pb::ResponseHeader {
        let mut h = ctx.header(&self.handle, revision, &self.session.vector);
        h.lag_ms = self.lag_ms;
        h.synced = self.synced;
        h.timestamp = crate::convert::timestamp_out(self.at);
        h
    }
}

impl NodeCtx {
    /// The group owning `key` (longest-prefix domain).
    pub fn route_key(&self, key: &str) -> Result<GroupId> {
        self.key_in(&self.placement.current().lookup, key)
    }

    /// The one group holding every key under `prefix`; a prefix spanning groups is refused.
    pub fn route_prefix(&self, prefix: &str) -> Result<GroupId> {
        self.prefix_in(&self.placement.current().lookup, prefix)
    }

    pub fn key_in(&self, lookup: &Placement, key: &str) -> Result<GroupId> {
        lookup
            .group_of(key)
            .map(|(g, _)| g)
            .ok_or_else(|| self.no_domain(key))
    }

    pub fn prefix_in(&self, lookup: &Placement, prefix: &str) -> Result<GroupId> {
        match lookup.groups_under(prefix).as_slice() {
            [] => Err(self.no_domain(prefix)),
            [g] => Ok(*g),
            many => Err(self.cross_group(prefix, many)),
        }
    }

    /// The one group a write command touches; commands spanning groups are refused.
    pub fn route_command(&self, cmd: &Command) -> Result<GroupId> {
        match cmd {
            Command::Batch(_) | Command::Stamped { .. } => {
                return Err(Error::Internal(
                    "a batch or a stamped entry (made by the proposer) is never routed".into(),
                ))
            }
            Command::Move(_) | Command::AfterImport { .. } => {
                return Err(Error::Internal(
                    "a move step, or a write handed over to a move's target, goes to the group \
                     named with it, never routed by key"
                        .into(),
                ))
            }
            Command::Lease(l) => return self.route_lease(l),
            Command::Placement(_) => {
                return self
                    .topology
                    .global_group()
                    .map(|g| g.id)
                    .ok_or_else(|| Error::Internal("no global group holds a placement map".into()))
            }
            Command::Put(_) | Command::Delete(_) | Command::Txn { .. } => {}
        }
        let scopes = cmd.scopes();
        // One map for the whole command (one epoch, one lookup), however many keys it has.
        let current = self.placement.current();
        let mut groups = BTreeSet::new();
        for (key, prefix) in &scopes {
            groups.insert(if *prefix {
                self.prefix_in(&current.lookup, key)?
            } else {
                self.key_in(&current.lookup, key)?
            });
        }
        let first = scopes.first().map(|(k, _)| *k);
        let groups: Vec<GroupId> = groups.into_iter().collect();
        match groups.as_slice() {
            [g] => {
                self.check_put_leases(cmd, *g)?;
                Ok(*g)
            }
            [] => Err(Error::invalid(
                "empty_txn",
                "txn",
                "the transaction touches no key",
            )),
            many => Err(self.cross_group(first.unwrap_or("txn"), many)),
        }
    }

    /// Every lease a put attaches must live in the group the put goes to.
    fn check_put_leases(&self, cmd: &Command, group: GroupId) -> Result<()> {
        let mut leases = Vec::new();
        match cmd {
            Command::Put(p) => leases.push((p.key.as_str(), p.lease)),
            Command::Txn {
                success, failure, ..
            } => {
                for op in success.iter().chain(failure) {
                    if let Op::Put(p) = op {
                        leases.push((p.key.as_str(), p.lease));
                    }
                }
            }
            _ => {}
        }
        for (key, lease) in leases {
            let lg = GroupId(meridian_types::lease_group(lease));
            if lease != 0 && lg != group {
                return Err(Error::invalid(
                    "lease_wrong_group",
                    "lease",
                    format!(
                        "lease {lease} lives in group {} but {key:?} lives in group {}; an \
                         ephemeral key needs a lease of its own group (grant one for {key:?})",
                        self.group_label(lg),
                        self.group_label(group)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The group a lease or lock command goes to: a lease's group is in its id; a lock's is
    /// its name's domain, and the lease it uses must live in that same group.
    pub fn route_lease(&self, cmd: &LeaseCommand) -> Result<GroupId> {
        let lease_in = |id: u64| -> Result<GroupId> {
            let g = GroupId(meridian_types::lease_group(id));
            if id == 0 || self.topology.group(g).is_none() {
                return Err(Error::invalid(
                    "lease_not_found",
                    "lease",
                    format!("lease {id} does not exist: its id names no group of this cluster"),
                ));
            }
            Ok(g)
        };
        match cmd {
            LeaseCommand::Grant { group, .. } => Ok(GroupId(*group)),
            LeaseCommand::Revoke { id } => lease_in(*id),
            LeaseCommand::Refresh { ids } => {
                let mut groups = BTreeSet::new();
                for id in ids {
                    groups.insert(lease_in(*id)?);
                }
                match groups.into_iter().collect::<Vec<_>>().as_slice() {
                    [g] => Ok(*g),
                    _ => Err(Error::Internal(
                        "a refresh carries the leases of exactly one group".into(),
                    )),
                }
            }
            LeaseCommand::Acquire { name, lease, .. } => {
                let g = self.route_key(name)?;
                let lg = lease_in(*lease)?;
                if lg != g {
                    return Err(Error::invalid(
                        "lease_wrong_group",
                        "lease",
                        format!(
                            "lease {lease} lives in group {} but lock {name:?} lives in group {}; \
                             a lock needs a lease of its own group",
                            self.group_label(lg),
                            self.group_label(g)
                        ),
                    ));
                }
                Ok(g)
            }
            LeaseCommand::Release { key } | LeaseCommand::Proclaim { key, .. } => {
                self.route_key(key)
            }
            LeaseCommand::Expire { .. }
            | LeaseCommand::Checkpoint { .. }
            | LeaseCommand::DelayEnd { .. } => Err(Error::Internal(
                "expiry, checkpoints and lock-delays are proposed by a group's leader only".into(),
            )),
        }
    }

    fn no_domain(&self, key: &str) -> Error {
        let current = self.placement.current();
        let domains: Vec<&str> = current
            .lookup
            .domains()
            .iter()
            .map(|d| d.prefix.as_str())
            .collect();
        Error::invalid(
            "no_domain",
            "key",
            format!(
                "{key} lies in no domain, so no group owns it; the domains are: {}",
                domains.join(" ")
            ),
        )
    }

    fn cross_group(&self, what: &str, groups: &[GroupId]) -> Error {
        let names: Vec<String> = groups.iter().map(|g| self.group_label(*g)).collect();
        Error::invalid(
            "cross_group",
            "key",
            format!(
                "{what}: the operation spans groups {}; operations and transactions are \
                 offered within one group only — split it per domain",
                names.join(", ")
            ),
        )
    }

    /// Prepares a read of `group`: plans it, syncs if the plan says so, waits until the local
    /// replica has applied what the session saw (bounded; refuses rather than serve an older
    /// view), and checks a stale read's lag.
    pub async fn prepare_read(
        self: &Arc<Self>,
        group: GroupId,
        opts: Option<&pb::ReadOptions>,
        session: Option<&pb::Session>,
    ) -> Result<ReadyRead> {
        self.prepare_read_from(group, opts, session, 0).await
    }

    /// [`Self::prepare_read`] of a domain whose copy in `group` begins at revision `floor`
    /// (a domain that moved in: the replica must hold the import before it answers).
    pub async fn prepare_read_from(
        self: &Arc<Self>,
        group: GroupId,
        opts: Option<&pb::ReadOptions>,
        session: Option<&pb::Session>,
        floor: u64,
    ) -> Result<ReadyRead> {
        let (level, min_revision) = read_level(opts)?;
        crate::telemetry::record_group(
            group,
            Some(match level {
                ReadLevel::Sequential => "sequential",
                ReadLevel::Linearizable => "linearizable",
                ReadLevel::Stale { .. } => "stale",
            }),
        );
        let mut session = Session::from_pb(session);
        session.vector.observe(group, min_revision.max(floor));
        let handle = self.group(group)?;
        let rule = match (self.closed_reads, self.sync_on_switch) {
            (_, false) => SwitchRule::UnsafeNone,
            (Some(_), true) => SwitchRule::ClosedTimestamps,
            (None, true) => SwitchRule::Sync,
        };
        let plan = plan_read(level, group, session.last_group, &session.vector, rule);
        if plan.at_timestamp && level == ReadLevel::Sequential {
            // A router whose clock is off serves no sequential read by timestamp (it says
            // so); a linearizable one also syncs, so the router's clock decides nothing.
            self.clock_check
                .check()
                .map_err(|e| Error::Unavailable(e.to_string()))?;
        }
        if plan.at_timestamp {
            // One no node gave would hold the read until the deadline: refused at once.
            self.check_session_timestamp(session.timestamp)?;
        }
        let mut target = plan.min_applied;
        if plan.sync {
            // One bound for the whole sync, however many rounds it queues behind.
            let wait = Duration::from_millis(self.limits.sync_wait_ms_max);
            let span = crate::step_span!("sync", meridian.group = group.0);
            let index = tokio::time::timeout(wait, self.sync(&handle).instrument(span))
                .await
                .map_err(|_| {
                    Error::Unavailable(format!(
                        "sync of group {} did not complete within {} ms (its leader is slow or \
                         unreachable); refusing rather than serving an older view",
                        self.group_label(group),
                        self.limits.sync_wait_ms_max
                    ))
                })??;
            target = target.max(index);
        }
        self.wait_applied(&handle, target).await?;
        if plan.at_timestamp {
            self.wait_closed(&handle, session.timestamp).await?;
        }
        let lag_ms = handle.lag_ms();
        if let Some(max) = plan.max_lag_ms {
            match lag_ms {
                Some(lag) if lag <= max => {}
                Some(lag) => {
                    return Err(Error::StaleBound {
                        group: group.0,
                        label: self.group_label(group),
                        lag_ms: lag,
                        max_lag_ms: max,
                    })
                }
                None => {
                    return Err(Error::Unavailable(format!(
                        "this replica of group {} has not heard from a leader since it started; \
                         its lag is unknown",
                        self.group_label(group)
                    )))
                }
            }
        }
        if plan.sync {
            self.syncers
                .get(group)
                .synced_reads
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(ReadyRead {
            handle,
            session,
            lag_ms: lag_ms.unwrap_or(u64::MAX),
            synced: plan.sync,
            at: meridian_types::hlc::Timestamp::ZERO,
            by_timestamp: plan.at_timestamp,
            sequential: level == ReadLevel::Sequential,
        })
    }

    /// Waits until the local replica of `h`'s group has closed `session` (everything of the
    /// group at or below it is applied here). Refuses — never serves an older view — when the
    /// replica's closed timestamp stops moving for the configured time (its leader is cut off
    /// or does not close), or after the sync bound.
    async fn wait_closed(&self, h: &GroupHandle, session: Timestamp) -> Result<()> {
        let stale_after = self
            .closed_reads
            .map_or(Duration::from_secs(1), |c| c.stale_after);
        let stale_ms = u64::try_from(stale_after.as_millis()).unwrap_or(u64::MAX);
        if self.limits.inject_read_before_closed {
            return Ok(());
        }
        let start = tokio::time::Instant::now();
        let ms = || u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let deadline = start
            .checked_add(Duration::from_millis(self.limits.sync_wait_ms_max))
            .unwrap_or(start + Duration::from_secs(3_600));
        let mut applied = h.shared.applied_watch();
        let stamps = h.shared.read().stamps;
        let mut replica = ReplicaClosed::restored(stamps.applied, stamps.closed, 0);
        loop {
            let now = ms();
            let wait_ms = match replica.read_at(session, now, stale_ms) {
                ReadAt::Serve { .. } => return Ok(()),
                ReadAt::Wait => replica.stale_at_ms(stale_ms).saturating_sub(now) + 1,
                ReadAt::Fallback => {
                    return Err(Error::Unavailable(format!(
                        "this replica of group {} has closed timestamps up to {} and they have \
                         not moved for {} ms (its leader is unreachable, or does not close \
                         timestamps); the session is at {session}: refusing rather than \
                         serving an older view",
                        self.group_label(h.shared.group),
                        replica.closed(),
                        stale_ms
                    )))
                }
            };
            let until = deadline.min(tokio::time::Instant::now() + Duration::from_millis(wait_ms));
            let woke = tokio::time::timeout_at(until, applied.changed()).await;
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Unavailable(format!(
                    "this replica of group {} did not close the session's timestamp {session} \
                     within {} ms (closed up to {}); refusing rather than serving an older view",
                    self.group_label(h.shared.group),
                    self.limits.sync_wait_ms_max,
                    replica.closed()
                )));
            }
            if let Ok(Err(_)) = woke {
                return Err(Error::Unavailable("the replica is shutting down".into()));
            }
            let stamps = h.shared.read().stamps;
            replica.applied(stamps.applied, Some(stamps.closed), ms());
        }
    }

    /// The revision the copy of the domain holding `scope` in `group` begins at (non-zero only
    /// for a domain that moved into `group`).
    pub fn domain_floor(&self, group: GroupId, scope: &str) -> u64 {
        self.placement
            .current()
            .lookup
            .domain_of(scope)
            .filter(|d| d.group == group)
            .map_or(0, |d| d.since)
    }

    /// After `group` answered `WrongGroup{epoch}` (the scope is moving away from it, or moved):
    /// waits until this router's map changes — the move's commit routes the request to the new
    /// owner; a rollback's end sends it back to the old one, writable again — and returns
    /// where to try next. Bounded by `deadline`; the caller never sees the move unless it takes
    /// longer than that.
    pub async fn reroute(
        &self,
        group: GroupId,
        epoch: u64,
        deadline: tokio::time::Instant,
        route: impl Fn(&Placement) -> Result<GroupId>,
    ) -> Result<GroupId> {
        let mut epochs = self.placement.subscribe();
        let now = route(&self.placement.current().lookup)?;
        if now != group {
            return Ok(now);
        }
        let changed = tokio::time::timeout_at(deadline, epochs.changed()).await;
        if !matches!(changed, Ok(Ok(()))) {
            return Err(Error::Unavailable(format!(
                "the keys are moving away from group {} (move {epoch}) and this router (node {}, \
                 epoch {}) has not learned their new owner in time; nothing changed — retry",
                self.group_label(group),
                self.node_id,
                self.placement.epoch()
            )));
        }
        route(&self.placement.current().lookup)
    }

    /// The group's read index, coalesced: every read that needs a sync of the group while one
    /// is in flight shares the next one, started after it arrived — one round trip to the
    /// leader serves a whole batch. Across the WAN the next round does not wait for the last to
    /// come back: it starts `Rounds::spacing` (a quarter of a round, 1–50 ms) after it, so a
    /// switching read waits one round trip plus at most the spacing, not up to two round trips.
    pub async fn sync(self: &Arc<Self>, h: &GroupHandle) -> Result<u64> {
        let group = h.shared.group;
        let gs = self.syncers.get(group);
        let (tx, rx) = oneshot::channel();
        let span = if crate::telemetry::on() {
            tracing::Span::current()
        } else {
            tracing::Span::none()
        };
        let join = gs
            .rounds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join((tx, span));
        match join {
            Err(_) => {
                return Err(Error::Unavailable(format!(
                    "{SYNC_WAITERS_MAX} reads already wait for a sync of group {}; retry shortly",
                    self.group_label(group)
                )))
            }
            Ok(Join::Queued) => {}
            Ok(Join::Drive) => {
                tokio::spawn(self.clone().drive_syncs(h.clone(), gs));
            }
        }
        match rx.await {
            Ok(Ok(index)) => Ok(index),
            Ok(Err(e)) => Err(Error::Unavailable(format!(
                "sync of group {} failed: {e}",
                self.group_label(group)
            ))),
            Err(_) => Err(Error::Unavailable("the sync round was dropped".into())),
        }
    }

    /// Starts sync rounds of one group while reads wait: the next one when the last is back,
    /// or `Rounds::spacing` after it was sent if it is still out (a WAN round trip); at most
    /// SYNC_ROUNDS_IN_FLIGHT_MAX at once. Ends when nobody waits.
    async fn drive_syncs(self: Arc<Self>, h: GroupHandle, gs: Arc<GroupSync>) {
        loop {
            let Ok(permit) = gs.in_flight.clone().acquire_owned().await else {
                return;
            };
            let (round, spacing) = {
                let mut r = gs.rounds.lock().unwrap_or_else(|p| p.into_inner());
                (r.next_round(), r.spacing())
            };
            let Some(waiters) = round else { return };
            let done = Arc::new(tokio::sync::Notify::new());
            tokio::spawn(self.clone().sync_round(
                h.clone(),
                gs.clone(),
                waiters,
                done.clone(),
                permit,
            ));
            tokio::select! {
                _ = done.notified() => {}
                _ = tokio::time::sleep(spacing) => {}
            }
        }
    }

    /// One round: the leader's read index for every waiter, and the round's duration for
    /// `Rounds::spacing`.
    async fn sync_round(
        self: Arc<Self>,
        h: GroupHandle,
        gs: Arc<GroupSync>,
        waiters: Vec<SyncReply>,
        done: Arc<tokio::sync::Notify>,
        _permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        let wait = Duration::from_millis(self.limits.sync_wait_ms_max);
        let started = tokio::time::Instant::now();
        // In the trace of the first traced read it serves, linked from the other traced ones.
        let mut traced = waiters.iter().map(|(_, s)| s).filter(|s| !s.is_none());
        let span = match traced.next() {
            Some(first) => {
                let span = tracing::info_span!(
                    target: "meridian::step",
                    parent: first,
                    "sync.round",
                    meridian.group = h.shared.group.0,
                    meridian.reads = waiters.len()
                );
                for other in traced {
                    span.follows_from(other);
                }
                span
            }
            None => tracing::Span::none(),
        };
        let res = self
            .read_index(&h, wait)
            .instrument(span)
            .await
            .map_err(|e| e.to_string());
        if res.is_ok() {
            let took = started.elapsed();
            gs.round_latency.observe(took);
            gs.rounds
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .finished(took);
        }
        for (w, _) in waiters {
            let _ = w.send(res.clone());
        }
        done.notify_one();
    }
}
