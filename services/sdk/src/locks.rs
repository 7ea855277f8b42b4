//! Leases, sessions, locks and election.
//!
//! A [`Session`] holds one lease per group it has used (granted on demand, all with the
//! session's TTL) and keeps them alive with one `KeepAlive` call for all of them every TTL/3;
//! the router folds every client's keepalives into one Raft entry per group per interval.
//!
//! The session knows it is lost **before** the server frees anything: its deadline is counted
//! from when the last successful keepalive was *sent* (the server's deadline starts later,
//! when the leader saw the refresh), minus a drift margin; it is measured on the monotonic
//! clock only. When it passes without a successful keepalive — or the server says a lease is
//! gone — the session is lost for good and [`Session::lost`] resolves: stop acting on its
//! locks (the `meridian lock` CLI terminates its command).

use crate::{pb, timed, Client, Error, OpKind};
use meridian_proto::kv::lease_client::LeaseClient;
use meridian_proto::kv::lock_client::LockClient;
use meridian_proto::MAX_MESSAGE_BYTES;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::Channel;

fn lease_client(ch: Channel) -> LeaseClient<Channel> {
    LeaseClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

fn lock_client(ch: Channel) -> LockClient<Channel> {
    LockClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// The group a lease id belongs to (its top 16 bits).
pub fn lease_group(id: u64) -> u64 {
    id >> 48
}

/// The drift margin subtracted from a lease's TTL on the client: 5% plus 10 ms.
pub fn drift_margin(ttl: Duration) -> Duration {
    ttl / 20 + Duration::from_millis(10)
}

impl Client {
    /// Grants a lease in the group owning `path` (any key or prefix of its domain).
    pub async fn lease_grant(
        &self,
        path: &str,
        ttl: Duration,
    ) -> Result<pb::LeaseGrantResponse, Error> {
        self.lease_grant_reusing(path, ttl, &[]).await
    }

    /// As [`Client::lease_grant`], but one of `reuse` is returned instead when it lives in the
    /// path's group.
    pub async fn lease_grant_reusing(
        &self,
        path: &str,
        ttl: Duration,
        reuse: &[u64],
    ) -> Result<pb::LeaseGrantResponse, Error> {
        let req = pb::LeaseGrantRequest {
            path: path.to_string(),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            reuse: reuse.to_vec(),
        };
        let r = self
            .call_channel(OpKind::Write, self.opts().rpc_timeout, |ch, t| {
                let r = timed(req.clone(), t);
                async move { lease_client(ch).grant(r).await.map(|r| r.into_inner()) }
            })
            .await?;
        self.merge_header(r.header.as_ref());
        Ok(r)
    }

    /// One keepalive for all of `ids`; each result says whether the lease still exists.
    pub async fn lease_keep_alive(
        &self,
        ids: &[u64],
        attempt_timeout: Duration,
    ) -> Result<pb::LeaseKeepAliveResponse, Error> {
        let req = pb::LeaseKeepAliveRequest { ids: ids.to_vec() };
        self.call_channel(OpKind::Read, attempt_timeout, |ch, t| {
            let r = timed(req.clone(), t);
            async move { lease_client(ch).keep_alive(r).await.map(|r| r.into_inner()) }
        })
        .await
    }

    pub async fn lease_revoke(&self, id: u64) -> Result<pb::LeaseRevokeResponse, Error> {
        let r = self
            .call_channel(OpKind::Write, self.opts().rpc_timeout, |ch, t| {
                let r = timed(pb::LeaseRevokeRequest { id }, t);
                async move { lease_client(ch).revoke(r).await.map(|r| r.into_inner()) }
            })
            .await?;
        self.merge_header(r.header.as_ref());
        Ok(r)
    }

    pub async fn lease_time_to_live(
        &self,
        id: u64,
        keys: bool,
    ) -> Result<pb::LeaseTimeToLiveResponse, Error> {
        self.call_channel(OpKind::Read, self.opts().rpc_timeout, |ch, t| {
            let r = timed(pb::LeaseTimeToLiveRequest { id, keys }, t);
            async move {
                lease_client(ch)
                    .time_to_live(r)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
    }

    /// Leases of the group owning `path`, or of every group the endpoint hosts (`""`).
    pub async fn lease_list(&self, path: &str) -> Result<pb::LeaseListResponse, Error> {
        let path = path.to_string();
        self.call_channel(OpKind::Read, self.opts().rpc_timeout, |ch, t| {
            let r = timed(pb::LeaseListRequest { path: path.clone() }, t);
            async move { lease_client(ch).list(r).await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// One acquire (waiting at most `req.wait_ms` on the server). Not retried once sent.
    pub async fn lock_acquire(
        &self,
        req: pb::LockAcquireRequest,
    ) -> Result<pb::LockAcquireResponse, Error> {
        let attempt = Duration::from_millis(req.wait_ms) + self.opts().rpc_timeout;
        let r = self
            .call_channel(OpKind::Write, attempt, |ch, t| {
                let r = timed(req.clone(), t);
                async move { lock_client(ch).acquire(r).await.map(|r| r.into_inner()) }
            })
            .await?;
        self.merge_header(r.header.as_ref());
        Ok(r)
    }

    pub async fn lock_release(&self, key: &str) -> Result<pb::LockReleaseResponse, Error> {
        let key = key.to_string();
        let r = self
            .call_channel(OpKind::Write, self.opts().rpc_timeout, |ch, t| {
                let r = timed(pb::LockReleaseRequest { key: key.clone() }, t);
                async move { lock_client(ch).release(r).await.map(|r| r.into_inner()) }
            })
            .await?;
        self.merge_header(r.header.as_ref());
        Ok(r)
    }

    /// Whether `token` belongs to a current holder of lock `name` (linearizable): what a
    /// resource server asks before accepting a write from a lock holder.
    pub async fn check_fence(
        &self,
        name: &str,
        token: pb::FencingToken,
    ) -> Result<pb::CheckFenceResponse, Error> {
        let name = name.to_string();
        self.call_channel(OpKind::Read, self.opts().rpc_timeout, |ch, t| {
            let r = timed(
                pb::CheckFenceRequest {
                    name: name.clone(),
                    token: Some(token),
                },
                t,
            );
            async move { lock_client(ch).check_fence(r).await.map(|r| r.into_inner()) }
        })
        .await
    }

    pub async fn proclaim(&self, key: &str, value: &[u8]) -> Result<pb::ProclaimResponse, Error> {
        let req = pb::ProclaimRequest {
            key: key.to_string(),
            value: value.to_vec(),
        };
        self.call_channel(OpKind::Write, self.opts().rpc_timeout, |ch, t| {
            let r = timed(req.clone(), t);
            async move { lock_client(ch).proclaim(r).await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// The current leader of election `name` (the holder of its mutex).
    pub async fn leader(&self, name: &str) -> Result<pb::LeaderResponse, Error> {
        let name = name.to_string();
        self.call_channel(OpKind::Read, self.opts().rpc_timeout, |ch, t| {
            let r = timed(pb::LeaderRequest { name: name.clone() }, t);
            async move { lock_client(ch).leader(r).await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// The leader of election `name` now, then every change.
    pub async fn observe(&self, name: &str) -> Result<tonic::Streaming<pb::LeaderResponse>, Error> {
        let (_, ch) = self.channel()?;
        lock_client(ch)
            .observe(crate::authorized(
                pb::LeaderRequest {
                    name: name.to_string(),
                },
                self.token(),
            ))
            .await
            .map(|r| r.into_inner())
            .map_err(Error::from_status)
    }
}

/// What happened to a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// The session's leases may be gone (or are): its locks are no longer held.
    Lost { reason: String },
}

struct SessionState {
    /// group → lease id.
    leases: BTreeMap<u64, u64>,
    /// Per lease, the client-side deadline: the send time of its last successful keepalive
    /// (or of its grant) + TTL − drift margin. The session's deadline is the earliest.
    deadlines: BTreeMap<u64, Instant>,
}

impl SessionState {
    fn deadline(&self) -> Option<Instant> {
        self.deadlines.values().min().copied()
    }
}

struct SessionInner {
    client: Client,
    ttl: Duration,
    state: Mutex<SessionState>,
    lost: watch::Sender<Option<SessionEvent>>,
    keeper: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for SessionInner {
    fn drop(&mut self) {
        if let Some(t) = self.keeper.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
    }
}

/// A client's session: leases (one per group used) kept alive together.
#[derive(Clone)]
pub struct Session {
    inner: Arc<SessionInner>,
}

/// How to take a lock.
#[derive(Clone, Debug)]
pub struct LockOptions {
    pub kind: pb::LockKind,
    pub mode: pb::LockMode,
    /// Semaphores: most holders.
    pub limit: u32,
    /// `None`: try once. `Some(d)`: wait at most `d`.
    pub wait: Option<Duration>,
    /// After this holder's session is lost (not on release), the lock stays unavailable this
    /// long (Chubby's lock-delay).
    pub lock_delay: Duration,
    /// Stored in the waiter's key (election: the candidate's value).
    pub value: Vec<u8>,
}

impl Default for LockOptions {
    fn default() -> Self {
        Self {
            kind: pb::LockKind::Mutex,
            mode: pb::LockMode::Exclusive,
            limit: 0,
            wait: Some(Duration::from_secs(30)),
            lock_delay: Duration::ZERO,
            value: Vec::new(),
        }
    }
}

/// A held lock: its waiter key and fencing token. Valid while its session is.
pub struct LockGuard {
    session: Session,
    name: String,
    key: String,
    token: pb::FencingToken,
}

impl Session {
    /// A session whose leases live `ttl` without a keepalive.
    pub fn new(client: Client, ttl: Duration) -> Self {
        let (lost, _) = watch::channel(None);
        let inner = Arc::new(SessionInner {
            client,
            ttl,
            state: Mutex::new(SessionState {
                leases: BTreeMap::new(),
                deadlines: BTreeMap::new(),
            }),
            lost,
            keeper: Mutex::new(None),
        });
        let task = tokio::spawn(keep(Arc::downgrade(&inner)));
        *inner.keeper.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        Self { inner }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SessionState> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// The moment the session counts itself lost unless a keepalive succeeds first.
    pub fn deadline(&self) -> Option<Instant> {
        self.state().deadline()
    }

    pub fn is_lost(&self) -> bool {
        self.inner.lost.borrow().is_some()
    }

    /// Resolves when the session is lost (at once if it already is).
    pub async fn lost(&self) -> SessionEvent {
        let mut rx = self.inner.lost.subscribe();
        loop {
            if let Some(ev) = rx.borrow_and_update().clone() {
                return ev;
            }
            if rx.changed().await.is_err() {
                return SessionEvent::Lost {
                    reason: "the session was dropped".into(),
                };
            }
        }
    }

    fn mark_lost(&self, reason: String) {
        mark_lost(&self.inner, reason);
    }

    /// The session's lease in the group owning `path`, granted on first use.
    pub async fn lease_for(&self, path: &str) -> Result<u64, Error> {
        if let Some(SessionEvent::Lost { reason }) = self.inner.lost.borrow().clone() {
            return Err(Error::Other {
                code: tonic::Code::FailedPrecondition,
                message: format!("the session is lost: {reason}"),
            });
        }
        let sent = Instant::now();
        // Which group? Only the server knows the placement: grant, then keep one per group.
        let known: Vec<u64> = self.state().leases.values().copied().collect();
        let r = self
            .inner
            .client
            .lease_grant_reusing(path, self.inner.ttl, &known)
            .await?;
        if known.contains(&r.id) {
            return Ok(r.id);
        }
        let group = lease_group(r.id);
        let existing = {
            let mut st = self.state();
            match st.leases.get(&group).copied() {
                Some(existing) => Some(existing),
                None => {
                    st.leases.insert(group, r.id);
                    let d = sent + self.inner.ttl - drift_margin(self.inner.ttl);
                    st.deadlines.insert(r.id, d);
                    None
                }
            }
        };
        match existing {
            Some(existing) => {
                if !known.contains(&r.id) {
                    // Raced with another grant for the same group: keep the first.
                    let _ = self.inner.client.lease_revoke(r.id).await;
                }
                Ok(existing)
            }
            None => Ok(r.id),
        }
    }

    /// The session's lease ids.
    pub fn leases(&self) -> Vec<u64> {
        self.state().leases.values().copied().collect()
    }

    /// Takes lock `name` (a path; its domain decides region-local or Global Lock). `Ok(None)`
    /// when a try found it taken.
    pub async fn lock(&self, name: &str, opts: LockOptions) -> Result<Option<LockGuard>, Error> {
        let lease = self.lease_for(name).await?;
        let req = pb::LockAcquireRequest {
            name: name.to_string(),
            lease,
            kind: opts.kind as i32,
            mode: opts.mode as i32,
            limit: opts.limit,
            value: opts.value,
            wait_ms: opts.wait.map_or(0, |w| {
                u64::try_from(w.as_millis()).unwrap_or(u64::MAX).max(1)
            }),
            lock_delay_ms: u64::try_from(opts.lock_delay.as_millis()).unwrap_or(u64::MAX),
        };
        let r = self.inner.client.lock_acquire(req).await?;
        if !r.acquired {
            return Ok(None);
        }
        let token = r.token.ok_or_else(|| Error::Other {
            code: tonic::Code::Internal,
            message: "a granted lock came without a fencing token".into(),
        })?;
        // A grant that arrives after the session's own deadline is worthless: the server may
        // free it any moment, and this client could not know when. Give it back.
        if self.is_lost() || self.deadline().is_some_and(|d| d <= Instant::now()) {
            let _ = self.inner.client.lock_release(&r.key).await;
            return Err(Error::Other {
                code: tonic::Code::FailedPrecondition,
                message: format!(
                    "lock {name:?} was granted after the session's lease deadline passed; it was \
                     released — start a new session"
                ),
            });
        }
        Ok(Some(LockGuard {
            session: self.clone(),
            name: name.to_string(),
            key: r.key,
            token,
        }))
    }

    /// Campaigns in election `name` with `value`: waits (at most `wait`) to become leader.
    pub async fn campaign(
        &self,
        name: &str,
        value: &[u8],
        wait: Duration,
    ) -> Result<LockGuard, Error> {
        let opts = LockOptions {
            wait: Some(wait),
            value: value.to_vec(),
            ..LockOptions::default()
        };
        self.lock(name, opts).await?.ok_or_else(|| Error::Other {
            code: tonic::Code::DeadlineExceeded,
            message: format!("not elected leader of {name:?} within {wait:?}"),
        })
    }

    /// Revokes every lease of the session (its ephemeral keys and locks go at once).
    pub async fn close(&self) -> Result<(), Error> {
        let ids = self.leases();
        self.mark_lost(CLOSED.into());
        for id in ids {
            match self.inner.client.lease_revoke(id).await {
                Ok(_) => {}
                Err(e) if e.rule() == Some("lease_not_found") => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

const CLOSED: &str = "the session was closed";

fn mark_lost(inner: &SessionInner, reason: String) {
    inner.lost.send_if_modified(|v| {
        if v.is_some() {
            return false;
        }
        if reason == CLOSED {
            tracing::debug!("session closed");
        } else {
            tracing::warn!(%reason, "session lost");
        }
        *v = Some(SessionEvent::Lost { reason });
        true
    });
}

/// The keepalive loop: every TTL/3 one keepalive for all leases; lost when the deadline
/// passes without one succeeding, or when the server says a lease is gone.
async fn keep(inner: std::sync::Weak<SessionInner>) {
    loop {
        let Some(s) = inner.upgrade() else { return };
        if s.lost.borrow().is_some() {
            return;
        }
        let every = s.ttl / 3;
        let (ids, deadline) = {
            let st = s.state.lock().unwrap_or_else(|p| p.into_inner());
            (
                st.leases.values().copied().collect::<Vec<_>>(),
                st.deadline(),
            )
        };
        let Some(deadline) = deadline else {
            drop(s);
            tokio::time::sleep(every.min(Duration::from_millis(200))).await;
            continue;
        };
        if Instant::now() >= deadline {
            mark_lost(
                &s,
                format!("no keepalive succeeded within the lease TTL ({:?})", s.ttl),
            );
            return;
        }
        let sent = Instant::now();
        // An attempt may take until the deadline: a slow answer is still a good one.
        let attempt = deadline
            .saturating_duration_since(sent)
            .max(Duration::from_millis(100));
        let outcome = tokio::select! {
            r = s.client.lease_keep_alive(&ids, attempt) => Some(r),
            _ = tokio::time::sleep_until(deadline) => None,
        };
        match outcome {
            None => {
                mark_lost(
                    &s,
                    format!("no keepalive succeeded within the lease TTL ({:?})", s.ttl),
                );
                return;
            }
            Some(Ok(resp)) => {
                if let Some(gone) = resp.results.iter().find(|r| !r.found) {
                    mark_lost(&s, format!("lease {} expired on the server", gone.id));
                    return;
                }
                {
                    let mut st = s.state.lock().unwrap_or_else(|p| p.into_inner());
                    let fresh = sent + s.ttl - drift_margin(s.ttl);
                    for id in &ids {
                        if let Some(d) = st.deadlines.get_mut(id) {
                            *d = (*d).max(fresh);
                        }
                    }
                }
                let next = sent + every;
                drop(s);
                tokio::time::sleep_until(next).await;
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "keepalive failed; retrying");
                drop(s);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

impl LockGuard {
    pub fn token(&self) -> pb::FencingToken {
        self.token
    }

    /// `group:revision`, as the CLI passes it in `MERIDIAN_FENCING_TOKEN`.
    pub fn token_string(&self) -> String {
        format!("{}:{}", self.token.group, self.token.revision)
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Resolves when the lock can no longer be trusted (its session is lost).
    pub async fn lost(&self) -> SessionEvent {
        self.session.lost().await
    }

    /// Election: replaces the leader's value (only while holding).
    pub async fn proclaim(&self, value: &[u8]) -> Result<(), Error> {
        self.session
            .client()
            .proclaim(&self.key, value)
            .await
            .map(|_| ())
    }

    /// Gives the lock up (election: resign). Returns whether it was still held.
    pub async fn release(self) -> Result<bool, Error> {
        self.session
            .client()
            .lock_release(&self.key)
            .await
            .map(|r| r.was_holder)
    }
}
