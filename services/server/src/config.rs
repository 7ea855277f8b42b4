//! Node configuration: defaults < TOML file < `MERIDIAN_`-prefixed environment variables
//! (nested keys with `__`, e.g. `MERIDIAN_RAFT__HEARTBEAT_INTERVAL_MS=150`). Unknown keys are
//! errors, so a typo never silently falls back to a default.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use meridian_consensus::Timing;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub id: u64,
    /// host:port serving both clients and peers.
    pub address: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Longest a read waits for this replica to reach the session's revision.
    pub sync_wait_ms_max: u64,
    /// Longest a write waits to be committed and applied.
    pub write_timeout_ms: u64,
    /// Most keys one range or list page returns.
    pub range_keys_max: u32,
    /// Revisions of change history kept for watches; older ones are compacted.
    pub history_revisions_max: u64,
    /// Default interval of watch progress notifications.
    pub watch_progress_interval_ms: u64,
    /// Most watch streams one node serves at once.
    pub watches_max: usize,
    /// Revisions queued for one watcher by its router's shared feed; a watcher further behind
    /// is dropped from the feed and reads the history instead.
    pub watch_queue_max: usize,
    /// A watcher whose client takes nothing for this long while responses wait is cut off
    /// (its stream ends with the revision to resume from).
    pub watch_stall_ms: u64,
    /// Most concurrent streams (watches, requests) on one client connection (HTTP/2).
    pub streams_per_connection_max: u32,
    /// Shortest and longest lease TTL a client may ask for.
    pub lease_ttl_ms_min: u64,
    pub lease_ttl_ms_max: u64,
    /// The router folds its clients' keepalives for a group into one Raft entry this often.
    pub keepalive_interval_ms: u64,
    /// Most leases waiting for the next aggregated keepalive of one group on one router.
    pub keepalive_pending_max: usize,
    /// How often the leader checks lease deadlines and lock-delays.
    pub lease_tick_ms: u64,
    /// Longest a lock acquire may wait, and the longest lock-delay.
    pub lock_wait_ms_max: u64,
    pub lock_delay_ms_max: u64,
    /// Most keys a second a domain move's pre-copy (at the target) and release (at the source)
    /// move, so the groups' other work keeps its pace; 0: as fast as the groups allow.
    pub move_keys_per_s: u64,
    /// Test hook, 0 in production: a domain move pauses this long at each of its points
    /// (before the copy, between freeze and import, before the release) so process tests can
    /// kill nodes at a chosen step.
    pub move_step_pause_ms: u64,
    /// Test-only bug, never read from a file: watchers skip the events of this revision (of
    /// every group) — what the simulation's watch validators must catch (docs/reliability.md).
    #[serde(skip)]
    pub inject_drop_watch_revision: Option<u64>,
    /// Test-only bug, never read from a file: a lock acquire that is queued behind a holder is
    /// answered "acquired" at once — what the simulation's lock checker must catch.
    #[serde(skip)]
    pub inject_early_lock_grant: bool,
    /// Test-only bug, never read from a file: a read by closed timestamps is served without
    /// waiting for the replica's closed timestamp to reach the session's — what the
    /// simulation's checkers must catch in mode e.
    #[serde(skip)]
    pub inject_read_before_closed: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            sync_wait_ms_max: 5_000,
            write_timeout_ms: 10_000,
            range_keys_max: 10_000,
            history_revisions_max: meridian_storage::HISTORY_REVISIONS_DEFAULT,
            watch_progress_interval_ms: 5_000,
            watches_max: 50_000,
            watch_queue_max: 256,
            watch_stall_ms: 60_000,
            streams_per_connection_max: 1_024,
            lease_ttl_ms_min: 1_000,
            lease_ttl_ms_max: 86_400_000,
            keepalive_interval_ms: 200,
            keepalive_pending_max: 1_000_000,
            lease_tick_ms: 50,
            lock_wait_ms_max: 600_000,
            lock_delay_ms_max: 60_000,
            move_keys_per_s: 2000,
            move_step_pause_ms: 0,
            inject_drop_watch_revision: None,
            inject_early_lock_grant: false,
            inject_read_before_closed: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    pub node_id: u64,
    pub region: String,
    /// host:port to listen on (clients and peers).
    pub listen: String,
    /// host:port peers and clients use to reach this node (defaults to `listen`).
    pub advertise: Option<String>,
    pub data_dir: PathBuf,
    /// Name shared by every node of the cluster; messages from another cluster are refused.
    pub cluster_name: String,
    /// The initial voters of the region's group, this node included.
    pub peers: Vec<Peer>,
    /// Initialize the group with `peers` on first start (when the log is empty).
    pub bootstrap: bool,
    /// The cluster's topology file (regions, nodes, groups, domains). Without one, the node
    /// runs the single-region shape: `peers` are the voters of group 1, which owns "/".
    pub topology: Option<PathBuf>,
    /// How to reach advertised peer addresses: `advertised = "dial-to"` (e.g. a WAN emulator
    /// relay). Unlisted addresses are dialed as they are.
    pub dial: BTreeMap<String, String>,
    pub router: RouterConfig,
    pub timestamps: TimestampsConfig,
    pub raft: Timing,
    pub limits: Limits,
    pub security: SecurityConfig,
    pub http: HttpConfig,
    pub telemetry: TelemetryConfig,
}

/// `[telemetry]`: OpenTelemetry traces over OTLP/gRPC (docs/operations.md, "Tracing").
/// Off unless `otlp_endpoint` is set (`MERIDIAN_TELEMETRY__OTLP_ENDPOINT`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The collector's OTLP/gRPC endpoint, e.g. `http://127.0.0.1:4317`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// The share of requests traced from this node (0.0–1.0); a request that arrives with a
    /// sampled trace context (from a client or another node) is always traced.
    pub sample_ratio: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            sample_ratio: 0.01,
        }
    }
}

impl TelemetryConfig {
    /// `[telemetry]` from `MERIDIAN_TELEMETRY__*` alone (an in-process `meridian dev`, whose
    /// nodes take no configuration file), checked.
    pub fn from_env() -> Result<Self, ConfigError> {
        let cfg: TelemetryConfig = Figment::from(Serialized::defaults(TelemetryConfig::default()))
            .merge(Env::prefixed("MERIDIAN_TELEMETRY__"))
            .extract()
            .map_err(|e| ConfigError::File {
                path: "(environment MERIDIAN_TELEMETRY__*)".into(),
                message: e.to_string(),
            })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(ConfigError::Invalid(format!(
                "telemetry.sample_ratio must be between 0.0 and 1.0, not {}",
                self.sample_ratio
            )));
        }
        if let Some(e) = &self.otlp_endpoint {
            let ok = e.parse::<http::Uri>().ok().is_some_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
            });
            if !ok {
                return Err(ConfigError::Invalid(format!(
                    "telemetry.otlp_endpoint {e:?} is not an http:// or https:// URL with a host \
                     (e.g. http://127.0.0.1:4317)"
                )));
            }
        }
        Ok(())
    }
}

/// `[http]`: the operator's HTTP listener — Prometheus `/metrics`, `/healthz`, `/readyz`
/// (docs/operations.md). Plain HTTP, no token: bind it to an address only operators reach.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// host:port to serve on; unset (the default): no HTTP listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// `/readyz` fails while a replica this node hosts is known to lag its leader by more.
    pub ready_lag_ms: u64,
    /// Serve the HTTP/JSON gateway (`/v1/...`, `/openapi.json`; docs/http.md) on the listener.
    pub gateway: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: None,
            ready_lag_ms: 5_000,
            gateway: true,
        }
    }
}

/// Whether a node started by `meridian server` must run with security (docs/security.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecurityMode {
    /// Tokens (`root_public_key`) and mTLS (`ca`, `cert`, `key`) are required.
    #[default]
    Secure,
    /// Whatever is configured is used; what is missing is off, with a warning at every start.
    Insecure,
}

/// `[security]` (docs/security.md).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// `secure` (the default): `meridian server` refuses to start without tokens and mTLS;
    /// `insecure`: it starts with whatever is configured and warns about the rest.
    pub mode: SecurityMode,
    /// The cluster's root public key (`ed25519/…`, printed by `meridian token keygen`). When
    /// set, every client request must carry a token signed through it; unset: no checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_public_key: Option<String>,
    /// mTLS: the cluster's CA certificate (PEM). With `cert` and `key` set too, the node serves
    /// its port over TLS only, dials peers over TLS, and takes peer traffic only from nodes of
    /// the topology (their certificates name them); reload with SIGHUP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// This node's certificate chain (PEM), naming `n<ID>.node.meridian`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

impl SecurityConfig {
    /// The parsed root public key, if one is configured.
    pub fn root(&self) -> Result<Option<meridian_auth::RootPublicKey>, ConfigError> {
        self.root_public_key
            .as_deref()
            .map(|k| {
                meridian_auth::RootPublicKey::parse(k)
                    .map_err(|e| ConfigError::Invalid(format!("security.root_public_key: {e}")))
            })
            .transpose()
    }

    /// What is off (token checks, mTLS), for a node that must say so or refuse to start: an
    /// error in `secure` mode when anything is, naming what is missing; in `insecure` mode the
    /// list (empty when everything is on after all).
    pub fn required(&self) -> Result<Vec<&'static str>, ConfigError> {
        let mut off = Vec::new();
        if self.root_public_key.is_none() {
            off.push("token checks (security.root_public_key)");
        }
        if self.tls()?.is_none() {
            off.push("mTLS (security.ca, security.cert, security.key)");
        }
        if off.is_empty() || self.mode == SecurityMode::Insecure {
            return Ok(off);
        }
        Err(ConfigError::Invalid(format!(
            "security is required and {} not configured (docs/security.md); to run without it \
             anyway, say so: security.mode = \"insecure\"",
            off.join(" and ")
        )))
    }

    /// The TLS files, when mTLS is configured: all three of `ca`, `cert` and `key`, or none.
    pub fn tls(&self) -> Result<Option<meridian_tls::TlsFiles>, ConfigError> {
        match (&self.ca, &self.cert, &self.key) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => Ok(Some(meridian_tls::TlsFiles {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            })),
            _ => Err(ConfigError::Invalid(
                "security.ca, security.cert and security.key go together: set all three (mTLS) \
                 or none"
                    .into(),
            )),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    /// Sync a group before a read that switches to it (DESIGN.md §2). Turning this off breaks
    /// sequential consistency across groups; it exists only so a test can show the anomaly.
    pub sync_on_switch: bool,
}

/// How reads that switch groups are made sequentially consistent (docs/closed-timestamps.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimestampProfile {
    /// Sync-before-read (DESIGN.md §2): a read that switches groups asks the group's leader
    /// for a read index first — one round trip to it.
    Sync,
    /// Closed timestamps, closed at the leader's clock (less `lag_ms`): the leaders of the
    /// groups this node leads publish a promise every `close_interval_ms`; a read is served
    /// once the local replica's closed timestamp reaches the session's timestamp — no sync.
    LocalWrites,
    /// Closed timestamps, closed ahead of the leader's clock by the farthest one-way delay
    /// between regions plus the maximum clock offset: a read anywhere is served at once; each
    /// write waits until its commit timestamp has passed before it is answered (commit wait).
    GlobalReads,
}

/// `[timestamps]`: closed timestamps (issue 19, docs/closed-timestamps.md). Every node of a
/// cluster should say the same; a router reading by timestamps from a group whose leader does
/// not close waits for the group's writes and refuses after `stale_after_ms` — never an older
/// view.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimestampsConfig {
    pub profile: TimestampProfile,
    /// How often a leader adds a promise (an empty entry when its group had no write since).
    pub close_interval_ms: u64,
    /// How far behind its clock a `local-writes` leader closes.
    pub lag_ms: u64,
    /// A read waiting for a replica's closed timestamp gives up (refuses, never serves an
    /// older view) once the closed timestamp has not moved for this long.
    pub stale_after_ms: u64,
    /// The largest offset between two nodes' clocks the cluster assumes (NTP or chrony must
    /// keep them within it). A node further than this from most of its peers serves no read
    /// by timestamp and hands over what it leads; a session timestamp further ahead than this
    /// (plus the lead) is refused; `global-reads` closes this much further ahead. Every node
    /// of a cluster must say the same.
    pub max_clock_offset_ms: u64,
}

impl Default for TimestampsConfig {
    fn default() -> Self {
        Self {
            profile: TimestampProfile::Sync,
            close_interval_ms: 10,
            lag_ms: 0,
            stale_after_ms: 1_000,
            max_clock_offset_ms: 250,
        }
    }
}

impl TimestampsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=10_000).contains(&self.close_interval_ms) {
            return Err(ConfigError::Invalid(format!(
                "timestamps.close_interval_ms must be between 1 and 10000, not {}",
                self.close_interval_ms
            )));
        }
        if self.lag_ms > 60_000 {
            return Err(ConfigError::Invalid(format!(
                "timestamps.lag_ms must be at most 60000, not {}",
                self.lag_ms
            )));
        }
        if self.stale_after_ms < 2 * self.close_interval_ms || self.stale_after_ms > 600_000 {
            return Err(ConfigError::Invalid(format!(
                "timestamps.stale_after_ms must be at least twice close_interval_ms ({}) and at \
                 most 600000, not {}",
                2 * self.close_interval_ms,
                self.stale_after_ms
            )));
        }
        if !(1..=10_000).contains(&self.max_clock_offset_ms) {
            return Err(ConfigError::Invalid(format!(
                "timestamps.max_clock_offset_ms must be between 1 and 10000, not {} (the largest \
                 offset NTP or chrony keeps between two nodes' clocks)",
                self.max_clock_offset_ms
            )));
        }
        Ok(())
    }

    /// `max_clock_offset_ms` in µs.
    pub fn max_clock_offset_us(&self) -> u64 {
        self.max_clock_offset_ms * 1_000
    }

    /// The profile the leaders close with by default (a domain's profile in the placement map
    /// overrides it), or `None` for sync-before-read; `lead_us` is how far ahead
    /// `global-reads` closes (the farthest one-way delay plus the maximum offset).
    pub fn closing(&self, lead_us: u64) -> Option<meridian_router::Profile> {
        match self.profile {
            TimestampProfile::Sync => None,
            TimestampProfile::LocalWrites => Some(meridian_router::Profile::LocalWrites {
                lag_us: self.lag_ms * 1_000,
            }),
            TimestampProfile::GlobalReads => {
                Some(meridian_router::Profile::GlobalReads { lead_us })
            }
        }
    }
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            sync_on_switch: true,
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            node_id: 1,
            region: "local".into(),
            listen: "127.0.0.1:7400".into(),
            advertise: None,
            data_dir: PathBuf::from("meridian-data"),
            cluster_name: "meridian".into(),
            peers: Vec::new(),
            bootstrap: true,
            topology: None,
            dial: BTreeMap::new(),
            router: RouterConfig::default(),
            raft: Timing::default(),
            limits: Limits::default(),
            security: SecurityConfig::default(),
            http: HttpConfig::default(),
            telemetry: TelemetryConfig::default(),
            timestamps: TimestampsConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path}: {message}")]
    File { path: String, message: String },
    #[error("configuration: {0}")]
    Invalid(String),
}

/// `MERIDIAN_*` variables of the CLI and the SDK (lowercased, without the prefix): a node
/// ignores them.
const CLIENT_VARIABLES: &[&str] = &[
    "endpoint",
    // The CLI's home region (`--region`); a node's region comes from its file or topology.
    "region",
    "output",
    "consistency",
    "log",
    "token",
    "ca",
    "tls_cert",
    "tls_key",
    "root_key",
    "root_public_key",
    "wan_control",
    "fencing_token",
    "lock_key",
    "lock_name",
];

impl NodeConfig {
    /// Loads `path` (if any) over the defaults, then the `MERIDIAN_` environment over both.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(NodeConfig::default()));
        if let Some(p) = path {
            let text = std::fs::read_to_string(p).map_err(|e| ConfigError::File {
                path: p.display().to_string(),
                message: e.to_string(),
            })?;
            // Parse once ourselves so malformed TOML is reported with its line and column.
            toml::from_str::<toml::Value>(&text).map_err(|e| ConfigError::File {
                path: p.display().to_string(),
                message: format!("malformed TOML: {e}"),
            })?;
            fig = fig.merge(Toml::string(&text));
        }
        fig = fig.merge(
            Env::prefixed("MERIDIAN_")
                .split("__")
                // Client-side variables share the prefix; they are not node settings (an
                // operator's shell may well export MERIDIAN_TOKEN and MERIDIAN_CA).
                .ignore(CLIENT_VARIABLES),
        );
        let cfg: NodeConfig = fig.extract().map_err(|e| ConfigError::File {
            path: path.map_or("(environment)".into(), |p| p.display().to_string()),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn advertise(&self) -> &str {
        self.advertise.as_deref().unwrap_or(&self.listen)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.telemetry.validate()?;
        self.timestamps.validate()?;
        if self.node_id == 0 {
            return Err(ConfigError::Invalid("node_id must be at least 1".into()));
        }
        let mut ids = std::collections::BTreeSet::new();
        let mut addrs = std::collections::BTreeSet::new();
        for p in &self.peers {
            if !ids.insert(p.id) {
                return Err(ConfigError::Invalid(format!(
                    "peer id {} appears twice",
                    p.id
                )));
            }
            if !addrs.insert(p.address.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "peer address {} appears twice",
                    p.address
                )));
            }
        }
        if !self.peers.is_empty() && !ids.contains(&self.node_id) {
            return Err(ConfigError::Invalid(format!(
                "peers do not include this node (node_id {})",
                self.node_id
            )));
        }
        self.raft
            .raft_config(&self.cluster_name)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        self.security.root()?;
        let l = &self.limits;
        if l.lease_ttl_ms_min == 0 || l.lease_ttl_ms_min > l.lease_ttl_ms_max {
            return Err(ConfigError::Invalid(format!(
                "limits.lease_ttl_ms_min ({}) must be at least 1 and at most limits.lease_ttl_ms_max ({})",
                l.lease_ttl_ms_min, l.lease_ttl_ms_max
            )));
        }
        if l.keepalive_interval_ms == 0 || l.keepalive_interval_ms * 3 > l.lease_ttl_ms_min {
            return Err(ConfigError::Invalid(format!(
                "limits.keepalive_interval_ms ({}) must be above 0 and at most a third of \
                 limits.lease_ttl_ms_min ({}), or clients lose leases between keepalives",
                l.keepalive_interval_ms, l.lease_ttl_ms_min
            )));
        }
        if l.lease_tick_ms == 0 || l.keepalive_pending_max == 0 {
            return Err(ConfigError::Invalid(
                "limits.lease_tick_ms and limits.keepalive_pending_max must be above 0".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<NodeConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, text).unwrap();
        NodeConfig::load(Some(&path))
    }

    /// A file overrides the defaults it names and keeps the rest.
    #[test]
    fn file_over_defaults() {
        let cfg = load_text("node_id = 2\n[raft]\nheartbeat_interval_ms = 150\n").unwrap();
        assert_eq!(cfg.node_id, 2);
        assert_eq!(cfg.raft.heartbeat_interval_ms, 150);
        assert_eq!(
            cfg.raft.election_timeout_min_ms,
            Timing::default().election_timeout_min_ms
        );
    }

    /// An unknown key is an error that names the key.
    #[test]
    fn unknown_key_is_refused() {
        let err = load_text("node_id = 2\nheartbeat = 5\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown field") && err.contains("heartbeat"),
            "{err}"
        );
        let err = load_text("[raft]\nheartbeat_ms = 5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("heartbeat_ms"), "{err}");
    }

    /// Malformed TOML is reported as such, with where it broke.
    #[test]
    fn malformed_toml_is_refused() {
        let err = load_text("node_id = = 2\n").unwrap_err().to_string();
        assert!(
            err.contains("malformed TOML") && err.contains("line 1"),
            "{err}"
        );
    }

    /// A root public key that does not parse is refused at load, saying which setting.
    #[test]
    fn a_broken_root_public_key_is_refused() {
        let err = load_text("[security]\nroot_public_key = \"ed25519/zz\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("security.root_public_key"), "{err}");
        let cfg = load_text("").unwrap();
        assert_eq!(cfg.security.root().unwrap(), None);
    }

    /// Timing that cannot work is refused with the rule it breaks.
    #[test]
    fn bad_timing_is_refused() {
        let err = load_text("[raft]\nheartbeat_interval_ms = 500\nelection_timeout_min_ms = 600\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("must exceed twice heartbeat_interval_ms"),
            "{err}"
        );
    }

    #[test]
    fn the_clock_offset_is_configured_and_bounded() {
        let cfg = load_text(
            "[timestamps]
max_clock_offset_ms = 20
",
        )
        .unwrap();
        assert_eq!(cfg.timestamps.max_clock_offset_us(), 20_000);
        assert_eq!(
            load_text("").unwrap().timestamps.max_clock_offset_us(),
            250_000
        );
        for bad in ["0", "20000"] {
            let err = load_text(&format!("[timestamps]\nmax_clock_offset_ms = {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("max_clock_offset_ms must be between 1 and 10000"),
                "{err}"
            );
        }
    }
}
