//! The validated topology and the questions the rest of Meridian asks it: who votes and who
//! learns in a group, which groups a node hosts, how far apart a group's members are.

use meridian_placement::Placement;
use meridian_types::{GroupId, GroupPlacement, PlacementMap};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Regions, nodes, round trips, groups and domains, as checked by [`Topology::parse`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Topology {
    pub name: String,
    pub regions: Vec<Region>,
    pub nodes: Vec<NodeSpec>,
    pub groups: Vec<GroupSpec>,
    pub domains: Vec<Domain>,
    /// Round trips in ms, both directions present, distinct regions only (the same region is 0).
    pub(crate) rtt_ms: BTreeMap<String, BTreeMap<String, u64>>,
}

/// A datacenter or cloud region.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Region {
    pub name: String,
    /// Free-form labels that placement policies match, e.g. `jurisdiction = "eu"`.
    pub tags: BTreeMap<String, String>,
}

/// One `meridian` server process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeSpec {
    pub id: u64,
    pub region: String,
    /// `host:port` of the node's peer and client endpoint.
    pub address: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupKind {
    /// Voters all in one home region; learners in other regions.
    Regional,
    /// Voters spread over at least 3 regions; survives the loss of any one region.
    Global,
}

/// One Raft group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupSpec {
    pub id: GroupId,
    pub name: String,
    pub kind: GroupKind,
    /// The region of a regional group's voters; `None` for the global group.
    pub home: Option<String>,
    /// Node ids.
    pub voters: Vec<u64>,
    /// Every node of each of these regions hosts a learner of the group.
    pub learner_regions: Vec<String>,
}

/// A key prefix, the group that owns it, and its residency policy.
pub type Domain = meridian_types::DomainPlacement;

/// How a node takes part in a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Voter,
    Learner,
}

impl Topology {
    /// The single-region shape used when a node is configured with a plain peer list: one
    /// region `region`, the given nodes as voters of group 1 named after the region, owning
    /// domain "/". No round trips, no global group.
    ///
    /// Built directly, without validation: a 1-node dev cluster is legitimate here.
    pub fn single_region(region: &str, nodes: &[(u64, String)]) -> Topology {
        let mut voters: Vec<u64> = nodes.iter().map(|(id, _)| *id).collect();
        voters.sort_unstable();
        voters.dedup();
        Topology {
            name: region.to_string(),
            regions: vec![Region {
                name: region.to_string(),
                tags: BTreeMap::new(),
            }],
            nodes: nodes
                .iter()
                .map(|(id, address)| NodeSpec {
                    id: *id,
                    region: region.to_string(),
                    address: address.clone(),
                })
                .collect(),
            groups: vec![GroupSpec {
                id: GroupId(1),
                name: region.to_string(),
                kind: GroupKind::Regional,
                home: Some(region.to_string()),
                voters,
                learner_regions: Vec::new(),
            }],
            domains: vec![Domain {
                prefix: "/".to_string(),
                group: GroupId(1),
                policy: None,
                moving: None,
                since: 0,
            }],
            rtt_ms: BTreeMap::new(),
        }
    }

    pub fn node(&self, id: u64) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.id == id)
    }

    pub fn region(&self, name: &str) -> Option<&Region> {
        self.regions.iter().find(|r| r.name == name)
    }

    pub fn group(&self, id: GroupId) -> Option<&GroupSpec> {
        self.groups.iter().find(|g| g.id == id)
    }

    pub fn group_by_name(&self, name: &str) -> Option<&GroupSpec> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// Round trip in ms between two regions; 0 for the same region or unknown pairs.
    pub fn rtt_ms(&self, a: &str, b: &str) -> u64 {
        self.rtt_ms
            .get(a)
            .and_then(|row| row.get(b))
            .copied()
            .unwrap_or(0)
    }

    /// Nodes hosting a voter of `group`, sorted by id.
    pub fn voters(&self, group: GroupId) -> Vec<&NodeSpec> {
        let Some(spec) = self.group(group) else {
            return Vec::new();
        };
        self.sorted_nodes(|n| spec.voters.contains(&n.id))
    }

    /// Nodes hosting a learner of `group`, sorted by id: every node of each learner region
    /// and, for the global group only, every non-voter node of a region that holds one of its
    /// voters (so every node of a voter region has the global group locally).
    pub fn learners(&self, group: GroupId) -> Vec<&NodeSpec> {
        let Some(spec) = self.group(group) else {
            return Vec::new();
        };
        let voter_regions: BTreeSet<&str> = match spec.kind {
            GroupKind::Global => self
                .voters(group)
                .into_iter()
                .map(|n| n.region.as_str())
                .collect(),
            GroupKind::Regional => BTreeSet::new(),
        };
        self.sorted_nodes(|n| {
            !spec.voters.contains(&n.id)
                && (spec.learner_regions.contains(&n.region)
                    || voter_regions.contains(n.region.as_str()))
        })
    }

    /// How `group`'s live membership (`voters`, `learners`: node ids) differs from what this
    /// topology says, one line per difference, empty when they agree. A replaced node, a
    /// learner promoted by hand, a member added outside the topology file show here.
    pub fn drift(
        &self,
        group: GroupId,
        voters: &BTreeSet<u64>,
        learners: &BTreeSet<u64>,
    ) -> Vec<String> {
        let want_voters: BTreeSet<u64> = self.voters(group).iter().map(|n| n.id).collect();
        let want_learners: BTreeSet<u64> = self.learners(group).iter().map(|n| n.id).collect();
        let role = |id: u64, v: &BTreeSet<u64>, l: &BTreeSet<u64>| {
            if v.contains(&id) {
                "a voter"
            } else if l.contains(&id) {
                "a learner"
            } else {
                "not a member"
            }
        };
        let mut ids: BTreeSet<u64> = want_voters.union(&want_learners).copied().collect();
        ids.extend(voters.iter().chain(learners));
        ids.into_iter()
            .filter_map(|id| {
                let live = role(id, voters, learners);
                let want = role(id, &want_voters, &want_learners);
                (live != want).then(|| {
                    format!("node {id} is {live} of the group; the topology makes it {want}")
                })
            })
            .collect()
    }

    /// How a running cluster's membership differs from this file: `live` maps each group a
    /// leader reported to its (voters, learners); a group of the file missing from it has no
    /// known membership, a group missing from the file runs without being declared.
    pub fn live_drift(
        &self,
        live: &std::collections::BTreeMap<GroupId, (BTreeSet<u64>, BTreeSet<u64>)>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for g in &self.groups {
            match live.get(&g.id) {
                Some((voters, learners)) => out.extend(
                    self.drift(g.id, voters, learners)
                        .into_iter()
                        .map(|d| format!("group {} ({}): {d}", g.id.0, g.name)),
                ),
                None => out.push(format!(
                    "group {} ({}): no leader answered; its live membership is unknown",
                    g.id.0, g.name
                )),
            }
        }
        for id in live.keys().filter(|id| self.group(**id).is_none()) {
            out.push(format!(
                "group {} runs but the topology declares no such group",
                id.0
            ));
        }
        out
    }

    /// Groups hosted on `node` and its role in each, sorted by group id.
    pub fn groups_of_node(&self, node: u64) -> Vec<(GroupId, Role)> {
        let mut out: Vec<(GroupId, Role)> = Vec::new();
        for group in &self.groups {
            if group.voters.contains(&node) {
                out.push((group.id, Role::Voter));
            } else if self.learners(group.id).iter().any(|n| n.id == node) {
                out.push((group.id, Role::Learner));
            }
        }
        out.sort_by_key(|(id, _)| *id);
        out
    }

    /// Widest round trip between any two regions holding a member (voter or learner) of
    /// `group`; 0 if all members are in one region (or the group is unknown).
    pub fn group_max_rtt_ms(&self, group: GroupId) -> u64 {
        let regions: BTreeSet<&str> = self
            .voters(group)
            .into_iter()
            .chain(self.learners(group))
            .map(|n| n.region.as_str())
            .collect();
        self.widest_rtt_ms(&regions)
    }

    /// Widest round trip between any two regions holding a voter of `group`; 0 if its voters
    /// share a region (every regional group) or the group is unknown.
    pub fn voters_max_rtt_ms(&self, group: GroupId) -> u64 {
        let regions: BTreeSet<&str> = self
            .voters(group)
            .into_iter()
            .map(|n| n.region.as_str())
            .collect();
        self.widest_rtt_ms(&regions)
    }

    fn widest_rtt_ms(&self, regions: &BTreeSet<&str>) -> u64 {
        let mut widest = 0;
        for a in regions {
            for b in regions {
                widest = widest.max(self.rtt_ms(a, b));
            }
        }
        widest
    }

    /// The global group, if any.
    pub fn global_group(&self) -> Option<&GroupSpec> {
        self.groups.iter().find(|g| g.kind == GroupKind::Global)
    }

    /// The domains as a longest-prefix-match map.
    pub fn placement(&self) -> Placement {
        Placement::new(self.domains.clone())
    }

    /// The placement map this topology seeds a cluster with (epoch 0 until committed): every
    /// region's tags, every group's replicas counted per region, every domain and its policy.
    pub fn placement_map(&self) -> PlacementMap {
        let mut map = PlacementMap {
            epoch: 0,
            regions: self
                .regions
                .iter()
                .map(|r| (r.name.clone(), r.tags.clone()))
                .collect(),
            groups: BTreeMap::new(),
            domains: self.placement().domains().to_vec(),
            moves_done: Vec::new(),
            profiles: BTreeMap::new(),
        };
        for g in &self.groups {
            let mut entry = GroupPlacement {
                name: g.name.clone(),
                ..Default::default()
            };
            for n in self.voters(g.id) {
                *entry.voters.entry(n.region.clone()).or_default() += 1;
            }
            for n in self.learners(g.id) {
                *entry.learners.entry(n.region.clone()).or_default() += 1;
            }
            map.groups.insert(g.id, entry);
        }
        map
    }

    fn sorted_nodes(&self, keep: impl Fn(&NodeSpec) -> bool) -> Vec<&NodeSpec> {
        let mut out: Vec<&NodeSpec> = self.nodes.iter().filter(|n| keep(n)).collect();
        out.sort_by_key(|n| n.id);
        out
    }
}
