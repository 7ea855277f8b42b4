//! Whether Meridian's stored and sent bytes survive the upgrade: Meridian bincode-encodes
//! openraft's types (log entries and vote in fjall, Raft messages between peers). These tests
//! encode 0.9.25 values and decode them as 0.10.0-alpha.37 ones, and back.

use crate::{v09, v10};
use openraft09 as o9;
use openraft10 as o10;
use std::collections::{BTreeMap, BTreeSet};

type Entry10 = <v10::Tc as o10::RaftTypeConfig>::Entry;
type LogId10 = o10::type_config::alias::LogIdOf<v10::Tc>;
type Vote10 = o10::type_config::alias::VoteOf<v10::Tc>;
type Meta10 = o10::type_config::alias::SnapshotMetaOf<v10::Tc>;

fn log_id9(term: u64, node: u64, index: u64) -> o9::LogId<u64> {
    o9::LogId::new(o9::CommittedLeaderId::new(term, node), index)
}

fn membership9() -> o9::Membership<u64, o9::BasicNode> {
    let nodes: BTreeMap<u64, o9::BasicNode> = (0..4)
        .map(|id| (id, o9::BasicNode::new(format!("10.0.0.{id}:7000"))))
        .collect();
    o9::Membership::new(vec![BTreeSet::from([0, 1, 2])], nodes)
}

fn cross<A: serde::Serialize, B: serde::de::DeserializeOwned>(a: &A) -> B {
    let bytes = bincode::serialize(a).expect("encode");
    let b: B = bincode::deserialize(&bytes).expect("decode as the other version");
    b
}

#[test]
fn log_id_and_vote_decode_across_versions() {
    let id: LogId10 = cross(&log_id9(7, 2, 42));
    assert_eq!(
        (id.leader_id.term, id.leader_id.node_id, id.index),
        (7, 2, 42)
    );

    let mut vote = o9::Vote::new(9, 1);
    vote.commit();
    let v: Vote10 = cross(&vote);
    assert_eq!(
        (v.leader_id.term, v.leader_id.node_id, v.committed),
        (9, 1, true)
    );
    let back: o9::Vote<u64> = cross(&v);
    assert_eq!(back, vote);
}

#[test]
fn entries_decode_across_versions() {
    let normal = o9::Entry::<v09::Tc> {
        log_id: log_id9(3, 0, 10),
        payload: o9::EntryPayload::Normal(v09::Cmd { client: 5, seq: 6 }),
    };
    let e: Entry10 = cross(&normal);
    assert_eq!(e.log_id.index, 10);
    assert!(matches!(
        e.payload,
        o10::EntryPayload::Normal(v10::Cmd { client: 5, seq: 6 })
    ));

    let membership = o9::Entry::<v09::Tc> {
        log_id: log_id9(3, 0, 11),
        payload: o9::EntryPayload::Membership(membership9()),
    };
    let e: Entry10 = cross(&membership);
    let o10::EntryPayload::Membership(m) = &e.payload else {
        panic!("not a membership entry: {e:?}");
    };
    let voters: Vec<u64> = m.voter_ids().collect();
    assert_eq!(voters, vec![0, 1, 2]);
    assert_eq!(m.nodes().count(), 4);

    let back: o9::Entry<v09::Tc> = cross(&e);
    assert_eq!(back.log_id, membership.log_id);
}

#[test]
fn snapshot_meta_decodes_across_versions() {
    let meta = o9::SnapshotMeta::<u64, o9::BasicNode> {
        last_log_id: Some(log_id9(3, 0, 11)),
        last_membership: o9::StoredMembership::new(Some(log_id9(3, 0, 11)), membership9()),
        snapshot_id: "3-0-11".into(),
    };
    let m: Meta10 = cross(&meta);
    assert_eq!(m.last_log_id.map(|l| l.index), Some(11));
    assert_eq!(m.last_membership.log_id().map(|l| l.index), Some(11));
}
