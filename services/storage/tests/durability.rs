//! What the fjall store promises across a reopen: appended entries, votes and applied state
//! come back exactly, and the watch history survives.

use meridian_storage::NodeStore;
use meridian_types::raft::{log_id, Entry, Vote};
use meridian_types::{Command, GroupId, PutOp};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{EntryPayload, RaftLogReader};

fn put(key: &str, index: u64) -> Entry {
    Entry {
        log_id: log_id(1, 1, index),
        payload: EntryPayload::Normal(Command::Put(PutOp::new(key, format!("v{index}")))),
    }
}

/// Entries, the vote and applied keys of two groups survive closing and reopening the store.
#[tokio::test]
async fn reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = NodeStore::open(dir.path()).unwrap();
        for g in [1, 2] {
            let (mut log, mut sm) = store.group(GroupId(g), 1000).unwrap();
            log.save_vote(&Vote::new(3, 1)).await.unwrap();
            let entries: Vec<Entry> = (1..=5).map(|i| put(&format!("/k{i}"), i)).collect();
            // Returns once openraft's flush callback fired, i.e. after the fsync.
            log.blocking_append(entries.clone()).await.unwrap();
            let stream = futures::stream::iter(entries.into_iter().map(|e| Ok((e, None))));
            sm.apply(stream).await.unwrap();
        }
        store.sync().await.unwrap();
    }
    let store = NodeStore::open(dir.path()).unwrap();
    for g in [1, 2] {
        let (mut log, mut sm) = store.group(GroupId(g), 1000).unwrap();
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
        let got = log.try_get_log_entries(1..6).await.unwrap();
        assert_eq!(got.len(), 5);
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied.unwrap().index, 5);
        let shared = sm.shared();
        assert_eq!(shared.read().get("/k3").unwrap().value, b"v3");
        assert_eq!(shared.history_from(2, 100).unwrap().len(), 4);
    }
}
