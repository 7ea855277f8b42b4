use super::*;
use biscuit_auth::builder::BlockBuilder;
use proptest::prelude::*;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

const NOW: u64 = 1_800_000_000;

fn ops(s: &str) -> OpSet {
    s.parse().expect("ops")
}

fn grant(prefixes: &[&str], o: &str) -> Grant {
    Grant {
        prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
        ops: ops(o),
        expires: at(NOW + 3600),
    }
}

fn allowed(token: &str, root: &RootKey, op: Op, resource: &str) -> Result<(), Refusal> {
    verify(token, &root.public())?.authorize(op, resource, at(NOW))
}

#[test]
fn a_token_allows_its_operations_under_its_prefixes_and_nothing_else() {
    let root = RootKey::generate();
    let t = mint(&root, &grant(&["/us-east/app/"], "read,watch")).expect("mint");
    assert_eq!(allowed(&t, &root, Op::Read, "/us-east/app/config"), Ok(()));
    assert_eq!(allowed(&t, &root, Op::Watch, "/us-east/app/"), Ok(()));
    let denied = allowed(&t, &root, Op::Write, "/us-east/app/config").expect_err("write");
    assert_eq!(
        denied,
        Refusal::PermissionDenied(
            "the token does not allow write on \"/us-east/app/config\"".into()
        )
    );
    for outside in ["/us-east/", "/us-east/apps", "/eu-west/app/config", "/"] {
        assert!(
            matches!(
                allowed(&t, &root, Op::Read, outside),
                Err(Refusal::PermissionDenied(_))
            ),
            "{outside}"
        );
    }
}

#[test]
fn a_token_reaches_down_to_its_prefixes() {
    let root = RootKey::generate();
    let t = mint(&root, &grant(&["/us-east/app/"], "read")).expect("mint");
    let v = verify(&t, &root.public()).expect("verify");
    for on_the_way in [
        "/",
        "/us-east",
        "/us-east/",
        "/us-east/app/",
        "/us-east/app/x",
    ] {
        assert!(v.reaches(Op::Read, on_the_way, at(NOW)), "{on_the_way}");
    }
    for elsewhere in ["/eu-west/", "/us-east/db/", "/us-east/apps"] {
        assert!(!v.reaches(Op::Read, elsewhere, at(NOW)), "{elsewhere}");
    }
    assert!(!v.reaches(Op::Write, "/", at(NOW)));
}

#[test]
fn expired_foreign_tampered_and_garbage_tokens_are_unauthenticated() {
    let root = RootKey::generate();
    let t = mint(&root, &grant(&["/a/"], "read")).expect("mint");
    let late =
        verify(&t, &root.public())
            .expect("verify")
            .authorize(Op::Read, "/a/x", at(NOW + 3601));
    assert_eq!(
        late,
        Err(Refusal::Unauthenticated("the token has expired".into()))
    );
    let other = RootKey::generate();
    match verify(&t, &other.public()) {
        Err(Refusal::Unauthenticated(m)) => assert!(m.contains("root key"), "{m}"),
        r => panic!("a token of another root: {r:?}"),
    }
    // Flip one character in the middle of the signed bytes.
    let mut chars: Vec<char> = t.chars().collect();
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    let tampered: String = chars.into_iter().collect();
    assert!(matches!(
        verify(&tampered, &root.public()),
        Err(Refusal::Unauthenticated(_))
    ));
    for junk in ["", "   ", "not a token", &"x".repeat(TOKEN_CHARS_MAX + 1)] {
        assert!(
            matches!(
                verify(junk, &root.public()),
                Err(Refusal::Unauthenticated(_))
            ),
            "{junk:.20}"
        );
    }
}

#[test]
fn attenuation_narrows_prefix_operations_and_time() {
    let root = RootKey::generate();
    let t = mint(&root, &grant(&["/us-east/"], "read,write,watch")).expect("mint");
    let narrow = attenuate(
        &t,
        &Narrowing {
            prefixes: Some(vec!["/us-east/app/".into()]),
            ops: Some(ops("read")),
            expires: Some(at(NOW + 60)),
        },
    )
    .expect("attenuate");
    assert_eq!(allowed(&narrow, &root, Op::Read, "/us-east/app/x"), Ok(()));
    assert!(allowed(&narrow, &root, Op::Read, "/us-east/other").is_err());
    assert!(allowed(&narrow, &root, Op::Write, "/us-east/app/x").is_err());
    assert_eq!(
        verify(&narrow, &root.public()).expect("verify").authorize(
            Op::Read,
            "/us-east/app/x",
            at(NOW + 61)
        ),
        Err(Refusal::Unauthenticated("the token has expired".into()))
    );
    // Asking an attenuation for more than the parent has grants nothing more.
    let wider = attenuate(
        &t,
        &Narrowing {
            prefixes: Some(vec!["/".into()]),
            ops: Some(OpSet::all()),
            expires: Some(at(NOW + 1_000_000)),
        },
    )
    .expect("attenuate");
    assert!(allowed(&wider, &root, Op::Read, "/eu-west/x").is_err());
    assert!(allowed(&wider, &root, Op::Admin, "/us-east/x").is_err());
    assert_eq!(allowed(&wider, &root, Op::Write, "/us-east/x"), Ok(()));
    // Each block has its own revocation id; the attenuated token carries its parent's.
    let parent = verify(&t, &root.public()).expect("verify");
    let child = verify(&narrow, &root.public()).expect("verify");
    assert_eq!(parent.revocation_ids().len(), 1);
    assert_eq!(child.revocation_ids().len(), 2);
    assert_eq!(child.revocation_ids()[0], parent.revocation_ids()[0]);
    assert_eq!(
        inspect(&narrow).expect("inspect").revocation_ids,
        child.revocation_ids()
    );
}

#[test]
fn a_block_that_claims_rights_gains_none() {
    let root = RootKey::generate();
    let t = mint(&root, &grant(&["/a/"], "read")).expect("mint");
    let b = UnverifiedBiscuit::from_base64(&t).expect("parse");
    let hostile = BlockBuilder::new()
        .code("right(\"admin\", \"/\"); right(\"write\", \"/\");")
        .expect("block");
    let forged = b
        .append(hostile)
        .and_then(|b| b.to_base64())
        .expect("append");
    assert!(allowed(&forged, &root, Op::Write, "/a/x").is_err());
    assert!(allowed(&forged, &root, Op::Admin, "/").is_err());
    assert_eq!(allowed(&forged, &root, Op::Read, "/a/x"), Ok(()));
}

#[test]
fn strings_are_parameters_not_datalog() {
    let root = RootKey::generate();
    let sneaky = "/a/\"); right(\"admin\", \"/";
    let t = mint(&root, &grant(&[sneaky], "read")).expect("mint");
    assert!(allowed(&t, &root, Op::Admin, "/").is_err());
    assert_eq!(allowed(&t, &root, Op::Read, &format!("{sneaky}x")), Ok(()));
}

#[test]
fn bad_requests_to_mint_and_attenuate_say_what_is_wrong() {
    let root = RootKey::generate();
    let e = mint(&root, &grant(&["us-east/"], "read")).expect_err("relative prefix");
    assert!(e.0.contains("must start with '/'"), "{e}");
    let e = mint(&root, &grant(&[], "read")).expect_err("no prefix");
    assert!(e.0.contains("at least one prefix"), "{e}");
    let t = mint(&root, &grant(&["/a/"], "read")).expect("mint");
    let e = attenuate(&t, &Narrowing::default()).expect_err("no narrowing");
    assert!(e.0.contains("must narrow"), "{e}");
    let e = attenuate("garbage", &Narrowing::default()).expect_err("garbage");
    assert!(e.0.contains("not a Meridian token"), "{e}");
    assert!("read,fly".parse::<OpSet>().unwrap_err().contains("fly"));
    assert!("".parse::<OpSet>().is_err());
}

#[test]
fn keys_round_trip_through_their_text() {
    let root = RootKey::generate();
    let again = RootKey::parse(&root.to_text()).expect("parse");
    assert_eq!(again.public(), root.public());
    let public = RootPublicKey::parse(&root.public().to_text()).expect("parse public");
    assert_eq!(public, root.public());
    assert!(RootKey::parse("ed25519-private/zz").is_err());
    assert!(RootKey::parse(&root.public().to_text()).is_err());
    assert!(RootPublicKey::parse("ed25519/00").is_err());
}

const PREFIXES: [&str; 6] = ["/", "/a/", "/a/b/", "/a/c", "/b/", "/b/x/y"];
const RESOURCES: [&str; 7] = ["/", "/a/", "/a/b/k", "/a/c", "/a/cd", "/b/x/y/z", "/c"];

fn prefix_set() -> impl Strategy<Value = Vec<String>> {
    proptest::sample::subsequence(PREFIXES.to_vec(), 1..=3)
        .prop_map(|v| v.into_iter().map(String::from).collect())
}

fn op_set() -> impl Strategy<Value = OpSet> {
    proptest::sample::subsequence(Op::ALL.to_vec(), 1..=3).prop_map(|v| v.into_iter().collect())
}

fn narrowing() -> impl Strategy<Value = Narrowing> {
    (
        proptest::option::of(prefix_set()),
        proptest::option::of(op_set()),
        proptest::option::of(0u64..7200),
    )
        .prop_filter("narrows something", |(p, o, e)| {
            p.is_some() || o.is_some() || e.is_some()
        })
        .prop_map(|(prefixes, ops, e)| Narrowing {
            prefixes,
            ops,
            expires: e.map(|s| at(NOW - 1800 + s)),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// No chain of attenuations lets a token do anything its parent could not: at every step,
    /// every request (operation × resource × time) the child allows, the parent allows. Some
    /// steps are hostile: a block, appended with biscuit itself, that claims `right` facts.
    #[test]
    fn no_attenuation_widens_a_token(
        prefixes in prefix_set(),
        granted in op_set(),
        steps in proptest::collection::vec(
            (narrowing(), proptest::option::of((proptest::sample::select(Op::ALL.to_vec()),
                proptest::sample::select(PREFIXES.to_vec())))),
            1..4,
        ),
    ) {
        let root = RootKey::generate();
        let mut parent = mint(&root, &Grant { prefixes, ops: granted, expires: at(NOW + 600) })
            .expect("mint");
        let mut claimed = false;
        for (n, claim) in &steps {
            let mut child = attenuate(&parent, n).expect("attenuate");
            if let Some((op, prefix)) = claim {
                let block = BlockBuilder::new()
                    .code(format!("right(\"{}\", \"{prefix}\");", op.name()))
                    .expect("block");
                child = UnverifiedBiscuit::from_base64(&child)
                    .and_then(|b| b.append(block))
                    .and_then(|b| b.to_base64())
                    .expect("append a claim");
            }
            let (p, c) = (
                verify(&parent, &root.public()).expect("parent verifies"),
                verify(&child, &root.public()).expect("child verifies"),
            );
            claimed |= claim.is_some();
            prop_assert_eq!(c.is_plain(), !claimed, "a token with a claiming block is not plain");
            for op in Op::ALL {
                for r in RESOURCES {
                    for t in [NOW - 900, NOW, NOW + 599, NOW + 601] {
                        prop_assert_eq!(
                            c.authorize(op, r, at(t)),
                            c.authorize_datalog(op, r, at(t)),
                            "plain and Datalog differ on {} {} at {}", op, r, t
                        );
                        if c.authorize(op, r, at(t)).is_ok() {
                            prop_assert!(
                                p.authorize(op, r, at(t)).is_ok(),
                                "the child allows {op} on {r} at {t}; its parent does not"
                            );
                        }
                    }
                }
            }
            parent = child;
        }
    }
}

#[test]
fn tokens_meridian_writes_are_read_plain_and_others_are_not() {
    let root = RootKey::generate();
    let t = mint(&root, &grant(&["/a/", "/b\", \"/c/"], "read,write")).expect("mint");
    let narrowed = attenuate(
        &t,
        &Narrowing {
            prefixes: Some(vec!["/a/x/".into(), "/b\", \"/c/".into()]),
            ops: Some(ops("read")),
            expires: Some(at(NOW + 60)),
        },
    )
    .expect("attenuate");
    for token in [&t, &narrowed] {
        assert!(verify(token, &root.public()).expect("verify").is_plain());
    }
    let v = verify(&narrowed, &root.public()).expect("verify");
    // One prefix string with a quote and a comma in it, not two prefixes.
    for (op, r, t) in [
        (Op::Read, "/a/x/k", NOW),
        (Op::Read, "/b\", \"/c/k", NOW),
        (Op::Read, "/b", NOW),
        (Op::Read, "/c/k", NOW),
        (Op::Write, "/a/x/k", NOW),
        (Op::Read, "/a/x/k", NOW + 61),
    ] {
        assert_eq!(
            v.authorize(op, r, at(t)),
            v.authorize_datalog(op, r, at(t)),
            "{op} {r} at {t}"
        );
    }
    assert!(v.authorize(Op::Read, "/b\", \"/c/k", at(NOW)).is_ok());
    assert!(v.authorize(Op::Read, "/c/k", at(NOW)).is_err());

    // Blocks written with biscuit's own tools, close to Meridian's forms but not them: each is
    // left to Datalog, which still answers.
    for (source, allows_read_a_x) in [
        (
            "check if resource($r), {\"/a/\"}.any($p -> $r.ends_with($p));",
            false,
        ),
        (
            "check all resource($r), {\"/a/\"}.any($p -> $r.starts_with($p));",
            true,
        ),
        ("check if resource($r), $r.starts_with(\"/a/\");", true),
        (
            "check if operation($op), {\"read\"}.contains($op), resource(\"/a/x\");",
            true,
        ),
        (
            "check if time($t), $t <= 2001-01-01T00:00:00Z trusting previous;",
            false,
        ),
        (
            "check if resource($r), {\"/a/\"}.any($p -> $r.starts_with($p)), 1 == 1;",
            true,
        ),
        ("fact(1);", true),
        ("check if operation($op), [\"read\"].contains($op);", true),
    ] {
        let block = BlockBuilder::new().code(source).expect(source);
        let other = UnverifiedBiscuit::from_base64(&t)
            .and_then(|b| b.append(block))
            .and_then(|b| b.to_base64())
            .expect("append");
        let v = verify(&other, &root.public()).expect("verify");
        assert!(!v.is_plain(), "{source} read as plain");
        assert_eq!(
            v.authorize(Op::Read, "/a/x", at(NOW)).is_ok(),
            allows_read_a_x,
            "{source}"
        );
    }
}

const TRICKY: [&str; 5] = ["/", "/a\", \"/b/", "/a", "/b/", "/a\\"];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Plain rights answer exactly as the token's Datalog does, for chains of attenuations whose
    /// prefixes hold quotes, commas and backslashes.
    #[test]
    fn plain_rights_answer_as_datalog_does(
        granted in proptest::sample::subsequence(TRICKY.to_vec(), 1..=3),
        ops_granted in op_set(),
        steps in proptest::collection::vec(
            (proptest::option::of(proptest::sample::subsequence(TRICKY.to_vec(), 1..=3)),
             proptest::option::of(op_set()),
             proptest::option::of(0u64..7200)),
            0..3,
        ),
    ) {
        let root = RootKey::generate();
        let mut token = mint(&root, &Grant {
            prefixes: granted.into_iter().map(String::from).collect(),
            ops: ops_granted,
            expires: at(NOW + 600),
        }).expect("mint");
        for (p, o, e) in steps {
            if p.is_none() && o.is_none() && e.is_none() {
                continue;
            }
            token = attenuate(&token, &Narrowing {
                prefixes: p.map(|v| v.into_iter().map(String::from).collect()),
                ops: o,
                expires: e.map(|s| at(NOW - 1800 + s)),
            }).expect("attenuate");
        }
        let v = verify(&token, &root.public()).expect("verify");
        prop_assert!(v.is_plain());
        for op in Op::ALL {
            for r in ["/", "/a", "/a\", \"/b/x", "/a/", "/b/", "/b/x", "/a\\x", "/c"] {
                for t in [NOW - 900, NOW, NOW + 599, NOW + 601] {
                    prop_assert_eq!(
                        v.authorize(op, r, at(t)),
                        v.authorize_datalog(op, r, at(t)),
                        "{} {} at {}", op, r, t
                    );
                }
            }
        }
    }
}
