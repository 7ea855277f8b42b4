//! A scenario file: the workload (read ratio, locality, burst length, value size, clients per
//! region, duration), the deployment modes to compare, the seed, and faults to schedule.
//! The same file drives the real run under the WAN emulator and the deterministic simulation.

use anyhow::Context;
use serde::Deserialize;
use std::path::PathBuf;

fn one() -> Vec<f64> {
    vec![1.0]
}

fn default_value_size() -> usize {
    256
}

pub use meridian_server::config::TimestampProfile;

fn default_keys() -> u64 {
    1000
}

fn default_profile() -> TimestampProfile {
    TimestampProfile::LocalWrites
}

fn default_seed() -> u64 {
    1
}

fn default_warmup() -> u64 {
    15
}

/// A scenario file. `read_ratio`, `locality` and `burst` may be lists: every combination runs.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    /// Topology file (default: the built-in local-3region).
    #[serde(default)]
    pub topology: Option<PathBuf>,
    pub modes: Vec<String>,
    pub duration_s: u64,
    pub clients_per_region: usize,
    #[serde(default = "one")]
    pub read_ratio: Vec<f64>,
    #[serde(default = "one")]
    pub locality: Vec<f64>,
    #[serde(default = "one")]
    pub burst: Vec<f64>,
    #[serde(default = "default_value_size")]
    pub value_size: usize,
    #[serde(default = "default_keys")]
    pub keys_per_region: u64,
    /// Seed of the workload's choices and, in simulation, of the simulator.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Simulation: virtual seconds before clients start (elections over the WAN take seconds).
    #[serde(default = "default_warmup")]
    pub warmup_s: u64,
    /// Share of reads asked as `linearizable` (the rest are the default, sequential).
    #[serde(default)]
    pub linearizable_reads: f64,
    /// Simulation: faults, at virtual times counted from the start of the workload.
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// Simulation: online domain moves, at virtual times counted from the start of the
    /// workload, run one after another (each waits for the one before to end).
    #[serde(default)]
    pub moves: Vec<MoveAt>,
    /// Simulation: clients that take a lock and release it, back to back, for the whole run.
    #[serde(default)]
    pub lockers: Vec<Locker>,
    /// Simulation: node `n<ID>` → the rate of its lease clock against everyone else's (1: the
    /// same). Every simulated node shares one virtual clock; this skews what a node's leader
    /// lease and vote guard measure, to test the lease's drift bound (docs/consistency.md).
    #[serde(default)]
    pub clock_rates: std::collections::BTreeMap<String, f64>,
    /// Simulation: workload clients (`c<R>x<C>`) that only read — e.g. one left alone with a
    /// cut-off leader, which a write of its own would stall for the call's whole deadline.
    #[serde(default)]
    pub readers: Vec<String>,
    /// Simulation: this many more faults drawn from the seed (crashes, partitions, pauses of a
    /// node or a region, clock skews within the lease's drift bound; `faults.rs`), so that a
    /// sweep over seeds meets many schedules and `sim run --seed S` replays seed S's.
    #[serde(default)]
    pub random_faults: usize,
    /// Simulation: per region, this many pairs of watchers of a region's prefix (one from
    /// revision 1, one "from now" a third of the way in), their streams checked by the watch
    /// validators (`meridian_checker::watch`).
    #[serde(default)]
    pub watchers: usize,
    /// Simulation: test-only bugs switched on in every node, to prove the checkers catch them
    /// (docs/reliability.md): `"drop-watch-event"` (watchers skip revision 10's events),
    /// `"skip-sync"` (no sync on a group switch: mode c's bug in any mode), `"early-lock-grant"`
    /// (a queued lock waiter answered "acquired"), `"ack-before-fsync"` (the simulated disk
    /// acknowledges an append before its fsync), `"read-before-closed"` (mode e: a read served
    /// before the replica's closed timestamp reached the session's).
    #[serde(default)]
    pub inject: Vec<String>,
    /// Simulation: every node's fsync takes this long (0: appends are durable at once). With a
    /// delay there is an un-fsynced tail for a `lose_unsynced` crash to lose.
    #[serde(default)]
    pub disk_fsync_ms: f64,
    /// Simulation: every node's physical clock (what its commit timestamps come from) is set
    /// off the simulated time by an amount drawn from the seed in ±half of this, so any two
    /// nodes differ by at most this much (at most the maximum clock offset, 250 ms). Mode e's
    /// closed timestamps must stay correct under it (docs/closed-timestamps.md).
    #[serde(default)]
    pub physical_skew_ms: f64,
    /// Mode e: how every group closes timestamps, `"local-writes"` (the default: writes stay
    /// local, a switch waits about a one-way delay) or `"global-reads"` (reads never wait,
    /// writes wait out the lead); docs/closed-timestamps.md.
    #[serde(default = "default_profile")]
    pub profile: TimestampProfile,
    /// Simulation: the first this-many clients of every region carry their session to the next
    /// region's routers halfway through the workload (`adopt_session`); the checkers hold the
    /// session to its order across the move. At most `clients_per_region`.
    #[serde(default)]
    pub roamers: usize,
}

/// Largest spread of the nodes' physical clocks (`physical_skew_ms`): the nodes' maximum
/// clock offset.
pub const PHYSICAL_SKEW_MS_MAX: f64 = 250.0;

/// Longest simulated fsync (`disk_fsync_ms`, a slow-disk fault's `fsync_ms`).
pub const FSYNC_MS_MAX: f64 = 10_000.0;

/// A client in `region` that acquires lock `name` and releases it again and again (one
/// session; the first pair warms up its lease and connections and is not recorded).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Locker {
    pub region: String,
    pub name: String,
    /// How long each grant is kept before its release (0: released at once), at most
    /// [`LOCK_HOLD_MS_MAX`].
    #[serde(default)]
    pub hold_ms: u64,
}

/// Longest a locker keeps a grant.
pub const LOCK_HOLD_MS_MAX: u64 = 10_000;

/// One scheduled domain move: `prefix` (a domain path, carved out if needed) to group `to`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MoveAt {
    pub at_s: f64,
    pub prefix: String,
    pub to: String,
}

/// One scheduled fault. `target` is a region name (all its nodes) or `n<ID>` (one node).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub at_s: f64,
    pub kind: FaultKind,
    pub target: String,
    /// How long the fault lasts; then the partition heals, the node restarts (with what it had
    /// acknowledged), or the pause ends.
    pub for_s: f64,
    /// Partition only: workload clients that stay on the target's side, by their simulator
    /// names (`c<R>x<C>`: client C of the R-th region in the topology's order) — e.g. a client
    /// left alone with a cut-off leader.
    #[serde(default)]
    pub with_clients: Vec<String>,
    /// Crash only: the machine crashes, not just the process — each node loses what it had
    /// appended but not yet fsynced (see `disk_fsync_ms`).
    #[serde(default)]
    pub lose_unsynced: bool,
    /// Slow-disk only: each fsync of the target's nodes takes this long while the fault lasts.
    #[serde(default)]
    pub fsync_ms: Option<f64>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// Cut every link between the target and the rest (its clients stay with it).
    Partition,
    /// Stop the target's nodes; restart them after `for_s` with their acknowledged state.
    Crash,
    /// Hold every message to and from the target's nodes; deliver them after `for_s` (a
    /// process stopped with SIGSTOP, as seen by the network).
    Pause,
    /// Make the target's fsyncs take `fsync_ms` for `for_s`.
    #[serde(rename = "slow-disk")]
    SlowDisk,
    /// Hold every message between the target's nodes and the other nodes (its clients keep
    /// talking to it) for `for_s`, then deliver them all: late, in one burst, after what other
    /// links carried meanwhile — the reordering TCP allows, which is across connections (a
    /// stale AppendEntries or forward arriving after newer ones), never within one.
    Delay,
}

impl FaultKind {
    /// The name a scenario file gives the kind.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Partition => "partition",
            FaultKind::Crash => "crash",
            FaultKind::Pause => "pause",
            FaultKind::SlowDisk => "slow-disk",
            FaultKind::Delay => "delay",
        }
    }
}

/// Most faults a scenario may ask to draw (`random_faults`).
pub const RANDOM_FAULTS_MAX: usize = 20;

/// The test-only bugs a simulated scenario may switch on (`inject`).
pub const INJECTABLE: [&str; 5] = [
    "drop-watch-event",
    "skip-sync",
    "early-lock-grant",
    "ack-before-fsync",
    "read-before-closed",
];
/// The revision whose events the injected `drop-watch-event` bug drops.
pub const DROPPED_WATCH_REVISION: u64 = 10;

/// Most watcher pairs per region in a simulated scenario.
pub const WATCHERS_MAX: usize = 8;

/// Reads a scenario: lists accept a single number too; every bad value is explained.
pub fn parse_scenario(text: &str, name: &str) -> anyhow::Result<Scenario> {
    let mut v: toml::Value =
        toml::from_str(text).with_context(|| format!("{name}: malformed TOML"))?;
    if let Some(t) = v.as_table_mut() {
        for k in ["read_ratio", "locality", "burst"] {
            if let Some(x) = t.get(k).cloned() {
                if !x.is_array() {
                    t.insert(k.into(), toml::Value::Array(vec![x]));
                }
            }
        }
    }
    let s: Scenario = v
        .try_into()
        .map_err(|e: toml::de::Error| anyhow::anyhow!("{name}: {e}"))?;
    let bad = |m: String| Err(anyhow::anyhow!("{name}: {m}"));
    for m in &s.modes {
        if !["a", "b", "c", "d", "e"].contains(&m.as_str()) {
            return bad(format!("unknown mode {m:?}: modes are a, b, c, d, e"));
        }
    }
    if s.modes.is_empty() || s.duration_s == 0 || s.clients_per_region == 0 {
        return bad("modes, duration_s and clients_per_region must be non-empty / above 0".into());
    }
    for (k, list) in [
        ("read_ratio", &s.read_ratio),
        ("locality", &s.locality),
        ("linearizable_reads", &vec![s.linearizable_reads]),
    ] {
        if list.iter().any(|x| !(0.0..=1.0).contains(x)) {
            return bad(format!("{k} values must be between 0 and 1"));
        }
    }
    if s.burst.iter().any(|b| *b < 1.0) {
        return bad("burst values must be at least 1".into());
    }
    if s.value_size > meridian_types::VALUE_BYTES_MAX || s.keys_per_region == 0 {
        return bad("value_size must be at most 1 MiB and keys_per_region above 0".into());
    }
    for (i, f) in s.faults.iter().enumerate() {
        if !(f.at_s >= 0.0 && f.for_s > 0.0 && f.at_s.is_finite() && f.for_s.is_finite()) {
            return bad(format!(
                "faults[{i}]: at_s must be ≥ 0 and for_s above 0 (got {} and {})",
                f.at_s, f.for_s
            ));
        }
        if f.lose_unsynced && f.kind != FaultKind::Crash {
            return bad(format!(
                "faults[{i}]: lose_unsynced applies to a crash only"
            ));
        }
        match (f.kind, f.fsync_ms) {
            (FaultKind::SlowDisk, Some(ms)) if ms > 0.0 && ms <= FSYNC_MS_MAX => {}
            (FaultKind::SlowDisk, Some(ms)) => {
                return bad(format!(
                    "faults[{i}]: fsync_ms must be above 0 and at most {FSYNC_MS_MAX} (got {ms})"
                ))
            }
            (FaultKind::SlowDisk, None) => {
                return bad(format!("faults[{i}]: a slow-disk fault needs fsync_ms"))
            }
            (_, Some(_)) => {
                return bad(format!(
                    "faults[{i}]: fsync_ms applies to a slow-disk fault only"
                ))
            }
            (_, None) => {}
        }
        if !f.with_clients.is_empty() && f.kind != FaultKind::Partition {
            return bad(format!(
                "faults[{i}]: with_clients applies to a partition only"
            ));
        }
    }
    if let Some(l) = s.lockers.iter().find(|l| l.hold_ms > LOCK_HOLD_MS_MAX) {
        return bad(format!(
            "lockers: hold_ms {} of lock {:?} is more than {LOCK_HOLD_MS_MAX}",
            l.hold_ms, l.name
        ));
    }
    if let Some(b) = s.inject.iter().find(|b| !INJECTABLE.contains(&b.as_str())) {
        return bad(format!(
            "inject: unknown bug {b:?} (known: {})",
            INJECTABLE.join(", ")
        ));
    }
    if s.watchers > WATCHERS_MAX {
        return bad(format!(
            "watchers: {} pairs per region is more than {WATCHERS_MAX}",
            s.watchers
        ));
    }
    if s.watchers > 0 && !s.moves.is_empty() {
        return bad(
            "watchers and moves cannot be combined yet: a moved domain's revisions are \
                    renumbered in the history, not in the watch streams"
                .into(),
        );
    }
    if s.roamers > s.clients_per_region {
        return bad(format!(
            "roamers: {} is more than clients_per_region ({})",
            s.roamers, s.clients_per_region
        ));
    }
    if s.profile == TimestampProfile::Sync {
        return bad(
            "profile: \"sync\" is mode d; mode e closes timestamps (local-writes or global-reads)"
                .into(),
        );
    }
    if !(s.physical_skew_ms >= 0.0 && s.physical_skew_ms <= PHYSICAL_SKEW_MS_MAX) {
        return bad(format!(
            "physical_skew_ms: {} is not between 0 and {PHYSICAL_SKEW_MS_MAX} (the maximum \
             clock offset)",
            s.physical_skew_ms
        ));
    }
    if !(s.disk_fsync_ms >= 0.0 && s.disk_fsync_ms <= FSYNC_MS_MAX) {
        return bad(format!(
            "disk_fsync_ms: {} is not between 0 and {FSYNC_MS_MAX}",
            s.disk_fsync_ms
        ));
    }
    if s.random_faults > RANDOM_FAULTS_MAX {
        return bad(format!(
            "random_faults: {} is more than {} faults in one run",
            s.random_faults, RANDOM_FAULTS_MAX
        ));
    }
    for (node, rate) in &s.clock_rates {
        let id_ok = node
            .strip_prefix('n')
            .is_some_and(|id| id.parse::<u64>().is_ok());
        if !id_ok {
            return bad(format!("clock_rates: {node:?} is not a node name (n<ID>)"));
        }
        if !(0.01..=100.0).contains(rate) {
            return bad(format!(
                "clock_rates.{node}: {rate} is not a clock rate between 0.01 and 100"
            ));
        }
    }
    for (i, m) in s.moves.iter().enumerate() {
        if !(m.at_s >= 0.0 && m.at_s.is_finite()) {
            return bad(format!("moves[{i}]: at_s must be ≥ 0 (got {})", m.at_s));
        }
        if let Err(e) = meridian_placement::validate_domain_prefix(&m.prefix) {
            return bad(format!("moves[{i}].prefix: {e}"));
        }
        if m.to.trim().is_empty() {
            return bad(format!("moves[{i}].to: name the target group"));
        }
    }
    Ok(s)
}

/// The topology text a mode runs on, derived from the scenario's topology:
/// - `a`: one group whose voters are one node per region, owning every domain;
/// - `b`: one group homed in the first region with learners in every other ("observers");
/// - `c`, `d`, `e`: the topology as written (c runs without sync-on-switch, e reads by closed
///   timestamps).
pub fn mode_topology(base: &str, mode: &str) -> anyhow::Result<String> {
    let mut v: toml::Value = toml::from_str(base).context("topology TOML")?;
    let t = v.as_table_mut().context("topology is a table")?;
    let regions: Vec<String> = t
        .get("regions")
        .and_then(|r| r.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|r| r.get("name").and_then(|n| n.as_str()).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let nodes: Vec<(i64, String)> = t
        .get("nodes")
        .and_then(|n| n.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|n| {
                    Some((
                        n.get("id")?.as_integer()?,
                        n.get("region")?.as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let group = |name: &str| -> toml::Value {
        let mut g = toml::map::Map::new();
        g.insert("name".into(), name.into());
        g.into()
    };
    let (groups, owner) = match mode {
        "a" => {
            let mut g = group("ensemble");
            let voters: Vec<toml::Value> = regions
                .iter()
                .filter_map(|r| {
                    nodes
                        .iter()
                        .find(|(_, nr)| nr == r)
                        .map(|(id, _)| (*id).into())
                })
                .collect();
            if let Some(m) = g.as_table_mut() {
                m.insert("id".into(), 1.into());
                m.insert("kind".into(), "global".into());
                m.insert("voters".into(), voters.into());
                m.insert("learner_regions".into(), toml::Value::Array(Vec::new()));
            }
            (vec![g], "ensemble")
        }
        "b" => {
            let home = regions.first().context("no region")?.clone();
            let mut g = group("observed");
            let voters: Vec<toml::Value> = nodes
                .iter()
                .filter(|(_, r)| *r == home)
                .map(|(id, _)| (*id).into())
                .collect();
            let learners: Vec<toml::Value> = regions
                .iter()
                .filter(|r| **r != home)
                .map(|r| r.as_str().into())
                .collect();
            if let Some(m) = g.as_table_mut() {
                m.insert("id".into(), 1.into());
                m.insert("kind".into(), "regional".into());
                m.insert("home".into(), home.as_str().into());
                m.insert("voters".into(), voters.into());
                m.insert("learner_regions".into(), learners.into());
            }
            (vec![g], "observed")
        }
        _ => return Ok(base.to_string()),
    };
    // Replace the [[groups]] and [[domains]] blocks of the text, keeping the rest as written
    // (the topology parser wants round trips as inline tables, as the shipped files have them).
    let mut kept = String::new();
    let mut skipping = false;
    for line in base.lines() {
        let l = line.trim_start();
        if l.starts_with("[[groups]]") || l.starts_with("[[domains]]") {
            skipping = true;
            continue;
        }
        if skipping && l.starts_with('[') {
            skipping = false;
        }
        if !skipping {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    for g in &groups {
        let mut wrapper = toml::map::Map::new();
        wrapper.insert("groups".into(), toml::Value::Array(vec![g.clone()]));
        kept.push_str(&toml::to_string(&toml::Value::Table(wrapper))?);
    }
    for r in &regions {
        kept.push_str(&format!(
            "\n[[domains]]\nprefix = \"/{r}/\"\ngroup = \"{owner}\"\n"
        ));
    }
    Ok(kept)
}

/// One workload combination.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mix {
    pub read_ratio: f64,
    pub locality: f64,
    pub burst: f64,
}

impl Scenario {
    /// Every combination of the scenario's lists, in file order.
    pub fn mixes(&self) -> Vec<Mix> {
        let mut out = Vec::new();
        for &read_ratio in &self.read_ratio {
            for &locality in &self.locality {
                for &burst in &self.burst {
                    out.push(Mix {
                        read_ratio,
                        locality,
                        burst,
                    });
                }
            }
        }
        out
    }
}

/// A small deterministic generator (xorshift64), so a seed fixes every choice.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // xorshift must not start at zero; splitmix the seed so nearby seeds diverge.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() % 1_000_000) as f64 / 1_000_000.0 < p
    }
}

/// Latency classes reported per region, in this order.
pub const KINDS: [&str; 4] = ["local read", "remote read", "local write", "remote write"];

/// The next operation a client of one region issues.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub key: String,
    pub read: bool,
    /// A read asked as linearizable.
    pub linearizable: bool,
    pub local: bool,
}

impl Step {
    /// Index into [`KINDS`].
    pub fn kind(&self) -> usize {
        match (self.local, self.read) {
            (true, true) => 0,
            (false, true) => 1,
            (true, false) => 2,
            (false, false) => 3,
        }
    }
}

/// One client's stream of operations: bursts of `mix.burst` consecutive operations on one
/// region's domain, that region being the client's own with probability `mix.locality`.
/// Keys are `/<region>/sim/k<n>`.
pub struct Workload {
    rng: Rng,
    mix: Mix,
    region: String,
    regions: Vec<String>,
    keys: u64,
    linearizable: f64,
    target: String,
    left_in_burst: f64,
}

impl Workload {
    pub fn new(s: &Scenario, mix: Mix, region: &str, regions: &[String], seed: u64) -> Self {
        Self {
            rng: Rng::new(seed),
            mix,
            region: region.to_string(),
            regions: regions.to_vec(),
            keys: s.keys_per_region,
            linearizable: s.linearizable_reads,
            target: region.to_string(),
            left_in_burst: 0.0,
        }
    }

    pub fn next_step(&mut self) -> Step {
        if self.left_in_burst < 1.0 {
            self.target = if self.rng.chance(self.mix.locality) || self.regions.len() < 2 {
                self.region.clone()
            } else {
                let others: Vec<&String> =
                    self.regions.iter().filter(|r| **r != self.region).collect();
                others[(self.rng.next_u64() % others.len() as u64) as usize].clone()
            };
            self.left_in_burst = self.mix.burst;
        }
        self.left_in_burst -= 1.0;
        let key = format!("/{}/sim/k{}", self.target, self.rng.next_u64() % self.keys);
        let read = self.rng.chance(self.mix.read_ratio);
        let linearizable = read && self.rng.chance(self.linearizable);
        Step {
            key,
            read,
            linearizable,
            local: self.target == self.region,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_topology::Topology;

    const TOPO: &str = include_str!("../../../topology/local-3region.toml");

    /// Every mode's topology is valid, and modes a/b give every domain one owner.
    #[test]
    fn mode_topologies_validate() {
        for mode in ["a", "b", "c", "d", "e"] {
            let text = mode_topology(TOPO, mode).expect("mode topology");
            let t = Topology::parse(&text, mode).unwrap_or_else(|e| panic!("mode {mode}: {e}"));
            let owners: std::collections::BTreeSet<_> =
                t.placement().domains().iter().map(|d| d.group).collect();
            match mode {
                "a" | "b" => assert_eq!(owners.len(), 1, "mode {mode}"),
                _ => assert_eq!(owners.len(), 4, "mode {mode}"),
            }
        }
    }

    #[test]
    fn bad_scenarios_are_explained() {
        let base = "name='x'\nmodes=['d']\nduration_s=1\nclients_per_region=1\n";
        for (text, words) in [
            (
                "name='x'\nmodes=['z']\nduration_s=1\nclients_per_region=1\n".to_string(),
                "unknown mode",
            ),
            (format!("{base}read_ratio=2\n"), "between 0 and 1"),
            (format!("{base}linearizable_reads=-1\n"), "between 0 and 1"),
            (
                "name='x'\nmodes=['d']\nduration_s=0\nclients_per_region=1\n".to_string(),
                "above 0",
            ),
            (format!("{base}burst=[0.5]\n"), "at least 1"),
            (format!("{base}colour=1\n"), "unknown field"),
            (
                format!("{base}[[moves]]\nat_s=1\nprefix='/a'\nto='g'\n"),
                "moves[0].prefix",
            ),
            (
                format!("{base}[[moves]]\nat_s=1\nprefix='/a/'\nto=' '\n"),
                "moves[0].to",
            ),
            (
                format!("{base}[[faults]]\nat_s=1\nkind='explode'\ntarget='us-east'\nfor_s=1\n"),
                "unknown variant",
            ),
            (
                format!("{base}[[faults]]\nat_s=1\nkind='crash'\ntarget='us-east'\nfor_s=0\n"),
                "for_s above 0",
            ),
            (
                format!("{base}[[faults]]\nat_s=1\nkind='crash'\ntarget='n1'\nfor_s=1\nwith_clients=['c0x0']\n"),
                "with_clients applies to a partition only",
            ),
            (format!("{base}clock_rates={{ node1 = 0.5 }}\n"), "not a node name"),
            (format!("{base}clock_rates={{ n1 = 0 }}\n"), "clock_rates.n1"),
            (format!("{base}clock_rates={{ n1 = 1e9 }}\n"), "between 0.01 and 100"),
            (format!("{base}random_faults=21\n"), "random_faults: 21 is more than 20"),
            (format!("{base}watchers=9\n"), "watchers: 9 pairs per region is more than 8"),
            (
                format!("{base}watchers=1\n[[moves]]\nat_s=1\nprefix='/us-east/'\nto='eu-west'\n"),
                "watchers and moves cannot be combined",
            ),
            (
                format!("{base}[[lockers]]\nregion='us-east'\nname='/l'\nhold_ms=10001\n"),
                "lockers: hold_ms 10001 of lock \"/l\" is more than 10000",
            ),
            (
                format!("{base}inject=['lose-everything']\n"),
                "unknown bug \"lose-everything\" (known: drop-watch-event, skip-sync, early-lock-grant, ack-before-fsync, read-before-closed)",
            ),
            (
                format!("{base}[[faults]]\nat_s=1\nkind='pause'\ntarget='n1'\nfor_s=1\nlose_unsynced=true\n"),
                "lose_unsynced applies to a crash only",
            ),
            (
                format!("{base}[[faults]]\nat_s=1\nkind='slow-disk'\ntarget='n1'\nfor_s=1\n"),
                "a slow-disk fault needs fsync_ms",
            ),
            (
                format!("{base}[[faults]]\nat_s=1\nkind='slow-disk'\ntarget='n1'\nfor_s=1\nfsync_ms=0\n"),
                "fsync_ms must be above 0",
            ),
            (
                format!("{base}[[faults]]\nat_s=1\nkind='crash'\ntarget='n1'\nfor_s=1\nfsync_ms=5\n"),
                "fsync_ms applies to a slow-disk fault only",
            ),
            (
                format!("{base}roamers=99\n"),
                "roamers: 99 is more than clients_per_region",
            ),
            (
                format!("{base}disk_fsync_ms=-1\n"),
                "disk_fsync_ms: -1 is not between 0 and 10000",
            ),
            (format!("{base}profile='sync'\n"), "mode e closes timestamps"),
            (format!("{base}profile='global'\n"), "unknown variant"),
        ] {
            let e = parse_scenario(&text, "s.toml").expect_err(&text);
            assert!(format!("{e:#}").contains(words), "{e:#} lacks {words:?}");
        }
        let s = parse_scenario(
            &format!("{base}read_ratio=[0.5,0.9]\nburst=25\n[[faults]]\nat_s=2\nkind='partition'\ntarget='eu-west'\nfor_s=3\n"),
            "s.toml",
        )
        .expect("scenario");
        assert_eq!(
            (s.read_ratio.len(), s.burst.clone(), s.locality.clone()),
            (2, vec![25.0], vec![1.0])
        );
        assert_eq!(s.faults[0].kind, FaultKind::Partition);
        assert_eq!(s.mixes().len(), 2);
        assert_eq!(s.profile, TimestampProfile::LocalWrites);
        let s = parse_scenario(&format!("{base}profile='global-reads'\n"), "s.toml").expect("ok");
        assert_eq!(s.profile, TimestampProfile::GlobalReads);
    }

    /// Bursts stay on one region; locality 1 never leaves home; the seed fixes the stream.
    #[test]
    fn workload_follows_the_mix() {
        let s = parse_scenario(
            "name='x'\nmodes=['d']\nduration_s=1\nclients_per_region=1\n",
            "s",
        )
        .expect("scenario");
        let regions: Vec<String> = ["a", "b", "c"].iter().map(|r| r.to_string()).collect();
        let mix = Mix {
            read_ratio: 0.5,
            locality: 0.0,
            burst: 5.0,
        };
        let mut w = Workload::new(&s, mix, "a", &regions, 7);
        let steps: Vec<Step> = (0..50).map(|_| w.next_step()).collect();
        for chunk in steps.chunks(5) {
            let region = chunk[0].key.split('/').nth(1).map(str::to_string);
            assert!(chunk
                .iter()
                .all(|st| st.key.split('/').nth(1).map(str::to_string) == region));
            assert!(chunk.iter().all(|st| !st.local), "locality 0 leaves home");
        }
        let mut again = Workload::new(&s, mix, "a", &regions, 7);
        assert_eq!(
            steps,
            (0..50).map(|_| again.next_step()).collect::<Vec<_>>()
        );
        let mut home = Workload::new(
            &s,
            Mix {
                locality: 1.0,
                ..mix
            },
            "a",
            &regions,
            7,
        );
        assert!((0..50).all(|_| home.next_step().local));
    }
}
