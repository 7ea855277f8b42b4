//! Key paths and values: the rules every write and read is checked against before anything
//! reaches Raft. Each error names the rule it broke.

use crate::{KEY_BYTES_MAX, VALUE_BYTES_MAX};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("key is empty: a key is a path such as /app/config")]
    Empty,
    #[error("key {0:?} must start with '/'")]
    NoLeadingSlash(String),
    #[error("key {0:?} has an empty segment ('//' or a trailing '/'); segments are separated by exactly one '/'")]
    EmptySegment(String),
    #[error("key {0:?} has a '.' or '..' segment; paths are absolute and never relative")]
    DotSegment(String),
    #[error("key is {len} bytes; the limit is {max} bytes")]
    TooLong { len: usize, max: usize },
    #[error("key is not valid UTF-8 (invalid byte at offset {0})")]
    InvalidUtf8(usize),
    #[error("key {0:?} contains a NUL character")]
    Nul(String),
    #[error("value is {len} bytes; the limit is {max} bytes")]
    ValueTooLarge { len: usize, max: usize },
}

impl PathError {
    /// A short stable name of the broken rule, for machine-readable error details.
    pub fn rule(&self) -> &'static str {
        match self {
            PathError::Empty => "key_empty",
            PathError::NoLeadingSlash(_) => "key_leading_slash",
            PathError::EmptySegment(_) => "key_empty_segment",
            PathError::DotSegment(_) => "key_dot_segment",
            PathError::TooLong { .. } => "key_too_long",
            PathError::InvalidUtf8(_) => "key_invalid_utf8",
            PathError::Nul(_) => "key_nul",
            PathError::ValueTooLarge { .. } => "value_too_large",
        }
    }
}

/// Checks raw bytes for UTF-8, then the path rules.
pub fn validate_key_bytes(raw: &[u8]) -> Result<&str, PathError> {
    let s = std::str::from_utf8(raw).map_err(|e| PathError::InvalidUtf8(e.valid_up_to()))?;
    validate_key(s)?;
    Ok(s)
}

/// A key: leading `/`, segments non-empty and not `.`/`..`, no trailing `/`, at most 4 KiB.
/// `/` alone is not a key (it is the root, which can be listed but not written).
pub fn validate_key(key: &str) -> Result<(), PathError> {
    check_common(key)?;
    if key == "/" || key.ends_with('/') {
        return Err(PathError::EmptySegment(key.to_string()));
    }
    check_segments(key, key[1..].split('/'))
}

/// A prefix for scans, prefix deletes and watches: a key, or a key followed by `/`, or `/`.
pub fn validate_prefix(prefix: &str) -> Result<(), PathError> {
    check_common(prefix)?;
    let body = prefix.strip_suffix('/').unwrap_or(prefix);
    if body.is_empty() {
        return Ok(());
    }
    check_segments(prefix, body[1..].split('/'))
}

fn check_common(key: &str) -> Result<(), PathError> {
    if key.is_empty() {
        return Err(PathError::Empty);
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(PathError::TooLong {
            len: key.len(),
            max: KEY_BYTES_MAX,
        });
    }
    if !key.starts_with('/') {
        return Err(PathError::NoLeadingSlash(key.to_string()));
    }
    if key.contains('\0') {
        return Err(PathError::Nul(key.to_string()));
    }
    Ok(())
}

fn check_segments<'a>(key: &str, segments: impl Iterator<Item = &'a str>) -> Result<(), PathError> {
    for seg in segments {
        if seg.is_empty() {
            return Err(PathError::EmptySegment(key.to_string()));
        }
        if seg == "." || seg == ".." {
            return Err(PathError::DotSegment(key.to_string()));
        }
    }
    Ok(())
}

pub fn validate_value(value: &[u8]) -> Result<(), PathError> {
    if value.len() > VALUE_BYTES_MAX {
        return Err(PathError::ValueTooLarge {
            len: value.len(),
            max: VALUE_BYTES_MAX,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(key: &str, expected: Result<(), &str>) {
        assert_eq!(
            validate_key(key).map_err(|e| e.rule()),
            expected,
            "key {key:?}"
        );
    }

    /// Every path rule accepts what it should and names the rule it rejects with.
    #[test]
    fn key_rules() {
        check("/a", Ok(()));
        check("/a/b-c/d_e.f", Ok(()));
        check("", Err("key_empty"));
        check("a/b", Err("key_leading_slash"));
        check("/", Err("key_empty_segment"));
        check("/a//b", Err("key_empty_segment"));
        check("/a/", Err("key_empty_segment"));
        check("/a/./b", Err("key_dot_segment"));
        check("/a/..", Err("key_dot_segment"));
        check("/a\0b", Err("key_nul"));
        check(&format!("/{}", "x".repeat(4095)), Ok(()));
        check(&format!("/{}", "x".repeat(4096)), Err("key_too_long"));
    }

    /// Prefixes may end with '/', and '/' alone is the whole namespace.
    #[test]
    fn prefix_rules() {
        assert!(validate_prefix("/").is_ok());
        assert!(validate_prefix("/a/").is_ok());
        assert!(validate_prefix("/a").is_ok());
        assert_eq!(
            validate_prefix("/a//").unwrap_err().rule(),
            "key_empty_segment"
        );
        assert_eq!(
            validate_prefix("a/").unwrap_err().rule(),
            "key_leading_slash"
        );
    }

    /// Raw bytes that are not UTF-8 are refused before any path rule.
    #[test]
    fn invalid_utf8() {
        assert_eq!(
            validate_key_bytes(b"/a\xff").unwrap_err(),
            PathError::InvalidUtf8(2)
        );
    }

    /// A value of exactly 1 MiB is accepted, one byte more is not.
    #[test]
    fn value_limit() {
        assert!(validate_value(&vec![0; VALUE_BYTES_MAX]).is_ok());
        assert_eq!(
            validate_value(&vec![0; VALUE_BYTES_MAX + 1])
                .unwrap_err()
                .rule(),
            "value_too_large"
        );
    }
}
