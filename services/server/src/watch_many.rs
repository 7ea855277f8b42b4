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
use crate::watch::{open_watch, Closed, Control, Opened, Out, Sink};
use meridian_auth::Op as Access;
use meridian_proto::kv as pb;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::Stream;
use tonic::metadata::MetadataMap;
use tonic::{Status, Streaming};

pub type WatchManyStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchStreamResponse, Status>> + Send>>;

/// Responses buffered per shared stream before its watchers wait for the client.
const STREAM_BUFFER_MAX: usize = 1024;
/// Longest a new watch waits for the cohort it would join to answer (the cohort may be
/// reading history); after it, the watch gets a watcher of its own.
const ATTACH_WAIT: Duration = Duration::from_millis(500);
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
    /// By a watcher of this node (alone or in a cohort).
    Here(mpsc::Sender<Control>),
    /// By a router of another region: the task relaying its stream.
    Proxied(tokio::task::AbortHandle),
}

impl Served {
    fn ended(&self) -> bool {
        match self {
            Served::Here(c) => c.is_closed(),
            Served::Proxied(h) => h.is_finished(),
        }
    }
}

/// One shared stream's state, owned by the task reading its requests.
struct SharedStream {
    ctx: Arc<NodeCtx>,
    gate: Arc<Gate>,
    meta: MetadataMap,
    caller: Caller,
    sink: Sink,
    /// The newest watcher of each kind of watch, which later watches try to join.
    cohorts: HashMap<CohortKey, mpsc::Sender<Control>>,
    /// Every watch opened on the stream, by id (ended ones until pruned).
    open: HashMap<u64, Served>,
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
    let mut stream = SharedStream {
        ctx,
        gate,
        meta,
        caller,
        sink,
        cohorts: HashMap::new(),
        open: HashMap::new(),
    };
    tokio::spawn(async move {
        loop {
            let request = tokio::select! {
                r = requests.message() => r,
                _ = stream.sink.tx.closed() => break,
            };
            let op = match request {
                Ok(Some(r)) => r.op,
                // The client closed its side, or the connection is gone: the watches live on
                // until the response side closes.
                Ok(None) | Err(_) => break,
            };
            let done = match op {
                Some(pb::watch_stream_request::Op::Create(c)) => stream.create(c).await,
                Some(pb::watch_stream_request::Op::Cancel(c)) => {
                    stream.cancel(c.watch_id).await;
                    Ok(())
                }
                None => Ok(()),
            };
            if done.is_err() {
                break;
            }
        }
        // The request side ended; the watches end when the client stops reading.
        if !stream.open.is_empty() {
            stream.sink.tx.closed().await;
        }
        for served in stream.open.values() {
            if let Served::Proxied(h) = served {
                h.abort();
            }
        }
    });
    responses(rx, last)
}

impl SharedStream {
    /// Answers watch `id` alone with `status` (it ends; the stream goes on).
    async fn refuse(&self, id: u64, status: Status) -> Result<(), Closed> {
        self.sink
            .put(Out {
                ids: Arc::from([id]),
                item: Err(status),
            })
            .await
    }

    async fn cancel(&mut self, id: u64) {
        match self.open.remove(&id) {
            Some(Served::Here(control)) => {
                let _ = control.send(Control::Detach(id)).await;
            }
            Some(Served::Proxied(h)) => h.abort(),
            None => {}
        }
    }

    async fn create(&mut self, c: pb::WatchCreate) -> Result<(), Closed> {
        let id = c.watch_id;
        let req = c.request.unwrap_or_default();
        // An id in use is replaced (the SDK never reuses one).
        self.cancel(id).await;
        if self.open.len() >= OPEN_PRUNE_FROM && self.open.len().is_power_of_two() {
            self.open.retain(|_, s| !s.ended());
        }
        self.cohorts.retain(|_, c| !c.is_closed());
        let key = if req.prefix {
            convert::prefix(&req.key)
        } else {
            convert::key(&req.key)
        };
        let key = match key {
            Ok(k) => k,
            Err(e) => return self.refuse(id, e.into()).await,
        };
        if let Err(status) = self
            .gate
            .check(&self.meta, "watch", &[(Access::Watch, &key)])
        {
            return self.refuse(id, status).await;
        }
        let mut permit = match self.ctx.watches.open() {
            Ok(p) => p,
            Err(e) => return self.refuse(id, e.into()).await,
        };
        let kind = CohortKey {
            key: key.clone(),
            prefix: req.prefix,
            prev_kv: req.prev_kv,
            progress_interval_ms: req.progress_interval_ms,
        };
        if let Some(control) = self.cohorts.get(&kind).cloned() {
            match self.attach(&control, id, &key, &req, permit).await {
                Ok(Ok(())) => {
                    self.open.insert(id, Served::Here(control));
                    return Ok(());
                }
                Ok(Err(back)) => permit = back,
                Err(status) => return self.refuse(id, status).await,
            }
        }
        match open_watch(self.ctx.clone(), req, &self.caller, &self.sink, id, permit).await {
            Ok(Opened::Here(cohort)) => {
                self.cohorts.insert(kind, cohort.control.clone());
                self.open.insert(id, Served::Here(cohort.control));
                Ok(())
            }
            Ok(Opened::Proxied(upstream)) => {
                let sink = self.sink.clone();
                let pump = tokio::spawn(relay(upstream, id, sink));
                self.open.insert(id, Served::Proxied(pump.abort_handle()));
                Ok(())
            }
            Err(e) => self.refuse(id, e.into()).await,
        }
    }

    /// Asks the cohort behind `control` to serve watch `id` too: `Ok(Err(permit))` (the slot
    /// back) when it does not stand where the watch starts, or does not answer in time.
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
        let seen = crate::router::Session::from_pb(req.session.as_ref())
            .vector
            .get(group);
        let (reply, answer) = oneshot::channel();
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
        match tokio::time::timeout(ATTACH_WAIT, answer).await {
            Ok(Ok(r)) => Ok(r),
            // The cohort did not answer (it ends the request with the slot if it later does):
            // a slot of its own.
            _ => Ok(Err(self.ctx.watches.open()?)),
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
