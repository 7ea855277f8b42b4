//! Commit timestamps reach the writer, reads carry the timestamp of what they saw, sessions
//! keep the highest, and a write commits above its session's timestamp
//! (docs/closed-timestamps.md) — through a real node and real sockets.

mod common;

use meridian_proto::kv::kv_client::KvClient;
use meridian_proto::kv::{GetRequest, HlcTimestamp, PutRequest, Session};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tonic::Code;

fn order(t: &HlcTimestamp) -> (u64, u32) {
    (t.physical_us, t.logical)
}

fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_micros() as u64
}

fn put(key: &str, session: Option<Session>) -> tonic::Request<PutRequest> {
    tonic::Request::new(PutRequest {
        key: key.as_bytes().to_vec(),
        value: b"v".to_vec(),
        session,
        ..Default::default()
    })
}

/// The timestamp a response header carries (`what`: which one, for the failure).
fn stamp_of(header: &Option<meridian_proto::kv::ResponseHeader>, what: &str) -> HlcTimestamp {
    header.as_ref().and_then(|h| h.timestamp).expect(what)
}

async fn get(
    kv: &mut KvClient<tonic::transport::Channel>,
    key: &str,
) -> meridian_proto::kv::GetResponse {
    kv.get(GetRequest {
        key: key.as_bytes().to_vec(),
        ..Default::default()
    })
    .await
    .expect("get")
    .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_reads_carry_timestamps_and_a_write_commits_above_its_session() {
    common::watchdog(Duration::from_secs(120));
    let (_dir, _node, addr) = common::one_node("127.0.94.1", |_| {}).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut kv = KvClient::new(channel);

    // A write's header carries its commit timestamp, taken from this node's wall clock.
    let before = wall_us();
    let w1 = kv.put(put("/t/a", None)).await.expect("put").into_inner();
    let t1 = stamp_of(&w1.header, "a commit timestamp");
    assert!(
        t1.physical_us + 1_000 >= before && t1.physical_us <= wall_us() + 1_000,
        "{t1:?} is the wall clock's time of the write (~{before})"
    );
    // A read carries the timestamp of the last entry its replica had applied: this write's, or
    // a later one's.
    let r = get(&mut kv, "/t/a").await;
    let rt = stamp_of(&r.header, "a read timestamp");
    assert!(order(&rt) >= order(&t1), "{rt:?} < {t1:?}");

    // A session that has seen a timestamp ahead of this node's clock (another node's, within
    // the maximum offset): the write commits above it all the same.
    let ahead = HlcTimestamp {
        physical_us: wall_us() + 150_000,
        logical: 7,
    };
    let session = Session {
        timestamp: Some(ahead),
        ..Default::default()
    };
    let w2 = kv
        .put(put("/t/b", Some(session)))
        .await
        .expect("put above the session")
        .into_inner();
    let t2 = stamp_of(&w2.header, "timestamp");
    assert!(order(&t2) > order(&ahead), "{t2:?} is not above {ahead:?}");
    // Every later write of the group commits above it, whatever its session says.
    let w3 = kv.put(put("/t/c", None)).await.expect("put").into_inner();
    let t3 = stamp_of(&w3.header, "timestamp");
    assert!(order(&t3) > order(&t2), "{t3:?} is not above {t2:?}");

    // A session timestamp no node can have given (10 s ahead) is refused; nothing is written.
    let forged = Session {
        timestamp: Some(HlcTimestamp {
            physical_us: wall_us() + 10_000_000,
            logical: 0,
        }),
        ..Default::default()
    };
    let e = kv
        .put(put("/t/forged", Some(forged)))
        .await
        .expect_err("a forged session timestamp");
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("maximum clock offset"), "{e}");
    let absent = get(&mut kv, "/t/forged").await;
    assert!(absent.kv.is_none(), "nothing was written");

    // The SDK's session keeps the highest timestamp it has seen.
    let client = meridian_sdk::Client::new(vec![addr.clone()], meridian_sdk::Options::default())
        .expect("client");
    client.put("/t/sdk", "1").await.expect("sdk put");
    let s1 = client
        .session()
        .timestamp
        .expect("the session saw a timestamp");
    assert!(order(&s1) > order(&t3), "{s1:?} is not above {t3:?}");
    client.get("/t/a").await.expect("sdk get");
    let s2 = client.session().timestamp.expect("timestamp");
    assert!(
        order(&s2) >= order(&s1),
        "the session's timestamp went back"
    );
}
