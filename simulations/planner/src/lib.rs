//! `meridian sim plan`: for each domain of a workload and each owner its policy allows — every
//! region's own group, or the global group — predict the latency clients in every region see
//! under Meridian's composition, and recommend the owner with the lowest mean latency per
//! operation (weighted by each region's operations).
//!
//! The model (docs/simulations.md), per client region C and owner O:
//! - **write**: forwarded to O's leader and committed there:
//!   `rtt(C, leader(O)) + commit(O)`; a regional group commits at home
//!   (`local_write_ms`), the global group with its nearest other voter region
//!   (`local_write_ms + rtt(leader, nearest voter)`), its leader taken in the voter region that
//!   minimizes the domain's mean;
//! - **sequential read**: served by C's replica (`local_read_ms`), plus a sync — one round trip
//!   to O's leader, `rtt(C, leader(O))` — on the first read of a burst (the router syncs when a
//!   session switches groups): `1 / burst` of reads pay it;
//! - **linearizable read**: always the sync.
//!
//! Then, at the recommended owner, each way of making switch reads consistent
//! (docs/closed-timestamps.md), and a recommendation between the two timestamp profiles:
//! - **sync** (sync-before-read, the cluster-wide default): as above;
//! - **local-writes**: a sequential read that switches waits for the local replica's closed
//!   timestamp, about the one-way delay from the leader plus half a close interval, instead of
//!   the round trip; writes as above;
//! - **global-reads**: sequential reads are local; a write waits out the lead (the topology's
//!   farthest one-way delay plus the maximum clock offset), overlapping its commit:
//!   `rtt(C, leader) + max(commit, lead)`.
//!
//! Pure computation: no IO beyond the caller reading the files.

use meridian_topology::{GroupKind, Topology};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{source_name}: malformed workload: {message}")]
    Malformed {
        source_name: String,
        message: String,
    },
    #[error("{source_name}: {message}")]
    Invalid {
        source_name: String,
        message: String,
    },
}

/// The workload file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// A local (home-region) commit, ms.
    #[serde(default = "default_write_ms")]
    pub local_write_ms: f64,
    /// A read served by the local replica, ms.
    #[serde(default = "default_read_ms")]
    pub local_read_ms: f64,
    /// The nodes' maximum clock offset (`global-reads` closes ahead by it), ms.
    #[serde(default = "default_offset_ms")]
    pub max_clock_offset_ms: f64,
    /// How often a leader closes timestamps (`[timestamps] close_interval_ms`), ms.
    #[serde(default = "default_close_ms")]
    pub close_interval_ms: f64,
    #[serde(rename = "domain")]
    pub domains: Vec<DomainLoad>,
}

fn default_write_ms() -> f64 {
    1.5
}

fn default_read_ms() -> f64 {
    0.3
}

fn default_offset_ms() -> f64 {
    250.0
}

fn default_close_ms() -> f64 {
    10.0
}

fn default_burst() -> f64 {
    1.0
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainLoad {
    pub prefix: String,
    /// Share of reads among operations (0..=1).
    pub read_ratio: f64,
    /// Share of reads that are linearizable (0..=1); the rest are sequential.
    #[serde(default)]
    pub linearizable_ratio: f64,
    /// Consecutive operations a session makes on this domain before switching.
    #[serde(default = "default_burst")]
    pub burst: f64,
    /// Operations per second from each region.
    pub clients: BTreeMap<String, f64>,
    /// Policy: the regions allowed to own the data (default: all).
    #[serde(default)]
    pub allowed: Option<Vec<String>>,
    /// Policy: region tags the owner must carry (e.g. `{ jurisdiction = "eu" }`).
    #[serde(default)]
    pub require_tags: BTreeMap<String, String>,
    /// Whether the global group (voters in several regions) may own it; it must also satisfy
    /// the policy in every voter region.
    #[serde(default = "default_true")]
    pub global_allowed: bool,
}

fn default_true() -> bool {
    true
}

/// An owner candidate: a region's own group, or the global group led from a region.
#[derive(Clone, Debug, PartialEq)]
pub enum Owner {
    Region(String),
    Global { leader: String },
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::Region(r) => write!(f, "{r}"),
            Owner::Global { leader } => write!(f, "global (leader {leader})"),
        }
    }
}

/// Predicted latency for clients of one region.
#[derive(Clone, Debug, PartialEq)]
pub struct RegionLatency {
    pub region: String,
    pub ops_per_sec: f64,
    pub read_ms: f64,
    pub write_ms: f64,
    pub mean_ms: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub owner: Owner,
    pub per_region: Vec<RegionLatency>,
    /// Mean latency per operation over all regions' operations.
    pub weighted_ms: f64,
}

/// How switch reads stay consistent (docs/closed-timestamps.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadProfile {
    Sync,
    LocalWrites,
    GlobalReads,
}

impl std::fmt::Display for ReadProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReadProfile::Sync => "sync",
            ReadProfile::LocalWrites => "local-writes",
            ReadProfile::GlobalReads => "global-reads",
        })
    }
}

/// One profile's prediction at the recommended owner.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileEstimate {
    pub profile: ReadProfile,
    pub per_region: Vec<RegionLatency>,
    pub weighted_ms: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DomainPlan {
    pub prefix: String,
    pub candidates: Vec<Candidate>,
    /// Index into `candidates` of the recommendation (lowest `weighted_ms`).
    pub recommended: usize,
    /// Each profile at the recommended owner: sync, local-writes, global-reads.
    pub profiles: Vec<ProfileEstimate>,
    /// The timestamp profile to set (`meridian placement set-profile`): the faster of
    /// local-writes and global-reads.
    pub recommended_profile: ReadProfile,
    /// Regions the policy excluded, and why.
    pub excluded: Vec<(String, String)>,
}

impl Workload {
    pub fn parse(text: &str, source_name: &str) -> Result<Workload, PlanError> {
        toml::from_str(text).map_err(|e| PlanError::Malformed {
            source_name: source_name.to_string(),
            message: e.to_string(),
        })
    }
}

fn invalid(source_name: &str, message: String) -> PlanError {
    PlanError::Invalid {
        source_name: source_name.to_string(),
        message,
    }
}

/// Plans every domain of `w` on `t`.
pub fn plan(t: &Topology, w: &Workload, source_name: &str) -> Result<Vec<DomainPlan>, PlanError> {
    for (what, v) in [
        ("local_write_ms", w.local_write_ms),
        ("local_read_ms", w.local_read_ms),
        ("max_clock_offset_ms", w.max_clock_offset_ms),
        ("close_interval_ms", w.close_interval_ms),
    ] {
        if !v.is_finite() || v < 0.0 {
            return Err(invalid(
                source_name,
                format!("{what} must be a non-negative number"),
            ));
        }
    }
    if w.domains.is_empty() {
        return Err(invalid(
            source_name,
            "the workload names no [[domain]]".into(),
        ));
    }
    w.domains
        .iter()
        .map(|d| plan_domain(t, w, d, source_name))
        .collect()
}

fn check_domain(t: &Topology, d: &DomainLoad, source_name: &str) -> Result<(), PlanError> {
    let bad = |m: String| invalid(source_name, format!("domain {:?}: {m}", d.prefix));
    for (what, v) in [
        ("read_ratio", d.read_ratio),
        ("linearizable_ratio", d.linearizable_ratio),
    ] {
        if !(0.0..=1.0).contains(&v) {
            return Err(bad(format!("{what} must be between 0 and 1, not {v}")));
        }
    }
    if !d.burst.is_finite() || d.burst < 1.0 {
        return Err(bad(format!("burst must be at least 1, not {}", d.burst)));
    }
    if d.clients.is_empty() {
        return Err(bad(
            "no [domain.clients]: say how many operations per second come from which region".into(),
        ));
    }
    let known: Vec<&str> = t.regions.iter().map(|r| r.name.as_str()).collect();
    let names = d.clients.keys().chain(d.allowed.iter().flatten());
    for r in names {
        if !known.contains(&r.as_str()) {
            return Err(bad(format!(
                "unknown region {r:?}; the topology has {}",
                known.join(", ")
            )));
        }
    }
    for (r, ops) in &d.clients {
        if !ops.is_finite() || *ops < 0.0 {
            return Err(bad(format!(
                "clients.{r} must be a non-negative rate, not {ops}"
            )));
        }
    }
    if d.clients.values().sum::<f64>() <= 0.0 {
        return Err(bad("every region's rate is 0".into()));
    }
    Ok(())
}

/// Why `region` may not own the domain, if it may not.
fn policy_refuses(t: &Topology, d: &DomainLoad, region: &str) -> Option<String> {
    if let Some(allowed) = &d.allowed {
        if !allowed.iter().any(|a| a == region) {
            return Some("not in `allowed`".into());
        }
    }
    let tags = t.region(region).map(|r| &r.tags);
    for (k, v) in &d.require_tags {
        if tags.and_then(|t| t.get(k)) != Some(v) {
            return Some(format!("lacks tag {k} = {v:?}"));
        }
    }
    None
}

fn plan_domain(
    t: &Topology,
    w: &Workload,
    d: &DomainLoad,
    source_name: &str,
) -> Result<DomainPlan, PlanError> {
    check_domain(t, d, source_name)?;
    let mut candidates = Vec::new();
    let mut excluded = Vec::new();
    for r in &t.regions {
        match policy_refuses(t, d, &r.name) {
            Some(why) => excluded.push((r.name.clone(), why)),
            None => candidates.push(evaluate(
                t,
                w,
                d,
                Owner::Region(r.name.clone()),
                w.local_write_ms,
            )),
        }
    }
    // The global group: every voter region must satisfy the policy.
    if d.global_allowed {
        if let Some(g) = t.groups.iter().find(|g| g.kind == GroupKind::Global) {
            let mut regions: Vec<String> =
                t.voters(g.id).iter().map(|n| n.region.clone()).collect();
            regions.sort();
            regions.dedup();
            let refused = regions
                .iter()
                .find_map(|r| policy_refuses(t, d, r).map(|w| (r.clone(), w)));
            match refused {
                Some((r, why)) => excluded.push((
                    format!("global ({})", g.name),
                    format!("voter region {r} {why}"),
                )),
                None => {
                    // Its commit: the leader plus the nearest other voter region.
                    let best = regions
                        .iter()
                        .map(|leader| {
                            let nearest = regions
                                .iter()
                                .filter(|r| *r != leader)
                                .map(|r| t.rtt_ms(leader, r))
                                .min()
                                .unwrap_or(0);
                            evaluate(
                                t,
                                w,
                                d,
                                Owner::Global {
                                    leader: leader.clone(),
                                },
                                w.local_write_ms + nearest as f64,
                            )
                        })
                        .min_by(|a, b| a.weighted_ms.total_cmp(&b.weighted_ms));
                    candidates.extend(best);
                }
            }
        }
    }
    if candidates.is_empty() {
        return Err(invalid(
            source_name,
            format!(
                "domain {:?}: no region satisfies its policy ({})",
                d.prefix,
                excluded
                    .iter()
                    .map(|(r, w)| format!("{r}: {w}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        ));
    }
    let recommended = candidates
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.weighted_ms.total_cmp(&b.1.weighted_ms))
        .map_or(0, |(i, _)| i);
    let owner = &candidates[recommended];
    let profiles: Vec<ProfileEstimate> = [
        ReadProfile::Sync,
        ReadProfile::LocalWrites,
        ReadProfile::GlobalReads,
    ]
    .into_iter()
    .map(|p| profile_estimate(t, w, d, owner, p))
    .collect();
    let recommended_profile = profiles
        .iter()
        .filter(|p| p.profile != ReadProfile::Sync)
        .min_by(|a, b| a.weighted_ms.total_cmp(&b.weighted_ms))
        .map_or(ReadProfile::LocalWrites, |p| p.profile);
    Ok(DomainPlan {
        prefix: d.prefix.clone(),
        candidates,
        recommended,
        profiles,
        recommended_profile,
        excluded,
    })
}

/// The farthest one-way delay between two regions of `t`, ms.
fn farthest_one_way_ms(t: &Topology) -> f64 {
    t.regions
        .iter()
        .flat_map(|a| t.regions.iter().map(|b| t.rtt_ms(&a.name, &b.name)))
        .max()
        .unwrap_or(0) as f64
        / 2.0
}

/// `owner`'s latencies under `profile`: reads and writes per region, from the sync prediction
/// (`owner.per_region`).
fn profile_estimate(
    t: &Topology,
    w: &Workload,
    d: &DomainLoad,
    owner: &Candidate,
    profile: ReadProfile,
) -> ProfileEstimate {
    let leader = match &owner.owner {
        Owner::Region(r) => r.clone(),
        Owner::Global { leader } => leader.clone(),
    };
    let lead = farthest_one_way_ms(t) + w.max_clock_offset_ms;
    let mut total = 0.0;
    let mut total_ops = 0.0;
    let per_region: Vec<RegionLatency> = owner
        .per_region
        .iter()
        .map(|r| {
            let rtt = t.rtt_ms(&r.region, &leader) as f64;
            let linearizable = w.local_read_ms + rtt;
            let (read_ms, write_ms) = match profile {
                ReadProfile::Sync => (r.read_ms, r.write_ms),
                ReadProfile::LocalWrites => {
                    let wait = rtt / 2.0 + w.close_interval_ms / 2.0;
                    // A switch — the first read of a burst — waits.
                    let sequential = w.local_read_ms + wait / d.burst;
                    (
                        d.linearizable_ratio * linearizable
                            + (1.0 - d.linearizable_ratio) * sequential,
                        r.write_ms,
                    )
                }
                ReadProfile::GlobalReads => {
                    let commit = r.write_ms - rtt;
                    (
                        d.linearizable_ratio * linearizable
                            + (1.0 - d.linearizable_ratio) * w.local_read_ms,
                        rtt + commit.max(lead),
                    )
                }
            };
            let mean_ms = d.read_ratio * read_ms + (1.0 - d.read_ratio) * write_ms;
            if r.ops_per_sec > 0.0 {
                total += r.ops_per_sec * mean_ms;
                total_ops += r.ops_per_sec;
            }
            RegionLatency {
                region: r.region.clone(),
                ops_per_sec: r.ops_per_sec,
                read_ms,
                write_ms,
                mean_ms,
            }
        })
        .collect();
    ProfileEstimate {
        profile,
        per_region,
        weighted_ms: if total_ops > 0.0 {
            total / total_ops
        } else {
            0.0
        },
    }
}

fn evaluate(t: &Topology, w: &Workload, d: &DomainLoad, owner: Owner, commit_ms: f64) -> Candidate {
    let leader = match &owner {
        Owner::Region(r) => r.clone(),
        Owner::Global { leader } => leader.clone(),
    };
    let mut per_region = Vec::new();
    let mut total_ops = 0.0;
    let mut total = 0.0;
    for r in &t.regions {
        let ops = d.clients.get(&r.name).copied().unwrap_or(0.0);
        let rtt = t.rtt_ms(&r.name, &leader) as f64;
        let write_ms = rtt + commit_ms;
        let sync_share = d.linearizable_ratio + (1.0 - d.linearizable_ratio) / d.burst;
        let read_ms = w.local_read_ms + sync_share * rtt;
        let mean_ms = d.read_ratio * read_ms + (1.0 - d.read_ratio) * write_ms;
        if ops > 0.0 {
            total_ops += ops;
            total += ops * mean_ms;
        }
        per_region.push(RegionLatency {
            region: r.name.clone(),
            ops_per_sec: ops,
            read_ms,
            write_ms,
            mean_ms,
        });
    }
    Candidate {
        owner,
        per_region,
        weighted_ms: if total_ops > 0.0 {
            total / total_ops
        } else {
            0.0
        },
    }
}

/// The plan as a terminal table.
pub fn render(plans: &[DomainPlan]) -> String {
    let mut out = String::new();
    for p in plans {
        out.push_str(&format!("domain {}\n", p.prefix));
        let regions: Vec<&str> = p
            .candidates
            .first()
            .map(|c| c.per_region.iter().map(|r| r.region.as_str()).collect())
            .unwrap_or_default();
        out.push_str(&format!("  {:<30}", "owner"));
        for r in &regions {
            out.push_str(&format!(" {:>22}", format!("{r} read/write ms")));
        }
        out.push_str(&format!(" {:>12}\n", "mean ms/op"));
        for (i, c) in p.candidates.iter().enumerate() {
            let mark = if i == p.recommended { "*" } else { " " };
            out.push_str(&format!("{mark} {:<30}", c.owner.to_string()));
            for r in &c.per_region {
                out.push_str(&format!(
                    " {:>22}",
                    format!("{:.1} / {:.1}", r.read_ms, r.write_ms)
                ));
            }
            out.push_str(&format!(" {:>12.2}\n", c.weighted_ms));
        }
        for (r, why) in &p.excluded {
            out.push_str(&format!("  excluded {r}: {why}\n"));
        }
        if let Some(c) = p.candidates.get(p.recommended) {
            out.push_str(&format!(
                "  recommended owner: {} ({:.2} ms per operation)\n",
                c.owner, c.weighted_ms
            ));
        }
        out.push_str("  at that owner, by how switch reads stay consistent:\n");
        for e in &p.profiles {
            let mark = if e.profile == p.recommended_profile {
                "*"
            } else {
                " "
            };
            out.push_str(&format!("{mark} {:<30}", e.profile.to_string()));
            for r in &e.per_region {
                out.push_str(&format!(
                    " {:>22}",
                    format!("{:.1} / {:.1}", r.read_ms, r.write_ms)
                ));
            }
            out.push_str(&format!(" {:>12.2}\n", e.weighted_ms));
        }
        out.push_str(&format!(
            "  recommended profile: {} (meridian placement set-profile {} {}; sync is the \
             cluster-wide fallback)\n\n",
            p.recommended_profile, p.prefix, p.recommended_profile
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology() -> Topology {
        Topology::parse(
            include_str!("../../../topology/local-3region.toml"),
            "local-3region.toml",
        )
        .expect("shipped topology")
    }

    fn workload(text: &str) -> Workload {
        Workload::parse(text, "w.toml").expect("workload")
    }

    /// Read everywhere, written rarely: global-reads (reads local everywhere) beats
    /// local-writes; written often from home and read from afar: local-writes (no commit
    /// wait). Either way a switch read under local-writes costs less than the sync's round trip.
    #[test]
    fn the_profile_follows_the_mix() {
        let w = workload(
            r#"
            [[domain]]
            prefix = "/config/"
            read_ratio = 0.99
            global_allowed = false
            allowed = ["us-east"]
            clients = { us-east = 10, eu-west = 500, ap-northeast = 500 }
            "#,
        );
        let p = &plan(&topology(), &w, "w.toml").expect("plan")[0];
        assert_eq!(p.recommended_profile, ReadProfile::GlobalReads);
        let of = |p: &DomainPlan, profile| {
            p.profiles
                .iter()
                .find(|e| e.profile == profile)
                .expect("estimated")
                .clone()
        };
        let (sync, local) = (of(p, ReadProfile::Sync), of(p, ReadProfile::LocalWrites));
        let eu = |e: &ProfileEstimate| {
            e.per_region
                .iter()
                .find(|r| r.region == "eu-west")
                .expect("eu-west")
                .read_ms
        };
        // us-east ↔ eu-west: 75 ms round trip; local-writes waits half of it plus 5 ms.
        assert!((eu(&sync) - (0.3 + 75.0)).abs() < 1e-9, "{sync:?}");
        assert!((eu(&local) - (0.3 + 37.5 + 5.0)).abs() < 1e-9, "{local:?}");
        let global = of(p, ReadProfile::GlobalReads);
        assert!((eu(&global) - 0.3).abs() < 1e-9, "{global:?}");

        let w = workload(
            r#"
            [[domain]]
            prefix = "/orders/"
            read_ratio = 0.3
            global_allowed = false
            allowed = ["us-east"]
            clients = { us-east = 1000, eu-west = 10 }
            "#,
        );
        let p = &plan(&topology(), &w, "w.toml").expect("plan")[0];
        assert_eq!(p.recommended_profile, ReadProfile::LocalWrites);
        assert!(render(std::slice::from_ref(p)).contains("recommended profile: local-writes"));
    }

    /// Write-heavy data belongs where its writers are.
    #[test]
    fn writers_pull_the_owner_home() {
        let w = workload(
            r#"
            [[domain]]
            prefix = "/orders/"
            read_ratio = 0.1
            global_allowed = false
            clients = { us-east = 10, eu-west = 500, ap-northeast = 10 }
            "#,
        );
        let p = plan(&topology(), &w, "w.toml").expect("plan");
        let best = &p[0].candidates[p[0].recommended];
        assert_eq!(best.owner, Owner::Region("eu-west".into()));
        // eu-west's own clients: local writes.
        let eu = best
            .per_region
            .iter()
            .find(|r| r.region == "eu-west")
            .expect("eu-west");
        assert!((eu.write_ms - 1.5).abs() < 1e-9, "{eu:?}");
    }

    /// A policy removes candidates, and says why; with nothing left, a clear error.
    #[test]
    fn policy_limits_the_candidates() {
        let w = workload(
            r#"
            [[domain]]
            prefix = "/eu-data/"
            read_ratio = 0.5
            require_tags = { jurisdiction = "eu" }
            clients = { us-east = 1000, eu-west = 1 }
            "#,
        );
        let p = plan(&topology(), &w, "w.toml").expect("plan");
        assert_eq!(p[0].candidates.len(), 1, "{:?}", p[0].candidates);
        assert_eq!(p[0].candidates[0].owner, Owner::Region("eu-west".into()));
        assert!(p[0]
            .excluded
            .iter()
            .any(|(r, why)| r == "us-east" && why.contains("jurisdiction")));
        let none = workload(
            r#"
            [[domain]]
            prefix = "/x/"
            read_ratio = 0.5
            allowed = []
            clients = { us-east = 1 }
            "#,
        );
        let e = plan(&topology(), &none, "w.toml").expect_err("no candidate");
        assert!(
            e.to_string().contains("no region satisfies its policy"),
            "{e}"
        );
    }

    /// Longer bursts amortize syncs: remote reads approach local reads.
    #[test]
    fn bursts_amortize_syncs() {
        let text = |burst: u32| {
            format!(
            "[[domain]]\nprefix = \"/c/\"\nread_ratio = 1.0\nburst = {burst}\nglobal_allowed = false\nallowed = [\"us-east\"]\nclients = {{ eu-west = 1 }}\n"
        )
        };
        let one = plan(&topology(), &workload(&text(1)), "w").expect("plan");
        let many = plan(&topology(), &workload(&text(25)), "w").expect("plan");
        let r1 = one[0].candidates[0].weighted_ms;
        let r25 = many[0].candidates[0].weighted_ms;
        assert!((r1 - (0.3 + 75.0)).abs() < 1e-9, "{r1}");
        assert!((r25 - (0.3 + 3.0)).abs() < 1e-9, "{r25}");
    }

    /// Bad workloads get errors that name the domain and the rule.
    #[test]
    fn bad_workloads_are_explained() {
        for (text, words) in [
            ("[[domain]]\nprefix = \"/a/\"\nread_ratio = 2.0\nclients = { us-east = 1 }\n", "read_ratio must be between 0 and 1"),
            ("[[domain]]\nprefix = \"/a/\"\nread_ratio = 0.5\nclients = { mars = 1 }\n", "unknown region \"mars\""),
            ("[[domain]]\nprefix = \"/a/\"\nread_ratio = 0.5\nburst = 0.5\nclients = { us-east = 1 }\n", "burst must be at least 1"),
            ("[[domain]]\nprefix = \"/a/\"\nread_ratio = 0.5\nclients = {}\n", "no [domain.clients]"),
            ("domain = []\n", "names no [[domain]]"),
        ] {
            let w = workload(text);
            let e = plan(&topology(), &w, "w.toml").expect_err(text);
            assert!(e.to_string().contains(words), "{e} lacks {words:?}");
        }
        let e = Workload::parse("[[domain]]\nprefix = 3\n", "w.toml").expect_err("malformed");
        assert!(
            e.to_string().starts_with("w.toml: malformed workload"),
            "{e}"
        );
    }

    /// The global group is a candidate: slower writes for everyone, but no region is far.
    #[test]
    fn global_group_is_weighed() {
        let w = workload(
            r#"
            [[domain]]
            prefix = "/cfg/"
            read_ratio = 0.99
            burst = 1
            clients = { us-east = 100, eu-west = 100, ap-northeast = 100 }
            "#,
        );
        let p = plan(&topology(), &w, "w.toml").expect("plan");
        assert!(p[0]
            .candidates
            .iter()
            .any(|c| matches!(c.owner, Owner::Global { .. })));
        let table = render(&p);
        assert!(table.contains("recommended owner"), "{table}");
    }
}
