//! Turning a topology file into a [`Topology`]: parse the TOML, then check every rule and
//! collect every problem with its location, so one run of `meridian topology check` shows
//! all of them.
//!
//! - [`members`]: regions, nodes (ids, addresses) and the round-trip matrix.
//! - [`groups`]: voters, homes, learner regions, the global group's survival rule.
//! - [`domains`]: domain prefixes, their owners and policies; residency (every replica where
//!   its domains' policies allow) is judged here on the finished topology.

mod domains;
mod groups;
mod members;

pub use meridian_placement::validate_domain_prefix;

use crate::error::{Problem, TopologyError};
use crate::model::Topology;
use crate::raw::RawFile;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::ops::Range;
use std::path::Path;

/// Largest round trip accepted between two regions, in ms. Real ones stay under ~600 ms; the
/// cap keeps timing arithmetic derived from it far from overflow.
pub const RTT_MS_MAX: u64 = 60_000;

pub(crate) fn load(path: &Path) -> Result<Topology, TopologyError> {
    let source_name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, &source_name),
        Err(e) => Err(TopologyError::single(
            &source_name,
            String::new(),
            format!("cannot read the topology file: {e}"),
        )),
    }
}

pub(crate) fn parse(text: &str, source_name: &str) -> Result<Topology, TopologyError> {
    let raw: RawFile = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => return Err(malformed(text, source_name, &e)),
    };
    let mut checker = Checker::new(text);
    let mut known = Known::default();
    if raw.name.get_ref().trim().is_empty() {
        checker.report(
            Some(raw.name.span()),
            "name",
            "the topology needs a name, e.g. name = \"prod-3region\"",
        );
    }
    let regions = checker.regions(&raw.regions, &mut known);
    let nodes = checker.nodes(&raw.nodes, &mut known);
    let rtt_ms = checker.rtt(raw.rtt_ms.as_ref(), &known);
    let groups = checker.groups(&raw.groups, &mut known);
    let domains = checker.domains(&raw.domains, &known);
    if !checker.problems.is_empty() {
        return Err(TopologyError {
            source_name: source_name.to_string(),
            problems: checker.problems,
        });
    }
    let topology = Topology {
        name: raw.name.into_inner(),
        regions,
        nodes,
        groups,
        domains,
        rtt_ms,
    };
    // Residency: every replica of a group must sit where each of its domains' policies allows.
    for (prefix, message) in meridian_placement::check_map(&topology.placement_map()) {
        let at = raw
            .domains
            .iter()
            .enumerate()
            .find(|(_, d)| d.get_ref().prefix.get_ref() == &prefix);
        match at {
            Some((i, d)) => checker.report(
                Some(d.get_ref().policy.as_ref().map_or(d.span(), |p| p.span())),
                format!("domains[{i}] ({prefix:?}).policy"),
                message,
            ),
            None => checker.report(None, "domains", message),
        }
    }
    if !checker.problems.is_empty() {
        return Err(TopologyError {
            source_name: source_name.to_string(),
            problems: checker.problems,
        });
    }
    Ok(topology)
}

/// What the earlier sections established, for the later ones to check names against.
/// Each map holds the first occurrence of a name; duplicates are reported where they appear.
#[derive(Default)]
struct Known<'r> {
    /// Region name → index in `regions`, and the names in file order.
    regions: BTreeMap<&'r str, usize>,
    region_order: Vec<&'r str>,
    /// Node id → (index in `nodes`, region as written).
    nodes: BTreeMap<u64, (usize, &'r str)>,
    /// Regions with at least one node.
    populated: BTreeSet<&'r str>,
    /// Group name → group id.
    groups: BTreeMap<&'r str, u64>,
}

impl Known<'_> {
    fn region_list(&self) -> String {
        if self.region_order.is_empty() {
            "none are defined".to_string()
        } else {
            format!("known regions: {}", self.region_order.join(", "))
        }
    }

    fn unknown_region(&self, name: &str) -> String {
        format!("unknown region {name:?} ({})", self.region_list())
    }
}

/// Collects problems; turns byte spans into line numbers.
struct Checker {
    /// Byte offset where each line starts; line 1 starts at 0.
    line_starts: Vec<usize>,
    problems: Vec<Problem>,
}

impl Checker {
    fn new(text: &str) -> Checker {
        Checker {
            line_starts: line_starts(text),
            problems: Vec::new(),
        }
    }

    /// Records a problem at `path`, prefixed with the line `span` starts on when known.
    fn report(
        &mut self,
        span: Option<Range<usize>>,
        path: impl Display,
        message: impl Into<String>,
    ) {
        let location = match span {
            Some(span) => format!("line {}: {path}", line_of(&self.line_starts, span.start)),
            None => path.to_string(),
        };
        self.problems.push(Problem {
            location,
            message: message.into(),
        });
    }
}

fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

/// 1-based line of a byte offset.
fn line_of(line_starts: &[usize], offset: usize) -> usize {
    line_starts.partition_point(|&start| start <= offset).max(1)
}

/// Syntax errors, wrong types and unknown fields: the toml crate stops at the first one.
fn malformed(text: &str, source_name: &str, e: &toml::de::Error) -> TopologyError {
    let location = match e.span() {
        Some(span) => {
            let starts = line_starts(text);
            let line = line_of(&starts, span.start);
            let line_start = starts.get(line - 1).copied().unwrap_or(0);
            let column = text
                .get(line_start..span.start)
                .map_or(1, |before| before.chars().count() + 1);
            format!("line {line}, column {column}")
        }
        None => String::new(),
    };
    let message = e
        .message()
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    TopologyError::single(source_name, location, format!("invalid TOML: {message}"))
}
