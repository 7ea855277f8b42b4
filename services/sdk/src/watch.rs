//! A watch that survives disconnects: after a stream error it reconnects (to the next endpoint
//! if needed) and resumes from the revision after the last one it delivered, so the caller sees
//! every change exactly once and in order. `Compacted` ends it: the caller re-lists.
//!
//! All of a client's watches to one router travel on one shared stream (`watch_hub.rs`); a
//! router that does not offer shared streams gets a stream per watch.

use crate::watch_hub::Member;
use crate::{pb, Client, Error};
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

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

/// Where a watcher's responses come from.
enum Feed {
    /// Its place on the client's shared stream to the router.
    Shared(Member),
    /// A stream of its own (a router without shared streams).
    Own(Box<Streaming<pb::WatchResponse>>),
}

impl Feed {
    /// Whether this is a shared stream's: the hub takes its headers into the client's
    /// session (once per response for all the watches it names) and watches it for silence.
    fn merged(&self) -> bool {
        matches!(self, Feed::Shared(_))
    }

    async fn message(&mut self) -> Result<Option<pb::WatchResponse>, Status> {
        match self {
            Feed::Shared(m) => m.message().await,
            Feed::Own(s) => s.message().await,
        }
    }
}

pub struct Watcher {
    client: Client,
    req: pb::WatchRequest,
    stream: Option<Feed>,
    /// The response that confirmed the open, not yet taken.
    first: Option<pb::WatchResponse>,
    /// Next revision not yet delivered (0: not known yet; the first response fixes it).
    next: u64,
    /// Reconnections made so far.
    pub reconnects: u64,
    /// Events of revision `next` already delivered (it arrived in fragments, not all yet).
    partial: usize,
    /// Events still to drop after a resume that restarted a partly delivered revision.
    skip: usize,
    /// When the current stream last said anything, and the timer that checks for silence
    /// (moved only when it fires, not per message: thousands of watches share a client).
    heard: tokio::time::Instant,
    silence_check: std::pin::Pin<Box<tokio::time::Sleep>>,
}

const RESUME_BACKOFF_MS: u64 = 100;
/// Progress interval the watcher asks for; silence for `SILENCE_LIMIT` of them means the
/// stream is dead (e.g. the server is frozen) and the watcher resumes elsewhere (on a shared
/// stream the hub checks this, `watch_hub::SILENCE`).
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
            first: None,
            next,
            reconnects: 0,
            partial: 0,
            skip: 0,
            heard: tokio::time::Instant::now(),
            silence_check: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }

    /// Drops the current stream; the next call to [`Watcher::next`] resumes (on the current
    /// endpoint) exactly after the last event delivered.
    pub fn reconnect(&mut self) {
        self.first = None;
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
        let (ep, channel) = self.client.channel()?;
        let timeout = self.client.opts().rpc_timeout;
        match tokio::time::timeout(timeout, self.open_on(&ep, channel, req)).await {
            Ok(Ok((feed, first))) => {
                self.stream = Some(feed);
                self.first = first;
                self.heard = tokio::time::Instant::now();
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

    /// Opens `req` on the client's shared stream to `ep`, or on a stream of its own if the
    /// router has no shared streams; with the response that confirmed it.
    async fn open_on(
        &self,
        ep: &str,
        channel: Channel,
        req: pb::WatchRequest,
    ) -> Result<(Feed, Option<pb::WatchResponse>), Status> {
        let token = self.client.token();
        let timeout = self.client.opts().rpc_timeout;
        match self
            .client
            .hubs()
            .get(ep, channel.clone(), token, timeout)
            .await?
        {
            Some(hub) => {
                let mut member = hub.join(req)?;
                // The first answer says whether the router took the watch.
                match member.message().await? {
                    Some(first) => Ok((Feed::Shared(member), Some(first))),
                    None => Err(Status::unavailable(
                        "the watch stream ended before the watch opened",
                    )),
                }
            }
            // A router without shared streams: a stream of its own.
            None => {
                let mut c = crate::kv_client(channel);
                let s = c.watch(crate::authorized(req, token)).await?;
                Ok((Feed::Own(Box::new(s.into_inner())), None))
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
            let merged = stream.merged();
            let message = match self.first.take() {
                Some(first) => Ok(Some(first)),
                // The hub watches its stream for silence, once for all its watches.
                None if merged => stream.message().await,
                None => loop {
                    tokio::select! {
                        m = stream.message() => {
                            self.heard = tokio::time::Instant::now();
                            break m;
                        }
                        _ = &mut self.silence_check => {
                            let quiet_until = self.heard + silence;
                            if tokio::time::Instant::now() >= quiet_until {
                                break Err(tonic::Status::unavailable(format!(
                                    "no watch message for {silence:?}; resuming elsewhere"
                                )));
                            }
                            self.silence_check.as_mut().reset(quiet_until);
                        }
                    }
                },
            };
            match message {
                Ok(Some(resp)) => {
                    outage_started = None;
                    let revision = resp.header.as_ref().map_or(0, |h| h.revision);
                    if !merged {
                        self.client.merge_header(resp.header.as_ref());
                    }
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
