//! The router's view of the placement map (DESIGN.md §7) and the `Placement` service.
//!
//! The map lives in the global group (`meridian_storage::placement`). Every router follows it
//! through its local replica of that group: each applied batch that moved the map's epoch
//! installs the new map here, so a change reaches every region in about one round trip (the
//! learners hear of commits at once). Until the global group has committed a map — or on a
//! node without a replica of it — the router uses the topology file's map at epoch 0.
//!
//! The global group's leader seeds the map from the topology once ([`seed`]); after that the
//! committed map is the truth and survives restarts.

use crate::error::{Error, Result};
use crate::proposer::{Proposer, WriteError};
use meridian_placement::Placement;
use meridian_proto::kv as pb;
use meridian_storage::GroupShared;
use meridian_types::{
    Command, CommandResult, GroupId, PlacementChange, PlacementMap, Policy, PolicyMode, Selector,
};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// How often the seeding task looks again while the global group has no map or no leader here.
const SEED_RETRY: Duration = Duration::from_millis(500);

/// One installed map and its lookup.
pub struct Current {
    pub map: PlacementMap,
    pub lookup: Placement,
}

/// The map this router routes by; replaced whole when the epoch moves.
pub struct PlacementView {
    current: RwLock<Arc<Current>>,
    epoch: watch::Sender<u64>,
}

impl PlacementView {
    pub fn new(map: PlacementMap) -> Self {
        let epoch = map.epoch;
        Self {
            current: RwLock::new(Arc::new(Current {
                lookup: Placement::of_map(&map),
                map,
            })),
            epoch: watch::channel(epoch).0,
        }
    }

    pub fn current(&self) -> Arc<Current> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn epoch(&self) -> u64 {
        *self.epoch.borrow()
    }

    /// Installs `map` if it is newer than the one in use.
    pub fn install(&self, map: PlacementMap) {
        if map.epoch == 0 || map.epoch <= self.epoch() {
            return;
        }
        let epoch = map.epoch;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Current {
            lookup: Placement::of_map(&map),
            map,
        });
        self.epoch.send_replace(epoch);
    }

    /// Wakes on every newly installed epoch.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.epoch.subscribe()
    }

    /// Waits (bounded) until the installed map is at `epoch` or later.
    pub async fn wait_epoch(&self, epoch: u64, timeout: Duration) -> bool {
        let mut rx = self.epoch.subscribe();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|e| *e >= epoch)).await;
        matches!(reached, Ok(Ok(_)))
    }
}

/// Follows the global group's local replica: installs every new map it applies. Ends on
/// shutdown.
pub async fn follow(
    view: Arc<PlacementView>,
    global: Arc<GroupShared>,
    shutdown: watch::Receiver<bool>,
) {
    // Most applied batches of the global group are locks and leases: decode the map only
    // when its epoch moved past the one installed.
    each_apply(global, shutdown, |g| {
        let newer = g.read().placement_epoch().is_some_and(|e| e > view.epoch());
        if newer {
            if let Some(map) = g.read().placement_map() {
                view.install(map);
            }
        }
    })
    .await
}

/// Runs `look` at once and again after every batch the global group's local replica applies,
/// until shutdown (or the group stops). What follows the global group — the placement map, the
/// token revocation list — looks each time at the one key whose revision says whether its
/// state moved.
pub async fn each_apply(
    global: Arc<GroupShared>,
    mut shutdown: watch::Receiver<bool>,
    mut look: impl FnMut(&GroupShared),
) {
    let mut notices = global.subscribe();
    loop {
        look(&global);
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            n = notices.recv() => {
                if let Err(tokio::sync::broadcast::error::RecvError::Closed) = n {
                    return;
                }
            }
        }
    }
}

/// On a voter of the global group: proposes the topology's map until the group holds one.
/// Every voter runs this; only the leader's proposal goes through, and the state machine takes
/// only the first seed, so repeating it is harmless.
pub async fn seed(
    proposer: Proposer,
    global: Arc<GroupShared>,
    seed: PlacementMap,
    mut shutdown: watch::Receiver<bool>,
) {
    let group = global.group;
    loop {
        if global.read().placement_epoch().is_some() {
            return;
        }
        match proposer
            .propose(Command::Placement(PlacementChange::Seed(seed.clone())))
            .await
        {
            Ok(Ok((rev, CommandResult::Applied))) => {
                tracing::info!(%group, epoch = rev, "placement map seeded from the topology");
            }
            Ok(Ok((_, CommandResult::Rejected(r)))) => {
                // The topology check refuses such a map; this means a bug, not bad input.
                tracing::error!(%group, rule = %r.rule, "the topology's placement map was refused: {}", r.message);
                return;
            }
            Ok(Ok(_)) | Ok(Err(WriteError::ForwardToLeader { .. })) => {}
            Ok(Err(WriteError::Failed(e))) => {
                tracing::debug!(%group, "seeding the placement map: {e}")
            }
            Err(e) => tracing::debug!(%group, "seeding the placement map: {e}"),
        }
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(SEED_RETRY) => {}
        }
    }
}

/// The map as the wire shows it.
pub fn map_out(map: &PlacementMap, node: u64, region: &str) -> pb::PlacementShowResponse {
    let name = |g: &GroupId| {
        map.groups
            .get(g)
            .map(|g| g.name.clone())
            .unwrap_or_default()
    };
    let counts = |m: &std::collections::BTreeMap<String, u32>| -> Vec<pb::RegionCount> {
        m.iter()
            .map(|(region, nodes)| pb::RegionCount {
                region: region.clone(),
                nodes: *nodes,
            })
            .collect()
    };
    pb::PlacementShowResponse {
        epoch: map.epoch,
        domains: map
            .domains
            .iter()
            .map(|d| pb::PlacementDomain {
                prefix: d.prefix.clone(),
                group: d.group.0,
                group_name: name(&d.group),
                policy: d.policy.as_ref().map(policy_out),
                moving: d.moving.as_ref().map(|m| pb::PlacementMoveState {
                    id: m.id,
                    from: m.from.0,
                    to: m.to.0,
                    to_name: name(&m.to),
                    step: m.step.to_string(),
                }),
                since: d.since,
                profile: map
                    .profiles
                    .get(&d.prefix)
                    .map_or(String::new(), ToString::to_string),
                state: match &d.moving {
                    None => "serving".into(),
                    Some(m) => format!(
                        "moving to {} ({}, move {})",
                        map.groups
                            .get(&m.to)
                            .map_or(m.to.to_string(), |g| g.name.clone()),
                        m.step,
                        m.id
                    ),
                },
            })
            .collect(),
        groups: map
            .groups
            .iter()
            .map(|(id, g)| pb::PlacementGroup {
                id: id.0,
                name: g.name.clone(),
                voters: counts(&g.voters),
                learners: counts(&g.learners),
            })
            .collect(),
        node,
        region: region.to_string(),
        moves_done: map
            .moves_done
            .iter()
            .map(|r| pb::PlacementMoveRecord {
                prefix: r.prefix.clone(),
                id: r.id,
                from: r.from.0,
                to: r.to.0,
                aborted: r.aborted.is_some(),
                reason: r.aborted.clone().unwrap_or_default(),
                epoch: r.epoch,
            })
            .collect(),
    }
}

pub fn policy_out(p: &Policy) -> pb::PlacementPolicy {
    pb::PlacementPolicy {
        allowed: p.allowed.iter().map(|s| s.to_string()).collect(),
        mode: p.mode.to_string(),
    }
}

/// A policy from the wire; every problem named.
pub fn policy_in(p: &pb::PlacementPolicy) -> Result<Policy> {
    let mode = match p.mode.as_str() {
        "" | "forward" => PolicyMode::Forward,
        "strict" => PolicyMode::Strict,
        other => {
            return Err(Error::invalid(
                "bad_policy",
                "policy.mode",
                format!("unknown policy mode {other:?}: \"forward\" or \"strict\""),
            ))
        }
    };
    let mut allowed = Vec::new();
    for a in &p.allowed {
        let a = a.trim();
        if a.is_empty() || a.starts_with(':') || a.ends_with(':') {
            return Err(Error::invalid(
                "bad_policy",
                "policy.allowed",
                format!("{a:?} is neither a region name nor a tag written key:value"),
            ));
        }
        allowed.push(Selector::parse(a));
    }
    Ok(Policy { allowed, mode })
}
