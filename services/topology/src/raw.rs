//! The file exactly as written: serde's view of the TOML, with spans kept for line numbers.
//! Anything that can be wrong in more than one place at once (unknown names, bad kinds, bad
//! prefixes) stays a string here so that validation can report every problem, not the first.

use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFile {
    pub name: Spanned<String>,
    #[serde(default)]
    pub regions: Vec<Spanned<RawRegion>>,
    #[serde(default)]
    pub nodes: Vec<Spanned<RawNode>>,
    #[serde(default)]
    pub rtt_ms: Option<Spanned<RawRtt>>,
    #[serde(default)]
    pub groups: Vec<Spanned<RawGroup>>,
    #[serde(default)]
    pub domains: Vec<Spanned<RawDomain>>,
}

/// `from = { to = ms, ... }` rows.
pub(crate) type RawRtt =
    BTreeMap<Spanned<String>, Spanned<BTreeMap<Spanned<String>, Spanned<u64>>>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRegion {
    pub name: Spanned<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNode {
    pub id: Spanned<u64>,
    pub region: Spanned<String>,
    pub address: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGroup {
    pub id: Spanned<u64>,
    pub name: Spanned<String>,
    pub kind: Spanned<String>,
    #[serde(default)]
    pub home: Option<Spanned<String>>,
    #[serde(default)]
    pub voters: Option<Spanned<Vec<Spanned<u64>>>>,
    #[serde(default)]
    pub learner_regions: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDomain {
    pub prefix: Spanned<String>,
    pub group: Spanned<String>,
    #[serde(default)]
    pub policy: Option<Spanned<RawPolicy>>,
}

/// `policy = { allowed = ["jurisdiction:eu", "eu-west"], mode = "forward" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    pub allowed: Vec<String>,
    #[serde(default)]
    pub mode: Option<Spanned<String>>,
}
