//! Runs the store conformance suite against the in-memory backend.

use async_trait::async_trait;
use weft_storage::conformance::Backend;
use weft_storage::memory::MemoryStore;

struct MemoryBackend;

#[async_trait]
impl Backend for MemoryBackend {
    type Store = MemoryStore;

    async fn create(&self) -> MemoryStore {
        MemoryStore::new()
    }
}

weft_storage::conformance_tests!(MemoryBackend);
