//! Many watches on one stream (`Kv/WatchStream`, etcd's shape; docs/watch-streams.md). The SDK
//! opens one such stream per connection and carries all that connection's watches on it.
//!
//! What it saves is per-watch work on the hot path. Watches of one stream on the same key,
//! with the same options, that stand at the same revision, are served by one watcher (a
//! *cohort*): each revision is converted, encoded and framed once, in one response that names
//! every watch it is for, and the client hands it to each. A watch joins the newest cohort of
//! its key on its stream when it starts where that cohort stands; otherwise it gets a watcher
//! of its own, which later watches can join. Each watch keeps its own start revision, its own
//! cancel, and its own end (an error names only the watches it ends). The one entry is
//! [`serve`].

use crate::convert;
use crate::ctx::NodeCtx;
use crate::gate::Gate;
use crate::residency::Caller;
use crate::residency::Route;
use crate::watch::{open_watch, Control, Opened, Out, Sink};
use meridian_auth::Op as Access;
use meridian_proto::kv as pb;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::Stream;
use tonic::metadata::MetadataMap;
use tonic::{Status, Streaming};

pub type WatchManyStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchStreamResponse, Status>> + Send>>;

/// Responses buffered per shared stream before its watchers wait for the client.
const STREAM_BUFFER_MAX: usize = 1024;
/// Creates of one stream being opened at once (each its own task, so that a slow one — a
/// session wait, a proxied open — holds up no other); the stream reads no further request
/// while this many are in flight.
const CREATES_IN_FLIGHT_MAX: usize = 64;
/// Longest a new watch waits for the cohort it would join to answer (the cohort may be
/// reading history, or waiting for its client to read); after it, the watch gets a watcher of
/// its own.
const ATTACH_WAIT: Duration = Duration::from_secs(2);
/// Longest a new watch waits for the watcher of its kind that another create of the stream is
/// opening (so that a burst of creates forms one cohort, not one watcher per create in flight);
/// after it, the watch gets a watcher of its own.
const FORM_WAIT: Duration = Duration::from_secs(2);
/// Above this many ids, ended watches are forgotten (checked as the table doubles).
const OPEN_PRUNE_FROM: usize = 1024;

/// What watches of one stream may share a watcher for.
#[derive(Clone, PartialEq, Eq, Hash)]
struct CohortKey {
    key: String,
    prefix: bool,
    prev_kv: bool,
    progress_interval_ms: u32,
}

/// Where one watch of the stream is served.
enum Served {
    /// Its create is in flight (the task numbered `ticket`); a cancel meanwhile marks it, and
    /// the create undoes what it opened.
    Opening { ticket: u64, cancelled: bool },
    /// By a watcher of this node (alone or in a cohort).
    Here(mpsc::Sender<Control>),
    /// By a router of another region: the task relaying its stream.
    Proxied(tokio::task::AbortHandle),
}

impl Served {
    fn ended(&self) -> bool {
        match self {
            Served::Opening { .. } => false,
            Served::Here(c) => c.is_closed(),
            Served::Proxied(h) => h.is_finished(),
        }
    }

    /// Stops serving watch `id` this way.
    async fn stop(self, id: u64) {
        match self {
            Served::Here(control) => {
                let _ = control.send(Control::Detach(id)).await;
            }
            Served::Proxied(h) => h.abort(),
            Served::Opening { .. } => {}
        }
    }
}

/// Whether the first watcher of a kind is being opened (see [`SharedStream::cohort`]).
enum Forming {
    No,
    /// By another create: this receiver hears when that open ends.
    Elsewhere(watch::Receiver<()>),
    /// By this create, which drops the sender when its open ends.
    Here(watch::Sender<()>),
}

/// What a shared stream's request loop and its creates share.
struct State {
    /// The newest watcher of each kind of watch, which later watches try to join.
    cohorts: HashMap<CohortKey, mpsc::Sender<Control>>,
    /// Kinds whose first watcher a create is opening: later creates of the kind wait for it
    /// (the sender drops when that open ends, however it ends).
    forming: HashMap<CohortKey, watch::Receiver<()>>,
    /// Every watch opened on the stream, by id (ended ones until pruned).
    open: HashMap<u64, Served>,
    next_ticket: u64,
}

/// One shared stream.
struct SharedStream {
    ctx: Arc<NodeCtx>,
    gate: Arc<Gate>,
    meta: MetadataMap,
    caller: Caller,
    sink: Sink,
    state: Mutex<State>,
}

/// Serves the watches a client opens and cancels on `requests`, all answered on the returned
/// stream.
pub fn serve(
    ctx: Arc<NodeCtx>,
    gate: Arc<Gate>,
    meta: MetadataMap,
    caller: Caller,
    mut requests: Streaming<pb::WatchStreamRequest>,
) -> WatchManyStream {
    let (sink, rx, last) = Sink::new(&ctx, STREAM_BUFFER_MAX, true);
    let stream = Arc::new(SharedStream {
        ctx,
        gate,
        meta,
        caller,
        sink,
        state: Mutex::new(State {
            cohorts: HashMap::new(),
            forming: HashMap::new(),
            open: HashMap::new(),
            next_ticket: 0,
        }),
    });
    let in_flight = Arc::new(tokio::sync::Semaphore::new(CREATES_IN_FLIGHT_MAX));
    tokio::spawn(async move {
        loop {
            let request = tokio::select! {
                r = requests.message() => r,
                _ = stream.sink.tx.closed() => break,
            };
            // The client closed its side or is gone: the watches opened go on until they end
            // or the client stops reading.
            let Ok(Some(request)) = request else { break };
            match request.op {
                Some(pb::watch_stream_request::Op::Create(c)) => {
                    let slot = tokio::select! {
                        s = in_flight.clone().acquire_owned() => s,
                        _ = stream.sink.tx.closed() => break,
                    };
                    let Ok(slot) = slot else { break };
                    let Some(ticket) = stream.begin(c.watch_id).await else {
                        continue;
                    };
                    let stream = stream.clone();
                    tokio::spawn(async move {
                        let _slot = slot;
                        stream.create(c, ticket).await;
                    });
                }
                Some(pb::watch_stream_request::Op::Cancel(c)) => stream.cancel(c.watch_id).await,
                None => {}
            }
        }
    });
    responses(rx, last)
}

impl SharedStream {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers watch `id` alone with `status` (it ends; the stream goes on).
    async fn refuse(&self, id: u64, status: Status) {
        let _ = self
            .sink
            .put(Out {
                ids: Arc::from([id]),
                item: Err(status),
            })
            .await;
    }

    async fn cancel(&self, id: u64) {
        let stopped = {
            let mut state = self.state();
            match state.open.get_mut(&id) {
                Some(Served::Opening { cancelled, .. }) => {
                    *cancelled = true;
                    None
                }
                Some(_) => state.open.remove(&id),
                None => None,
            }
        };
        if let Some(served) = stopped {
            served.stop(id).await;
        }
    }

    /// Notes that watch `id` is being opened: its ticket, or `None` (refused) when a create
    /// of the same id is still in flight. An id open already is replaced (the SDK never
    /// reuses one).
    async fn begin(&self, id: u64) -> Option<u64> {
        let opening = matches!(self.state().open.get(&id), Some(Served::Opening { .. }));
        if opening {
            let status = Status::invalid_argument(format!(
                "watch_id {id} is still being opened on this stream; use another id"
            ));
            self.refuse(id, status).await;
            return None;
        }
        let (ticket, replaced) = {
            let mut state = self.state();
            if state.open.len() >= OPEN_PRUNE_FROM && state.open.len().is_power_of_two() {
                state.open.retain(|_, s| !s.ended());
            }
            state.cohorts.retain(|_, c| !c.is_closed());
            state.forming.retain(|_, f| f.has_changed().is_ok());
            state.next_ticket += 1;
            let ticket = state.next_ticket;
            let replaced = state.open.insert(
                id,
                Served::Opening {
                    ticket,
                    cancelled: false,
                },
            );
            (ticket, replaced)
        };
        if let Some(served) = replaced {
            served.stop(id).await;
        }
        Some(ticket)
    }

    /// Opens watch `c.watch_id` (its create numbered `ticket`), then records how it is
    /// served — or undoes it if it was cancelled meanwhile.
    async fn create(&self, c: pb::WatchCreate, ticket: u64) {
        let id = c.watch_id;
        let opened = self.open(id, c.request.unwrap_or_default()).await;
        let mine = |state: &State| {
            matches!(
                state.open.get(&id),
                Some(Served::Opening { ticket: t, cancelled: false }) if *t == ticket
            )
        };
        match opened {
            Ok(served) => {
                let undo = {
                    let mut state = self.state();
                    if mine(&state) {
                        state.open.insert(id, served);
                        None
                    } else {
                        if matches!(state.open.get(&id), Some(Served::Opening { ticket: t, .. }) if *t == ticket)
                        {
                            state.open.remove(&id);
                        }
                        Some(served)
                    }
                };
                if let Some(served) = undo {
                    served.stop(id).await;
                }
            }
            Err(status) => {
                let tell = {
                    let mut state = self.state();
                    let tell = mine(&state);
                    if matches!(state.open.get(&id), Some(Served::Opening { ticket: t, .. }) if *t == ticket)
                    {
                        state.open.remove(&id);
                    }
                    tell
                };
                if tell {
                    self.refuse(id, status).await;
                }
            }
        }
    }

    /// Opens watch `id` of `req`: joined to a cohort, or with a watcher of its own, or relayed
    /// from another region.
    async fn open(&self, id: u64, req: pb::WatchRequest) -> Result<Served, Status> {
        let key = convert::watched(&req.key, req.prefix)?;
        convert::revision(req.start_revision, "start_revision")?;
        self.gate
            .check(&self.meta, "watch", &[(Access::Watch, &key)])?;
        let mut permit = self.ctx.watches.open()?;
        let kind = CohortKey {
            key: key.clone(),
            prefix: req.prefix,
            prev_kv: req.prev_kv,
            progress_interval_ms: req.progress_interval_ms,
        };
        let (cohort, forming) = self.cohort(&kind);
        let forming = match forming {
            Forming::Elsewhere(mut formed) => {
                // Another create opens this kind's first watcher: join it once it stands.
                let _ = tokio::time::timeout(FORM_WAIT, formed.changed()).await;
                None
            }
            Forming::Here(done) => Some(done),
            Forming::No => None,
        };
        let cohort = cohort.or_else(|| self.state().cohorts.get(&kind).cloned());
        if let Some(control) = cohort {
            match self.attach(&control, id, &key, &req, permit).await? {
                Ok(()) => return Ok(Served::Here(control)),
                Err(back) => permit = back,
            }
        }
        let opened = open_watch(self.ctx.clone(), req, &self.caller, &self.sink, id, permit).await;
        let mut state = self.state();
        if let Some(done) = forming {
            if state
                .forming
                .get(&kind)
                .is_some_and(|f| f.same_channel(&done.subscribe()))
            {
                state.forming.remove(&kind);
            }
        }
        match opened? {
            Opened::Here(cohort) => {
                state.cohorts.insert(kind, cohort.control.clone());
                Ok(Served::Here(cohort.control))
            }
            Opened::Proxied(upstream) => {
                drop(state);
                let relay = tokio::spawn(relay(upstream, id, self.sink.clone()));
                Ok(Served::Proxied(relay.abort_handle()))
            }
        }
    }

    /// The newest watcher of `kind` on this stream, if any, and otherwise whether another
    /// create is opening one (wait for it) or this create opens it (`Here`: drop it when done).
    fn cohort(&self, kind: &CohortKey) -> (Option<mpsc::Sender<Control>>, Forming) {
        let mut state = self.state();
        if let Some(c) = state.cohorts.get(kind).filter(|c| !c.is_closed()) {
            return (Some(c.clone()), Forming::No);
        }
        if let Some(f) = state.forming.get(kind).filter(|f| f.has_changed().is_ok()) {
            return (None, Forming::Elsewhere(f.clone()));
        }
        let (done, formed) = watch::channel(());
        state.forming.insert(kind.clone(), formed);
        (None, Forming::Here(done))
    }

    /// Asks the cohort behind `control` to serve watch `id` too: `Ok(Err(permit))` (a slot
    /// back) when it does not stand where the watch starts, does not answer in time, or the
    /// watch is not one to join (a region elsewhere serves it; it starts inside a moved-in
    /// domain's import) — then the watch gets a watcher of its own, which checks it in full.
    async fn attach(
        &self,
        control: &mpsc::Sender<Control>,
        id: u64,
        key: &str,
        req: &pb::WatchRequest,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<Result<(), tokio::sync::OwnedSemaphorePermit>, Status> {
        let start = convert::revision(req.start_revision, "start_revision")?;
        let group = if req.prefix {
            self.ctx.route_prefix(key)?
        } else {
            self.ctx.route_key(key)?
        };
        let route =
            self.ctx
                .residency(group, &[(key, req.prefix)], self.caller.proxied.as_deref())?;
        let since = self.ctx.domain_floor(group, key);
        if matches!(route, Route::Proxy(_)) || (since > 0 && start <= since) {
            return Ok(Err(permit));
        }
        let seen = crate::router::Session::from_pb(req.session.as_ref())
            .vector
            .get(group);
        let (reply, mut answer) = oneshot::channel();
        let ask = Control::Attach {
            id,
            group,
            start,
            seen,
            permit,
            reply,
        };
        if let Err(
            mpsc::error::TrySendError::Full(Control::Attach { permit, .. })
            | mpsc::error::TrySendError::Closed(Control::Attach { permit, .. }),
        ) = control.try_send(ask)
        {
            return Ok(Err(permit));
        }
        match tokio::time::timeout(ATTACH_WAIT, &mut answer).await {
            Ok(Ok(r)) => Ok(r),
            // The cohort ended without answering (the slot went with the request).
            Ok(Err(_)) => Ok(Err(self.ctx.watches.open()?)),
            Err(_) => {
                // Too slow: close the answer so that the cohort cannot take the watch from
                // now on, then see whether it did just before.
                answer.close();
                match answer.try_recv() {
                    Ok(r) => Ok(r),
                    Err(_) => Ok(Err(self.ctx.watches.open()?)),
                }
            }
        }
    }
}

/// Relays a proxied watch's stream as watch `id` of the shared stream.
async fn relay(mut upstream: crate::watch::WatchStream, id: u64, sink: Sink) {
    use tokio_stream::StreamExt;
    let ids: Arc<[u64]> = Arc::from([id]);
    while let Some(item) = upstream.next().await {
        let end = item.is_err();
        let sent = sink
            .put(Out {
                ids: ids.clone(),
                item,
            })
            .await;
        if end || sent.is_err() {
            return;
        }
    }
    let _ = sink
        .put(Out {
            ids,
            item: Err(Status::unavailable(
                "the region serving this watch ended its stream; resume it",
            )),
        })
        .await;
}

/// The wire form of one response.
fn response(out: Out) -> pb::WatchStreamResponse {
    let (response, error) = match out.item {
        Ok(r) => (Some(r), None),
        Err(s) => (
            None,
            Some(pb::WatchError {
                code: s.code() as i32,
                message: s.message().to_string(),
                details: s.details().to_vec(),
            }),
        ),
    };
    pb::WatchStreamResponse {
        watch_ids: out.ids.to_vec(),
        response,
        error,
    }
}

/// The responses of `rx`, ended at once by the stream's last word (a cut-off: its client reads
/// nothing, so what is queued would not be read either).
fn responses(rx: mpsc::Receiver<Out>, last: oneshot::Receiver<Status>) -> WatchManyStream {
    struct State {
        rx: mpsc::Receiver<Out>,
        last: Option<oneshot::Receiver<Status>>,
        done: bool,
    }
    let state = State {
        rx,
        last: Some(last),
        done: false,
    };
    Box::pin(futures::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        loop {
            let Some(last) = s.last.as_mut() else {
                let out = s.rx.recv().await?;
                return Some((Ok(response(out)), s));
            };
            tokio::select! {
                biased;
                word = last => match word {
                    Ok(status) => {
                        s.done = true;
                        return Some((Err(status), s));
                    }
                    Err(_) => s.last = None,
                },
                out = s.rx.recv() => {
                    let out = out?;
                    return Some((Ok(response(out)), s));
                }
            }
        }
    }))
}
