//! Identifiers. Revisions are still plain `u64` log indexes across the crates (see
//! docs/api.md); a `Revision` newtype belongs here once the router's version vectors land.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A node (one `meridian` server process). openraft wants a plain integer type here.
pub type NodeId = u64;

/// A Raft group; every peer message names the group it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroupId(pub u64);

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "g{}", self.0)
    }
}
