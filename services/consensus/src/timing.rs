//! Raft timing. openraft 0.9 uses `heartbeat_interval` as the AppendEntries timeout, so the
//! heartbeat must exceed the worst round trip to any replica; election timeouts scale with it.

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
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 100,
            // As etcd's defaults: ten heartbeats, so a busy disk or CPU does not depose a
            // healthy leader; failover still completes within about two seconds.
            election_timeout_min_ms: 1_000,
            election_timeout_max_ms: 2_000,
            install_snapshot_timeout_ms: 5_000,
            max_payload_entries: 1024,
            snapshot_logs_since_last: 20_000,
            max_in_snapshot_log_to_keep: 5_000,
            fixed_election_offset_ms: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid raft timing: {0}")]
pub struct TimingError(String);

impl Timing {
    /// This timing adapted to a group whose members are up to `rtt_ms` apart (DESIGN.md §3:
    /// openraft 0.9's AppendEntries deadline is the heartbeat interval, so the heartbeat must
    /// exceed the widest round trip with room for a loaded link):
    /// heartbeat = max(base, 2 × rtt + 20 ms); election timeout = [max(base, 4 × heartbeat),
    /// max(base, 2 × that)]; snapshot chunk deadline ≥ 10 × rtt.
    pub fn for_round_trip(&self, rtt_ms: u64) -> Timing {
        if rtt_ms == 0 {
            return self.clone();
        }
        let heartbeat = self.heartbeat_interval_ms.max(2 * rtt_ms + 20);
        let election_min = self.election_timeout_min_ms.max(4 * heartbeat);
        let election_max = self.election_timeout_max_ms.max(2 * election_min);
        Timing {
            heartbeat_interval_ms: heartbeat,
            election_timeout_min_ms: election_min,
            election_timeout_max_ms: election_max,
            install_snapshot_timeout_ms: self.install_snapshot_timeout_ms.max(10 * rtt_ms),
            ..self.clone()
        }
    }

    pub fn raft_config(&self, cluster_name: &str) -> Result<Arc<openraft::Config>, TimingError> {
        if self.election_timeout_min_ms <= 2 * self.heartbeat_interval_ms {
            return Err(TimingError(format!(
                "election_timeout_min_ms ({}) must exceed twice heartbeat_interval_ms ({})",
                self.election_timeout_min_ms, self.heartbeat_interval_ms
            )));
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
            snapshot_max_chunk_size: 1024 * 1024,
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
    fn wan_timing_scales_with_the_widest_round_trip() {
        let base = Timing::default();
        assert_eq!(base.for_round_trip(0), base);
        let t = base.for_round_trip(240);
        assert_eq!(t.heartbeat_interval_ms, 500);
        assert_eq!(t.election_timeout_min_ms, 2_000);
        assert_eq!(t.election_timeout_max_ms, 4_000);
        assert!(t.raft_config("x").is_ok());
        // A small round trip keeps the configured values.
        let t = base.for_round_trip(10);
        assert_eq!(t.heartbeat_interval_ms, 100);
        assert_eq!(t.election_timeout_min_ms, 1_000);
        assert!(t.raft_config("x").is_ok());
    }
}
