//! One watch stream per router for all of a client's watches (`Kv/WatchStream`, etcd's shape;
//! docs/watch-streams.md). Each watch is a *member* of its router's hub: the hub sends its
//! create and cancel on the shared stream, and a task hands every response to the members it
//! names. A member that does not read is cut off on its own (its queue full, it ends and
//! resumes from history when it reads again): it never holds up the others.

use crate::pb;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::Status;

/// Responses queued for one watch before it counts as not reading and is cut off.
const MEMBER_QUEUE_MAX: usize = 1024;
/// Creates and cancels queued for the shared stream.
const REQUESTS_MAX: usize = 4096;
/// A stream with watches on it that says nothing for this long is dead (a frozen router keeps
/// TCP open): its watches resume elsewhere. Every watch asks for progress every 2 s
/// (`watch.rs`), so a live stream with watches is never this quiet. One check per stream, not
/// one timer per watch: thousands of watches firing their timers at once cost a burst.
pub(crate) const SILENCE: Duration = Duration::from_secs(6);

/// One response as every watch it names receives it: one allocation shared by all of them,
/// each taking its own copy when it reads (a queue slot is a pointer, so 10,000 queues growing
/// at once cost little).
type Shared = Arc<Result<pb::WatchResponse, Status>>;

/// Takes a response's header into the client's session.
pub(crate) type MergeHeader = Arc<dyn Fn(&pb::ResponseHeader) + Send + Sync>;

/// The shared stream to one router.
pub(crate) struct Hub {
    requests: mpsc::Sender<pb::WatchStreamRequest>,
    /// Each response's header goes into the session once, not once per watch it names.
    merge: MergeHeader,
    members: Mutex<HashMap<u64, mpsc::Sender<Shared>>>,
    next_id: AtomicU64,
    /// The stream ended: new watches need a new hub.
    dead: AtomicBool,
}

/// A client's hubs, by router address.
pub(crate) struct Hubs {
    by_endpoint: tokio::sync::Mutex<BTreeMap<String, Arc<Hub>>>,
    merge: MergeHeader,
}

/// One watch on a hub: its responses, in order. Dropping it cancels the watch.
pub(crate) struct Member {
    id: u64,
    hub: Arc<Hub>,
    rx: mpsc::Receiver<Shared>,
}

impl Member {
    /// The next response; `Ok(None)` once the watch was cut off locally (it did not read) or
    /// its stream ended without a word: the watcher resumes.
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
            by_endpoint: tokio::sync::Mutex::new(BTreeMap::new()),
            merge,
        }
    }

    /// The live hub to `endpoint`, opened on `channel` if there is none.
    pub(crate) async fn get(
        &self,
        endpoint: &str,
        channel: Channel,
        token: Option<&tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
        timeout: Duration,
    ) -> Result<Arc<Hub>, Status> {
        let mut hubs = self.by_endpoint.lock().await;
        if let Some(h) = hubs.get(endpoint) {
            if !h.dead.load(Ordering::Acquire) {
                return Ok(h.clone());
            }
        }
        let hub = Hub::open(channel, token, timeout, self.merge.clone()).await?;
        hubs.insert(endpoint.to_string(), hub.clone());
        Ok(hub)
    }
}

impl Hub {
    async fn open(
        channel: Channel,
        token: Option<&tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
        timeout: Duration,
        merge: MergeHeader,
    ) -> Result<Arc<Self>, Status> {
        let (requests, rx) = mpsc::channel(REQUESTS_MAX);
        let mut client = crate::kv_client(channel);
        let call = client.watch_stream(crate::authorized(
            tokio_stream::wrappers::ReceiverStream::new(rx),
            token,
        ));
        let responses = match tokio::time::timeout(timeout, call).await {
            Ok(r) => r?.into_inner(),
            Err(_) => {
                return Err(Status::unavailable(format!(
                    "the watch stream did not open within {timeout:?}"
                )))
            }
        };
        let hub = Arc::new(Hub {
            requests,
            merge,
            members: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            dead: AtomicBool::new(false),
        });
        tokio::spawn(hub.clone().deliver(responses));
        Ok(hub)
    }

    fn members(&self) -> std::sync::MutexGuard<'_, HashMap<u64, mpsc::Sender<Shared>>> {
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens `request` as a new watch of this stream.
    pub(crate) fn join(self: &Arc<Self>, request: pb::WatchRequest) -> Result<Member, Status> {
        if self.dead.load(Ordering::Acquire) {
            return Err(Status::unavailable("the watch stream ended"));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(MEMBER_QUEUE_MAX);
        self.members().insert(id, tx);
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
        self.requests.try_send(create).map_err(|_| {
            Status::unavailable("the watch stream is not taking requests (closed or full)")
        })?;
        Ok(member)
    }

    /// Forgets watch `id`, and cancels it on the router if `cancel` (it still runs there).
    fn leave(&self, id: u64, cancel: bool) {
        if self.members().remove(&id).is_none() || !cancel {
            return;
        }
        let _ = self.requests.try_send(pb::WatchStreamRequest {
            op: Some(pb::watch_stream_request::Op::Cancel(pb::WatchCancel {
                watch_id: id,
            })),
        });
    }

    /// Hands every response to the watches it names, until the stream ends; then every watch
    /// still on it learns why and resumes.
    async fn deliver(self: Arc<Self>, mut responses: tonic::Streaming<pb::WatchStreamResponse>) {
        let end = loop {
            match tokio::time::timeout(SILENCE, responses.message()).await {
                Ok(Ok(Some(r))) => self.hand_out(r),
                Ok(Ok(None)) => break Status::unavailable("the router ended the watch stream"),
                Ok(Err(status)) => break status,
                Err(_) if self.members().is_empty() => {}
                Err(_) => {
                    break Status::unavailable(format!(
                        "no watch message for {SILENCE:?}; resuming elsewhere"
                    ))
                }
            }
        };
        self.dead.store(true, Ordering::Release);
        let members = std::mem::take(&mut *self.members());
        for (_, tx) in members {
            // A full queue: dropping the sender ends the member, which resumes all the same.
            let _ = tx.try_send(Arc::new(Err(end.clone())));
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
        let mut gone = Vec::new();
        {
            let members = self.members();
            let item: Shared = Arc::new(item);
            for id in &r.watch_ids {
                let Some(tx) = members.get(id) else {
                    continue;
                };
                match tx.try_send(item.clone()) {
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
}
