//! Whether this node's clock agrees with its peers' (docs/closed-timestamps.md, "The clock"):
//! a node measures each peer's clock offset (a probe's answer against the midpoint of its
//! round trip, uncertain by half the round trip) and stops serving reads by timestamp once
//! its clock is beyond the maximum offset from a majority of the peers it measured. No IO: the
//! caller passes the measurements and the monotonic time in.

use std::collections::BTreeMap;

/// How long a measurement counts (monotonic ms): a peer not measured since is left out.
pub const OFFSET_FRESH_MS: u64 = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Measured {
    /// The peer's clock minus this node's (µs): positive when the peer is ahead.
    offset_us: i64,
    /// Half the probe's round trip: the true offset is within this of `offset_us`.
    uncertainty_us: u64,
    at_ms: u64,
}

/// This node's clock is beyond the maximum offset from a majority of its peers.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "this node's clock is off by about {median_offset_us} µs from {off} of the {measured} peers \
     it measured, beyond the maximum clock offset of {max_offset_us} µs: it serves no read by \
     timestamp until the clocks agree again (check NTP/chrony on this node)"
)]
pub struct ClockOff {
    /// The median of the peers' offsets, seen from the peers (this node's clock minus theirs).
    pub median_offset_us: i64,
    pub off: usize,
    pub measured: usize,
    pub max_offset_us: u64,
}

/// Whether one probe leaves the two clocks within `max_offset_us` of each other — not
/// certainly beyond it past the probe's uncertainty (half its round trip), the rule
/// [`ClockOffsets::check`] judges a peer by: sent when this node's clock read
/// `sent_physical_us`, answered after `rtt_us` with the peer's `peer_physical_us`.
pub fn probe_agrees(
    sent_physical_us: u64,
    rtt_us: u64,
    peer_physical_us: u64,
    max_offset_us: u64,
) -> bool {
    let offset = probe_offset(sent_physical_us, rtt_us, peer_physical_us);
    !certainly_beyond(offset.unsigned_abs(), rtt_us / 2, max_offset_us)
}

/// Whether an offset measured as `offset_abs_us`, uncertain by `uncertainty_us`, is beyond
/// `max_offset_us` even at its least: the one rule a peer's clock is judged off by.
fn certainly_beyond(offset_abs_us: u128, uncertainty_us: u64, max_offset_us: u64) -> bool {
    offset_abs_us.saturating_sub(u128::from(uncertainty_us)) > u128::from(max_offset_us)
}

/// The peer's clock minus this node's, from one probe: its answer against the midpoint of the
/// round trip.
fn probe_offset(sent_physical_us: u64, rtt_us: u64, peer_physical_us: u64) -> i128 {
    i128::from(peer_physical_us) - (i128::from(sent_physical_us) + i128::from(rtt_us / 2))
}

/// The latest offset measured to each peer.
#[derive(Clone, Debug)]
pub struct ClockOffsets {
    max_offset_us: u64,
    peers: BTreeMap<u64, Measured>,
}

impl ClockOffsets {
    pub fn new(max_offset_us: u64) -> Self {
        Self {
            max_offset_us,
            peers: BTreeMap::new(),
        }
    }

    /// A probe of `peer` sent when this node's physical clock read `sent_physical_us`,
    /// answered after `rtt_us` (monotonic) with the peer's physical time `peer_physical_us`.
    pub fn record(
        &mut self,
        peer: u64,
        sent_physical_us: u64,
        rtt_us: u64,
        peer_physical_us: u64,
        now_ms: u64,
    ) {
        let offset = probe_offset(sent_physical_us, rtt_us, peer_physical_us);
        let offset_us =
            i64::try_from(offset).unwrap_or(if offset < 0 { i64::MIN } else { i64::MAX });
        self.peers.insert(
            peer,
            Measured {
                offset_us,
                uncertainty_us: rtt_us / 2,
                at_ms: now_ms,
            },
        );
    }

    /// Whether this node's clock may be trusted at monotonic time `now_ms`: refused once a
    /// majority of the peers measured within [`OFFSET_FRESH_MS`] are certainly (past the
    /// probe's uncertainty) further than the maximum offset away. A single peer with a bad
    /// clock is a minority of its peers' measurements, so only the node that is off stops.
    pub fn check(&self, now_ms: u64) -> Result<(), ClockOff> {
        let fresh: Vec<&Measured> = self
            .peers
            .values()
            .filter(|m| m.at_ms.saturating_add(OFFSET_FRESH_MS) >= now_ms)
            .collect();
        let off = fresh
            .iter()
            .filter(|m| {
                certainly_beyond(
                    u128::from(m.offset_us.unsigned_abs()),
                    m.uncertainty_us,
                    self.max_offset_us,
                )
            })
            .count();
        if fresh.is_empty() || off * 2 <= fresh.len() {
            return Ok(());
        }
        let mut offsets: Vec<i64> = fresh.iter().map(|m| m.offset_us).collect();
        offsets.sort_unstable();
        Err(ClockOff {
            median_offset_us: offsets[offsets.len() / 2].saturating_neg(),
            off,
            measured: fresh.len(),
            max_offset_us: self.max_offset_us,
        })
    }

    /// The peers measured within [`OFFSET_FRESH_MS`] whose clocks agree with the majority's:
    /// certainly (past both probes' uncertainty) within the maximum offset of the median
    /// peer's. When this node is off ([`ClockOffsets::check`]) these are the ones fit to take
    /// over what it leads.
    pub fn agreeing(&self, now_ms: u64) -> Vec<u64> {
        let fresh: Vec<(u64, &Measured)> = self
            .peers
            .iter()
            .filter(|(_, m)| m.at_ms.saturating_add(OFFSET_FRESH_MS) >= now_ms)
            .map(|(id, m)| (*id, m))
            .collect();
        let mut offsets: Vec<(i64, u64)> = fresh
            .iter()
            .map(|(_, m)| (m.offset_us, m.uncertainty_us))
            .collect();
        offsets.sort_unstable();
        let Some(&(median, median_uncertainty)) = offsets.get(offsets.len() / 2) else {
            return Vec::new();
        };
        fresh
            .into_iter()
            .filter(|(_, m)| {
                let apart = i128::from(m.offset_us) - i128::from(median);
                let slack = u128::from(m.uncertainty_us) + u128::from(median_uncertainty);
                apart.unsigned_abs() + slack <= u128::from(self.max_offset_us)
            })
            .map(|(id, _)| id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u64 = 250_000;

    /// One probe agrees unless the offset is beyond the maximum past the probe's uncertainty,
    /// either way — the rule `check` judges by, so a far peer (half its round trip above the
    /// maximum) can still agree.
    #[test]
    fn a_probe_agrees_unless_beyond_the_offset_past_its_uncertainty() {
        // Sent at 1 s, 20 ms round trip: the midpoint is 1.010 s, uncertain by 10 ms.
        assert!(probe_agrees(1_000_000, 20_000, 1_010_000, MAX));
        assert!(probe_agrees(1_000_000, 20_000, 1_270_000, MAX)); // 260 = 250 + 10 ms
        assert!(!probe_agrees(1_000_000, 20_000, 1_271_000, MAX)); // 261 ms
        assert!(probe_agrees(1_000_000, 20_000, 750_000, MAX)); // -260 ms
        assert!(!probe_agrees(1_000_000, 20_000, 749_000, MAX));
        // A 600 ms round trip, clocks equal: agrees (the offset cannot be shown beyond 250 ms).
        assert!(probe_agrees(1_000_000, 600_000, 1_300_000, MAX));
        // A minute apart: never.
        assert!(!probe_agrees(61_000_000, 20_000, 1_000_000, MAX));
    }

    #[test]
    fn only_the_node_off_from_a_majority_stops() {
        // Three nodes; node 3's clock runs 10 s ahead. Probes take 2 ms.
        let clocks = [0i64, 0, 10_000_000];
        let mut views: Vec<ClockOffsets> = (0..3).map(|_| ClockOffsets::new(MAX)).collect();
        for (me, view) in views.iter_mut().enumerate() {
            for (peer, peer_clock) in clocks.iter().enumerate() {
                if peer != me {
                    let sent = (1_000_000_000 + clocks[me]) as u64;
                    let answer = (1_000_000_000 + 1_000 + peer_clock) as u64;
                    view.record(peer as u64, sent, 2_000, answer, 5);
                }
            }
        }
        assert_eq!(views[0].check(5), Ok(()));
        assert_eq!(views[1].check(5), Ok(()));
        let e = views[2].check(5).expect_err("node 3 is off");
        assert_eq!((e.off, e.measured), (2, 2));
        assert_eq!(e.median_offset_us, 10_000_000);
        assert!(e.to_string().contains("NTP"), "{e}");
        // Node 3 hands what it leads to the peers whose clocks agree with each other.
        assert_eq!(views[2].agreeing(5), vec![0, 1]);
        // A fourth node, 1 s behind everyone: not fit to take over.
        views[2].record(
            3,
            1_000_000_000 + 10_000_000,
            2_000,
            1_000_000_000 - 1_000_000,
            5,
        );
        assert_eq!(views[2].agreeing(5), vec![0, 1]);
    }

    #[test]
    fn within_the_uncertainty_or_stale_measurements_do_not_stop_a_node() {
        let mut v = ClockOffsets::new(MAX);
        // 300 ms apart, but the probe took 200 ms: possibly only 200 ms apart.
        v.record(2, 1_000_000, 200_000, 1_400_000, 0);
        v.record(3, 1_000_000, 200_000, 1_400_000, 0);
        assert_eq!(v.check(0), Ok(()));
        // Certainly beyond: a majority is off.
        v.record(2, 1_000_000, 2_000, 1_400_000, 0);
        v.record(3, 1_000_000, 2_000, 1_400_000, 0);
        assert!(v.check(0).is_err());
        // Old measurements no longer count.
        assert_eq!(v.check(OFFSET_FRESH_MS + 1), Ok(()));
        // No peers: nothing to compare with.
        assert_eq!(ClockOffsets::new(MAX).check(0), Ok(()));
    }
}
