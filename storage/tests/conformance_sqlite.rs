//! Runs the store conformance suite against the SQLite backend, each case in its own directory.

use async_trait::async_trait;
use weft_storage::conformance::{Backend, DurableBackend};
use weft_storage::sqlite::{SqliteOptions, SqliteStore};

struct SqliteBackend {
    directory: tempfile::TempDir,
}

impl SqliteBackend {
    fn new() -> SqliteBackend {
        SqliteBackend {
            directory: tempfile::tempdir().expect("create a temporary directory"),
        }
    }
}

#[async_trait]
impl Backend for SqliteBackend {
    type Store = SqliteStore;

    async fn create(&self) -> SqliteStore {
        let path = self.directory.path().join("weft.db");
        SqliteStore::open(path, SqliteOptions::default()).expect("open a new store")
    }
}

#[async_trait]
impl DurableBackend for SqliteBackend {
    async fn reopen(&self, store: SqliteStore) -> SqliteStore {
        let path = store.path().to_path_buf();
        // Dropping the last handle stops and joins the writer thread.
        drop(store);
        SqliteStore::open(path, SqliteOptions::default()).expect("reopen the store")
    }
}

weft_storage::conformance_tests!(SqliteBackend::new(), durable);
