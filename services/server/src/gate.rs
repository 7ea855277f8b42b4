//! The token check in front of every client RPC (docs/security.md): a request carries its
//! capability token in `authorization: Bearer TOKEN`; the [`Gate`] verifies the token once
//! (cached), then authorizes each (operation, key or prefix) the request touches. With no root
//! public key configured the gate is open (security off).
//!
//! A request a router proxies to another region (residency) carries the caller's token on, so
//! the next router checks the same authority; nothing a router sends on behalf of a client can
//! do more than the client's token allows.

use crate::revocation::Revocations;
use meridian_auth::{Op, Refusal, RootPublicKey, Verified};
use meridian_types::Command;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tonic::metadata::{Ascii, MetadataMap, MetadataValue};
use tonic::Status;

pub use meridian_proto::{AUTHORIZATION, TOKEN};

/// Most verified tokens kept; past it the cache starts over (each token is verified again on
/// its next use).
pub const VERIFIED_MAX: usize = 4096;

/// Most remembered decisions (token, operation, resource → allowed); past it the cache starts
/// over.
pub const DECISIONS_MAX: usize = 65_536;

/// How long an allowed (token, operation, resource) is taken as allowed again without asking
/// the token's Datalog (17-26 µs a request), for a token that is not of Meridian's own shape
/// (those are read into plain rights and need no memory): a token that expires meanwhile is
/// honoured at most this much longer. Refusals are never remembered.
pub const DECISION_TTL: Duration = Duration::from_secs(1);

/// A verified token as the gate keeps it: with a number of its own, so remembered decisions
/// name it without holding its text.
pub struct Held {
    id: u64,
    verified: Verified,
}

impl std::ops::Deref for Held {
    type Target = Verified;

    fn deref(&self) -> &Verified {
        &self.verified
    }
}

pub struct Gate {
    root: Option<RootPublicKey>,
    /// The cluster's revocation list as this router follows it (checked on every request, the
    /// cached tokens included).
    revocations: Arc<Revocations>,
    verified: Mutex<HashMap<String, Arc<Held>>>,
    /// (token id, operation, resource) → when it was last found allowed (monotonic).
    decisions: Mutex<HashMap<(u64, Op, String), Instant>>,
    next_id: AtomicU64,
    refused: AtomicU64,
    /// Refusals counted elsewhere that the status reports with the gate's (mTLS handshakes,
    /// peer admission).
    also: Mutex<Vec<RefusalCount>>,
}

/// A count of refusals kept by another part of the node.
pub type RefusalCount = Box<dyn Fn() -> u64 + Send + Sync>;

impl Gate {
    /// No checks: security off.
    pub fn open() -> Arc<Self> {
        Self::with_root(None, Arc::default())
    }

    fn with_root(root: Option<RootPublicKey>, revocations: Arc<Revocations>) -> Arc<Self> {
        Arc::new(Self {
            root,
            revocations,
            verified: Mutex::default(),
            decisions: Mutex::default(),
            next_id: AtomicU64::new(1),
            refused: AtomicU64::new(0),
            also: Mutex::default(),
        })
    }

    /// Every request needs a token signed (through its chain) by `root`, none of whose blocks
    /// is in `revocations`.
    pub fn new(root: RootPublicKey, revocations: Arc<Revocations>) -> Arc<Self> {
        Self::with_root(Some(root), revocations)
    }

    /// Requests refused so far: by the token check, and by every count added with
    /// [`Gate::count_also`].
    pub fn refused(&self) -> u64 {
        let also: u64 = self
            .also
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|f| f())
            .sum();
        self.refused.load(Ordering::Relaxed) + also
    }

    /// Reports `count`'s refusals with the gate's.
    pub fn count_also(&self, count: RefusalCount) {
        self.also
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(count);
    }

    fn refuse(&self, refusal: Refusal, what: &str) -> Status {
        self.refused.fetch_add(1, Ordering::Relaxed);
        tracing::info!(request = what, "refused: {refusal}");
        match refusal {
            Refusal::Unauthenticated(m) => Status::unauthenticated(m),
            Refusal::PermissionDenied(m) => Status::permission_denied(m),
            // Typed, so a client knows nothing was done and may simply ask again.
            Refusal::Busy(m) => crate::error::Error::Unavailable(m).into(),
        }
    }

    /// The request's verified token (None when the gate is open).
    pub fn token(&self, meta: &MetadataMap, what: &str) -> Result<Option<Arc<Held>>, Status> {
        let Some(root) = &self.root else {
            return Ok(None);
        };
        let text = bearer(meta).map_err(|r| self.refuse(r, what))?;
        let cached = self
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(text)
            .cloned();
        let held = match cached {
            Some(v) => v,
            None => {
                let verified =
                    meridian_auth::verify(text, root).map_err(|r| self.refuse(r, what))?;
                let v = Arc::new(Held {
                    id: self.next_id.fetch_add(1, Ordering::Relaxed),
                    verified,
                });
                let mut cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
                if cache.len() >= VERIFIED_MAX {
                    cache.clear();
                }
                cache.insert(text.to_string(), v.clone());
                v
            }
        };
        if let Some(id) = self.revocations.revoked(held.revocation_ids()) {
            let short: String = id.chars().take(16).collect();
            return Err(self.refuse(
                Refusal::Unauthenticated(format!("the token was revoked (block id {short}…)")),
                what,
            ));
        }
        Ok(Some(held))
    }

    /// Refuses the request unless its token allows every `(op, resource)` of `needs`.
    pub fn check(
        &self,
        meta: &MetadataMap,
        what: &str,
        needs: &[(Op, &str)],
    ) -> Result<(), Status> {
        let Some(token) = self.token(meta, what)? else {
            return Ok(());
        };
        let now = SystemTime::now();
        for (op, resource) in needs {
            self.authorize(&token, *op, resource, now)
                .map_err(|r| self.refuse(r, what))?;
        }
        Ok(())
    }

    /// `token.authorize`: directly for a token of Meridian's own shape (plain rights, well under
    /// a microsecond), otherwise (a Datalog run) answered from the remembered decisions when
    /// one is fresh.
    fn authorize(
        &self,
        token: &Held,
        op: Op,
        resource: &str,
        now: SystemTime,
    ) -> Result<(), Refusal> {
        if token.is_plain() {
            return token.authorize(op, resource, now);
        }
        let key = (token.id, op, resource.to_string());
        let fresh = self
            .decisions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .is_some_and(|at| at.elapsed() < DECISION_TTL);
        if fresh {
            return Ok(());
        }
        token.authorize(op, resource, now)?;
        let mut d = self.decisions.lock().unwrap_or_else(|p| p.into_inner());
        if d.len() >= DECISIONS_MAX {
            d.clear();
        }
        d.insert(key, Instant::now());
        Ok(())
    }

    /// The refusal of `op` on `resource` for a request whose token was already verified.
    pub fn refuse_op(&self, op: Op, resource: &str, what: &str) -> Status {
        self.deny(
            format!("the token does not allow {} on {resource:?}", op.name()),
            what,
        )
    }

    /// A `PermissionDenied` refusal saying `message`, counted and logged.
    pub fn deny(&self, message: String, what: &str) -> Status {
        self.refuse(Refusal::PermissionDenied(message), what)
    }

    /// Whether `token` allows `op` on `resource` (true when the gate is open, `token` None);
    /// for filtering what a listing shows, so nothing is counted or logged.
    pub fn allows(token: Option<&Held>, op: Op, resource: &str) -> bool {
        token.is_none_or(|t| t.authorize(op, resource, SystemTime::now()).is_ok())
    }
}

/// The request's token: the bare token of `meridian-token` (what the SDK sends) or of
/// `authorization: Bearer TOKEN` (HTTP's convention); both may be sent only if they agree.
fn bearer(meta: &MetadataMap) -> Result<&str, Refusal> {
    let token = meta
        .get(TOKEN)
        .map(|v| {
            v.to_str()
                .map(str::trim)
                .map_err(|_| Refusal::Unauthenticated(format!("the {TOKEN} header is not text")))
        })
        .transpose()?;
    let authorization = meta
        .get(AUTHORIZATION)
        .map(|v| {
            let text = v.to_str().map_err(|_| {
                Refusal::Unauthenticated("the authorization header is not text".into())
            })?;
            text.strip_prefix("Bearer ").map(str::trim).ok_or_else(|| {
                Refusal::Unauthenticated("the authorization header is not `Bearer TOKEN`".into())
            })
        })
        .transpose()?;
    match (token, authorization) {
        (Some(t), Some(a)) if t != a => Err(Refusal::Unauthenticated(format!(
            "two different tokens, in {TOKEN} and in authorization: send one"
        ))),
        (Some(t), _) | (None, Some(t)) => Ok(t),
        (None, None) => Err(Refusal::Unauthenticated(format!(
            "no token: send `authorization: Bearer TOKEN` or `{TOKEN}: TOKEN` (the CLI's \
             --token, MERIDIAN_TOKEN)"
        ))),
    }
}

/// The caller's token as a `meridian-token` value, to carry on with a request proxied for it
/// (None without a readable one: the proxied request is then refused as the caller's was).
pub fn carried(meta: &MetadataMap) -> Option<MetadataValue<Ascii>> {
    if let Some(v) = meta.get(TOKEN) {
        return Some(v.clone());
    }
    bearer(meta).ok().and_then(|t| t.parse().ok())
}

/// What a client's command needs of its token: `write` on every key it puts or deletes (a
/// prefix delete: on the prefix), `read` on every key a txn compares or gets.
pub fn needs(cmd: &Command) -> Vec<(Op, &str)> {
    match cmd {
        // Never built from a client's request; if one were, only an administrator may.
        Command::Batch(_)
        | Command::Lease(_)
        | Command::Placement(_)
        | Command::Move(_)
        | Command::Stamped { .. } => vec![(Op::Admin, "/")],
        _ => cmd
            .touches()
            .into_iter()
            .map(|t| (if t.write { Op::Write } else { Op::Read }, t.key))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_auth::{Grant, RootKey};
    use meridian_types::{Compare, CompareResult, CompareTarget, DeleteOp, Op as TxnOp, PutOp};
    use std::time::Duration;

    fn meta(token: Option<&str>) -> MetadataMap {
        let mut m = MetadataMap::new();
        if let Some(t) = token {
            m.insert(AUTHORIZATION, format!("Bearer {t}").parse().expect("ascii"));
        }
        m
    }

    #[test]
    fn the_gate_verifies_once_and_refuses_with_the_right_code() {
        let root = RootKey::generate();
        let gate = Gate::new(root.public(), Arc::default());
        let token = meridian_auth::mint(
            &root,
            &Grant {
                prefixes: vec!["/app/".into()],
                ops: "read".parse().expect("ops"),
                expires: SystemTime::now() + Duration::from_secs(60),
            },
        )
        .expect("mint");
        let ok = meta(Some(&token));
        assert!(gate.check(&ok, "get", &[(Op::Read, "/app/x")]).is_ok());
        assert!(gate.check(&ok, "get", &[(Op::Read, "/app/y")]).is_ok());
        assert_eq!(gate.verified.lock().expect("lock").len(), 1);
        assert_eq!(
            gate.decisions.lock().expect("lock").len(),
            0,
            "a plain token needs no remembered decisions"
        );
        let e = gate
            .check(&ok, "put", &[(Op::Write, "/app/x")])
            .expect_err("no write right");
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        for bad in [meta(None), meta(Some("garbage"))] {
            let e = gate
                .check(&bad, "get", &[(Op::Read, "/app/x")])
                .expect_err("refused");
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
        }
        let mut basic = MetadataMap::new();
        basic.insert(AUTHORIZATION, "Basic abc".parse().expect("ascii"));
        let e = gate.check(&basic, "get", &[]).expect_err("not bearer");
        assert!(e.message().contains("Bearer"), "{e:?}");
        let mut both = meta(Some(&token));
        both.insert(TOKEN, token.parse().expect("ascii"));
        assert!(gate.check(&both, "get", &[(Op::Read, "/app/x")]).is_ok());
        let mut sdk = MetadataMap::new();
        sdk.insert(TOKEN, token.parse().expect("ascii"));
        assert!(gate.check(&sdk, "get", &[(Op::Read, "/app/x")]).is_ok());
        assert_eq!(carried(&sdk), carried(&ok), "carried on as the bare token");
        assert_eq!(
            carried(&ok).expect("carried").to_str().ok(),
            Some(token.as_str())
        );
        both.insert(TOKEN, "other".parse().expect("ascii"));
        let e = gate.check(&both, "get", &[]).expect_err("two tokens");
        assert!(e.message().contains("two different tokens"), "{e:?}");
        assert_eq!(gate.refused(), 5);

        // A token with a block of its own Datalog: each decision is a Datalog run, remembered.
        let custom = biscuit_auth::UnverifiedBiscuit::from_base64(&token)
            .and_then(|b| {
                b.append(
                    biscuit_auth::builder::BlockBuilder::new()
                        .code("check if resource($r), $r.starts_with(\"/app/\");")
                        .expect("block"),
                )
            })
            .and_then(|b| b.to_base64())
            .expect("append");
        let custom = meta(Some(&custom));
        assert!(gate.check(&custom, "get", &[(Op::Read, "/app/x")]).is_ok());
        assert!(gate.check(&custom, "get", &[(Op::Read, "/app/y")]).is_ok());
        assert!(gate
            .check(&custom, "put", &[(Op::Write, "/app/x")])
            .is_err());
        assert_eq!(
            gate.decisions.lock().expect("lock").len(),
            2,
            "allowed decisions kept, refusals not"
        );
        assert!(Gate::open()
            .check(&meta(None), "get", &[(Op::Admin, "/")])
            .is_ok());
    }

    #[test]
    fn a_txn_needs_read_on_what_it_reads_and_write_on_what_it_writes() {
        let cmd = Command::Txn {
            compares: vec![Compare {
                key: "/a/c".into(),
                target: CompareTarget::Version,
                result: CompareResult::Equal,
                value: Vec::new(),
                number: 1,
                exists: true,
            }],
            success: vec![TxnOp::Put(PutOp::new("/a/p", "v"))],
            failure: vec![
                TxnOp::Get { key: "/a/g".into() },
                TxnOp::Delete(DeleteOp {
                    key: "/a/d/".into(),
                    prefix: true,
                    expected_version: None,
                    expected_mod_revision: None,
                    prev_kv: false,
                }),
            ],
        };
        assert_eq!(
            needs(&cmd),
            vec![
                (Op::Read, "/a/c"),
                (Op::Write, "/a/p"),
                (Op::Read, "/a/g"),
                (Op::Write, "/a/d/"),
            ]
        );
    }
}
