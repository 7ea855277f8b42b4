//! Lock safety over a recorded history of holds: no two holds' validity intervals overlap,
//! and fencing tokens strictly increase in the order of acquisition. Plus [`FencedResource`],
//! the logic a resource server applies to fencing tokens.
//!
//! A hold's validity is what its client *believed*: from the moment its acquire returned to
//! the earliest of its release, the moment its session's deadline passed, or the moment it
//! noticed the loss. Times are nanoseconds on one clock shared by every recorder.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub client: String,
    pub token: u64,
    pub acquired_at: u128,
    pub valid_until: u128,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHistory {
    pub holds: Vec<Hold>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockReport {
    pub holds: usize,
    pub clients: usize,
    pub max_token: u64,
    pub held_ns: u128,
    /// Smallest gap between the end of one hold and the start of the next (ns).
    pub min_gap_ns: Option<u128>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockViolation {
    /// A hold that ends before it starts: the record itself is wrong.
    Malformed(Box<Hold>),
    /// Two holds valid at the same time.
    Overlap(Box<Hold>, Box<Hold>),
    /// A later acquisition got a token not above an earlier one's.
    TokenOrder(Box<Hold>, Box<Hold>),
}

fn ms(ns: u128) -> f64 {
    ns as f64 / 1e6
}

impl fmt::Display for LockViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockViolation::Malformed(h) => write!(
                f,
                "hold of {} (token {}) ends at {:.3} ms, before it starts at {:.3} ms",
                h.client,
                h.token,
                ms(h.valid_until),
                ms(h.acquired_at)
            ),
            LockViolation::Overlap(a, b) => write!(
                f,
                "two holders at once: {} (token {}) valid {:.3}..{:.3} ms and {} (token {}) \
                 acquired at {:.3} ms",
                a.client,
                a.token,
                ms(a.acquired_at),
                ms(a.valid_until),
                b.client,
                b.token,
                ms(b.acquired_at)
            ),
            LockViolation::TokenOrder(a, b) => write!(
                f,
                "fencing tokens do not increase: {} got token {} at {:.3} ms, then {} got token {} \
                 at {:.3} ms",
                a.client,
                a.token,
                ms(a.acquired_at),
                b.client,
                b.token,
                ms(b.acquired_at)
            ),
        }
    }
}

impl std::error::Error for LockViolation {}

impl LockHistory {
    pub fn check(&self) -> Result<LockReport, LockViolation> {
        if let Some(h) = self.holds.iter().find(|h| h.valid_until < h.acquired_at) {
            return Err(LockViolation::Malformed(Box::new(h.clone())));
        }
        let mut holds: Vec<&Hold> = self.holds.iter().collect();
        holds.sort_by_key(|h| (h.acquired_at, h.token));
        let mut min_gap = None;
        for pair in holds.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if b.token <= a.token {
                return Err(LockViolation::TokenOrder(
                    Box::new(a.clone()),
                    Box::new(b.clone()),
                ));
            }
        }
        // Sorted by start, an overlap always shows between some hold and the latest-ending
        // hold before it.
        let mut latest: Option<&Hold> = None;
        for h in &holds {
            if let Some(l) = latest {
                if h.acquired_at < l.valid_until {
                    return Err(LockViolation::Overlap(
                        Box::new(l.clone()),
                        Box::new((*h).clone()),
                    ));
                }
                let gap = h.acquired_at - l.valid_until;
                min_gap = Some(min_gap.map_or(gap, |g: u128| g.min(gap)));
            }
            if latest.is_none_or(|l| h.valid_until > l.valid_until) {
                latest = Some(h);
            }
        }
        let mut clients: Vec<&str> = holds.iter().map(|h| h.client.as_str()).collect();
        clients.sort_unstable();
        clients.dedup();
        Ok(LockReport {
            holds: holds.len(),
            clients: clients.len(),
            max_token: holds.iter().map(|h| h.token).max().unwrap_or(0),
            held_ns: holds.iter().map(|h| h.valid_until - h.acquired_at).sum(),
            min_gap_ns: min_gap,
        })
    }
}

/// A resource server's fencing rule: accept a write only with a token not older than the
/// newest seen.
#[derive(Clone, Debug, Default)]
pub struct FencedResource {
    highest: u64,
    /// Accepted writes: (client, token).
    pub accepted: Vec<(String, u64)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FenceRejected {
    pub client: String,
    pub token: u64,
    pub highest: u64,
}

impl fmt::Display for FenceRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "write of {} with stale token {} refused: token {} was already seen",
            self.client, self.token, self.highest
        )
    }
}

impl FencedResource {
    pub fn write(&mut self, client: &str, token: u64) -> Result<(), FenceRejected> {
        if token < self.highest {
            return Err(FenceRejected {
                client: client.to_string(),
                token,
                highest: self.highest,
            });
        }
        self.highest = token;
        self.accepted.push((client.to_string(), token));
        Ok(())
    }

    pub fn highest(&self) -> u64 {
        self.highest
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

    #[test]
    fn back_to_back_holds_pass() {
        let h = LockHistory {
            holds: vec![
                hold("a", 5, 0, 10),
                hold("b", 9, 10, 20),
                hold("a", 12, 25, 30),
            ],
        };
        let r = h.check().expect("legal");
        assert_eq!((r.holds, r.clients, r.max_token), (3, 2, 12));
        assert_eq!(r.min_gap_ns, Some(0));
    }

    #[test]
    fn overlap_is_caught_even_behind_a_short_hold() {
        // b starts inside a's long validity, after a short hold c ended.
        let h = LockHistory {
            holds: vec![
                hold("a", 1, 0, 100),
                hold("c", 2, 10, 20),
                hold("b", 3, 50, 60),
            ],
        };
        assert!(matches!(h.check(), Err(LockViolation::Overlap(..))));
    }

    #[test]
    fn tokens_must_strictly_increase() {
        let equal = LockHistory {
            holds: vec![hold("a", 4, 0, 10), hold("b", 4, 11, 20)],
        };
        assert!(matches!(equal.check(), Err(LockViolation::TokenOrder(..))));
        let down = LockHistory {
            holds: vec![hold("a", 4, 0, 10), hold("b", 3, 11, 20)],
        };
        let e = down.check().expect_err("decreasing");
        assert!(e.to_string().contains("do not increase"), "{e}");
    }

    #[test]
    fn malformed_hold_is_reported() {
        let h = LockHistory {
            holds: vec![hold("a", 1, 10, 5)],
        };
        assert!(matches!(h.check(), Err(LockViolation::Malformed(_))));
    }

    /// Random legal histories pass; moving one hold's start into its predecessor is caught.
    #[test]
    fn random_histories_and_mutations() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        for _ in 0..200 {
            let n = 2 + next(20) as usize;
            let mut t = 0u128;
            let mut token = 0;
            let mut holds = Vec::new();
            for i in 0..n {
                t += u128::from(next(5));
                token += 1 + next(3);
                let len = 1 + u128::from(next(10));
                holds.push(hold(&format!("c{}", i % 3), token, t, t + len));
                t += len;
            }
            let legal = LockHistory {
                holds: holds.clone(),
            };
            legal.check().expect("legal history");
            let i = 1 + next(n as u64 - 1) as usize;
            holds[i].acquired_at = holds[i - 1].valid_until - 1;
            if holds[i].valid_until < holds[i].acquired_at {
                holds[i].valid_until = holds[i].acquired_at;
            }
            let broken = LockHistory { holds };
            assert!(broken.check().is_err(), "mutation not caught");
        }
    }

    #[test]
    fn fenced_resource_rejects_stale_tokens() {
        let mut r = FencedResource::default();
        r.write("a", 5).expect("first");
        r.write("a", 5).expect("same holder again");
        r.write("b", 8).expect("newer");
        let e = r.write("a", 5).expect_err("stale");
        assert_eq!(e.highest, 8);
        assert_eq!(r.accepted.len(), 3);
    }
}
