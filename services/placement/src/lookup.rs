//! Domains → groups by longest-prefix match: which group owns a key, and which groups a
//! prefix scan would touch.
//!
//! Domain prefixes are whole subtrees (`/orders/`, or `/` for everything), so a key's
//! candidate domains are its own ancestors: lookups walk the key's `/` boundaries from the
//! longest down and binary-search each, O(depth × log domains) with no allocation.

use meridian_types::{DomainPlacement as Domain, GroupId};
use serde::Serialize;
use std::collections::BTreeSet;

/// Domains sorted by prefix, one per prefix.
///
/// Expects prefixes that start and end with `/` (as [`crate::validate_domain_prefix`]
/// accepts); matches happen at segment boundaries only.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Placement {
    domains: Vec<Domain>,
}

impl Placement {
    /// When two domains share a prefix the first one given wins (a validated topology has none).
    pub fn new(mut domains: Vec<Domain>) -> Placement {
        domains.sort_by(|a, b| a.prefix.cmp(&b.prefix));
        domains.dedup_by(|later, first| later.prefix == first.prefix);
        Placement { domains }
    }

    /// Longest domain prefix that `key` starts with, and its group. A key equal to a domain
    /// prefix without its trailing slash (key `/us-east` for domain `/us-east/`) belongs to
    /// that domain too.
    pub fn group_of(&self, key: &str) -> Option<(GroupId, &str)> {
        self.domain_of(key).map(|d| (d.group, d.prefix.as_str()))
    }

    /// The domain owning `key` (see [`Placement::group_of`]), with its policy.
    pub fn domain_of(&self, key: &str) -> Option<&Domain> {
        if key.is_empty() {
            return None;
        }
        if !key.ends_with('/') {
            let with_slash = self.domains.binary_search_by(|d| {
                d.prefix
                    .as_bytes()
                    .iter()
                    .cmp(key.as_bytes().iter().chain(std::iter::once(&b'/')))
            });
            if let Ok(i) = with_slash {
                return self.domains.get(i);
            }
        }
        self.longest_ancestor(key)
    }

    /// The domain whose prefix is exactly `prefix`.
    pub fn domain(&self, prefix: &str) -> Option<&Domain> {
        self.exact(prefix)
    }

    /// Every domain whose prefix starts with `prefix` (nested under it, itself included).
    pub fn domains_under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a Domain> + 'a {
        let start = self.domains.partition_point(|d| d.prefix.as_str() < prefix);
        self.domains
            .iter()
            .skip(start)
            .take_while(move |d| d.prefix.starts_with(prefix))
    }

    /// Every group holding keys that start with `prefix`: the owner of the longest domain
    /// enclosing it plus the owners of domains nested under it; sorted, deduplicated. An empty
    /// result means no domain covers any such key.
    pub fn groups_under(&self, prefix: &str) -> Vec<GroupId> {
        let mut groups = BTreeSet::new();
        if let Some(d) = self.longest_ancestor(prefix) {
            groups.insert(d.group);
        }
        groups.extend(self.domains_under(prefix).map(|d| d.group));
        groups.into_iter().collect()
    }

    /// Sorted by prefix.
    pub fn domains(&self) -> &[Domain] {
        &self.domains
    }

    /// The longest domain whose prefix is `text` cut just after one of its `/`.
    fn longest_ancestor(&self, text: &str) -> Option<&Domain> {
        text.rmatch_indices('/').find_map(|(i, _)| {
            let candidate = text.get(..=i)?;
            self.exact(candidate)
        })
    }

    fn exact(&self, prefix: &str) -> Option<&Domain> {
        self.domains
            .binary_search_by(|d| d.prefix.as_str().cmp(prefix))
            .ok()
            .and_then(|i| self.domains.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(domains: &[(&str, u64)]) -> Placement {
        Placement::new(
            domains
                .iter()
                .map(|(p, g)| Domain {
                    prefix: p.to_string(),
                    group: GroupId(*g),
                    policy: None,
                    moving: None,
                    since: 0,
                })
                .collect(),
        )
    }

    fn check(p: &Placement, key: &str, expected: Option<(u64, &str)>) {
        assert_eq!(
            p.group_of(key),
            expected.map(|(g, d)| (GroupId(g), d)),
            "key {key:?}"
        );
    }

    /// The longest enclosing domain wins; the bare domain name belongs to it; siblings that
    /// merely share characters do not.
    #[test]
    fn longest_prefix() {
        let p = placement(&[("/a/", 1), ("/a/b/", 2), ("/c/", 3)]);
        check(&p, "/a/x", Some((1, "/a/")));
        check(&p, "/a/b/x", Some((2, "/a/b/")));
        check(&p, "/a/b", Some((2, "/a/b/")));
        check(&p, "/a/bc", Some((1, "/a/")));
        check(&p, "/a", Some((1, "/a/")));
        check(&p, "/a/", Some((1, "/a/")));
        check(&p, "/ab", None);
        check(&p, "/d/x", None);
        check(&p, "", None);
        check(&p, "no-slash", None);
    }

    /// The root domain catches every key no other domain claims.
    #[test]
    fn root_domain() {
        let p = placement(&[("/", 9), ("/a/", 1)]);
        check(&p, "/zzz", Some((9, "/")));
        check(&p, "/", Some((9, "/")));
        check(&p, "/a/q", Some((1, "/a/")));
        assert_eq!(p.groups_under("/"), vec![GroupId(1), GroupId(9)]);
    }

    /// A scan touches the enclosing owner and every nested owner, nothing else.
    #[test]
    fn groups_under_prefix() {
        let p = placement(&[("/", 9), ("/a/", 1), ("/a/b/", 2), ("/ab/", 3), ("/c/", 4)]);
        assert_eq!(p.groups_under("/a/"), vec![GroupId(1), GroupId(2)]);
        assert_eq!(p.groups_under("/a/b/"), vec![GroupId(2)]);
        assert_eq!(p.groups_under("/a/x"), vec![GroupId(1)]);
        // "/a" also matches "/ab/..." and "/a..." keys the root owns.
        assert_eq!(
            p.groups_under("/a"),
            vec![GroupId(1), GroupId(2), GroupId(3), GroupId(9)]
        );
        assert_eq!(p.groups_under("/c/"), vec![GroupId(4)]);
        assert_eq!(p.groups_under("").len(), 5);
        assert!(placement(&[("/a/", 1)]).groups_under("/b/").is_empty());
    }

    /// Duplicate prefixes keep the first one given, whatever the input order.
    #[test]
    fn duplicates_keep_first() {
        let p = placement(&[("/b/", 1), ("/a/", 2), ("/b/", 3)]);
        assert_eq!(p.domains().len(), 2);
        check(&p, "/b/x", Some((1, "/b/")));
    }
}
