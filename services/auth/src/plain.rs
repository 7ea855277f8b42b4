//! A token of exactly the shape [`crate::mint`] and [`crate::attenuate`] write, read into plain
//! Rust, so that authorizing a request is a few string comparisons (well under a microsecond)
//! instead of a Datalog run (~20 µs: building an authorizer, loading the token, evaluating).
//!
//! Read only when the token's Datalog, compared structurally (strings resolved, no printed
//! text), is nothing but:
//! - facts: the first block's `right(OP, PREFIX)` (no other fact in any block);
//! - no rules, no policies, no scoped (`trusting`) checks;
//! - checks, in any block, each exactly one of
//!   `check if time($t), $t <= DATE;`,
//!   `check if resource($r), {PREFIXES}.any($p -> $r.starts_with($p));`,
//!   `check if operation($op), {OPS}.contains($op);`.
//!
//! For such a token the Datalog's answer is: some first-block right names the operation and
//! prefixes the resource, every prefix check has a prefix of the resource, every operation check
//! names the operation, and the time is at or before every date — which [`Plain::authorize`]
//! computes. Any other token (a block someone wrote with biscuit's own tools) is authorized by
//! Datalog, as before. A property test holds the two to the same answers.

use crate::{unix_secs, Op, Refusal};
use biscuit_auth::builder::{Check, CheckKind, Expression, Op as ExprOp, Rule, Term};
use biscuit_auth::Authorizer;
use std::collections::BTreeSet;
use std::time::SystemTime;

/// What a token of Meridian's own shape allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Plain {
    /// The first block's `right(op, prefix)` facts.
    rights: Vec<(String, String)>,
    /// Each prefix check's prefixes: a resource must start with one of every set.
    prefixes: Vec<Vec<String>>,
    /// Each operation check's operations: the operation must be in every set.
    ops: Vec<BTreeSet<String>>,
    /// Each expiry check's date (unix seconds): the time must be at or before every one.
    expires: Vec<u64>,
}

/// The three check forms, with their parameter written as `{p}`.
const EXPIRY: &str = "check if time($t), $t <= {p}";
const PREFIXES: &str = "check if resource($r), {p}.any($p -> $r.starts_with($p))";
const OPS: &str = "check if operation($op), {p}.contains($op)";

impl Plain {
    /// `authorizer`'s token (loaded, not yet run) as plain rights, if it has Meridian's shape;
    /// `rights` are its first block's `right` facts.
    pub(crate) fn read(authorizer: &Authorizer, rights: &[(String, String)]) -> Option<Plain> {
        // `dump` converts symbols with unwrap; a token that got past verification should never
        // make it panic, but if one did, that token is simply not plain.
        let (facts, rules, checks, policies) =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| authorizer.dump())).ok()?;
        if !rules.is_empty() || !policies.is_empty() || facts.len() != rights.len() {
            return None;
        }
        let mut plain = Plain {
            rights: rights.to_vec(),
            prefixes: Vec::new(),
            ops: Vec::new(),
            expires: Vec::new(),
        };
        for check in &checks {
            match parameter(check)? {
                Term::Date(d) if same(check, EXPIRY, Term::Date(*d))? => plain.expires.push(*d),
                Term::Set(set) => {
                    let strings = set
                        .iter()
                        .map(|t| match t {
                            Term::Str(s) => Some(s.clone()),
                            _ => None,
                        })
                        .collect::<Option<Vec<String>>>()?;
                    if same(check, PREFIXES, Term::Set(set.clone()))? {
                        plain.prefixes.push(strings);
                    } else if same(check, OPS, Term::Set(set.clone()))? {
                        plain.ops.push(strings.into_iter().collect());
                    } else {
                        return None;
                    }
                }
                _ => return None,
            }
        }
        Some(plain)
    }

    /// The Datalog's answer for `op` on `resource` at `now`, refused as
    /// [`crate::Verified::authorize`] refuses (an expired token first).
    pub(crate) fn authorize(&self, op: Op, resource: &str, now: SystemTime) -> Result<(), Refusal> {
        let now = unix_secs(now);
        if self.expires.iter().any(|&e| now > e) {
            return Err(Refusal::Unauthenticated("the token has expired".into()));
        }
        let name = op.name();
        let allowed = self
            .rights
            .iter()
            .any(|(o, p)| o == name && resource.starts_with(p.as_str()))
            && self
                .prefixes
                .iter()
                .all(|set| set.iter().any(|p| resource.starts_with(p.as_str())))
            && self.ops.iter().all(|set| set.contains(name));
        if allowed {
            Ok(())
        } else {
            Err(crate::Verified::not_allowed(op, resource))
        }
    }
}

/// The one literal date or set in `check`'s expressions (None if there is not exactly one).
fn parameter(check: &Check) -> Option<&Term> {
    fn walk<'a>(ops: &'a [ExprOp], found: &mut Vec<&'a Term>) {
        for op in ops {
            match op {
                ExprOp::Value(t @ (Term::Date(_) | Term::Set(_))) => found.push(t),
                ExprOp::Closure(_, inner) => walk(inner, found),
                _ => {}
            }
        }
    }
    let mut found = Vec::new();
    for rule in &check.queries {
        for e in &rule.expressions {
            walk(&e.ops, &mut found);
        }
    }
    match found.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

/// Whether `check` is exactly `template` with its `{p}` bound to `value` (None if the template
/// does not parse, which would be this module's bug).
fn same(check: &Check, template: &str, value: Term) -> Option<bool> {
    let mut expected = Check::try_from(template).ok()?;
    for rule in &mut expected.queries {
        bind(rule, &value);
    }
    let actual = Check {
        queries: check.queries.iter().cloned().map(bare).collect(),
        kind: check.kind.clone(),
    };
    Some(expected.kind == CheckKind::One && actual == expected)
}

/// `rule` with `{p}` replaced by `value` everywhere, and no parameter tables.
fn bind(rule: &mut Rule, value: &Term) {
    fn term(t: &mut Term, value: &Term) {
        if matches!(t, Term::Parameter(name) if name == "p") {
            *t = value.clone();
        }
    }
    fn ops(list: &mut [ExprOp], value: &Term) {
        for op in list {
            match op {
                ExprOp::Value(t) => term(t, value),
                ExprOp::Closure(_, inner) => ops(inner, value),
                _ => {}
            }
        }
    }
    rule.head.terms.iter_mut().for_each(|t| term(t, value));
    for p in &mut rule.body {
        p.terms.iter_mut().for_each(|t| term(t, value));
    }
    for Expression { ops: o } in &mut rule.expressions {
        ops(o, value);
    }
    *rule = bare(rule.clone());
}

/// `rule` without its parameter tables (which say nothing once every parameter is bound).
fn bare(mut rule: Rule) -> Rule {
    rule.parameters = None;
    rule.scope_parameters = None;
    rule
}
