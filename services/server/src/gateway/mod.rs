//! The HTTP/JSON gateway (issue 15; docs/http.md): every KV verb, watches as server-sent
//! events, leases, locks and the status, as JSON over the node's HTTP listener, for curl and
//! for languages without a Meridian SDK. One entry: [`Gateway::routes`]; its OpenAPI 3
//! document, generated from the types in [`json`], is served at `/openapi.json`.
//!
//! A request is turned into the gRPC message and handed to the node's own service — the same
//! code a gRPC client reaches: input rules, the token gate, routing, forwarding, residency,
//! sync-on-switch. Only the token headers (`meridian-token`, `authorization: Bearer`) pass
//! through; nothing else of the HTTP request reaches the service. The session travels in the
//! `meridian-session` header ([`session`]) so that sequential consistency holds over HTTP too.

pub mod json;
pub mod session;

use crate::lock_service::LockService;
use crate::placement_service::PlacementService;
use crate::service::KvService;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use json::BadField;
use meridian_proto::kv as pb;
use meridian_proto::kv::kv_server::Kv;
use meridian_proto::kv::lease_server::Lease;
use meridian_proto::kv::lock_server::Lock;
use meridian_proto::kv::placement_server::Placement;
use serde::de::DeserializeOwned;
use serde::Serialize;
use session::Step;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use utoipa::OpenApi;

/// Largest request body (a 1 MiB value in base64 inside a txn of several: within the gRPC
/// message limit once decoded).
pub const BODY_BYTES_MAX: usize = 12 * 1024 * 1024;

/// Longest a unary call may take before the gateway answers 504 (the services' own deadlines
/// are shorter; a lock's wait is added to it).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Most gateway requests in service at once; past it a request waits for a slot.
const CONCURRENT_MAX: usize = 1024;

/// The node's client services, as the gateway calls them.
#[derive(Clone)]
pub struct Gateway {
    kv: Arc<KvService>,
    locks: Arc<LockService>,
    placement: Arc<PlacementService>,
}

impl Gateway {
    pub fn new(
        kv: Arc<KvService>,
        locks: Arc<LockService>,
        placement: Arc<PlacementService>,
    ) -> Self {
        Self {
            kv,
            locks,
            placement,
        }
    }

    /// The gateway's routes (to merge into the HTTP listener's router).
    pub fn routes(self) -> axum::Router {
        use axum::routing::{get, post};
        axum::Router::new()
            .route("/v1/kv/get", post(kv_get))
            .route("/v1/kv/put", post(kv_put))
            .route("/v1/kv/range", post(kv_range))
            .route("/v1/kv/list", post(kv_list))
            .route("/v1/kv/delete", post(kv_delete))
            .route("/v1/kv/txn", post(kv_txn))
            .route("/v1/watch", get(watch))
            .route("/v1/lease/grant", post(lease_grant))
            .route("/v1/lease/keepalive", post(lease_keepalive))
            .route("/v1/lease/revoke", post(lease_revoke))
            .route("/v1/lease/ttl", post(lease_ttl))
            .route("/v1/lock/acquire", post(lock_acquire))
            .route("/v1/lock/release", post(lock_release))
            .route("/v1/status", get(status))
            .route("/v1/placement", get(placement))
            .route("/", get(status_page))
            .route("/openapi.json", get(openapi))
            .fallback(not_found)
            .layer(tower::limit::ConcurrencyLimitLayer::new(CONCURRENT_MAX))
            .with_state(self)
    }
}

/// The gateway's OpenAPI 3 document.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    Doc::openapi()
}

async fn openapi() -> Response {
    match Doc::openapi().to_json() {
        Ok(text) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            text,
        )
            .into_response(),
        Err(e) => failure(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Meridian HTTP/JSON gateway",
        description = "Meridian's client API over HTTP/JSON (docs/http.md). The session travels \
                       in the `meridian-session` header: send back what the last answer carried."
    ),
    paths(
        kv_get,
        kv_put,
        kv_range,
        kv_list,
        kv_delete,
        kv_txn,
        watch,
        lease_grant,
        lease_keepalive,
        lease_revoke,
        lease_ttl,
        lock_acquire,
        lock_release,
        status,
        placement
    ),
    modifiers(&TokenScheme),
    security(("token" = []))
)]
struct Doc;

/// The capability token, as `meridian-token: TOKEN` (or `authorization: Bearer TOKEN`).
struct TokenScheme;

impl utoipa::Modify for TokenScheme {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "meridian-token",
                "A capability token (docs/security.md); not needed when the node runs without tokens",
            ))),
        );
    }
}

/// An error answer: the gRPC code's name, the message, the typed detail.
fn failure(code: StatusCode, name: &str, message: String) -> Response {
    let body = json::ErrorBody {
        code: name.to_string(),
        message,
        detail: None,
    };
    (code, axum::Json(body)).into_response()
}

fn bad_request(e: BadField) -> Response {
    let body = json::ErrorBody {
        code: "invalid_argument".into(),
        message: e.message,
        detail: Some(json::ErrorDetail::InvalidArgument {
            rule: "gateway".into(),
            field: e.field.into(),
        }),
    };
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

/// A gRPC code as (HTTP status, name): mapped as grpc-gateway maps it.
fn code_of(code: tonic::Code) -> (StatusCode, &'static str) {
    use tonic::Code as C;
    match code {
        C::Ok => (StatusCode::OK, "ok"),
        C::Cancelled => (
            StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            "cancelled",
        ),
        C::Unknown => (StatusCode::INTERNAL_SERVER_ERROR, "unknown"),
        C::InvalidArgument => (StatusCode::BAD_REQUEST, "invalid_argument"),
        C::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded"),
        C::NotFound => (StatusCode::NOT_FOUND, "not_found"),
        C::AlreadyExists => (StatusCode::CONFLICT, "already_exists"),
        C::PermissionDenied => (StatusCode::FORBIDDEN, "permission_denied"),
        C::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, "resource_exhausted"),
        C::FailedPrecondition => (StatusCode::PRECONDITION_FAILED, "failed_precondition"),
        C::Aborted => (StatusCode::CONFLICT, "aborted"),
        C::OutOfRange => (StatusCode::BAD_REQUEST, "out_of_range"),
        C::Unimplemented => (StatusCode::NOT_IMPLEMENTED, "unimplemented"),
        C::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        C::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        C::DataLoss => (StatusCode::INTERNAL_SERVER_ERROR, "data_loss"),
        C::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
    }
}

/// A gRPC status as an error body: the code's name, the message, the typed detail decoded.
fn error_body(s: &tonic::Status) -> json::ErrorBody {
    json::ErrorBody {
        code: code_of(s.code()).1.into(),
        message: s.message().to_string(),
        detail: <pb::ErrorDetail as prost::Message>::decode(s.details())
            .ok()
            .and_then(json::ErrorDetail::of),
    }
}

/// Whether `s` refused the session's timestamp as one no node gave.
fn refused_session_timestamp(s: &tonic::Status) -> bool {
    matches!(
        error_body(s).detail,
        Some(json::ErrorDetail::InvalidArgument { rule, .. })
            if rule == crate::convert::SESSION_TIMESTAMP_AHEAD
    )
}

/// A gRPC status as an HTTP answer. A stale read's unmet bound is 412: the condition that
/// failed is the request's own `max_lag_ms`, not the server.
fn status_response(s: &tonic::Status) -> Response {
    let body = error_body(s);
    let http = match body.detail {
        Some(json::ErrorDetail::StaleBound { .. }) => StatusCode::PRECONDITION_FAILED,
        _ => code_of(s.code()).0,
    };
    (http, axum::Json(body)).into_response()
}

/// Any path or method the gateway does not serve.
async fn not_found(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    failure(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no call {method} {}: see /openapi.json", uri.path()),
    )
}

/// The session the request presents (a malformed header is a bad request).
fn session_of(headers: &HeaderMap) -> Result<pb::Session, BadField> {
    let text = match headers.get(session::HEADER).map(|v| v.to_str()) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(_)) => {
            return Err(BadField {
                field: session::HEADER,
                message: format!("{} is not text", session::HEADER),
            })
        }
    };
    session::parse(text).map_err(|message| BadField {
        field: session::HEADER,
        message,
    })
}

/// A gRPC request for `msg` carrying only the caller's token headers.
fn request<T>(headers: &HeaderMap, msg: T) -> tonic::Request<T> {
    let mut carried = axum::http::HeaderMap::new();
    for name in [meridian_proto::TOKEN, meridian_proto::AUTHORIZATION] {
        if let Some(v) = headers.get(name) {
            carried.insert(name, v.clone());
        }
    }
    let mut r = tonic::Request::new(msg);
    *r.metadata_mut() = tonic::metadata::MetadataMap::from_headers(carried);
    r
}

/// A JSON request body (400 naming what is wrong; 413 past [`BODY_BYTES_MAX`]).
async fn body_of<J: DeserializeOwned>(body: Body) -> Result<J, Box<Response>> {
    let bytes = axum::body::to_bytes(body, BODY_BYTES_MAX)
        .await
        .map_err(|e| {
            Box::new(failure(
                StatusCode::PAYLOAD_TOO_LARGE,
                "resource_exhausted",
                format!("the request body could not be read (at most {BODY_BYTES_MAX} bytes): {e}"),
            ))
        })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Box::new(bad_request(BadField {
            field: "body",
            message: format!("the body is not the JSON this call takes: {e}"),
        }))
    })
}

/// One unary call: parse, convert, call the service within its deadline, answer JSON with the
/// session moved on in the `meridian-session` header.
async fn unary<J, W, R, O, Fut>(
    headers: HeaderMap,
    body: Body,
    plan: impl FnOnce(&J) -> (Step, Duration),
    wire: impl FnOnce(&J, pb::Session) -> Result<W, BadField>,
    call: impl FnOnce(tonic::Request<W>) -> Fut,
    header: fn(&R) -> Option<&pb::ResponseHeader>,
) -> Response
where
    J: DeserializeOwned,
    Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    O: From<R> + Serialize,
{
    let before = match session_of(&headers) {
        Ok(s) => s,
        Err(e) => return bad_request(e),
    };
    let j: J = match body_of(body).await {
        Ok(j) => j,
        Err(r) => return *r,
    };
    let (step, deadline) = plan(&j);
    let msg = match wire(&j, before.clone()) {
        Ok(m) => m,
        Err(e) => return bad_request(e),
    };
    let answer = match tokio::time::timeout(deadline, call(request(&headers, msg))).await {
        Ok(a) => a,
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "the call took longer than {} s",
            deadline.as_secs()
        ))),
    };
    let (after, mut response) = match answer {
        Ok(r) => {
            let r = r.into_inner();
            let after = session::after(&before, header(&r), step);
            (after, axum::Json(O::from(r)).into_response())
        }
        Err(s) => {
            let mut after = session::after(&before, None, Step::Unknown);
            // A forged timestamp is not handed back: the session goes on without it.
            if refused_session_timestamp(&s) {
                after.timestamp = None;
            }
            (after, status_response(&s))
        }
    };
    if let Ok(v) = HeaderValue::from_str(&session::render(&after)) {
        response.headers_mut().insert(session::HEADER, v);
    }
    response
}

fn read_step(r: &json::ReadOptions) -> (Step, Duration) {
    (
        if r.stale() { Step::Keep } else { Step::Here },
        CALL_TIMEOUT,
    )
}

fn write_step<J>(_: &J) -> (Step, Duration) {
    (Step::Here, CALL_TIMEOUT)
}

/// Leases and locks live in a group the caller does not pick: the next read syncs.
fn other_step<J>(_: &J) -> (Step, Duration) {
    (Step::Unknown, CALL_TIMEOUT)
}

/// Get one key.
#[utoipa::path(post, path = "/v1/kv/get", tag = "kv", request_body = json::GetRequest,
    params(("meridian-session" = Option<String>, Header, description = "The session: `vector=G:R,...;last=G[;ts=P.L]`")),
    responses((status = 200, body = json::GetResponse, headers(("meridian-session" = String))),
              (status = "default", body = json::ErrorBody)))]
async fn kv_get(State(g): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    unary::<json::GetRequest, _, _, json::GetResponse, _>(
        headers,
        body,
        |j| read_step(&j.read),
        |j, s| Ok(j.wire(s)),
        |r| async move { g.kv.get(r).await },
        |r| r.header.as_ref(),
    )
    .await
}

/// Put one key (conditional, sequential, with a lease).
#[utoipa::path(post, path = "/v1/kv/put", tag = "kv", request_body = json::PutRequest,
    params(("meridian-session" = Option<String>, Header, description = "The session: `vector=G:R,...;last=G[;ts=P.L]`")),
    responses((status = 200, body = json::PutResponse, headers(("meridian-session" = String))),
              (status = "default", body = json::ErrorBody)))]
async fn kv_put(State(g): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    unary::<json::PutRequest, _, _, json::PutResponse, _>(
        headers,
        body,
        write_step,
        |j, s| j.wire(s),
        |r| async move { g.kv.put(r).await },
        |r| r.header.as_ref(),
    )
    .await
}

/// Every key under a prefix, a page at a time.
#[utoipa::path(post, path = "/v1/kv/range", tag = "kv", request_body = json::RangeRequest,
    params(("meridian-session" = Option<String>, Header, description = "The session: `vector=G:R,...;last=G[;ts=P.L]`")),
    responses((status = 200, body = json::RangeResponse, headers(("meridian-session" = String))),
              (status = "default", body = json::ErrorBody)))]
async fn kv_range(State(g): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    unary::<json::RangeRequest, _, _, json::RangeResponse, _>(
        headers,
        body,
        |j| read_step(&j.read),
        |j, s| Ok(j.wire(s)),
        |r| async move { g.kv.range(r).await },
        |r| r.header.as_ref(),
    )
    .await
}

/// The direct children of a path (`ls`).
#[utoipa::path(post, path = "/v1/kv/list", tag = "kv", request_body = json::ListRequest,
    params(("meridian-session" = Option<String>, Header, description = "The session: `vector=G:R,...;last=G[;ts=P.L]`")),
    responses((status = 200, body = json::ListResponse, headers(("meridian-session" = String))),
              (status = "default", body = json::ErrorBody)))]
async fn kv_list(State(g): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    unary::<json::ListRequest, _, _, json::ListResponse, _>(
        headers,
        body,
        |j| read_step(&j.read),
        |j, s| Ok(j.wire(s)),
        |r| async move { g.kv.list(r).await },
        |r| r.header.as_ref(),
    )
    .await
}

/// Delete a key, or every key under a prefix.
#[utoipa::path(post, path = "/v1/kv/delete", tag = "kv", request_body = json::DeleteRequest,
    params(("meridian-session" = Option<String>, Header, description = "The session: `vector=G:R,...;last=G[;ts=P.L]`")),
    responses((status = 200, body = json::DeleteResponse, headers(("meridian-session" = String))),
              (status = "default", body = json::ErrorBody)))]
async fn kv_delete(State(g): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    unary::<json::DeleteRequest, _, _, json::DeleteResponse, _>(
        headers,
        body,
        write_step,
        |j, s| Ok(j.wire(s)),
        |r| async move { g.kv.delete(r).await },
        |r| r.header.as_ref(),
    )
    .await
}

/// Compare, then put/delete/get atomically in one group.
#[utoipa::path(post, path = "/v1/kv/txn", tag = "kv", request_body = json::TxnRequest,
    params(("meridian-session" = Option<String>, Header, description = "The session: `vector=G:R,...;last=G[;ts=P.L]`")),
    responses((status = 200, body = json::TxnResponse, headers(("meridian-session" = String))),
              (status = "default", body = json::ErrorBody)))]
async fn kv_txn(State(g): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    unary::<json::TxnRequest, _, _, json::TxnResponse, _>(
        headers,
        body,
        write_step,
        |j, s| j.wire(s),
        |r| async move { g.kv.txn(r).await },
        |r| r.header.as_ref(),
    )
    .await
}

/// Changes of a key or prefix as server-sent events: each `data:` is a `WatchResponse`; a
/// failure ends the stream with an `event: error` whose data is an `ErrorBody`.
#[utoipa::path(get, path = "/v1/watch", tag = "kv", params(json::WatchQuery,
    ("meridian-session" = Option<String>, Header, description = "The session: `vector=G:R,...;last=G[;ts=P.L]`")),
    responses((status = 200, content_type = "text/event-stream", body = json::WatchResponse),
              (status = "default", body = json::ErrorBody)))]
async fn watch(
    State(g): State<Gateway>,
    headers: HeaderMap,
    query: Result<Query<json::WatchQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures::StreamExt;
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => {
            return bad_request(BadField {
                field: "query",
                message: format!("the query is not what /v1/watch takes: {e}"),
            })
        }
    };
    let before = match session_of(&headers) {
        Ok(s) => s,
        Err(e) => return bad_request(e),
    };
    let stream =
        match tokio::time::timeout(CALL_TIMEOUT, g.kv.watch(request(&headers, q.wire(before))))
            .await
        {
            Ok(Ok(s)) => s.into_inner(),
            Ok(Err(s)) => return status_response(&s),
            Err(_) => {
                return failure(
                    StatusCode::GATEWAY_TIMEOUT,
                    "deadline_exceeded",
                    "the watch did not start in time".into(),
                )
            }
        };
    // Ends after the first failure, which it sends as an `error` event.
    let events = stream
        .scan(false, |ended, item| {
            let out = if *ended {
                None
            } else {
                Some(match item {
                    Ok(r) => Event::default().data(
                        serde_json::to_string(&json::WatchResponse::from(r)).unwrap_or_default(),
                    ),
                    Err(s) => {
                        *ended = true;
                        Event::default()
                            .event("error")
                            .data(serde_json::to_string(&error_body(&s)).unwrap_or_default())
                    }
                })
            };
            futures::future::ready(out)
        })
        .map(Ok::<_, std::convert::Infallible>);
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Grant a lease in the group of `path`.
#[utoipa::path(post, path = "/v1/lease/grant", tag = "lease", request_body = json::LeaseGrantRequest,
    responses((status = 200, body = json::LeaseGrantResponse), (status = "default", body = json::ErrorBody)))]
async fn lease_grant(State(g): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    unary::<json::LeaseGrantRequest, _, _, json::LeaseGrantResponse, _>(
        headers,
        body,
        other_step,
        |j, _| {
            Ok(pb::LeaseGrantRequest {
                path: j.path.clone(),
                ttl_ms: j.ttl_ms,
                reuse: Vec::new(),
            })
        },
        |r| async move { g.locks.grant(r).await },
        |r| r.header.as_ref(),
    )
    .await
}

/// Keep leases alive (send at least every third of their TTL).
#[utoipa::path(post, path = "/v1/lease/keepalive", tag = "lease", request_body = json::LeaseKeepAliveRequest,
    responses((status = 200, body = json::LeaseKeepAliveResponse), (status = "default", body = json::ErrorBody)))]
async fn lease_keepalive(State(g): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    unary::<json::LeaseKeepAliveRequest, _, _, json::LeaseKeepAliveResponse, _>(
        headers,
        body,
        other_step,
        |j, _| j.wire(),
        |r| async move { g.locks.keep_alive(r).await },
        |_| None,
    )
    .await
}

/// Revoke a lease: its keys are deleted, its locks released.
#[utoipa::path(post, path = "/v1/lease/revoke", tag = "lease", request_body = json::LeaseRevokeRequest,
    responses((status = 200, body = json::LeaseRevokeResponse), (status = "default", body = json::ErrorBody)))]
async fn lease_revoke(State(g): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    unary::<json::LeaseRevokeRequest, _, _, json::LeaseRevokeResponse, _>(
        headers,
        body,
        other_step,
        |j, _| j.wire(),
        |r| async move { g.locks.revoke(r).await },
        |r| r.header.as_ref(),
    )
    .await
}

/// What is left of a lease.
#[utoipa::path(post, path = "/v1/lease/ttl", tag = "lease", request_body = json::LeaseTtlRequest,
    responses((status = 200, body = json::LeaseTtlResponse), (status = "default", body = json::ErrorBody)))]
async fn lease_ttl(State(g): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    unary::<json::LeaseTtlRequest, _, _, json::LeaseTtlResponse, _>(
        headers,
        body,
        other_step,
        |j, _| j.wire(),
        |r| async move { g.locks.time_to_live(r).await },
        |r| r.header.as_ref(),
    )
    .await
}

/// Acquire a lock under a lease, waiting at most `wait_ms`.
#[utoipa::path(post, path = "/v1/lock/acquire", tag = "lock", request_body = json::LockAcquireRequest,
    responses((status = 200, body = json::LockAcquireResponse), (status = "default", body = json::ErrorBody)))]
async fn lock_acquire(State(g): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    unary::<json::LockAcquireRequest, _, _, json::LockAcquireResponse, _>(
        headers,
        body,
        |j| {
            let wait = Duration::from_millis(j.wait_ms.min(24 * 3600 * 1000));
            (Step::Unknown, CALL_TIMEOUT + wait)
        },
        |j, _| j.wire(),
        |r| async move { g.locks.acquire(r).await },
        |r| r.header.as_ref(),
    )
    .await
}

/// Release a lock by the waiter's key.
#[utoipa::path(post, path = "/v1/lock/release", tag = "lock", request_body = json::LockReleaseRequest,
    responses((status = 200, body = json::LockReleaseResponse), (status = "default", body = json::ErrorBody)))]
async fn lock_release(State(g): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    unary::<json::LockReleaseRequest, _, _, json::LockReleaseResponse, _>(
        headers,
        body,
        other_step,
        |j, _| Ok(pb::LockReleaseRequest { key: j.key.clone() }),
        |r| async move { g.locks.release(r).await },
        |r| r.header.as_ref(),
    )
    .await
}

/// This node's status (groups, leaders, lag), and with `cluster=true` every node's.
#[utoipa::path(get, path = "/v1/status", tag = "cluster", params(json::StatusQuery),
    responses((status = 200, body = json::StatusResponse), (status = "default", body = json::ErrorBody)))]
async fn status(
    State(g): State<Gateway>,
    headers: HeaderMap,
    query: Result<Query<json::StatusQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => {
            return bad_request(BadField {
                field: "query",
                message: format!("the query is not what /v1/status takes: {e}"),
            })
        }
    };
    let call =
        g.kv.status(request(&headers, pb::StatusRequest { cluster: q.cluster }));
    answer::<_, json::StatusResponse>(call, "the status").await
}

/// The placement map: domains, their groups and policies, where each group keeps replicas.
#[utoipa::path(get, path = "/v1/placement", tag = "cluster",
    responses((status = 200, body = json::PlacementResponse), (status = "default", body = json::ErrorBody)))]
async fn placement(State(g): State<Gateway>, headers: HeaderMap) -> Response {
    let call = g
        .placement
        .show(request(&headers, pb::PlacementShowRequest {}));
    answer::<_, json::PlacementResponse>(call, "the placement map").await
}

/// A call without a body or a session (status, placement) answered as JSON within
/// [`CALL_TIMEOUT`].
async fn answer<R, O: From<R> + Serialize>(
    call: impl Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    what: &str,
) -> Response {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(r)) => axum::Json(O::from(r.into_inner())).into_response(),
        Ok(Err(s)) => status_response(&s),
        Err(_) => failure(
            StatusCode::GATEWAY_TIMEOUT,
            "deadline_exceeded",
            format!("{what} took too long"),
        ),
    }
}

/// The status page (docs/operations.md): one static page that polls `/v1/status?cluster=true`
/// and `/v1/placement` every second. No build step; a token, if the node needs one, is given
/// in the address's fragment (`/#token=...`, never sent to a server) or typed into the page.
async fn status_page() -> Response {
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "no-store"),
        ],
        STATUS_PAGE,
    )
        .into_response()
}

const STATUS_PAGE: &str = include_str!("status.html");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_names_every_route() {
        let doc = openapi_document();
        let paths: Vec<&String> = doc.paths.paths.keys().collect();
        for p in [
            "/v1/kv/get",
            "/v1/kv/put",
            "/v1/kv/range",
            "/v1/kv/list",
            "/v1/kv/delete",
            "/v1/kv/txn",
            "/v1/watch",
            "/v1/lease/grant",
            "/v1/lease/keepalive",
            "/v1/lease/revoke",
            "/v1/lease/ttl",
            "/v1/lock/acquire",
            "/v1/lock/release",
            "/v1/status",
            "/v1/placement",
        ] {
            assert!(
                paths.iter().any(|x| x.as_str() == p),
                "{p} missing from {paths:?}"
            );
        }
        let text = doc.to_json().unwrap();
        assert!(
            text.contains("\"meridian-session\""),
            "session header documented"
        );
    }

    /// docs/openapi.json is the document the code serves (what readers and generators use).
    #[test]
    fn docs_openapi_json_is_the_served_document() {
        let now = openapi_document().to_pretty_json().expect("json") + "\n";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        if std::env::var_os("MERIDIAN_WRITE_OPENAPI").is_some() {
            std::fs::write(path, &now).expect("write docs/openapi.json");
        }
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            on_disk == now,
            "docs/openapi.json is not the gateway's document: run \
             `MERIDIAN_WRITE_OPENAPI=1 cargo test -p meridian-server --lib openapi` and commit it"
        );
    }

    #[test]
    fn statuses_become_json_with_their_detail() {
        let detail = pb::ErrorDetail {
            kind: Some(pb::error_detail::Kind::InvalidArgument(
                pb::InvalidArgument {
                    rule: "path".into(),
                    field: "key".into(),
                },
            )),
        };
        let s = tonic::Status::with_details(
            tonic::Code::InvalidArgument,
            "bad key",
            prost::Message::encode_to_vec(&detail).into(),
        );
        let r = status_response(&s);
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = status_response(&tonic::Status::unavailable("no leader"));
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let r = status_response(&tonic::Status::permission_denied("no"));
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let stale: tonic::Status = crate::error::Error::StaleBound {
            group: 1,
            label: "us-east (g1)".into(),
            lag_ms: 30,
            max_lag_ms: 1,
        }
        .into();
        assert_eq!(
            stale.code(),
            tonic::Code::Unavailable,
            "gRPC clients retry elsewhere"
        );
        assert_eq!(
            status_response(&stale).status(),
            StatusCode::PRECONDITION_FAILED
        );
    }
}
