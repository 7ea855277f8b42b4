//! Groups: ids and names, kind, home, voters, learner regions, and the global group's rule
//! that it survives the loss of any one region.

use super::{Checker, Known};
use crate::model::{GroupKind, GroupSpec};
use crate::raw::RawGroup;
use meridian_types::GroupId;
use std::collections::BTreeMap;
use toml::Spanned;

/// A group with fewer voters does not survive the loss of one.
const VOTERS_MIN: usize = 3;

impl Checker {
    pub(super) fn groups<'r>(
        &mut self,
        raw: &'r [Spanned<RawGroup>],
        known: &mut Known<'r>,
    ) -> Vec<GroupSpec> {
        if raw.is_empty() {
            self.report(
                None,
                "groups",
                "the topology needs at least one group: add a [[groups]] table",
            );
        }
        let mut ids: BTreeMap<u64, usize> = BTreeMap::new();
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        let mut global_at: Option<usize> = None;
        let mut out = Vec::with_capacity(raw.len());
        for (i, spanned) in raw.iter().enumerate() {
            let group = spanned.get_ref();
            let id = *group.id.get_ref();
            let name = group.name.get_ref().as_str();
            let at = format!("groups[{i}] ({name:?})");

            if id == 0 {
                self.report(
                    Some(group.id.span()),
                    format!("{at}.id"),
                    "group id must be >= 1",
                );
            } else if let Some(first) = ids.get(&id) {
                self.report(
                    Some(group.id.span()),
                    format!("{at}.id"),
                    format!("duplicate group id {id}: groups[{first}] already uses it"),
                );
            } else {
                ids.insert(id, i);
            }

            if name.trim().is_empty() {
                self.report(
                    Some(group.name.span()),
                    format!("{at}.name"),
                    "a group name must not be empty",
                );
            } else if let Some(first) = names.get(name) {
                self.report(
                    Some(group.name.span()),
                    format!("{at}.name"),
                    format!("duplicate group name {name:?}: groups[{first}] already uses it"),
                );
            } else {
                names.insert(name, i);
                known.groups.insert(name, id);
            }

            let kind = match group.kind.get_ref().as_str() {
                "regional" => Some(GroupKind::Regional),
                "global" => Some(GroupKind::Global),
                other => {
                    self.report(
                        Some(group.kind.span()),
                        format!("{at}.kind"),
                        format!(
                            "unknown group kind {other:?}: expected \"regional\" or \"global\""
                        ),
                    );
                    None
                }
            };
            if kind == Some(GroupKind::Global) {
                if let Some(first) = global_at {
                    self.report(
                        Some(group.kind.span()),
                        format!("{at}.kind"),
                        format!("there can be at most one global group; groups[{first}] is already global"),
                    );
                } else {
                    global_at = Some(i);
                }
            }

            let home = self.home(spanned, kind, &at, known);
            let voter_regions = self.voters(spanned, kind, home, &at, known);
            self.learner_regions(group, kind, home, &voter_regions, &at, known);

            out.push(GroupSpec {
                id: GroupId(id),
                name: name.to_string(),
                kind: kind.unwrap_or(GroupKind::Regional),
                home: match kind {
                    Some(GroupKind::Global) => None,
                    _ => group.home.as_ref().map(|h| h.get_ref().clone()),
                },
                voters: group
                    .voters
                    .as_ref()
                    .map(|v| v.get_ref().iter().map(|n| *n.get_ref()).collect())
                    .unwrap_or_default(),
                learner_regions: group
                    .learner_regions
                    .iter()
                    .map(|r| r.get_ref().clone())
                    .collect(),
            });
        }
        out
    }

    /// Checks `home` and returns it when it names a known region.
    fn home<'r>(
        &mut self,
        spanned: &'r Spanned<RawGroup>,
        kind: Option<GroupKind>,
        at: &str,
        known: &Known<'r>,
    ) -> Option<&'r str> {
        let group = spanned.get_ref();
        let home = group.home.as_ref();
        match (kind, home) {
            (Some(GroupKind::Global), Some(home)) => {
                self.report(
                    Some(home.span()),
                    format!("{at}.home"),
                    "the global group has no home region (its voters are spread over regions): remove `home`",
                );
                None
            }
            (Some(GroupKind::Regional), None) => {
                self.report(
                    Some(spanned.span()),
                    at,
                    "a regional group needs `home`: the region its voters live in",
                );
                None
            }
            (_, Some(home)) => {
                let name = home.get_ref().as_str();
                if !known.regions.contains_key(name) {
                    self.report(
                        Some(home.span()),
                        format!("{at}.home"),
                        known.unknown_region(name),
                    );
                    None
                } else {
                    if !known.populated.contains(name) {
                        self.report(
                            Some(home.span()),
                            format!("{at}.home"),
                            format!("region {name:?} has no nodes to host the group's voters"),
                        );
                    }
                    Some(name)
                }
            }
            (_, None) => None,
        }
    }

    /// Checks the voters and returns how many known voters each region holds.
    fn voters<'r>(
        &mut self,
        spanned: &'r Spanned<RawGroup>,
        kind: Option<GroupKind>,
        home: Option<&str>,
        at: &str,
        known: &Known<'r>,
    ) -> BTreeMap<&'r str, usize> {
        let group = spanned.get_ref();
        let list_span = group
            .voters
            .as_ref()
            .map_or_else(|| spanned.span(), |v| v.span());
        let voters: &[Spanned<u64>] = group.voters.as_ref().map_or(&[], |v| v.get_ref());
        if voters.len() < VOTERS_MIN {
            self.report(
                Some(list_span.clone()),
                format!("{at}.voters"),
                format!(
                    "a group needs at least {VOTERS_MIN} voters to survive the loss of one; it has {}",
                    voters.len()
                ),
            );
        }

        let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
        let mut per_region: BTreeMap<&'r str, usize> = BTreeMap::new();
        for (j, voter) in voters.iter().enumerate() {
            let id = *voter.get_ref();
            let at_voter = format!("{at}.voters[{j}]");
            if let Some(first) = seen.get(&id) {
                self.report(
                    Some(voter.span()),
                    at_voter,
                    format!("node {id} is listed twice (also voters[{first}])"),
                );
                continue;
            }
            seen.insert(id, j);
            let Some((_, region)) = known.nodes.get(&id) else {
                self.report(
                    Some(voter.span()),
                    at_voter,
                    format!("unknown node id {id}"),
                );
                continue;
            };
            *per_region.entry(region).or_default() += 1;
            if let (Some(GroupKind::Regional), Some(home)) = (kind, home) {
                if *region != home {
                    self.report(
                        Some(voter.span()),
                        at_voter,
                        format!(
                            "voter node {id} is in region {region:?}, outside the group's home region {home:?}: a regional group's voters all live in its home"
                        ),
                    );
                }
            }
        }

        if kind == Some(GroupKind::Global) && !per_region.is_empty() {
            let total: usize = per_region.values().sum();
            if per_region.len() < 3 {
                let regions: Vec<&str> = per_region.keys().copied().collect();
                self.report(
                    Some(list_span),
                    format!("{at}.voters"),
                    format!(
                        "the global group must survive the loss of any one region: its voters are in only {} region(s) ({}); spread them over at least 3",
                        per_region.len(),
                        regions.join(", ")
                    ),
                );
            } else {
                for (region, count) in &per_region {
                    // Losing the region must leave a majority of all voters: 2 × rest > total.
                    if 2 * count >= total {
                        self.report(
                            Some(list_span.clone()),
                            format!("{at}.voters"),
                            format!(
                                "the global group must survive the loss of any one region: region {region:?} holds {count} of its {total} voters, so losing it leaves no majority"
                            ),
                        );
                    }
                }
            }
        }
        per_region
    }

    fn learner_regions(
        &mut self,
        group: &RawGroup,
        kind: Option<GroupKind>,
        home: Option<&str>,
        voter_regions: &BTreeMap<&str, usize>,
        at: &str,
        known: &Known<'_>,
    ) {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (j, learner) in group.learner_regions.iter().enumerate() {
            let region = learner.get_ref().as_str();
            let at_learner = format!("{at}.learner_regions[{j}]");
            let problem = if let Some(first) = seen.get(region) {
                Some(format!(
                    "region {region:?} is listed twice (also learner_regions[{first}])"
                ))
            } else if !known.regions.contains_key(region) {
                Some(known.unknown_region(region))
            } else if kind == Some(GroupKind::Regional) && home == Some(region) {
                Some(format!(
                    "region {region:?} is the group's home: its voters already live there"
                ))
            } else if kind == Some(GroupKind::Global) && voter_regions.contains_key(region) {
                Some(format!(
                    "region {region:?} already holds a voter of the global group; its other nodes host learners automatically"
                ))
            } else if !known.populated.contains(region) {
                Some(format!("region {region:?} has no nodes to host a learner"))
            } else {
                None
            };
            seen.entry(region).or_insert(j);
            if let Some(message) = problem {
                self.report(Some(learner.span()), at_learner, message);
            }
        }
    }
}
