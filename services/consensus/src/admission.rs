//! Who may speak the peer protocol (Raft, forwarding, read-index syncs) when the cluster runs
//! mTLS (docs/security.md): a request must come over a connection whose client certificate
//! names a node of the topology (`n<ID>.node.meridian`, issued by the cluster's CA — the TLS
//! handshake already checked the signature), and a message for a group only from a member of
//! that group (voter or learner, as this node's replica knows the membership; a replica that
//! knows none yet, being new, takes any node of the topology). Without mTLS everything is
//! admitted, as before.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use tonic::{Request, Status};

/// The nodes allowed to speak the peer protocol, and the refusals counted so far.
#[derive(Debug, Default)]
pub struct Admission {
    /// `None`: no mTLS, everyone is admitted.
    nodes: Option<BTreeSet<u64>>,
    refused: AtomicU64,
}

impl Admission {
    /// Admits everyone (no mTLS).
    pub fn open() -> Self {
        Self::default()
    }

    /// Admits only connections whose certificate names one of `nodes`.
    pub fn nodes(nodes: impl IntoIterator<Item = u64>) -> Self {
        Self {
            nodes: Some(nodes.into_iter().collect()),
            refused: AtomicU64::new(0),
        }
    }

    /// Requests refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn refuse(&self, status: Status, what: &str) -> Status {
        self.refused.fetch_add(1, Ordering::Relaxed);
        tracing::info!(request = what, "peer refused: {}", status.message());
        status
    }

    /// The node that sent `request` (`None` without mTLS), or the refusal.
    pub fn sender<T>(&self, request: &Request<T>, what: &str) -> Result<Option<u64>, Status> {
        let Some(nodes) = &self.nodes else {
            return Ok(None);
        };
        let certs = request.peer_certs();
        let Some(node) = meridian_tls::peer_node(certs.as_deref().map(Vec::as_slice)) else {
            return Err(self.refuse(
                Status::unauthenticated(
                    "the peer protocol needs a node certificate of this cluster (mTLS)",
                ),
                what,
            ));
        };
        if !nodes.contains(&node) {
            return Err(self.refuse(
                Status::permission_denied(format!(
                    "node {node} is not a node of this cluster's topology"
                )),
                what,
            ));
        }
        Ok(Some(node))
    }

    /// As [`Admission::sender`], and the sender must be in `members` of `group`.
    pub fn member<T>(
        &self,
        request: &Request<T>,
        group: u64,
        members: impl FnOnce() -> BTreeSet<u64>,
        what: &str,
    ) -> Result<(), Status> {
        let sender = self.sender(request, what)?;
        self.check_member(sender, group, members, what)
    }

    /// Refuses `sender` (from [`Admission::sender`]) unless it is in `members` of `group`
    /// (empty: this replica knows no membership yet, so any node of the topology).
    pub fn check_member(
        &self,
        sender: Option<u64>,
        group: u64,
        members: impl FnOnce() -> BTreeSet<u64>,
        what: &str,
    ) -> Result<(), Status> {
        let Some(node) = sender else {
            return Ok(());
        };
        let members = members();
        if members.is_empty() || members.contains(&node) {
            return Ok(());
        }
        Err(self.refuse(
            Status::permission_denied(format!(
                "node {node} is not a member of group {group} (members: {members:?})"
            )),
            what,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_mtls_everyone_is_admitted() {
        let a = Admission::open();
        let r = Request::new(());
        assert_eq!(a.sender(&r, "t").expect("open"), None);
        assert!(a.member(&r, 1, || BTreeSet::from([9]), "t").is_ok());
    }

    #[test]
    fn with_mtls_a_request_without_a_certificate_is_unauthenticated() {
        let a = Admission::nodes([1, 2, 3]);
        let r = Request::new(());
        let e = a.sender(&r, "t").expect_err("no certificate");
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert_eq!(a.refused(), 1);
    }

    #[test]
    fn a_member_is_admitted_to_its_group_and_no_other() {
        let a = Admission::nodes([1, 2, 3, 4]);
        assert!(a
            .check_member(Some(2), 7, || BTreeSet::from([1, 2]), "t")
            .is_ok());
        let e = a
            .check_member(Some(4), 7, || BTreeSet::from([1, 2]), "t")
            .expect_err("not a member");
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        // A new replica that knows no membership yet takes any node of the topology.
        assert!(a.check_member(Some(4), 7, BTreeSet::new, "t").is_ok());
        assert_eq!(a.refused(), 1);
    }
}
