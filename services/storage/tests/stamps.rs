//! Commit timestamps in the log (docs/closed-timestamps.md): the state machine gives each
//! stamped entry a commit timestamp above every earlier one and every promise, keeps the
//! group's timestamps with the state they describe (across a reopen), carries them in
//! snapshots, and reads snapshots written before timestamps existed.

use meridian_storage::kv::KvState;
use meridian_storage::sm::{decode_snapshot, encode_snapshot};
use meridian_storage::NodeStore;
use meridian_types::hlc::{Stamp, Stamps, Timestamp};
use meridian_types::raft::{log_id, Entry};
use meridian_types::{Command, GroupId, PutOp};
use openraft::storage::{RaftLogStorageExt, RaftSnapshotBuilder, RaftStateMachine};
use openraft::EntryPayload;

fn ts(physical: u64, logical: u32) -> Timestamp {
    Timestamp::new(physical, logical)
}

fn entry(index: u64, stamp: Option<(u64, Option<u64>)>) -> Entry {
    let put = Command::Put(PutOp::new(format!("/k{index}"), format!("v{index}")));
    let cmd = match stamp {
        Some((at, closed)) => Command::Stamped {
            stamp: Stamp {
                at: ts(at, 0),
                closed: closed.map(|c| ts(c, 0)),
            },
            cmd: Box::new(put),
        },
        None => put,
    };
    Entry {
        log_id: log_id(1, 1, index),
        payload: EntryPayload::Normal(cmd),
    }
}

#[tokio::test]
async fn stamps_follow_the_log_survive_a_reopen_and_travel_in_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    // A stamp that reached the log late (90 after 100), an unstamped entry, a promise ahead
    // (500) and an entry stamped below it.
    let log = vec![
        entry(1, Some((100, None))),
        entry(2, Some((90, None))),
        entry(3, None),
        entry(4, Some((110, Some(500)))),
        entry(5, Some((120, None))),
    ];
    let expected = Stamps {
        applied: ts(500, 1),
        closed: ts(500, 0),
    };
    let snapshot = {
        let store = NodeStore::open(dir.path()).unwrap();
        let (mut log_store, mut sm) = store.group(GroupId(1), 1000).unwrap();
        log_store.blocking_append(log.clone()).await.unwrap();
        let stream = futures::stream::iter(log.into_iter().map(|e| Ok((e, None))));
        sm.apply(stream).await.unwrap();
        assert_eq!(sm.stamps(), expected);
        assert_eq!(sm.stamps().closed(), ts(500, 1));
        // The stamped puts were applied as puts.
        assert_eq!(sm.shared().read().get("/k5").unwrap().value, b"v5");
        let snapshot = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        store.sync().await.unwrap();
        snapshot
    };
    // Reopened: the timestamps are those of the applied state.
    let store = NodeStore::open(dir.path()).unwrap();
    let (_, sm) = store.group(GroupId(1), 1000).unwrap();
    assert_eq!(sm.stamps(), expected);

    // Installed elsewhere: the snapshot carries them.
    let other = tempfile::tempdir().unwrap();
    let store = NodeStore::open(other.path()).unwrap();
    let (_, mut sm) = store.group(GroupId(1), 1000).unwrap();
    assert_eq!(sm.stamps(), Stamps::default());
    sm.install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .unwrap();
    assert_eq!(sm.stamps(), expected);
    assert_eq!(sm.shared().read().get("/k3").unwrap().value, b"v3");
    drop(sm);
    let (_, sm) = store.group(GroupId(1), 1000).unwrap();
    assert_eq!(sm.stamps(), expected, "installed timestamps are durable");
}

#[test]
fn snapshots_read_across_the_format_change_both_ways() {
    let mut kv = KvState::default();
    kv.apply(1, &Command::Put(PutOp::new("/a", "1")));
    kv.stamps = Stamps {
        applied: ts(7, 1),
        closed: ts(9, 0),
    };
    // Written before timestamps existed: the state alone, read with none.
    let old = bincode::serialize(&kv).unwrap();
    let back = decode_snapshot(&old).unwrap();
    assert_eq!(back.keys, kv.keys);
    assert_eq!(back.stamps, Stamps::default());
    // Written now: read whole here, and as the state alone by code that knows no timestamps.
    let new = encode_snapshot(&kv).unwrap();
    let back = decode_snapshot(&new).unwrap();
    assert_eq!((&back.keys, back.stamps), (&kv.keys, kv.stamps));
    let older: KvState = bincode::deserialize(&new).unwrap();
    assert_eq!(older.keys, kv.keys);
    // A truncated one is an error, not a guess.
    assert!(decode_snapshot(&new[..new.len() - 3]).is_err());
    // A length prefix that claims more than the snapshot holds (the first key's, after the
    // map's own 8-byte length) is an error, not an allocation of a terabyte.
    let mut hostile = new.clone();
    hostile[8..16].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(decode_snapshot(&hostile).is_err());
}
