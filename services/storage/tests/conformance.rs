//! Both stores pass openraft's storage conformance suite (`openraft::testing::log::Suite`); the
//! in-memory one also with a delayed fsync (its model of a slow disk).

use meridian_storage::{mem_group, FjallLogStore, MemDisk, MemLogStore, NodeStore, StateMachine};
use meridian_types::raft::{StorageError, TypeConfig};
use meridian_types::GroupId;
use openraft::testing::log::{StoreBuilder, Suite};

struct FjallBuilder;

impl StoreBuilder<TypeConfig, FjallLogStore, StateMachine, tempfile::TempDir> for FjallBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, FjallLogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = NodeStore::open(dir.path()).expect("open store");
        let (log, sm) = store.group(GroupId(7), 1000).expect("open group");
        Ok((dir, log, sm))
    }
}

struct MemBuilder;

impl StoreBuilder<TypeConfig, MemLogStore, StateMachine, ()> for MemBuilder {
    async fn build(&self) -> Result<((), MemLogStore, StateMachine), StorageError> {
        let (log, sm) = mem_group(GroupId(7), 1000);
        Ok(((), log, sm))
    }
}

/// The in-memory store on a slow simulated disk: appends become durable (and are acknowledged)
/// 2 ms later, through the flusher.
struct SlowMemBuilder;

impl StoreBuilder<TypeConfig, MemLogStore, StateMachine, MemDisk> for SlowMemBuilder {
    async fn build(&self) -> Result<(MemDisk, MemLogStore, StateMachine), StorageError> {
        let disk = MemDisk::default();
        disk.model()
            .fsync_delay_us
            .store(2_000, std::sync::atomic::Ordering::Relaxed);
        let (log, sm) = disk.group(GroupId(7), 1000).expect("open group");
        Ok((disk, log, sm))
    }
}

/// The fjall store satisfies every property openraft relies on.
#[tokio::test]
async fn fjall_store_conformance() {
    Suite::test_all(FjallBuilder)
        .await
        .expect("fjall store conformance");
}

/// The in-memory store used by simulation satisfies the same properties.
#[tokio::test]
async fn mem_store_conformance() {
    Suite::test_all(MemBuilder)
        .await
        .expect("in-memory store conformance");
}

/// ... and so does it with a delayed fsync.
#[tokio::test]
async fn slow_mem_store_conformance() {
    Suite::test_all(SlowMemBuilder)
        .await
        .expect("in-memory store on a slow disk: conformance");
}
