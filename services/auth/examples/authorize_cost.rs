//! What one token costs a node: verifying its signatures (once per token, then cached) and
//! authorizing one request (every request). `cargo run --release -p meridian-auth --example
//! authorize_cost`; recorded in docs/benchmarks.md.

use meridian_auth::{attenuate, mint, verify, Grant, Narrowing, Op, RootKey};
use std::time::{Duration, Instant, SystemTime};

fn per_op(n: u32, mut f: impl FnMut()) -> Duration {
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed() / n
}

fn main() {
    let root = RootKey::generate();
    let token = mint(
        &root,
        &Grant {
            prefixes: vec!["/us-east/app/".into()],
            ops: "read,watch".parse().expect("ops"),
            expires: SystemTime::now() + Duration::from_secs(3600),
        },
    )
    .expect("mint");
    let narrowed = attenuate(
        &token,
        &Narrowing {
            prefixes: Some(vec!["/us-east/app/web/".into()]),
            ops: Some("read".parse().expect("ops")),
            expires: None,
        },
    )
    .expect("attenuate");
    let public = root.public();
    for (name, t) in [("1 block", &token), ("2 blocks", &narrowed)] {
        let v = verify(t, &public).expect("verify");
        let verify_cost = per_op(2_000, || {
            verify(t, &public).expect("verify");
        });
        let now = SystemTime::now();
        let authorize_cost = per_op(20_000, || {
            v.authorize(Op::Read, "/us-east/app/web/x", now)
                .expect("allowed");
        });
        println!(
            "token of {name} ({} chars): verify {:.1} us, authorize one request {:.1} us",
            t.len(),
            verify_cost.as_secs_f64() * 1e6,
            authorize_cost.as_secs_f64() * 1e6
        );
    }
}
