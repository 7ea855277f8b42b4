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

    /// Passed through, so that h2 hands a frame's header and payload over in one call: over
    /// TLS that is one record (sealed once, one system call) instead of one per piece.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

/// How many times a [`Coalesce`] lets the runtime run before a flush writes (two measured
/// worse than one over TLS: docs/benchmarks.md, 2026-12-05 21:2x UTC).
const COALESCE_YIELDS: u8 = 1;

/// Most bytes a [`Coalesce`] holds before it writes them out.
pub const COALESCE_BYTES_MAX: usize = 64 * 1024;

/// A server connection that gathers what h2 writes until h2 flushes, and at a flush lets the
/// runtime run the other ready tasks once before it writes: answers that became ready in the
/// meantime (other streams of the same connection) join the same write — one TLS record sealed
/// and one system call for several answers instead of one each. When nothing else is ready the
/// write goes out at once, so an idle connection's latency is unchanged. Holds at most
/// [`COALESCE_BYTES_MAX`] bytes; a larger write goes straight through.
pub struct Coalesce<T> {
    inner: T,
    buf: Vec<u8>,
    /// How many times the current flush let the runtime run.
    yielded: u8,
}

impl<T> Coalesce<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            yielded: 0,
        }
    }
}

impl<T: AsyncWrite + Unpin> Coalesce<T> {
    /// Writes out everything held.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.buf.is_empty() {
            let n = match Pin::new(&mut self.inner).poll_write(cx, &self.buf) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.buf.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if !this.buf.is_empty() && this.buf.len() + len > COALESCE_BYTES_MAX {
            match this.poll_drain(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if this.buf.is_empty() && len >= COALESCE_BYTES_MAX {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        for b in bufs {
            this.buf.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.buf.is_empty() && this.yielded < COALESCE_YIELDS {
            this.yielded += 1;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        match this.poll_drain(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        this.yielded = 0;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.poll_drain(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<T: Connected> Connected for Coalesce<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
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

    /// Writes wait for a flush; the flush lets the runtime run once (Pending, woken at once),
    /// then everything written meanwhile goes out in one write; a write larger than the limit
    /// goes straight through.
    #[tokio::test]
    async fn coalesce_holds_writes_until_the_second_poll_of_a_flush() {
        use std::sync::Mutex;
        use tokio::io::AsyncWriteExt;
        struct Calls(Arc<Mutex<Vec<usize>>>);
        impl AsyncWrite for Calls {
            fn poll_write(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                self.0.lock().expect("calls").push(buf.len());
                Poll::Ready(Ok(buf.len()))
            }
            fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
            fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
        }
        let calls = Arc::new(Mutex::new(Vec::new()));
        let mut c = Coalesce::new(Calls(calls.clone()));
        c.write_all(b"answer one").await.expect("write");
        c.write_all(b"answer two").await.expect("write");
        assert!(
            calls.lock().expect("calls").is_empty(),
            "held until a flush"
        );
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(
            Pin::new(&mut c).poll_flush(&mut cx).is_pending(),
            "yields once"
        );
        c.write_all(b"answer three").await.expect("write");
        assert!(matches!(
            Pin::new(&mut c).poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(
            *calls.lock().expect("calls"),
            vec![32],
            "three answers, one write"
        );
        let big = vec![7u8; COALESCE_BYTES_MAX];
        c.write_all(&big).await.expect("write");
        assert_eq!(*calls.lock().expect("calls"), vec![32, COALESCE_BYTES_MAX]);
        c.flush().await.expect("an empty flush does not wait");
    }

    /// A boxed connection writes a frame's pieces in one call, as its inner stream can
    /// (before, h2 saw a non-vectored stream and wrote each piece as its own TLS record).
    #[tokio::test]
    async fn a_boxed_stream_takes_vectored_writes_whole() {
        use std::sync::Mutex;
        use tokio::io::AsyncWriteExt;
        /// Records each write call's bytes; vectored, like a TCP or TLS stream.
        struct Counting(Arc<Mutex<Vec<Vec<u8>>>>);
        impl AsyncRead for Counting {
            fn poll_read(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                _: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
        }
        impl AsyncWrite for Counting {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
            }
            fn poll_write_vectored(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                let call: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
                let n = call.len();
                self.0.lock().expect("calls").push(call);
                Poll::Ready(Ok(n))
            }
            fn is_write_vectored(&self) -> bool {
                true
            }
            fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
            fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
        }
        let calls = Arc::new(Mutex::new(Vec::new()));
        let mut boxed = BoxedIo::new(Counting(calls.clone()));
        assert!(boxed.is_write_vectored());
        let pieces = [
            io::IoSlice::new(b"frame-header"),
            io::IoSlice::new(b"payload"),
        ];
        let n = boxed.write_vectored(&pieces).await.expect("write");
        assert_eq!(n, 19);
        let calls = calls.lock().expect("calls").clone();
        assert_eq!(
            calls,
            vec![b"frame-headerpayload".to_vec()],
            "one write for both"
        );
    }
}
