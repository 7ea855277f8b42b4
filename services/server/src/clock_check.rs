//! Whether this node's clock agrees with its peers' (docs/closed-timestamps.md): every
//! [`PROBE_INTERVAL`] it asks each other node of the topology for its physical time and keeps
//! the offsets in a [`ClockOffsets`]; a router whose clock is beyond the maximum offset from a
//! majority of them refuses reads by timestamp, saying so, instead of answering.

use meridian_proto::peer::forward_client::ForwardClient;
use meridian_proto::peer::ClockRequest;
use meridian_proto::PEER_MESSAGE_BYTES;
use meridian_router::{probe_agrees, ClockOff, ClockOffsets};
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

    /// The peers whose clocks agree with the majority's, when this node's clock is off;
    /// `None` while it agrees.
    pub fn off(&self) -> Option<(ClockOff, Vec<u64>)> {
        let now = self.now_ms();
        let offsets = self.offsets.lock().unwrap_or_else(|p| p.into_inner());
        offsets
            .check(now)
            .err()
            .map(|off| (off, offsets.agreeing(now)))
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
/// flight per peer, each within [`PROBE_WAIT`]. With `leads` (the cluster reads by closed
/// timestamps), a node whose clock is off hands the leadership of every group it leads to a
/// voter whose clock agrees with the majority's: a leader stamps commit timestamps from its
/// clock, and one a minute ahead would carry its group's timestamps (and every session that
/// reads them) a minute into the future.
pub async fn run(
    check: Arc<ClockCheck>,
    clock: Arc<NodeClock>,
    pool: Arc<meridian_consensus::PeerPool>,
    peers: Vec<(u64, String)>,
    leads: Option<Arc<meridian_consensus::Host>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let max_offset_us = clock.max_offset_us();
    loop {
        // A wall clock held back since before this round (it jumped ahead) is taken only if
        // most of the cluster (this node and the peers it probes after the jump) agrees with
        // it: then the jump was a correction. Measurements from before the jump count for
        // nothing here, and what is accepted is the reading the round began with — a jump
        // during the round stays held.
        let held_at_start = clock.held_back_now_us() > 0;
        let round_start = clock.read_wall();
        let probes = peers.iter().map(|(id, addr)| {
            let (check, clock, pool) = (check.clone(), clock.clone(), pool.clone());
            async move {
                let Ok(channel) = pool.channel(addr) else {
                    return false;
                };
                let mut client =
                    ForwardClient::new(channel).max_decoding_message_size(PEER_MESSAGE_BYTES);
                let mut req = tonic::Request::new(ClockRequest {});
                req.set_timeout(PROBE_WAIT);
                let sent = clock.wall_us();
                let start = Instant::now();
                let Ok(Ok(reply)) = tokio::time::timeout(PROBE_WAIT, client.clock(req)).await
                else {
                    return false;
                };
                let (rtt, peer) = (start.elapsed(), reply.get_ref().physical_us);
                check.record(*id, sent, rtt, peer);
                let rtt_us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
                probe_agrees(sent, rtt_us, peer, max_offset_us)
            }
        });
        let round = futures::future::join_all(probes);
        let agreed = tokio::select! {
            answers = round => answers.into_iter().filter(|a| *a).count(),
            _ = shutdown.changed() => return,
        };
        match check.off() {
            Some((off, agreeing)) => {
                let held = clock.held_back_us();
                if held > 0 {
                    tracing::warn!(
                        held_back_us = held,
                        "{off}; the wall clock jumped ahead of the monotonic clock's pace: \
                         timestamps follow the monotonic clock until it agrees again"
                    );
                }
                if let Some(host) = &leads {
                    hand_over(host, &off, &agreeing);
                }
            }
            None if held_at_start && (agreed + 1) * 2 > peers.len() + 1 => {
                tracing::info!(
                    held_back_us = clock.held_back_us(),
                    "the wall clock stepped ahead and most of the cluster agrees with it: following it"
                );
                clock.accept_wall(round_start);
            }
            None => {}
        }
        tokio::select! {
            () = tokio::time::sleep(PROBE_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Asks each group `host` leads to transfer its leadership to the first of its voters in
/// `agreeing` (peers whose clocks agree with the majority's); a group with none keeps its
/// leader (its reads by timestamp are refused meanwhile, never served wrong). Not awaited:
/// the next probe round asks again if the transfer did not happen.
fn hand_over(host: &meridian_consensus::Host, off: &ClockOff, agreeing: &[u64]) {
    use openraft::async_runtime::watch::WatchReceiver;
    for (group, h) in host.groups() {
        let to = {
            let m = h.raft.metrics();
            let m = m.borrow_watched();
            if m.state != openraft::ServerState::Leader {
                continue;
            }
            let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
            agreeing.iter().copied().find(|id| voters.contains(id))
        };
        let Some(to) = to else {
            tracing::warn!(
                group = group.0,
                "{off}; no voter of this group agrees with the majority's clock: it keeps its \
                 leader"
            );
            continue;
        };
        tracing::warn!(
            group = group.0,
            to,
            "{off}; handing this group's leadership to node {to}"
        );
        tokio::spawn(async move {
            if let Err(e) = h.transfer_leadership(to).await {
                tracing::warn!(group = group.0, to, "leadership transfer failed: {e}");
            }
        });
    }
}
