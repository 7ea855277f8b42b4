//! `meridian.v1.Lock` (and the service both it and `meridian.v1.Lease`, in `lease_service.rs`,
//! are served by): locks with fencing tokens (acquire/try/release, read-write,
//! semaphores), `check_fence`, and election (campaign = a waiting mutex acquire with a value,
//! proclaim, resign = release, leader, observe). Every rule is checked before anything is
//! proposed; the state machine checks them again.

use crate::ctx::NodeCtx;
use crate::error::{Error, Result};
use crate::gate::Gate;
use crate::keepalive;
use crate::lock_waits::WaitOutcome;
use meridian_auth::Op as Access;
use meridian_proto::kv as pb;
use meridian_proto::kv::lock_server::Lock;
use meridian_router::VersionVector;
use meridian_storage::locks::waiter_key;
use meridian_storage::Notice;
use meridian_types::{
    validate_key, validate_value, Command, CommandResult, GroupId, LeaseCommand, LeaseResult,
    LockKind, LockMode,
};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Changes buffered per observe stream.
const OBSERVE_BUFFER: usize = 16;

#[derive(Clone)]
pub struct LockService {
    pub(crate) ctx: Arc<NodeCtx>,
    pub(crate) keepalives: Arc<keepalive::KeepAlives>,
    pub(crate) gate: Arc<Gate>,
}

impl LockService {
    pub fn new(ctx: Arc<NodeCtx>, keepalives: Arc<keepalive::KeepAlives>, gate: Arc<Gate>) -> Self {
        Self {
            ctx,
            keepalives,
            gate,
        }
    }

    pub(crate) async fn propose(
        &self,
        cmd: LeaseCommand,
    ) -> Result<(meridian_consensus::GroupHandle, u64, LeaseResult)> {
        let group = self.ctx.route_lease(&cmd)?;
        match &cmd {
            LeaseCommand::Acquire { name: key, .. }
            | LeaseCommand::Release { key }
            | LeaseCommand::Proclaim { key, .. } => self.ctx.serve_here(group, key, false)?,
            _ => {}
        }
        let (h, rev, res) = self.ctx.write(group, Command::Lease(cmd)).await?;
        match res {
            CommandResult::Lease(r) => Ok((h, rev, r)),
            CommandResult::Rejected(r) => Err(r.into()),
            other => Err(Error::Internal(format!(
                "a lease command answered {other:?}"
            ))),
        }
    }

    pub(crate) fn header(
        &self,
        h: &meridian_consensus::GroupHandle,
        rev: u64,
    ) -> Option<pb::ResponseHeader> {
        Some(self.ctx.header(h, rev, &VersionVector::default()))
    }

    /// The current leader of election (mutex) `name`: its key, value and token.
    fn leader_of(&self, h: &meridian_consensus::GroupHandle, name: &str) -> pb::LeaderResponse {
        let st = h.shared.read();
        let holder = st
            .locks
            .get(name)
            .and_then(|l| l.holders().next())
            .map(|(seq, w)| (waiter_key(name, seq), w.granted));
        let revision = st.revision;
        let mut out = pb::LeaderResponse {
            header: None,
            ..Default::default()
        };
        if let Some((key, granted)) = holder {
            out.has_leader = true;
            out.value = st.get(&key).map(|kv| kv.value.clone()).unwrap_or_default();
            out.key = key;
            out.token = Some(pb::FencingToken {
                group: h.shared.group.0,
                revision: granted.unwrap_or_default(),
            });
        }
        out.header = Some(self.ctx.header(h, revision, &VersionVector::default()));
        out
    }
}

/// Read options of a linearizable read (lease TTLs, fences: never from a stale replica).
pub(crate) fn linearizable() -> pb::ReadOptions {
    pb::ReadOptions {
        consistency: pb::Consistency::Linearizable as i32,
        ..Default::default()
    }
}

fn lock_kind(kind: i32, limit: u32, mode: i32) -> Result<(LockKind, LockMode)> {
    let kind = match pb::LockKind::try_from(kind) {
        Ok(pb::LockKind::Mutex) => LockKind::Mutex,
        Ok(pb::LockKind::ReadWrite) => LockKind::ReadWrite,
        Ok(pb::LockKind::Semaphore) => {
            if limit == 0 {
                return Err(Error::invalid(
                    "semaphore_zero",
                    "limit",
                    "a semaphore needs a limit of at least 1 holder (N = 0 can never be acquired)",
                ));
            }
            LockKind::Semaphore(limit)
        }
        Err(_) => {
            return Err(Error::invalid(
                "lock_kind",
                "kind",
                format!("unknown lock kind {kind}: use MUTEX, READ_WRITE or SEMAPHORE"),
            ))
        }
    };
    let mode = match pb::LockMode::try_from(mode) {
        Ok(pb::LockMode::Exclusive) => LockMode::Exclusive,
        Ok(pb::LockMode::Shared) => LockMode::Shared,
        Err(_) => {
            return Err(Error::invalid(
                "lock_mode",
                "mode",
                format!("unknown lock mode {mode}: use EXCLUSIVE or SHARED"),
            ))
        }
    };
    Ok((kind, mode))
}

fn lock_name(name: &str) -> Result<()> {
    validate_key(name)?;
    Ok(())
}

/// Releases a queued waiter if the acquire that queued it goes away without finishing (its
/// deadline passed, or the client hung up).
struct WaiterGuard {
    ctx: Arc<NodeCtx>,
    group: GroupId,
    key: String,
    armed: bool,
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        if let Some(w) = self.ctx.lock_waits.get(&self.group) {
            w.unregister(&self.key);
        }
        if !self.armed {
            return;
        }
        let ctx = self.ctx.clone();
        let group = self.group;
        let key = std::mem::take(&mut self.key);
        tokio::spawn(async move {
            let cmd = Command::Lease(LeaseCommand::Release { key: key.clone() });
            if let Err(e) = ctx.write(group, cmd).await {
                tracing::warn!(%group, %key, error = %e, "could not withdraw an abandoned lock waiter; its lease will");
            }
        });
    }
}

type ObserveStream =
    Pin<Box<dyn Stream<Item = std::result::Result<pb::LeaderResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lock for LockService {
    async fn acquire(
        &self,
        request: Request<pb::LockAcquireRequest>,
    ) -> std::result::Result<Response<pb::LockAcquireResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        lock_name(&req.name)?;
        self.gate
            .check(&meta, "lock acquire", &[(Access::Lock, &req.name)])?;
        validate_value(&req.value).map_err(Error::from)?;
        let (kind, mode) = lock_kind(req.kind, req.limit, req.mode)?;
        let l = &self.ctx.limits;
        if req.wait_ms > l.lock_wait_ms_max {
            return Err(Error::invalid(
                "lock_wait",
                "wait_ms",
                format!(
                    "an acquire waits at most {} ms; {} ms was asked",
                    l.lock_wait_ms_max, req.wait_ms
                ),
            )
            .into());
        }
        if req.lock_delay_ms > l.lock_delay_ms_max {
            return Err(Error::invalid(
                "lock_delay",
                "lock_delay_ms",
                format!(
                    "the lock-delay is at most {} ms; {} ms was asked",
                    l.lock_delay_ms_max, req.lock_delay_ms
                ),
            )
            .into());
        }
        let started = tokio::time::Instant::now();
        let cmd = LeaseCommand::Acquire {
            name: req.name.clone(),
            lease: req.lease,
            kind,
            mode,
            value: req.value,
            lock_delay_ms: req.lock_delay_ms,
            wait: req.wait_ms > 0,
        };
        let (h, rev, res) = self.propose(cmd).await?;
        let group = h.shared.group;
        let (key, granted) = match res {
            LeaseResult::Busy { holders } => {
                return Ok(Response::new(pb::LockAcquireResponse {
                    header: self.header(&h, rev),
                    acquired: false,
                    holders,
                    ..Default::default()
                }))
            }
            LeaseResult::Queued { key, granted } => (key, granted),
            other => return Err(Error::Internal(format!("an acquire answered {other:?}")).into()),
        };
        let token = |revision| {
            Some(pb::FencingToken {
                group: group.0,
                revision,
            })
        };
        // The injected test-only bug (Limits::inject_early_lock_grant): queued counts as held.
        let granted = granted.or(self.ctx.limits.inject_early_lock_grant.then_some(rev));
        if let Some(t) = granted {
            return Ok(Response::new(pb::LockAcquireResponse {
                header: self.header(&h, rev),
                acquired: true,
                key,
                token: token(t),
                holders: Vec::new(),
            }));
        }
        // Queued: wait for this waiter's own grant, at most wait_ms in all.
        let mut guard = WaiterGuard {
            ctx: self.ctx.clone(),
            group,
            key: key.clone(),
            armed: true,
        };
        let waits = self
            .ctx
            .lock_waits
            .get(&group)
            .cloned()
            .ok_or_else(|| Error::Internal(format!("no lock waits for group {group}")))?;
        let deadline = started + Duration::from_millis(req.wait_ms);
        let outcome = async {
            self.ctx.wait_applied(&h, rev).await?;
            let rx = waits.register(&h.shared, &key);
            rx.await
                .map_err(|_| Error::Internal("the lock wait was dropped".into()))
        };
        match tokio::time::timeout_at(deadline, outcome).await {
            Ok(Ok(WaitOutcome::Granted(t))) => {
                guard.armed = false;
                let applied = h.shared.applied();
                Ok(Response::new(pb::LockAcquireResponse {
                    header: self.header(&h, applied.max(t)),
                    acquired: true,
                    key,
                    token: token(t),
                    holders: Vec::new(),
                }))
            }
            Ok(Ok(WaitOutcome::Gone)) => {
                guard.armed = false;
                Err(Error::Rejected {
                    rule: "lock_waiter_gone".into(),
                    message: format!(
                        "the waiter {key:?} left the queue before the lock was granted (its lease \
                         expired or it was released)"
                    ),
                }
                .into())
            }
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(Error::Deadline(format!(
                "lock {:?} was not granted within {} ms; the waiter was withdrawn",
                req.name, req.wait_ms
            ))
            .into()),
        }
    }

    async fn release(
        &self,
        request: Request<pb::LockReleaseRequest>,
    ) -> std::result::Result<Response<pb::LockReleaseResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let key = req.key;
        validate_key(&key).map_err(Error::from)?;
        self.gate
            .check(&meta, "lock release", &[(Access::Lock, &key)])?;
        let (h, rev, res) = self.propose(LeaseCommand::Release { key }).await?;
        match res {
            LeaseResult::Released { was_holder } => Ok(Response::new(pb::LockReleaseResponse {
                header: self.header(&h, rev),
                was_holder,
            })),
            other => Err(Error::Internal(format!("a release answered {other:?}")).into()),
        }
    }

    async fn check_fence(
        &self,
        request: Request<pb::CheckFenceRequest>,
    ) -> std::result::Result<Response<pb::CheckFenceResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        lock_name(&req.name)?;
        self.gate
            .check(&meta, "check fence", &[(Access::Lock, &req.name)])?;
        let token = req.token.ok_or_else(|| {
            Error::invalid(
                "fence_token",
                "token",
                "check_fence needs the token to check",
            )
        })?;
        let group = self.ctx.route_key(&req.name)?;
        self.ctx.serve_here(group, &req.name, false)?;
        let ready = self
            .ctx
            .prepare_read(group, Some(&linearizable()), None)
            .await?;
        let st = ready.handle.shared.read();
        let valid = token.group == group.0 && st.fence_valid(&req.name, token.revision);
        let holders = st
            .locks
            .get(req.name.as_str())
            .map(|l| {
                l.holders()
                    .filter_map(|(_, w)| w.granted)
                    .map(|revision| pb::FencingToken {
                        group: group.0,
                        revision,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Response::new(pb::CheckFenceResponse {
            header: Some(ready.header(&self.ctx, st.revision)),
            valid,
            holders,
        }))
    }

    async fn proclaim(
        &self,
        request: Request<pb::ProclaimRequest>,
    ) -> std::result::Result<Response<pb::ProclaimResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        validate_key(&req.key).map_err(Error::from)?;
        self.gate
            .check(&meta, "proclaim", &[(Access::Lock, &req.key)])?;
        validate_value(&req.value).map_err(Error::from)?;
        let (h, rev, _) = self
            .propose(LeaseCommand::Proclaim {
                key: req.key,
                value: req.value,
            })
            .await?;
        Ok(Response::new(pb::ProclaimResponse {
            header: self.header(&h, rev),
        }))
    }

    async fn leader(
        &self,
        request: Request<pb::LeaderRequest>,
    ) -> std::result::Result<Response<pb::LeaderResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let name = req.name;
        lock_name(&name)?;
        self.gate
            .check(&meta, "election", &[(Access::Lock, &name)])?;
        let group = self.ctx.route_key(&name)?;
        self.ctx.serve_here(group, &name, false)?;
        let ready = self.ctx.prepare_read(group, None, None).await?;
        Ok(Response::new(self.leader_of(&ready.handle, &name)))
    }

    type ObserveStream = ObserveStream;

    async fn observe(
        &self,
        request: Request<pb::LeaderRequest>,
    ) -> std::result::Result<Response<Self::ObserveStream>, Status> {
        let (meta, _, req) = request.into_parts();
        let name = req.name;
        lock_name(&name)?;
        self.gate
            .check(&meta, "election", &[(Access::Lock, &name)])?;
        let group = self.ctx.route_key(&name)?;
        self.ctx.serve_here(group, &name, false)?;
        let ready = self.ctx.prepare_read(group, None, None).await?;
        let h = ready.handle;
        let permit = self.ctx.watches.open()?;
        let (tx, rx) = tokio::sync::mpsc::channel(OBSERVE_BUFFER);
        let svc = self.clone();
        let mut notices = h.shared.subscribe();
        tokio::spawn(async move {
            let _permit = permit;
            let ident = |r: &pb::LeaderResponse| (r.has_leader, r.key.clone(), r.value.clone());
            let first = svc.leader_of(&h, &name);
            let mut last = ident(&first);
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            loop {
                let touched = tokio::select! {
                    _ = tx.closed() => return,
                    n = notices.recv() => match n {
                        Ok(n) => match n.as_ref() {
                            Notice::Applied { locks, events, .. } => locks.contains(&name)
                                || events.iter().any(|e| e.kv.key.starts_with(&name)),
                            Notice::Reset { .. } => true,
                        },
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                };
                if !touched {
                    continue;
                }
                let now = svc.leader_of(&h, &name);
                if ident(&now) != last {
                    last = ident(&now);
                    if tx.send(Ok(now)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
