//! A cell's lease keeper at work: drives `weft_core::lease::LeaseKeeper` with this process's
//! monotonic clock, performs its effects on the store (lease compare-and-sets, heartbeats) and
//! tells the engine which shards it decides for (`Engine::shard_gained` / `shard_lost`).
//!
//! Reads of the lease and heartbeat rows and every lease write run in their own tasks, each
//! under a timeout, so a store that hangs (a partition) never delays the `Tick` that makes this
//! cell stop deciding when its lease runs out.

use chrono::Utc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use weft_actors::Engine;
use weft_core::lease::{
    CasOutcome, CellBeat, LeaseEffect, LeaseInput, LeaseKeeper, LeaseOp, LeaseRow, LeaseSettings,
    Millis,
};
use weft_storage::{CellRow, LeaseWrite, Store};

/// How often the keeper is ticked (leases that run out are noticed within this).
const TICK_MS: u64 = 100;
/// Outcomes waiting for the keeper; at most one write per shard and one read are in flight.
const OUTCOMES_MAX: usize = 8_192;
/// How long leaving waits for its hand-overs to be written.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Who this cell is.
#[derive(Debug, Clone)]
pub struct CellIdentity {
    pub name: String,
    pub region: String,
    /// Where peers and workers reach it.
    pub address: String,
    /// Its web UI and API.
    pub api: String,
}

/// The running keeper: `leave` hands every shard over and stops it.
pub struct CellKeeper {
    leave: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl CellKeeper {
    /// Start keeping leases for `engine` (which must have an `Ownership`).
    pub fn start(
        store: Arc<dyn Store>,
        engine: Engine,
        identity: CellIdentity,
        settings: LeaseSettings,
    ) -> CellKeeper {
        let (leave, left) = oneshot::channel();
        let task = tokio::spawn(run(store, engine, identity, settings, left));
        CellKeeper {
            leave: Some(leave),
            task,
        }
    }

    /// Hand every shard over (so other cells take them at once) and stop.
    pub async fn leave(mut self) {
        if let Some(leave) = self.leave.take() {
            let _ = leave.send(());
        }
        let _ = tokio::time::timeout(LEAVE_TIMEOUT * 2, &mut self.task).await;
    }
}

enum Outcome {
    Observed {
        leases: Vec<LeaseRow>,
        cells: Vec<CellBeat>,
        /// Each cell's name and the address it advertises.
        addresses: Vec<(String, String)>,
    },
    ObserveFailed(String),
    Written {
        op: LeaseOp,
        row: LeaseRow,
        sent: Millis,
        outcome: CasOutcome,
    },
}

struct Driver {
    store: Arc<dyn Store>,
    engine: Engine,
    identity: CellIdentity,
    settings: LeaseSettings,
    keeper: LeaseKeeper,
    origin: Instant,
    started_at: chrono::DateTime<Utc>,
    outcomes: mpsc::Sender<Outcome>,
    observing: bool,
    /// Hand-overs in flight while leaving.
    releasing: usize,
}

async fn run(
    store: Arc<dyn Store>,
    engine: Engine,
    identity: CellIdentity,
    settings: LeaseSettings,
    mut left: oneshot::Receiver<()>,
) {
    let (outcomes, mut incoming) = mpsc::channel(OUTCOMES_MAX);
    // Heartbeat versions grow across restarts: wall milliseconds at start.
    let beat_base = Utc::now().timestamp_millis().max(0) as u64;
    let keeper = LeaseKeeper::new(&identity.name, settings.clone(), beat_base);
    let mut driver = Driver {
        store,
        engine,
        identity,
        settings: settings.clone(),
        keeper,
        origin: Instant::now(),
        started_at: Utc::now(),
        outcomes,
        observing: false,
        releasing: 0,
    };
    let mut tick = tokio::time::interval(Duration::from_millis(TICK_MS));
    let mut observe = tokio::time::interval(Duration::from_millis((settings.renew_ms / 2).max(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    observe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leaving = false;
    let leave_deadline = tokio::time::sleep(Duration::from_secs(u64::MAX / 4));
    tokio::pin!(leave_deadline);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = driver.now();
                driver.feed(LeaseInput::Tick { now });
            }
            _ = observe.tick(), if !driver.observing && !leaving => driver.observe(),
            Some(outcome) = incoming.recv() => driver.outcome(outcome),
            _ = &mut left, if !leaving => {
                leaving = true;
                let now = driver.now();
                driver.feed(LeaseInput::Leave { now });
                leave_deadline.as_mut().reset(tokio::time::Instant::now() + LEAVE_TIMEOUT);
            }
            _ = &mut leave_deadline, if leaving => break,
        }
        if leaving && driver.releasing == 0 {
            break;
        }
    }
    tracing::info!(cell = %driver.identity.name, "lease keeper stopped");
}

impl Driver {
    fn now(&self) -> Millis {
        self.origin.elapsed().as_millis() as Millis
    }

    fn feed(&mut self, input: LeaseInput) {
        if let Some(ownership) = self.engine.ownership() {
            self.keeper.set_busy(ownership.busy());
        }
        let effects = self.keeper.handle(input);
        for effect in effects {
            self.perform(effect);
        }
        metrics::gauge!("weft_cell_shards_held").set(self.keeper.held().count() as f64);
    }

    fn perform(&mut self, effect: LeaseEffect) {
        match effect {
            LeaseEffect::Write { op, expect, row } => {
                if op == LeaseOp::Release {
                    self.releasing += 1;
                }
                let store = self.store.clone();
                let outcomes = self.outcomes.clone();
                let sent = self.now();
                let timeout = Duration::from_millis(self.settings.ttl_ms);
                tokio::spawn(async move {
                    let write = store.write_lease(expect, &row, Utc::now());
                    let outcome = match tokio::time::timeout(timeout, write).await {
                        Ok(Ok(LeaseWrite::Applied)) => CasOutcome::Applied,
                        Ok(Ok(LeaseWrite::Refused(current))) => CasOutcome::Refused(current),
                        Ok(Err(error)) => {
                            tracing::warn!(shard = row.shard, ?op, %error, "lease write failed");
                            CasOutcome::Unknown
                        }
                        Err(_) => {
                            tracing::warn!(shard = row.shard, ?op, "lease write timed out");
                            CasOutcome::Unknown
                        }
                    };
                    let _ = outcomes
                        .send(Outcome::Written {
                            op,
                            row,
                            sent,
                            outcome,
                        })
                        .await;
                });
            }
            LeaseEffect::Gained { shard, epoch } => {
                tracing::info!(cell = %self.identity.name, shard, epoch, "shard gained");
                self.engine.shard_gained(shard, epoch);
            }
            LeaseEffect::Lost { shard, epoch } => {
                tracing::info!(cell = %self.identity.name, shard, epoch, "shard lost");
                self.engine.shard_lost(shard, epoch);
            }
            LeaseEffect::Beat { version } => {
                let row = CellRow {
                    name: self.identity.name.clone(),
                    region: self.identity.region.clone(),
                    address: self.identity.address.clone(),
                    api: self.identity.api.clone(),
                    version,
                    beat_at: Utc::now(),
                    started_at: self.started_at,
                };
                let store = self.store.clone();
                let timeout = Duration::from_millis(self.settings.renew_ms);
                tokio::spawn(async move {
                    match tokio::time::timeout(timeout, store.put_cell(&row)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => tracing::warn!(%error, "heartbeat write failed"),
                        Err(_) => tracing::warn!("heartbeat write timed out"),
                    }
                });
            }
            LeaseEffect::Retire => {
                let store = self.store.clone();
                let name = self.identity.name.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(LEAVE_TIMEOUT, store.delete_cell(&name)).await;
                });
            }
        }
    }

    fn observe(&mut self) {
        self.observing = true;
        let store = self.store.clone();
        let outcomes = self.outcomes.clone();
        let shards = self.settings.shards;
        let timeout = Duration::from_millis(self.settings.renew_ms);
        tokio::spawn(async move {
            let read = async {
                let leases = store.leases(shards).await?;
                let cells = store.cells().await?;
                Ok::<_, weft_storage::Error>((leases, cells))
            };
            let outcome = match tokio::time::timeout(timeout, read).await {
                Ok(Ok((leases, cells))) => Outcome::Observed {
                    leases: leases.into_iter().map(|record| record.lease).collect(),
                    addresses: cells
                        .iter()
                        .map(|cell| (cell.name.clone(), cell.address.clone()))
                        .collect(),
                    cells: cells
                        .into_iter()
                        .map(|cell| CellBeat {
                            cell: cell.name,
                            version: cell.version,
                        })
                        .collect(),
                },
                Ok(Err(error)) => Outcome::ObserveFailed(error.to_string()),
                Err(_) => Outcome::ObserveFailed("timed out".to_string()),
            };
            let _ = outcomes.send(outcome).await;
        });
    }

    fn outcome(&mut self, outcome: Outcome) {
        let now = self.now();
        match outcome {
            Outcome::Observed {
                leases,
                cells,
                addresses,
            } => {
                self.observing = false;
                if let Some(ownership) = self.engine.ownership() {
                    ownership.set_directory(
                        leases.iter().map(|row| {
                            (row.shard, row.owner.clone().unwrap_or_default(), row.epoch)
                        }),
                    );
                    ownership.set_cell_addresses(addresses);
                }
                self.feed(LeaseInput::Observed { now, leases, cells });
            }
            Outcome::ObserveFailed(reason) => {
                self.observing = false;
                metrics::counter!("weft_cell_lease_reads_failed_total").increment(1);
                tracing::warn!(%reason, "reading the lease rows failed");
            }
            Outcome::Written {
                op,
                row,
                sent,
                outcome,
            } => {
                if op == LeaseOp::Release {
                    self.releasing = self.releasing.saturating_sub(1);
                }
                metrics::counter!("weft_cell_lease_writes_total").increment(1);
                self.feed(LeaseInput::Written {
                    now,
                    op,
                    row,
                    sent,
                    outcome,
                });
            }
        }
    }
}
