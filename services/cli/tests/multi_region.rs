//! The consistency contract across regions (DESIGN.md §2), on `meridian dev`'s 3-region
//! topology under the WAN emulator (us-east ↔ eu-west 75 ms, us-east ↔ ap-northeast 170 ms,
//! eu-west ↔ ap-northeast 240 ms round trips): the x/y anomaly never happens with the router's
//! sync and does happen without it; a random multi-session history passes the sequential-
//! consistency checker; read-your-writes across regions; monotonic reads when a session moves
//! to another region's router; a vector the router cannot reach is refused.
//!
//! Each test starts its own cluster (9 nodes, 4 groups); they run one at a time.

mod common;

use common::DevCluster;
use common::{read_op, write_op, xy_round};
use meridian_checker::{check_sequential, History};
use meridian_sdk::{Consistency, Error};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One cluster at a time: two 9-node clusters on 2 cores would measure the machine.
static SERIAL: Mutex<()> = Mutex::new(());

/// Starts a test's cluster (`meridian dev` with `extra` args), one test at a time, under a
/// watchdog.
fn cluster(extra: &[&str]) -> (std::sync::MutexGuard<'static, ()>, DevCluster) {
    common::watchdog(Duration::from_secs(600));
    let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    (serial, DevCluster::start(extra))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

const CALL: Duration = Duration::from_secs(20);

/// Runs `rounds` x/y rounds; returns how many had both reads stale, and the history.
fn xy(dev: &DevCluster, rounds: usize) -> (usize, History) {
    rt().block_on(async {
        let a = dev.client("us-east", CALL);
        let b = dev.client("eu-west", CALL);
        let history = Arc::new(Mutex::new(History::new()));
        let mut both_stale = 0;
        for i in 0..rounds {
            let (a_saw, b_saw) = xy_round(&a, &b, i, &history).await;
            if !a_saw && !b_saw {
                both_stale += 1;
            }
        }
        let h = history.lock().unwrap_or_else(|p| p.into_inner()).clone();
        (both_stale, h)
    })
}

/// DESIGN.md §2's anomaly, 200 times under the WAN: with the sync, never both reads stale;
/// without it (test-only switch), the anomaly shows — and the checker flags that history.
#[test]
fn xy_anomaly_never_with_sync_seen_without() {
    let (serial, dev) = cluster(&[]);
    let (both_stale, history) = xy(&dev, 200);
    assert_eq!(
        both_stale, 0,
        "both reads stale in {both_stale} of 200 rounds with the sync on"
    );
    if let Err(v) = check_sequential(&history) {
        panic!("the checker rejects a history with the sync on: {v}");
    }
    // A cluster that reads by sync takes no timestamp profile.
    let refused = rt().block_on(async {
        let c = dev.client("us-east", CALL);
        c.set_profile("/eu-west/", "global-reads", 0).await
    });
    let e = refused
        .expect_err("a profile without closed timestamps")
        .to_string();
    assert!(e.contains("reads by sync"), "{e}");
    drop(dev);
    drop(serial);

    let (_serial, dev) = cluster(&["--unsafe-no-sync"]);
    let (both_stale, history) = xy(&dev, 200);
    assert!(
        both_stale > 0,
        "without the sync the anomaly should show at least once in 200 rounds"
    );
    let v = check_sequential(&history).expect_err("the checker must flag the anomaly");
    eprintln!("without sync: {both_stale}/200 rounds had both reads stale; checker: {v}");
}

/// The wall clock, µs since the Unix epoch.
fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Syncs this router (the one `client` speaks to) has sent, over every group it hosts.
async fn syncs_sent(client: &meridian_sdk::Client) -> u64 {
    let s = client.status(false).await.expect("status");
    s.groups.iter().map(|g| g.syncs_sent).sum()
}

/// The same rounds by closed timestamps (`--reads local-writes`, docs/closed-timestamps.md):
/// never both reads stale, the checker accepts the history, and not one sync is sent — every
/// switch read waited for the local replica's closed timestamp instead.
#[test]
fn xy_by_closed_timestamps_sends_no_sync() {
    let (_serial, dev) = cluster(&["--reads", "local-writes"]);
    xy_sends_no_sync(&dev, 200);
    // A profile applies to a whole domain.
    let refused = rt().block_on(async {
        let c = dev.client("us-east", CALL);
        c.set_profile("/us-east/xy/", "global-reads", 0).await
    });
    let e = refused
        .expect_err("a profile for a prefix that is no domain")
        .to_string();
    assert!(e.contains("is not a domain"), "{e}");
    drop(dev);

    // Per domain: eu-west's domain global-reads, us-east's local-writes (the default), in one
    // session's x/y rounds. A write to the global-reads domain commits ahead (the lead: the
    // farthest one-way delay, 120 ms, plus the maximum offset, 250 ms) and waits it out;
    // fewer rounds for that.
    let dev = DevCluster::start(&["--reads", "local-writes"]);
    rt().block_on(async {
        let c = dev.client("eu-west", CALL);
        c.set_profile("/eu-west/", "global-reads", 0)
            .await
            .expect("set-profile");
        let map = c.placement().await.expect("placement");
        let profile = |p: &str| {
            map.domains
                .iter()
                .find(|d| d.prefix == p)
                .map(|d| d.profile.clone())
        };
        assert_eq!(profile("/eu-west/").as_deref(), Some("global-reads"));
        assert_eq!(profile("/us-east/").as_deref(), Some(""));
        // Every router follows the map: wait until eu-west's leader closes ahead.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let sent_us = wall_us();
            let w = c.put("/eu-west/lead", "x").await.expect("put");
            let at = w.header.and_then(|h| h.timestamp).expect("timestamp");
            if at.physical_us >= sent_us + 185_000 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a global-reads write committed at {} µs, only {} µs after it was sent",
                at.physical_us,
                at.physical_us.saturating_sub(sent_us)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    xy_sends_no_sync(&dev, 100);
    drop(dev);

    // The same without the wait for the closed timestamp (test-only): the anomaly shows.
    let dev = DevCluster::start(&["--reads", "local-writes", "--unsafe-read-before-closed"]);
    let (both_stale, history) = xy(&dev, 200);
    assert!(
        both_stale > 0,
        "serving before the closed timestamp, the anomaly should show in 200 rounds"
    );
    check_sequential(&history).expect_err("the checker must flag the anomaly");
}

/// `rounds` x/y rounds: never both stale, the checker accepts, and no sync sent.
fn xy_sends_no_sync(dev: &DevCluster, rounds: usize) {
    let probes = rt().block_on(async {
        let a = dev.client("us-east", CALL);
        let b = dev.client("eu-west", CALL);
        (syncs_sent(&a).await, syncs_sent(&b).await)
    });
    let (both_stale, history) = xy(dev, rounds);
    assert_eq!(
        both_stale, 0,
        "both reads stale in {both_stale} of {rounds} rounds by closed timestamps"
    );
    if let Err(v) = check_sequential(&history) {
        panic!("the checker rejects a history by closed timestamps: {v}");
    }
    let after = rt().block_on(async {
        let a = dev.client("us-east", CALL);
        let b = dev.client("eu-west", CALL);
        (syncs_sent(&a).await, syncs_sent(&b).await)
    });
    assert_eq!(
        (after.0 - probes.0, after.1 - probes.1),
        (0, 0),
        "reads by closed timestamps sent syncs"
    );
}

/// Tiny deterministic PRNG for the workload (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const DOMAINS: [(&str, u64); 4] = [
    ("/us-east/", 1),
    ("/eu-west/", 2),
    ("/ap-northeast/", 3),
    ("/global/", 10),
];
const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-northeast"];

/// Several sessions in 3 regions doing random reads and writes across all groups; the
/// recorded history must pass the sequential-consistency checker. Then the session rules one
/// by one: read-your-writes across regions, monotonic reads across routers, a vector a
/// router cannot reach.
#[test]
fn random_sessions_are_sequentially_consistent_and_sessions_move() {
    let (_serial, dev) = cluster(&[]);
    rt().block_on(async {
        // 6 sessions (2 per region), 120 operations each, few keys so reads see writes.
        let sessions = 6;
        let ops = 120;
        let mut tasks = Vec::new();
        for s in 0..sessions {
            let c = dev.client(REGIONS[s % 3], CALL);
            tasks.push(tokio::spawn(async move {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (s as u64 + 1));
                let mut h = History::new();
                for n in 0..ops {
                    // Half the operations on the session's own region, the rest anywhere.
                    let (prefix, group) = if rng.below(2) == 0 {
                        DOMAINS[s % 3]
                    } else {
                        DOMAINS[rng.below(4) as usize]
                    };
                    let key = format!("{prefix}sc/k{}", rng.below(3));
                    if rng.below(2) == 0 {
                        let value = format!("s{s}-{n}");
                        let r = c.put(&key, value.clone()).await.expect("put");
                        h.push(write_op(s, group, key, value, &r));
                    } else {
                        let r = c
                            .get_with(&key, Consistency::Sequential)
                            .await
                            .expect("get");
                        h.push(read_op(s, group, key, &r));
                    }
                }
                h
            }));
        }
        let mut parts = Vec::new();
        for t in tasks {
            parts.push(t.await.expect("session task"));
        }
        let history = History::merge(parts);
        assert_eq!(history.len(), sessions * ops);
        if let Err(v) = check_sequential(&history) {
            panic!("sequential consistency violated: {v}");
        }

        // Coalescing: 50 eu-west sessions at once, each alternating a local write and a read of
        // us-east's domain (a switch every time), share WAN syncs instead of sending one each.
        let probe = dev.client("eu-west", CALL);
        let counters = |s: meridian_sdk::pb::StatusResponse| {
            let g = s
                .groups
                .iter()
                .find(|g| g.group == 1)
                .expect("group 1 hosted");
            (g.syncs_sent, g.synced_reads)
        };
        let (sent0, reads0) = counters(probe.status(false).await.expect("status"));
        let mut tasks = Vec::new();
        for i in 0..50 {
            let c = dev.client("eu-west", CALL);
            tasks.push(tokio::spawn(async move {
                for n in 0..5 {
                    c.put(&format!("/eu-west/co/{i}"), format!("{n}"))
                        .await
                        .expect("put");
                    let r = c
                        .get_with("/us-east/sc/k0", Consistency::Sequential)
                        .await
                        .expect("get");
                    assert!(r.header.expect("header").synced, "a switch read must sync");
                }
            }));
        }
        for t in tasks {
            t.await.expect("session");
        }
        let (sent1, reads1) = counters(probe.status(false).await.expect("status"));
        let (sent, reads) = (sent1 - sent0, reads1 - reads0);
        assert_eq!(reads, 250, "every switch read synced");
        assert!(
            sent * 3 <= reads,
            "{sent} WAN syncs for {reads} switch reads: concurrent syncs are not shared"
        );
        eprintln!("coalescing: {sent} syncs for {reads} switch reads");

        // Read-your-writes across regions: a write forwarded from ap-northeast to us-east's
        // leader is visible to the same session's next read, served by the local learner.
        let c = dev.client("ap-northeast", CALL);
        for i in 0..20 {
            let key = format!("/us-east/ryw/{i}");
            c.put(&key, format!("v{i}")).await.expect("put");
            let got = c.get(&key).await.expect("get").expect("read-your-writes");
            assert_eq!(got.value, format!("v{i}").into_bytes());
        }

        // Monotonic reads when a session moves from us-east's router to ap-northeast's (170 ms
        // away): the new router waits until its learner reached the session's vector. A fresh
        // session there, without the vector, sees the older value at least once — so the check
        // is what makes the difference.
        let mut fresh_saw_old = 0;
        for i in 0..20 {
            let key = "/us-east/mono/k".to_string();
            let here = dev.client("us-east", CALL);
            here.put(&key, format!("m{i}")).await.expect("put");
            let seen = here.get(&key).await.expect("get").expect("value");
            assert_eq!(seen.value, format!("m{i}").into_bytes());
            let fresh = dev.client("ap-northeast", CALL);
            let f = fresh
                .get_with(&key, Consistency::Stale { max_lag_ms: 0 })
                .await
                .expect("fresh get");
            if f.kv.map(|kv| kv.value) != Some(format!("m{i}").into_bytes()) {
                fresh_saw_old += 1;
            }
            let there = dev.client("ap-northeast", CALL);
            there.adopt_session(&here.session());
            let moved = there.get(&key).await.expect("get").expect("value");
            assert!(
                moved.mod_revision >= seen.mod_revision,
                "moved session read revision {} after seeing {}",
                moved.mod_revision,
                seen.mod_revision
            );
        }
        assert!(
            fresh_saw_old > 0,
            "a session without the vector never saw the lagging learner: the test proves nothing"
        );

        // A vector the router cannot reach (a revision far in the future of us-east's group)
        // is refused after a bounded wait — never answered from an older view.
        let c = dev.client("eu-west", Duration::from_secs(8));
        let mut session = c.session();
        let ahead = c.seen(1) + 1_000_000;
        session.vector.insert(1, ahead);
        session.last_group = 1;
        c.adopt_session(&session);
        let started = Instant::now();
        match c.get("/us-east/mono/k").await {
            Err(Error::Unavailable(m)) => {
                assert!(m.contains("did not reach revision"), "{m}");
            }
            other => panic!("expected Unavailable for an unreachable vector, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(15));
    });
}

/// A region cut off by the emulator: its own domain stays readable and writable from inside;
/// stale reads of other regions' domains keep working and report growing lag; sequential
/// reads that need a sync of an unreachable group fail with Unavailable after a bounded wait,
/// never with stale data; after healing, everything converges.
#[test]
fn region_cut_off_and_healed() {
    let (_serial, dev) = cluster(&[]);
    rt().block_on(async {
        let us = dev.client("us-east", CALL);
        us.put("/us-east/cut/k", "before").await.expect("put");
        let ap = dev.client("ap-northeast", Duration::from_secs(8));
        // ap's learner has it (sequential read of a new group for this session: no sync needed,
        // so wait for it explicitly through the vector).
        ap.adopt_session(&us.session());
        assert_eq!(
            ap.get("/us-east/cut/k")
                .await
                .expect("get")
                .expect("value")
                .value,
            b"before"
        );

        dev.wan(&["cut-region", "ap-northeast"]);
        // Writes go on in us-east while ap-northeast is cut off.
        for i in 0..20 {
            us.put("/us-east/cut/k", format!("during-{i}"))
                .await
                .expect("put in us-east");
        }

        // Inside the cut region, its own domain works.
        let inside = dev.client("ap-northeast", Duration::from_secs(8));
        inside
            .put("/ap-northeast/cut/own", "1")
            .await
            .expect("local write while cut");
        assert_eq!(
            inside
                .get("/ap-northeast/cut/own")
                .await
                .expect("local read")
                .expect("value")
                .value,
            b"1"
        );

        // Stale reads of us-east's domain keep working, with a lag that grows.
        let stale = Consistency::Stale { max_lag_ms: 0 };
        let r1 = inside
            .get_with("/us-east/cut/k", stale)
            .await
            .expect("stale read");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let r2 = inside
            .get_with("/us-east/cut/k", stale)
            .await
            .expect("stale read");
        let (l1, l2) = (r1.header.expect("h").lag_ms, r2.header.expect("h").lag_ms);
        assert!(
            l2 >= l1 + 1000,
            "lag should grow while cut off: {l1} ms then {l2} ms"
        );
        // A bound on the lag is honoured.
        match inside
            .get_with("/us-east/cut/k", Consistency::Stale { max_lag_ms: 500 })
            .await
        {
            Err(Error::Unavailable(m)) => assert!(m.contains("behind its leader"), "{m}"),
            other => panic!("expected Unavailable for lag over 500 ms, got {other:?}"),
        }

        // A sequential read that switches to us-east's group needs a sync: it fails with a
        // clear Unavailable within a bounded time instead of serving the stale value.
        inside
            .get("/ap-northeast/cut/own")
            .await
            .expect("local read");
        let started = Instant::now();
        match inside.get("/us-east/cut/k").await {
            Err(Error::Unavailable(m)) => assert!(m.contains("sync"), "{m}"),
            other => panic!("expected Unavailable (sync impossible), got {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{:?}",
            started.elapsed()
        );
        // Linearizable too.
        assert!(matches!(
            inside
                .get_with("/us-east/cut/k", Consistency::Linearizable)
                .await,
            Err(Error::Unavailable(_))
        ));

        dev.wan(&["heal-region", "ap-northeast"]);
        // After healing everything converges: the sync succeeds and sees the last write.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let c = dev.client("ap-northeast", Duration::from_secs(8));
            c.get("/ap-northeast/cut/own").await.expect("local read");
            match c.get("/us-east/cut/k").await {
                Ok(Some(kv)) if kv.value == b"during-19" => break,
                other if Instant::now() > deadline => {
                    panic!("ap-northeast never converged after the heal: {other:?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        // And us-east's router syncs ap-northeast's group and sees the write made while cut.
        us.get("/us-east/cut/k").await.expect("get");
        assert_eq!(
            us.get("/ap-northeast/cut/own")
                .await
                .expect("get")
                .expect("value")
                .value,
            b"1"
        );
    });
}
