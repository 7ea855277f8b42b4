//! Capability tokens: what a request may do, signed by the cluster's root key, narrowed offline
//! by whoever holds one (docs/security.md).
//!
//! A token is a [biscuit](https://www.biscuitsec.org) (Ed25519). Its first block, signed with
//! the root key, grants `right(OP, PREFIX)` facts and an expiry; every block appended later
//! (by [`attenuate`], without the root key) can only add checks — on the operation, the
//! resource's prefix and the time — so a block can narrow what its token allows and never widen
//! it: the authorizer's policy reads rights from the first block only, and every block's checks
//! must hold.
//!
//! One request is authorized by [`Verified::authorize`] with the facts `operation(OP)`,
//! `resource(KEY)` and `time(NOW)` and the policy
//! `allow if operation($op), resource($r), right($op, $p), $r.starts_with($p)`.
//!
//! Nothing here does IO or reads a clock: callers pass the time and the key material.
//! User strings (prefixes, operations) reach Datalog only as parameters, never as source text.

mod key;
mod op;
mod plain;

pub use key::{RootKey, RootPublicKey};
pub use op::{Op, OpSet};

use biscuit_auth::builder::{AuthorizerBuilder, BlockBuilder, Term};
use biscuit_auth::datalog::RunLimits;
use biscuit_auth::{AuthorizerLimits, Biscuit, UnverifiedBiscuit};
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest token text accepted (a token grows by a block per attenuation; this is hundreds).
pub const TOKEN_CHARS_MAX: usize = 16 * 1024;
/// Most prefixes one token (or one attenuation) names.
pub const PREFIXES_MAX: usize = 64;
/// Longest prefix a token names (Meridian's keys are at most this long).
pub const PREFIX_BYTES_MAX: usize = 4096;

/// Why a token was refused. `Unauthenticated`: the token itself is missing, malformed,
/// expired, revoked or not signed by this cluster's root. `PermissionDenied`: a good token that
/// does not allow this request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The token's checks ran out of time on a busy node: the token may well be good; ask
    /// again (a hostile token hits the fact and iteration limits, refused as `PermissionDenied`).
    #[error("unavailable: {0}")]
    Busy(String),
}

/// A mistake in what was asked of [`mint`] or [`attenuate`] (not a refusal of a request).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TokenError(pub String);

fn token_err(what: &str, e: impl std::fmt::Display) -> TokenError {
    TokenError(format!("{what}: {e}"))
}

/// What a new token grants: every operation of `ops` under every prefix of `prefixes`, until
/// `expires`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub prefixes: Vec<String>,
    pub ops: OpSet,
    pub expires: SystemTime,
}

/// What an attenuation keeps: only requests under one of `prefixes` (when given), only
/// `ops` (when given), only until `expires` (when given). Each given part narrows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Narrowing {
    pub prefixes: Option<Vec<String>>,
    pub ops: Option<OpSet>,
    pub expires: Option<SystemTime>,
}

fn check_prefixes(prefixes: &[String]) -> Result<(), TokenError> {
    if prefixes.is_empty() {
        return Err(TokenError("name at least one prefix".into()));
    }
    if prefixes.len() > PREFIXES_MAX {
        return Err(TokenError(format!(
            "{} prefixes: at most {PREFIXES_MAX}",
            prefixes.len()
        )));
    }
    for p in prefixes {
        if !p.starts_with('/') {
            return Err(TokenError(format!(
                "prefix {p:?} must start with '/' (e.g. /us-east/app/)"
            )));
        }
        if p.len() > PREFIX_BYTES_MAX {
            return Err(TokenError(format!(
                "a prefix of {} bytes: at most {PREFIX_BYTES_MAX}",
                p.len()
            )));
        }
    }
    Ok(())
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

fn params(pairs: &[(&str, Term)]) -> HashMap<String, Term> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// The expiry check, in the first block and in an attenuation that shortens the time; a failed
/// check that starts like it is an expired token (see [`Verified::authorize`]).
const EXPIRY_CHECK: &str = "check if time($t), $t <= {expires};";

/// `block` with Datalog `source` added, its `{name}` parameters bound from `params`.
fn with_code(
    block: BlockBuilder,
    source: &str,
    pairs: &[(&str, Term)],
) -> Result<BlockBuilder, TokenError> {
    block
        .code_with_params(source, params(pairs), HashMap::new())
        .map_err(|e| token_err("building the block", e))
}

/// `block` with the check that it ends at `expires`.
fn with_expiry(block: BlockBuilder, expires: SystemTime) -> Result<BlockBuilder, TokenError> {
    with_code(
        block,
        EXPIRY_CHECK,
        &[("expires", Term::Date(unix_secs(expires)))],
    )
}

/// A new token signed by `root`, granting `grant`.
pub fn mint(root: &RootKey, grant: &Grant) -> Result<String, TokenError> {
    check_prefixes(&grant.prefixes)?;
    if grant.ops.is_empty() {
        return Err(TokenError("name at least one operation".into()));
    }
    let mut authority = BlockBuilder::new();
    for prefix in &grant.prefixes {
        for op in grant.ops.iter() {
            authority = with_code(
                authority,
                "right({op}, {prefix});",
                &[
                    ("op", Term::Str(op.name().into())),
                    ("prefix", Term::Str(prefix.clone())),
                ],
            )?;
        }
    }
    authority = with_expiry(authority, grant.expires)?;
    Biscuit::builder()
        .merge(authority)
        .build(root.pair())
        .and_then(|b| b.to_base64())
        .map_err(|e| token_err("signing the token", e))
}

/// `token` with one more block that narrows it as `n` says (no key needed: anyone holding a
/// token can narrow it). The signatures are not verified here; a node verifies them.
pub fn attenuate(token: &str, n: &Narrowing) -> Result<String, TokenError> {
    let parent = unverified(token)?;
    if n.prefixes.is_none() && n.ops.is_none() && n.expires.is_none() {
        return Err(TokenError(
            "an attenuation must narrow something: --prefix, --ops or --ttl".into(),
        ));
    }
    let mut block = BlockBuilder::new();
    if let Some(prefixes) = &n.prefixes {
        check_prefixes(prefixes)?;
        let set = prefixes.iter().cloned().map(Term::Str).collect();
        block = with_code(
            block,
            "check if resource($r), {prefixes}.any($p -> $r.starts_with($p));",
            &[("prefixes", Term::Set(set))],
        )?;
    }
    if let Some(ops) = &n.ops {
        if ops.is_empty() {
            return Err(TokenError("name at least one operation".into()));
        }
        let set = ops.iter().map(|o| Term::Str(o.name().into())).collect();
        block = with_code(
            block,
            "check if operation($op), {ops}.contains($op);",
            &[("ops", Term::Set(set))],
        )?;
    }
    if let Some(expires) = n.expires {
        block = with_expiry(block, expires)?;
    }
    parent
        .append(block)
        .and_then(|b| b.to_base64())
        .map_err(|e| token_err("appending the block", e))
}

fn unverified(token: &str) -> Result<UnverifiedBiscuit, TokenError> {
    let token = token.trim();
    if token.len() > TOKEN_CHARS_MAX {
        return Err(TokenError(format!(
            "a token of {} characters: at most {TOKEN_CHARS_MAX}",
            token.len()
        )));
    }
    UnverifiedBiscuit::from_base64(token).map_err(|e| token_err("not a Meridian token", e))
}

/// A token's blocks in Datalog and each block's revocation id (hex), from the first block on —
/// without verifying any signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inspection {
    pub blocks: Vec<String>,
    pub revocation_ids: Vec<String>,
}

pub fn inspect(token: &str) -> Result<Inspection, TokenError> {
    let b = unverified(token)?;
    let blocks = (0..b.block_count())
        .map(|i| {
            b.print_block_source(i)
                .map_err(|e| token_err("reading a block", e))
        })
        .collect::<Result<_, _>>()?;
    Ok(Inspection {
        blocks,
        revocation_ids: b
            .revocation_identifiers()
            .iter()
            .map(|id| hex(id))
            .collect(),
    })
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `id` is a revocation id as [`inspect`] and [`Verified::revocation_ids`] give them:
/// the lowercase hex of a block's 64-byte Ed25519 signature.
pub fn is_revocation_id(id: &str) -> bool {
    id.len() == 128
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A token whose signatures chain up to the root key. Cheap to keep: a node verifies a token
/// once and authorizes each request against the kept value.
#[derive(Clone)]
pub struct Verified {
    token: Biscuit,
    revocation_ids: Vec<String>,
    /// The first block's `right(op, prefix)` facts.
    rights: Vec<(String, String)>,
    /// The token read into plain Rust, when it has exactly the shape Meridian writes.
    plain: Option<plain::Plain>,
}

impl std::fmt::Debug for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verified")
            .field("revocation_ids", &self.revocation_ids)
            .finish()
    }
}

/// Checks `token`'s signatures against the cluster's root public key.
pub fn verify(token: &str, root: &RootPublicKey) -> Result<Verified, Refusal> {
    let token = token.trim();
    if token.is_empty() {
        return Err(Refusal::Unauthenticated("no token".into()));
    }
    if token.len() > TOKEN_CHARS_MAX {
        return Err(Refusal::Unauthenticated(format!(
            "a token of {} characters: at most {TOKEN_CHARS_MAX}",
            token.len()
        )));
    }
    let b = Biscuit::from_base64(token, root.key()).map_err(|e| {
        Refusal::Unauthenticated(match e {
            biscuit_auth::error::Token::Format(
                biscuit_auth::error::Format::Signature(_)
                | biscuit_auth::error::Format::InvalidSignatureSize(_),
            ) => "the token's signature does not verify against this cluster's root key".into(),
            e => format!("not a valid token: {e}"),
        })
    })?;
    let revocation_ids = b
        .revocation_identifiers()
        .iter()
        .map(|id| hex(id))
        .collect();
    let cannot = |e| Refusal::Unauthenticated(format!("the token cannot be evaluated: {e}"));
    let mut authorizer = AuthorizerBuilder::new()
        .set_limits(limits())
        .build(&b)
        .map_err(cannot)?;
    let rights: Vec<(String, String)> = authorizer
        .query("granted($op, $p) <- right($op, $p)")
        .map_err(cannot)?;
    let plain = plain::Plain::read(&authorizer, &rights);
    Ok(Verified {
        token: b,
        revocation_ids,
        rights,
        plain,
    })
}

/// Limits on one authorization's Datalog run (a token is small; a hostile one stops at the
/// facts or the iterations). The time limit is only a backstop: it is wall time, and a request
/// evaluated on a loaded node (nine nodes on two cores in a test; a debug build) was seen to
/// pass 5 ms while its Datalog took ~25 µs of CPU.
fn limits() -> AuthorizerLimits {
    RunLimits {
        max_facts: 1000,
        max_iterations: 100,
        max_time: Duration::from_millis(200),
    }
}

/// A Datalog run that did not finish: out of time is the node's trouble (`Busy`), too many
/// facts or iterations the token's.
fn unfinished(e: biscuit_auth::error::Token) -> Refusal {
    use biscuit_auth::error::{RunLimit, Token};
    match e {
        Token::RunLimit(RunLimit::Timeout) => {
            Refusal::Busy("the node was too busy to finish checking the token; try again".into())
        }
        e => Refusal::PermissionDenied(format!("the token's checks did not finish: {e}")),
    }
}

impl Verified {
    /// Every block's revocation id (hex), from the first block on: a revoked id refuses the
    /// token and every token attenuated from it.
    pub fn revocation_ids(&self) -> &[String] {
        &self.revocation_ids
    }

    /// Whether this token allows `op` at or somewhere under `path`: on `path` itself, or on a
    /// granted prefix below it. For showing the names on the way to what a token may read (an
    /// `ls` above its prefix); the later blocks' checks are not consulted for the names below.
    pub fn reaches(&self, op: Op, path: &str, now: SystemTime) -> bool {
        self.authorize(op, path, now).is_ok()
            || self
                .rights
                .iter()
                .any(|(o, p)| o == op.name() && p.starts_with(path))
    }

    /// Whether this token allows `op` on `resource` (a key, a prefix asked for as a range, a
    /// lock or lease name) at `now`: read from the plain rights when the token has Meridian's
    /// own shape, by a Datalog run otherwise.
    pub fn authorize(&self, op: Op, resource: &str, now: SystemTime) -> Result<(), Refusal> {
        match &self.plain {
            Some(plain) => plain.authorize(op, resource, now),
            None => self.authorize_datalog(op, resource, now),
        }
    }

    /// Whether this token was read into plain rights (its requests are authorized without
    /// Datalog).
    pub fn is_plain(&self) -> bool {
        self.plain.is_some()
    }

    /// [`Verified::authorize`] by the token's Datalog.
    fn authorize_datalog(&self, op: Op, resource: &str, now: SystemTime) -> Result<(), Refusal> {
        let build = || {
            AuthorizerBuilder::new()
                .code_with_params(
                    "operation({op}); resource({resource}); time({now});
                     allow if operation($op), resource($r), right($op, $p), $r.starts_with($p);",
                    params(&[
                        ("op", Term::Str(op.name().into())),
                        ("resource", Term::Str(resource.into())),
                        ("now", Term::Date(unix_secs(now))),
                    ]),
                    HashMap::new(),
                )
                .map(|b| b.set_limits(limits()))
                .and_then(|b| b.build(&self.token))
        };
        let mut authorizer = build()
            .map_err(|e| Refusal::Unauthenticated(format!("the token cannot be evaluated: {e}")))?;
        match authorizer.authorize() {
            Ok(_) => Ok(()),
            Err(biscuit_auth::error::Token::FailedLogic(logic)) => {
                Err(Self::why_refused(op, resource, &logic))
            }
            Err(e) => Err(unfinished(e)),
        }
    }

    /// The refusal of `op` on `resource`, named without showing what the token does allow:
    /// a failed time check is an expired token (refused as a token, whatever the request);
    /// anything else is this request outside what the token allows.
    fn why_refused(op: Op, resource: &str, logic: &biscuit_auth::error::Logic) -> Refusal {
        use biscuit_auth::error::{FailedCheck, Logic};
        let checks = match logic {
            Logic::Unauthorized { checks, .. } | Logic::NoMatchingPolicy { checks } => {
                checks.as_slice()
            }
            _ => &[],
        };
        let expired = checks.iter().any(|c| match c {
            FailedCheck::Block(b) => EXPIRY_CHECK
                .split_once(',')
                .is_some_and(|(head, _)| b.rule.starts_with(head)),
            FailedCheck::Authorizer(_) => false,
        });
        if expired {
            return Refusal::Unauthenticated("the token has expired".into());
        }
        Self::not_allowed(op, resource)
    }

    /// The refusal of a good token that does not allow `op` on `resource`.
    fn not_allowed(op: Op, resource: &str) -> Refusal {
        Refusal::PermissionDenied(format!(
            "the token does not allow {} on {resource:?}",
            op.name()
        ))
    }
}

#[cfg(test)]
mod tests;
