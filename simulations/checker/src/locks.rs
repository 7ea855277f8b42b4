//! Lock safety over a recorded history of holds of one lock: no two holds' validity intervals
//! overlap, and fencing tokens strictly increase in the order of acquisition. Plus
//! [`FencedResource`], the rule a resource server applies to fencing tokens.
//!
//! # Model
//!
//! A [`Hold`] is one client's tenure of the lock as that client *believed* it: from the moment
//! its acquire returned to the earliest of its release, the moment its lease deadline ran out
//! (as its SDK computes it), or the moment it noticed the loss. A hold still open when the run
//! ends is cut at the end of the run. Times are nanoseconds on one monotonic clock shared by
//! every recorder of the test harness. Validity is the half-open interval
//! `[acquired_at, valid_until)`, so a hold may start exactly when the previous one ends, and a
//! hold with `valid_until == acquired_at` is empty: its client never held the lock for any time,
//! so it overlaps nothing (its token is still checked).
//!
//! # Rules
//!
//! [`LockHistory::check`] reports, in this order of precedence:
//!
//! 1. [`LockViolation::Malformed`]: a hold with `valid_until < acquired_at` — the record itself
//!    is wrong (the first such hold in input order).
//! 2. Otherwise, walking the holds in order of acquisition (by `acquired_at`, ties by token), the
//!    first hold that breaks a rule:
//!    - [`LockViolation::TokenOrder`]: its token is not above the token of the hold acquired
//!      just before it (equal tokens on two holds are a violation too). Two holds acquired at
//!      the same instant need only distinct tokens: nothing orders their acquisitions.
//!    - [`LockViolation::Overlap`]: its validity intersects that of an earlier hold (the one
//!      reported is the earlier hold valid the longest).
//!
//! The holds may be given in any order, by any number of clients; input order never matters
//! except to choose which of several malformed holds is named. Checking is `O(n log n)` and
//! never panics.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One client's tenure of the lock, as the client believed it. See the [module docs](self).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Hold {
    /// Who held the lock (the test's name for the client).
    pub client: String,
    /// The fencing token the grant carried.
    pub token: u64,
    /// When the acquire returned (ns on the harness's common monotonic clock).
    pub acquired_at: u128,
    /// End of the validity the client believed in (ns, same clock): the earliest of its release,
    /// its lease deadline per its SDK, and the moment it noticed the loss; the end of the run for
    /// a hold still open then.
    pub valid_until: u128,
}

impl Hold {
    /// How long the hold was valid (ns), or `None` if it is malformed (ends before it starts).
    pub fn held_ns(&self) -> Option<u128> {
        self.valid_until.checked_sub(self.acquired_at)
    }

    /// Whether the validity intervals `[acquired_at, valid_until)` of two holds intersect.
    /// Back-to-back holds (one ends when the other starts) and empty holds intersect nothing.
    pub fn overlaps(&self, other: &Hold) -> bool {
        self.acquired_at.max(other.acquired_at) < self.valid_until.min(other.valid_until)
    }
}

/// A recorded history of holds of one lock.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHistory {
    /// Every hold of the run, in any order.
    pub holds: Vec<Hold>,
}

/// Summary of a history that passed [`LockHistory::check`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockReport {
    /// Number of holds.
    pub holds: usize,
    /// Number of distinct clients that held the lock.
    pub clients: usize,
    /// The highest fencing token granted (0 if there were no holds).
    pub max_token: u64,
    /// Total time the lock was held (ns): the sum of the holds' validity lengths.
    pub held_ns: u128,
    /// Smallest gap between consecutive holds (ns): for each hold after the first in order of
    /// acquisition, from the latest end of the holds before it to its acquisition. 0 for
    /// back-to-back holds; `None` with fewer than two holds. (An empty hold acquired inside
    /// another hold contributes no gap.)
    pub min_gap_ns: Option<u128>,
}

/// Why a history is not lock-safe, or cannot be checked. The holds are boxed to keep
/// `Result<LockReport, LockViolation>` small.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockViolation {
    /// A hold that ends before it starts: the record itself is wrong.
    Malformed(Box<Hold>),
    /// Two holds valid at the same time: the earlier acquired first, then the later.
    Overlap(Box<Hold>, Box<Hold>),
    /// A later acquisition (second) got a token not above an earlier one's (first).
    TokenOrder(Box<Hold>, Box<Hold>),
}

/// Nanoseconds shown as milliseconds, exactly (six decimals).
struct Ms(u128);

impl fmt::Display for Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06} ms", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

impl fmt::Display for LockViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockViolation::Malformed(h) => write!(
                f,
                "malformed hold: {} (token {}) valid until {}, before it was acquired at {}",
                h.client,
                h.token,
                Ms(h.valid_until),
                Ms(h.acquired_at)
            ),
            LockViolation::Overlap(a, b) => write!(
                f,
                "two holders at once: {} (token {}) valid [{}, {}) and {} (token {}) valid \
                 [{}, {}) overlap for {}",
                a.client,
                a.token,
                Ms(a.acquired_at),
                Ms(a.valid_until),
                b.client,
                b.token,
                Ms(b.acquired_at),
                Ms(b.valid_until),
                Ms(a.valid_until
                    .min(b.valid_until)
                    .saturating_sub(a.acquired_at.max(b.acquired_at)))
            ),
            LockViolation::TokenOrder(a, b) => write!(
                f,
                "fencing tokens do not increase: {} got token {} at {}, then {} got token {} \
                 at {}",
                a.client,
                a.token,
                Ms(a.acquired_at),
                b.client,
                b.token,
                Ms(b.acquired_at)
            ),
        }
    }
}

impl std::error::Error for LockViolation {}

impl LockHistory {
    /// Checks the history against the rules in the [module docs](self): Ok with a summary, or
    /// the first violation found.
    pub fn check(&self) -> Result<LockReport, LockViolation> {
        if let Some(h) = self.holds.iter().find(|h| h.valid_until < h.acquired_at) {
            return Err(LockViolation::Malformed(Box::new(h.clone())));
        }
        let mut holds: Vec<&Hold> = self.holds.iter().collect();
        holds.sort_by_key(|h| (h.acquired_at, h.token));

        // Sorted by start, a hold overlaps some earlier one iff it is not empty and starts
        // before the latest end among the earlier holds.
        let mut prev: Option<&Hold> = None;
        let mut latest: Option<&Hold> = None;
        let mut min_gap: Option<u128> = None;
        let mut held_ns: u128 = 0;
        for &h in &holds {
            if let Some(p) = prev {
                if h.token <= p.token {
                    return Err(LockViolation::TokenOrder(
                        Box::new(p.clone()),
                        Box::new(h.clone()),
                    ));
                }
            }
            if let Some(l) = latest {
                if h.overlaps(l) {
                    return Err(LockViolation::Overlap(
                        Box::new(l.clone()),
                        Box::new(h.clone()),
                    ));
                }
                // None only for an empty hold inside `l`: no gap there.
                if let Some(gap) = h.acquired_at.checked_sub(l.valid_until) {
                    min_gap = Some(min_gap.map_or(gap, |g| g.min(gap)));
                }
            }
            if latest.is_none_or(|l| h.valid_until > l.valid_until) {
                latest = Some(h);
            }
            prev = Some(h);
            held_ns = held_ns.saturating_add(h.valid_until - h.acquired_at);
        }

        let mut clients: Vec<&str> = holds.iter().map(|h| h.client.as_str()).collect();
        clients.sort_unstable();
        clients.dedup();
        Ok(LockReport {
            holds: holds.len(),
            clients: clients.len(),
            max_token: prev.map_or(0, |h| h.token),
            held_ns,
            min_gap_ns: min_gap,
        })
    }
}

/// The fencing rule of a resource server: a write is accepted only with a token at least the
/// highest seen so far; an equal token only from the client that already wrote with it (a
/// holder writing again). Tokens are unique per grant, so the same token from another client
/// is refused. Rejected writes change nothing.
///
/// This is the pure-logic half of a fenced server; a real one also asks the lock service
/// (`check_fence`) whether the token still belongs to a current holder.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FencedResource {
    /// The highest token accepted so far and the client that wrote with it.
    highest: Option<(u64, String)>,
    /// Accepted writes in order: (client, token).
    accepted: Vec<(String, u64)>,
}

/// A write refused by [`FencedResource::write`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceRejected {
    /// Who tried to write.
    pub client: String,
    /// The token it wrote with.
    pub token: u64,
    /// The highest token the resource had accepted.
    pub highest: u64,
    /// The client whose write carried `highest`.
    pub holder: String,
}

impl fmt::Display for FenceRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.token < self.highest {
            write!(
                f,
                "write of {} with stale token {} refused: token {} of {} was already seen",
                self.client, self.token, self.highest, self.holder
            )
        } else {
            write!(
                f,
                "write of {} with token {} refused: that token was already used by {}",
                self.client, self.token, self.holder
            )
        }
    }
}

impl std::error::Error for FenceRejected {}

impl FencedResource {
    /// A resource that has seen no write.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies a write by `client` carrying fencing `token`: accepted and recorded iff `token`
    /// is above the highest seen, or equal to it and from the same client.
    pub fn write(&mut self, client: &str, token: u64) -> Result<(), FenceRejected> {
        if let Some((highest, holder)) = &self.highest {
            if token < *highest || (token == *highest && client != holder) {
                return Err(FenceRejected {
                    client: client.to_string(),
                    token,
                    highest: *highest,
                    holder: holder.clone(),
                });
            }
        }
        if self.highest.as_ref().is_none_or(|(h, _)| token > *h) {
            self.highest = Some((token, client.to_string()));
        }
        self.accepted.push((client.to_string(), token));
        Ok(())
    }

    /// The highest token accepted so far, `None` before any write.
    pub fn highest(&self) -> Option<u64> {
        self.highest.as_ref().map(|(t, _)| *t)
    }

    /// The accepted writes in order, as (client, token).
    pub fn accepted(&self) -> &[(String, u64)] {
        &self.accepted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(client: &str, token: u64, from: u128, to: u128) -> Hold {
        Hold {
            client: client.into(),
            token,
            acquired_at: from,
            valid_until: to,
        }
    }

    fn history(holds: Vec<Hold>) -> LockHistory {
        LockHistory { holds }
    }

    /// xorshift64: deterministic, no dependencies.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, m: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % m
        }

        fn shuffle<T>(&mut self, v: &mut [T]) {
            for i in (1..v.len()).rev() {
                let j = self.below(i as u64 + 1) as usize;
                v.swap(i, j);
            }
        }
    }

    /// Every violation reported must be real.
    fn assert_genuine(v: &LockViolation) {
        match v {
            LockViolation::Malformed(h) => assert!(h.valid_until < h.acquired_at, "{v}"),
            LockViolation::Overlap(a, b) => {
                assert!(a.overlaps(b), "{v}");
                assert!(a.acquired_at <= b.acquired_at, "{v}");
            }
            LockViolation::TokenOrder(a, b) => {
                assert!(a.acquired_at <= b.acquired_at && b.token <= a.token, "{v}")
            }
        }
    }

    /// Quadratic reference: the verdict by definition, and the report's figures.
    fn oracle(holds: &[Hold]) -> Result<LockReport, ()> {
        if holds.iter().any(|h| h.valid_until < h.acquired_at) {
            return Err(());
        }
        for (i, a) in holds.iter().enumerate() {
            for b in &holds[i + 1..] {
                let token_bad = match a.acquired_at.cmp(&b.acquired_at) {
                    std::cmp::Ordering::Less => b.token <= a.token,
                    std::cmp::Ordering::Greater => a.token <= b.token,
                    std::cmp::Ordering::Equal => a.token == b.token,
                };
                if token_bad || a.overlaps(b) {
                    return Err(());
                }
            }
        }
        let mut sorted = holds.to_vec();
        sorted.sort_by_key(|h| (h.acquired_at, h.token));
        let min_gap_ns = (1..sorted.len())
            .filter_map(|i| {
                let end = sorted[..i].iter().map(|h| h.valid_until).max()?;
                sorted[i].acquired_at.checked_sub(end)
            })
            .min();
        let mut clients: Vec<&str> = holds.iter().map(|h| h.client.as_str()).collect();
        clients.sort_unstable();
        clients.dedup();
        Ok(LockReport {
            holds: holds.len(),
            clients: clients.len(),
            max_token: holds.iter().map(|h| h.token).max().unwrap_or(0),
            held_ns: holds.iter().map(|h| h.valid_until - h.acquired_at).sum(),
            min_gap_ns,
        })
    }

    /// A legal history in order of acquisition: gaps often 0, holds sometimes empty.
    fn legal(rng: &mut Rng, n: usize) -> Vec<Hold> {
        let mut t = 1_000_000_000u128;
        let mut token = 0;
        let mut holds = Vec::new();
        for _ in 0..n {
            t += u128::from(rng.below(3)) * u128::from(rng.below(2_000));
            token += 1 + rng.below(3);
            let len = if rng.below(8) == 0 {
                0
            } else {
                1 + u128::from(rng.below(5_000))
            };
            let client = format!("c{}", 1 + rng.below(5));
            holds.push(hold(&client, token, t, t + len));
            t += len;
        }
        holds
    }

    #[test]
    fn back_to_back_holds_pass() {
        let h = history(vec![
            hold("a", 5, 0, 10),
            hold("b", 9, 10, 20),
            hold("a", 12, 25, 30),
        ]);
        let r = h.check().expect("legal");
        assert_eq!(
            r,
            LockReport {
                holds: 3,
                clients: 2,
                max_token: 12,
                held_ns: 25,
                min_gap_ns: Some(0),
            }
        );
    }

    #[test]
    fn input_order_does_not_matter() {
        let h = history(vec![
            hold("c", 7, 40, 50),
            hold("a", 2, 0, 10),
            hold("b", 3, 15, 40),
        ]);
        let r = h.check().expect("legal");
        assert_eq!((r.holds, r.max_token, r.held_ns), (3, 7, 45));
        assert_eq!(r.min_gap_ns, Some(0));
    }

    #[test]
    fn empty_and_single_histories() {
        let r = LockHistory::default().check().expect("empty");
        assert_eq!(r, LockReport::default());
        let r = history(vec![hold("a", 3, 5, 9)]).check().expect("one hold");
        assert_eq!((r.holds, r.clients, r.max_token, r.held_ns), (1, 1, 3, 4));
        assert_eq!(r.min_gap_ns, None);
    }

    #[test]
    fn overlap_is_caught_and_named() {
        let h = history(vec![
            hold("a", 1, 0, 10_000_000),
            hold("b", 2, 9_999_500, 20_000_000),
        ]);
        let e = h.check().expect_err("overlap");
        assert_genuine(&e);
        let LockViolation::Overlap(a, b) = &e else {
            panic!("expected an overlap, got {e}");
        };
        assert_eq!((a.client.as_str(), b.client.as_str()), ("a", "b"));
        let msg = e.to_string();
        for part in [
            "a (token 1)",
            "b (token 2)",
            "[0.000000 ms, 10.000000 ms)",
            "[9.999500 ms, 20.000000 ms)",
            "overlap for 0.000500 ms",
        ] {
            assert!(msg.contains(part), "{part:?} not in {msg}");
        }
    }

    #[test]
    fn overlap_is_caught_even_behind_a_short_hold() {
        // b starts inside a's long validity, after a short hold c ended.
        let h = history(vec![
            hold("a", 1, 0, 100),
            hold("c", 2, 10, 20),
            hold("b", 3, 50, 60),
        ]);
        let e = h.check().expect_err("overlap");
        assert_genuine(&e);
        assert!(matches!(&e, LockViolation::Overlap(a, _) if a.client == "c" || a.client == "a"));
    }

    #[test]
    fn same_start_overlaps_and_same_client_counts_too() {
        let same_start = history(vec![hold("a", 1, 0, 10), hold("b", 2, 0, 5)]);
        let e = same_start.check().expect_err("overlap");
        assert_genuine(&e);
        assert!(matches!(e, LockViolation::Overlap(..)));
        let same_client = history(vec![hold("a", 1, 0, 10), hold("a", 2, 5, 15)]);
        assert!(matches!(
            same_client.check(),
            Err(LockViolation::Overlap(..))
        ));
    }

    #[test]
    fn empty_holds_overlap_nothing_but_need_increasing_tokens() {
        let h = history(vec![
            hold("a", 1, 0, 10),
            hold("b", 2, 5, 5),
            hold("c", 3, 10, 10),
            hold("d", 4, 10, 20),
        ]);
        let r = h.check().expect("empty holds are legal");
        assert_eq!((r.holds, r.held_ns, r.min_gap_ns), (4, 20, Some(0)));
        let h = history(vec![hold("a", 5, 0, 10), hold("b", 2, 5, 5)]);
        assert!(matches!(h.check(), Err(LockViolation::TokenOrder(..))));
    }

    #[test]
    fn tokens_must_strictly_increase() {
        let equal = history(vec![hold("a", 4, 0, 10), hold("b", 4, 11, 20)]);
        let e = equal.check().expect_err("equal");
        assert_genuine(&e);
        assert!(matches!(e, LockViolation::TokenOrder(..)));
        let down = history(vec![hold("a", 4, 0, 10), hold("b", 3, 11, 20)]);
        let e = down.check().expect_err("decreasing");
        assert_genuine(&e);
        let msg = e.to_string();
        assert!(msg.contains("do not increase"), "{msg}");
        assert!(msg.contains("a got token 4 at 0.000000 ms"), "{msg}");
        assert!(msg.contains("b got token 3 at 0.000011 ms"), "{msg}");
        // Acquired at the same instant: distinct tokens suffice, equal ones do not.
        let tie = history(vec![hold("a", 9, 10, 10), hold("b", 3, 10, 20)]);
        tie.check().expect("same instant, distinct tokens");
        let tie = history(vec![hold("a", 3, 10, 10), hold("b", 3, 10, 20)]);
        assert!(matches!(tie.check(), Err(LockViolation::TokenOrder(..))));
    }

    #[test]
    fn the_earliest_violation_is_reported() {
        let h = history(vec![
            hold("a", 1, 0, 10),
            hold("b", 2, 5, 15),
            hold("c", 1, 30, 40),
        ]);
        assert!(matches!(h.check(), Err(LockViolation::Overlap(..))));
    }

    #[test]
    fn malformed_hold_is_reported_without_panicking() {
        let h = history(vec![hold("a", 1, 0, 3), hold("b", 2, 2_000_000, 1_500_000)]);
        let e = h.check().expect_err("malformed");
        assert!(matches!(&e, LockViolation::Malformed(b) if b.client == "b"));
        let msg = e.to_string();
        assert!(msg.contains("b (token 2) valid until 1.500000 ms"), "{msg}");
        assert!(msg.contains("acquired at 2.000000 ms"), "{msg}");
        let extreme = history(vec![
            hold("a", u64::MAX, 0, u128::MAX),
            hold("b", 0, u128::MAX, u128::MAX),
        ]);
        assert_genuine(&extreme.check().expect_err("decreasing tokens"));
    }

    /// Random legal histories pass with the oracle's figures, in any input order; a single
    /// mutation that creates an overlap or repeats a token is caught.
    #[test]
    fn random_histories_and_mutations() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..500 {
            let n = 2 + rng.below(30) as usize;
            let sorted = legal(&mut rng, n);
            let mut holds = sorted.clone();
            rng.shuffle(&mut holds);
            let report = history(holds.clone())
                .check()
                .unwrap_or_else(|v| panic!("round {round}: legal history rejected: {v}"));
            assert_eq!(Ok(report), oracle(&holds), "round {round}");

            // Overlap: stretch a non-empty earlier hold past a later non-empty hold's start, or
            // move a hold's start inside an earlier non-empty hold.
            let nonempty: Vec<usize> = (0..n)
                .filter(|&i| sorted[i].valid_until > sorted[i].acquired_at)
                .collect();
            if nonempty.len() >= 2 {
                let a = rng.below(nonempty.len() as u64 - 1) as usize;
                let b = a + 1 + rng.below((nonempty.len() - a - 1) as u64) as usize;
                let (i, j) = (nonempty[a], nonempty[b]);
                let mut broken = sorted.clone();
                if rng.below(2) == 0 {
                    broken[i].valid_until =
                        broken[j].acquired_at + 1 + u128::from(rng.below(1_000));
                } else {
                    let len = broken[i].valid_until - broken[i].acquired_at;
                    broken[j].acquired_at =
                        broken[i].acquired_at + u128::from(rng.below(len as u64));
                }
                rng.shuffle(&mut broken);
                let e = history(broken.clone())
                    .check()
                    .expect_err("overlap not caught");
                assert_genuine(&e);
                assert_eq!(oracle(&broken), Err(()));
            }

            // Token: repeat the previous hold's token.
            let j = 1 + rng.below(n as u64 - 1) as usize;
            let mut broken = sorted.clone();
            broken[j].token = broken[j - 1].token;
            rng.shuffle(&mut broken);
            let e = history(broken).check().expect_err("equal token not caught");
            assert_genuine(&e);
            assert!(
                matches!(&e, LockViolation::TokenOrder(a, b) if a.token == b.token),
                "{e}"
            );
        }
    }

    /// Small arbitrary histories: the verdict agrees with the quadratic definition, and every
    /// reported violation is genuine.
    #[test]
    fn arbitrary_histories_agree_with_the_definition() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let (mut passed, mut failed) = (0, 0);
        for _ in 0..5_000 {
            let n = rng.below(6) as usize;
            let holds: Vec<Hold> = (0..n)
                .map(|_| {
                    let from = u128::from(rng.below(40));
                    let to = if rng.below(30) == 0 {
                        from.saturating_sub(1)
                    } else {
                        from + u128::from(rng.below(8))
                    };
                    hold(&format!("c{}", rng.below(3)), rng.below(12), from, to)
                })
                .collect();
            match history(holds.clone()).check() {
                Ok(r) => {
                    passed += 1;
                    assert_eq!(Ok(r), oracle(&holds), "{holds:?}");
                }
                Err(v) => {
                    failed += 1;
                    assert_genuine(&v);
                    assert_eq!(oracle(&holds), Err(()), "{v}: {holds:?}");
                }
            }
        }
        assert!(
            passed > 500 && failed > 500,
            "{passed} passed, {failed} failed"
        );
    }

    #[test]
    fn fenced_resource_rejects_stale_tokens() {
        let mut r = FencedResource::new();
        assert_eq!(r.highest(), None);
        r.write("a", 5).expect("first");
        r.write("a", 5).expect("same holder again");
        r.write("b", 8).expect("newer");
        let e = r.write("a", 5).expect_err("stale");
        assert_eq!(
            e,
            FenceRejected {
                client: "a".into(),
                token: 5,
                highest: 8,
                holder: "b".into(),
            }
        );
        assert_eq!(
            e.to_string(),
            "write of a with stale token 5 refused: token 8 of b was already seen"
        );
        assert_eq!(r.highest(), Some(8));
        assert_eq!(
            r.accepted(),
            [
                (String::from("a"), 5),
                (String::from("a"), 5),
                (String::from("b"), 8)
            ]
        );
    }

    #[test]
    fn fenced_resource_refuses_a_token_reused_by_another_client() {
        let mut r = FencedResource::new();
        r.write("a", 3).expect("first");
        let e = r.write("b", 3).expect_err("same token, other client");
        assert_eq!((e.highest, e.holder.as_str()), (3, "a"));
        assert!(e.to_string().contains("already used by a"), "{e}");
        r.write("a", 3).expect("the holder may write again");
        r.write("b", 4).expect("newer token");
        assert!(r.write("a", 3).is_err());
        assert_eq!(r.accepted().len(), 3);
    }
}
