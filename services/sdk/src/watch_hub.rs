//! One watch stream per router for all of a client's watches (`Kv/WatchStream`, etcd's shape;
//! docs/watch-streams.md). Each watch is a *member* of its router's hub: the hub sends its
//! create and cancel on the shared stream, and a task hands every response to the members it
//! names. A member that does not read is cut off on its own (its queue full, it ends and
//! resumes from history when it reads again): it never holds up the others. A member that
//! hears nothing for [`SILENCE`] is cut off the same way (checked by one sweep per stream, not
//! a timer per watch), and so is every member of a stream that goes quiet.
//!
//! A hub lives while its client or a member holds it: then its request stream ends, the
//! router ends its side, and the task delivering responses ends.

use crate::pb;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::Status;

/// Responses queued for one watch before it counts as not reading and is cut off.
const MEMBER_QUEUE_MAX: usize = 1024;
/// Creates queued for the shared stream (a join beyond it fails as Unavailable and retries).
const CREATES_MAX: usize = 4096;
/// A watch (or a stream with watches on it) that hears nothing for this long is taken as dead
/// (a frozen router keeps TCP open): it resumes elsewhere. Every watch asks for progress every
/// 2 s (`watch.rs`), so a live one is never this quiet.
pub(crate) const SILENCE: Duration = Duration::from_secs(6);
/// How often the hub looks for silent members.
const SWEEP: Duration = Duration::from_secs(1);

/// One response as every watch it names receives it: one allocation shared by all of them,
/// each taking its own copy when it reads (a queue slot is a pointer, so 10,000 queues growing
/// at once cost little).
type Shared = Arc<Result<pb::WatchResponse, Status>>;

/// Takes a response's header into the client's session.
pub(crate) type MergeHeader = Arc<dyn Fn(&pb::ResponseHeader) + Send + Sync>;

/// A member as the hub knows it: where its responses go, and when it last got one.
struct Slot {
    tx: mpsc::Sender<Shared>,
    heard: Instant,
}

/// Cancels waiting to be sent. Not a bounded queue: each member adds itself at most once, so
/// it never holds more ids than the client has watches, and a cancel is never dropped.
#[derive(Default)]
struct Cancels {
    ids: Mutex<Vec<u64>>,
    wake: Notify,
}

/// The shared stream to one router.
pub(crate) struct Hub {
    creates: mpsc::Sender<pb::WatchStreamRequest>,
    cancels: Arc<Cancels>,
    /// Each response's header goes into the session once, not once per watch it names.
    merge: MergeHeader,
    members: Mutex<HashMap<u64, Slot>>,
    next_id: AtomicU64,
    /// The stream ended: new watches need a new hub (set under the members' lock).
    dead: AtomicBool,
}

/// What a client knows of one router's shared stream.
#[derive(Default)]
enum Known {
    #[default]
    None,
    Live(Arc<Hub>),
    /// The router has no `WatchStream` (an older version): a stream per watch.
    Unsupported,
}

/// A client's hubs, by router address (each behind its own lock: a router that does not
/// answer holds up only the watches opening on it).
pub(crate) struct Hubs {
    by_endpoint: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<Known>>>>,
    merge: MergeHeader,
}

/// One watch on a hub: its responses, in order. Dropping it cancels the watch.
pub(crate) struct Member {
    id: u64,
    hub: Arc<Hub>,
    rx: mpsc::Receiver<Shared>,
}

impl Member {
    /// The next response; `Ok(None)` once the watch was cut off locally (it did not read, or
    /// heard nothing for [`SILENCE`]): the watcher resumes.
    pub(crate) async fn message(&mut self) -> Result<Option<pb::WatchResponse>, Status> {
        let Some(shared) = self.rx.recv().await else {
            return Ok(None);
        };
        match Arc::try_unwrap(shared) {
            Ok(item) => item.map(Some),
            Err(shared) => (*shared).clone().map(Some),
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.hub.leave(self.id, true);
    }
}

impl Hubs {
    pub(crate) fn new(merge: MergeHeader) -> Self {
        Self {
            by_endpoint: Mutex::new(BTreeMap::new()),
            merge,
        }
    }

    /// The live hub to `endpoint`, opened on `channel` if there is none; `Ok(None)` when the
    /// router has no shared streams.
    pub(crate) async fn get(
        &self,
        endpoint: &str,
        channel: Channel,
        token: Option<&tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
        timeout: Duration,
    ) -> Result<Option<Arc<Hub>>, Status> {
        let known = self
            .by_endpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(endpoint.to_string())
            .or_default()
            .clone();
        let mut known = known.lock().await;
        match &*known {
            Known::Live(h) if !h.dead.load(Ordering::Acquire) => return Ok(Some(h.clone())),
            Known::Unsupported => return Ok(None),
            _ => {}
        }
        match Hub::open(channel, token, timeout, self.merge.clone()).await {
            Ok(hub) => {
                *known = Known::Live(hub.clone());
                Ok(Some(hub))
            }
            Err(s) if s.code() == tonic::Code::Unimplemented => {
                *known = Known::Unsupported;
                Ok(None)
            }
            Err(s) => Err(s),
        }
    }
}

/// The request side of a shared stream: cancels first, then creates; it ends once the hub is
/// gone (its create sender dropped).
fn requests(
    creates: mpsc::Receiver<pb::WatchStreamRequest>,
    cancels: Arc<Cancels>,
) -> impl futures::Stream<Item = pb::WatchStreamRequest> + Send + 'static {
    futures::stream::unfold((creates, cancels), |(mut creates, cancels)| async move {
        loop {
            let id = cancels.ids.lock().unwrap_or_else(|p| p.into_inner()).pop();
            if let Some(id) = id {
                let cancel = pb::WatchStreamRequest {
                    op: Some(pb::watch_stream_request::Op::Cancel(pb::WatchCancel {
                        watch_id: id,
                    })),
                };
                return Some((cancel, (creates, cancels)));
            }
            tokio::select! {
                r = creates.recv() => return r.map(|r| (r, (creates, cancels))),
                _ = cancels.wake.notified() => {}
            }
        }
    })
}

impl Hub {
    async fn open(
        channel: Channel,
        token: Option<&tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
        timeout: Duration,
        merge: MergeHeader,
    ) -> Result<Arc<Self>, Status> {
        let (creates, rx) = mpsc::channel(CREATES_MAX);
        let cancels = Arc::new(Cancels::default());
        let mut client = crate::kv_client(channel);
        let call = client.watch_stream(crate::authorized(requests(rx, cancels.clone()), token));
        let responses = match tokio::time::timeout(timeout, call).await {
            Ok(r) => r?.into_inner(),
            Err(_) => {
                return Err(Status::unavailable(format!(
                    "the watch stream did not open within {timeout:?}"
                )))
            }
        };
        let hub = Arc::new(Hub {
            creates,
            cancels,
            merge,
            members: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            dead: AtomicBool::new(false),
        });
        tokio::spawn(deliver(Arc::downgrade(&hub), responses));
        Ok(hub)
    }

    fn members(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Slot>> {
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens `request` as a new watch of this stream.
    pub(crate) fn join(self: &Arc<Self>, request: pb::WatchRequest) -> Result<Member, Status> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(MEMBER_QUEUE_MAX);
        {
            let mut members = self.members();
            if self.dead.load(Ordering::Acquire) {
                return Err(Status::unavailable("the watch stream ended"));
            }
            let heard = Instant::now();
            members.insert(id, Slot { tx, heard });
        }
        let member = Member {
            id,
            hub: self.clone(),
            rx,
        };
        let create = pb::WatchStreamRequest {
            op: Some(pb::watch_stream_request::Op::Create(pb::WatchCreate {
                watch_id: id,
                request: Some(request),
            })),
        };
        // On failure the member is dropped: it leaves (and cancels what was never created,
        // which the router ignores).
        self.creates.try_send(create).map_err(|_| {
            Status::unavailable("the watch stream is not taking creates (closed or full)")
        })?;
        Ok(member)
    }

    /// Forgets watch `id`, and cancels it on the router if `cancel` (it still runs there).
    fn leave(&self, id: u64, cancel: bool) {
        if self.members().remove(&id).is_none() || !cancel {
            return;
        }
        self.cancels
            .ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(id);
        self.cancels.wake.notify_one();
    }

    /// Cuts off the members that heard nothing for [`SILENCE`]: they resume (elsewhere if
    /// their router is gone).
    fn sweep(&self, now: Instant) {
        let quiet: Vec<u64> = self
            .members()
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.heard) >= SILENCE)
            .map(|(id, _)| *id)
            .collect();
        for id in quiet {
            self.leave(id, true);
        }
    }

    fn hand_out(&self, r: pb::WatchStreamResponse) {
        let item: Result<pb::WatchResponse, Status> = match (r.response, r.error) {
            (_, Some(e)) => Err(Status::with_details(
                tonic::Code::from(e.code),
                e.message,
                e.details.into(),
            )),
            (Some(resp), None) => {
                if let Some(h) = resp.header.as_ref() {
                    (self.merge)(h);
                }
                Ok(resp)
            }
            (None, None) => return,
        };
        let ended = item.is_err();
        let now = Instant::now();
        let mut gone = Vec::new();
        {
            let mut members = self.members();
            let item: Shared = Arc::new(item);
            for id in &r.watch_ids {
                let Some(slot) = members.get_mut(id) else {
                    continue;
                };
                slot.heard = now;
                match slot.tx.try_send(item.clone()) {
                    Ok(()) if !ended => {}
                    // Ended by the router: forget it (no cancel needed).
                    Ok(()) => gone.push((*id, false)),
                    // Not reading: cut off on its own; it resumes when it reads again.
                    Err(mpsc::error::TrySendError::Full(_)) => gone.push((*id, true)),
                    // Dropped, and its cancel not sent yet.
                    Err(mpsc::error::TrySendError::Closed(_)) => gone.push((*id, true)),
                }
            }
        }
        for (id, cancel) in gone {
            self.leave(id, cancel);
        }
    }

    /// The stream ended with `why`: every member still on it learns it and resumes.
    fn end(&self, why: Status) {
        let members = {
            let mut members = self.members();
            self.dead.store(true, Ordering::Release);
            std::mem::take(&mut *members)
        };
        // Whatever ended the stream (a cut-off, a transport error), it is not about any one
        // watch: each resumes as after a disconnect.
        let why = Status::unavailable(format!("the watch stream ended: {}", why.message()));
        for (_, slot) in members {
            // A full queue: dropping the sender ends the member, which resumes all the same.
            let _ = slot.tx.try_send(Arc::new(Err(why.clone())));
        }
    }
}

/// Hands every response to the watches it names until the stream ends or the hub is gone.
async fn deliver(hub: Weak<Hub>, mut responses: tonic::Streaming<pb::WatchStreamResponse>) {
    let mut sweep = tokio::time::interval(SWEEP);
    let mut heard = Instant::now();
    let end = loop {
        tokio::select! {
            m = responses.message() => {
                let Some(h) = hub.upgrade() else { return };
                match m {
                    Ok(Some(r)) => {
                        heard = Instant::now();
                        h.hand_out(r);
                    }
                    Ok(None) => break Status::unavailable("the router ended the watch stream"),
                    Err(status) => break status,
                }
            }
            _ = sweep.tick() => {
                let Some(h) = hub.upgrade() else { return };
                let now = Instant::now();
                if h.members().is_empty() {
                    heard = now;
                } else if now.saturating_duration_since(heard) >= SILENCE {
                    break Status::unavailable(format!("no watch message for {SILENCE:?}"));
                } else {
                    h.sweep(now);
                }
            }
        }
    };
    if let Some(h) = hub.upgrade() {
        h.end(end);
    }
}
