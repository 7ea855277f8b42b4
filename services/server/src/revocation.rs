//! The token revocation list (docs/security.md); `tokens_service` serves the RPCs that change
//! and show it.
//!
//! Revoked ids live in the global group as reserved keys, [`REVOKED_PREFIX`]`<id>`, that no
//! client path can name (client paths start with `/`), plus [`REVOCATIONS_KEY`], rewritten by
//! every change so that its `mod_revision` is the list's epoch. Like the placement map, each
//! router follows the list through its local replica of the global group ([`follow`]) and its
//! [`Gate`](crate::gate::Gate) refuses a token any of whose blocks is listed — in every region once its replica
//! has applied the change, about one round trip after the commit.

use crate::error::Error;
use meridian_storage::GroupShared;
use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// Where a revoked id is kept in the global group: `@revoked/<id>`.
pub const REVOKED_PREFIX: &str = "@revoked/";

/// Rewritten by every revocation: its `mod_revision` is the list's epoch.
pub const REVOCATIONS_KEY: &str = "@revocations";

/// Most ids one request revokes.
pub const REVOKE_IDS_MAX: usize = 64;

/// Most ids the list holds; past it a revocation is refused (rotate the root key instead).
pub const REVOKED_MAX: usize = 100_000;

/// The revoked ids this router knows, at the epoch it applied them.
pub struct Revocations {
    ids: RwLock<Arc<BTreeSet<String>>>,
    epoch: watch::Sender<u64>,
}

impl Default for Revocations {
    fn default() -> Self {
        Self {
            ids: RwLock::default(),
            epoch: watch::channel(0).0,
        }
    }
}

impl Revocations {
    /// The first of `ids` that is revoked.
    pub fn revoked<'a>(&self, ids: impl IntoIterator<Item = &'a String>) -> Option<&'a String> {
        let set = self.ids.read().unwrap_or_else(|p| p.into_inner());
        if set.is_empty() {
            return None;
        }
        ids.into_iter().find(|id| set.contains(id.as_str()))
    }

    pub fn all(&self) -> Arc<BTreeSet<String>> {
        self.ids.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn epoch(&self) -> u64 {
        *self.epoch.borrow()
    }

    fn install(&self, epoch: u64, ids: BTreeSet<String>) {
        if epoch <= self.epoch() {
            return;
        }
        *self.ids.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ids);
        self.epoch.send_replace(epoch);
    }

    /// Waits (bounded) until the list applied here is at `epoch` or later.
    pub async fn wait_epoch(&self, epoch: u64, timeout: Duration) -> bool {
        let mut rx = self.epoch.subscribe();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|e| *e >= epoch)).await;
        matches!(reached, Ok(Ok(_)))
    }
}

/// Follows the global group's local replica: reloads the list whenever its epoch moved. Ends
/// on shutdown.
pub async fn follow(
    revocations: Arc<Revocations>,
    global: Arc<GroupShared>,
    shutdown: watch::Receiver<bool>,
) {
    crate::placement::each_apply(global, shutdown, |g| {
        let epoch = g
            .read()
            .get(REVOCATIONS_KEY)
            .map_or(0, |kv| kv.mod_revision);
        if epoch > revocations.epoch() {
            let (page, _) = g.read().range(REVOKED_PREFIX, None, REVOKED_MAX);
            let ids = page
                .into_iter()
                .filter_map(|kv| kv.key.strip_prefix(REVOKED_PREFIX).map(str::to_string))
                .collect();
            revocations.install(epoch, ids);
        }
    })
    .await
}

/// Refuses what is not a revocation id ([`meridian_auth::is_revocation_id`]).
pub fn check_id(id: &str) -> Result<(), Error> {
    if meridian_auth::is_revocation_id(id) {
        return Ok(());
    }
    Err(Error::invalid(
        "bad_revocation_id",
        "ids",
        format!(
            "{:?} is not a revocation id (128 lowercase hex digits, as `meridian token inspect` \
             prints them)",
            id.chars().take(140).collect::<String>()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocation_ids_are_checked() {
        assert!(check_id(&"ab".repeat(64)).is_ok());
        assert!(check_id(&"AB".repeat(64)).is_err());
        assert!(check_id("abcd").is_err());
        assert!(check_id(&"zz".repeat(64)).is_err());
    }

    #[test]
    fn a_revoked_block_is_found_and_an_older_epoch_is_ignored() {
        let r = Revocations::default();
        let ids = vec!["a".to_string(), "b".to_string()];
        assert_eq!(r.revoked(&ids), None);
        r.install(5, BTreeSet::from(["b".to_string()]));
        assert_eq!(r.revoked(&ids).map(String::as_str), Some("b"));
        r.install(3, BTreeSet::new());
        assert_eq!(r.epoch(), 5);
        assert_eq!(r.revoked(&ids).map(String::as_str), Some("b"));
    }
}
