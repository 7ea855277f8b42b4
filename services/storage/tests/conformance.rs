//! Both stores pass openraft's storage conformance suite (`openraft::testing::Suite`).

use meridian_storage::{
    mem_group, FjallLogStore, FjallSm, MemLogStore, MemSm, NodeStore, StateMachine,
};
use meridian_types::raft::{StorageError, TypeConfig};
use meridian_types::GroupId;
use openraft::testing::{StoreBuilder, Suite};

struct FjallBuilder;

impl StoreBuilder<TypeConfig, FjallLogStore, StateMachine<FjallSm>, tempfile::TempDir>
    for FjallBuilder
{
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, FjallLogStore, StateMachine<FjallSm>), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = NodeStore::open(dir.path()).expect("open store");
        let (log, sm) = store.group(GroupId(7), 1000).expect("open group");
        Ok((dir, log, sm))
    }
}

struct MemBuilder;

impl StoreBuilder<TypeConfig, MemLogStore, StateMachine<MemSm>, ()> for MemBuilder {
    async fn build(&self) -> Result<((), MemLogStore, StateMachine<MemSm>), StorageError> {
        let (log, sm) = mem_group(GroupId(7), 1000);
        Ok(((), log, sm))
    }
}

/// The fjall store satisfies every property openraft relies on.
#[test]
fn fjall_store_conformance() {
    Suite::test_all(FjallBuilder).expect("fjall store conformance");
}

/// The in-memory store used by simulation satisfies the same properties.
#[test]
fn mem_store_conformance() {
    Suite::test_all(MemBuilder).expect("in-memory store conformance");
}
