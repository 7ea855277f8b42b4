//! Residency (DESIGN.md §7): where a request on a key or prefix may be served. A domain's
//! policy names the regions that may hold its data; its group keeps replicas only there (the
//! topology check and the global group's state machine refuse anything else). A request that
//! reaches a router outside those regions is either refused (`strict`: `PolicyDenied`) or
//! proxied whole to a router of the nearest allowed region (`forward`) — it never touches this
//! node's log, state or disk, and nothing about its keys or values is logged here. A request
//! for a group this node holds no replica of (no policy involved) is proxied the same way.
//!
//! A proxied request carries [`PROXIED_HEADER`] with the region it arrived in; a router never
//! proxies it again, and judges `strict` policies by that region — so a router that has not yet
//! installed a newer policy cannot let a request through that the receiving router's map
//! refuses.

use crate::ctx::NodeCtx;
use crate::error::{Error, Result};
use meridian_proto::kv::kv_client::KvClient;
use meridian_proto::MAX_MESSAGE_BYTES;
use meridian_types::{DomainPlacement, GroupId, Policy, PolicyMode};
use std::future::Future;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// Metadata key marking a request one router proxied to another; its value is the region the
/// request arrived in.
pub const PROXIED_HEADER: &str = meridian_proto::PROXIED;

/// Where a request is served.
pub enum Route {
    /// By this router, from its local replica (or its usual forwarding of writes).
    Local,
    /// By a router at one of these addresses, nearest first.
    Proxy(Vec<String>),
}

/// Who a request came from: the region that proxied it here (None: its client asked this
/// router) and the client's token, which travels on with a request proxied for it so that the
/// next router checks the same authority (docs/security.md).
#[derive(Clone, Debug, Default)]
pub struct Caller {
    pub proxied: Option<String>,
    pub token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl Caller {
    /// The caller of `req`; the refusal's message when a client (not a node) marked it proxied
    /// (see [`proxied_from`]).
    pub fn of<T>(req: &Request<T>) -> std::result::Result<Self, String> {
        Ok(Self {
            proxied: proxied_from(req)?,
            token: crate::gate::carried(req.metadata()),
        })
    }
}

/// The region `req` arrived in, when another router proxied it to us. Only a router may say
/// so: the region decides which `strict` policies apply and stops a second proxying, so over
/// TLS the header is honoured only from a connection that presented a node certificate of this
/// cluster (the handshake checked it against the cluster's CA); from anyone else — a client,
/// even one with a client certificate of the cluster's CA — the request is refused with the
/// message returned. Without TLS (security off, or the deterministic simulation) nothing can be
/// told apart and the header is taken as it comes.
pub fn proxied_from<T>(req: &Request<T>) -> std::result::Result<Option<String>, String> {
    let Some(value) = req.metadata().get(PROXIED_HEADER) else {
        return Ok(None);
    };
    let over_tls = req
        .extensions()
        .get::<tonic::transport::server::TlsConnectInfo<tonic::transport::server::TcpConnectInfo>>()
        .is_some();
    if over_tls && meridian_tls::peer_node(req.peer_certs().as_deref().map(Vec::as_slice)).is_none()
    {
        return Err(format!(
            "the {PROXIED_HEADER} header marks a request one router proxied to another: only a \
             node of this cluster (with its node certificate) may send it; a client must not"
        ));
    }
    Ok(Some(value.to_str().unwrap_or_default().to_string()))
}

impl NodeCtx {
    /// Where a request on `scopes` (each a key, or every key under it when the flag is set),
    /// all owned by `group`, is served; `PolicyDenied` when a strict policy keeps one of them
    /// out of this region.
    pub fn residency(
        &self,
        group: GroupId,
        scopes: &[(&str, bool)],
        proxied: Option<&str>,
    ) -> Result<Route> {
        let current = self.placement.current();
        // A proxied request is judged by the region it arrived in.
        let region = proxied.unwrap_or(&self.region);
        let tags = current.map.regions.get(region);
        let mut in_scope: Vec<&DomainPlacement> = Vec::new();
        for (scope, prefix) in scopes {
            in_scope.extend(current.lookup.domain_of(scope));
            if *prefix {
                in_scope.extend(current.lookup.domains_under(scope));
            }
        }
        let policies: Vec<(&str, &Policy)> = in_scope
            .iter()
            .filter_map(|d| d.policy.as_ref().map(|p| (d.prefix.as_str(), p)))
            .collect();
        let excluded = |p: &Policy| !p.allows(region, tags);
        // A strict policy that excludes this region refuses, whatever else is in scope.
        if let Some((domain, p)) = policies
            .iter()
            .find(|(_, p)| p.mode == PolicyMode::Strict && excluded(p))
        {
            return Err(Error::PolicyDenied {
                domain: domain.to_string(),
                policy: p.to_string(),
                region: region.to_string(),
            });
        }
        if proxied.is_none() && policies.iter().any(|(_, p)| excluded(p)) {
            return self.proxy_route(group, proxied, |region| {
                let tags = current.map.regions.get(region);
                policies.iter().all(|(_, p)| p.allows(region, tags))
            });
        }
        if self.host.get(group).is_some() {
            return Ok(Route::Local);
        }
        self.proxy_route(group, proxied, |_| true)
    }

    /// For services that are not forwarded across regions (leases, locks, election): `Ok` when
    /// this router may serve `scope` itself; `PolicyDenied` under a strict policy; otherwise a
    /// clear `Unavailable` naming where it is served.
    pub fn serve_here(&self, group: GroupId, scope: &str, prefix: bool) -> Result<()> {
        match self.residency(group, &[(scope, prefix)], None)? {
            Route::Local => Ok(()),
            Route::Proxy(to) => Err(Error::Unavailable(format!(
                "leases, locks and elections of group {} are served by routers that hold a \
                 replica of it ({}), not by node {} in region {}; use one of those endpoints",
                self.group_label(group),
                to.join(", "),
                self.node_id,
                self.region
            ))),
        }
    }

    fn proxy_route(
        &self,
        group: GroupId,
        proxied: Option<&str>,
        allowed: impl Fn(&str) -> bool,
    ) -> Result<Route> {
        if proxied.is_some() {
            return Err(Error::Unavailable(format!(
                "node {} (region {}) received a forwarded request for group {} that it cannot \
                 serve either; the routers disagree on placement — retry shortly",
                self.node_id,
                self.region,
                self.group_label(group)
            )));
        }
        let hosts = self.nearest_first(
            self.topology
                .voters(group)
                .into_iter()
                .chain(self.topology.learners(group))
                .filter(|n| n.id != self.node_id && allowed(&n.region)),
        );
        if hosts.is_empty() {
            return Err(Error::Unavailable(format!(
                "no node that may serve group {} is known to this router (node {}, region {})",
                self.group_label(group),
                self.node_id,
                self.region
            )));
        }
        Ok(Route::Proxy(hosts))
    }

    /// Sends one request to the first of `targets` that takes it (a target that never got it
    /// is skipped), with the write deadline; the answer — success or typed error — is the
    /// remote router's, unchanged.
    pub async fn proxy<T, F, Fut>(
        &self,
        targets: &[String],
        call: F,
    ) -> std::result::Result<Response<T>, Status>
    where
        F: Fn(KvClient<Channel>, Duration) -> Fut,
        Fut: Future<Output = std::result::Result<Response<T>, Status>>,
    {
        let timeout = Duration::from_millis(self.limits.write_timeout_ms);
        let mut last = None;
        for addr in targets {
            let channel = match self.pool.channel(addr) {
                Ok(c) => c,
                Err(e) => {
                    last = Some(Status::unavailable(format!("router at {addr}: {e}")));
                    continue;
                }
            };
            let client = KvClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
            match tokio::time::timeout(timeout, call(client, timeout)).await {
                Err(_) => {
                    return Err(Error::Deadline(format!(
                        "the router at {addr} this request was forwarded to (residency) did not \
                         answer within {} ms; a write may have been applied",
                        self.limits.write_timeout_ms
                    ))
                    .into())
                }
                Ok(Err(s)) if meridian_proto::io::never_sent(&s) => last = Some(s),
                Ok(res) => return res,
            }
        }
        Err(last.unwrap_or_else(|| Status::unavailable("no router to forward to")))
    }
}

impl NodeCtx {
    /// The unary request `msg` on `scopes` of `group`: `None` when this router serves it,
    /// otherwise the answer of the router it was proxied to (`call` sends it there).
    pub async fn answer_elsewhere<M, T, F, Fut>(
        &self,
        group: GroupId,
        scopes: &[(&str, bool)],
        caller: &Caller,
        msg: &M,
        call: F,
    ) -> std::result::Result<Option<Response<T>>, Status>
    where
        M: Clone,
        F: Fn(KvClient<Channel>, Request<M>) -> Fut,
        Fut: Future<Output = std::result::Result<Response<T>, Status>>,
    {
        match self.residency(group, scopes, caller.proxied.as_deref())? {
            Route::Local => Ok(None),
            Route::Proxy(to) => self
                .proxy(&to, |c, t| {
                    call(
                        c,
                        proxied_request(msg.clone(), Some(t), &self.region, caller),
                    )
                })
                .await
                .map(Some),
        }
    }
}

/// `msg` marked as proxied from `region` for `caller` (whose token it carries), with a
/// deadline (none for a stream that lives on).
pub fn proxied_request<T>(
    msg: T,
    timeout: Option<Duration>,
    region: &str,
    caller: &Caller,
) -> Request<T> {
    let mut req = Request::new(msg);
    meridian_proto::trace::inject(&mut req);
    if let Some(token) = &caller.token {
        req.metadata_mut()
            .insert(meridian_proto::TOKEN, token.clone());
    }
    if let Some(t) = timeout {
        req.set_timeout(t);
    }
    // Region names are ASCII in practice; one that is not still marks the request proxied.
    let value = tonic::metadata::MetadataValue::try_from(region)
        .unwrap_or_else(|_| tonic::metadata::MetadataValue::from_static("non-ascii-region"));
    req.metadata_mut().insert(PROXIED_HEADER, value);
    req
}
