//! Runs the store conformance suite against a live CQL server (`WEFT_TEST_CQL=host:port`, e.g.
//! from `deploy/cql-test-cluster.sh up 1`), each case in a fresh keyspace.
//!
//! Without `WEFT_TEST_CQL` every case prints that it did nothing and returns; CI always sets it.

use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use weft_storage::conformance::{Backend, DurableBackend};
use weft_storage::cql::{CqlOptions, CqlStore};

/// The CQL server's `host:port`; `None` (after saying so) when the variable is not set.
fn server() -> Option<String> {
    match std::env::var("WEFT_TEST_CQL") {
        Ok(address) if !address.is_empty() => Some(address),
        _ => {
            println!("WEFT_TEST_CQL is not set: the CQL conformance case did nothing (deploy/cql-test-cluster.sh up 1)");
            None
        }
    }
}

/// A keyspace name no other case or run uses: process id, time and a counter.
fn fresh_keyspace() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "weft_test_{}_{nanos}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

struct CqlBackend {
    options: CqlOptions,
}

impl CqlBackend {
    fn new(address: String) -> CqlBackend {
        let options = CqlOptions {
            contact_points: vec![address],
            keyspace: fresh_keyspace(),
            replication: BTreeMap::from([("dc1".to_string(), 1)]),
            ..CqlOptions::default()
        };
        CqlBackend { options }
    }
}

#[async_trait]
impl Backend for CqlBackend {
    type Store = CqlStore;

    async fn create(&self) -> CqlStore {
        CqlStore::connect(self.options.clone())
            .await
            .expect("connect to the CQL test server")
    }
}

#[async_trait]
impl DurableBackend for CqlBackend {
    async fn reopen(&self, store: CqlStore) -> CqlStore {
        drop(store);
        // Reopen without migrations: the keyspace must be complete as it was left.
        let options = CqlOptions {
            apply_migrations: false,
            ..self.options.clone()
        };
        CqlStore::connect(options)
            .await
            .expect("reopen the CQL store")
    }
}

macro_rules! cql_cases {
    ($($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let Some(address) = server() else { return };
                let backend = CqlBackend::new(address);
                weft_storage::conformance::$case(&backend).await;
                let store = backend.create().await;
                store.drop_keyspace().await.expect("drop the test keyspace");
            }
        )*
    };
}

// The cases `conformance_tests!` generates, run through `cql_cases!` so that each can return
// early without a server and drop its keyspace afterwards.
weft_storage::conformance_cases!([cql_cases] []);
cql_cases!(durable_writes_survive_reopen);

#[tokio::test]
async fn a_missing_server_is_a_clear_error() {
    // Nothing listens on port 1: the error must say what to do. Needs no server.
    let options = CqlOptions {
        contact_points: vec!["127.0.0.1:1".to_string()],
        connect_timeout_ms: 2_000,
        ..CqlOptions::default()
    };
    let error = CqlStore::connect(options)
        .await
        .expect_err("nothing listens on port 1");
    let message = error.to_string();
    assert!(
        message.starts_with("store unavailable: no CQL node answers at 127.0.0.1:1"),
        "{message}"
    );
    assert!(
        message.contains("deploy/cql-test-cluster.sh up 1"),
        "{message}"
    );
}

#[tokio::test]
async fn a_missing_keyspace_is_a_clear_error() {
    let Some(address) = server() else { return };
    let options = CqlOptions {
        contact_points: vec![address],
        keyspace: fresh_keyspace(),
        apply_migrations: false,
        ..CqlOptions::default()
    };
    let error = CqlStore::connect(options.clone())
        .await
        .expect_err("the keyspace does not exist");
    let message = error.to_string();
    assert!(
        message.contains(&format!("keyspace `{}` is missing", options.keyspace)),
        "{message}"
    );
    assert!(message.contains("apply_migrations"), "{message}");
}
