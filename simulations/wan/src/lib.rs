//! A user-space WAN emulator for tests and dev clusters.
//!
//! The machines Meridian runs its multi-region tests on have no `tc netem`, so inter-region
//! latency cannot be injected in the kernel. Instead every cross-region connection goes through
//! a [`Relay`]: a TCP proxy that holds each chunk of bytes for the one-way delay of its link
//! (plus optional jitter and a bandwidth cap) before forwarding it, never reordering bytes. The
//! same [`Wan`] can cut a link (closing its live connections and blackholing new ones) and heal
//! it again, locally or over a one-line TCP admin protocol ([`serve_control`] / [`control`]).
//!
//! - `link`: the link table: unordered region pair -> [`LinkSpec`], cut flag, counters.
//! - `relay`: the accept loop and the per-connection delay pumps.
//! - `control`: the admin line protocol, server and client.
//!
//! Invariants: bytes of one direction are delivered exactly once and in order; every buffer is
//! bounded (a full one stops reading, so TCP backpressure reaches the sender); all timing uses
//! the monotonic clock.

mod control;
mod link;
mod relay;

use std::time::Duration;

pub use control::{control, serve_control};
pub use link::Wan;
pub use relay::Relay;

/// The shape of one link, applied to each direction independently.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkSpec {
    /// Delay added to each direction.
    pub one_way: Duration,
    /// Extra uniform random delay in `0..=jitter` per chunk; never reorders bytes.
    pub jitter: Duration,
    /// `None` = unlimited; applies per direction per connection.
    pub bandwidth_bytes_per_sec: Option<u64>,
}

impl LinkSpec {
    /// A link with `one_way = rtt / 2`, no jitter and unlimited bandwidth.
    pub fn from_rtt_ms(rtt_ms: u64) -> Self {
        LinkSpec {
            one_way: Duration::from_millis(rtt_ms) / 2,
            jitter: Duration::ZERO,
            bandwidth_bytes_per_sec: None,
        }
    }
}

/// A snapshot of one link, as returned by [`Wan::links`].
#[derive(Clone, Debug, PartialEq)]
pub struct LinkStatus {
    /// The lexicographically smaller region of the pair.
    pub a: String,
    pub b: String,
    pub spec: LinkSpec,
    pub cut: bool,
    /// Live relayed connections (blackholed ones held during a cut are not counted).
    pub connections: usize,
    /// Bytes relayed in both directions since the link was declared.
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum WanError {
    #[error("unknown link {a} <-> {b}; known links: {known}")]
    UnknownLink { a: String, b: String, known: String },
    #[error("unknown region {0}")]
    UnknownRegion(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("control: {0}")]
    Control(String),
}
