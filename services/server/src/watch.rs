//! Watch streams: history first (from the durable change log), then live changes, in revision
//! order, each change exactly once, with periodic progress notifications. Live changes come
//! from the router's shared feed of the key or prefix (`fanout.rs`: one subscription to the
//! replica for all its watchers). A watcher that falls behind its feed goes back to the
//! history; one whose next revision was compacted gets `Compacted` and the stream ends; one
//! whose client reads nothing for `watch_stall_ms` while events wait is cut off, with a reason
//! that names the revision to resume from.

use crate::convert;
use crate::ctx::NodeCtx;
use crate::error::Error;
use crate::fanout::{Fanout, Item, Member};
use crate::residency::{proxied_request, Caller, Route};
use meridian_proto::kv as pb;
use meridian_storage::GroupShared;
use meridian_types::Event;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::Status;

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

/// Responses buffered per watcher before the producer waits for the client.
const WATCH_BUFFER_MAX: usize = 64;
/// Most watches a watcher of a shared stream serves at once (`watch_many.rs`).
const COHORT_CONTROL_MAX: usize = 1024;

/// One response of a watcher, for the watches `ids` of its stream (on a stream of its own, the
/// one watch 0).
pub(crate) struct Out {
    pub ids: Arc<[u64]>,
    pub item: Result<pb::WatchResponse, Status>,
}

/// Where a stream's watchers put their responses.
#[derive(Clone)]
pub(crate) struct Sink {
    pub tx: mpsc::Sender<Out>,
    /// The stream's last word when its client reads nothing for too long: it is cut off.
    pub last: Arc<Mutex<Option<oneshot::Sender<Status>>>>,
    /// Whether the stream carries many watches (then a cut-off names no one revision).
    pub shared: bool,
    /// Longest a response waits for the client to take it before the stream is cut off.
    pub stall: Duration,
    /// Where cut-offs are counted.
    pub watches: Arc<crate::watches::Watches>,
}

impl Sink {
    /// A stream's sink, and its last word for [`with_last`].
    pub(crate) fn new(
        ctx: &NodeCtx,
        buffer: usize,
        shared: bool,
    ) -> (Self, mpsc::Receiver<Out>, oneshot::Receiver<Status>) {
        let (tx, rx) = mpsc::channel(buffer);
        let (last_tx, last_rx) = oneshot::channel();
        let sink = Sink {
            tx,
            last: Arc::new(Mutex::new(Some(last_tx))),
            shared,
            stall: Duration::from_millis(ctx.limits.watch_stall_ms.max(1)),
            watches: ctx.watches.clone(),
        };
        (sink, rx, last_rx)
    }

    /// Queues `out` for the client; a client that takes nothing for `stall` is cut off (and
    /// with it the whole stream).
    pub(crate) async fn put(&self, out: Out) -> Result<(), Closed> {
        // Room in the stream's buffer (the common case): no timer.
        let out = match self.tx.try_send(out) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Closed),
            Err(mpsc::error::TrySendError::Full(out)) => out,
        };
        let revision = match &out.item {
            Ok(r) => r.header.as_ref().map_or(0, |h| h.revision),
            Err(_) => 0,
        };
        match tokio::time::timeout(self.stall, self.tx.send(out)).await {
            Ok(r) => r.map_err(|_| Closed),
            Err(_) => {
                self.watches.cut_off();
                let reason = if self.shared {
                    format!(
                        "the watch stream was cut off: it read nothing for {} ms while events \
                         waited; resume each watch from the revision after the last one it \
                         received (what it has received is complete)",
                        self.stall.as_millis()
                    )
                } else {
                    format!(
                        "the watcher was cut off: it read nothing for {} ms while events \
                         waited; resume from revision {revision} (what it has received up to \
                         there is complete)",
                        self.stall.as_millis()
                    )
                };
                self.cut(Status::resource_exhausted(reason));
                Err(Closed)
            }
        }
    }

    /// Ends the whole stream with `status`.
    pub(crate) fn cut(&self, status: Status) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(last) = last.take() {
            let _ = last.send(status);
        }
    }
}

/// What a shared stream asks of the watcher that serves some of its watches.
pub(crate) enum Control {
    /// Serve watch `id` too, if this watcher stands where the watch starts: `start` (0: from
    /// now, which must be past `seen`, what the session has seen of `group`). The answer gives
    /// the slot back when it does not.
    Attach {
        id: u64,
        group: meridian_types::GroupId,
        start: u64,
        seen: u64,
        permit: OwnedSemaphorePermit,
        reply: oneshot::Sender<Result<(), OwnedSemaphorePermit>>,
    },
    /// Stop serving watch `id` (the client cancelled it).
    Detach(u64),
}

/// A watcher that serves several watches of one stream, and what it is asked through.
pub(crate) struct Cohort {
    pub control: mpsc::Sender<Control>,
}
/// Most events in one watch response, and read from history at once.
const WATCH_BATCH_EVENTS_MAX: usize = 1000;

struct Filter {
    key: String,
    prefix: bool,
    prev_kv: bool,
}

impl Filter {
    fn matches(&self, ev: &Event) -> bool {
        crate::fanout::matches(&self.key, self.prefix, ev)
    }
}

/// A watch on a stream of its own (`Kv/Watch`).
pub async fn watch_stream(
    ctx: Arc<NodeCtx>,
    req: pb::WatchRequest,
    caller: &Caller,
) -> Result<WatchStream, Error> {
    use futures::StreamExt;
    // A bad request is refused as such, not as a full node.
    convert::watched(&req.key, req.prefix)?;
    convert::revision(req.start_revision, "start_revision")?;
    let (sink, rx, last_rx) = Sink::new(&ctx, WATCH_BUFFER_MAX, false);
    let permit = ctx.watches.open()?;
    match open_watch(ctx, req, caller, &sink, 0, permit).await? {
        Opened::Proxied(stream) => Ok(stream),
        Opened::Here(_) => {
            drop(sink);
            let rx = ReceiverStream::new(rx).map(|o| o.item);
            Ok(with_last(rx, last_rx))
        }
    }
}

/// Where a watch was opened.
pub(crate) enum Opened {
    /// Served by a router of another region: its responses, relayed.
    Proxied(WatchStream),
    /// Served here, by a watcher that can take on more watches of the same stream.
    Here(Cohort),
}

/// Opens watch `id` of `req` for the stream of `sink`, holding `permit` (its slot) while it
/// lives.
pub(crate) async fn open_watch(
    ctx: Arc<NodeCtx>,
    req: pb::WatchRequest,
    caller: &Caller,
    sink: &Sink,
    id: u64,
    permit: OwnedSemaphorePermit,
) -> Result<Opened, Error> {
    let key = convert::watched(&req.key, req.prefix)?;
    let start = convert::revision(req.start_revision, "start_revision")?;
    let group = if req.prefix {
        ctx.route_prefix(&key)?
    } else {
        ctx.route_key(&key)?
    };
    if let Route::Proxy(to) =
        ctx.residency(group, &[(&key, req.prefix)], caller.proxied.as_deref())?
    {
        return Ok(Opened::Proxied(
            proxy_watch(&ctx, &to, req, caller, permit).await?,
        ));
    }
    let h = ctx.group(group)?;
    let shared = h.shared.clone();
    // Join the feed before reading history so nothing falls between the two.
    let member = ctx.fanout.join(&shared, &key, req.prefix);
    if start == 0 {
        // "From now" is at least what the session has already seen of this group.
        let seen = crate::router::Session::from_pb(req.session.as_ref())
            .vector
            .get(group);
        ctx.wait_applied(&h, seen).await?;
    }
    let applied = shared.applied();
    let start = if start == 0 { applied + 1 } else { start };
    if start > applied + 1 {
        let wait = Duration::from_millis(ctx.limits.sync_wait_ms_max);
        if shared.wait_applied(start - 1, wait).await.is_none() {
            return Err(Error::FutureRevision {
                requested: start,
                current: shared.applied(),
            });
        }
    }
    let compacted = shared.compacted();
    if start <= compacted {
        return Err(Error::Compacted {
            requested: start,
            oldest: compacted + 1,
        });
    }
    // A domain that moved into this group: its history here begins after the import (what
    // came before is the old owner's, in another revision space).
    let since = ctx.domain_floor(group, &key);
    if since > 0 && start <= since {
        return Err(Error::Compacted {
            requested: start,
            oldest: since + 1,
        });
    }
    let progress_ms = if req.progress_interval_ms == 0 {
        ctx.limits.watch_progress_interval_ms
    } else {
        u64::from(req.progress_interval_ms)
    };
    let filter = Filter {
        key,
        prefix: req.prefix,
        prev_kv: req.prev_kv,
    };
    let (control_tx, control) = mpsc::channel(COHORT_CONTROL_MAX);
    let node = ctx.node_id;
    let watches = ctx.watches.clone();
    let fanout = ctx.fanout.clone();
    let drop_revision = ctx.limits.inject_drop_watch_revision;
    let follow = Follow {
        placement: ctx.placement.clone(),
        host: ctx.host.clone(),
        wait: Duration::from_millis(ctx.limits.sync_wait_ms_max),
    };
    let out = sink.clone();
    let running = ctx.watches.running();
    tokio::spawn(async move {
        let _running = running;
        let mut w = Watcher {
            shared,
            watches,
            fanout,
            filter,
            out,
            targets: Arc::from([id]),
            ids: vec![(id, permit)],
            control,
            node,
            follow,
            drop_revision,
        };
        w.run(start, member, Duration::from_millis(progress_ms.max(10)))
            .await;
    });
    Ok(Opened::Here(Cohort {
        control: control_tx,
    }))
}

/// The responses of `rx`, then the stream's last word if the watcher left one (an error that
/// ends it) — delivered after everything already queued, and never waiting on the client to be
/// queued itself.
fn with_last(
    rx: impl Stream<Item = Result<pb::WatchResponse, Status>> + Send + 'static,
    last: oneshot::Receiver<Status>,
) -> WatchStream {
    use futures::StreamExt;
    let last = futures::stream::once(last).filter_map(|r| async move { r.ok().map(Err) });
    Box::pin(rx.chain(last))
}

struct Watcher {
    shared: Arc<GroupShared>,
    /// Where the events sent are counted.
    watches: Arc<crate::watches::Watches>,
    /// The router's shared feeds (this watcher joins the one of its key, again after a move
    /// or after falling behind).
    fanout: Arc<Fanout>,
    filter: Filter,
    /// The stream this watcher's responses go on.
    out: Sink,
    /// The watches of that stream it serves (each holding its slot), and their ids as every
    /// response names them.
    ids: Vec<(u64, OwnedSemaphorePermit)>,
    targets: Arc<[u64]>,
    /// Watches joining or leaving (a shared stream's; on a stream of its own, never).
    control: mpsc::Receiver<Control>,
    node: u64,
    follow: Follow,
    /// The test-only bug `Limits::inject_drop_watch_revision`.
    drop_revision: Option<u64>,
}

/// What a watcher needs to follow its domain to a new group (docs/placement.md).
struct Follow {
    placement: Arc<crate::placement::PlacementView>,
    host: Arc<meridian_consensus::Host>,
    wait: Duration,
}

/// Where a watcher stands after its domain's owner changed.
enum Moved {
    /// Still here (no move, or the source has not applied its freeze yet).
    Stay,
    /// Continue on this group's replica from this revision.
    To(Arc<GroupShared>, u64),
    /// The new owner has no replica here: the client re-opens the watch (its router routes it).
    Gone(Status),
}

/// Why a watcher stopped without an error for the client.
pub(crate) struct Closed;

impl Watcher {
    fn header(&self, revision: u64) -> pb::ResponseHeader {
        pb::ResponseHeader {
            group: self.shared.group.0,
            revision,
            node: self.node,
            ..Default::default()
        }
    }

    /// Queues `item` for the client, for every watch this watcher serves.
    async fn send(&self, item: Result<pb::WatchResponse, Status>) -> Result<(), Closed> {
        self.send_to(self.targets.clone(), item).await
    }

    /// Queues `item` for the watches `ids`.
    async fn send_to(
        &self,
        ids: Arc<[u64]>,
        item: Result<pb::WatchResponse, Status>,
    ) -> Result<(), Closed> {
        self.out.put(Out { ids, item }).await
    }

    /// Ends every watch this watcher serves with `status`, after what is queued.
    async fn end(&self, status: Status) {
        if self.out.shared {
            let _ = self.send(Err(status)).await;
        } else {
            // A stream of its own ends with its one watch, after everything queued.
            self.out.cut(status);
        }
    }

    /// Takes a shared stream's request; `Err` once this watcher serves no watch any more.
    async fn on_control(&mut self, c: Control, next: u64) -> Result<(), Closed> {
        match c {
            Control::Attach {
                id,
                group,
                start,
                seen,
                permit,
                reply,
            } => {
                // Where this watcher stands: everything before `next` delivered, nothing after.
                let here = group == self.shared.group
                    && if start == 0 {
                        next > seen
                    } else {
                        start == next
                    };
                if !here || self.ids.len() >= COHORT_CONTROL_MAX {
                    let _ = reply.send(Err(permit));
                    return Ok(());
                }
                if reply.send(Ok(())).is_err() {
                    return Ok(());
                }
                self.ids.push((id, permit));
                self.targets = self.ids.iter().map(|(i, _)| *i).collect();
                // Where the new watch stands, at once (as every watch opens).
                self.send_to(
                    Arc::from([id]),
                    Ok(pb::WatchResponse {
                        header: Some(self.header(next - 1)),
                        events: Vec::new(),
                        progress: true,
                        fragment: false,
                    }),
                )
                .await
            }
            Control::Detach(id) => {
                self.ids.retain(|(i, _)| *i != id);
                if self.ids.is_empty() {
                    return Err(Closed);
                }
                self.targets = self.ids.iter().map(|(i, _)| *i).collect();
                Ok(())
            }
        }
    }

    /// Joins this watcher's feed again (after a move, or after it dropped the watcher).
    fn join(&self) -> Member {
        self.fanout
            .join(&self.shared, &self.filter.key, self.filter.prefix)
    }

    /// Sends the matching events (all of revision <= `upto` and >= `from`), grouped by revision.
    async fn send_events(&self, events: &[Event], from: u64) -> Result<(), Closed> {
        let mut batch: Vec<pb::Event> = Vec::new();
        let mut batch_rev = 0;
        for ev in events
            .iter()
            .filter(|e| e.revision() >= from && self.filter.matches(e))
            .filter(|e| Some(e.revision()) != self.drop_revision)
        {
            if !batch.is_empty() {
                if ev.revision() != batch_rev {
                    self.flush(&mut batch, batch_rev, false).await?;
                } else if batch.len() >= WATCH_BATCH_EVENTS_MAX {
                    // Same revision continues in the next response.
                    self.flush(&mut batch, batch_rev, true).await?;
                }
            }
            batch_rev = ev.revision();
            batch.push(convert::event_out(ev, self.filter.prev_kv));
        }
        if !batch.is_empty() {
            self.flush(&mut batch, batch_rev, false).await?;
        }
        Ok(())
    }

    async fn flush(
        &self,
        batch: &mut Vec<pb::Event>,
        revision: u64,
        fragment: bool,
    ) -> Result<(), Closed> {
        let events = std::mem::take(batch);
        self.watches.sent(events.len() * self.targets.len());
        self.send(Ok(pb::WatchResponse {
            header: Some(self.header(revision)),
            events,
            progress: false,
            fragment,
        }))
        .await
    }

    fn compacted_error(&self, next: u64) -> Status {
        Error::Compacted {
            requested: next,
            oldest: self.shared.compacted() + 1,
        }
        .into()
    }

    /// Replays history from `next`; returns the next revision not yet delivered.
    async fn catch_up(&self, mut next: u64) -> Result<Result<u64, Status>, Closed> {
        loop {
            if next <= self.shared.compacted() {
                return Ok(Err(self.compacted_error(next)));
            }
            // Everything up to `applied` is in the history (it is written before it is published).
            // A later revision may be in it only in part (its batch still being written): it is
            // left to the live notice, which carries it whole.
            let applied = self.shared.applied();
            let mut events = match self.shared.history_from(next, WATCH_BATCH_EVENTS_MAX) {
                Ok(e) => e,
                Err(e) => return Ok(Err(Error::Internal(e.to_string()).into())),
            };
            events.retain(|e| e.revision() <= applied);
            let full = events.len() >= WATCH_BATCH_EVENTS_MAX;
            self.send_events(&events, next).await?;
            let last = events.last().map_or(0, |e| e.revision());
            if full {
                next = last + 1;
                continue;
            }
            return Ok(Ok(next.max(applied + 1).max(last + 1)));
        }
    }

    /// After the map changed: whether the watched domain now lives in another group, and if
    /// so, everything the old group holds has been delivered (it is frozen: nothing comes after
    /// its freeze) — continue at the new group after the import, which re-creates what was
    /// already delivered.
    async fn moved(&self, next: u64) -> Result<(Moved, u64), Closed> {
        let current = self.follow.placement.current();
        let Some(domain) = current.lookup.domain_of(&self.filter.key) else {
            return Ok((Moved::Stay, next));
        };
        if domain.group == self.shared.group || domain.since == 0 {
            return Ok((Moved::Stay, next));
        }
        let frozen = self
            .shared
            .read()
            .frozen_at(&self.filter.key, self.filter.prefix)
            .is_some();
        if !frozen {
            return Ok((Moved::Stay, next));
        }
        // Deliver what the old group applied (up to and past its freeze).
        let next = match self.catch_up(next).await? {
            Ok(n) => n,
            Err(s) => return Ok((Moved::Gone(s), next)),
        };
        let Some(h) = self.follow.host.get(domain.group) else {
            return Ok((
                Moved::Gone(
                    Error::WrongGroup {
                        epoch: current.map.epoch,
                        group: self.shared.group.0,
                    }
                    .into(),
                ),
                next,
            ));
        };
        if h.shared
            .wait_applied(domain.since, self.follow.wait)
            .await
            .is_none()
        {
            return Ok((Moved::Stay, next));
        }
        Ok((Moved::To(h.shared.clone(), domain.since + 1), next))
    }

    /// Takes one item of the feed; the next revision not yet delivered.
    async fn take(&self, item: &Item, next: u64) -> Result<Result<u64, Status>, Closed> {
        match item {
            Item::Events { revision, events } => {
                self.send_events(events, next).await?;
                Ok(Ok(next.max(revision + 1)))
            }
            Item::Reset { compacted } if next <= *compacted => Ok(Err(self.compacted_error(next))),
            Item::Reset { .. } => Ok(Ok(next)),
            Item::Lagged => self.catch_up(next).await,
        }
    }

    async fn run(&mut self, start: u64, mut live: Member, progress: Duration) {
        let mut epochs = self.follow.placement.subscribe();
        let outcome: Result<Result<(), Status>, Closed> = async {
            let mut next = match self.catch_up(start).await? {
                Ok(n) => n,
                Err(s) => return Ok(Err(s)),
            };
            // Tell the client where it stands at once, so a resume never depends on a change.
            self.send(Ok(pb::WatchResponse {
                header: Some(self.header(next - 1)),
                events: Vec::new(),
                progress: true,
                fragment: false,
            }))
            .await?;
            let mut ticker = tokio::time::interval(progress);
            ticker.tick().await;
            let mut check_move = true;
            loop {
                if check_move {
                    let (moved, n) = self.moved(next).await?;
                    next = n;
                    match moved {
                        Moved::Stay => {}
                        Moved::Gone(s) => return Ok(Err(s)),
                        Moved::To(shared, from) => {
                            tracing::debug!(from = %self.shared.group, to = %shared.group, "a watch follows its domain");
                            self.shared = shared;
                            live = self.join();
                            next = match self.catch_up(from).await? {
                                Ok(n) => n,
                                Err(s) => return Ok(Err(s)),
                            };
                        }
                    }
                    // A frozen source that has not yet been released is looked at again on
                    // its next change or tick.
                    check_move = false;
                }
                tokio::select! {
                    _ = epochs.changed() => check_move = true,
                    item = live.recv() => {
                        next = match item {
                            Some(item) => match self.take(&item, next).await? {
                                Ok(n) => n,
                                Err(s) => return Ok(Err(s)),
                            },
                            // Dropped by the feed (it fell behind): the history, then the
                            // feed again — joined first, so nothing falls between.
                            None => {
                                live = self.join();
                                match self.catch_up(next).await? {
                                    Ok(n) => n,
                                    Err(s) => return Ok(Err(s)),
                                }
                            }
                        };
                    }
                    _ = ticker.tick() => {
                        check_move = self.follow.placement.current().lookup
                            .domain_of(&self.filter.key)
                            .is_some_and(|d| d.group != self.shared.group);
                        // Everything the feed has handed out up to `seen` is delivered once
                        // the queue is drained (and this is still a member): claim it.
                        let seen = live.seen();
                        let mut member = true;
                        loop {
                            match live.try_recv() {
                                Ok(item) => {
                                    next = match self.take(&item, next).await? {
                                        Ok(n) => n,
                                        Err(s) => return Ok(Err(s)),
                                    }
                                }
                                Err(mpsc::error::TryRecvError::Empty) => break,
                                Err(mpsc::error::TryRecvError::Disconnected) => {
                                    member = false;
                                    break;
                                }
                            }
                        }
                        if member {
                            next = next.max(seen + 1);
                        }
                        self.send(Ok(pb::WatchResponse {
                            header: Some(self.header(next - 1)),
                            events: Vec::new(),
                            progress: true,
                            fragment: false,
                        })).await?;
                    }
                    Some(c) = self.control.recv() => self.on_control(c, next).await?,
                    _ = self.out.tx.closed() => return Err(Closed),
                }
            }
        }
        .await;
        if let Ok(Err(status)) = outcome {
            self.end(status).await;
        }
    }
}

/// A watch served by a router of another region (residency `forward`, or a group with no
/// replica here): its stream is relayed as it comes, holding one of this node's watch slots.
async fn proxy_watch(
    ctx: &Arc<NodeCtx>,
    to: &[String],
    req: pb::WatchRequest,
    caller: &Caller,
    permit: OwnedSemaphorePermit,
) -> Result<WatchStream, Error> {
    use tokio_stream::StreamExt;
    let upstream = ctx
        .proxy(to, |mut c, _| {
            let r = proxied_request(req.clone(), None, &ctx.region, caller);
            async move { c.watch(r).await }
        })
        .await
        .map_err(Error::Forwarded)?
        .into_inner();
    Ok(Box::pin(upstream.map(move |item| {
        let _held = &permit;
        item
    })))
}
