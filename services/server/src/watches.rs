//! The node's watch streams as a resource: how many are open (each holds a slot while it
//! lives: watches, proxied watches, election observers) and the events sent on them. Only
//! state, so that the node's context can own it without depending on the watch service
//! (`watch.rs`, `lock_service.rs` open slots; `/metrics` reads the counts).

use crate::error::Error;
use std::sync::Arc;

/// The node's watch streams: at most `max` at once (each holds a permit while it lives, a
/// proxied one too), and the events sent on them (`/metrics`).
pub struct Watches {
    permits: Arc<tokio::sync::Semaphore>,
    max: usize,
    events: std::sync::atomic::AtomicU64,
    /// Streams cut off because their client stopped reading.
    cut_off: std::sync::atomic::AtomicU64,
    /// Watcher tasks running (one per watch, or per cohort of a shared stream).
    watchers: std::sync::atomic::AtomicU64,
}

/// Counts one running watcher while it lives.
pub(crate) struct Running(Arc<Watches>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0
            .watchers
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Watches {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            permits: Arc::new(tokio::sync::Semaphore::new(max)),
            max,
            events: std::sync::atomic::AtomicU64::new(0),
            cut_off: std::sync::atomic::AtomicU64::new(0),
            watchers: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// A slot for one more stream (a watch, a proxied watch, an election observer), or why
    /// not.
    pub(crate) fn open(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Error> {
        self.permits.clone().try_acquire_owned().map_err(|_| {
            Error::Unavailable(format!(
                "this node serves its maximum of {} watch and observe streams; use another \
                 endpoint",
                self.max
            ))
        })
    }

    pub(crate) fn sent(&self, events: usize) {
        self.events
            .fetch_add(events as u64, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn cut_off(&self) {
        self.cut_off
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Counts a watcher task until the guard is dropped.
    pub(crate) fn running(self: &Arc<Self>) -> Running {
        self.watchers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Running(self.clone())
    }

    /// Watcher tasks running now.
    pub fn watchers_now(&self) -> u64 {
        self.watchers.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Streams cut off so far because their client stopped reading.
    pub fn cut_off_count(&self) -> u64 {
        self.cut_off.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Streams open now.
    pub fn open_now(&self) -> usize {
        self.max.saturating_sub(self.permits.available_permits())
    }

    /// Events sent on every stream so far.
    pub fn events_sent(&self) -> u64 {
        self.events.load(std::sync::atomic::Ordering::Relaxed)
    }
}
