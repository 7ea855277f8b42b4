//! The key-value verbs of [`Client`]: put, get, range, delete, txn, status and watch. Each is
//! one operation of the session: `Client::op` keeps the session's bookkeeping around the
//! retry loop (`lib.rs`).

use crate::{pb, timed, Client, Consistency, Error, OpKind, Watcher};

fn read_kind(c: Consistency) -> OpKind {
    match c {
        Consistency::Stale { .. } => OpKind::StaleRead,
        _ => OpKind::Read,
    }
}

impl Client {
    pub async fn put(
        &self,
        key: &str,
        value: impl Into<Vec<u8>>,
    ) -> Result<pb::PutResponse, Error> {
        self.put_request(pb::PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.into(),
            ..Default::default()
        })
        .await
    }

    pub async fn put_request(&self, mut req: pb::PutRequest) -> Result<pb::PutResponse, Error> {
        let resp = self
            .op(
                OpKind::Write,
                |r: &pb::PutResponse| r.header.as_ref(),
                |mut c, t| {
                    req.session = Some(self.session());
                    let r = timed(req.clone(), t);
                    async move { c.put(r).await.map(|r| r.into_inner()) }
                },
            )
            .await?;
        Ok(resp)
    }

    pub async fn get(&self, key: &str) -> Result<Option<pb::KeyValue>, Error> {
        Ok(self.get_with(key, Consistency::Sequential).await?.kv)
    }

    pub async fn get_with(
        &self,
        key: &str,
        consistency: Consistency,
    ) -> Result<pb::GetResponse, Error> {
        self.get_request(key.as_bytes().to_vec(), consistency).await
    }

    pub async fn get_request(
        &self,
        key: Vec<u8>,
        consistency: Consistency,
    ) -> Result<pb::GetResponse, Error> {
        let resp = self
            .op(
                read_kind(consistency),
                |r: &pb::GetResponse| r.header.as_ref(),
                |mut c, t| {
                    let r = timed(
                        pb::GetRequest {
                            key: key.clone(),
                            read: Some(self.read_options(consistency)),
                            session: Some(self.session()),
                        },
                        t,
                    );
                    async move { c.get(r).await.map(|r| r.into_inner()) }
                },
            )
            .await?;
        Ok(resp)
    }

    pub async fn range(
        &self,
        mut req: pb::RangeRequest,
        consistency: Consistency,
    ) -> Result<pb::RangeResponse, Error> {
        let resp = self
            .op(
                read_kind(consistency),
                |r: &pb::RangeResponse| r.header.as_ref(),
                |mut c, t| {
                    req.read = Some(self.read_options(consistency));
                    req.session = Some(self.session());
                    let r = timed(req.clone(), t);
                    async move { c.range(r).await.map(|r| r.into_inner()) }
                },
            )
            .await?;
        Ok(resp)
    }

    /// Every key under `prefix`, following continuations.
    pub async fn range_all(
        &self,
        prefix: &str,
        consistency: Consistency,
    ) -> Result<Vec<pb::KeyValue>, Error> {
        Ok(self.range_all_at(prefix, consistency).await?.0)
    }

    /// As [`Client::range_all`], with the revision the first page was read at: a watch from
    /// the revision after it misses nothing (later pages may stand at later revisions, so it
    /// may repeat what they already hold).
    pub async fn range_all_at(
        &self,
        prefix: &str,
        consistency: Consistency,
    ) -> Result<(Vec<pb::KeyValue>, u64), Error> {
        let mut out = Vec::new();
        let mut after = Vec::new();
        let mut revision = None;
        loop {
            let page = self
                .range(
                    pb::RangeRequest {
                        prefix: prefix.as_bytes().to_vec(),
                        after: after.clone(),
                        ..Default::default()
                    },
                    consistency,
                )
                .await?;
            revision.get_or_insert(page.header.as_ref().map_or(0, |h| h.revision));
            let more = page.more;
            if let Some(last) = page.kvs.last() {
                after = last.key.as_bytes().to_vec();
            }
            out.extend(page.kvs);
            if !more {
                return Ok((out, revision.unwrap_or(0)));
            }
        }
    }

    pub async fn list(
        &self,
        mut req: pb::ListRequest,
        consistency: Consistency,
    ) -> Result<pb::ListResponse, Error> {
        let resp = self
            .op(
                read_kind(consistency),
                |r: &pb::ListResponse| r.header.as_ref(),
                |mut c, t| {
                    req.read = Some(self.read_options(consistency));
                    req.session = Some(self.session());
                    let r = timed(req.clone(), t);
                    async move { c.list(r).await.map(|r| r.into_inner()) }
                },
            )
            .await?;
        Ok(resp)
    }

    pub async fn delete(&self, mut req: pb::DeleteRequest) -> Result<pb::DeleteResponse, Error> {
        let resp = self
            .op(
                OpKind::Write,
                |r: &pb::DeleteResponse| r.header.as_ref(),
                |mut c, t| {
                    req.session = Some(self.session());
                    let r = timed(req.clone(), t);
                    async move { c.delete(r).await.map(|r| r.into_inner()) }
                },
            )
            .await?;
        Ok(resp)
    }

    pub async fn txn(&self, mut req: pb::TxnRequest) -> Result<pb::TxnResponse, Error> {
        let resp = self
            .op(
                OpKind::Write,
                |r: &pb::TxnResponse| r.header.as_ref(),
                |mut c, t| {
                    req.session = Some(self.session());
                    let r = timed(req.clone(), t);
                    async move { c.txn(r).await.map(|r| r.into_inner()) }
                },
            )
            .await?;
        Ok(resp)
    }

    /// Status of the node behind the current endpoint (with `cluster`, of every node).
    pub async fn status(&self, cluster: bool) -> Result<pb::StatusResponse, Error> {
        self.call(|mut c, t| {
            let r = timed(pb::StatusRequest { cluster }, t);
            async move { c.status(r).await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// Watches `key` (or every key under it, with `prefix`) from `start_revision` (0 = now).
    /// The stream resumes by itself after a disconnect, from the last revision it delivered.
    pub fn watch(&self, key: &str, prefix: bool, start_revision: u64) -> Watcher {
        Watcher::new(
            self.clone(),
            pb::WatchRequest {
                key: key.as_bytes().to_vec(),
                prefix,
                start_revision: start_revision as i64,
                prev_kv: false,
                progress_interval_ms: 0,
                session: Some(self.session()),
            },
        )
    }
}
