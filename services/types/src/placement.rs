//! The placement map's data (DESIGN.md §7, the Meta-of-Meta): which group owns which domain,
//! where each group keeps replicas, and each domain's residency policy — versioned by an
//! epoch, the global group's revision of its last change. Plain data; the rules that judge a
//! change live in `meridian-placement`.

use crate::GroupId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The whole map as the global group holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementMap {
    /// The global group's revision of the change that produced this map; 0 for a map read
    /// from a topology file and not (yet) committed.
    pub epoch: u64,
    /// Region name → its tags (policies match on them).
    pub regions: BTreeMap<String, BTreeMap<String, String>>,
    /// Every group and where its replicas are.
    pub groups: BTreeMap<GroupId, GroupPlacement>,
    /// Domains sorted by prefix, one per prefix.
    pub domains: Vec<DomainPlacement>,
    /// The last finished moves, committed or aborted, oldest first (at most
    /// [`MOVE_HISTORY_MAX`]): how `meridian placement move` learns how its move ended.
    pub moves_done: Vec<MoveRecord>,
    /// Domain prefix → how its group closes timestamps (docs/closed-timestamps.md); a domain
    /// not listed closes as the nodes' `[timestamps] profile` says. Not in the map's encoding
    /// (which a seed entry in an older log also holds): the global group keeps it under its own
    /// key, [`PROFILES_KEY`], beside the map's.
    #[serde(skip)]
    pub profiles: BTreeMap<String, ReadProfile>,
}

/// How a domain's group closes timestamps, when the cluster reads by closed timestamps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ReadProfile {
    /// Closes a little behind now: writes stay fast; a read that switches to the domain waits
    /// about a one-way delay plus the close interval.
    LocalWrites,
    /// Closes ahead by the farthest one-way delay plus the maximum clock offset: reads in every
    /// region are served at once; each write waits until its timestamp has passed.
    GlobalReads,
}

impl ReadProfile {
    pub fn parse(text: &str) -> Option<ReadProfile> {
        match text {
            "local-writes" => Some(ReadProfile::LocalWrites),
            "global-reads" => Some(ReadProfile::GlobalReads),
            _ => None,
        }
    }
}

impl fmt::Display for ReadProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReadProfile::LocalWrites => "local-writes",
            ReadProfile::GlobalReads => "global-reads",
        })
    }
}

impl PlacementMap {
    /// The profile `group` closes with: `global-reads` when any domain it owns (or is
    /// receiving in a move) asks for it, `local-writes` when one asks for that and none for
    /// global-reads, else `None` (the nodes' default).
    pub fn group_profile(&self, group: GroupId) -> Option<ReadProfile> {
        self.domains
            .iter()
            .filter(|d| d.group == group || d.moving.as_ref().is_some_and(|m| m.to == group))
            .filter_map(|d| self.profiles.get(&d.prefix).copied())
            .max()
    }
}

/// Where one group keeps its replicas: node counts per region.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupPlacement {
    pub name: String,
    pub voters: BTreeMap<String, u32>,
    pub learners: BTreeMap<String, u32>,
}

impl GroupPlacement {
    /// Every region holding a replica (voter or learner), sorted.
    pub fn regions(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .voters
            .keys()
            .chain(self.learners.keys())
            .map(String::as_str)
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// A key prefix, its owner and its policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainPlacement {
    pub prefix: String,
    pub group: GroupId,
    pub policy: Option<Policy>,
    /// A move of this domain to another group, while one is under way.
    pub moving: Option<MoveState>,
    /// The owner's revision its copy of the domain begins at: the import of the move that
    /// brought it here (0: it was always here). Reads of the domain wait for the local replica
    /// to reach it, and a watch that follows the domain resumes after it.
    pub since: u64,
}

/// A domain move in progress: a durable state of the global group, so that whoever drives the
/// move next (a new leader, a restarted driver) knows where it stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveState {
    /// The group that owned the prefix when the move began.
    pub from: GroupId,
    pub to: GroupId,
    /// The epoch the move began at: names the move in every later step.
    pub id: u64,
    pub step: MoveStep,
    /// The target's revision of the import (set by the commit).
    pub imported_at: u64,
    /// Why it was rolled back (set by the abort).
    pub aborted: Option<String>,
}

/// Where a move stands (docs/placement.md, "online moves").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum MoveStep {
    /// Recorded in the map; the copy (freeze at the source, import at the target) may be
    /// under way or done — both are idempotent, so whoever drives the move repeats it.
    Begun,
    /// The target owns the prefix; the source still has to drop its copy.
    Committed,
    /// Rolled back (the reason is in the state): the target drops whatever a copy imported,
    /// then the source takes writes again. The owner never changed.
    Aborted,
}

impl fmt::Display for MoveStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MoveStep::Begun => "begun",
            MoveStep::Committed => "committed",
            MoveStep::Aborted => "aborted",
        })
    }
}

/// Where a domain's data may live, and what clients elsewhere get.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// A region is allowed when any selector matches it.
    pub allowed: Vec<Selector>,
    pub mode: PolicyMode,
}

/// One entry of a policy's allowed list: a region by name, or every region carrying a tag.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Selector {
    Region(String),
    Tag { key: String, value: String },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyMode {
    /// Clients elsewhere may read and write; their requests are forwarded to an allowed
    /// region and nothing is stored outside.
    #[default]
    Forward,
    /// Clients outside the allowed regions are refused (`PolicyDenied`).
    Strict,
}

impl Selector {
    /// `key:value` is a tag, anything else a region name.
    pub fn parse(text: &str) -> Selector {
        match text.split_once(':') {
            Some((key, value)) => Selector::Tag {
                key: key.to_string(),
                value: value.to_string(),
            },
            None => Selector::Region(text.to_string()),
        }
    }

    pub fn matches(&self, region: &str, tags: Option<&BTreeMap<String, String>>) -> bool {
        match self {
            Selector::Region(name) => name == region,
            Selector::Tag { key, value } => tags.and_then(|t| t.get(key)) == Some(value),
        }
    }
}

impl Policy {
    /// Whether `region` (with `tags`) may hold the domain's data.
    pub fn allows(&self, region: &str, tags: Option<&BTreeMap<String, String>>) -> bool {
        self.allowed.iter().any(|s| s.matches(region, tags))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Region(name) => write!(f, "{name}"),
            Selector::Tag { key, value } => write!(f, "{key}:{value}"),
        }
    }
}

impl fmt::Display for PolicyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PolicyMode::Forward => "forward",
            PolicyMode::Strict => "strict",
        })
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let allowed: Vec<String> = self.allowed.iter().map(|s| s.to_string()).collect();
        write!(f, "allowed = {}, mode = {}", allowed.join(","), self.mode)
    }
}

/// A change to the map, proposed to the global group. Applying one either changes the map (the
/// new epoch is the entry's revision) or is refused with nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlacementChange {
    /// The first map, from the topology file. Applied only when the group holds no map yet;
    /// after that the committed map is the truth and later seeds change nothing.
    Seed(PlacementMap),
    /// Sets (or with `None` clears) the policy of the domain `prefix`.
    SetPolicy {
        prefix: String,
        policy: Option<Policy>,
        /// Refuse unless the map is still at this epoch (compare-and-set for operators).
        expected_epoch: Option<u64>,
    },
    /// Starts moving `prefix` (carved out of its domain if it is not one) to group `to`.
    BeginMove {
        prefix: String,
        to: GroupId,
        expected_epoch: Option<u64>,
    },
    /// Records that move `id` of `prefix` reached `step` (steps only go forward).
    /// Ends move `id`: the domain now belongs to the move's target.
    /// The target holds the keys (imported at its revision `at`): it owns the prefix now.
    CommitMove { prefix: String, id: u64, at: u64 },
    /// Abandons move `id` (only before the target holds the keys); the owner stays.
    AbortMove {
        prefix: String,
        id: u64,
        /// Why, for the operator (kept in `moves_done`).
        reason: String,
    },
    /// The source dropped its copy (committed), or the target its import and the source its
    /// freeze (aborted): the move is over.
    FinishMove { prefix: String, id: u64 },
    /// Sets (or with `None` clears) the timestamp profile of the domain `prefix`. Last, so a
    /// log written before it existed reads as it was.
    SetProfile {
        prefix: String,
        profile: Option<ReadProfile>,
        expected_epoch: Option<u64>,
    },
}

/// The key under which the global group stores the map: not a valid client path (no leading
/// `/`), so no client read, write, scan or watch can reach it.
/// How a finished move ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveRecord {
    pub prefix: String,
    pub id: u64,
    pub from: GroupId,
    pub to: GroupId,
    /// `None`: committed; otherwise why it was rolled back.
    pub aborted: Option<String>,
    /// The epoch it ended at.
    pub epoch: u64,
}

/// Most finished moves the map remembers.
pub const MOVE_HISTORY_MAX: usize = 32;

pub const PLACEMENT_KEY: &str = "@placement";

/// The key under which the global group stores the map's timestamp profiles (as
/// [`PLACEMENT_KEY`], no client path can name it).
pub const PROFILES_KEY: &str = "@profiles";
