//! The global group's half of an online domain move (docs/placement.md): the move is a durable
//! state in the map — begun, frozen, imported — so whoever drives it next knows where it stands.
//! Routing does not change until the commit: the domain stays with its owner while it moves.
//!
//! `BeginMove` carves the prefix out of its domain when it is not one (the new domain inherits
//! its parent's policy) and refuses, with nothing changed: a prefix that is not a domain path,
//! an unknown target group, a move to the group that already owns it, a move while another one
//! is under way on the same, an enclosing or a nested prefix, and a target whose replicas a
//! policy of the moved domains excludes (naming domain, policy and regions).

use crate::rules::{check_epoch, group_label, offending_regions, refuse, Refusal};
use crate::{validate_domain_prefix, Placement};
use meridian_types::placement::MOVE_HISTORY_MAX;
use meridian_types::{
    DomainPlacement, MoveRecord, MoveState, MoveStep, PlacementChange, PlacementMap,
};

/// Applies a move change to `current` at `revision`; the new map's epoch is `revision`.
pub fn apply_move(
    current: &PlacementMap,
    change: &PlacementChange,
    revision: u64,
) -> Result<PlacementMap, Refusal> {
    let mut map = current.clone();
    match change {
        PlacementChange::BeginMove {
            prefix,
            to,
            expected_epoch,
        } => {
            check_epoch(current, *expected_epoch)?;
            validate_domain_prefix(prefix).map_err(|e| refuse("bad_prefix", e))?;
            if !map.groups.contains_key(to) {
                let groups: Vec<String> =
                    map.groups.keys().map(|g| group_label(&map, *g)).collect();
                return Err(refuse(
                    "unknown_group",
                    format!(
                        "no group {to} to move {prefix} to (groups: {})",
                        groups.join(", ")
                    ),
                ));
            }
            let lookup = Placement::of_map(&map);
            let Some(owner) = lookup.domain_of(prefix).cloned() else {
                return Err(refuse(
                    "no_domain",
                    format!("{prefix} lies in no domain, so no group owns it and nothing can move"),
                ));
            };
            // A move under way on this prefix, one enclosing it, or one nested under it.
            let busy = map.domains.iter().find(|d| {
                d.moving.is_some()
                    && (prefix.starts_with(&d.prefix) || d.prefix.starts_with(prefix.as_str()))
            });
            if let Some(d) = busy {
                return Err(refuse(
                    "move_conflict",
                    format!(
                        "{prefix} overlaps {}, which is already moving to {}; one move at a time \
                         per subtree — wait for it (meridian placement show) and try again",
                        d.prefix,
                        d.moving
                            .as_ref()
                            .map_or(String::new(), |m| group_label(&map, m.to))
                    ),
                ));
            }
            if owner.prefix == *prefix && owner.group == *to {
                return Err(refuse(
                    "same_group",
                    format!(
                        "{prefix} already belongs to {}; nothing to move",
                        group_label(&map, *to)
                    ),
                ));
            }
            // The moved keys fall under the domain's policy (a carved piece inherits its
            // parent's). Nested domains are their own and stay where they are.
            if let Some(policy) = &owner.policy {
                let bad = offending_regions(&map, policy, *to);
                if !bad.is_empty() {
                    return Err(refuse(
                        "policy_violation",
                        format!(
                            "moving {prefix} to {} would break the policy ({policy}) of domain {}: \
                             that group keeps replicas in {}; nothing changed",
                            group_label(&map, *to),
                            owner.prefix,
                            bad.join(", ")
                        ),
                    ));
                }
            }
            let state = MoveState {
                from: owner.group,
                to: *to,
                id: revision,
                step: MoveStep::Begun,
                imported_at: 0,
                aborted: None,
            };
            match map.domains.iter_mut().find(|d| d.prefix == *prefix) {
                Some(d) => d.moving = Some(state),
                None => {
                    // A carved piece inherits its parent's policy and timestamp profile.
                    if let Some(p) = map.profiles.get(&owner.prefix).copied() {
                        map.profiles.insert(prefix.clone(), p);
                    }
                    map.domains.push(DomainPlacement {
                        prefix: prefix.clone(),
                        group: owner.group,
                        policy: owner.policy.clone(),
                        moving: Some(state),
                        since: owner.since,
                    });
                    map.domains.sort_by(|a, b| a.prefix.cmp(&b.prefix));
                }
            }
        }
        PlacementChange::CommitMove { prefix, id, at } => {
            let m = moving(&mut map, prefix, *id)?;
            if m.step != MoveStep::Begun {
                return Err(refuse(
                    "move_step",
                    format!("move {id} of {prefix} is already {}", m.step),
                ));
            }
            m.step = MoveStep::Committed;
            m.imported_at = *at;
            let (to, at) = (m.to, *at);
            if let Some(d) = map.domains.iter_mut().find(|d| d.prefix == *prefix) {
                d.group = to;
                d.since = at;
            }
        }
        PlacementChange::AbortMove { prefix, id, reason } => {
            let m = moving(&mut map, prefix, *id)?;
            if m.step != MoveStep::Begun {
                return Err(refuse(
                    "move_step",
                    format!(
                        "move {id} of {prefix} is already {}; it cannot be rolled back",
                        m.step
                    ),
                ));
            }
            m.step = MoveStep::Aborted;
            m.aborted = Some(reason.clone());
        }
        PlacementChange::FinishMove { prefix, id } => {
            let m = moving(&mut map, prefix, *id)?;
            if m.step == MoveStep::Begun {
                return Err(refuse(
                    "move_step",
                    format!("move {id} of {prefix} is neither committed nor rolled back yet"),
                ));
            }
            let m = m.clone();
            if let Some(d) = map.domains.iter_mut().find(|d| d.prefix == *prefix) {
                d.moving = None;
            }
            record(&mut map, prefix, &m, m.aborted.clone(), revision);
        }
        PlacementChange::Seed(_)
        | PlacementChange::SetPolicy { .. }
        | PlacementChange::SetProfile { .. } => {
            return Err(refuse("internal", "not a move change".into()))
        }
    }
    map.epoch = revision;
    Ok(map)
}

/// Remembers how a move ended (bounded, oldest dropped first).
fn record(
    map: &mut PlacementMap,
    prefix: &str,
    m: &MoveState,
    aborted: Option<String>,
    epoch: u64,
) {
    map.moves_done.push(MoveRecord {
        prefix: prefix.to_string(),
        id: m.id,
        from: m.from,
        to: m.to,
        aborted,
        epoch,
    });
    let excess = map.moves_done.len().saturating_sub(MOVE_HISTORY_MAX);
    map.moves_done.drain(..excess);
}

/// The state of move `id` of `prefix`, or why there is none.
fn moving<'m>(
    map: &'m mut PlacementMap,
    prefix: &str,
    id: u64,
) -> Result<&'m mut MoveState, Refusal> {
    map.domains
        .iter_mut()
        .find(|d| d.prefix == prefix)
        .and_then(|d| d.moving.as_mut())
        .filter(|m| m.id == id)
        .ok_or_else(|| {
            refuse(
                "no_such_move",
                format!("no move {id} of {prefix} is under way (meridian placement show)"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply;
    use meridian_types::{GroupId, GroupPlacement, Policy, PolicyMode, Selector};
    use std::collections::BTreeMap;

    fn map() -> PlacementMap {
        let tags = |j: &str| BTreeMap::from([("jurisdiction".to_string(), j.to_string())]);
        let group = |name: &str, voters: &str, learners: &[&str]| GroupPlacement {
            name: name.into(),
            voters: BTreeMap::from([(voters.to_string(), 3)]),
            learners: learners.iter().map(|r| (r.to_string(), 3)).collect(),
        };
        let eu = Policy {
            allowed: vec![Selector::parse("jurisdiction:eu")],
            mode: PolicyMode::Forward,
        };
        let d = |p: &str, g: u64, policy: Option<Policy>| DomainPlacement {
            prefix: p.into(),
            group: GroupId(g),
            policy,
            moving: None,
            since: 0,
        };
        let seed = PlacementMap {
            epoch: 0,
            regions: BTreeMap::from([("us".into(), tags("us")), ("eu".into(), tags("eu"))]),
            groups: BTreeMap::from([
                (GroupId(1), group("us", "us", &["eu"])),
                (GroupId(2), group("eu", "eu", &["us"])),
                (GroupId(3), group("eu-private", "eu", &[])),
            ]),
            domains: vec![
                d("/us/", 1, None),
                d("/eu/", 2, None),
                d("/eu/pii/", 3, Some(eu)),
            ],
            moves_done: Vec::new(),
            profiles: BTreeMap::new(),
        };
        apply(None, &PlacementChange::Seed(seed), 1)
            .unwrap()
            .unwrap()
    }

    fn begin(prefix: &str, to: u64) -> PlacementChange {
        PlacementChange::BeginMove {
            prefix: prefix.into(),
            to: GroupId(to),
            expected_epoch: None,
        }
    }

    fn step(m: &PlacementMap, change: PlacementChange, rev: u64) -> Result<PlacementMap, Refusal> {
        apply(Some(m), &change, rev).map(|m| m.unwrap())
    }

    /// A carve-out and re-home, step by step: the owner changes only at the commit.
    #[test]
    fn a_move_runs_its_steps_in_order() {
        let m0 = map();
        let m1 = step(&m0, begin("/us/orders/", 2), 5).unwrap();
        let d = m1
            .domains
            .iter()
            .find(|d| d.prefix == "/us/orders/")
            .expect("carved");
        assert_eq!(d.group, GroupId(1), "routing is unchanged while moving");
        assert_eq!(
            d.moving,
            Some(MoveState {
                from: GroupId(1),
                to: GroupId(2),
                id: 5,
                step: MoveStep::Begun,
                imported_at: 0,
                aborted: None,
            })
        );
        assert_eq!(m1.epoch, 5);
        let commit = PlacementChange::CommitMove {
            prefix: "/us/orders/".into(),
            id: 5,
            at: 40,
        };
        let m3 = m1.clone();
        let m4 = step(&m3, commit.clone(), 8).unwrap();
        assert_eq!(
            step(&m4, commit, 9).unwrap_err().rule,
            "move_step",
            "a second commit"
        );
        let abort = PlacementChange::AbortMove {
            prefix: "/us/orders/".into(),
            id: 5,
            reason: "test".into(),
        };
        assert_eq!(
            step(&m4, abort, 9).unwrap_err().rule,
            "move_step",
            "no rollback after the commit"
        );
        let d = m4
            .domains
            .iter()
            .find(|d| d.prefix == "/us/orders/")
            .expect("domain");
        assert_eq!(d.group, GroupId(2), "the target owns it from the commit");
        assert_eq!(d.since, 40, "from the import's revision");
        assert_eq!(d.moving.as_ref().map(|m| m.step), Some(MoveStep::Committed));
        let finish = PlacementChange::FinishMove {
            prefix: "/us/orders/".into(),
            id: 5,
        };
        assert_eq!(step(&m3, finish.clone(), 9).unwrap_err().rule, "move_step");
        let m4 = step(&m4, finish, 9).unwrap();
        let d = m4
            .domains
            .iter()
            .find(|d| d.prefix == "/us/orders/")
            .expect("domain");
        assert_eq!((d.group, d.moving.clone()), (GroupId(2), None));
        assert_eq!(
            m4.moves_done,
            vec![MoveRecord {
                prefix: "/us/orders/".into(),
                id: 5,
                from: GroupId(1),
                to: GroupId(2),
                aborted: None,
                epoch: 9
            }]
        );
        assert_eq!(
            Placement::of_map(&m4).group_of("/us/orders/1").map(|g| g.0),
            Some(GroupId(2))
        );
        assert_eq!(
            Placement::of_map(&m4).group_of("/us/other").map(|g| g.0),
            Some(GroupId(1))
        );
    }

    /// An abort before the import leaves the owner; a wrong id names no move.
    #[test]
    fn abort_and_unknown_moves() {
        let m1 = step(&map(), begin("/us/", 2), 5).unwrap();
        let wrong = PlacementChange::AbortMove {
            prefix: "/us/".into(),
            id: 4,
            reason: "r".into(),
        };
        assert_eq!(step(&m1, wrong, 6).unwrap_err().rule, "no_such_move");
        let m2 = step(
            &m1,
            PlacementChange::AbortMove {
                prefix: "/us/".into(),
                id: 5,
                reason: "move_blocked: a lease".into(),
            },
            6,
        )
        .unwrap();
        let d = m2
            .domains
            .iter()
            .find(|d| d.prefix == "/us/")
            .expect("domain");
        assert_eq!(d.group, GroupId(1), "the owner never changed");
        assert_eq!(d.moving.as_ref().map(|m| m.step), Some(MoveStep::Aborted));
        let commit = PlacementChange::CommitMove {
            prefix: "/us/".into(),
            id: 5,
            at: 9,
        };
        assert_eq!(
            step(&m2, commit, 7).unwrap_err().rule,
            "move_step",
            "a late copy cannot commit a rolled-back move"
        );
        let m3 = step(
            &m2,
            PlacementChange::FinishMove {
                prefix: "/us/".into(),
                id: 5,
            },
            7,
        )
        .unwrap();
        let d = m3
            .domains
            .iter()
            .find(|d| d.prefix == "/us/")
            .expect("domain");
        assert_eq!((d.group, d.moving.clone()), (GroupId(1), None));
        assert_eq!(
            m3.moves_done.last().and_then(|r| r.aborted.as_deref()),
            Some("move_blocked: a lease")
        );
    }

    /// Bad input, each refused with its rule and nothing changed.
    #[test]
    fn bad_moves_are_refused() {
        let m = map();
        let rule = |c: PlacementChange| step(&m, c, 9).unwrap_err();
        assert_eq!(rule(begin("/us/orders", 2)).rule, "bad_prefix");
        assert_eq!(rule(begin("no-slash/", 2)).rule, "bad_prefix");
        let e = rule(begin("/us/", 7));
        assert_eq!(e.rule, "unknown_group");
        assert!(e.message.contains("group eu (g2)"), "{e}");
        assert_eq!(rule(begin("/elsewhere/", 2)).rule, "no_domain");
        assert_eq!(rule(begin("/us/", 1)).rule, "same_group");
        let e = rule(begin("/eu/pii/", 1));
        assert_eq!(e.rule, "policy_violation");
        for needle in ["/eu/pii/", "jurisdiction:eu", "us"] {
            assert!(e.message.contains(needle), "{needle} in {e}");
        }
        // Carving a piece of the pii domain inherits its policy: still refused.
        assert_eq!(rule(begin("/eu/pii/x/", 2)).rule, "policy_violation");
        // Moving /eu/ to a group the nested pii domain's policy excludes is fine: pii is
        // another group's domain and stays where it is.
        assert!(step(&m, begin("/eu/", 1), 9).is_ok());
        let stale = PlacementChange::BeginMove {
            prefix: "/us/".into(),
            to: GroupId(2),
            expected_epoch: Some(0),
        };
        assert_eq!(rule(stale).rule, "stale_epoch");
    }

    /// Two moves of the same, an enclosing or a nested prefix: the second is refused.
    #[test]
    fn overlapping_moves_conflict() {
        let m1 = step(&map(), begin("/us/orders/", 2), 5).unwrap();
        for p in ["/us/orders/", "/us/", "/us/orders/eu/"] {
            let e = step(&m1, begin(p, 2), 6).unwrap_err();
            assert_eq!(e.rule, "move_conflict", "{p}");
            assert!(e.message.contains("/us/orders/"), "{e}");
        }
        assert!(
            step(&m1, begin("/eu/", 1), 6).is_ok(),
            "a disjoint move is fine"
        );
    }
}
