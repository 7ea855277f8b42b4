//! Region-local endpoints that find themselves: from a seed endpoint (any router of the
//! cluster), learn every router and its region from the cluster itself, and order them for a
//! client whose home is one region — that region's routers first (the client talks to one of
//! them and fails over to the next), then the other regions' by measured round trip. The
//! entry is [`Client::connect_regional`]; [`regional_endpoints`] gives the order alone (the CLI's
//! `--region`).

use crate::{Client, Error, Options};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Longest a round-trip probe of another region waits.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What discovery found: the home region and the endpoints in the order to use them.
#[derive(Clone, Debug, PartialEq)]
pub struct Regional {
    pub home: String,
    /// Home's routers first, then each other region's, nearest (by round trip) first.
    pub endpoints: Vec<String>,
    /// How many of `endpoints` (the first ones) are the home region's.
    pub home_routers: usize,
    /// The other regions with their measured round trip (`None`: no answer within 2 s).
    pub others: Vec<(String, Option<Duration>)>,
}

/// Orders the cluster's routers for a client at home in `region` (default: the seed's region).
pub async fn regional_endpoints(
    seeds: &[String],
    opts: &Options,
    region: Option<&str>,
) -> Result<Regional, Error> {
    let seed = Client::new(seeds.to_vec(), opts.clone())?;
    let status = seed.status(true).await?;
    let mut by_region: BTreeMap<String, Vec<String>> = BTreeMap::new();
    by_region
        .entry(status.region.clone())
        .or_default()
        .push(status.address.clone());
    for n in &status.nodes {
        if !n.address.is_empty() {
            by_region
                .entry(n.region.clone())
                .or_default()
                .push(n.address.clone());
        }
    }
    for list in by_region.values_mut() {
        list.sort();
        list.dedup();
    }
    let home = region.unwrap_or(&status.region).to_string();
    let Some(mine) = by_region.get(&home).cloned() else {
        let known: Vec<&String> = by_region.keys().collect();
        return Err(Error::InvalidArgument {
            rule: "unknown_region".into(),
            message: format!(
                "region {home:?} has no router in this cluster (its regions: {known:?}); \
                 unreachable nodes: {:?}",
                status.unreachable
            ),
        });
    };
    // Spread clients over the home routers: each process starts at its own one.
    let start = std::process::id() as usize % mine.len();
    let mut endpoints: Vec<String> = mine[start..]
        .iter()
        .chain(&mine[..start])
        .cloned()
        .collect();
    let mut probes = Vec::new();
    for (r, list) in by_region.iter().filter(|(r, _)| **r != home) {
        let (r, first, opts) = (r.clone(), list[0].clone(), opts.clone());
        probes.push(tokio::spawn(async move {
            let rtt = async {
                let c = Client::new(vec![first], opts).ok()?;
                let t = Instant::now();
                tokio::time::timeout(PROBE_TIMEOUT, c.status(false))
                    .await
                    .ok()?
                    .ok()?;
                Some(t.elapsed())
            }
            .await;
            (r, rtt)
        }));
    }
    let mut others = Vec::new();
    for p in probes {
        if let Ok(r) = p.await {
            others.push(r);
        }
    }
    // Nearest first; regions that did not answer last.
    others.sort_by_key(|(r, rtt)| (rtt.is_none(), *rtt, r.clone()));
    for (r, _) in &others {
        endpoints.extend(by_region[r].iter().cloned());
    }
    Ok(Regional {
        home,
        home_routers: mine.len(),
        endpoints,
        others,
    })
}

impl Client {
    /// A client at home in `region` (default: the region of the seed endpoints' router): it
    /// talks to a router of that region, fails over to the region's other routers, then to the
    /// nearest other region's — one session throughout, so nothing it reads goes backwards.
    pub async fn connect_regional(
        seeds: &[String],
        opts: Options,
        region: Option<&str>,
    ) -> Result<Client, Error> {
        let r = regional_endpoints(seeds, &opts, region).await?;
        Client::with_home(r.endpoints, r.home_routers, opts)
    }
}
