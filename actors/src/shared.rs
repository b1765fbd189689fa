//! What every actor of one engine shares: the store, the event channel, the configuration and
//! the engine's own worker (what its worker slots run attempts with).

/// The clock, where the actors have always found it.
pub(crate) use crate::clock::now;
use crate::engine::EngineConfig;
use crate::events::Event;
use crate::executor::python::NodeSecrets;
use crate::executor::worker::{Handlers, WorkerContext};
use std::sync::Arc;
use tokio::sync::broadcast;
use weft_storage::vault::Vault;
use weft_storage::{Store, Write};

pub(crate) struct Shared {
    pub store: Arc<dyn Store>,
    pub events: broadcast::Sender<Event>,
    /// The `RunChanged` events alone, for waiters on a run (`Engine::wait_for_run`): they
    /// would otherwise wake for every task's change, several times per task.
    pub run_events: broadcast::Sender<Event>,
    pub config: EngineConfig,
    pub vault: Arc<Vault>,
    /// Attempts a rebuilt task actor took up where they waited or ran (see
    /// `DispatcherMsg::Adopt`), since the engine started.
    pub attempts_adopted: std::sync::atomic::AtomicU64,
    worker: Arc<WorkerContext>,
    /// Where commands for DAGs another cell owns go (a cell's peer links), once set.
    pub forwarder: std::sync::OnceLock<Arc<dyn crate::command::Forwarder>>,
}

impl Shared {
    pub fn new(store: Arc<dyn Store>, config: EngineConfig) -> Shared {
        let (events, _) = broadcast::channel(crate::events::EVENTS_BUFFER_MAX);
        let (run_events, _) = broadcast::channel(crate::events::RUN_EVENTS_BUFFER_MAX);
        let vault = Arc::new(Vault::new(store.clone(), config.secret_keys.clone()));
        // The Python runners' calls for variables and connections are answered from this
        // engine's vault.
        let secrets = NodeSecrets {
            vault: vault.clone(),
            audit: store.clone(),
        };
        let worker = WorkerContext::new(Handlers::default(), config.python.clone(), Some(secrets));
        Shared {
            vault,
            store,
            events,
            run_events,
            config,
            attempts_adopted: Default::default(),
            worker: Arc::new(worker),
            forwarder: std::sync::OnceLock::new(),
        }
    }

    pub fn publish(&self, event: Event) {
        // No subscriber is not an error: events are a view of the store, not the record.
        if matches!(event, Event::RunChanged { .. }) {
            let _ = self.run_events.send(event.clone());
        }
        let _ = self.events.send(event);
    }

    /// What this engine's worker slots run attempts with: its in-process handlers and its
    /// Python runners.
    pub fn worker(&self) -> &Arc<WorkerContext> {
        &self.worker
    }

    /// Write a batch, retrying while the store is unavailable (bounded: the caller answers
    /// someone). Conflicts are returned at once: they mean another writer owns the row.
    pub async fn write(&self, batch: Vec<Write>) -> weft_storage::Result<()> {
        let batch = self.fenced(batch)?;
        let mut backoff = self.backoff();
        for attempt in 0..=STORE_RETRIES_MAX {
            match self.store.write(batch.clone()).await {
                Err(weft_storage::Error::Unavailable(reason)) if attempt < STORE_RETRIES_MAX => {
                    tracing::warn!(%reason, attempt, "store unavailable, retrying");
                    metrics::counter!("weft_store_retries_total").increment(1);
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                result => return noted(result),
            }
        }
        unreachable!("the last attempt returns")
    }

    /// Write a batch, trying again for as long as the store is unavailable (a full disk, a
    /// lost connection), with exponential backoff capped at the configured
    /// `store_retry_backoff_ms_max`; each failed try is logged and counted. Returns the
    /// store's answer (success, or a refusal: conflict, over a limit, corrupt), or `None` once
    /// `abandoned` says that nobody waits for it any more.
    pub async fn write_until_answered(
        &self,
        batch: Vec<Write>,
        abandoned: impl Fn() -> bool,
    ) -> Option<weft_storage::Result<()>> {
        let batch = match self.fenced(batch) {
            Ok(batch) => batch,
            Err(error) => return Some(Err(error)),
        };
        let mut backoff = self.backoff();
        let mut failures: u64 = 0;
        loop {
            match self.store.write(batch.clone()).await {
                Err(weft_storage::Error::Unavailable(reason)) => {
                    failures += 1;
                    metrics::counter!("weft_store_retries_total").increment(1);
                    let delay = backoff.next_delay();
                    tracing::warn!(%reason, failures, ?delay, "store unavailable, trying again");
                    tokio::time::sleep(delay).await;
                    if abandoned() {
                        return None;
                    }
                }
                result => {
                    if failures > 0 {
                        tracing::info!(failures, "store answers again");
                    }
                    return Some(noted(result));
                }
            }
        }
    }

    /// `batch` fenced by this cell's epochs (unchanged outside a cell).
    fn fenced(&self, batch: Vec<Write>) -> weft_storage::Result<Vec<Write>> {
        match &self.config.ownership {
            Some(ownership) => ownership.fence(batch),
            None => Ok(batch),
        }
    }

    /// Whether this engine decides for `dag_id` now: always outside a cell.
    pub fn owns(&self, dag_id: &str) -> bool {
        self.config
            .ownership
            .as_ref()
            .is_none_or(|ownership| ownership.epoch_of_dag(dag_id).is_some())
    }

    /// The backoff of store retries this engine is configured with.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(
            self.config.store_retry_backoff_ms_first,
            self.config.store_retry_backoff_ms_max,
        )
    }
}

/// Log and count a write the store refused by its fence: a deposed owner's late write.
fn noted(result: weft_storage::Result<()>) -> weft_storage::Result<()> {
    if let Err(weft_storage::Error::Fenced {
        run,
        epoch,
        current,
    }) = &result
    {
        if *epoch > 0 {
            metrics::counter!("weft_store_writes_fenced_total").increment(1);
            tracing::warn!(%run, epoch, current, "the store refused a write under an old epoch: run is owned under a newer one");
        }
    }
    result
}

/// Retries of one store write while the store is unavailable, before a caller that answers
/// someone gives up (the run actors' writes never give up, see `write_until_answered`).
const STORE_RETRIES_MAX: u32 = 8;

/// Capped exponential backoff: each delay doubles the one before, up to a bound.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next_ms: u64,
    max_ms: u64,
}

impl Backoff {
    pub fn new(first_ms: u64, max_ms: u64) -> Backoff {
        Backoff {
            next_ms: first_ms.clamp(1, max_ms.max(1)),
            max_ms: max_ms.max(1),
        }
    }

    /// The delay to wait now; the next one doubles it, up to the bound.
    pub fn next_delay(&mut self) -> std::time::Duration {
        let delay = self.next_ms;
        self.next_ms = delay.saturating_mul(2).min(self.max_ms);
        std::time::Duration::from_millis(delay)
    }

    /// The `n`th delay (from 1) of a fresh backoff.
    pub fn nth_delay(mut self, n: u32) -> std::time::Duration {
        let mut delay = self.next_delay();
        for _ in 1..n.min(64) {
            delay = self.next_delay();
        }
        delay
    }
}
