//! Backup files (`meridian snapshot save|restore|status`; docs/operations.md, "Backup and
//! restore"): every group's state at a revision, in one file with a checksum, and the restore
//! of a group's copy into a new node's empty store.
//!
//! The file: `MERIDIAN-SNAPSHOT 1\n`, the manifest's length (u32, little-endian), the manifest
//! (JSON: each group's id, name, revision and size), each group's copy in manifest order (the
//! state machine's snapshot encoding: keys with their revisions, leases, locks; the global
//! group's holds the placement map and the revocation list), then the SHA-256 of everything
//! before it. A file that is not one, cut short, or changed by one bit is refused, naming what
//! is wrong; a restore writes nothing until the whole file has been checked.

use crate::kv::KvState;
use crate::{NodeStore, Result as StoreResult};
use meridian_types::raft::{SnapshotMeta, StoredMembership, Vote};
use meridian_types::GroupId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

/// The first bytes of every backup file.
pub const MAGIC: &[u8] = b"MERIDIAN-SNAPSHOT 1\n";

/// Largest manifest a file may declare (a manifest names a handful of groups).
const MANIFEST_BYTES_MAX: u32 = 1 << 20;

/// What a backup holds: one entry per group, in the order their copies follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// When it was saved (milliseconds since the Unix epoch; information only).
    pub created_unix_ms: u64,
    /// The topology's name, as the node that answered knows it.
    pub topology: String,
    /// The placement map's epoch at the save (0: the topology's map).
    pub placement_epoch: u64,
    pub groups: Vec<GroupEntry>,
}

/// One group's copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupEntry {
    pub id: u64,
    pub name: String,
    /// The group's revision the copy is at (every key's revisions are at or below it).
    pub revision: u64,
    pub bytes: u64,
    pub keys: u64,
    pub leases: u64,
}

/// Why a file is not a usable backup, or a restore could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}: not a Meridian snapshot (it does not begin with {MAGIC:?})")]
    NotASnapshot(String),
    #[error("{path}: truncated — {have} bytes, but its manifest needs {need}")]
    Truncated { path: String, have: u64, need: u64 },
    #[error("{0}: checksum mismatch — the file is corrupt (changed or partly written)")]
    Checksum(String),
    #[error("{path}: bad manifest: {why}")]
    Manifest { path: String, why: String },
    #[error("group {group}: its copy does not decode: {why}")]
    Copy { group: u64, why: String },
    #[error("{0}")]
    Restore(String),
}

/// Writes a backup file: to `PATH.partial`, fsynced, then renamed over `path`, so that a
/// crash leaves either the old file or the whole new one.
pub fn write(path: &Path, manifest: &Manifest, copies: &[Vec<u8>]) -> Result<(), BackupError> {
    let io = |source| BackupError::Io {
        path: path.display().to_string(),
        source,
    };
    let json = serde_json::to_vec(manifest).map_err(|e| BackupError::Manifest {
        path: path.display().to_string(),
        why: e.to_string(),
    })?;
    let partial = path.with_extension("partial");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&partial).map_err(io)?);
    let mut hash = Sha256::new();
    let len = (json.len() as u32).to_le_bytes();
    for part in [MAGIC, &len[..], &json[..]]
        .into_iter()
        .chain(copies.iter().map(Vec::as_slice))
    {
        hash.update(part);
        f.write_all(part).map_err(io)?;
    }
    f.write_all(&hash.finalize()).map_err(io)?;
    let f = f.into_inner().map_err(|e| io(e.into_error()))?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&partial, path).map_err(io)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(())
}

/// Reads and checks a backup file whole: magic, checksum, manifest, sizes, and that every
/// copy decodes. Answers the manifest and each group's copy.
pub fn read(path: &Path) -> Result<(Manifest, Vec<Vec<u8>>), BackupError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| BackupError::Io {
        path: name.clone(),
        source,
    })?;
    parse(&name, &bytes)
}

/// [`read`] of bytes already in memory (`name` for messages).
pub fn parse(name: &str, bytes: &[u8]) -> Result<(Manifest, Vec<Vec<u8>>), BackupError> {
    let truncated = |need: u64| BackupError::Truncated {
        path: name.to_string(),
        have: bytes.len() as u64,
        need,
    };
    if !bytes.starts_with(MAGIC) {
        return Err(if MAGIC.starts_with(bytes) && !bytes.is_empty() {
            truncated(MAGIC.len() as u64 + 4 + 32)
        } else {
            BackupError::NotASnapshot(name.to_string())
        });
    }
    let head = MAGIC.len() + 4;
    if bytes.len() < head + 32 {
        return Err(truncated(head as u64 + 32));
    }
    let len = u32::from_le_bytes(bytes[MAGIC.len()..head].try_into().unwrap_or([0; 4]));
    if len > MANIFEST_BYTES_MAX {
        return Err(BackupError::Manifest {
            path: name.to_string(),
            why: format!("{len} bytes declared, at most {MANIFEST_BYTES_MAX}"),
        });
    }
    let body_start = head + len as usize;
    if bytes.len() < body_start + 32 {
        return Err(truncated(body_start as u64 + 32));
    }
    let manifest: Result<Manifest, _> = serde_json::from_slice(&bytes[head..body_start]);
    // A manifest that decodes says how long the file must be: report a short file as that.
    if let Ok(m) = &manifest {
        let need = body_start as u64 + m.groups.iter().map(|g| g.bytes).sum::<u64>() + 32;
        if (bytes.len() as u64) < need {
            return Err(truncated(need));
        }
    }
    let (content, sum) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(content).as_slice() != sum {
        return Err(BackupError::Checksum(name.to_string()));
    }
    let manifest = manifest.map_err(|e| BackupError::Manifest {
        path: name.to_string(),
        why: e.to_string(),
    })?;
    let mut at = body_start;
    let mut copies = Vec::with_capacity(manifest.groups.len());
    for g in &manifest.groups {
        let end = at + g.bytes as usize;
        if end > content.len() {
            return Err(truncated(end as u64 + 32));
        }
        let copy = content[at..end].to_vec();
        decode(g.id, &copy)?;
        copies.push(copy);
        at = end;
    }
    if at != content.len() {
        return Err(BackupError::Manifest {
            path: name.to_string(),
            why: format!("{} bytes after the last group's copy", content.len() - at),
        });
    }
    Ok((manifest, copies))
}

/// A group's copy as its state.
pub fn decode(group: u64, copy: &[u8]) -> Result<KvState, BackupError> {
    bincode::deserialize(copy).map_err(|e| BackupError::Copy {
        group,
        why: e.to_string(),
    })
}

/// A group's copy as it goes into a backup: its encoding, revision, key and lease counts.
pub fn encode(state: &KvState, applied: u64) -> StoreResult<(Vec<u8>, u64, u64, u64)> {
    let data = bincode::serialize(state)?;
    Ok((
        data,
        applied.max(state.revision),
        state.keys.len() as u64,
        state.leases.len() as u64,
    ))
}

/// Installs `copy` (at `revision`) as group `group`'s whole state in `store`, which must not
/// hold the group yet, with `voters` (node id → address) as its membership: started on it,
/// the group elects a leader among `voters` and goes on from `revision` + 1.
pub async fn restore_group(
    store: &NodeStore,
    group: GroupId,
    copy: Vec<u8>,
    revision: u64,
    voters: &BTreeMap<u64, String>,
) -> Result<(), BackupError> {
    use openraft::storage::{RaftLogReader, RaftLogStorage, RaftStateMachine};
    let fail = |what: &str, e: String| BackupError::Restore(format!("group {group}: {what}: {e}"));
    // (The copy is not decoded here: `read` checked it, and installing it decodes it again.)
    let Some(first) = voters.keys().next().copied() else {
        return Err(fail(
            "no voters",
            "the topology gives the group none".into(),
        ));
    };
    let (mut log, mut sm) = store
        .group(group, crate::HISTORY_REVISIONS_DEFAULT)
        .map_err(|e| fail("opening its store", e.to_string()))?;
    let (applied, _) = sm
        .applied_state()
        .await
        .map_err(|e| fail("reading its state", e.to_string()))?;
    let state = log
        .get_log_state()
        .await
        .map_err(|e| fail("reading its log", e.to_string()))?;
    let vote = log
        .read_vote()
        .await
        .map_err(|e| fail("reading its vote", e.to_string()))?;
    if applied.is_some() || state.last_log_id.is_some() || vote.is_some() {
        return Err(fail(
            "the data directory already holds it",
            "restore into an empty data directory (a new node)".into(),
        ));
    }
    // Term 1, led by the first voter: every restored node of the group holds the same last
    // log id, so any of them may win the first election (term 2).
    let log_id = meridian_types::raft::log_id(1, first, revision);
    let ids: BTreeSet<u64> = voters.keys().copied().collect();
    let nodes: BTreeMap<u64, openraft::BasicNode> = voters
        .iter()
        .map(|(id, a)| (*id, openraft::BasicNode::new(a.clone())))
        .collect();
    let membership = openraft::Membership::new(vec![ids], nodes)
        .map_err(|e| fail("its membership", e.to_string()))?;
    let meta = SnapshotMeta {
        last_log_id: Some(log_id),
        last_membership: StoredMembership::new(Some(log_id), membership),
    };
    sm.install_snapshot(&meta, copy)
        .await
        .map_err(|e| fail("installing its copy", e.to_string()))?;
    log.save_vote(&Vote::new(1, first))
        .await
        .map_err(|e| fail("saving its vote", e.to_string()))?;
    store
        .sync()
        .await
        .map_err(|e| fail("syncing the store", e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Manifest, Vec<Vec<u8>>) {
        let kv = KvState {
            revision: 7,
            ..Default::default()
        };
        let (copy, revision, keys, leases) = encode(&kv, 9).unwrap();
        let m = Manifest {
            created_unix_ms: 1,
            topology: "t".into(),
            placement_epoch: 3,
            groups: vec![GroupEntry {
                id: 1,
                name: "g".into(),
                revision,
                bytes: copy.len() as u64,
                keys,
                leases,
            }],
        };
        (m, vec![copy])
    }

    #[test]
    fn a_file_round_trips_and_every_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.snap");
        let (m, copies) = sample();
        assert_eq!(
            m.groups[0].revision, 9,
            "the applied index when past the state's revision"
        );
        write(&path, &m, &copies).unwrap();
        let (m2, c2) = read(&path).unwrap();
        assert_eq!((m2, c2), (m, copies));
        let good = std::fs::read(&path).unwrap();

        // Cut short anywhere: truncated (or, inside the magic, still named as truncated).
        for cut in [5, MAGIC.len() + 2, good.len() - 40, good.len() - 1] {
            let e = parse("f", &good[..cut]).unwrap_err();
            assert!(
                matches!(e, BackupError::Truncated { .. }),
                "cut at {cut}: {e}"
            );
        }
        // One flipped bit anywhere: the checksum catches it (or the magic does).
        for at in [
            0,
            MAGIC.len() + 1,
            MAGIC.len() + 10,
            good.len() - 33,
            good.len() - 1,
        ] {
            let mut bad = good.clone();
            bad[at] ^= 1;
            let e = parse("f", &bad).unwrap_err();
            assert!(
                matches!(
                    e,
                    BackupError::Checksum(_)
                        | BackupError::NotASnapshot(_)
                        | BackupError::Truncated { .. }
                        | BackupError::Manifest { .. }
                ),
                "flip at {at}: {e}"
            );
        }
        let e = parse(
            "f",
            b"hello, this is not a snapshot at all.....................",
        )
        .unwrap_err();
        assert!(matches!(e, BackupError::NotASnapshot(_)), "{e}");
        assert!(e.to_string().contains("not a Meridian snapshot"), "{e}");
    }
}
