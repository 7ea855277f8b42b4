//! Security on by default in `meridian dev`, and the revocation list (docs/security.md), on the
//! 3-region topology under the WAN emulator (75/170/240 ms round trips): the dev mints a root
//! token that its ready file and the CLI on this machine carry; a request without one is
//! refused; a token revoked through one region's router is refused there at once and in every
//! other region within about a round trip, together with every token attenuated from it; the
//! root token and other tokens go on working; revoking needs `admin` on `/` and a well-formed id.

mod common;

use common::DevCluster;
use meridian_auth::{attenuate, inspect, mint, Grant, Narrowing, OpSet, RootKey};
use meridian_sdk::{Client, Consistency, Error, Options};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};
use tonic::Code;

const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-northeast"];

fn client(dev: &DevCluster, region: &str, token: Option<&str>) -> Client {
    Client::new(
        vec![dev.endpoint(region)],
        Options {
            call_timeout: Duration::from_secs(10),
            rpc_timeout: Duration::from_secs(5),
            token: token.map(str::to_string),
            ..dev.options()
        },
    )
    .expect("client")
}

fn refusal<T: std::fmt::Debug>(r: Result<T, Error>) -> (Code, String) {
    match r {
        Ok(v) => panic!("expected a refusal, got {v:?}"),
        Err(Error::Other { code, message }) => (code, message),
        Err(e) => panic!("expected a refusal with a code, got {e:?}"),
    }
}

/// `meridian --endpoint EP ARGS…` with no token given (the dev's is picked up).
fn cli(endpoint: &str, args: &[&str]) -> std::process::Output {
    Command::new(common::BIN)
        .env_remove("MERIDIAN_TOKEN")
        .args(["--endpoint", endpoint])
        .args(args)
        .output()
        .expect("run meridian")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused_in_every_region_within_a_round_trip() {
    common::watchdog(Duration::from_secs(600));
    let dev = DevCluster::start(&[]);
    let root_token = dev.token().expect("meridian dev mints a root token");
    let data_dir = dev.ready["data_dir"]
        .as_str()
        .expect("data_dir")
        .to_string();
    let key_text =
        std::fs::read_to_string(format!("{data_dir}/root.key")).expect("the dev's root key");
    let root = RootKey::parse(&key_text).expect("root key");
    let eu = dev.endpoint("eu-west");

    // Security is on: no token, no service; the CLI here carries the dev's token by itself.
    let (code, _) = refusal(client(&dev, "eu-west", None).get("/us-east/app/x").await);
    assert_eq!(code, Code::Unauthenticated);
    let out = cli(&eu, &["put", "/us-east/app/x", "1"]);
    assert!(
        out.status.success(),
        "the CLI picks up the dev's token: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let grant = |prefix: &str, ops: &str| Grant {
        prefixes: vec![prefix.into()],
        ops: ops.parse::<OpSet>().expect("ops"),
        expires: SystemTime::now() + Duration::from_secs(3600),
    };
    let app = mint(&root, &grant("/us-east/app/", "read,write")).expect("mint");
    let reader = attenuate(
        &app,
        &Narrowing {
            prefixes: None,
            ops: Some("read".parse().expect("ops")),
            expires: None,
        },
    )
    .expect("attenuate");
    let other = mint(&root, &grant("/us-east/other/", "read,write")).expect("mint");
    for region in REGIONS {
        for t in [&app, &reader] {
            client(&dev, region, Some(t))
                .get_with("/us-east/app/x", Consistency::Linearizable)
                .await
                .unwrap_or_else(|e| panic!("{region}: the token works before: {e}"));
        }
    }

    // Only an admin revokes, and only well-formed ids.
    let (code, _) = refusal(
        client(&dev, "eu-west", Some(&app))
            .revoke_tokens(&inspect(&app).expect("inspect").revocation_ids)
            .await,
    );
    assert_eq!(code, Code::PermissionDenied);
    let admin = client(&dev, "eu-west", Some(&root_token));
    match admin.revoke_tokens(&["not-an-id".to_string()]).await {
        Err(Error::InvalidArgument { .. }) => {}
        other => panic!("a malformed id is an invalid argument, got {other:?}"),
    }
    assert!(admin.revoked_tokens().await.expect("list").ids.is_empty());

    // Revoke `app` (its only block) through eu-west's router, with the CLI.
    let app_id = inspect(&app).expect("inspect").revocation_ids[0].clone();
    let revoked_at = Instant::now();
    let out = cli(&eu, &["token", "revoke", &app]);
    assert!(
        out.status.success(),
        "token revoke: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answered = revoked_at.elapsed();
    // The router that answered refuses it from the answer on.
    for t in [&app, &reader] {
        let (code, message) = refusal(client(&dev, "eu-west", Some(t)).get("/us-east/app/x").await);
        assert_eq!(code, Code::Unauthenticated);
        assert!(message.contains("revoked"), "{message}");
    }
    // Every other region within about a round trip of the commit (the farthest is 240 ms).
    for region in ["us-east", "ap-northeast"] {
        for t in [&app, &reader] {
            let c = client(&dev, region, Some(t));
            let started = Instant::now();
            loop {
                match c.get("/us-east/app/x").await {
                    Err(Error::Other {
                        code: Code::Unauthenticated,
                        ..
                    }) => break,
                    _ if started.elapsed() > Duration::from_secs(2) => {
                        panic!("{region} still serves a token revoked {answered:?} ago")
                    }
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
            eprintln!(
                "{region}: refused {:?} after the revoke was answered",
                started.elapsed()
            );
        }
    }
    // Nothing else is revoked; the list shows the id; revoking it again changes nothing new.
    for region in REGIONS {
        client(&dev, region, Some(&other))
            .put("/us-east/other/y", "1")
            .await
            .unwrap_or_else(|e| panic!("{region}: another token still works: {e}"));
        client(&dev, region, Some(&root_token))
            .get("/us-east/app/x")
            .await
            .unwrap_or_else(|e| panic!("{region}: the root token still works: {e}"));
    }
    let listed = admin.revoked_tokens().await.expect("list");
    assert_eq!(listed.ids, vec![app_id.clone()]);
    let again = admin.revoke_tokens(&[app_id]).await.expect("revoke again");
    assert_eq!(again.newly_revoked, 0);
    let out = cli(&eu, &["--output", "json", "token", "revoked"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&listed.ids[0]));
}
