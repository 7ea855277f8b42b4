//! The cluster's token revocation list: `revoke_tokens` adds revocation ids (as `meridian
//! token inspect` prints them) through the global group, `revoked_tokens` lists them. Both
//! need a token with `admin` on `/`.

use crate::{pb, timed, Client, Error, OpKind};
use meridian_proto::kv::tokens_client::TokensClient;
use tonic::transport::Channel;

fn tokens_client(ch: Channel) -> TokensClient<Channel> {
    TokensClient::new(ch)
}

impl Client {
    /// Revokes every token carrying a block with one of `ids`; answers once the endpoint's
    /// router refuses them (other regions follow within about a round trip).
    pub async fn revoke_tokens(&self, ids: &[String]) -> Result<pb::TokensRevokeResponse, Error> {
        let req = pb::TokensRevokeRequest { ids: ids.to_vec() };
        self.call_channel(OpKind::Write, self.opts().rpc_timeout, |ch, t| {
            let r = timed(req.clone(), t);
            async move { tokens_client(ch).revoke(r).await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// The revocation list as the endpoint's router applies it.
    pub async fn revoked_tokens(&self) -> Result<pb::TokensRevokedResponse, Error> {
        self.call_channel(OpKind::Read, self.opts().rpc_timeout, |ch, t| {
            let r = timed(pb::TokensRevokedRequest {}, t);
            async move { tokens_client(ch).revoked(r).await.map(|r| r.into_inner()) }
        })
        .await
    }
}
