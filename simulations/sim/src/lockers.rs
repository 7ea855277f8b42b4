//! The simulation's lockers and what they prove: each `[[lockers]]` entry is a client that takes
//! its lock, writes once to a fenced resource with the grant's token, holds it `hold_ms` and
//! releases it, back to back for the whole run. Every hold is recorded as its client believed
//! it — from the acquire's answer to the earliest of its release and its session's deadline (as
//! the SDK computes it) — and every resource write with whether the holder believed it valid.
//!
//! [`check`]: for every lock, no two believed holds overlap and tokens rise in the order of
//! acquisition (`meridian_checker::locks`), and the resource (a
//! [`meridian_checker::FencedResource`] per lock, the rule a fenced server applies) never
//! refused a write whose holder believed it held the lock — that would mean a newer holder had
//! already written while the older still believed, i.e. two holders at once as the resource saw
//! them.
//!
//! The same lockers run against real processes in `meridian sim nemesis`, on the monotonic clock.

use meridian_checker::locks::{FencedResource, Hold, LockHistory};
use meridian_sdk::{LockOptions, Session};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most holds and writes recorded per run (a bounded record; the rest are not checked).
pub const RECORDS_MAX: usize = 100_000;

/// One write a holder made to its lock's resource.
#[derive(Clone, Debug, PartialEq)]
pub struct FencedWrite {
    pub lock: String,
    pub client: String,
    pub token: u64,
    pub at_ns: u128,
    pub accepted: bool,
}

/// Every locker's holds (per lock) and resource writes, shared by the lockers of one run.
#[derive(Clone, Default)]
pub struct LockLog {
    inner: Arc<Mutex<LogInner>>,
}

#[derive(Default)]
struct LogInner {
    holds: BTreeMap<String, Vec<Hold>>,
    writes: Vec<FencedWrite>,
    resources: BTreeMap<String, FencedResource>,
    records: usize,
}

impl LockLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, LogInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The resource of `lock` takes a write of `client` with `token`; returns whether it did.
    fn write(&self, lock: &str, client: &str, token: u64, at_ns: u128) -> bool {
        let mut g = self.lock();
        let accepted = g
            .resources
            .entry(lock.to_string())
            .or_default()
            .write(client, token)
            .is_ok();
        if g.records < RECORDS_MAX {
            g.records += 1;
            g.writes.push(FencedWrite {
                lock: lock.to_string(),
                client: client.to_string(),
                token,
                at_ns,
                accepted,
            });
        }
        accepted
    }

    fn hold(&self, lock: &str, hold: Hold) {
        let mut g = self.lock();
        if g.records < RECORDS_MAX {
            g.records += 1;
            g.holds.entry(lock.to_string()).or_default().push(hold);
        }
    }

    /// Holds recorded so far.
    pub fn holds(&self) -> usize {
        self.lock().holds.values().map(Vec::len).sum()
    }

    /// The lock rules over everything recorded; Ok: holds checked.
    pub fn check(&self) -> Result<usize, String> {
        let g = self.lock();
        check(&g.holds, &g.writes)
    }
}

/// Nanoseconds on the run's clock: virtual time since the simulation began inside turmoil;
/// outside it (the real-process nemesis) the monotonic clock since the first call.
fn now_ns() -> u128 {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    turmoil::sim_elapsed().map_or_else(
        || {
            ORIGIN
                .get_or_init(std::time::Instant::now)
                .elapsed()
                .as_nanos()
        },
        |d| d.as_nanos(),
    )
}

/// The session's deadline in virtual nanoseconds (None: no lease, so nothing believed held).
fn deadline_ns(session: &Session) -> Option<u128> {
    let d = session.deadline()?;
    let now = tokio::time::Instant::now();
    let at = now_ns();
    Some(if d >= now {
        at + (d - now).as_nanos()
    } else {
        at.saturating_sub((now - d).as_nanos())
    })
}

/// One acquire, fenced write, hold (`hold_for`) and release of `lock` by `client`;
/// `Some((acquire, release))` — how long each call took — when the pair completed.
pub async fn one_hold(
    session: &Session,
    lock: &str,
    client: &str,
    hold_for: Duration,
    log: &LockLog,
) -> Option<(Duration, Duration)> {
    let t0 = tokio::time::Instant::now();
    let guard = session.lock(lock, LockOptions::default()).await.ok()??;
    let t1 = tokio::time::Instant::now();
    let acquired_at = now_ns();
    let token = guard.token().revision;
    // A careful client writes only while it believes it holds the lock.
    let believed = |session: &Session| {
        !session.is_lost() && deadline_ns(session).is_some_and(|d| d > now_ns())
    };
    if believed(session) {
        log.write(lock, client, token, now_ns());
    }
    tokio::time::sleep(hold_for).await;
    let releasing = now_ns();
    let valid_until = deadline_ns(session).map_or(releasing, |d| d.min(releasing));
    log.hold(
        lock,
        Hold {
            client: client.to_string(),
            token,
            acquired_at,
            valid_until: valid_until.max(acquired_at),
        },
    );
    let t2 = tokio::time::Instant::now();
    let released = guard.release().await;
    released.ok().map(|_| (t1 - t0, t2.elapsed()))
}

/// Checks every lock's holds and its resource's writes (see the module docs); Ok: holds.
pub fn check(holds: &BTreeMap<String, Vec<Hold>>, writes: &[FencedWrite]) -> Result<usize, String> {
    let mut n = 0;
    for (lock, hs) in holds {
        let history = LockHistory { holds: hs.clone() };
        history.check().map_err(|v| format!("lock {lock}: {v}"))?;
        n += hs.len();
    }
    for w in writes.iter().filter(|w| !w.accepted) {
        // Refused: was its holder inside the validity it believed in?
        let believed = holds.get(&w.lock).into_iter().flatten().any(|h| {
            h.client == w.client
                && h.token == w.token
                && h.acquired_at <= w.at_ns
                && w.at_ns < h.valid_until
        });
        if believed {
            return Err(format!(
                "lock {}: the resource refused the fenced write of {} (token {}) at {} ns, \
                 made while it believed it held the lock: a newer holder had already written",
                w.lock, w.client, w.token, w.at_ns
            ));
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(client: &str, token: u64, a: u128, b: u128) -> Hold {
        Hold {
            client: client.into(),
            token,
            acquired_at: a,
            valid_until: b,
        }
    }

    fn write(client: &str, token: u64, at: u128, accepted: bool) -> FencedWrite {
        FencedWrite {
            lock: "/l".into(),
            client: client.into(),
            token,
            at_ns: at,
            accepted,
        }
    }

    #[test]
    fn back_to_back_holds_pass_and_overlaps_or_refused_writes_fail() {
        let mut holds = BTreeMap::new();
        holds.insert(
            "/l".to_string(),
            vec![hold("a", 5, 0, 10), hold("b", 7, 10, 20)],
        );
        assert_eq!(
            check(&holds, &[write("a", 5, 1, true), write("b", 7, 11, true)]),
            Ok(2)
        );

        // A write refused after its holder's validity ended is fencing doing its job.
        assert_eq!(check(&holds, &[write("a", 5, 15, false)]), Ok(2));

        // Refused inside the validity its holder believed in: two holders at once.
        let err = check(&holds, &[write("a", 5, 9, false)]).expect_err("refused while valid");
        assert!(
            err.contains("refused the fenced write of a (token 5)"),
            "{err}"
        );

        holds.insert(
            "/l".to_string(),
            vec![hold("a", 5, 0, 12), hold("b", 7, 10, 20)],
        );
        let err = check(&holds, &[]).expect_err("overlap");
        assert!(err.starts_with("lock /l: "), "{err}");
    }
}
