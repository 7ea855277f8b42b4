//! Both stores pass openraft's storage conformance suite (`openraft::testing::log::Suite`).

use meridian_storage::{mem_group, FjallLogStore, MemLogStore, NodeStore, StateMachine};
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
