//! Rust client for Meridian.
//!
//! - [`Client`]: connects to one or more endpoints, follows `NotLeader` to the leader, retries
//!   on unavailable endpoints with capped backoff, and keeps the session's version vector
//!   (group → highest revision seen) and the group of its last operation, presented with every
//!   request: any router then serves reads at least as new as what the session has observed
//!   (read-your-writes, monotonic reads) and syncs a group the session switches to (sequential
//!   consistency across groups).
//! - [`locks`]: leases, sessions (one keepalive for all of a session's leases; the session
//!   knows it is lost before the server frees anything), locks with fencing tokens, election.
//! - [`placement`]: the placement map (domains, owners, policies, epoch) and policy changes.
//! - [`tokens`]: the cluster's token revocation list.
//! - [`watch`]: watch streams that resume after a disconnect from the last revision delivered.
//! - [`error`]: the typed errors decoded from the server's status details.

pub mod backup;
pub mod discovery;
mod endpoints;
pub mod error;
mod kv;
pub mod locks;
pub mod membership;
pub mod naming;
pub mod placement;
mod session;
pub mod tokens;
pub mod watch;
mod watch_hub;

pub use error::Error;
pub use locks::{LockGuard, LockOptions, Session, SessionEvent};
pub use meridian_proto::kv as pb;
pub use naming::{Instance, Registration, Resolver};
pub(crate) use session::OpKind;
use session::SessionState;
pub use session::UNKNOWN_GROUP;
pub use watch::{WatchEvent, Watcher};

use meridian_proto::kv::kv_client::KvClient;
use meridian_proto::MAX_MESSAGE_BYTES;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// Read consistency a call asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    /// Sequentially consistent across every group for this session (the default): the router
    /// syncs a group before a read that switches to it.
    #[default]
    Sequential,
    /// Read index from the owning group's leader on every read.
    Linearizable,
    /// Any replica known to lag at most `max_lag_ms` (0 = any); never older than what this
    /// session has seen. The response reports the lag (`header.lag_ms`).
    Stale { max_lag_ms: u64 },
}

impl std::str::FromStr for Consistency {
    type Err = String;

    /// `sequential`, `linearizable`, `stale` or `stale:MS`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sequential" => Ok(Consistency::Sequential),
            "linearizable" => Ok(Consistency::Linearizable),
            "stale" => Ok(Consistency::Stale { max_lag_ms: 0 }),
            _ => match s.strip_prefix("stale:").map(str::parse::<u64>) {
                Some(Ok(max_lag_ms)) => Ok(Consistency::Stale { max_lag_ms }),
                _ => Err(format!(
                    "unknown consistency {s:?}: use sequential, linearizable, stale or stale:MS"
                )),
            },
        }
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    /// Deadline of one RPC attempt.
    pub rpc_timeout: Duration,
    /// Longest one call keeps retrying across endpoints and leader changes.
    pub call_timeout: Duration,
    pub connect_timeout: Duration,
    /// Opens connections (deterministic simulation injects its sockets); None: TCP.
    pub dialer: Option<meridian_proto::io::Dialer>,
    /// The capability token every request carries (docs/security.md); None: no token (a
    /// cluster with security off).
    pub token: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            // Longer than the server's write deadline (10 s): a slow write then ends with the
            // server's "may still be applied" answer, not a client timeout.
            rpc_timeout: Duration::from_secs(12),
            call_timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(1),
            dialer: None,
            token: None,
        }
    }
}

impl Options {
    /// Connects over TLS (docs/security.md): routers are verified against the cluster's CA
    /// certificate in `ca` (PEM) — a router's certificate must name the host dialed — and
    /// `identity` (certificate chain and key files of the same CA), if given, is presented.
    pub fn with_tls(
        mut self,
        ca: &std::path::Path,
        identity: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Result<Self, Error> {
        let tls = meridian_tls::ClientTls::load(ca, identity)
            .map_err(|e| Error::Config(format!("TLS: {e}")))?;
        self.dialer = Some(tls.dialer());
        Ok(self)
    }
}

struct Inner {
    endpoints: endpoints::Endpoints,
    channels: BTreeMap<String, Channel>,
    session: SessionState,
}

pub(crate) fn kv_client(channel: Channel) -> KvClient<Channel> {
    KvClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// A session with a Meridian cluster. Cheap to clone; clones share the session.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Mutex<Inner>>,
    opts: Options,
    /// The token as sent in `meridian-token`, checked once when the client is made.
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    /// The shared watch stream to each router (all clones' watches travel on them).
    hubs: Arc<watch_hub::Hubs>,
}

const BACKOFF_MS_MIN: u64 = 20;

/// What every request of one attempt carries: its deadline (`grpc-timeout`) and the client's
/// capability token (`meridian-token`), if it has one.
#[derive(Clone)]
pub(crate) struct Stamp {
    pub(crate) timeout: Duration,
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

/// `msg` as a request carrying `token` (and no deadline: for a stream that lives on).
pub(crate) fn authorized<T>(
    msg: T,
    token: Option<&tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut().insert(meridian_proto::TOKEN, t.clone());
    }
    r
}

/// `msg` as a request with `stamp`'s deadline and token.
pub(crate) fn timed<T>(msg: T, stamp: Stamp) -> tonic::Request<T> {
    let mut r = authorized(msg, stamp.token.as_ref());
    r.set_timeout(stamp.timeout);
    r
}
const BACKOFF_MS_MAX: u64 = 500;

impl Client {
    /// A client for `endpoints` (host:port). Connections are made on first use.
    pub fn new(endpoints: Vec<String>, opts: Options) -> Result<Self, Error> {
        let home = endpoints.len();
        Self::with_home(endpoints, home, opts)
    }

    /// A client for `endpoints`, whose first `home` are its home region's routers: a router
    /// that refuses a call (alive, its group briefly without a leader) never sends the client
    /// abroad; only unreachable ones do, once every home router is (src/endpoints.rs).
    pub fn with_home(endpoints: Vec<String>, home: usize, opts: Options) -> Result<Self, Error> {
        if endpoints.is_empty() {
            return Err(Error::Config("no endpoint given".into()));
        }
        let token = opts
            .token
            .as_deref()
            .map(|t| {
                t.trim().parse().map_err(|_| {
                    Error::Config("the token is not printable ASCII (base64url)".into())
                })
            })
            .transpose()?;
        let inner = Arc::new(Mutex::new(Inner {
            endpoints: endpoints::Endpoints::new(endpoints, home),
            channels: BTreeMap::new(),
            session: SessionState::default(),
        }));
        // Watch responses merge into the session from the hub (weakly: the hubs live in the
        // client).
        let session = Arc::downgrade(&inner);
        let merge: watch_hub::MergeHeader = Arc::new(move |h: &pb::ResponseHeader| {
            if let Some(inner) = session.upgrade() {
                inner
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .session
                    .merge_header(h);
            }
        });
        Ok(Self {
            token,
            inner,
            opts,
            hubs: Arc::new(watch_hub::Hubs::new(merge)),
        })
    }

    /// The token's header value, for a stream opened outside [`Client::call_channel`].
    pub(crate) fn token(&self) -> Option<&tonic::metadata::MetadataValue<tonic::metadata::Ascii>> {
        self.token.as_ref()
    }

    pub fn connect(endpoints: &[&str]) -> Result<Self, Error> {
        Self::new(
            endpoints.iter().map(|s| s.to_string()).collect(),
            Options::default(),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session's version vector (group → highest revision observed).
    pub fn version_vector(&self) -> BTreeMap<u64, u64> {
        self.lock().session.vector().clone()
    }

    /// Presents a vector from an earlier session (e.g. after moving to another endpoint). The
    /// next read of any group syncs it.
    pub fn observe_vector(&self, vector: &BTreeMap<u64, u64>) {
        self.lock().session.observe(vector);
    }

    /// Merges a response's vector (watch responses: they never change the last group).
    pub(crate) fn merge_header(&self, header: Option<&pb::ResponseHeader>) {
        if let Some(h) = header {
            self.lock().session.merge_header(h);
        }
    }

    fn begin(&self) -> session::Ticket {
        self.lock().session.begin()
    }

    /// Ends an operation (see [`SessionState::finish`]).
    fn finish(&self, ticket: session::Ticket, header: Option<&pb::ResponseHeader>, kind: OpKind) {
        self.lock().session.finish(ticket, header, kind);
    }

    /// Runs one operation of this session: bookkeeping around [`Client::call_as`].
    async fn op<T, F, Fut>(
        &self,
        kind: OpKind,
        header: fn(&T) -> Option<&pb::ResponseHeader>,
        f: F,
    ) -> Result<T, Error>
    where
        F: FnMut(KvClient<Channel>, Stamp) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let ticket = self.begin();
        let res = self.call_as(kind, f).await;
        self.finish(ticket, res.as_ref().ok().and_then(header), kind);
        res
    }

    /// What every request carries: the vector and the group of the last operation.
    pub fn session(&self) -> pb::Session {
        self.lock().session.to_proto()
    }

    /// Continues a session from elsewhere (e.g. a client that moves to another region's
    /// router): merges its vector, so reads here are never older than what that session saw,
    /// and keeps its last group when this client has none of its own (else: unknown).
    pub fn adopt_session(&self, session: &pb::Session) {
        self.lock().session.adopt(session);
    }

    /// The group of the session's last operation (0 = none).
    pub fn last_group(&self) -> u64 {
        self.lock().session.last_group()
    }

    /// Highest revision this session has seen of `group` (0 if none).
    pub fn seen(&self, group: u64) -> u64 {
        self.lock().session.seen(group)
    }

    pub(crate) fn current_endpoint(&self) -> String {
        self.lock().endpoints.current().to_string()
    }

    /// The channel to the current endpoint, made on first use.
    pub(crate) fn channel(&self) -> Result<(String, Channel), Error> {
        let mut g = self.lock();
        let ep = g.endpoints.current().to_string();
        let channel = match g.channels.get(&ep) {
            Some(c) => c.clone(),
            None => {
                let endpoint = Endpoint::from_shared(format!("http://{ep}"))
                    .map_err(|e| Error::Config(format!("endpoint {ep}: {e}")))?
                    .connect_timeout(self.opts.connect_timeout)
                    .tcp_nodelay(true);
                let c = match &self.opts.dialer {
                    Some(d) => d.channel(endpoint, &ep),
                    None => endpoint.connect_lazy(),
                };
                g.channels.insert(ep.clone(), c.clone());
                c
            }
        };
        Ok((ep, channel))
    }

    /// Moves on after `failed` did not serve a call: `answered` when it refused it (typed
    /// Unavailable: alive), not when it could not be reached.
    pub(crate) fn rotate(&self, failed: &str, answered: bool) {
        self.lock()
            .endpoints
            .failed(failed, answered, std::time::Instant::now());
    }

    /// Points the session at `addr` (the leader), adding it to the endpoints if new.
    pub(crate) fn redirect(&self, addr: &str) {
        self.lock().endpoints.redirect(addr);
    }

    fn read_options(&self, consistency: Consistency) -> pb::ReadOptions {
        let (level, max_lag_ms) = match consistency {
            Consistency::Sequential => (pb::Consistency::Sequential, 0),
            Consistency::Linearizable => (pb::Consistency::Linearizable, 0),
            Consistency::Stale { max_lag_ms } => (pb::Consistency::Stale, max_lag_ms),
        };
        pb::ReadOptions {
            consistency: level as i32,
            min_revision: 0,
            max_lag_ms,
        }
    }

    /// Runs `f` against the current endpoint, following leaders and rotating endpoints on
    /// failures that leave nothing applied, until it succeeds or the call deadline passes.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, Error>
    where
        F: FnMut(KvClient<Channel>, Stamp) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        self.call_as(OpKind::Read, f).await
    }

    /// As [`Client::call`]; a write is not retried after its own deadline or a server-side
    /// deadline or cancellation (it may have been applied): it fails with that error.
    async fn call_as<T, F, Fut>(&self, kind: OpKind, mut f: F) -> Result<T, Error>
    where
        F: FnMut(KvClient<Channel>, Stamp) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        self.call_channel(kind, self.opts.rpc_timeout, |ch, t| f(kv_client(ch), t))
            .await
    }

    /// The retry loop of every call, on the raw channel (any service), with an attempt
    /// deadline of `rpc_timeout`.
    pub(crate) async fn call_channel<T, F, Fut>(
        &self,
        kind: OpKind,
        rpc_timeout: Duration,
        mut f: F,
    ) -> Result<T, Error>
    where
        F: FnMut(Channel, Stamp) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let started = tokio::time::Instant::now();
        let deadline = started + self.opts.call_timeout.max(rpc_timeout);
        let mut backoff = BACKOFF_MS_MIN;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let (ep, channel) = self.channel()?;
            let stamp = Stamp {
                timeout: rpc_timeout,
                token: self.token.clone(),
            };
            let res = tokio::time::timeout(rpc_timeout, f(channel, stamp)).await;
            let mut answered = false;
            let err = match res {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(status)) => {
                    answered = meridian_proto::io::refused_by_service(&status);
                    // A write may be retried only if it surely was not applied: the router
                    // could not be reached, or it refused before proposing (typed
                    // Unavailable, NotLeader). A connection that broke after sending (tonic
                    // reports Unknown or Unavailable) may have carried a committed write.
                    let maybe_applied = kind == OpKind::Write
                        && matches!(
                            status.code(),
                            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
                        )
                        && !meridian_proto::io::never_sent(&status)
                        && !meridian_proto::io::refused_by_service(&status);
                    if maybe_applied {
                        return Err(Error::Other {
                            code: status.code(),
                            message: format!(
                                "{ep}: {}; the write may have been applied: read before retrying",
                                status.message()
                            ),
                        });
                    }
                    Error::from_status(status)
                }
                Err(_) if kind == OpKind::Write => {
                    return Err(Error::Other {
                        code: tonic::Code::DeadlineExceeded,
                        message: format!(
                            "{ep} did not answer within {rpc_timeout:?}; the write may have been applied"
                        ),
                    })
                }
                Err(_) => Error::Unavailable(format!("{ep} did not answer within {rpc_timeout:?}")),
            };
            if kind == OpKind::Write
                && matches!(
                    &err,
                    Error::Other {
                        code: tonic::Code::Cancelled | tonic::Code::DeadlineExceeded,
                        ..
                    }
                )
            {
                return Err(err);
            }
            let retry_now = match &err {
                Error::NotLeader { address, .. } if !address.is_empty() => {
                    self.redirect(address);
                    true
                }
                e if e.is_retryable() => {
                    self.rotate(&ep, answered);
                    false
                }
                _ => return Err(err),
            };
            if tokio::time::Instant::now() >= deadline {
                // Say what really happened: the last answer came after several tries.
                return Err(match err {
                    Error::Unavailable(m) if attempts > 1 => Error::Unavailable(format!(
                        "{m} (gave up after {attempts} attempts over {:.1} s, the call's deadline)",
                        started.elapsed().as_secs_f64()
                    )),
                    e => e,
                });
            }
            if !retry_now {
                tokio::time::sleep(Duration::from_millis(backoff)).await;
                backoff = (backoff * 2).min(BACKOFF_MS_MAX);
            }
        }
    }

    pub(crate) fn hubs(&self) -> &watch_hub::Hubs {
        &self.hubs
    }

    pub(crate) fn opts(&self) -> &Options {
        &self.opts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(group: u64, revision: u64) -> pb::ResponseHeader {
        pb::ResponseHeader {
            group,
            revision,
            ..Default::default()
        }
    }

    fn client() -> Client {
        Client::connect(&["127.0.0.1:1"]).expect("client")
    }

    /// A read that keeps finding no router says, when it gives up, that it tried several times
    /// until its deadline — not only the last attempt's error.
    #[tokio::test]
    async fn giving_up_says_how_long_it_tried() {
        let c = Client::new(
            vec!["127.0.0.1:1".to_string()],
            Options {
                call_timeout: Duration::from_millis(600),
                rpc_timeout: Duration::from_millis(200),
                ..Options::default()
            },
        )
        .expect("client");
        match c.get("/x").await {
            Err(Error::Unavailable(m)) => {
                assert!(
                    m.contains("gave up after") && m.contains("attempts over"),
                    "{m}"
                )
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    /// The last group is what the server uses to decide a sync: it must name the previous
    /// operation only when that is certain.
    #[test]
    fn last_group_only_from_an_operation_that_ran_alone_and_succeeded() {
        let c = client();
        let t = c.begin();
        c.finish(t, Some(&header(1, 10)), OpKind::Write);
        assert_eq!((c.last_group(), c.seen(1)), (1, 10));

        // A stale read of group 2 did not sync it: the last group stays 1.
        let t = c.begin();
        c.finish(t, Some(&header(2, 4)), OpKind::StaleRead);
        assert_eq!((c.last_group(), c.seen(2)), (1, 4));

        // Overlapping operations: neither is "the previous one".
        let a = c.begin();
        let b = c.begin();
        c.finish(b, Some(&header(2, 5)), OpKind::Read);
        assert_eq!(c.last_group(), UNKNOWN_GROUP);
        c.finish(a, Some(&header(1, 11)), OpKind::Write);
        assert_eq!(c.last_group(), UNKNOWN_GROUP);
        assert_eq!((c.seen(1), c.seen(2)), (11, 5));

        // Alone again: known again. A failure makes it unknown.
        let t = c.begin();
        c.finish(t, Some(&header(2, 6)), OpKind::Read);
        assert_eq!(c.last_group(), 2);
        let t = c.begin();
        c.finish(t, None, OpKind::Write);
        assert_eq!(c.last_group(), UNKNOWN_GROUP);
    }

    #[test]
    fn vectors_never_go_back_and_adopted_sessions_sync() {
        let c = client();
        let t = c.begin();
        c.finish(t, Some(&header(1, 10)), OpKind::Write);
        c.merge_header(Some(&header(1, 3)));
        assert_eq!(
            (c.seen(1), c.last_group()),
            (10, 1),
            "watch headers never move last_group"
        );

        c.observe_vector(&BTreeMap::from([(3, 7)]));
        assert_eq!((c.seen(3), c.last_group()), (7, UNKNOWN_GROUP));

        let fresh = client();
        let ts = |physical_us, logical| {
            Some(pb::HlcTimestamp {
                physical_us,
                logical,
            })
        };
        fresh.adopt_session(&pb::Session {
            vector: [(1, 12)].into(),
            last_group: 1,
            timestamp: ts(500, 2),
        });
        assert_eq!((fresh.seen(1), fresh.last_group()), (12, 1));
        fresh.adopt_session(&pb::Session {
            vector: [(2, 1)].into(),
            last_group: 2,
            timestamp: ts(400, 9),
        });
        assert_eq!(fresh.last_group(), UNKNOWN_GROUP, "two different histories");
        assert_eq!(fresh.seen(1), 12);
        assert_eq!(
            fresh.session().timestamp,
            ts(500, 2),
            "timestamps never go back"
        );
        let mut h = header(1, 13);
        h.timestamp = ts(500, 3);
        fresh.merge_header(Some(&h));
        assert_eq!(fresh.session().timestamp, ts(500, 3));
        h.timestamp = None;
        fresh.merge_header(Some(&h));
        assert_eq!(fresh.session().timestamp, ts(500, 3));
    }

    #[test]
    fn consistency_parses_from_the_command_line_form() {
        assert_eq!("sequential".parse(), Ok(Consistency::Sequential));
        assert_eq!("linearizable".parse(), Ok(Consistency::Linearizable));
        assert_eq!(
            "stale:250".parse(),
            Ok(Consistency::Stale { max_lag_ms: 250 })
        );
        assert_eq!("stale".parse(), Ok(Consistency::Stale { max_lag_ms: 0 }));
        assert!("stale:x".parse::<Consistency>().is_err());
        assert!("eventual".parse::<Consistency>().is_err());
    }
}
