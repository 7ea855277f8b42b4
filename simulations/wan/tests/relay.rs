//! Relays between real loopback sockets: latency, integrity, bandwidth, cut and heal.
// Helpers outside #[test] fns are tests too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meridian_wan::{LinkSpec, Relay, Wan, WanError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Instant};

const LOOPBACK: &str = "127.0.0.1:0";
/// Upper bound for any single test step, so a hang fails instead of blocking CI.
const STEP: Duration = Duration::from_secs(10);

/// An echo server on an OS-assigned loopback port; stops when the test runtime ends.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind(LOOPBACK).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// A WAN with one link `a <-> b` and a relay from a to an echo server in b.
async fn relayed_echo(spec: LinkSpec) -> (Arc<Wan>, Relay) {
    let wan = Wan::new();
    wan.set_link("a", "b", spec);
    let echo = echo_server().await;
    let relay = wan
        .relay(LOOPBACK.parse().unwrap(), "a", "b", echo)
        .await
        .unwrap();
    (wan, relay)
}

async fn round_trip(stream: &mut TcpStream, msg: &[u8]) -> Duration {
    let start = Instant::now();
    stream.write_all(msg).await.unwrap();
    let mut buf = vec![0u8; msg.len()];
    timeout(STEP, stream.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(buf, msg);
    start.elapsed()
}

/// The minimum of several small-message round trips through a relay.
async fn min_round_trip(spec: LinkSpec) -> Duration {
    let (_wan, relay) = relayed_echo(spec).await;
    let mut stream = TcpStream::connect(relay.local_addr).await.unwrap();
    let mut best = Duration::MAX;
    for _ in 0..5 {
        best = best.min(round_trip(&mut stream, b"ping").await);
    }
    best
}

/// A 30 ms one-way link adds at least 60 ms to a round trip, and not grossly more.
#[tokio::test]
async fn round_trip_pays_both_one_way_delays() {
    let rtt = min_round_trip(LinkSpec::from_rtt_ms(60)).await;
    assert!(rtt >= Duration::from_millis(60), "rtt {rtt:?} below 60 ms");
    assert!(
        rtt < Duration::from_millis(250),
        "rtt {rtt:?} far above 60 ms"
    );
}

/// A zero link adds no noticeable delay.
#[tokio::test]
async fn zero_link_is_fast() {
    let rtt = min_round_trip(LinkSpec::from_rtt_ms(0)).await;
    assert!(
        rtt < Duration::from_millis(30),
        "rtt {rtt:?} on a zero link"
    );
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// Sends `data` through the relay to the echo server, half-closes, and returns what came back.
async fn echo_through(relay: &Relay, data: Vec<u8>) -> Vec<u8> {
    let stream = TcpStream::connect(relay.local_addr).await.unwrap();
    let (mut r, mut w) = stream.into_split();
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    timeout(STEP, r.read_to_end(&mut back))
        .await
        .unwrap()
        .unwrap();
    timeout(STEP, writer).await.unwrap().unwrap();
    back
}

/// Jitter delays chunks by different amounts but never reorders or loses bytes; the link
/// counts every relayed byte.
#[tokio::test]
async fn jitter_preserves_bytes_and_order() {
    let spec = LinkSpec {
        one_way: Duration::from_millis(5),
        jitter: Duration::from_millis(5),
        bandwidth_bytes_per_sec: None,
    };
    let (wan, relay) = relayed_echo(spec).await;
    let data = pattern(5 * 1024 * 1024);
    let back = echo_through(&relay, data.clone()).await;
    assert_eq!(back.len(), data.len());
    assert!(back == data, "echoed bytes differ from the sent pattern");
    assert_eq!(wan.links()[0].bytes, 2 * data.len() as u64);
}

/// 1 MB through a 2 MB/s cap takes at least half a second.
#[tokio::test]
async fn bandwidth_cap_throttles() {
    let spec = LinkSpec {
        one_way: Duration::ZERO,
        jitter: Duration::ZERO,
        bandwidth_bytes_per_sec: Some(2_000_000),
    };
    let (_wan, relay) = relayed_echo(spec).await;
    let data = pattern(1_000_000);
    let start = Instant::now();
    let back = echo_through(&relay, data.clone()).await;
    let took = start.elapsed();
    assert!(back == data, "echoed bytes differ from the sent pattern");
    assert!(
        took >= Duration::from_millis(450),
        "1 MB at 2 MB/s took {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "1 MB at 2 MB/s took {took:?}"
    );
}

/// Reads until EOF or error; panics if the peer keeps the connection open for `within`.
async fn assert_closed(stream: &mut TcpStream, within: Duration) {
    let mut buf = [0u8; 64];
    match timeout(within, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("expected a closed connection, read {n} bytes"),
        Err(_) => panic!("connection still open after {within:?}"),
    }
}

/// A cut closes live connections at once, blackholes new ones until the heal (which closes
/// them), and after the heal traffic flows again.
#[tokio::test]
async fn cut_closes_blackholes_and_heal_restores() {
    let (wan, relay) = relayed_echo(LinkSpec::from_rtt_ms(10)).await;
    let mut live = TcpStream::connect(relay.local_addr).await.unwrap();
    round_trip(&mut live, b"before").await;
    assert_eq!(wan.links()[0].connections, 1);

    wan.cut("b", "a").unwrap();
    assert_closed(&mut live, Duration::from_secs(1)).await;
    let status = &wan.links()[0];
    assert!(status.cut);

    let mut held = TcpStream::connect(relay.local_addr).await.unwrap();
    held.write_all(b"lost").await.unwrap();
    let mut buf = [0u8; 4];
    let read = timeout(Duration::from_millis(300), held.read(&mut buf)).await;
    assert!(read.is_err(), "a blackholed connection answered: {read:?}");
    assert_eq!(wan.links()[0].connections, 0);

    wan.heal("a", "b").unwrap();
    assert_closed(&mut held, Duration::from_secs(1)).await;
    let mut fresh = TcpStream::connect(relay.local_addr).await.unwrap();
    round_trip(&mut fresh, b"after").await;
    assert!(!wan.links()[0].cut);
}

/// Stopping a relay closes its connections and its listener.
#[tokio::test]
async fn stop_closes_connections() {
    let (_wan, relay) = relayed_echo(LinkSpec::from_rtt_ms(0)).await;
    let addr = relay.local_addr;
    let mut live = TcpStream::connect(addr).await.unwrap();
    round_trip(&mut live, b"x").await;
    relay.stop();
    assert_closed(&mut live, Duration::from_secs(1)).await;
    // The kernel may complete a handshake before the listener is gone; then it must close.
    if let Ok(mut late) = timeout(STEP, TcpStream::connect(addr)).await.unwrap() {
        assert_closed(&mut late, Duration::from_secs(1)).await;
    }
}

/// A relay needs a declared link, and the error names the links that do exist.
#[tokio::test]
async fn relay_on_undeclared_link_errors() {
    let wan = Wan::new();
    wan.set_link("us-east", "eu-west", LinkSpec::from_rtt_ms(75));
    wan.set_link("x", "x", LinkSpec::from_rtt_ms(1)); // same region: ignored
    let echo = echo_server().await;
    let listen = LOOPBACK.parse().unwrap();
    match wan.relay(listen, "us-east", "ap-south", echo).await {
        Err(WanError::UnknownLink { known, .. }) => assert_eq!(known, "eu-west<->us-east"),
        other => panic!(
            "expected UnknownLink, got {:?}",
            other.map(|r| r.local_addr)
        ),
    }
    assert!(wan.relay(listen, "x", "x", echo).await.is_err());
    // The pair is unordered.
    assert!(wan.relay(listen, "eu-west", "us-east", echo).await.is_ok());
}
