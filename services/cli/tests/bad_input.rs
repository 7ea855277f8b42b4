//! Every kind of bad input gets a clear error that names the rule, with the right gRPC code,
//! and nothing is written.

mod common;

use meridian_proto::kv::kv_client::KvClient;
use meridian_proto::kv::{self as pb, error_detail::Kind, ErrorDetail};
use meridian_server::Node;
use prost::Message;
use std::process::Command;
use tonic::Code;

async fn one_node() -> (tempfile::TempDir, Node, KvClient<tonic::transport::Channel>) {
    let (dir, node, addr) =
        common::one_node("127.0.43.1", |cfg| cfg.limits.sync_wait_ms_max = 300).await;
    let client = KvClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
        .max_encoding_message_size(8 << 20)
        .max_decoding_message_size(8 << 20);
    (dir, node, client)
}

fn check<T: std::fmt::Debug>(
    res: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
    rule: &str,
    words: &str,
) {
    let status = res.expect_err("bad input must be refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(words),
        "message {:?} lacks {words:?}",
        status.message()
    );
    let detail = ErrorDetail::decode(status.details()).expect("typed detail");
    match detail.kind {
        Some(Kind::InvalidArgument(a)) => assert_eq!(a.rule, rule, "{status:?}"),
        Some(Kind::FutureRevision(_)) => assert_eq!(rule, "future_revision"),
        other => panic!("unexpected detail {other:?}"),
    }
}

fn put(key: &[u8], value: Vec<u8>) -> pb::PutRequest {
    pb::PutRequest {
        key: key.to_vec(),
        value,
        ..Default::default()
    }
}

/// Each path, value, revision and txn rule is enforced with its own message; the store is
/// untouched afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_nothing_is_written() {
    common::watchdog(std::time::Duration::from_secs(300));
    let (_dir, node, mut c) = one_node().await;
    let before = c
        .range(pb::RangeRequest {
            prefix: b"/".to_vec(),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();

    check(
        c.put(put(b"a/b", b"v".to_vec())).await,
        Code::InvalidArgument,
        "key_leading_slash",
        "must start with '/'",
    );
    check(
        c.put(put(b"/a//b", b"v".to_vec())).await,
        Code::InvalidArgument,
        "key_empty_segment",
        "empty segment",
    );
    check(
        c.put(put(b"/a/", b"v".to_vec())).await,
        Code::InvalidArgument,
        "key_empty_segment",
        "empty segment",
    );
    check(
        c.put(put(b"/a/./b", b"v".to_vec())).await,
        Code::InvalidArgument,
        "key_dot_segment",
        "'.' or '..'",
    );
    check(
        c.put(put(b"/a/../b", b"v".to_vec())).await,
        Code::InvalidArgument,
        "key_dot_segment",
        "'.' or '..'",
    );
    check(
        c.put(put(b"/a\xff\xfe", b"v".to_vec())).await,
        Code::InvalidArgument,
        "key_invalid_utf8",
        "not valid UTF-8",
    );
    let long = format!("/{}", "x".repeat(4096));
    check(
        c.put(put(long.as_bytes(), b"v".to_vec())).await,
        Code::InvalidArgument,
        "key_too_long",
        "the limit is 4096 bytes",
    );
    check(
        c.put(put(b"/big", vec![0u8; 1024 * 1024 + 1])).await,
        Code::InvalidArgument,
        "value_too_large",
        "the limit is 1048576 bytes",
    );
    check(
        c.put(pb::PutRequest {
            expected_version: Some(-1),
            ..put(b"/a", b"v".to_vec())
        })
        .await,
        Code::InvalidArgument,
        "negative_revision",
        "expected_version is -1",
    );
    check(
        c.get(pb::GetRequest {
            key: b"/a".to_vec(),
            read: Some(pb::ReadOptions {
                consistency: 0,
                min_revision: -5,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "negative_revision",
        "read.min_revision is -5",
    );
    check(
        c.watch(pb::WatchRequest {
            key: b"/a".to_vec(),
            start_revision: -1,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "negative_revision",
        "start_revision is -1",
    );
    check(
        c.watch(pb::WatchRequest {
            key: b"/a".to_vec(),
            start_revision: 1_000_000,
            ..Default::default()
        })
        .await,
        Code::OutOfRange,
        "future_revision",
        "revision 1000000 is in the future",
    );
    let op = pb::TxnOp {
        op: Some(pb::txn_op::Op::Put(put(b"/t", b"v".to_vec()))),
    };
    check(
        c.txn(pb::TxnRequest {
            compare: vec![],
            success: vec![op; 129],
            failure: vec![],
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "txn_too_many_ops",
        "txn has 129 success operations; the limit is 128",
    );
    // One bad op poisons the whole txn: the good op before it is not applied either.
    let good = pb::TxnOp {
        op: Some(pb::txn_op::Op::Put(put(b"/t", b"v".to_vec()))),
    };
    let bad = pb::TxnOp {
        op: Some(pb::txn_op::Op::Put(put(b"t", b"v".to_vec()))),
    };
    check(
        c.txn(pb::TxnRequest {
            compare: vec![],
            success: vec![good, bad],
            failure: vec![],
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "key_leading_slash",
        "must start with '/'",
    );

    let after = c
        .range(pb::RangeRequest {
            prefix: b"/".to_vec(),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    assert!(
        after.kvs.is_empty(),
        "nothing may be written: {:?}",
        after.kvs
    );
    assert_eq!(
        before.header.expect("header").revision,
        after.header.expect("header").revision,
        "no entry reached the log"
    );
    node.shutdown().await;
}

fn server_with_config(text: &str) -> (bool, String) {
    server_with_config_env(text, &[])
}

fn server_with_config_env(text: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.toml");
    std::fs::write(&path, text).expect("write config");
    let out = Command::new(common::BIN)
        .args(["server", "--config"])
        .arg(&path)
        .envs(env.iter().copied())
        .output()
        .expect("run meridian server");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A config file with an unknown key is refused at start, naming the key.
#[test]
fn unknown_config_key_is_refused() {
    common::watchdog(std::time::Duration::from_secs(300));
    let (ok, err) = server_with_config("node_id = 1\nlisten = \"127.0.43.2:0\"\nheartbeat = 5\n");
    assert!(!ok);
    assert!(
        err.contains("unknown field") && err.contains("`heartbeat`"),
        "{err}"
    );
}

/// A malformed TOML file is refused at start, saying where it broke.
#[test]
fn malformed_toml_is_refused() {
    common::watchdog(std::time::Duration::from_secs(300));
    let (ok, err) = server_with_config("node_id = 1\n[raft\nheartbeat_interval_ms = 5\n");
    assert!(!ok);
    assert!(
        err.contains("malformed TOML") && err.contains("line 2"),
        "{err}"
    );
}

/// `MERIDIAN_` environment variables override the file (here with a value the node refuses),
/// and an unknown one is refused like an unknown key in the file.
#[test]
fn environment_overrides_the_file() {
    common::watchdog(std::time::Duration::from_secs(300));
    let file = "node_id = 1\nlisten = \"127.0.43.3:0\"\n";
    let (ok, err) = server_with_config_env(file, &[("MERIDIAN_NODE_ID", "0")]);
    assert!(!ok);
    assert!(err.contains("node_id must be at least 1"), "{err}");
    let (ok, err) =
        server_with_config_env(file, &[("MERIDIAN_RAFT__HEARTBEAT_INTERVAL_MS", "900")]);
    assert!(
        !ok,
        "a 900 ms heartbeat with the default 1000 ms election timeout is refused"
    );
    assert!(
        err.contains("must exceed twice heartbeat_interval_ms (900)"),
        "{err}"
    );
    let (ok, err) = server_with_config_env(file, &[("MERIDIAN_BOGUS", "1")]);
    assert!(!ok);
    assert!(
        err.contains("unknown field") && err.contains("bogus"),
        "{err}"
    );
    // The CLI's own variables, exported in an operator's shell, are not node settings: the
    // node goes on to the first real problem (here its id).
    let (ok, err) = server_with_config_env(
        file,
        &[
            ("MERIDIAN_TOKEN", "x"),
            ("MERIDIAN_CA", "/nonexistent/ca.pem"),
            ("MERIDIAN_WAN_CONTROL", "127.0.0.1:1"),
            ("MERIDIAN_NODE_ID", "0"),
        ],
    );
    assert!(!ok);
    assert!(err.contains("node_id must be at least 1"), "{err}");
    // A broken [telemetry] from the environment is refused, saying what is wrong.
    let (ok, err) = server_with_config_env(file, &[("MERIDIAN_TELEMETRY__SAMPLE_RATIO", "2")]);
    assert!(!ok);
    assert!(
        err.contains("telemetry.sample_ratio must be between 0.0 and 1.0, not 2"),
        "{err}"
    );
}

/// `meridian server` refuses to run without tokens and mTLS unless the config says
/// `security.mode = "insecure"`, and then says at every start what is off.
#[test]
fn a_server_without_security_is_refused_unless_it_says_insecure() {
    common::watchdog(std::time::Duration::from_secs(300));
    let dir = tempfile::tempdir().expect("tempdir");
    let base = format!(
        "node_id = 1\nlisten = \"127.0.43.4:0\"\ndata_dir = \"{}\"\n",
        dir.path().join("data").display()
    );
    let (ok, err) = server_with_config(&base);
    assert!(!ok, "started without security");
    assert!(
        err.contains("security.mode = \"insecure\"")
            && err.contains("token checks")
            && err.contains("mTLS"),
        "{err}"
    );
    let (ok, err) = server_with_config(&format!("{base}[security]\nmode = \"sloppy\"\n"));
    assert!(!ok);
    assert!(err.contains("sloppy"), "{err}");

    let path = dir.path().join("insecure.toml");
    std::fs::write(&path, format!("{base}[security]\nmode = \"insecure\"\n")).expect("config");
    let log_path = dir.path().join("insecure.log");
    let mut child = Command::new(common::BIN)
        .args(["server", "--config"])
        .arg(&path)
        .env("MERIDIAN_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log"))
        .spawn()
        .expect("run meridian server");
    let start = std::time::Instant::now();
    let log = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains("security.mode = \"insecure\"") {
            break log;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the insecure node exited ({status}): {log}");
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "no warning within 30 s: {log}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        log.contains("token checks") && log.contains("mTLS") && log.contains("127.0.43.4"),
        "{log}"
    );
}
