//! The admin line protocol: the client sends one command line, the server answers one line
//! starting with `ok` or `error: `. A connection may carry several commands in turn.
//!
//! Commands: `cut A B`, `heal A B`, `cut-region R`, `heal-region R`, `heal-all`, `status`.
//! `status` answers `ok ` followed by entries separated by `; `, each like
//! `us-east<->eu-west rtt=75ms cut=false conns=3 bytes=1024` (plus `jitter=` and `bw=` when set).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;

use crate::{LinkStatus, Wan, WanError};

const COMMAND_BYTES_MAX: u64 = 1024;
/// Status lines grow with the number of links; this leaves room for hundreds.
const REPLY_BYTES_MAX: u64 = 256 * 1024;
const CONTROL_CONNECTIONS_MAX: usize = 64;
/// An admin connection that sends nothing for this long is closed.
const CONTROL_IDLE_TIMEOUT_MS: u64 = 30_000;
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF_MS: u64 = 50;
const USAGE: &str =
    "expected one of: cut A B, heal A B, cut-region R, heal-region R, heal-all, status";

/// Serves the admin protocol on `listen` (port 0 allowed). Returns the bound address and the
/// server task; aborting the task closes the listener and every admin connection.
pub async fn serve_control(
    wan: Arc<Wan>,
    listen: SocketAddr,
) -> Result<(SocketAddr, JoinHandle<()>), WanError> {
    let listener = TcpListener::bind(listen).await?;
    let local_addr = listener.local_addr()?;
    tracing::debug!(%local_addr, "wan control listening");
    Ok((local_addr, tokio::spawn(accept_loop(listener, wan))))
}

async fn accept_loop(listener: TcpListener, wan: Arc<Wan>) {
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) if tasks.len() < CONTROL_CONNECTIONS_MAX => {
                    tasks.spawn(serve_connection(stream, peer, wan.clone()));
                }
                Ok((_, peer)) => tracing::warn!(%peer, "control connection refused: too many"),
                Err(e) => {
                    tracing::warn!("control accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_BACKOFF_MS)).await;
                }
            },
        }
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, wan: Arc<Wan>) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    loop {
        let idle = Duration::from_millis(CONTROL_IDLE_TIMEOUT_MS);
        let line = match timeout(idle, read_line(&mut read, COMMAND_BYTES_MAX)).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) | Err(_) => return,
            Ok(Err(e)) => {
                let reply = error_line(&e);
                let _ = timeout(idle, write.write_all(reply.as_bytes())).await;
                return;
            }
        };
        let reply = match execute(&wan, &line) {
            Ok(text) if text.is_empty() => "ok\n".to_owned(),
            Ok(text) => format!("ok {text}\n"),
            Err(e) => error_line(&e),
        };
        tracing::debug!(%peer, command = line.trim(), reply = reply.trim_end(), "control");
        match timeout(idle, write.write_all(reply.as_bytes())).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return,
        }
    }
}

fn error_line(e: &WanError) -> String {
    match e {
        // The `error: ` prefix already says where it came from.
        WanError::Control(msg) => format!("error: {msg}\n"),
        other => format!("error: {other}\n"),
    }
}

/// Reads one `\n`-terminated UTF-8 line of at most `max` bytes; `None` at a clean EOF.
async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: u64,
) -> Result<Option<String>, WanError> {
    let mut line = String::new();
    let n = reader.take(max).read_line(&mut line).await?;
    if n == 0 {
        return Ok(None);
    }
    if !line.ends_with('\n') {
        let msg = if n as u64 >= max {
            format!("line longer than {max} bytes")
        } else {
            "connection closed mid-line".to_owned()
        };
        return Err(WanError::Control(msg));
    }
    Ok(Some(line))
}

fn execute(wan: &Wan, line: &str) -> Result<String, WanError> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["cut", a, b] => wan.cut(a, b).map(|()| String::new()),
        ["heal", a, b] => wan.heal(a, b).map(|()| String::new()),
        ["cut-region", r] => wan.cut_region(r).map(|()| String::new()),
        ["heal-region", r] => wan.heal_region(r).map(|()| String::new()),
        ["heal-all"] => {
            wan.heal_all();
            Ok(String::new())
        }
        ["status"] => Ok(status_line(&wan.links())),
        _ => Err(WanError::Control(format!(
            "malformed command {:?}; {USAGE}",
            line.trim()
        ))),
    }
}

fn status_line(links: &[LinkStatus]) -> String {
    let mut out = String::new();
    for (i, l) in links.iter().enumerate() {
        let sep = if i == 0 { "" } else { "; " };
        let rtt_ms = l.spec.one_way.saturating_mul(2).as_millis();
        let _ = write!(out, "{sep}{}<->{} rtt={rtt_ms}ms", l.a, l.b);
        if !l.spec.jitter.is_zero() {
            let _ = write!(out, " jitter={}ms", l.spec.jitter.as_millis());
        }
        if let Some(bw) = l.spec.bandwidth_bytes_per_sec {
            let _ = write!(out, " bw={bw}B/s");
        }
        let _ = write!(
            out,
            " cut={} conns={} bytes={}",
            l.cut, l.connections, l.bytes
        );
    }
    out
}

/// Sends one command to the control server at `addr` and waits at most `deadline` for the
/// answer. Returns the answer without its `ok` prefix, or [`WanError::Control`] with the
/// server's error text.
pub async fn control(addr: &str, command: &str, deadline: Duration) -> Result<String, WanError> {
    if command.contains(['\n', '\r']) {
        return Err(WanError::Control(
            "command must be a single line".to_owned(),
        ));
    }
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(format!("{command}\n").as_bytes()).await?;
        let mut reader = BufReader::new(stream);
        read_line(&mut reader, REPLY_BYTES_MAX).await
    };
    let reply = match timeout(deadline, exchange).await {
        Ok(Ok(Some(reply))) => reply,
        Ok(Ok(None)) => {
            let msg = format!("{addr} closed the connection without answering {command:?}");
            return Err(WanError::Control(msg));
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            let msg = format!("no answer from {addr} to {command:?} within {deadline:?}");
            return Err(WanError::Control(msg));
        }
    };
    let reply = reply.trim_end();
    if let Some(rest) = reply.strip_prefix("error: ") {
        return Err(WanError::Control(rest.to_owned()));
    }
    match reply.strip_prefix("ok") {
        Some(rest) if rest.is_empty() || rest.starts_with(' ') => Ok(rest.trim_start().to_owned()),
        _ => Err(WanError::Control(format!("unexpected reply {reply:?}"))),
    }
}
