//! Domains: each prefix well-formed, claimed once, owned by a known group.

use super::{Checker, Known};
use crate::model::Domain;
use crate::raw::RawDomain;
use meridian_types::{GroupId, KEY_BYTES_MAX};
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
            out.push(Domain {
                prefix: prefix.to_string(),
                group,
            });
        }
        out
    }
}

/// A domain prefix names a whole subtree: it starts and ends with `/`, its segments are
/// non-empty and not `.` or `..`, it has no NUL and is at most 4096 bytes. `/` alone is the
/// root domain (every key no longer domain claims).
pub fn validate_domain_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Err("a domain prefix must not be empty; \"/\" is the whole namespace".to_string());
    }
    if prefix.len() > KEY_BYTES_MAX {
        return Err(format!(
            "domain prefix is {} bytes; the limit is {KEY_BYTES_MAX} bytes",
            prefix.len()
        ));
    }
    if !prefix.starts_with('/') {
        return Err(format!("domain prefix {prefix:?} must start with \"/\""));
    }
    if !prefix.ends_with('/') {
        return Err(format!(
            "domain prefix {prefix:?} must end with \"/\": a domain is a whole subtree (write \"{prefix}/\")"
        ));
    }
    if prefix.contains('\0') {
        return Err(format!("domain prefix {prefix:?} contains a NUL character"));
    }
    if prefix == "/" {
        return Ok(());
    }
    let body = prefix.get(1..prefix.len() - 1).unwrap_or_default();
    for segment in body.split('/') {
        if segment.is_empty() {
            return Err(format!(
                "domain prefix {prefix:?} has an empty segment (\"//\"); segments are separated by exactly one \"/\""
            ));
        }
        if segment == "." || segment == ".." {
            return Err(format!(
                "domain prefix {prefix:?} has a {segment:?} segment; paths are absolute"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate_domain_prefix;

    /// Whole-subtree prefixes and the root pass; everything a key path forbids fails.
    #[test]
    fn prefixes() {
        for ok in ["/", "/a/", "/a/b-c/d.e/"] {
            assert!(validate_domain_prefix(ok).is_ok(), "{ok}");
        }
        let long = format!("/{}/", "x".repeat(4095));
        for bad in [
            "",
            "a/",
            "/a",
            "//",
            "/a//b/",
            "/./",
            "/a/../",
            "/a\0/",
            long.as_str(),
        ] {
            assert!(validate_domain_prefix(bad).is_err(), "{bad:?}");
        }
        assert!(validate_domain_prefix(&format!("/{}/", "x".repeat(4094))).is_ok());
    }
}
