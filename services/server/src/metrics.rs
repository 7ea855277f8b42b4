//! What the node measures for `/metrics` beyond its status (server/src/http.rs renders both):
//! latency histograms of client reads by consistency level, of each group's sync rounds
//! (`syncs.rs`) and of the log writer's fsyncs (`meridian_storage::writer`). One entry:
//! [`Metrics`], handed by `node.rs` to the Kv service; [`Scrape`] is one reading of it all.

use meridian_proto::kv as pb;
use meridian_types::metrics::{Histogram, HistogramSnapshot};

/// The node's own histograms.
#[derive(Default)]
pub struct Metrics {
    /// Served reads (get, range) by consistency: sequential, linearizable, stale.
    reads: [Histogram; 3],
}

/// The label of each consistency level, in [`Metrics::reads`]' order.
const CONSISTENCY: [&str; 3] = ["sequential", "linearizable", "stale"];

impl Metrics {
    /// Where a read served at consistency `c` is counted.
    pub fn read(&self, c: pb::Consistency) -> &Histogram {
        &self.reads[match c {
            pb::Consistency::Sequential => 0,
            pb::Consistency::Linearizable => 1,
            pb::Consistency::Stale => 2,
        }]
    }

    /// The read histograms, labelled.
    pub fn observed(&self) -> Vec<Observed> {
        CONSISTENCY
            .iter()
            .zip(&self.reads)
            .map(|(c, h)| Observed {
                name: "meridian_read_duration_seconds",
                help: "Reads (get, range) this router served, by consistency level.",
                labels: vec![("consistency", c.to_string())],
                histogram: h.snapshot(),
            })
            .collect()
    }
}

/// One labelled histogram of a scrape.
#[derive(Clone, Debug)]
pub struct Observed {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub histogram: HistogramSnapshot,
}

/// One reading of the node: its status and its histograms.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    pub status: pb::StatusResponse,
    pub histograms: Vec<Observed>,
}
