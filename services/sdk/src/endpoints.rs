//! Which router a client talks to, and where it goes when that one fails.
//!
//! The endpoints are kept in preference order: for a regional client (see
//! [`crate::discovery`]) the home region's routers come first, then the other regions' nearest
//! first. Two kinds of failure are told apart:
//! - **unreachable** (no connection, a broken one, no answer in time): the router is passed over
//!   for [`DOWN_FOR`] and the client moves to the next router that is not down — the home
//!   region's first, another region's only once every home router is down (and from abroad,
//!   home again at the next failure once a home router's mark has expired);
//! - **refused** (the router answered with a typed Unavailable — its group has no leader yet,
//!   its forward to a dead leader failed): the router is alive and every router of its region
//!   sees the same group, so the client moves to the next home router and never leaves its
//!   region for a refusal (CI: a leader's SIGKILL sent regional clients abroad for an election).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long a router that could not be reached is passed over.
pub(crate) const DOWN_FOR: Duration = Duration::from_secs(5);

/// The endpoints of one client, the one in use and the ones recently unreachable.
#[derive(Debug)]
pub(crate) struct Endpoints {
    list: Vec<String>,
    /// The first `home` entries are the home region's routers (all of them without a region).
    home: usize,
    current: usize,
    down: BTreeMap<String, Instant>,
}

impl Endpoints {
    /// `list` must not be empty; its first `home` entries are the home region's.
    pub(crate) fn new(list: Vec<String>, home: usize) -> Self {
        let home = home.clamp(1, list.len().max(1));
        Self {
            list,
            home,
            current: 0,
            down: BTreeMap::new(),
        }
    }

    pub(crate) fn current(&self) -> &str {
        &self.list[self.current % self.list.len()]
    }

    /// `failed` did not serve a call; `answered` says it refused it (it is alive) rather than
    /// being unreachable. Moves on unless another call already did.
    pub(crate) fn failed(&mut self, failed: &str, answered: bool, now: Instant) {
        if self.current() != failed {
            return;
        }
        if !answered {
            self.down.insert(failed.to_string(), now);
        }
        self.down
            .retain(|_, at| now.saturating_duration_since(*at) < DOWN_FOR);
        self.current = self.next(answered);
    }

    /// Points at `addr` (a leader named by a router), adding it if new.
    pub(crate) fn redirect(&mut self, addr: &str) {
        self.current = match self.list.iter().position(|e| e == addr) {
            Some(i) => i,
            None => {
                self.list.push(addr.to_string());
                self.list.len() - 1
            }
        };
    }

    fn next(&self, answered: bool) -> usize {
        let n = self.list.len();
        let cur = self.current % n;
        let up = |i: &usize| !self.down.contains_key(&self.list[*i]);
        if cur < self.home {
            let home = self.home;
            if let Some(i) = (1..=home).map(|k| (cur + k) % home).find(up) {
                return i;
            }
            if answered {
                return cur;
            }
            if let Some(i) = (home..n).find(up) {
                return i;
            }
            return (cur + 1) % n;
        }
        // Abroad: home again as soon as a home router is not down, else the next one abroad.
        (0..self.home)
            .chain((1..=n).map(|k| (cur + k) % n).filter(|i| *i >= self.home))
            .find(up)
            .unwrap_or((cur + 1) % n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(home: usize) -> Endpoints {
        let list = ["h1", "h2", "h3", "o1", "o2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        Endpoints::new(list, home)
    }

    /// A refusal never leaves the home region, however often it repeats; an unreachable router
    /// moves the client to the next home router that is not down, and abroad only when every
    /// home router is down.
    #[test]
    fn refusals_stay_home_and_only_unreachable_routers_send_a_client_abroad() {
        let t = Instant::now();
        let mut e = eps(3);
        e.failed("h1", false, t);
        assert_eq!(e.current(), "h2");
        for _ in 0..10 {
            let cur = e.current().to_string();
            e.failed(&cur, true, t);
            assert!(["h2", "h3"].contains(&e.current()), "{e:?}");
        }
        e.failed(e.current().to_string().as_str(), false, t);
        let last = e.current().to_string();
        assert!(["h2", "h3"].contains(&last.as_str()), "{e:?}");
        e.failed(&last, false, t);
        assert_eq!(e.current(), "o1", "every home router is down: {e:?}");
        // A failure reported for a router no longer in use changes nothing.
        e.failed("h2", false, t);
        assert_eq!(e.current(), "o1");
        // Once the marks expire, the client comes back home on the next failure.
        e.failed("o1", false, t + DOWN_FOR);
        assert_eq!(e.current(), "h1", "{e:?}");
    }

    /// Without a region every endpoint is home: a refusal moves to the next one, an
    /// unreachable one is skipped while it is down.
    #[test]
    fn without_a_region_every_endpoint_takes_its_turn_and_down_ones_are_skipped() {
        let t = Instant::now();
        let mut e = eps(5);
        e.failed("h1", true, t);
        assert_eq!(e.current(), "h2");
        e.failed("h2", false, t);
        assert_eq!(e.current(), "h3");
        for want in ["o1", "o2", "h1", "h3"] {
            let cur = e.current().to_string();
            e.failed(&cur, true, t);
            assert_eq!(e.current(), want, "h2 is down: {e:?}");
        }
        e.redirect("leader");
        assert_eq!(e.current(), "leader");
        e.redirect("h3");
        assert_eq!(e.current(), "h3");
    }
}
