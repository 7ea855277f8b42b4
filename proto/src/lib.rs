//! Generated gRPC code for Meridian's wire contract.
//!
//! - [`kv`]: the client API (`meridian.v1`), the contract the SDK, CLI and gateway use.
//! - [`peer`]: node-to-node Raft traffic (`meridian.peer.v1`), group id in every message.
//!
//! - [`io`]: the transport seam (injected listener and dialer, used by simulation).
//!
//! Domain crates never see these types: conversion happens once, at the service edge.

pub mod io;
pub mod trace;

/// The encoded `FileDescriptorSet` of the client-facing services (kv, lock, placement, tokens
/// protos), for gRPC server reflection.
pub const CLIENT_FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/meridian_client_descriptor.bin"));

#[allow(clippy::all, clippy::pedantic)]
pub mod kv {
    tonic::include_proto!("meridian.v1");
}

#[allow(clippy::all, clippy::pedantic)]
pub mod peer {
    tonic::include_proto!("meridian.peer.v1");
}

/// Largest gRPC message either side accepts: a 1 MiB value plus headroom, so an oversized value
/// reaches validation and gets a clear error instead of a transport failure.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// Largest node-to-node message (Raft entries, forwarded writes): one client request can be
/// `MAX_MESSAGE_BYTES`, and an entry or a forwarded write carries it plus framing.
pub const PEER_MESSAGE_BYTES: usize = 32 * 1024 * 1024;

/// A metadata key of a request's capability token: `authorization: Bearer TOKEN`, HTTP's
/// convention, for tools like grpcurl (docs/security.md).
pub const AUTHORIZATION: &str = "authorization";

/// The metadata key the SDK and the routers send a capability token in: the bare token. HPACK
/// keeps it in the connection's header table, so every request after a connection's first
/// carries it in a byte or two; h2 (like nghttp2) never indexes `authorization`, which would
/// cost every request its ~600 characters, Huffman-coded by the client and decoded by the node.
pub const TOKEN: &str = "meridian-token";

/// Metadata key marking a request one router proxied whole to another; its value is the region
/// the request arrived in (`services/server/src/residency.rs`).
pub const PROXIED: &str = "meridian-proxied";

impl kv::HlcTimestamp {
    /// Ordered as timestamps are: by physical time, then by the counter.
    pub fn order(&self) -> (u64, u32) {
        (self.physical_us, self.logical)
    }

    /// The later of `a` and `b` (either may be absent).
    pub fn latest(a: Option<Self>, b: Option<Self>) -> Option<Self> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.order() > a.order() { b } else { a }),
            (a, b) => a.or(b),
        }
    }
}
