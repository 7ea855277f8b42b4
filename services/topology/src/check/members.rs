//! Regions, nodes and the round-trip matrix between regions.

use super::{Checker, Known, RTT_MS_MAX};
use crate::model::{NodeSpec, Region};
use crate::raw::{RawNode, RawRegion, RawRtt};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::ops::Range;
use toml::Spanned;

impl Checker {
    pub(super) fn regions<'r>(
        &mut self,
        raw: &'r [Spanned<RawRegion>],
        known: &mut Known<'r>,
    ) -> Vec<Region> {
        if raw.is_empty() {
            self.report(
                None,
                "regions",
                "the topology needs at least one region: add a [[regions]] table",
            );
        }
        let mut out = Vec::with_capacity(raw.len());
        for (i, region) in raw.iter().enumerate() {
            let region = region.get_ref();
            let name = region.name.get_ref().as_str();
            let at = format!("regions[{i}] ({name:?}).name");
            if name.trim().is_empty() {
                self.report(
                    Some(region.name.span()),
                    at,
                    "a region name must not be empty",
                );
            } else if let Some(first) = known.regions.get(name) {
                self.report(
                    Some(region.name.span()),
                    at,
                    format!("duplicate region name {name:?}: regions[{first}] already uses it"),
                );
            } else {
                known.regions.insert(name, i);
                known.region_order.push(name);
            }
            out.push(Region {
                name: name.to_string(),
                tags: region.tags.clone(),
            });
        }
        out
    }

    pub(super) fn nodes<'r>(
        &mut self,
        raw: &'r [Spanned<RawNode>],
        known: &mut Known<'r>,
    ) -> Vec<NodeSpec> {
        if raw.is_empty() {
            self.report(
                None,
                "nodes",
                "the topology needs at least one node: add a [[nodes]] table",
            );
        }
        let mut addresses: BTreeMap<String, (usize, u64)> = BTreeMap::new();
        let mut out = Vec::with_capacity(raw.len());
        for (i, node) in raw.iter().enumerate() {
            let node = node.get_ref();
            let id = *node.id.get_ref();
            let region = node.region.get_ref().as_str();
            let address = node.address.get_ref().as_str();
            let at = format!("nodes[{i}] (id {id})");

            if id == 0 {
                self.report(
                    Some(node.id.span()),
                    format!("{at}.id"),
                    "node id must be >= 1",
                );
            } else if let Some((first, _)) = known.nodes.get(&id) {
                self.report(
                    Some(node.id.span()),
                    format!("{at}.id"),
                    format!("duplicate node id {id}: nodes[{first}] already uses it"),
                );
            } else {
                known.nodes.insert(id, (i, region));
            }

            if let Err(message) = check_address(address) {
                self.report(Some(node.address.span()), format!("{at}.address"), message);
            } else {
                let normalized = address.trim().to_ascii_lowercase();
                if let Some((first, first_id)) = addresses.get(&normalized) {
                    self.report(
                        Some(node.address.span()),
                        format!("{at}.address"),
                        format!(
                            "duplicate address {address:?}: nodes[{first}] (id {first_id}) already uses it"
                        ),
                    );
                } else {
                    addresses.insert(normalized, (i, id));
                }
            }

            if known.regions.contains_key(region) {
                known.populated.insert(region);
            } else {
                self.report(
                    Some(node.region.span()),
                    format!("{at}.region"),
                    known.unknown_region(region),
                );
            }
            out.push(NodeSpec {
                id,
                region: region.to_string(),
                address: address.to_string(),
            });
        }
        out
    }

    /// Checks the matrix and returns it normalized: distinct known regions, both directions.
    pub(super) fn rtt(
        &mut self,
        raw: Option<&Spanned<RawRtt>>,
        known: &Known<'_>,
    ) -> BTreeMap<String, BTreeMap<String, u64>> {
        let mut normalized: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        let Some(table) = raw else {
            if known.region_order.len() > 1 {
                self.report(
                    None,
                    "rtt_ms",
                    format!(
                        "missing: with {} regions every pair of distinct regions needs a round trip; add an [rtt_ms] table",
                        known.region_order.len()
                    ),
                );
            }
            return normalized;
        };

        // Every pair written down (valid or not), and the valid values with their spans.
        let mut written: BTreeSet<(&str, &str)> = BTreeSet::new();
        let mut given: BTreeMap<(&str, &str), (u64, Range<usize>)> = BTreeMap::new();
        let mut row_spans: BTreeMap<&str, Range<usize>> = BTreeMap::new();

        let mut rows: Vec<_> = table.get_ref().iter().collect();
        rows.sort_by_key(|(from, _)| from.span().start);
        for (from, row) in rows {
            let a = from.get_ref().as_str();
            row_spans.insert(a, from.span());
            if !known.regions.contains_key(a) {
                self.report(
                    Some(from.span()),
                    format!("rtt_ms.{a}"),
                    known.unknown_region(a),
                );
                continue;
            }
            let mut cells: Vec<_> = row.get_ref().iter().collect();
            cells.sort_by_key(|(to, _)| to.span().start);
            for (to, ms) in cells {
                let b = to.get_ref().as_str();
                let ms_value = *ms.get_ref();
                let at = format!("rtt_ms.{a}.{b}");
                written.insert((a, b));
                if !known.regions.contains_key(b) {
                    self.report(Some(to.span()), at, known.unknown_region(b));
                } else if a == b {
                    if ms_value != 0 {
                        self.report(
                            Some(ms.span()),
                            at,
                            format!("a region's round trip to itself must be 0 (or left out), got {ms_value}"),
                        );
                    }
                } else if ms_value == 0 {
                    self.report(
                        Some(ms.span()),
                        at,
                        "a round trip between distinct regions must be >= 1 ms, got 0",
                    );
                } else if ms_value > RTT_MS_MAX {
                    self.report(
                        Some(ms.span()),
                        at,
                        format!("round trip of {ms_value} ms is over the limit of {RTT_MS_MAX} ms"),
                    );
                } else {
                    given.insert((a, b), (ms_value, ms.span()));
                }
            }
        }

        for (ai, &a) in known.region_order.iter().enumerate() {
            for (bi, &b) in known.region_order.iter().enumerate() {
                if a == b {
                    continue;
                }
                if !written.contains(&(a, b)) {
                    let span = row_spans.get(a).cloned().unwrap_or_else(|| table.span());
                    self.report(
                        Some(span),
                        format!("rtt_ms.{a}.{b}"),
                        format!(
                            "missing round trip from {a} to {b}: both directions of every pair of distinct regions must be present (add `{b} = MS` to the `{a}` row)"
                        ),
                    );
                    continue;
                }
                let (Some((ab, span)), Some((ba, _))) = (given.get(&(a, b)), given.get(&(b, a)))
                else {
                    continue;
                };
                if ai < bi && ab != ba {
                    self.report(
                        Some(span.clone()),
                        format!("rtt_ms.{a}.{b}"),
                        format!(
                            "asymmetric round trip: {a} -> {b} is {ab} ms but {b} -> {a} is {ba} ms; a round trip is the same both ways"
                        ),
                    );
                }
                normalized
                    .entry(a.to_string())
                    .or_default()
                    .insert(b.to_string(), *ab);
            }
        }
        normalized
    }
}

/// A node address: a socket address or `host:port`, port 1..=65535.
fn check_address(address: &str) -> Result<(), String> {
    const HINT: &str =
        "expected host:port, e.g. \"10.0.0.1:7400\", \"[::1]:7400\" or \"node1.example.com:7400\"";
    if let Ok(socket) = address.parse::<SocketAddr>() {
        if socket.port() == 0 {
            return Err(format!(
                "address {address:?} has port 0; peers must be able to dial it: give a fixed port"
            ));
        }
        return Ok(());
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(format!("address {address:?} has no port; {HINT}"));
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if !host_ok {
        return Err(format!("address {address:?} has no valid host; {HINT}"));
    }
    match port.parse::<u16>() {
        Ok(0) => Err(format!(
            "address {address:?} has port 0; peers must be able to dial it: give a fixed port"
        )),
        Ok(_) => Ok(()),
        Err(_) => Err(format!(
            "address {address:?} has port {port:?}, not a number from 1 to 65535; {HINT}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::check_address;

    /// Socket addresses and host names with a numeric, non-zero port pass; nothing else does.
    #[test]
    fn addresses() {
        for ok in [
            "127.0.1.1:7400",
            "[::1]:7400",
            "node-1.example.com:7400",
            "db_1:1",
        ] {
            assert!(check_address(ok).is_ok(), "{ok}");
        }
        for bad in [
            "127.0.1.1",
            ":7400",
            "host:",
            "host:port",
            "host:70000",
            "a b:1",
            "::1:7400",
            "h:0",
            "1.2.3.4:0",
            "",
        ] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
    }
}
