//! The transport seam: where a node's connections come from and how a client or peer dials.
//!
//! In production both are TCP (tonic's own listener and connector). Deterministic simulation
//! (turmoil) injects its simulated sockets here: a [`Dialer`] for outgoing connections and an
//! [`Incoming`] stream for accepted ones. Nothing above this layer knows which is in use.

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use hyper_util::rt::TokioIo;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint};

/// A byte stream a connection runs over.
pub trait Conn: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Conn for T {}

/// Any [`Conn`], boxed; tonic's server accepts it (no peer address is reported).
pub struct BoxedIo(Box<dyn Conn>);

impl BoxedIo {
    pub fn new(io: impl Conn) -> Self {
        Self(Box::new(io))
    }
}

impl AsyncRead for BoxedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for BoxedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

impl Connected for BoxedIo {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

/// Accepted connections of an injected listener.
pub type Incoming = BoxStream<'static, io::Result<BoxedIo>>;

type DialFn = dyn Fn(String) -> BoxFuture<'static, io::Result<BoxedIo>> + Send + Sync;

/// Opens a connection to `host:port`. Cheap to clone.
#[derive(Clone)]
pub struct Dialer(Arc<DialFn>);

impl fmt::Debug for Dialer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Dialer")
    }
}

impl Dialer {
    pub fn new(
        f: impl Fn(String) -> BoxFuture<'static, io::Result<BoxedIo>> + Send + Sync + 'static,
    ) -> Self {
        Self(Arc::new(f))
    }

    /// A lazily connected channel to `addr` with `endpoint`'s settings, dialed through `self`
    /// (on every reconnect).
    pub fn channel(&self, endpoint: Endpoint, addr: &str) -> Channel {
        let dial = self.0.clone();
        let addr = addr.to_string();
        endpoint.connect_with_connector_lazy(tower::service_fn(
            move |_: tonic::codegen::http::Uri| {
                let fut = dial(addr.clone());
                async move {
                    fut.await
                        .map(TokioIo::new)
                        .map_err(|e| io::Error::new(e.kind(), NotConnected(e)))
                }
            },
        ))
    }
}

/// A dial that failed (TCP connect, TLS handshake, or its deadline): no request can have gone
/// out on a connection that was never set up, so a call that failed with it is safe to retry.
#[derive(Debug)]
struct NotConnected(io::Error);

impl fmt::Display for NotConnected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for NotConnected {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// The io errors in `status`'s chain of causes, outermost first.
fn io_errors(status: &tonic::Status) -> impl Iterator<Item = &io::Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    std::iter::from_fn(move || {
        while let Some(e) = source {
            source = e.source();
            if let Some(io) = e.downcast_ref::<io::Error>() {
                return Some(io);
            }
        }
        None
    })
}

/// Whether a failed call surely never reached the service: the connection to it could not be
/// made. Only then may a write be retried blindly. tonic reports a connection that broke
/// *after* the request went out as `Unavailable` too, so the code alone does not tell.
pub fn never_sent(status: &tonic::Status) -> bool {
    if status.code() != tonic::Code::Unavailable {
        return false;
    }
    let refused = io_errors(status).any(|io| {
        io.get_ref().is_some_and(|e| e.is::<NotConnected>())
            || matches!(
                io.kind(),
                io::ErrorKind::ConnectionRefused | io::ErrorKind::AddrNotAvailable
            )
    });
    if refused {
        return true;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        if e.to_string().contains("connect") {
            return true;
        }
        source = e.source();
    }
    false
}

/// Whether the connection failed in its TLS handshake: a certificate that did not verify, on
/// either side (a TLS dialer reports that as `PermissionDenied`). Trying again will not help.
pub fn handshake_refused(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable
        && io_errors(status).any(|io| io.kind() == io::ErrorKind::PermissionDenied)
}

/// Whether the service itself answered `Unavailable` with Meridian's typed detail: it refused
/// before proposing anything (no leader, shutting down before the proposal was queued, …).
pub fn refused_by_service(status: &tonic::Status) -> bool {
    use prost::Message;
    status.code() == tonic::Code::Unavailable
        && crate::kv::ErrorDetail::decode(status.details())
            .ok()
            .and_then(|d| d.kind)
            .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call whose connection could not be set up (here: a handshake that fails as rustls
    /// fails on a peer that is not speaking TLS) never reached the service, whatever the dial
    /// error's kind; a bare Unavailable does not say so.
    #[tokio::test]
    async fn a_failed_dial_is_never_sent() {
        for kind in [
            io::ErrorKind::InvalidData,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::UnexpectedEof,
            io::ErrorKind::TimedOut,
        ] {
            let dialer = Dialer::new(move |addr| {
                Box::pin(async move {
                    Err(io::Error::new(
                        kind,
                        format!("TLS handshake with {addr} failed"),
                    ))
                })
            });
            let endpoint = Endpoint::from_static("http://127.0.0.1:1")
                .timeout(std::time::Duration::from_secs(5));
            let mut client =
                crate::kv::kv_client::KvClient::new(dialer.channel(endpoint, "127.0.0.1:1"));
            let status = client
                .get(crate::kv::GetRequest::default())
                .await
                .expect_err("no connection");
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
            assert!(never_sent(&status), "{kind:?}: {status:?}");
            assert!(
                !handshake_refused(&status),
                "{kind:?} is no refused handshake"
            );
        }
        assert!(!never_sent(&tonic::Status::unavailable(
            "connection reset after the request"
        )));
    }
}
