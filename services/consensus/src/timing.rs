//! Raft timing. openraft 0.10 gives each heartbeat `heartbeat_interval` to be answered, so the
//! heartbeat must exceed the worst round trip to any *voter*; election timeouts scale with it.
//! Learners are not bound by it: their replication stream's answers have their own deadline
//! (see `network::GroupPeer`), so a regional group keeps intra-region timing however far its
//! learners are.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timing {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Per-chunk deadline when sending a snapshot.
    pub install_snapshot_timeout_ms: u64,
    /// Most entries in one AppendEntries.
    pub max_payload_entries: u64,
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_logs_since_last: u64,
    /// Entries kept in the log behind a snapshot, for slow followers.
    pub max_in_snapshot_log_to_keep: u64,
    /// Deterministic simulation only: the election timeout is exactly `election_timeout_min_ms`
    /// plus this (openraft draws it at random otherwise, which a seeded replay cannot repeat).
    /// Give each node a different offset, or symmetric nodes split votes forever.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed_election_offset_ms: Option<u64>,
    /// Deterministic simulation only: this node's lease and vote guard read a clock that runs
    /// at this rate against the others' (`lease::LeaseClock`), to test the lease's clock-drift
    /// bound (`lease::DRIFT`). Between 0.01 and 100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_clock_rate: Option<f64>,
    /// Deterministic simulation only, never read from a file: a leader that finds a follower's
    /// log shorter than it acknowledged replicates to it again instead of stopping (openraft's
    /// `allow_log_reversion`). Only a disk that acknowledges before it fsyncs (the injected
    /// `ack-before-fsync` bug) reverts a log; with it on, the loss reaches the clients and the
    /// checkers, instead of ending the whole simulation at openraft's assertion.
    #[serde(skip)]
    pub allow_log_reversion: bool,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 50,
            // Eight heartbeats at least (openraft ticks every 1.5 heartbeats), so a busy disk
            // or CPU does not depose a healthy leader. openraft draws a timeout T in this range
            // for each campaign; a follower that knew a leader stands only after the leader's
            // lease (`election_timeout_max`) plus T without hearing it — 1.1–1.4 s, plus a
            // tick — and wins at once (the others' leases have run out): failover under 2 s.
            election_timeout_min_ms: 400,
            election_timeout_max_ms: 700,
            install_snapshot_timeout_ms: 5_000,
            max_payload_entries: 1024,
            snapshot_logs_since_last: 20_000,
            max_in_snapshot_log_to_keep: 5_000,
            fixed_election_offset_ms: None,
            lease_clock_rate: None,
            allow_log_reversion: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid raft timing: {0}")]
pub struct TimingError(String);

impl Timing {
    /// This timing adapted to a group whose voters are up to `voters_rtt_ms` apart and whose
    /// members (learners too) up to `members_rtt_ms` (openraft's heartbeat deadline is
    /// the heartbeat interval, so the heartbeat must exceed the voters' widest round trip with
    /// room for a loaded link; learners have their own deadline):
    /// heartbeat = max(base, 2 × voters' rtt + 20 ms); election timeout =
    /// [max(base, 4 × heartbeat), max(base, 2 × that)]; snapshot chunk deadline ≥ 10 × the
    /// members' rtt.
    pub fn for_group(&self, voters_rtt_ms: u64, members_rtt_ms: u64) -> Timing {
        let mut t = self.clone();
        t.install_snapshot_timeout_ms = self
            .install_snapshot_timeout_ms
            .max(10 * members_rtt_ms.max(voters_rtt_ms));
        if voters_rtt_ms == 0 {
            return t;
        }
        t.heartbeat_interval_ms = self.heartbeat_interval_ms.max(2 * voters_rtt_ms + 20);
        t.election_timeout_min_ms = self
            .election_timeout_min_ms
            .max(4 * t.heartbeat_interval_ms);
        t.election_timeout_max_ms = self
            .election_timeout_max_ms
            .max(2 * t.election_timeout_min_ms);
        t
    }

    pub fn raft_config(&self, cluster_name: &str) -> Result<Arc<openraft::Config>, TimingError> {
        if self.election_timeout_min_ms <= 2 * self.heartbeat_interval_ms {
            return Err(TimingError(format!(
                "election_timeout_min_ms ({}) must exceed twice heartbeat_interval_ms ({})",
                self.election_timeout_min_ms, self.heartbeat_interval_ms
            )));
        }
        if let Some(rate) = self.lease_clock_rate {
            if !(0.01..=100.0).contains(&rate) {
                return Err(TimingError(format!(
                    "lease_clock_rate ({rate}) must be between 0.01 and 100"
                )));
            }
        }
        let (election_min, election_max) = match self.fixed_election_offset_ms {
            // openraft draws from [min, max): a one-millisecond range has one value.
            Some(offset) => {
                let t = self.election_timeout_min_ms.saturating_add(offset);
                (t, t + 1)
            }
            None => (self.election_timeout_min_ms, self.election_timeout_max_ms),
        };
        let config = openraft::Config {
            cluster_name: cluster_name.to_string(),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min: election_min,
            election_timeout_max: election_max,
            install_snapshot_timeout: self.install_snapshot_timeout_ms,
            max_payload_entries: self.max_payload_entries,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_logs_since_last),
            max_in_snapshot_log_to_keep: self.max_in_snapshot_log_to_keep,
            snapshot_max_chunk_size: crate::network::SNAPSHOT_CHUNK_BYTES as u64,
            // A node that cannot win (cut off, restarted, behind) asks before it bumps its term,
            // so it never deposes a healthy leader when it comes back.
            enable_pre_vote: Some(true),
            allow_log_reversion: Some(self.allow_log_reversion),
            // A restarted leader stands for election again instead of resuming its term
            // (openraft 0.10's default resumes it). A machine that crashed lost the log entries
            // it had not fsynced yet, though its followers may hold them (they replicate in
            // parallel with the leader's own fsync) and a quorum may have committed them; a
            // leader resuming its term would then write different entries under the same
            // (term, index), and followers that hold the old ones would take the new ones for
            // a match — two committed values at one revision (sweep seed 1110,
            // docs/reliability.md). A new term costs one election after a leader restarts.
            // Only the simulation's injected lying disk (which is what `allow_log_reversion`
            // is set for) keeps it on: otherwise openraft's assertion that a committed entry
            // never changes aborts the run before the checkers see the loss.
            enable_leader_restore: Some(self.allow_log_reversion),
            ..Default::default()
        };
        config
            .validate()
            .map(Arc::new)
            .map_err(|e| TimingError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voters_round_trip_sets_the_pace_learners_only_the_snapshot_deadline() {
        let base = Timing::default();
        assert_eq!(base.for_group(0, 0), base);
        // The global group: voters 240 ms apart.
        let t = base.for_group(240, 240);
        assert_eq!(t.heartbeat_interval_ms, 500);
        assert_eq!(t.election_timeout_min_ms, 2_000);
        assert_eq!(t.election_timeout_max_ms, 4_000);
        assert_eq!(t.install_snapshot_timeout_ms, 5_000);
        assert!(t.raft_config("x").is_ok());
        // A regional group: voters together, learners 240 ms away — intra-region timing.
        let t = base.for_group(0, 240);
        assert_eq!(t.heartbeat_interval_ms, 50);
        assert_eq!(t.election_timeout_min_ms, 400);
        assert_eq!(t.election_timeout_max_ms, 700);
        let t = base.for_group(0, 800);
        assert_eq!(t.install_snapshot_timeout_ms, 8_000);
        // A small round trip keeps the configured values.
        let t = base.for_group(10, 10);
        assert_eq!(t.heartbeat_interval_ms, 50);
        assert_eq!(t.election_timeout_min_ms, 400);
        assert!(t.raft_config("x").is_ok());
    }

    #[test]
    fn a_restarted_leader_stands_for_election_instead_of_resuming_its_term() {
        // Sweep seed 1110: a resumed term after a machine crash reused log ids for new entries.
        for t in [Timing::default(), Timing::default().for_group(240, 240)] {
            let c = t.raft_config("x").expect("config");
            assert_eq!(c.enable_leader_restore, Some(false));
        }
    }

    #[test]
    fn a_lease_clock_rate_outside_its_range_is_refused_by_name() {
        for bad in [0.0, -1.0, 1000.0, f64::NAN] {
            let t = Timing {
                lease_clock_rate: Some(bad),
                ..Timing::default()
            };
            let e = t.raft_config("x").expect_err("refused").to_string();
            assert!(e.contains("lease_clock_rate"), "{e}");
        }
        let t = Timing {
            lease_clock_rate: Some(0.92),
            ..Timing::default()
        };
        assert!(t.raft_config("x").is_ok());
    }
}
