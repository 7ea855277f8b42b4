//! Domain prefixes: the same rule for topology files and for online placement changes.

use meridian_types::KEY_BYTES_MAX;

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
