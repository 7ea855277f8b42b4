//! A watch that survives disconnects: after a stream error it reconnects (to the next endpoint
//! if needed) and resumes from the revision after the last one it delivered, so the caller sees
//! every change exactly once and in order. `Compacted` ends it: the caller re-lists.

use crate::{pb, Client, Error};
use std::time::Duration;
use tonic::Streaming;

#[derive(Debug, Clone)]
pub enum WatchEvent {
    /// Changes of one revision (or part of a large one), in order.
    Changes {
        revision: u64,
        events: Vec<pb::Event>,
    },
    /// Everything up to `revision` has been delivered.
    Progress { revision: u64 },
}

pub struct Watcher {
    client: Client,
    req: pb::WatchRequest,
    stream: Option<Streaming<pb::WatchResponse>>,
    /// Next revision not yet delivered (0: not known yet; the first response fixes it).
    next: u64,
    /// Reconnections made so far.
    pub reconnects: u64,
    /// Events of revision `next` already delivered (it arrived in fragments, not all yet).
    partial: usize,
    /// Events still to drop after a resume that restarted a partly delivered revision.
    skip: usize,
}

const RESUME_BACKOFF_MS: u64 = 100;
/// Progress interval the watcher asks for; silence for `SILENCE_LIMIT` of them means the
/// stream is dead (e.g. the server is frozen) and the watcher resumes elsewhere.
const PROGRESS_INTERVAL_MS: u32 = 2_000;
const SILENCE_LIMIT: u32 = 3;

impl Watcher {
    pub(crate) fn new(client: Client, mut req: pb::WatchRequest) -> Self {
        let next = req.start_revision.max(0) as u64;
        if req.progress_interval_ms == 0 {
            req.progress_interval_ms = PROGRESS_INTERVAL_MS;
        }
        Self {
            client,
            req,
            stream: None,
            next,
            reconnects: 0,
            partial: 0,
            skip: 0,
        }
    }

    /// Drops the current stream; the next call to [`Watcher::next`] resumes (on the current
    /// endpoint) exactly after the last event delivered.
    pub fn reconnect(&mut self) {
        if self.stream.take().is_some() {
            self.reconnects += 1;
        }
    }

    /// The next revision this watcher will deliver.
    pub fn next_revision(&self) -> u64 {
        self.next
    }

    async fn open(&mut self) -> Result<(), Error> {
        let mut req = self.req.clone();
        req.start_revision = self.next as i64;
        self.skip = self.partial;
        let (ep, mut c) = self.client.client()?;
        let req = crate::authorized(req, self.client.token());
        match tokio::time::timeout(self.client.opts().rpc_timeout, c.watch(req)).await {
            Ok(Ok(s)) => {
                self.stream = Some(s.into_inner());
                Ok(())
            }
            Ok(Err(status)) => {
                let answered = meridian_proto::io::refused_by_service(&status);
                let e = Error::from_status(status);
                if e.is_retryable() {
                    self.client.rotate(&ep, answered);
                }
                Err(e)
            }
            Err(_) => {
                self.client.rotate(&ep, false);
                Err(Error::Unavailable(format!(
                    "{ep}: watch did not open in time"
                )))
            }
        }
    }

    /// The next event. Retries transparently for up to the client's call timeout per outage.
    pub async fn next(&mut self) -> Result<WatchEvent, Error> {
        let deadline_len = self.client.opts().call_timeout;
        let mut outage_started: Option<tokio::time::Instant> = None;
        loop {
            if self.stream.is_none() {
                match self.open().await {
                    Ok(()) => {}
                    Err(e) if e.is_retryable() => {
                        let start = *outage_started.get_or_insert_with(tokio::time::Instant::now);
                        if start.elapsed() > deadline_len {
                            return Err(e);
                        }
                        tokio::time::sleep(Duration::from_millis(RESUME_BACKOFF_MS)).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let Some(stream) = self.stream.as_mut() else {
                continue;
            };
            let silence = Duration::from_millis(u64::from(
                self.req.progress_interval_ms.saturating_mul(SILENCE_LIMIT),
            ));
            let message = match tokio::time::timeout(silence, stream.message()).await {
                Ok(m) => m,
                Err(_) => Err(tonic::Status::unavailable(format!(
                    "no watch message for {silence:?}; resuming elsewhere"
                ))),
            };
            match message {
                Ok(Some(resp)) => {
                    outage_started = None;
                    let revision = resp.header.as_ref().map_or(0, |h| h.revision);
                    self.client.merge_header(resp.header.as_ref());
                    if resp.progress {
                        self.next = self.next.max(revision + 1);
                        return Ok(WatchEvent::Progress { revision });
                    }
                    let mut events = resp.events;
                    if self.skip > 0 && revision == self.next {
                        // Resumed in the middle of a revision: drop what was delivered before.
                        let n = self.skip.min(events.len());
                        events.drain(..n);
                        self.skip -= n;
                    }
                    if resp.fragment {
                        // More of this revision follows: a resume must restart it.
                        if revision != self.next {
                            self.partial = 0;
                        }
                        self.next = revision;
                        self.partial += events.len();
                    } else {
                        self.next = self.next.max(revision + 1);
                        self.partial = 0;
                        self.skip = 0;
                    }
                    if events.is_empty() {
                        continue;
                    }
                    return Ok(WatchEvent::Changes { revision, events });
                }
                Ok(None) => {
                    self.stream = None;
                    self.reconnects += 1;
                    let start = *outage_started.get_or_insert_with(tokio::time::Instant::now);
                    if start.elapsed() > deadline_len {
                        return Err(Error::Unavailable(format!(
                            "watch streams kept ending for {deadline_len:?}"
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(RESUME_BACKOFF_MS)).await;
                }
                Err(status) => {
                    let answered = meridian_proto::io::refused_by_service(&status);
                    let e = Error::from_status(status);
                    if matches!(
                        e,
                        Error::Compacted { .. }
                            | Error::InvalidArgument { .. }
                            | Error::FutureRevision { .. }
                    ) {
                        return Err(e);
                    }
                    let ep = self.client.current_endpoint();
                    self.client.rotate(&ep, answered);
                    self.stream = None;
                    self.reconnects += 1;
                    let start = *outage_started.get_or_insert_with(tokio::time::Instant::now);
                    if start.elapsed() > deadline_len {
                        return Err(e);
                    }
                }
            }
        }
    }
}
