//! Topology files: regions, nodes, the round trips between regions, Raft groups and the
//! domains (key prefixes) they own — parsed, checked and queried. No IO beyond reading the
//! file; no async.
//!
//! - `raw` (private): the TOML shape exactly as written, with spans.
//! - `check` (private): every validation rule; collects every problem with its
//!   line and path instead of stopping at the first.
//! - [`model`]: [`Topology`] and its queries (voters, learners, a node's groups, round trips).
//! - [`Placement`] (from `meridian-placement`): longest-prefix match from keys to groups;
//!   [`Topology::placement_map`] is the map a cluster is seeded with.
//! - [`error`]: [`Problem`] and [`TopologyError`].
//!
//! The file format and the rules are documented in `topology/README.md`.

mod check;
pub mod error;
pub mod model;
mod raw;

pub use check::{validate_domain_prefix, RTT_MS_MAX};
pub use error::{Problem, TopologyError};
pub use meridian_placement::Placement;
pub use model::{Domain, GroupKind, GroupSpec, NodeSpec, Region, Role, Topology};

use std::path::Path;

/// `topology/local-3region.toml`, built in: what `meridian dev` and `meridian sim run` run when
/// given no topology.
pub const LOCAL_3REGION: &str = include_str!("../../../topology/local-3region.toml");

impl Topology {
    /// Parses and validates a topology file's text. `source_name` (usually the path) prefixes
    /// every problem in the error.
    pub fn parse(text: &str, source_name: &str) -> Result<Topology, TopologyError> {
        check::parse(text, source_name)
    }

    /// Reads and validates a topology file; a read failure is reported as a problem too.
    pub fn load(path: &Path) -> Result<Topology, TopologyError> {
        check::load(path)
    }
}
