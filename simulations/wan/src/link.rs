//! The link table shared by every relay of one emulated WAN.
//!
//! Each link publishes its state through a `watch` channel. Relays read the spec per chunk (so
//! `set_link` on a live link takes effect for new bytes) and wait for the `epoch` to move: it
//! changes on every cut/heal transition, so a connection that started healthy ends on the first
//! change (a cut), and one held during a cut is dropped on the first change (a heal), even if
//! the flag flipped back before the task looked.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

use crate::{LinkSpec, LinkStatus, WanError};

/// Shared state of all links: unordered region pairs -> spec + cut flag + counters.
#[derive(Default)]
pub struct Wan {
    links: Mutex<BTreeMap<(String, String), Arc<Link>>>,
}

#[derive(Clone, Debug)]
pub(crate) struct LinkState {
    pub(crate) spec: LinkSpec,
    pub(crate) cut: bool,
    /// Bumped on every cut <-> healed transition.
    pub(crate) epoch: u64,
}

pub(crate) struct Link {
    pub(crate) state: watch::Sender<LinkState>,
    pub(crate) connections: AtomicUsize,
    pub(crate) bytes: AtomicU64,
}

impl Link {
    fn set_cut(&self, cut: bool) {
        self.state.send_if_modified(|s| {
            if s.cut == cut {
                return false;
            }
            s.cut = cut;
            s.epoch += 1;
            true
        });
    }
}

/// Counts one live connection on a link for as long as it exists.
pub(crate) struct ConnectionGuard(Arc<Link>);

impl ConnectionGuard {
    pub(crate) fn new(link: Arc<Link>) -> Self {
        link.connections.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(link)
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

fn key(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

impl Wan {
    pub fn new() -> Arc<Wan> {
        Arc::new(Wan::default())
    }

    fn table(&self) -> MutexGuard<'_, BTreeMap<(String, String), Arc<Link>>> {
        // The table is only mutated by short non-panicking sections, so a poisoned lock
        // still guards consistent data.
        self.links.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Declares or replaces the link between regions `a` and `b` (an unordered pair).
    ///
    /// Replacing keeps the cut flag and the live connections, which use the new spec for
    /// bytes they read from now on. `a == b` is ignored: same-region traffic needs no relay.
    pub fn set_link(&self, a: &str, b: &str, spec: LinkSpec) {
        if a == b {
            tracing::warn!(
                region = a,
                "set_link ignored: a link needs two distinct regions"
            );
            return;
        }
        let mut table = self.table();
        match table.get(&key(a, b)) {
            Some(link) => {
                link.state.send_modify(|s| s.spec = spec);
            }
            None => {
                let state = LinkState {
                    spec,
                    cut: false,
                    epoch: 0,
                };
                let link = Link {
                    state: watch::Sender::new(state),
                    connections: AtomicUsize::new(0),
                    bytes: AtomicU64::new(0),
                };
                table.insert(key(a, b), Arc::new(link));
            }
        }
    }

    pub(crate) fn link(&self, a: &str, b: &str) -> Result<Arc<Link>, WanError> {
        let table = self.table();
        match table.get(&key(a, b)) {
            Some(link) => Ok(link.clone()),
            None => Err(WanError::UnknownLink {
                a: a.to_owned(),
                b: b.to_owned(),
                known: known_links(&table),
            }),
        }
    }

    /// Closes every relayed connection on the link now; new ones are blackholed until healed.
    pub fn cut(&self, a: &str, b: &str) -> Result<(), WanError> {
        self.link(a, b)?.set_cut(true);
        tracing::info!(a, b, "link cut");
        Ok(())
    }

    /// Lets traffic through again; connections blackholed during the cut are closed.
    pub fn heal(&self, a: &str, b: &str) -> Result<(), WanError> {
        self.link(a, b)?.set_cut(false);
        tracing::info!(a, b, "link healed");
        Ok(())
    }

    /// Cuts every link touching region `r`.
    pub fn cut_region(&self, r: &str) -> Result<(), WanError> {
        self.set_region_cut(r, true)
    }

    /// Heals every link touching region `r`.
    pub fn heal_region(&self, r: &str) -> Result<(), WanError> {
        self.set_region_cut(r, false)
    }

    fn set_region_cut(&self, r: &str, cut: bool) -> Result<(), WanError> {
        let table = self.table();
        let mut found = false;
        for ((a, b), link) in table.iter() {
            if a == r || b == r {
                link.set_cut(cut);
                found = true;
            }
        }
        if !found {
            return Err(WanError::UnknownRegion(r.to_owned()));
        }
        tracing::info!(region = r, cut, "region links changed");
        Ok(())
    }

    pub fn heal_all(&self) {
        for link in self.table().values() {
            link.set_cut(false);
        }
        tracing::info!("all links healed");
    }

    /// A snapshot of every link, sorted by region pair.
    pub fn links(&self) -> Vec<LinkStatus> {
        self.table()
            .iter()
            .map(|((a, b), link)| {
                let state = link.state.borrow().clone();
                LinkStatus {
                    a: a.clone(),
                    b: b.clone(),
                    spec: state.spec,
                    cut: state.cut,
                    connections: link.connections.load(Ordering::Relaxed),
                    bytes: link.bytes.load(Ordering::Relaxed),
                }
            })
            .collect()
    }
}

fn known_links(table: &BTreeMap<(String, String), Arc<Link>>) -> String {
    if table.is_empty() {
        return "none (declare one with set_link)".to_owned();
    }
    let mut out = String::new();
    for (i, (a, b)) in table.keys().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(out, "{sep}{a}<->{b}");
    }
    out
}
