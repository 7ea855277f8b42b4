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
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid raft timing: {0}")]
pub struct TimingError(String);

impl Timing {
    pub fn raft_config(&self, cluster_name: &str) -> Result<Arc<openraft::Config>, TimingError> {
        if self.election_timeout_min_ms <= 2 * self.heartbeat_interval_ms {
            return Err(TimingError(format!(
                "election_timeout_min_ms ({}) must exceed twice heartbeat_interval_ms ({})",
                self.election_timeout_min_ms, self.heartbeat_interval_ms
            )));
        }
        let config = openraft::Config {
            cluster_name: cluster_name.to_string(),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
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
