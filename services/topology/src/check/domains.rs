//! Domains: each prefix well-formed, claimed once, owned by a known group; policies well-formed
//! (whether every replica satisfies them is judged on the finished topology, in `mod.rs`).

use super::{Checker, Known};
use crate::model::Domain;
use crate::raw::RawDomain;
use meridian_placement::validate_domain_prefix;
use meridian_types::{GroupId, Policy, PolicyMode, Selector};
use std::collections::BTreeMap;
use toml::Spanned;

impl Checker {
    pub(super) fn domains(&mut self, raw: &[Spanned<RawDomain>], known: &Known<'_>) -> Vec<Domain> {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        let mut out = Vec::with_capacity(raw.len());
        for (i, domain) in raw.iter().enumerate() {
            let domain = domain.get_ref();
            let prefix = domain.prefix.get_ref().as_str();
            let at = format!("domains[{i}] ({prefix:?})");
            if let Err(message) = validate_domain_prefix(prefix) {
                self.report(Some(domain.prefix.span()), format!("{at}.prefix"), message);
            } else if let Some(first) = seen.get(prefix) {
                self.report(
                    Some(domain.prefix.span()),
                    format!("{at}.prefix"),
                    format!(
                        "overlapping domains: domains[{first}] and domains[{i}] both claim {prefix:?}; a prefix belongs to exactly one group (nested prefixes such as /a/ and /a/b/ are fine: the longest wins)"
                    ),
                );
            } else {
                seen.insert(prefix, i);
            }

            let owner = domain.group.get_ref().as_str();
            let group = match known.groups.get(owner) {
                Some(id) => GroupId(*id),
                None => {
                    let names: Vec<&str> = known.groups.keys().copied().collect();
                    self.report(
                        Some(domain.group.span()),
                        format!("{at}.group"),
                        format!(
                            "unowned domain: no group is named {owner:?} (groups: {})",
                            if names.is_empty() {
                                "none".to_string()
                            } else {
                                names.join(", ")
                            }
                        ),
                    );
                    GroupId(0)
                }
            };
            let policy = domain.policy.as_ref().and_then(|p| {
                let raw = p.get_ref();
                let mode = match raw.mode.as_ref().map(|m| m.get_ref().as_str()) {
                    None | Some("forward") => PolicyMode::Forward,
                    Some("strict") => PolicyMode::Strict,
                    Some(other) => {
                        self.report(
                            raw.mode.as_ref().map(|m| m.span()),
                            format!("{at}.policy.mode"),
                            format!(
                                "unknown policy mode {other:?}: \"forward\" (clients elsewhere \
                                 are forwarded to an allowed region) or \"strict\" (they are refused)"
                            ),
                        );
                        return None;
                    }
                };
                Some(Policy {
                    allowed: raw.allowed.iter().map(|a| Selector::parse(a)).collect(),
                    mode,
                })
            });
            out.push(Domain {
                prefix: prefix.to_string(),
                group,
                policy,
                moving: None,
                since: 0,
            });
        }
        out
    }
}
