//! The naming service (docs/naming.md): service instances registered with a TTL, resolved from
//! a cache that a watch keeps fresh.
//!
//! A service is a path of the namespace (`/global/services/echo`, `/eu-west/services/pay`), so
//! the domain holding it decides its placement and residency like any key's. Instance `I` of
//! service `S` is the key `S/I`, attached to the registering session's lease; its value is JSON:
//! `{"address": …, "region": …, "meta": {…}}`. The entries are [`Client::register`],
//! [`Client::resolver`] and [`Client::service_channel`] (a tonic `Channel` to
//! `meridian://SERVICE` that balances over its live instances).

use crate::{pb, Client, Consistency, Error, Session, SessionEvent, WatchEvent};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Longest instance id, address and metadata (bytes, JSON-encoded).
pub const INSTANCE_VALUE_MAX: usize = 16 * 1024;

/// One live instance of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// The instance's name within the service.
    #[serde(skip)]
    pub id: String,
    /// Where to reach it (`host:port`, or any address its clients understand).
    pub address: String,
    /// The region it runs in (the registering router's, unless given).
    pub region: String,
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// The revision that registered it (or last changed it).
    #[serde(skip)]
    pub revision: u64,
}

/// The key prefix of `service`'s instances: `service` + `/`, checked.
pub fn service_prefix(service: &str) -> Result<String, Error> {
    let bad = |why: &str| Error::InvalidArgument {
        rule: "service_name".into(),
        message: format!("service name {service:?} {why}"),
    };
    if !service.starts_with('/') {
        return Err(bad(
            "must be a path of the namespace, e.g. /global/services/echo (docs/naming.md)",
        ));
    }
    if service.ends_with('/') || service.contains("//") {
        return Err(bad("must not end with '/' or hold an empty segment"));
    }
    Ok(format!("{service}/"))
}

fn instance_id_ok(id: &str) -> Result<(), Error> {
    if id.is_empty() || id.contains('/') {
        return Err(Error::InvalidArgument {
            rule: "instance_name".into(),
            message: format!("instance name {id:?} must be non-empty and hold no '/'"),
        });
    }
    Ok(())
}

/// A registration: the instance's key lives while this does (its session keeps the lease
/// alive). [`Registration::deregister`] removes it at once; dropping it without that, or the
/// process dying, removes it when the TTL runs out.
pub struct Registration {
    session: Session,
    key: String,
}

impl Registration {
    /// The instance's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Resolves when the registration is lost (its lease expired or was revoked).
    pub async fn lost(&self) -> SessionEvent {
        self.session.lost().await
    }

    /// Removes the instance now (revokes its lease).
    pub async fn deregister(self) -> Result<(), Error> {
        self.session.close().await
    }
}

impl Client {
    /// Registers `instance` of `service` at `address` with `ttl`: the instance disappears from
    /// every resolver within `ttl` (plus a round trip) after this process stops keeping it
    /// alive. `region` defaults to the region of the router this client talks to.
    pub async fn register(
        &self,
        service: &str,
        instance: &str,
        address: &str,
        region: Option<&str>,
        meta: BTreeMap<String, String>,
        ttl: Duration,
    ) -> Result<Registration, Error> {
        let session = Session::new(self.clone(), ttl);
        let key = self
            .register_in(&session, service, instance, address, region, meta)
            .await?;
        Ok(Registration { session, key })
    }

    /// Registers `instance` on a session shared by many registrations (a process serving many
    /// instances keeps one lease alive for all): each lives while `session` does, or until
    /// [`Client::deregister`]. Returns the instance's key.
    pub async fn register_in(
        &self,
        session: &Session,
        service: &str,
        instance: &str,
        address: &str,
        region: Option<&str>,
        meta: BTreeMap<String, String>,
    ) -> Result<String, Error> {
        let prefix = service_prefix(service)?;
        instance_id_ok(instance)?;
        let region = self.region_or_routers(region).await?;
        let value = serde_json::to_vec(&Instance {
            id: String::new(),
            address: address.to_string(),
            region,
            meta,
            revision: 0,
        })
        .map_err(|e| Error::Other {
            code: tonic::Code::InvalidArgument,
            message: format!("encoding the instance: {e}"),
        })?;
        if value.len() > INSTANCE_VALUE_MAX {
            return Err(Error::InvalidArgument {
                rule: "instance_too_large".into(),
                message: format!(
                    "the instance's address and metadata take {} bytes; at most {INSTANCE_VALUE_MAX}",
                    value.len()
                ),
            });
        }
        let key = format!("{prefix}{instance}");
        let lease = session.lease_for(&key).await?;
        self.put_request(pb::PutRequest {
            key: key.as_bytes().to_vec(),
            value,
            lease,
            ..Default::default()
        })
        .await?;
        Ok(key)
    }

    /// `region`, or else the region of the router this client talks to.
    async fn region_or_routers(&self, region: Option<&str>) -> Result<String, Error> {
        Ok(match region {
            Some(r) => r.to_string(),
            None => self.status(false).await?.region,
        })
    }

    /// Removes one instance now (its session, if shared, lives on).
    pub async fn deregister(&self, service: &str, instance: &str) -> Result<(), Error> {
        let prefix = service_prefix(service)?;
        instance_id_ok(instance)?;
        self.delete(pb::DeleteRequest {
            key: format!("{prefix}{instance}").into_bytes(),
            ..Default::default()
        })
        .await?;
        Ok(())
    }

    /// A resolver of `service`: its live instances, read once, then kept fresh by a watch
    /// (resumed on another router if this one fails, from the revision after the last change
    /// seen, so no change is lost or applied twice).
    pub async fn resolver(&self, service: &str) -> Result<Resolver, Error> {
        let prefix = service_prefix(service)?;
        let (instances, revision) = list(self, &prefix).await?;
        let (tx, rx) = watch::channel(Arc::new(Snapshot {
            revision,
            instances,
        }));
        let task = tokio::spawn(follow(self.clone(), prefix, tx));
        Ok(Resolver { rx, task })
    }
}

/// A resolver's view: the live instances by id, as of `revision` of the service's group.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub revision: u64,
    pub instances: BTreeMap<String, Instance>,
}

impl Snapshot {
    /// The instances in `region`.
    pub fn in_region(&self, region: &str) -> Vec<&Instance> {
        self.instances
            .values()
            .filter(|i| i.region == region)
            .collect()
    }
}

/// The live instances of one service, answered from a cache a watch keeps fresh.
pub struct Resolver {
    rx: watch::Receiver<Arc<Snapshot>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Resolver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Resolver {
    /// The cache now (the next [`Resolver::changed`] waits for a change after it).
    pub fn snapshot(&mut self) -> Arc<Snapshot> {
        self.rx.borrow_and_update().clone()
    }

    /// Waits for the next change of the cache after the last one this resolver returned, and
    /// returns the cache then (changes close together may arrive as one).
    pub async fn changed(&mut self) -> Result<Arc<Snapshot>, Error> {
        self.rx
            .changed()
            .await
            .map_err(|_| Error::Unavailable("the resolver's watch ended".into()))?;
        Ok(self.rx.borrow_and_update().clone())
    }
}

fn decode(kv: &pb::KeyValue, prefix: &str) -> Option<Instance> {
    let id = kv.key.strip_prefix(prefix)?;
    if id.contains('/') {
        // Not an instance of this service (a nested service's key).
        return None;
    }
    let mut i: Instance = serde_json::from_slice(&kv.value).ok()?;
    i.id = id.to_string();
    i.revision = kv.mod_revision;
    Some(i)
}

/// The instances under `prefix` and the revision to watch after (replays of what later pages
/// already hold are no change to `apply`).
async fn list(client: &Client, prefix: &str) -> Result<(BTreeMap<String, Instance>, u64), Error> {
    let (kvs, revision) = client.range_all_at(prefix, Consistency::Sequential).await?;
    let instances = kvs
        .iter()
        .filter_map(|kv| decode(kv, prefix))
        .map(|i| (i.id.clone(), i))
        .collect();
    Ok((instances, revision))
}

/// Applies one revision's events to `instances`; whether anything changed. A change older
/// than what the cache holds for its key is a replay and changes nothing.
fn apply(
    instances: &mut BTreeMap<String, Instance>,
    prefix: &str,
    revision: u64,
    events: &[pb::Event],
) -> bool {
    let mut changed = false;
    for e in events {
        let Some(kv) = e.kv.as_ref() else { continue };
        let Some(id) = kv.key.strip_prefix(prefix) else {
            continue;
        };
        if id.contains('/') {
            continue;
        }
        let newer = instances.get(id).is_none_or(|i| i.revision < revision);
        if !newer {
            continue;
        }
        if e.r#type == pb::event::EventType::Delete as i32 {
            changed |= instances.remove(id).is_some();
        } else if let Some(i) = decode(kv, prefix) {
            changed |= instances.get(id) != Some(&i);
            instances.insert(i.id.clone(), i);
        }
    }
    changed
}

/// Keeps the resolver's snapshot fresh until it is dropped.
async fn follow(client: Client, prefix: String, tx: watch::Sender<Arc<Snapshot>>) {
    let mut snapshot = (**tx.borrow()).clone();
    loop {
        let mut w = client.watch(&prefix, true, snapshot.revision + 1);
        loop {
            match w.next().await {
                Ok(WatchEvent::Changes { revision, events }) => {
                    let changed = apply(&mut snapshot.instances, &prefix, revision, &events);
                    snapshot.revision = snapshot.revision.max(revision);
                    if changed && tx.send(Arc::new(snapshot.clone())).is_err() {
                        return;
                    }
                }
                Ok(WatchEvent::Progress { revision }) => {
                    snapshot.revision = snapshot.revision.max(revision);
                }
                Err(Error::Compacted { .. }) => break,
                Err(e) => {
                    tracing::warn!(%prefix, "the resolver's watch failed, starting over: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    break;
                }
            }
        }
        // Too far behind for the history (or the watch gave up): read the service again.
        loop {
            match list(&client, &prefix).await {
                Ok((instances, revision)) => {
                    let fresh = Snapshot {
                        revision,
                        instances,
                    };
                    if fresh.instances != snapshot.instances
                        && tx.send(Arc::new(fresh.clone())).is_err()
                    {
                        return;
                    }
                    snapshot = fresh;
                    break;
                }
                Err(e) => {
                    if tx.is_closed() {
                        return;
                    }
                    tracing::warn!(%prefix, "listing the service failed, retrying: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}

/// The scheme of a service's address: `meridian://global/services/echo` names the service
/// `/global/services/echo`.
pub const SCHEME: &str = "meridian://";

/// The service a `meridian://` address names.
pub fn service_of_uri(uri: &str) -> Result<String, Error> {
    let rest = uri
        .strip_prefix(SCHEME)
        .ok_or_else(|| Error::InvalidArgument {
            rule: "service_uri".into(),
            message: format!("{uri:?} is not a {SCHEME}SERVICE address"),
        })?;
    let service = format!("/{}", rest.trim_end_matches('/'));
    service_prefix(&service)?;
    Ok(service)
}

/// Whether `target` is a `meridian://` address (else a plain `host:port`).
pub fn is_service_uri(target: &str) -> bool {
    target.starts_with(SCHEME)
}

/// The instances a caller in `region` should use: those of its region if it has any, else all.
pub fn preferred<'a>(s: &'a Snapshot, region: &str) -> Vec<&'a Instance> {
    let local = s.in_region(region);
    if local.is_empty() {
        s.instances.values().collect()
    } else {
        local
    }
}

/// A tonic `Channel` to a service's live instances: it balances over the instances its
/// resolver shows (those of the caller's region while there are any) and follows every change.
/// Calls go over plain HTTP/2 to each instance's address.
pub struct ServiceChannel {
    channel: tonic::transport::Channel,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ServiceChannel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ServiceChannel {
    /// The channel (clones share the balancer; they stop following changes when this is
    /// dropped).
    pub fn channel(&self) -> tonic::transport::Channel {
        self.channel.clone()
    }
}

/// Most pending endpoint changes between the resolver and the balancer.
const CHANGES_MAX: usize = 1024;

type Balancer = tokio::sync::mpsc::Sender<
    tonic::transport::channel::Change<String, tonic::transport::Endpoint>,
>;

/// Brings the balancer's endpoints (by `id@address`) to what `s` says a caller in `region`
/// should use.
async fn steer(
    current: &mut std::collections::BTreeSet<String>,
    s: &Snapshot,
    region: &str,
    tx: &Balancer,
) -> bool {
    use tonic::transport::channel::Change;
    let wanted: BTreeMap<String, &Instance> = preferred(s, region)
        .into_iter()
        .map(|i| (format!("{}@{}", i.id, i.address), i))
        .collect();
    let gone: Vec<String> = current
        .iter()
        .filter(|k| !wanted.contains_key(*k))
        .cloned()
        .collect();
    for k in gone {
        current.remove(&k);
        if tx.send(Change::Remove(k)).await.is_err() {
            return false;
        }
    }
    for (k, i) in wanted {
        if current.contains(&k) {
            continue;
        }
        let Ok(ep) = tonic::transport::Endpoint::from_shared(format!("http://{}", i.address))
        else {
            tracing::warn!(instance = %i.id, address = %i.address, "an instance's address is not a URI; skipped");
            continue;
        };
        let ep = ep
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30));
        current.insert(k.clone());
        if tx.send(Change::Insert(k, ep)).await.is_err() {
            return false;
        }
    }
    true
}

impl Client {
    /// A channel to `meridian://SERVICE` for a caller in `region` (default: the region of the
    /// router this client talks to): balanced over the live instances of that region while it
    /// has any, else over all, following registrations as they come and go.
    pub async fn service_channel(
        &self,
        uri: &str,
        region: Option<&str>,
    ) -> Result<ServiceChannel, Error> {
        let service = service_of_uri(uri)?;
        let region = self.region_or_routers(region).await?;
        let mut resolver = self.resolver(&service).await?;
        let (channel, tx) = tonic::transport::Channel::balance_channel::<String>(CHANGES_MAX);
        let mut current = std::collections::BTreeSet::new();
        steer(&mut current, &resolver.snapshot(), &region, &tx).await;
        let task = tokio::spawn(async move {
            while let Ok(s) = resolver.changed().await {
                if !steer(&mut current, &s, &region, &tx).await {
                    return;
                }
            }
        });
        Ok(ServiceChannel { channel, task })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, rev: u64, address: &str) -> pb::Event {
        pb::Event {
            r#type: pb::event::EventType::Put as i32,
            kv: Some(pb::KeyValue {
                key: key.into(),
                value: serde_json::to_vec(&serde_json::json!({"address": address, "region": "r"}))
                    .unwrap_or_default(),
                mod_revision: rev,
                ..Default::default()
            }),
            prev_kv: None,
        }
    }

    fn delete(key: &str, rev: u64) -> pb::Event {
        pb::Event {
            r#type: pb::event::EventType::Delete as i32,
            kv: Some(pb::KeyValue {
                key: key.into(),
                mod_revision: rev,
                ..Default::default()
            }),
            prev_kv: None,
        }
    }

    #[test]
    fn names_are_paths_and_instances_have_no_slash() {
        assert_eq!(
            service_prefix("/g/s/echo").ok().as_deref(),
            Some("/g/s/echo/")
        );
        assert!(service_prefix("echo").is_err());
        assert!(service_prefix("/g/echo/").is_err());
        assert!(instance_id_ok("a/b").is_err());
        assert!(instance_id_ok("").is_err());
    }

    #[test]
    fn uris_name_services_and_the_callers_region_comes_first() {
        assert_eq!(
            service_of_uri("meridian://global/services/echo")
                .ok()
                .as_deref(),
            Some("/global/services/echo")
        );
        assert!(service_of_uri("http://x").is_err());
        assert!(service_of_uri("meridian://").is_err());
        let inst = |id: &str, region: &str| Instance {
            id: id.into(),
            address: format!("{id}:1"),
            region: region.into(),
            meta: BTreeMap::new(),
            revision: 1,
        };
        let mut s = Snapshot::default();
        for (id, r) in [("a", "eu"), ("b", "us"), ("c", "eu")] {
            s.instances.insert(id.into(), inst(id, r));
        }
        let ids = |v: Vec<&Instance>| v.iter().map(|i| i.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(preferred(&s, "eu")), ["a", "c"]);
        assert_eq!(ids(preferred(&s, "ap")), ["a", "b", "c"]);
    }

    #[test]
    fn replays_change_nothing_and_deletes_remove() {
        let p = "/g/echo/";
        let mut m = BTreeMap::new();
        assert!(apply(&mut m, p, 5, &[put("/g/echo/a", 5, "x:1")]));
        assert_eq!(m["a"].address, "x:1");
        // The same revision again (a resume's replay): no change.
        assert!(!apply(&mut m, p, 5, &[put("/g/echo/a", 5, "x:1")]));
        // An older one (a later page already held a newer value): ignored.
        assert!(!apply(&mut m, p, 4, &[put("/g/echo/a", 4, "old:1")]));
        assert_eq!(m["a"].address, "x:1");
        // A nested service's key is not an instance.
        assert!(!apply(&mut m, p, 6, &[put("/g/echo/x/y", 6, "z:1")]));
        assert!(apply(&mut m, p, 7, &[delete("/g/echo/a", 7)]));
        assert!(m.is_empty());
        assert!(!apply(&mut m, p, 7, &[delete("/g/echo/a", 7)]));
    }
}
