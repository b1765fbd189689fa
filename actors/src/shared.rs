//! What every actor of one engine shares: the store, the event channel, the configuration and
//! the registry of in-process task handlers.

use crate::engine::{EngineConfig, TaskFn};
use crate::events::Event;
use crate::executor::python::PythonRunnerPool;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tokio::sync::{broadcast, OnceCell};
use weft_storage::{Store, Write};

pub(crate) struct Shared {
    pub store: Arc<dyn Store>,
    pub events: broadcast::Sender<Event>,
    /// The `RunChanged` events alone, for waiters on a run (`Engine::wait_for_run`): they
    /// would otherwise wake for every task's change, several times per task.
    pub run_events: broadcast::Sender<Event>,
    pub config: EngineConfig,
    pub handlers: RwLock<HashMap<String, TaskFn>>,
    python: OnceCell<Arc<PythonRunnerPool>>,
}

impl Shared {
    pub fn new(store: Arc<dyn Store>, config: EngineConfig) -> Shared {
        let (events, _) = broadcast::channel(crate::events::EVENTS_BUFFER_MAX);
        let (run_events, _) = broadcast::channel(crate::events::RUN_EVENTS_BUFFER_MAX);
        Shared {
            store,
            events,
            run_events,
            config,
            handlers: RwLock::new(HashMap::new()),
            python: OnceCell::new(),
        }
    }

    pub fn publish(&self, event: Event) {
        // No subscriber is not an error: events are a view of the store, not the record.
        if matches!(event, Event::RunChanged { .. }) {
            let _ = self.run_events.send(event.clone());
        }
        let _ = self.events.send(event);
    }

    pub fn handler(&self, name: &str) -> Option<TaskFn> {
        self.handlers
            .read()
            .expect("handler registry poisoned")
            .get(name)
            .cloned()
    }

    /// The warm Python runner pool, started on first use so that engines without Python tasks
    /// never start a Python process.
    pub async fn python(&self) -> Arc<PythonRunnerPool> {
        self.python
            .get_or_init(|| async { Arc::new(PythonRunnerPool::new(self.config.python.clone())) })
            .await
            .clone()
    }

    pub async fn shutdown_python(&self) {
        if let Some(pool) = self.python.get() {
            pool.shutdown().await;
        }
    }

    /// Write a batch, retrying while the store is unavailable (bounded). Conflicts are returned
    /// at once: they mean another writer owns the row.
    pub async fn write(&self, batch: Vec<Write>) -> weft_storage::Result<()> {
        let mut delay_ms = 10;
        for attempt in 0..=STORE_RETRIES_MAX {
            match self.store.write(batch.clone()).await {
                Err(weft_storage::Error::Unavailable(reason)) if attempt < STORE_RETRIES_MAX => {
                    tracing::warn!(%reason, attempt, "store unavailable, retrying");
                    metrics::counter!("weft_store_retries_total").increment(1);
                    tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
                    delay_ms = (delay_ms * 2).min(2_000);
                }
                result => return result,
            }
        }
        unreachable!("the last attempt returns")
    }
}

/// Retries of one store write while the store is unavailable, before the actor gives up (and
/// its supervisor rebuilds it from the store).
const STORE_RETRIES_MAX: u32 = 8;

/// The current time for the core, at the microsecond precision every store keeps, so that a
/// time read back from the store equals the one decided on.
pub(crate) fn now() -> weft_core::Timestamp {
    use chrono::{DurationRound, TimeDelta};
    let now = chrono::Utc::now();
    now.duration_trunc(TimeDelta::microseconds(1))
        .unwrap_or(now)
}
