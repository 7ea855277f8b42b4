//! The Meta-of-Meta's decisions (DESIGN.md §7), with no IO:
//!
//! - [`lookup`]: [`Placement`], longest-prefix match from keys to domains and their groups.
//! - [`rules`]: [`apply`] judges a change to the placement map (the global group's state
//!   machine applies changes only through it); [`check_map`] finds every residency problem of
//!   a whole map (the topology check uses it too).
//! - [`moves`]: the global group's half of an online domain move (begin, advance, commit,
//!   abort), judged like every other change.
//! - [`prefix`]: the domain-prefix rule.
//!
//! The map's data types are in `meridian_types::placement`.

pub mod lookup;
pub mod moves;
pub mod prefix;
pub mod rules;

pub use lookup::Placement;
pub use prefix::validate_domain_prefix;
pub use rules::{apply, check_map, check_policy, group_label, offending_regions, Refusal};

use meridian_types::PlacementMap;

impl Placement {
    /// The lookup over a map's domains.
    pub fn of_map(map: &PlacementMap) -> Placement {
        Placement::new(map.domains.clone())
    }
}
