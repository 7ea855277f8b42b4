//! The rules that judge the placement map and every change to it. The global group's state
//! machine applies a change only through [`apply`]; a refusal changes nothing and says which
//! domain, which policy and which regions are at fault.

use crate::validate_domain_prefix;
use meridian_types::{GroupId, PlacementChange, PlacementMap, Policy, Selector};
use std::fmt;

/// Why a change was refused. `rule` is machine-readable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub rule: &'static str,
    pub message: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

pub(crate) fn refuse(rule: &'static str, message: String) -> Refusal {
    Refusal { rule, message }
}

/// Every selector of `policy` must name a known region or a tag some region carries: a typo
/// would otherwise allow nothing (or, worse, be fixed later by tagging the wrong region).
pub fn check_policy(map: &PlacementMap, policy: &Policy) -> Result<(), String> {
    if policy.allowed.is_empty() {
        return Err("a policy must allow at least one region (by name or by tag)".into());
    }
    for s in &policy.allowed {
        let known = match s {
            Selector::Region(name) => map.regions.contains_key(name),
            Selector::Tag { key, value } => map.regions.values().any(|t| t.get(key) == Some(value)),
        };
        if !known {
            let what = match s {
                Selector::Region(name) => {
                    let names: Vec<&str> = map.regions.keys().map(String::as_str).collect();
                    format!("unknown region {name:?} (regions: {})", names.join(", "))
                }
                Selector::Tag { key, value } => {
                    let mut tags: Vec<String> = map
                        .regions
                        .values()
                        .flat_map(|t| t.iter().map(|(k, v)| format!("{k}:{v}")))
                        .collect();
                    tags.sort();
                    tags.dedup();
                    format!(
                        "unknown tag {key}:{value}: no region carries it (tags: {})",
                        if tags.is_empty() {
                            "none".into()
                        } else {
                            tags.join(", ")
                        }
                    )
                }
            };
            return Err(format!("policy ({policy}): {what}"));
        }
    }
    Ok(())
}

/// The regions holding a replica of `group` that `policy` does not allow, sorted.
pub fn offending_regions(map: &PlacementMap, policy: &Policy, group: GroupId) -> Vec<String> {
    let Some(g) = map.groups.get(&group) else {
        return Vec::new();
    };
    g.regions()
        .into_iter()
        .filter(|r| !policy.allows(r, map.regions.get(*r)))
        .map(str::to_string)
        .collect()
}

/// "group NAME (gN)" for messages.
pub fn group_label(map: &PlacementMap, group: GroupId) -> String {
    match map.groups.get(&group) {
        Some(g) => format!("group {} ({group})", g.name),
        None => format!("group {group}"),
    }
}

/// Every residency problem of a whole map: a policy naming what does not exist, or a group
/// keeping a replica where a domain it owns may not live.
pub fn check_map(map: &PlacementMap) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for d in &map.domains {
        if !map.groups.contains_key(&d.group) {
            out.push((
                d.prefix.clone(),
                format!(
                    "domain {}: owner {} is not a group of the map",
                    d.prefix, d.group
                ),
            ));
        }
        let Some(policy) = &d.policy else { continue };
        if let Err(e) = check_policy(map, policy) {
            out.push((d.prefix.clone(), format!("domain {}: {e}", d.prefix)));
            continue;
        }
        let bad = offending_regions(map, policy, d.group);
        if !bad.is_empty() {
            out.push((
                d.prefix.clone(),
                format!(
                    "domain {} has policy ({policy}) but its {} keeps replicas (voters or \
                     learners) in {}, which the policy does not allow; every replica of a group \
                     must be in a region all its domains' policies allow",
                    d.prefix,
                    group_label(map, d.group),
                    bad.join(", ")
                ),
            ));
        }
    }
    out
}

/// Applies a seed or a policy change at the global group's `revision` (moves are judged by
/// [`crate::moves::apply_move`]; [`crate::apply`] takes any change). `Ok(None)`: nothing to
/// change (a seed when a map exists). `Ok(Some(map))`: the new map, its epoch = `revision`.
pub fn apply_rule(
    current: Option<&PlacementMap>,
    change: &PlacementChange,
    revision: u64,
) -> Result<Option<PlacementMap>, Refusal> {
    match change {
        PlacementChange::Seed(seed) => {
            if current.is_some() {
                return Ok(None);
            }
            let problems = check_map(seed);
            if let Some((_, first)) = problems.first() {
                return Err(refuse("policy_violation", first.clone()));
            }
            let mut map = seed.clone();
            map.domains.sort_by(|a, b| a.prefix.cmp(&b.prefix));
            map.epoch = revision;
            Ok(Some(map))
        }
        PlacementChange::BeginMove { .. }
        | PlacementChange::CommitMove { .. }
        | PlacementChange::AbortMove { .. }
        | PlacementChange::FinishMove { .. } => Err(refuse(
            "internal",
            "a move change is judged by moves::apply_move".into(),
        )),
        PlacementChange::SetPolicy {
            prefix,
            policy,
            expected_epoch,
        } => {
            let (current, i) = domain_change(current, prefix, *expected_epoch, "a policy")?;
            let mut map = current.clone();
            if let Some(p) = policy {
                check_policy(&map, p)
                    .map_err(|e| refuse("bad_policy", format!("domain {prefix}: {e}")))?;
                let group = map.domains[i].group;
                let bad = offending_regions(&map, p, group);
                if !bad.is_empty() {
                    return Err(refuse(
                        "policy_violation",
                        format!(
                            "domain {prefix}: policy ({p}) would be broken by its {}, which keeps \
                             replicas in {}; nothing changed",
                            group_label(&map, group),
                            bad.join(", ")
                        ),
                    ));
                }
            }
            if let Some(d) = map.domains.get_mut(i) {
                d.policy = policy.clone();
            }
            map.epoch = revision;
            Ok(Some(map))
        }
        PlacementChange::SetProfile {
            prefix,
            profile,
            expected_epoch,
        } => {
            let (current, _) = domain_change(current, prefix, *expected_epoch, "a profile")?;
            let mut map = current.clone();
            match profile {
                Some(p) => map.profiles.insert(prefix.clone(), *p),
                None => map.profiles.remove(prefix),
            };
            map.epoch = revision;
            Ok(Some(map))
        }
    }
}

/// The map and the index of domain `prefix`, for a change of `what` to that whole domain at
/// `expected_epoch`: refused when there is no map yet, the epoch moved, the prefix is malformed
/// or no domain.
fn domain_change<'a>(
    current: Option<&'a PlacementMap>,
    prefix: &str,
    expected_epoch: Option<u64>,
    what: &str,
) -> Result<(&'a PlacementMap, usize), Refusal> {
    let current = seeded(current)?;
    check_epoch(current, expected_epoch)?;
    validate_domain_prefix(prefix).map_err(|e| refuse("bad_prefix", e))?;
    match current.domains.iter().position(|d| d.prefix == prefix) {
        Some(i) => Ok((current, i)),
        None => {
            let names: Vec<&str> = current.domains.iter().map(|d| d.prefix.as_str()).collect();
            Err(refuse(
                "unknown_domain",
                format!(
                    "{prefix} is not a domain (domains: {}); {what} applies to a whole domain",
                    names.join(" ")
                ),
            ))
        }
    }
}

/// The map, or why there is none yet.
pub(crate) fn seeded(current: Option<&PlacementMap>) -> Result<&PlacementMap, Refusal> {
    current.ok_or_else(|| {
        refuse(
            "no_placement_map",
            "the placement map has not been seeded yet (the global group's leader seeds it from \
             the topology right after it is elected); retry shortly"
                .into(),
        )
    })
}

pub(crate) fn check_epoch(current: &PlacementMap, expected: Option<u64>) -> Result<(), Refusal> {
    match expected {
        Some(e) if e != current.epoch => Err(refuse(
            "stale_epoch",
            format!(
                "the change was made against placement epoch {e}, but the map is at epoch {}; \
                 look at `meridian placement show` and try again",
                current.epoch
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply;
    use meridian_types::{DomainPlacement, GroupPlacement, PolicyMode};
    use std::collections::BTreeMap;

    fn map() -> PlacementMap {
        let tags = |j: &str| BTreeMap::from([("jurisdiction".to_string(), j.to_string())]);
        let group = |name: &str, voters: &[&str], learners: &[&str]| GroupPlacement {
            name: name.into(),
            voters: voters.iter().map(|r| (r.to_string(), 3)).collect(),
            learners: learners.iter().map(|r| (r.to_string(), 3)).collect(),
        };
        PlacementMap {
            epoch: 0,
            regions: BTreeMap::from([
                ("us-east".into(), tags("us")),
                ("eu-west".into(), tags("eu")),
                ("eu-central".into(), tags("eu")),
            ]),
            groups: BTreeMap::from([
                (GroupId(1), group("us-east", &["us-east"], &["eu-west"])),
                (GroupId(2), group("eu-west", &["eu-west"], &["us-east"])),
                (
                    GroupId(4),
                    group("eu-private", &["eu-west"], &["eu-central"]),
                ),
            ]),
            domains: vec![
                DomainPlacement {
                    prefix: "/eu-west/".into(),
                    group: GroupId(2),
                    policy: None,
                    moving: None,
                    since: 0,
                },
                DomainPlacement {
                    prefix: "/eu-west/pii/".into(),
                    group: GroupId(4),
                    policy: None,
                    moving: None,
                    since: 0,
                },
                DomainPlacement {
                    prefix: "/us-east/".into(),
                    group: GroupId(1),
                    policy: None,
                    moving: None,
                    since: 0,
                },
            ],
            moves_done: Vec::new(),
            profiles: BTreeMap::new(),
        }
    }

    fn eu(mode: PolicyMode) -> Policy {
        Policy {
            allowed: vec![Selector::parse("jurisdiction:eu")],
            mode,
        }
    }

    fn set(prefix: &str, policy: Option<Policy>) -> PlacementChange {
        PlacementChange::SetPolicy {
            prefix: prefix.into(),
            policy,
            expected_epoch: None,
        }
    }

    /// A seed is taken once; its epoch is the revision; a second seed changes nothing.
    #[test]
    fn seed_once() {
        let m = apply(None, &PlacementChange::Seed(map()), 7)
            .unwrap()
            .unwrap();
        assert_eq!(m.epoch, 7);
        assert_eq!(
            apply(Some(&m), &PlacementChange::Seed(map()), 9).unwrap(),
            None
        );
    }

    /// A policy that a replica breaks is refused naming the domain, the policy and the
    /// region; one every replica satisfies is taken at the new epoch.
    #[test]
    fn policies_are_judged_by_every_replica() {
        let m = apply(None, &PlacementChange::Seed(map()), 1)
            .unwrap()
            .unwrap();
        let e = apply(Some(&m), &set("/eu-west/", Some(eu(PolicyMode::Strict))), 2).unwrap_err();
        assert_eq!(e.rule, "policy_violation");
        assert!(e.message.contains("/eu-west/"), "{e}");
        assert!(e.message.contains("jurisdiction:eu"), "{e}");
        assert!(e.message.contains("us-east"), "{e}");
        let ok = apply(
            Some(&m),
            &set("/eu-west/pii/", Some(eu(PolicyMode::Forward))),
            3,
        )
        .unwrap()
        .unwrap();
        assert_eq!(ok.epoch, 3);
        assert_eq!(ok.domains[1].policy, Some(eu(PolicyMode::Forward)));
        // Cleared again.
        let cleared = apply(Some(&ok), &set("/eu-west/pii/", None), 4)
            .unwrap()
            .unwrap();
        assert_eq!(cleared.domains[1].policy, None);
    }

    /// Bad input: unknown tag, unknown region, empty list, not a domain, a stale epoch.
    #[test]
    fn bad_changes_are_refused() {
        let m = apply(None, &PlacementChange::Seed(map()), 5)
            .unwrap()
            .unwrap();
        let p = |s: &str| Policy {
            allowed: vec![Selector::parse(s)],
            mode: PolicyMode::Forward,
        };
        let rule = |c: PlacementChange| apply(Some(&m), &c, 6).unwrap_err();
        let e = rule(set("/eu-west/pii/", Some(p("jurisdiction:mars"))));
        assert_eq!(e.rule, "bad_policy");
        assert!(e.message.contains("unknown tag jurisdiction:mars"), "{e}");
        assert!(rule(set("/eu-west/pii/", Some(p("atlantis"))))
            .message
            .contains("unknown region"));
        let empty = Policy {
            allowed: vec![],
            mode: PolicyMode::Forward,
        };
        assert_eq!(rule(set("/eu-west/pii/", Some(empty))).rule, "bad_policy");
        assert_eq!(rule(set("/nowhere/", None)).rule, "unknown_domain");
        assert_eq!(rule(set("nope", None)).rule, "bad_prefix");
        let stale = PlacementChange::SetPolicy {
            prefix: "/eu-west/pii/".into(),
            policy: None,
            expected_epoch: Some(4),
        };
        let e = rule(stale);
        assert_eq!(e.rule, "stale_epoch");
        assert!(e.message.contains("epoch 5"), "{e}");
    }

    /// A seed that breaks its own policies is refused (a topology check would have caught it).
    #[test]
    fn a_seed_that_breaks_a_policy_is_refused() {
        let mut bad = map();
        bad.domains[0].policy = Some(eu(PolicyMode::Forward));
        let e = apply(None, &PlacementChange::Seed(bad), 1).unwrap_err();
        assert!(e.message.contains("us-east"), "{e}");
    }

    /// A profile is set on a whole domain, cleared back to the default, and decides its
    /// group's closing: global-reads wins over local-writes among a group's domains.
    #[test]
    fn profiles_are_set_per_domain_and_close_the_group() {
        use meridian_types::ReadProfile;
        let m = apply(None, &PlacementChange::Seed(map()), 1)
            .unwrap()
            .unwrap();
        let set = |prefix: &str, profile| PlacementChange::SetProfile {
            prefix: prefix.into(),
            profile,
            expected_epoch: None,
        };
        let e = apply(
            Some(&m),
            &set("/eu-west/x/", Some(ReadProfile::GlobalReads)),
            2,
        )
        .unwrap_err();
        assert_eq!(e.rule, "unknown_domain");
        assert_eq!(m.group_profile(GroupId(2)), None);
        let m = apply(
            Some(&m),
            &set("/eu-west/", Some(ReadProfile::LocalWrites)),
            3,
        )
        .unwrap()
        .unwrap();
        assert_eq!(m.epoch, 3);
        assert_eq!(m.group_profile(GroupId(2)), Some(ReadProfile::LocalWrites));
        assert_eq!(m.group_profile(GroupId(1)), None);
        let m = apply(
            Some(&m),
            &set("/eu-west/", Some(ReadProfile::GlobalReads)),
            4,
        )
        .unwrap()
        .unwrap();
        assert_eq!(m.group_profile(GroupId(2)), Some(ReadProfile::GlobalReads));
        let m = apply(Some(&m), &set("/eu-west/", None), 5)
            .unwrap()
            .unwrap();
        assert_eq!(m.group_profile(GroupId(2)), None);
        assert!(m.profiles.is_empty());
        let stale = PlacementChange::SetProfile {
            prefix: "/eu-west/".into(),
            profile: None,
            expected_epoch: Some(4),
        };
        assert_eq!(apply(Some(&m), &stale, 6).unwrap_err().rule, "stale_epoch");
    }
}
