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

/// Every file under `dir`, recursively.
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)
        .expect("read the store directory")
        .flatten()
    {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A journal that gives back less than it had made durable — cut short here, which is what
/// fjall makes of a flipped length or tag byte further back: the end of the journal — is
/// refused when the store opens, by the durability mark; the same store, undamaged, opens.
#[tokio::test]
async fn a_journal_that_lost_durable_batches_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = NodeStore::open(dir.path()).unwrap();
        let (mut log, _sm) = store.group(GroupId(1), 1000).unwrap();
        for i in 1..=40 {
            log.blocking_append(vec![put(&format!("/k{i}"), i)])
                .await
                .unwrap();
        }
        store.sync().await.unwrap();
    }
    // The mark follows the fsyncs (it is written when the store closes, too).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while meridian_storage::durable_mark::read_mark(dir.path())
        .unwrap()
        .is_none_or(|m| m < 41)
    {
        assert!(std::time::Instant::now() < deadline, "no mark written");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Undamaged, it opens (and closes again) with every entry.
    {
        let store = NodeStore::open(dir.path()).unwrap();
        let (mut log, _sm) = store.group(GroupId(1), 1000).unwrap();
        assert_eq!(log.try_get_log_entries(1..41).await.unwrap().len(), 40);
    }
    let mark = meridian_storage::durable_mark::read_mark(dir.path()).unwrap();

    // The journal loses its second half.
    let journal = files(dir.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "jnl"))
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a journal file");
    let len = std::fs::metadata(&journal).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&journal)
        .unwrap();
    f.set_len(len / 2).unwrap();
    f.sync_all().unwrap();
    drop(f);

    let err = NodeStore::open(dir.path())
        .err()
        .expect("a store that lost durable writes must not open");
    let msg = err.to_string();
    assert!(
        matches!(err, meridian_storage::Error::Corrupt(_)),
        "{msg} (mark {mark:?})"
    );
    assert!(msg.contains("had been made durable"), "{msg}");
}
