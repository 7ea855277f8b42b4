//! `meridian token …` as a user runs it: keygen, mint, attenuate, inspect, verify, and the
//! mistakes they refuse.

mod common;

use std::process::{Command, Output};

fn meridian(args: &[&str]) -> Output {
    Command::new(common::BIN)
        .args(args)
        .env_remove("MERIDIAN_ROOT_KEY")
        .env_remove("MERIDIAN_ROOT_PUBLIC_KEY")
        .output()
        .expect("run meridian")
}

fn ok(args: &[&str]) -> String {
    let out = meridian(args);
    assert!(
        out.status.success(),
        "meridian {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn fails(args: &[&str]) -> String {
    let out = meridian(args);
    assert!(!out.status.success(), "meridian {args:?} should fail");
    String::from_utf8(out.stderr).expect("utf-8")
}

#[test]
fn keygen_mint_attenuate_inspect_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("root.key");
    let key = key.to_str().expect("path");
    let out = ok(&["token", "keygen", "--out", key]);
    let public = out
        .lines()
        .find_map(|l| l.strip_prefix("public key: "))
        .expect("the public key is printed")
        .to_string();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(key)
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the root key is its owner's only");
    assert!(fails(&["token", "keygen", "--out", key]).contains("must not exist"));

    let token = ok(&[
        "token",
        "mint",
        "--root-key",
        key,
        "--prefix",
        "/us-east/app/",
        "--ops",
        "read,watch",
        "--ttl",
        "1h",
    ])
    .trim()
    .to_string();
    let narrow = ok(&[
        "token",
        "attenuate",
        &token,
        "--prefix",
        "/us-east/app/web/",
        "--ops",
        "read",
    ])
    .trim()
    .to_string();
    let inspected = ok(&["--output", "json", "token", "inspect", &narrow]);
    let v: serde_json::Value = serde_json::from_str(&inspected).expect("json");
    assert_eq!(v["blocks"].as_array().map(Vec::len), Some(2), "{v}");
    assert_eq!(v["revocation_ids"].as_array().map(Vec::len), Some(2), "{v}");
    assert!(v["blocks"][0]
        .as_str()
        .unwrap_or("")
        .contains("right(\"watch\", \"/us-east/app/\")"));

    let verify = |t: &str, op: &str, k: &str| {
        meridian(&[
            "token",
            "verify",
            t,
            "--root-public-key",
            &public,
            "--op",
            op,
            "--key",
            k,
        ])
    };
    assert!(verify(&token, "watch", "/us-east/app/x").status.success());
    assert!(verify(&narrow, "read", "/us-east/app/web/x")
        .status
        .success());
    let denied = verify(&narrow, "watch", "/us-east/app/web/x");
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("permission denied"));
    let outside = verify(&narrow, "read", "/us-east/app/db/x");
    assert!(!outside.status.success());

    // Another cluster's key does not verify it.
    let other = dir.path().join("other.key");
    let other_out = ok(&["token", "keygen", "--out", other.to_str().expect("path")]);
    let other_public = other_out
        .lines()
        .find_map(|l| l.strip_prefix("public key: "))
        .expect("public key");
    let foreign = meridian(&["token", "verify", &token, "--root-public-key", other_public]);
    assert!(!foreign.status.success());
    assert!(String::from_utf8_lossy(&foreign.stderr).contains("unauthenticated"));
}

/// `meridian token mint --root-key KEY --prefix PREFIX --ops OPS` and `extra`, expected to fail:
/// its stderr.
fn mint_fails(key: &str, prefix: &str, ops: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "token",
        "mint",
        "--root-key",
        key,
        "--prefix",
        prefix,
        "--ops",
        ops,
    ];
    args.extend_from_slice(extra);
    fails(&args)
}

#[test]
fn token_mistakes_are_explained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("root.key");
    let key = key.to_str().expect("path");
    ok(&["token", "keygen", "--out", key]);
    let e = mint_fails(key, "/a/", "read,fly", &[]);
    assert!(e.contains("unknown operation \"fly\""), "{e}");
    let e = mint_fails(key, "a/", "read", &[]);
    assert!(e.contains("must start with '/'"), "{e}");
    let e = mint_fails(key, "/a/", "read", &["--ttl", "1w"]);
    assert!(e.contains("unit"), "{e}");
    let missing = dir.path().join("missing.key");
    let e = mint_fails(missing.to_str().expect("path"), "/a/", "read", &[]);
    assert!(e.contains("reading the root key"), "{e}");
    let e = fails(&["token", "inspect", "garbage"]);
    assert!(e.contains("not a Meridian token"), "{e}");
    let e = fails(&["token", "attenuate", "garbage", "--ops", "read"]);
    assert!(e.contains("not a Meridian token"), "{e}");
}
