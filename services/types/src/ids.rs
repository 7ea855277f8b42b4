//! Identifiers. A `u64` that means a revision is a [`Revision`].

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

/// A group's revision: the Raft log index of the entry that made a change. Monotonic per group.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Revision(pub u64);

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
