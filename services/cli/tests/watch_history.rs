//! Watch history limits: a watch from a compacted revision fails with `Compacted{oldest}` and
//! the SDK reports it typed; from the oldest kept revision it replays exactly the kept changes;
//! an idle watch receives progress notifications.

mod common;

use meridian_sdk::{Client, Error, WatchEvent};
use meridian_server::Node;
use std::time::Duration;

async fn node_with_history(max: u64) -> (tempfile::TempDir, Node, Client) {
    let (dir, node, addr) = common::one_node("127.0.44.1", |cfg| {
        cfg.limits.history_revisions_max = max;
        cfg.limits.watch_progress_interval_ms = 100;
    })
    .await;
    let client = Client::new(vec![addr], Default::default()).expect("client");
    (dir, node, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_revision_is_a_typed_error_and_progress_flows() {
    let (_dir, node, client) = node_with_history(16).await;
    let mut last = 0;
    for i in 0..60 {
        let r = client
            .put(&format!("/h/k{i}"), format!("v{i}"))
            .await
            .expect("put");
        last = r.header.expect("header").revision;
    }
    let mut w = client.watch("/h/", true, 1);
    let err = w.next().await.expect_err("revision 1 is compacted");
    let oldest = match &err {
        Error::Compacted {
            oldest,
            requested,
            message,
        } => {
            assert_eq!(*requested, 1);
            assert!(
                message.contains("was compacted") && message.contains("re-list"),
                "{message}"
            );
            *oldest
        }
        other => panic!("expected Compacted, got {other:?}"),
    };
    assert!(
        oldest > 1 && oldest <= last - 15,
        "oldest {oldest}, last {last}"
    );

    // From the oldest kept revision: exactly the changes from there to the last write.
    let mut w = client.watch("/h/", true, oldest);
    let mut revisions = Vec::new();
    while revisions.last() != Some(&last) {
        match tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("in time")
            .expect("event")
        {
            WatchEvent::Changes { revision, events } => {
                assert_eq!(events.len(), 1);
                revisions.push(revision);
            }
            WatchEvent::Progress { .. } => {}
        }
    }
    assert_eq!(
        revisions[0], oldest,
        "replay starts exactly at the oldest kept revision"
    );
    assert!(revisions.windows(2).all(|p| p[0] < p[1]));
    assert_eq!(
        revisions.len() as u64,
        last - revisions[0] + 1,
        "every kept revision once"
    );

    // Nothing changes now: progress notifications still arrive, at the current revision.
    let mut progress = 0;
    while progress < 3 {
        match tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .expect("progress in time")
            .expect("event")
        {
            WatchEvent::Progress { revision } => {
                assert!(revision >= last);
                progress += 1;
            }
            WatchEvent::Changes { .. } => panic!("no change was made"),
        }
    }
    node.shutdown().await;
}
