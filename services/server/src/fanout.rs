//! Shared upstream watches: every watcher of the same key or prefix of one group on this router
//! is served from one subscription to the local replica's change stream (a *feed*), which
//! filters each applied revision once and fans the matching events out to its members.
//!
//! Each member has a bounded queue of its own. The feed never waits for a member: a member whose
//! queue is full is dropped from the feed (counted), and its watcher falls back to the durable
//! history from its own next revision, then joins again — so a slow client costs the others
//! nothing. Each watcher keeps its own start revision, `prev_kv` choice and progress interval;
//! the feed carries only what they share. The one entry is [`Fanout::join`].

use meridian_storage::{GroupShared, Notice};
use meridian_types::{Event, GroupId};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::{broadcast, mpsc, Notify};

/// What a feed hands its members, in revision order.
#[derive(Debug)]
pub enum Item {
    /// The events of one revision that match the feed's key or prefix (never empty).
    Events {
        revision: u64,
        events: Arc<Vec<Event>>,
    },
    /// A snapshot replaced the replica's state: history before `compacted + 1` is gone.
    Reset { compacted: u64 },
    /// The feed itself fell behind the replica's change stream: what it missed is in the
    /// durable history, which each member reads from its own next revision.
    Lagged,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct FeedKey {
    group: GroupId,
    key: String,
    prefix: bool,
}

/// Whether a watcher of `key` (a prefix if `prefix`) is shown `ev`: a change of a matching key
/// (a move's internal `Dropped`/`Placed` records never are).
pub fn matches(key: &str, prefix: bool, ev: &Event) -> bool {
    if matches!(
        ev.kind,
        meridian_types::EventKind::Dropped | meridian_types::EventKind::Placed
    ) {
        return false;
    }
    if prefix {
        ev.kv.key.starts_with(key)
    } else {
        ev.kv.key == key
    }
}

impl FeedKey {
    fn matches(&self, ev: &Event) -> bool {
        matches(&self.key, self.prefix, ev)
    }
}

struct Feed {
    key: FeedKey,
    /// By member id: handed items in the order they joined (deterministic under simulation).
    members: Mutex<BTreeMap<u64, mpsc::Sender<Arc<Item>>>>,
    /// The last revision the feed has handed to every member (or found nothing in for them).
    seen: AtomicU64,
    /// Woken when a member leaves, so an empty feed ends.
    left: Notify,
}

impl Feed {
    fn is_empty(&self) -> bool {
        self.members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }
}

/// The node's feeds, by (group, key, prefix).
pub struct Fanout {
    feeds: Mutex<HashMap<FeedKey, Weak<Feed>>>,
    /// Revisions queued per member before it is dropped to the history.
    member_buffer: usize,
    next_member: AtomicU64,
    /// Members dropped because their queue was full.
    dropped: AtomicU64,
}

/// One watcher's place in a feed. Dropping it leaves the feed; the last member to leave ends
/// the feed's subscription.
pub struct Member {
    id: u64,
    feed: Arc<Feed>,
    rx: mpsc::Receiver<Arc<Item>>,
}

impl Member {
    /// The next item, or `None` once the feed dropped this member (its queue was full) or the
    /// replica's change stream ended: the watcher reads the history from its next revision and
    /// joins again.
    pub async fn recv(&mut self) -> Option<Arc<Item>> {
        self.rx.recv().await
    }

    /// An item already queued, if any.
    pub fn try_recv(&mut self) -> Result<Arc<Item>, mpsc::error::TryRecvError> {
        self.rx.try_recv()
    }

    /// The last revision the feed has handed to its members. Once a member has taken every
    /// item queued *after* reading this (and is still a member), it has every matching event up
    /// to it: a progress notice may claim it.
    pub fn seen(&self) -> u64 {
        self.feed.seen.load(Ordering::Acquire)
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let mut members = self.feed.members.lock().unwrap_or_else(|p| p.into_inner());
        members.remove(&self.id);
        if members.is_empty() {
            self.feed.left.notify_one();
        }
    }
}

impl Fanout {
    pub fn new(member_buffer: usize) -> Arc<Self> {
        Arc::new(Self {
            feeds: Mutex::new(HashMap::new()),
            member_buffer: member_buffer.max(1),
            next_member: AtomicU64::new(1),
            dropped: AtomicU64::new(0),
        })
    }

    /// Joins the feed of `key` (a prefix if `prefix`) on `shared`'s replica, starting one if
    /// none runs. Items cover every revision published after this call returns; a watcher
    /// joins *before* it reads the history, so nothing falls between the two.
    pub fn join(self: &Arc<Self>, shared: &Arc<GroupShared>, key: &str, prefix: bool) -> Member {
        let fk = FeedKey {
            group: shared.group,
            key: key.to_string(),
            prefix,
        };
        let (tx, rx) = mpsc::channel(self.member_buffer);
        let id = self.next_member.fetch_add(1, Ordering::Relaxed);
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        let feed = match feeds.get(&fk).and_then(Weak::upgrade) {
            Some(feed) => feed,
            None => {
                let feed = Arc::new(Feed {
                    key: fk.clone(),
                    members: Mutex::new(BTreeMap::new()),
                    seen: AtomicU64::new(shared.applied()),
                    left: Notify::new(),
                });
                // Subscribed here, under the map's lock, before any member can read history.
                let live = shared.subscribe();
                feeds.insert(fk, Arc::downgrade(&feed));
                tokio::spawn(run(self.clone(), feed.clone(), live));
                feed
            }
        };
        feed.members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        drop(feeds);
        Member { id, feed, rx }
    }

    /// Upstream subscriptions open now (one per feed).
    pub fn upstreams(&self) -> usize {
        let feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        feeds.values().filter(|f| f.strong_count() > 0).count()
    }

    /// Watchers dropped from a feed to the history because they did not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Hands `item` to every member; drops the ones whose queue is full or gone.
    fn push(&self, feed: &Feed, item: Item) {
        let item = Arc::new(item);
        let mut members = feed.members.lock().unwrap_or_else(|p| p.into_inner());
        members.retain(|_, tx| match tx.try_send(item.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }

    /// Ends `feed` if it has no members: removes it from the map (under the map's lock, so a
    /// concurrent join starts a new feed rather than join this one). Whether it ended. A feed
    /// with members (the common case, after every notice) never takes the map's lock.
    fn end_if_empty(&self, feed: &Arc<Feed>) -> bool {
        if !feed.is_empty() {
            return false;
        }
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        // Again under the map's lock: a join may have come in between.
        if !feed.is_empty() {
            return false;
        }
        if feeds
            .get(&feed.key)
            .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(feed)))
        {
            feeds.remove(&feed.key);
        }
        true
    }
}

/// One feed: reads the replica's change stream once for all its members.
async fn run(fanout: Arc<Fanout>, feed: Arc<Feed>, mut live: broadcast::Receiver<Arc<Notice>>) {
    loop {
        tokio::select! {
            notice = live.recv() => match notice {
                Ok(n) => match &*n {
                    Notice::Applied { revision, events, .. } => {
                        let matching: Vec<Event> =
                            events.iter().filter(|e| feed.key.matches(e)).cloned().collect();
                        if !matching.is_empty() {
                            fanout.push(&feed, Item::Events {
                                revision: *revision,
                                events: Arc::new(matching),
                            });
                        }
                        feed.seen.fetch_max(*revision, Ordering::Release);
                    }
                    Notice::Reset { compacted } => {
                        fanout.push(&feed, Item::Reset { compacted: *compacted })
                    }
                },
                Err(broadcast::error::RecvError::Lagged(_)) => fanout.push(&feed, Item::Lagged),
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = feed.left.notified() => {}
        }
        if fanout.end_if_empty(&feed) {
            break;
        }
    }
    // Members still here (the replica went away) see their queue end.
    feed.members
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
    fanout.end_if_empty(&feed);
}
