//! Backups: `group_snapshot` fetches one group's whole state at a linearizable point (what
//! `meridian snapshot save` writes to its file for every group). Needs `admin` on `/`.

use crate::{pb, timed, Client, Error, OpKind};
use meridian_proto::kv::maintenance_client::MaintenanceClient;
use meridian_proto::MAX_MESSAGE_BYTES;
use std::time::Duration;

/// Largest copy of one group this client accepts (a group's state lives in every replica's
/// memory; this is far above any sane one).
pub const GROUP_COPY_BYTES_MAX: u64 = 16 * 1024 * 1024 * 1024;

/// One group's copy: its metadata and its bytes.
#[derive(Debug, Clone)]
pub struct GroupCopy {
    pub group: u64,
    pub name: String,
    pub topology: String,
    pub revision: u64,
    pub keys: u64,
    pub leases: u64,
    pub data: Vec<u8>,
}

impl Client {
    /// Group `group`'s state as the endpoint's replica holds it once it has applied all its
    /// leader had committed when asked; within `timeout` in all.
    pub async fn group_snapshot(&self, group: u64, timeout: Duration) -> Result<GroupCopy, Error> {
        self.call_channel(OpKind::Read, timeout, |ch, t| {
            let r = timed(pb::GroupSnapshotRequest { group }, t);
            async move {
                let mut c = MaintenanceClient::new(ch).max_decoding_message_size(MAX_MESSAGE_BYTES);
                let mut stream = c.group_snapshot(r).await?.into_inner();
                let mut copy: Option<GroupCopy> = None;
                let mut total = 0;
                while let Some(chunk) = stream.message().await? {
                    total = chunk.total_bytes;
                    let c = copy.get_or_insert_with(|| GroupCopy {
                        group: chunk.group,
                        name: chunk.name.clone(),
                        topology: chunk.topology.clone(),
                        revision: chunk.revision,
                        keys: chunk.keys,
                        leases: chunk.leases,
                        data: Vec::with_capacity(
                            chunk.total_bytes.min(GROUP_COPY_BYTES_MAX) as usize
                        ),
                    });
                    if c.data.len() as u64 + chunk.data.len() as u64
                        > chunk.total_bytes.min(GROUP_COPY_BYTES_MAX)
                    {
                        return Err(tonic::Status::data_loss(format!(
                            "group {group}'s copy runs past the {} bytes announced",
                            chunk.total_bytes
                        )));
                    }
                    c.data.extend_from_slice(&chunk.data);
                }
                let copy = copy.ok_or_else(|| {
                    tonic::Status::data_loss(format!(
                        "group {group}: the copy ended before it began"
                    ))
                })?;
                if copy.data.len() as u64 != total {
                    return Err(tonic::Status::data_loss(format!(
                        "group {group}'s copy ended at {} of {total} bytes",
                        copy.data.len()
                    )));
                }
                Ok::<_, tonic::Status>(copy)
            }
        })
        .await
    }
}
