//! The composition router's decisions (DESIGN.md §2), with no IO: the async shell in
//! `meridian-server` asks these structs what to do and does it.
//!
//! - [`plan_read`]: whether a read must sync its group first, and which revision the local
//!   replica must have applied before it answers.
//! - [`VersionVector`]: a session's `group → highest revision observed`; never goes backwards.
//! - [`Rounds`]: coalescing. Callers that need a round (a sync, a leadership confirmation)
//!   while one is running share the next one, started after they arrived; long rounds overlap
//!   ([`Rounds::spacing`]).
//! - [`ReplicaClosed`], [`Profile`]: closed timestamps (issue 19): what a leader closes, and
//!   whether a replica can serve a read at a session's timestamp without a sync
//!   ([`SwitchRule::ClosedTimestamps`]).
//! - [`ClockOffsets`]: whether this node's clock is within the maximum offset of its peers'.

mod closed;
mod offsets;
mod plan;
mod rounds;

pub use closed::{read_timestamp, Profile, ReadAt, ReplicaClosed};
pub use offsets::{probe_agrees, ClockOff, ClockOffsets, OFFSET_FRESH_MS};
pub use plan::{plan_read, ReadLevel, ReadPlan, SwitchRule, VersionVector};
pub use rounds::{Join, Rounds};
