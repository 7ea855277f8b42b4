//! Membership changes (docs/operations.md, "Membership and leadership"): add a node of the
//! topology to a group as a learner, promote a learner, remove a member, hand the leadership to
//! another voter — asked of the group's leader (another node refuses, naming it). Needs `admin`
//! on `/`. A change is not retried blindly: the client says what happened, and `status` shows
//! where the group stands.

use crate::{pb, timed, Client, Error, OpKind};
use meridian_proto::kv::maintenance_client::MaintenanceClient;
use std::time::Duration;

impl Client {
    /// Applies `change` to `node` in `group` through the endpoint, which must lead the group;
    /// the membership once committed.
    pub async fn change_membership(
        &self,
        group: u64,
        node: u64,
        change: pb::MembershipChange,
        timeout: Duration,
    ) -> Result<pb::ChangeMembershipReply, Error> {
        self.call_channel(OpKind::Write, timeout, |ch, t| {
            let r = timed(
                pb::ChangeMembershipRequest {
                    group,
                    node,
                    change: change as i32,
                },
                t,
            );
            async move {
                let mut c = MaintenanceClient::new(ch);
                Ok(c.change_membership(r).await?.into_inner())
            }
        })
        .await
    }

    /// Hands `group`'s leadership to voter `to` through the endpoint, which must lead the
    /// group; answers once `to` leads.
    pub async fn transfer_leader(
        &self,
        group: u64,
        to: u64,
        timeout: Duration,
    ) -> Result<pb::TransferLeaderReply, Error> {
        self.call_channel(OpKind::Write, timeout, |ch, t| {
            let r = timed(pb::TransferLeaderRequest { group, to }, t);
            async move {
                let mut c = MaintenanceClient::new(ch);
                Ok(c.transfer_leader(r).await?.into_inner())
            }
        })
        .await
    }
}
