//! The HTTP/JSON gateway (docs/http.md) on real `meridian dev` clusters: every call over
//! HTTP with tokens, the session header carrying sequential consistency from one region's
//! node to another's, errors as JSON with their typed detail, a watch as server-sent events,
//! leases and locks; and schemathesis (PyPI; scripts/test installs it) fuzzing every call of
//! the document the server serves: no 5xx, every answer as the schema says.

mod common;

use common::http::{request, Reply};
use common::DevCluster;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

/// The HTTP listener of each node, by region (from each node's own status).
fn listeners(dev: &DevCluster, token: &[(&str, &str)]) -> Vec<(String, String)> {
    let map = dev.ready["http"]
        .as_object()
        .expect("the ready file names each node's HTTP listener");
    map.values()
        .map(|a| {
            let addr = a.as_str().expect("address").to_string();
            let s = request(&addr, "GET", "/v1/status", token, "").json();
            (s["region"].as_str().expect("region").to_string(), addr)
        })
        .collect()
}

/// Waits until every node's `/readyz` says ready (each group has a leader).
fn wait_ready(dev: &DevCluster) {
    let start = Instant::now();
    for a in dev.ready["http"]
        .as_object()
        .expect("http listeners")
        .values()
    {
        let a = a.as_str().expect("address");
        loop {
            let r = request(a, "GET", "/readyz", &[], "");
            if r.code == 200 {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "{a} never ready: {}",
                r.body
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn post(addr: &str, path: &str, headers: &[(&str, &str)], body: Value) -> Reply {
    request(addr, "POST", path, headers, &body.to_string())
}

/// POST that must succeed; answers (body, session header). A 503 (the API's retryable
/// answer, e.g. a linearizable read whose leader could not confirm its quorum in time on a
/// loaded machine) is retried for up to 20 s, as a client would.
fn ok(addr: &str, path: &str, headers: &[(&str, &str)], body: Value) -> (Value, String) {
    let until = Instant::now() + Duration::from_secs(20);
    let mut r = post(addr, path, headers, body.clone());
    while r.code == 503 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(200));
        r = post(addr, path, headers, body.clone());
    }
    assert_eq!(r.code, 200, "{path} {body}: {}", r.body);
    let session = r
        .header("meridian-session")
        .unwrap_or_else(|| panic!("{path}: no meridian-session header"))
        .to_string();
    (r.json(), session)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_the_api_with_tokens_and_sessions() {
    common::watchdog(Duration::from_secs(300));
    let dev = DevCluster::start(&[]);
    wait_ready(&dev);
    let token = dev.token().expect("dev runs with tokens by default");
    let bearer = format!("Bearer {token}");
    let auth: &[(&str, &str)] = &[("authorization", &bearer)];
    let nodes = listeners(&dev, &[("meridian-token", &token)]);
    let at = |region: &str| {
        nodes
            .iter()
            .find(|(r, _)| r == region)
            .map(|(_, a)| a.clone())
            .unwrap_or_else(|| panic!("no node in {region}: {nodes:?}"))
    };
    let (us, eu, ap) = (at("us-east"), at("eu-west"), at("ap-northeast"));

    // No token: refused, as JSON, nothing written.
    let r = post(
        &us,
        "/v1/kv/put",
        &[],
        json!({"key": "/us-east/gw/x", "value": "1"}),
    );
    assert_eq!(r.code, 401, "{}", r.body);
    assert_eq!(r.json()["code"], "unauthenticated");
    let r = post(
        &us,
        "/v1/kv/put",
        &[("meridian-token", "not-a-token")],
        json!({"key": "/us-east/gw/x", "value": "1"}),
    );
    assert_eq!(r.code, 401, "{}", r.body);

    // A write in us-east, then a read in ap-northeast presenting the session: it sees it.
    let (put, session) = ok(
        &us,
        "/v1/kv/put",
        auth,
        json!({"key": "/us-east/gw/x", "value": "hello"}),
    );
    assert_eq!(put["succeeded"], true);
    let rev = put["header"]["revision"].as_u64().expect("revision");
    assert!(session.contains(&format!(":{rev}")), "{session}");
    let with_session = [
        ("authorization", bearer.as_str()),
        ("meridian-session", &session),
    ];
    let (got, after) = ok(
        &ap,
        "/v1/kv/get",
        &with_session,
        json!({"key": "/us-east/gw/x"}),
    );
    assert_eq!(got["kv"]["value"], "hello", "{got}");
    assert_eq!(got["kv"]["mod_revision"].as_u64(), Some(rev));
    assert!(after.contains(";last=1"), "{after}");
    // The session keeps the highest timestamp it has seen: the read's, at least the put's.
    let put_ts = &put["header"]["timestamp"];
    let put_ts = (
        put_ts["physical_us"].as_u64().expect("a commit timestamp"),
        put_ts["logical"].as_u64().expect("its counter"),
    );
    let ts_of = |s: &str| -> (u64, u64) {
        let t = s.split(";ts=").nth(1).expect("the session's timestamp");
        let (p, l) = t.split_once('.').expect("P.L");
        (p.parse().expect("µs"), l.parse().expect("counter"))
    };
    assert!(ts_of(&session) >= put_ts, "{session} vs {put_ts:?}");
    assert!(
        ts_of(&after) >= ts_of(&session),
        "{after} went back from {session}"
    );

    // Binary values travel as base64; `meridian-token` works as well as Bearer.
    let tok: &[(&str, &str)] = &[("meridian-token", &token)];
    ok(
        &eu,
        "/v1/kv/put",
        tok,
        json!({"key": "/us-east/gw/bin", "value_base64": "AP8="}),
    );
    let (got, _) = ok(
        &us,
        "/v1/kv/get",
        tok,
        json!({"key": "/us-east/gw/bin", "read": {"consistency": "linearizable"}}),
    );
    assert_eq!(got["kv"]["value_base64"], "AP8=", "{got}");
    assert!(got["kv"].get("value").is_none(), "{got}");

    // A txn: compare then put; its failure branch reads.
    let (t, _) = ok(
        &us,
        "/v1/kv/txn",
        auth,
        json!({
            "compare": [{"key": "/us-east/gw/x", "target": "value", "value": "hello"}],
            "success": [{"put": {"key": "/us-east/gw/y", "value": "from-txn"}}],
            "failure": [{"get": {"key": "/us-east/gw/x"}}]
        }),
    );
    assert_eq!(t["succeeded"], true, "{t}");
    assert_eq!(t["results"][0]["put"]["key"], "/us-east/gw/y", "{t}");
    let (t, _) = ok(
        &us,
        "/v1/kv/txn",
        auth,
        json!({
            "compare": [{"key": "/us-east/gw/x", "target": "version", "result": "greater", "number": 5}],
            "success": [],
            "failure": [{"get": {"key": "/us-east/gw/x"}}]
        }),
    );
    assert_eq!(t["succeeded"], false, "{t}");
    assert_eq!(t["results"][0]["get"]["kv"]["value"], "hello", "{t}");

    // Range and list.
    let (r, _) = ok(
        &us,
        "/v1/kv/range",
        auth,
        json!({"prefix": "/us-east/gw/", "read": {"consistency": "linearizable"}}),
    );
    let keys: Vec<&str> = r["kvs"]
        .as_array()
        .expect("kvs")
        .iter()
        .map(|kv| kv["key"].as_str().expect("key"))
        .collect();
    assert_eq!(keys, ["/us-east/gw/bin", "/us-east/gw/x", "/us-east/gw/y"]);
    let (l, _) = ok(&us, "/v1/kv/list", auth, json!({"path": "/"}));
    assert_eq!(
        l["children"],
        json!(["ap-northeast", "eu-west", "global", "us-east"])
    );

    // Bad input: clear JSON errors, nothing written.
    let r = post(
        &us,
        "/v1/kv/put",
        auth,
        json!({"key": "no-slash", "value": "1"}),
    );
    assert_eq!(r.code, 400);
    let e = r.json();
    assert_eq!(e["code"], "invalid_argument");
    assert_eq!(
        e["detail"]["invalid_argument"]["rule"], "key_leading_slash",
        "{e}"
    );
    assert!(
        r.header("meridian-session").is_some(),
        "errors carry the session too"
    );
    let r = post(
        &us,
        "/v1/kv/put",
        auth,
        json!({"key": "/us-east/gw/z", "valeu": "1"}),
    );
    assert_eq!(r.code, 400);
    assert!(
        r.json()["message"].as_str().unwrap().contains("valeu"),
        "{}",
        r.body
    );
    let r = request(&us, "POST", "/v1/kv/put", auth, "{not json");
    assert_eq!(r.code, 400, "{}", r.body);
    let r = post(
        &us,
        "/v1/kv/get",
        &[
            ("authorization", &bearer),
            ("meridian-session", "vector=1:x"),
        ],
        json!({"key": "/us-east/gw/x"}),
    );
    assert_eq!(r.code, 400);
    assert!(r.body.contains("meridian-session"), "{}", r.body);
    let r = post(
        &us,
        "/v1/kv/put",
        auth,
        json!({"key": "/us-east/gw/z", "value": "1", "value_base64": "MQ=="}),
    );
    assert_eq!(r.code, 400, "{}", r.body);
    let r = request(&us, "GET", "/v1/nothing", auth, "");
    assert_eq!(r.code, 404);
    assert_eq!(r.json()["code"], "not_found");
    let (g, _) = ok(
        &us,
        "/v1/kv/get",
        auth,
        json!({"key": "/us-east/gw/z", "read": {"consistency": "linearizable"}}),
    );
    assert!(g["kv"].is_null(), "a refused put wrote nothing: {g}");

    // A watch on eu-west's node as server-sent events sees a put made in us-east.
    let mut sse = std::net::TcpStream::connect(&eu).expect("connect");
    sse.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    write!(
        sse,
        "GET /v1/watch?key=/us-east/gw/w/&prefix=true HTTP/1.1\r\nHost: {eu}\r\n\
         meridian-token: {token}\r\n\r\n"
    )
    .expect("send");
    let mut lines = BufReader::new(sse).lines();
    let status = lines.next().expect("a status line").expect("read");
    assert!(status.contains(" 200 "), "{status}");
    // The first message (a progress notice) says the watch is in place.
    let first_data = lines
        .by_ref()
        .map(|l| l.expect("read"))
        .find(|l| l.starts_with("data:"))
        .expect("a first message");
    assert!(first_data.contains("\"progress\":true"), "{first_data}");
    ok(
        &us,
        "/v1/kv/put",
        auth,
        json!({"key": "/us-east/gw/w/a", "value": "seen"}),
    );
    let event = lines
        .by_ref()
        .map(|l| l.expect("read (timed out waiting for the event?)"))
        .find(|l| l.starts_with("data:") && l.contains("/us-east/gw/w/a"))
        .expect("the event");
    let event: Value =
        serde_json::from_str(event.trim_start_matches("data:").trim()).expect("json");
    assert_eq!(event["events"][0]["type"], "put", "{event}");
    assert_eq!(event["events"][0]["kv"]["value"], "seen", "{event}");
    drop(lines);

    // Leases and locks: a holder, a second lease that does not get the lock, release, revoke.
    let (l1, _) = ok(
        &us,
        "/v1/lease/grant",
        auth,
        json!({"path": "/us-east/", "ttl_ms": 10000}),
    );
    let (l2, _) = ok(
        &us,
        "/v1/lease/grant",
        auth,
        json!({"path": "/us-east/", "ttl_ms": 10000}),
    );
    let (id1, id2) = (
        l1["id"].as_str().expect("id"),
        l2["id"].as_str().expect("id"),
    );
    assert!(id1.parse::<u64>().expect("decimal id") > 1 << 48, "{id1}");
    let (a, _) = ok(
        &us,
        "/v1/lock/acquire",
        auth,
        json!({"name": "/us-east/gw/lock", "lease": id1}),
    );
    assert_eq!(a["acquired"], true, "{a}");
    assert!(a["token"]["revision"].as_u64().expect("fencing") > 0);
    let (b, _) = ok(
        &eu,
        "/v1/lock/acquire",
        auth,
        json!({"name": "/us-east/gw/lock", "lease": id2}),
    );
    assert_eq!(b["acquired"], false, "{b}");
    assert_eq!(b["holders"][0], a["key"], "{b}");
    let (k, _) = ok(
        &us,
        "/v1/lease/keepalive",
        auth,
        json!({"ids": [id1, "12345"]}),
    );
    let found = |id: &str| {
        k["results"]
            .as_array()
            .expect("results")
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("no result for {id}: {k}"))["found"]
            .clone()
    };
    assert_eq!(found(id1), true, "{k}");
    assert_eq!(found("12345"), false, "{k}");
    let (t, _) = ok(&us, "/v1/lease/ttl", auth, json!({"id": id1, "keys": true}));
    assert_eq!(t["keys"], json!([a["key"]]), "{t}");
    let (rel, _) = ok(&us, "/v1/lock/release", auth, json!({"key": a["key"]}));
    assert_eq!(rel["was_holder"], true, "{rel}");
    let (rv, _) = ok(&us, "/v1/lease/revoke", auth, json!({"id": id2}));
    assert_eq!(rv["header"]["group"], 1, "{rv}");
    let r = post(&us, "/v1/lease/revoke", auth, json!({"id": "1x"}));
    assert_eq!(r.code, 400, "{}", r.body);

    // The status, and the document the server serves is docs/openapi.json.
    let s = request(&us, "GET", "/v1/status?cluster=true", auth, "").json();
    assert_eq!(s["groups"].as_array().expect("groups").len(), 4, "{s}");
    assert_eq!(s["nodes"].as_array().expect("nodes").len(), 8, "{s}");
    let served = request(&us, "GET", "/openapi.json", &[], "");
    assert_eq!(served.code, 200);
    let docs: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/openapi.json"
        ))
        .expect("docs/openapi.json"),
    )
    .expect("json");
    assert_eq!(
        served.json(),
        docs,
        "the served document is docs/openapi.json"
    );
}

/// schemathesis's `st`: `SCHEMATHESIS_ST`, else the one scripts/test installs.
fn schemathesis() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("SCHEMATHESIS_ST") {
        return p.into();
    }
    let p =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/schemathesis/bin/st");
    assert!(
        p.exists(),
        "schemathesis is missing: run scripts/test (it installs it into target/schemathesis) \
         or set SCHEMATHESIS_ST to an `st` binary"
    );
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_schema_mismatch() {
    common::watchdog(Duration::from_secs(600));
    let st = schemathesis();
    let dev = DevCluster::start(&["--insecure", "--no-wan"]);
    wait_ready(&dev);
    let addr = dev.ready["http"]["1"]
        .as_str()
        .expect("node 1's HTTP listener")
        .to_string();
    // Some keys exist, so that reads and deletes find data.
    for k in [
        "/us-east/app/color",
        "/eu-west/app/color",
        "/global/app/color",
    ] {
        ok(&addr, "/v1/kv/put", &[], json!({"key": k, "value": "blue"}));
    }
    let revision = |addr: &str| {
        let (r, _) = ok(addr, "/v1/kv/list", &[], json!({"path": "/us-east/"}));
        r["header"]["revision"].as_u64().expect("revision")
    };
    let before = revision(&addr);
    let started = Instant::now();
    let out = std::process::Command::new(&st)
        .arg("run")
        .arg(format!("http://{addr}/openapi.json"))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--exclude-path",
            "/v1/watch",
            "--max-examples",
            "25",
            "--seed",
            "1",
            "--workers",
            "2",
            "--request-timeout",
            "70",
            "--generation-database",
            "none",
            "--no-color",
        ])
        .current_dir(dev.dir.path())
        .output()
        .expect("run schemathesis");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found failures ({:?}):\n{text}",
        started.elapsed()
    );
    assert!(text.contains("passed"), "schemathesis ran no test:\n{text}");
    // It reached the API: the generated calls wrote to us-east's group (its revision moved;
    // whether keys are left depends on how the generated puts and deletes interleave).
    let after = revision(&addr);
    assert!(
        after > before,
        "revision {before} -> {after}: no write reached the API"
    );
}
