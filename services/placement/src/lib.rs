//! The Meta-of-Meta's decisions (DESIGN.md §7), with no IO:
//!
//! - [`lookup`]: [`Placement`], longest-prefix match from keys to domains and their groups.
//! - [`apply`] judges a change to the placement map (the global group's state machine applies
//!   changes only through it), by [`rules`] (seed, policies; [`check_map`] finds every
//!   residency problem of a whole map — the topology check uses it too) or by [`moves`] (an
//!   online domain move: begin, commit, abort, finish).
//! - [`prefix`]: the domain-prefix rule.
//!
//! The map's data types are in `meridian_types::placement`.

pub mod lookup;
pub mod moves;
pub mod prefix;
pub mod rules;

pub use lookup::Placement;
pub use prefix::validate_domain_prefix;
pub use rules::{check_map, check_policy, group_label, offending_regions, Refusal};

use meridian_types::{PlacementChange, PlacementMap};

/// The one judge of a change to the placement map, at the global group's `revision`:
/// `Ok(None)`: nothing to change (a seed when a map exists); `Ok(Some(map))`: the new map, its
/// epoch = `revision`; `Err`: refused, nothing changed, with the rule and why.
pub fn apply(
    current: Option<&PlacementMap>,
    change: &PlacementChange,
    revision: u64,
) -> Result<Option<PlacementMap>, Refusal> {
    match change {
        PlacementChange::BeginMove { .. }
        | PlacementChange::CommitMove { .. }
        | PlacementChange::AbortMove { .. }
        | PlacementChange::FinishMove { .. } => {
            moves::apply_move(rules::seeded(current)?, change, revision).map(Some)
        }
        PlacementChange::Seed(_)
        | PlacementChange::SetPolicy { .. }
        | PlacementChange::SetProfile { .. } => rules::apply_rule(current, change, revision),
    }
}

impl Placement {
    /// The lookup over a map's domains.
    pub fn of_map(map: &PlacementMap) -> Placement {
        Placement::new(map.domains.clone())
    }
}
