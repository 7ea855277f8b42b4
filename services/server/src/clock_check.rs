//! Whether this node's clock agrees with its peers' (docs/closed-timestamps.md): every
//! [`PROBE_INTERVAL`] it asks each other node of the topology for its physical time and keeps
//! the offsets in a [`ClockOffsets`]; a router whose clock is beyond the maximum offset from a
//! majority of them refuses reads by timestamp, saying so, instead of answering.

use meridian_proto::peer::forward_client::ForwardClient;
use meridian_proto::peer::ClockRequest;
use meridian_proto::PEER_MESSAGE_BYTES;
use meridian_router::{ClockOff, ClockOffsets};
use meridian_types::hlc::NodeClock;
use std::sync::{Arc, Mutex};
use std::time::Duration;
// tokio's clock: the deterministic simulation's virtual time, so a probe's round trip there is
// the simulated one.
use tokio::sync::watch;
use tokio::time::Instant;

/// How often each peer's clock is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// A probe's deadline.
pub const PROBE_WAIT: Duration = Duration::from_secs(2);

/// The offsets measured to this node's peers.
pub struct ClockCheck {
    offsets: Mutex<ClockOffsets>,
    started: Instant,
}

impl ClockCheck {
    pub fn new(max_offset_us: u64) -> Self {
        Self {
            offsets: Mutex::new(ClockOffsets::new(max_offset_us)),
            started: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Refused while this node's clock is beyond the maximum offset from most of its peers.
    pub fn check(&self) -> Result<(), ClockOff> {
        let now = self.now_ms();
        self.offsets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .check(now)
    }

    fn record(&self, peer: u64, sent_physical_us: u64, rtt: Duration, peer_physical_us: u64) {
        let rtt_us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
        let now = self.now_ms();
        self.offsets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(peer, sent_physical_us, rtt_us, peer_physical_us, now);
    }
}

/// Probes `peers` (node id, address) every [`PROBE_INTERVAL`] until shutdown, one probe in
/// flight per peer, each within [`PROBE_WAIT`].
pub async fn run(
    check: Arc<ClockCheck>,
    clock: Arc<NodeClock>,
    pool: Arc<meridian_consensus::PeerPool>,
    peers: Vec<(u64, String)>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let probes = peers.iter().map(|(id, addr)| {
            let (check, clock, pool) = (check.clone(), clock.clone(), pool.clone());
            async move {
                let Ok(channel) = pool.channel(addr) else {
                    return;
                };
                let mut client =
                    ForwardClient::new(channel).max_decoding_message_size(PEER_MESSAGE_BYTES);
                let mut req = tonic::Request::new(ClockRequest {});
                req.set_timeout(PROBE_WAIT);
                let sent = clock.physical_us();
                let start = Instant::now();
                if let Ok(Ok(reply)) = tokio::time::timeout(PROBE_WAIT, client.clock(req)).await {
                    check.record(*id, sent, start.elapsed(), reply.get_ref().physical_us);
                }
            }
        });
        let round = futures::future::join_all(probes);
        tokio::select! {
            _ = round => {}
            _ = shutdown.changed() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(PROBE_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
    }
}
