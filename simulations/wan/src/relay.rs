//! The relay: accepts connections, dials the target, and pumps each direction through a delay
//! line.
//!
//! A pump is a reader and a writer joined by a bounded queue. The reader stamps each chunk with
//! its departure time (`arrival + one_way + jitter`, after serialization at the bandwidth cap,
//! never earlier than the previous chunk's) and the writer sleeps until then. A full queue or
//! byte budget stops the reader, so the sender sees ordinary TCP backpressure.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{sleep, sleep_until, timeout, Instant};

use crate::link::{ConnectionGuard, Link, LinkState};
use crate::{LinkSpec, Wan, WanError};

/// How long a relayed connection waits for its target to accept before giving up.
const CONNECT_TIMEOUT_MS: u64 = 5_000;
const CHUNK_BYTES_MAX: usize = 64 * 1024;
/// Per direction per connection: bytes read but not yet delivered.
const IN_FLIGHT_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Per direction per connection: chunks read but not yet delivered.
const IN_FLIGHT_CHUNKS_MAX: usize = 1024;
/// Per relay: live plus blackholed connections.
const CONNECTIONS_MAX: usize = 4096;
/// Per relay: connections accepted during a cut and held open until the heal.
const HELD_CONNECTIONS_MAX: usize = 1024;
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF_MS: u64 = 50;
/// Any single delay component is clamped to this, so no schedule overflows the clock.
const DELAY_MAX: Duration = Duration::from_secs(24 * 3600);

/// A running relay. Dropping it (or calling [`Relay::stop`]) stops accepting and closes every
/// connection it relays or holds.
pub struct Relay {
    pub local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Relay {
    pub fn stop(self) {}
}

impl Drop for Relay {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection task.
        self.task.abort();
    }
}

impl Wan {
    /// Starts a relay listening on `listen` (port 0 allowed) that forwards each accepted
    /// connection to `target`, delaying both directions per the `from_region <-> to_region`
    /// link, which must have been declared with [`Wan::set_link`].
    pub async fn relay(
        self: &Arc<Self>,
        listen: SocketAddr,
        from_region: &str,
        to_region: &str,
        target: SocketAddr,
    ) -> Result<Relay, WanError> {
        let link = self.link(from_region, to_region)?;
        let listener = TcpListener::bind(listen).await?;
        let local_addr = listener.local_addr()?;
        tracing::debug!(%local_addr, %target, from_region, to_region, "relay started");
        let task = tokio::spawn(accept_loop(listener, link, target));
        Ok(Relay { local_addr, task })
    }
}

async fn accept_loop(listener: TcpListener, link: Arc<Link>, target: SocketAddr) {
    let mut tasks = JoinSet::new();
    let held = Arc::new(AtomicUsize::new(0));
    loop {
        tokio::select! {
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = done {
                    tracing::warn!(%target, "relay connection task failed: {e}");
                }
            }
            accepted = listener.accept() => {
                let (inbound, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(%target, "relay accept failed: {e}");
                        sleep(Duration::from_millis(ACCEPT_ERROR_BACKOFF_MS)).await;
                        continue;
                    }
                };
                if tasks.len() >= CONNECTIONS_MAX {
                    tracing::warn!(%peer, %target, "relay full ({CONNECTIONS_MAX}); closing");
                    continue;
                }
                let mut rx = link.state.subscribe();
                let (cut, epoch) = {
                    let state = rx.borrow_and_update();
                    (state.cut, state.epoch)
                };
                if !cut {
                    tasks.spawn(connection(inbound, peer, target, link.clone(), rx, epoch));
                } else if held.load(Ordering::Relaxed) < HELD_CONNECTIONS_MAX {
                    tracing::debug!(%peer, %target, "link cut; holding connection");
                    let guard = HeldGuard::new(held.clone());
                    tasks.spawn(async move {
                        let _held = (inbound, guard);
                        epoch_changed(rx, epoch).await;
                    });
                } else {
                    tracing::debug!(%peer, %target, "link cut and hold list full; closing");
                }
            }
        }
    }
}

struct HeldGuard(Arc<AtomicUsize>);

impl HeldGuard {
    fn new(count: Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        HeldGuard(count)
    }
}

impl Drop for HeldGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Resolves on the first cut/heal transition after `epoch`, or if the link is gone.
async fn epoch_changed(mut rx: watch::Receiver<LinkState>, epoch: u64) {
    let _ = rx.wait_for(|s| s.epoch != epoch).await;
}

async fn connection(
    inbound: TcpStream,
    peer: SocketAddr,
    target: SocketAddr,
    link: Arc<Link>,
    rx: watch::Receiver<LinkState>,
    epoch: u64,
) {
    tokio::select! {
        result = relay_connection(inbound, target, &link) => match result {
            Ok(()) => tracing::debug!(%peer, %target, "relayed connection closed"),
            Err(e) => tracing::debug!(%peer, %target, "relayed connection ended: {e}"),
        },
        () = epoch_changed(rx, epoch) => {
            tracing::debug!(%peer, %target, "link cut; connection closed");
        }
    }
}

async fn relay_connection(
    mut inbound: TcpStream,
    target: SocketAddr,
    link: &Arc<Link>,
) -> io::Result<()> {
    let connect = TcpStream::connect(target);
    let mut outbound = match timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), connect).await {
        Ok(result) => result?,
        Err(_) => {
            let msg = format!("target {target} did not accept within {CONNECT_TIMEOUT_MS} ms");
            return Err(io::Error::new(io::ErrorKind::TimedOut, msg));
        }
    };
    inbound.set_nodelay(true)?;
    outbound.set_nodelay(true)?;
    let _counted = ConnectionGuard::new(link.clone());
    let (in_read, in_write) = inbound.split();
    let (out_read, out_write) = outbound.split();
    tokio::try_join!(
        pump(in_read, out_write, link),
        pump(out_read, in_write, link)
    )?;
    Ok(())
}

struct Chunk {
    departure: Instant,
    bytes: Vec<u8>,
    _budget: OwnedSemaphorePermit,
}

/// Copies `reader` to `writer` through the link's delay line, then half-closes `writer`.
async fn pump<R, W>(mut reader: R, mut writer: W, link: &Link) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let budget = Arc::new(Semaphore::new(IN_FLIGHT_BYTES_MAX));
    let (tx, mut rx) = mpsc::channel::<Chunk>(IN_FLIGHT_CHUNKS_MAX);
    let read = async move {
        let mut schedule = Schedule::default();
        let mut buf = vec![0u8; CHUNK_BYTES_MAX];
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                return Ok(()); // dropping `tx` lets the writer drain, then half-close
            }
            let spec = link.state.borrow().spec.clone();
            let departure = schedule.next(Instant::now(), n, &spec);
            // n <= CHUNK_BYTES_MAX, far below u32::MAX.
            let permit = budget.clone().acquire_many_owned(n as u32).await;
            let permit = permit.map_err(|_| io::Error::other("byte budget closed"))?;
            let bytes = buf[..n].to_vec();
            let chunk = Chunk {
                departure,
                bytes,
                _budget: permit,
            };
            if tx.send(chunk).await.is_err() {
                return Ok(()); // the writer failed; try_join reports its error
            }
        }
    };
    let write = async move {
        while let Some(chunk) = rx.recv().await {
            sleep_until(chunk.departure).await;
            writer.write_all(&chunk.bytes).await?;
            link.bytes
                .fetch_add(chunk.bytes.len() as u64, Ordering::Relaxed);
        }
        writer.shutdown().await
    };
    tokio::try_join!(read, write)?;
    Ok(())
}

/// Departure times for one direction: a FIFO wire of finite bandwidth followed by a delay.
#[derive(Default)]
struct Schedule {
    wire_free: Option<Instant>,
    last_departure: Option<Instant>,
}

impl Schedule {
    fn next(&mut self, now: Instant, len: usize, spec: &LinkSpec) -> Instant {
        let mut sent = now;
        // A zero cap would stall the link forever; treat it as unlimited like `None`.
        if let Some(bw) = spec.bandwidth_bytes_per_sec.filter(|bw| *bw > 0) {
            let start = self.wire_free.map_or(now, |free| free.max(now));
            let serialize = Duration::from_secs_f64(len as f64 / bw as f64).min(DELAY_MAX);
            sent = start + serialize;
            self.wire_free = Some(sent);
        }
        let departure = sent + spec.one_way.min(DELAY_MAX) + jitter(spec.jitter.min(DELAY_MAX));
        let departure = self
            .last_departure
            .map_or(departure, |last| last.max(departure));
        self.last_departure = Some(departure);
        departure
    }
}

fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    // max <= DELAY_MAX, so its nanoseconds fit in u64.
    let nanos = rand::thread_rng().gen_range(0..=max.as_nanos() as u64);
    Duration::from_nanos(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(one_way_ms: u64, bw: Option<u64>) -> LinkSpec {
        LinkSpec {
            one_way: Duration::from_millis(one_way_ms),
            jitter: Duration::ZERO,
            bandwidth_bytes_per_sec: bw,
        }
    }

    /// The schedule adds the one-way delay, serializes back-to-back chunks at the cap, and
    /// never lets a later chunk depart before an earlier one.
    #[test]
    fn schedule_delays_serializes_and_keeps_order() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        assert_eq!(
            s.next(t0, 10, &spec(30, None)),
            t0 + Duration::from_millis(30)
        );
        // A shorter delay for a later chunk must not overtake the earlier one.
        assert_eq!(
            s.next(t0, 10, &spec(5, None)),
            t0 + Duration::from_millis(30)
        );

        let mut s = Schedule::default();
        let cap = spec(0, Some(1000));
        assert_eq!(s.next(t0, 100, &cap), t0 + Duration::from_millis(100));
        assert_eq!(s.next(t0, 100, &cap), t0 + Duration::from_millis(200));
        // After the wire has been idle, serialization starts from the arrival time.
        let later = t0 + Duration::from_secs(1);
        assert_eq!(s.next(later, 100, &cap), later + Duration::from_millis(100));
    }

    /// Absurd specs are clamped instead of overflowing the clock.
    #[test]
    fn schedule_survives_absurd_specs() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        let absurd = LinkSpec {
            one_way: Duration::MAX,
            jitter: Duration::MAX,
            bandwidth_bytes_per_sec: Some(1),
        };
        let d = s.next(t0, CHUNK_BYTES_MAX, &absurd);
        assert!(d <= t0 + DELAY_MAX * 3);
        let zero_cap = spec(0, Some(0));
        assert!(s.next(t0, 10, &zero_cap) >= d);
    }
}
