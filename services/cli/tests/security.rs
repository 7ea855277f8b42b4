//! Capability tokens on every client RPC (docs/security.md), through real sockets: a node
//! started with the cluster's root public key serves exactly what a request's token allows,
//! refuses the rest with `Unauthenticated` (the token) or `PermissionDenied` (the request),
//! and loses nothing to a refused request.

mod common;

use meridian_auth::{attenuate, mint, Grant, Narrowing, Op, OpSet, RootKey};
use meridian_proto::kv::kv_client::KvClient;
use meridian_sdk::{pb, Client, Consistency, Error, Options};
use std::time::{Duration, SystemTime};
use tonic::Code;

fn token(root: &RootKey, prefix: &str, ops: &str, ttl_s: i64) -> String {
    let expires = if ttl_s >= 0 {
        SystemTime::now() + Duration::from_secs(ttl_s as u64)
    } else {
        SystemTime::now() - Duration::from_secs((-ttl_s) as u64)
    };
    mint(
        root,
        &Grant {
            prefixes: vec![prefix.into()],
            ops: ops.parse::<OpSet>().expect("ops"),
            expires,
        },
    )
    .expect("mint")
}

fn client(addr: &str, token: Option<&str>) -> Client {
    Client::new(
        vec![addr.to_string()],
        Options {
            call_timeout: Duration::from_secs(10),
            rpc_timeout: Duration::from_secs(5),
            token: token.map(str::to_string),
            ..Options::default()
        },
    )
    .expect("client")
}

fn code<T: std::fmt::Debug>(r: Result<T, Error>) -> Code {
    match r {
        Ok(v) => panic!("expected a refusal, got {v:?}"),
        Err(Error::Other { code, .. }) => code,
        Err(e) => panic!("expected Unauthenticated or PermissionDenied, got {e:?}"),
    }
}

/// One RPC of the table: which operation it needs, and the call on a resource.
#[derive(Clone, Copy, Debug)]
enum Rpc {
    Put,
    Get,
    Range,
    Delete,
    Watch,
    LeaseGrant,
    LockAcquire,
    Leader,
}

impl Rpc {
    const ALL: [Rpc; 8] = [
        Rpc::Put,
        Rpc::Get,
        Rpc::Range,
        Rpc::Delete,
        Rpc::Watch,
        Rpc::LeaseGrant,
        Rpc::LockAcquire,
        Rpc::Leader,
    ];

    fn needs(self) -> Op {
        match self {
            Rpc::Put | Rpc::Delete => Op::Write,
            Rpc::Get | Rpc::Range => Op::Read,
            Rpc::Watch => Op::Watch,
            Rpc::LeaseGrant => Op::Lease,
            Rpc::LockAcquire | Rpc::Leader => Op::Lock,
        }
    }

    /// The call's outcome: Ok, or the refusal's code (any other failure panics).
    async fn call(self, addr: &str, token: &str, base: &str) -> Result<(), Code> {
        let c = client(addr, Some(token));
        let key = format!("{base}k");
        let r: Result<(), Error> = match self {
            Rpc::Put => c.put(&key, "v").await.map(drop),
            Rpc::Get => c.get(&key).await.map(drop),
            Rpc::Range => c.range_all(base, Consistency::Sequential).await.map(drop),
            Rpc::Delete => c
                .delete(pb::DeleteRequest {
                    key: key.clone().into_bytes(),
                    ..Default::default()
                })
                .await
                .map(drop),
            Rpc::Watch => {
                let mut kv = KvClient::connect(format!("http://{addr}"))
                    .await
                    .expect("connect");
                let mut req = tonic::Request::new(pb::WatchRequest {
                    key: key.clone().into_bytes(),
                    ..Default::default()
                });
                req.metadata_mut().insert(
                    meridian_proto::AUTHORIZATION,
                    format!("Bearer {token}").parse().expect("ascii"),
                );
                match kv.watch(req).await {
                    Ok(_) => Ok(()),
                    Err(s) => Err(Error::from_status(s)),
                }
            }
            Rpc::LeaseGrant => c.lease_grant(base, Duration::from_secs(10)).await.map(drop),
            Rpc::LockAcquire => c
                .lock_acquire(pb::LockAcquireRequest {
                    name: format!("{base}lock"),
                    ..Default::default()
                })
                .await
                .map(drop),
            Rpc::Leader => c.leader(&format!("{base}election")).await.map(drop),
        };
        match r {
            Ok(()) => Ok(()),
            // A lock without a lease is refused for that, after the token check passed.
            Err(Error::InvalidArgument { .. }) if matches!(self, Rpc::LockAcquire) => Ok(()),
            Err(e) => Err(code(Err::<(), _>(e))),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_does_exactly_what_its_token_allows() {
    common::watchdog(Duration::from_secs(300));
    let root = RootKey::generate();
    let public = root.public().to_text();
    let (_dir, node, addr) = common::one_node_with_token(
        "127.0.47.1",
        |c| c.security.root_public_key = Some(public.clone()),
        Some(token(&root, "/", "all", 600)),
    )
    .await;

    // The table: for each operation, a token allowing only it under /us-east/app/.
    for granted in Op::ALL {
        let t = token(&root, "/us-east/app/", granted.name(), 600);
        for rpc in Rpc::ALL {
            let inside = rpc.call(&addr, &t, "/us-east/app/").await;
            let outside = rpc.call(&addr, &t, "/us-east/db/").await;
            if rpc.needs() == granted {
                assert_eq!(
                    inside,
                    Ok(()),
                    "{rpc:?} with a {granted} token inside its prefix"
                );
            } else {
                assert_eq!(
                    inside,
                    Err(Code::PermissionDenied),
                    "{rpc:?} with a {granted} token"
                );
            }
            assert_eq!(
                outside,
                Err(Code::PermissionDenied),
                "{rpc:?} with a {granted} token outside its prefix"
            );
        }
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_and_nothing_is_written() {
    common::watchdog(Duration::from_secs(300));
    let root = RootKey::generate();
    let admin = token(&root, "/", "all", 600);
    let (_dir, node, addr) = common::one_node_with_token(
        "127.0.47.2",
        |c| c.security.root_public_key = Some(root.public().to_text()),
        Some(admin.clone()),
    )
    .await;
    let writer = token(&root, "/app/", "read,write", 600);
    let other_root = RootKey::generate();
    let mut tampered: Vec<char> = writer.chars().collect();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == 'A' { 'B' } else { 'A' };
    let widened = attenuate(
        &token(&root, "/app/", "read", 600),
        &Narrowing {
            ops: Some(OpSet::all()),
            prefixes: Some(vec!["/".into()]),
            ..Default::default()
        },
    )
    .expect("attenuate");
    let cases: Vec<(&str, Option<String>, Code)> = vec![
        ("no token", None, Code::Unauthenticated),
        (
            "expired",
            Some(token(&root, "/app/", "write", -60)),
            Code::Unauthenticated,
        ),
        (
            "tampered",
            Some(tampered.into_iter().collect()),
            Code::Unauthenticated,
        ),
        (
            "another root",
            Some(token(&other_root, "/app/", "write", 600)),
            Code::Unauthenticated,
        ),
        ("garbage", Some("not-a-token".into()), Code::Unauthenticated),
        (
            "attenuated beyond its parent",
            Some(widened),
            Code::PermissionDenied,
        ),
        (
            "wrong prefix",
            Some(token(&root, "/other/", "write", 600)),
            Code::PermissionDenied,
        ),
        (
            "wrong operation",
            Some(token(&root, "/app/", "read", 600)),
            Code::PermissionDenied,
        ),
    ];
    for (i, (case, t, want)) in cases.into_iter().enumerate() {
        let key = format!("/app/k{i}");
        let got = code(client(&addr, t.as_deref()).put(&key, "v").await);
        assert_eq!(got, want, "{case}");
        let seen = client(&addr, Some(&admin))
            .get(&key)
            .await
            .expect("admin get");
        assert!(seen.is_none(), "{case}: a refused put wrote {key}");
    }
    // The good token writes; status needs a token, any token.
    client(&addr, Some(&writer))
        .put("/app/ok", "v")
        .await
        .expect("put");
    assert!(client(&addr, Some(&writer)).status(false).await.is_ok());
    assert_eq!(
        code(client(&addr, None).status(false).await),
        Code::Unauthenticated
    );
    // A txn needs read on what it compares and write on what it writes.
    let txn = pb::TxnRequest {
        compare: vec![pb::Compare {
            key: b"/app/ok".to_vec(),
            target: pb::compare::Target::Version as i32,
            result: pb::compare::Result::Equal as i32,
            number: 1,
            ..Default::default()
        }],
        success: vec![pb::TxnOp {
            op: Some(pb::txn_op::Op::Put(pb::PutRequest {
                key: b"/secret/x".to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            })),
        }],
        ..Default::default()
    };
    assert_eq!(
        code(client(&addr, Some(&writer)).txn(txn).await),
        Code::PermissionDenied
    );
    assert!(client(&addr, Some(&admin))
        .get("/secret/x")
        .await
        .expect("get")
        .is_none());
    // `ls /` shows a reader only the way to what it may read.
    client(&addr, Some(&admin))
        .put("/secret/y", "v")
        .await
        .expect("put");
    let ls = client(&addr, Some(&writer))
        .list(
            pb::ListRequest {
                path: b"/".to_vec(),
                ..Default::default()
            },
            Consistency::Sequential,
        )
        .await
        .expect("ls /");
    assert_eq!(ls.children, vec!["app".to_string()], "{ls:?}");
    node.shutdown().await;
}
