//! The placement map as a client sees it: `placement` shows the map the endpoint's router
//! follows; `set_policy` changes a domain's residency policy and `move_domain` starts an online
//! move, both through the global group.

use crate::{pb, timed, Client, Error, OpKind};
use meridian_proto::kv::placement_client::PlacementClient;
use tonic::transport::Channel;

fn placement_client(ch: Channel) -> PlacementClient<Channel> {
    PlacementClient::new(ch)
}

impl Client {
    /// The map the endpoint's router routes by, with its epoch.
    pub async fn placement(&self) -> Result<pb::PlacementShowResponse, Error> {
        self.call_channel(OpKind::Read, self.opts().rpc_timeout, |ch, t| {
            let r = timed(pb::PlacementShowRequest {}, t);
            async move { placement_client(ch).show(r).await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// Starts moving `prefix` (carved out of its domain when it is not one) to group `to` (a
    /// name or id); returns once the global group has recorded the move — `placement()` then
    /// shows it under way, and its outcome in `moves_done`. Refused, with nothing changed, for an
    /// unknown group, a prefix that is not a domain path, a move into the owner itself, a move
    /// overlapping one under way, a target a policy excludes, or a stale `expected_epoch`.
    pub async fn move_domain(
        &self,
        prefix: &str,
        to: &str,
        expected_epoch: u64,
    ) -> Result<pb::PlacementMoveResponse, Error> {
        let req = pb::PlacementMoveRequest {
            prefix: prefix.to_string(),
            to: to.to_string(),
            expected_epoch,
        };
        self.call_channel(OpKind::Write, self.opts().rpc_timeout, |ch, t| {
            let r = timed(req.clone(), t);
            async move { placement_client(ch).r#move(r).await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// Sets how domain `prefix`'s group closes timestamps: `"local-writes"`, `"global-reads"`,
    /// or `""` for the nodes' default (docs/closed-timestamps.md). `expected_epoch` (0: any)
    /// makes it a compare-and-set on the map. Returns the new epoch.
    pub async fn set_profile(
        &self,
        prefix: &str,
        profile: &str,
        expected_epoch: u64,
    ) -> Result<u64, Error> {
        let req = pb::PlacementSetProfileRequest {
            prefix: prefix.to_string(),
            profile: profile.to_string(),
            expected_epoch,
        };
        self.call_channel(OpKind::Write, self.opts().rpc_timeout, |ch, t| {
            let r = timed(req.clone(), t);
            async move {
                placement_client(ch)
                    .set_profile(r)
                    .await
                    .map(|r| r.into_inner().epoch)
            }
        })
        .await
    }

    /// Sets (or with `None` clears) the policy of domain `prefix`; refused, with nothing
    /// changed, when a replica of its group would break it. `expected_epoch` (0: any) makes it
    /// a compare-and-set on the map. Returns the new epoch.
    pub async fn set_policy(
        &self,
        prefix: &str,
        policy: Option<pb::PlacementPolicy>,
        expected_epoch: u64,
    ) -> Result<u64, Error> {
        let req = pb::PlacementSetPolicyRequest {
            prefix: prefix.to_string(),
            policy,
            expected_epoch,
        };
        self.call_channel(OpKind::Write, self.opts().rpc_timeout, |ch, t| {
            let r = timed(req.clone(), t);
            async move {
                placement_client(ch)
                    .set_policy(r)
                    .await
                    .map(|r| r.into_inner().epoch)
            }
        })
        .await
    }
}
