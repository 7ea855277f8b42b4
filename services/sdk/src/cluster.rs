//! Operating the groups: `transfer_leader` hands a group's leadership to another voter (needs
//! a token with `admin` on `/`).

use crate::{pb, timed, Client, Error, OpKind};
use meridian_proto::kv::cluster_client::ClusterClient;
use std::time::Duration;

/// Longest the SDK waits for a transfer: the node waits up to 10 s for the new leader.
const TRANSFER_WAIT: Duration = Duration::from_secs(15);

impl Client {
    /// Asks `group`'s leader to hand leadership to voter `to`; answers once `to` leads.
    pub async fn transfer_leader(
        &self,
        group: u64,
        to: u64,
    ) -> Result<pb::TransferLeaderResponse, Error> {
        let req = pb::TransferLeaderRequest { group, to };
        self.call_channel(OpKind::Write, TRANSFER_WAIT, |ch, t| {
            let r = timed(req, t);
            async move {
                ClusterClient::new(ch)
                    .transfer_leader(r)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
    }
}
