//! Rust client for Meridian.
//!
//! - [`Client`]: connects to one or more endpoints, follows `NotLeader` to the leader, retries
//!   on unavailable endpoints with capped backoff, and keeps the session's version vector
//!   (group → highest revision seen) and the group of its last operation, presented with every
//!   request: any router then serves reads at least as new as what the session has observed
//!   (read-your-writes, monotonic reads) and syncs a group the session switches to (sequential
//!   consistency across groups).
//! - [`watch`]: watch streams that resume after a disconnect from the last revision delivered.
//! - [`error`]: the typed errors decoded from the server's status details.

pub mod error;
pub mod watch;

pub use error::Error;
pub use meridian_proto::kv as pb;
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
}

impl Default for Options {
    fn default() -> Self {
        Self {
            rpc_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(1),
        }
    }
}

struct Inner {
    endpoints: Vec<String>,
    current: usize,
    channels: BTreeMap<String, Channel>,
    /// The session's version vector: group → highest revision observed.
    vector: BTreeMap<u64, u64>,
    /// The group of the session's last operation (0 = none yet).
    last_group: u64,
}

/// A session with a Meridian cluster. Cheap to clone; clones share the session.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Mutex<Inner>>,
    opts: Options,
}

const BACKOFF_MS_MIN: u64 = 20;

/// A request that carries its deadline to the server (`grpc-timeout`).
fn timed<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(timeout);
    r
}
const BACKOFF_MS_MAX: u64 = 500;

impl Client {
    /// A client for `endpoints` (host:port). Connections are made on first use.
    pub fn new(endpoints: Vec<String>, opts: Options) -> Result<Self, Error> {
        if endpoints.is_empty() {
            return Err(Error::Config("no endpoint given".into()));
        }
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner {
                endpoints,
                current: 0,
                channels: BTreeMap::new(),
                vector: BTreeMap::new(),
                last_group: 0,
            })),
            opts,
        })
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
        self.lock().vector.clone()
    }

    /// Presents a vector from an earlier session (e.g. after moving to another endpoint).
    pub fn observe_vector(&self, vector: &BTreeMap<u64, u64>) {
        let mut g = self.lock();
        for (group, rev) in vector {
            let e = g.vector.entry(*group).or_insert(0);
            *e = (*e).max(*rev);
        }
    }

    pub(crate) fn observe(&self, header: Option<&pb::ResponseHeader>) {
        if let Some(h) = header {
            let mut g = self.lock();
            for (group, rev) in h.vector.iter().chain([(&h.group, &h.revision)]) {
                let e = g.vector.entry(*group).or_insert(0);
                *e = (*e).max(*rev);
            }
            g.last_group = h.group;
        }
    }

    /// What every request carries: the vector and the group of the last operation.
    pub fn session(&self) -> pb::Session {
        let g = self.lock();
        pb::Session {
            vector: g.vector.iter().map(|(k, v)| (*k, *v)).collect(),
            last_group: g.last_group,
        }
    }

    /// Continues a session from elsewhere (e.g. a client that moves to another region's
    /// router): merges its vector and takes its last group, so reads here are never older
    /// than what that session saw.
    pub fn adopt_session(&self, session: &pb::Session) {
        let mut g = self.lock();
        for (group, rev) in &session.vector {
            let e = g.vector.entry(*group).or_insert(0);
            *e = (*e).max(*rev);
        }
        g.last_group = session.last_group;
    }

    /// The group of the session's last operation (0 = none).
    pub fn last_group(&self) -> u64 {
        self.lock().last_group
    }

    /// Highest revision this session has seen of `group` (0 if none).
    pub fn seen(&self, group: u64) -> u64 {
        self.lock().vector.get(&group).copied().unwrap_or(0)
    }

    pub(crate) fn current_endpoint(&self) -> String {
        let g = self.lock();
        g.endpoints[g.current % g.endpoints.len()].clone()
    }

    pub(crate) fn client(&self) -> Result<(String, KvClient<Channel>), Error> {
        let mut g = self.lock();
        let ep = g.endpoints[g.current % g.endpoints.len()].clone();
        let channel = match g.channels.get(&ep) {
            Some(c) => c.clone(),
            None => {
                let c = Endpoint::from_shared(format!("http://{ep}"))
                    .map_err(|e| Error::Config(format!("endpoint {ep}: {e}")))?
                    .connect_timeout(self.opts.connect_timeout)
                    .tcp_nodelay(true)
                    .connect_lazy();
                g.channels.insert(ep.clone(), c.clone());
                c
            }
        };
        Ok((
            ep,
            KvClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        ))
    }

    /// Moves to the next endpoint (after a failure of `failed`).
    pub(crate) fn rotate(&self, failed: &str) {
        let mut g = self.lock();
        if g.endpoints[g.current % g.endpoints.len()] == failed {
            g.current = (g.current + 1) % g.endpoints.len();
        }
    }

    /// Points the session at `addr` (the leader), adding it to the endpoints if new.
    pub(crate) fn redirect(&self, addr: &str) {
        let mut g = self.lock();
        let idx = match g.endpoints.iter().position(|e| e == addr) {
            Some(i) => i,
            None => {
                g.endpoints.push(addr.to_string());
                g.endpoints.len() - 1
            }
        };
        g.current = idx;
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
    async fn call<T, F, Fut>(&self, mut f: F) -> Result<T, Error>
    where
        F: FnMut(KvClient<Channel>, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let deadline = tokio::time::Instant::now() + self.opts.call_timeout;
        let mut backoff = BACKOFF_MS_MIN;
        loop {
            let (ep, client) = self.client()?;
            let res =
                tokio::time::timeout(self.opts.rpc_timeout, f(client, self.opts.rpc_timeout)).await;
            let err = match res {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(status)) => Error::from_status(status),
                Err(_) => Error::Unavailable(format!(
                    "{ep} did not answer within {:?}",
                    self.opts.rpc_timeout
                )),
            };
            let retry_now = match &err {
                Error::NotLeader { address, .. } if !address.is_empty() => {
                    self.redirect(address);
                    true
                }
                e if e.is_retryable() => {
                    self.rotate(&ep);
                    false
                }
                _ => return Err(err),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(err);
            }
            if !retry_now {
                tokio::time::sleep(Duration::from_millis(backoff)).await;
                backoff = (backoff * 2).min(BACKOFF_MS_MAX);
            }
        }
    }

    pub async fn put(
        &self,
        key: &str,
        value: impl Into<Vec<u8>>,
    ) -> Result<pb::PutResponse, Error> {
        self.put_request(pb::PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.into(),
            ..Default::default()
        })
        .await
    }

    pub async fn put_request(&self, mut req: pb::PutRequest) -> Result<pb::PutResponse, Error> {
        let resp = self
            .call(|mut c, t| {
                req.session = Some(self.session());
                let r = timed(req.clone(), t);
                async move { c.put(r).await.map(|r| r.into_inner()) }
            })
            .await?;
        self.observe(resp.header.as_ref());
        Ok(resp)
    }

    pub async fn get(&self, key: &str) -> Result<Option<pb::KeyValue>, Error> {
        Ok(self.get_with(key, Consistency::Sequential).await?.kv)
    }

    pub async fn get_with(
        &self,
        key: &str,
        consistency: Consistency,
    ) -> Result<pb::GetResponse, Error> {
        self.get_request(key.as_bytes().to_vec(), consistency).await
    }

    pub async fn get_request(
        &self,
        key: Vec<u8>,
        consistency: Consistency,
    ) -> Result<pb::GetResponse, Error> {
        let resp = self
            .call(|mut c, t| {
                let r = timed(
                    pb::GetRequest {
                        key: key.clone(),
                        read: Some(self.read_options(consistency)),
                        session: Some(self.session()),
                    },
                    t,
                );
                async move { c.get(r).await.map(|r| r.into_inner()) }
            })
            .await?;
        self.observe(resp.header.as_ref());
        Ok(resp)
    }

    pub async fn range(
        &self,
        mut req: pb::RangeRequest,
        consistency: Consistency,
    ) -> Result<pb::RangeResponse, Error> {
        let resp = self
            .call(|mut c, t| {
                req.read = Some(self.read_options(consistency));
                req.session = Some(self.session());
                let r = timed(req.clone(), t);
                async move { c.range(r).await.map(|r| r.into_inner()) }
            })
            .await?;
        self.observe(resp.header.as_ref());
        Ok(resp)
    }

    /// Every key under `prefix`, following continuations.
    pub async fn range_all(
        &self,
        prefix: &str,
        consistency: Consistency,
    ) -> Result<Vec<pb::KeyValue>, Error> {
        let mut out = Vec::new();
        let mut after = Vec::new();
        loop {
            let page = self
                .range(
                    pb::RangeRequest {
                        prefix: prefix.as_bytes().to_vec(),
                        after: after.clone(),
                        ..Default::default()
                    },
                    consistency,
                )
                .await?;
            let more = page.more;
            if let Some(last) = page.kvs.last() {
                after = last.key.as_bytes().to_vec();
            }
            out.extend(page.kvs);
            if !more {
                return Ok(out);
            }
        }
    }

    pub async fn list(
        &self,
        mut req: pb::ListRequest,
        consistency: Consistency,
    ) -> Result<pb::ListResponse, Error> {
        let resp = self
            .call(|mut c, t| {
                req.read = Some(self.read_options(consistency));
                req.session = Some(self.session());
                let r = timed(req.clone(), t);
                async move { c.list(r).await.map(|r| r.into_inner()) }
            })
            .await?;
        self.observe(resp.header.as_ref());
        Ok(resp)
    }

    pub async fn delete(&self, mut req: pb::DeleteRequest) -> Result<pb::DeleteResponse, Error> {
        let resp = self
            .call(|mut c, t| {
                req.session = Some(self.session());
                let r = timed(req.clone(), t);
                async move { c.delete(r).await.map(|r| r.into_inner()) }
            })
            .await?;
        self.observe(resp.header.as_ref());
        Ok(resp)
    }

    pub async fn txn(&self, mut req: pb::TxnRequest) -> Result<pb::TxnResponse, Error> {
        let resp = self
            .call(|mut c, t| {
                req.session = Some(self.session());
                let r = timed(req.clone(), t);
                async move { c.txn(r).await.map(|r| r.into_inner()) }
            })
            .await?;
        self.observe(resp.header.as_ref());
        Ok(resp)
    }

    /// Status of the node behind the current endpoint (with `cluster`, of every node).
    pub async fn status(&self, cluster: bool) -> Result<pb::StatusResponse, Error> {
        self.call(|mut c, t| {
            let r = timed(pb::StatusRequest { cluster }, t);
            async move { c.status(r).await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// Watches `key` (or every key under it, with `prefix`) from `start_revision` (0 = now).
    /// The stream resumes by itself after a disconnect, from the last revision it delivered.
    pub fn watch(&self, key: &str, prefix: bool, start_revision: u64) -> Watcher {
        Watcher::new(
            self.clone(),
            pb::WatchRequest {
                key: key.as_bytes().to_vec(),
                prefix,
                start_revision: start_revision as i64,
                prev_kv: false,
                progress_interval_ms: 0,
            },
        )
    }

    pub(crate) fn opts(&self) -> &Options {
        &self.opts
    }
}
