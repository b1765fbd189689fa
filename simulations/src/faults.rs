//! Fault injection: what can go wrong, how often, and the store behind a fault layer.
//!
//! The store is `weft_storage::memory::MemoryStore` (deterministic). A write through the fault
//! layer either is applied and acknowledged, fails without being applied, is applied but its
//! acknowledgement is lost (the caller sees an error: "the write may not have happened"), or
//! takes the node down mid-write (applied or not). An acknowledged write is always applied,
//! so a crash loses only unacknowledged writes; the `acknowledged_never_lost` checker holds
//! the layer to that.

use crate::rng::SimRng;
use futures::executor::block_on;
use weft_storage::memory::MemoryStore;
use weft_storage::{Store, Write};

/// How often each fault happens while faults are on, per mille of the chances it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultRates {
    /// A message is dropped.
    pub drop: u32,
    /// A message is delivered twice.
    pub duplicate: u32,
    /// A message takes a long detour (and so is reordered with later ones).
    pub delay: u32,
    /// A store batch fails, not applied.
    pub store_error: u32,
    /// A store batch is applied but its acknowledgement is lost.
    pub store_ack_lost: u32,
    /// The node crashes in the middle of a store batch.
    pub crash_mid_write: u32,
    /// Store latency in ms added to the messages a decision sends after its write.
    pub store_latency_ms_max: u64,
}

impl FaultRates {
    pub const NONE: FaultRates = FaultRates {
        drop: 0,
        duplicate: 0,
        delay: 0,
        store_error: 0,
        store_ack_lost: 0,
        crash_mid_write: 0,
        store_latency_ms_max: 0,
    };

    /// Rates for one seed: some seeds are calm, some are storms.
    pub fn draw(rng: &mut SimRng) -> FaultRates {
        let scale = *rng.pick(&[0, 1, 2, 4]);
        FaultRates {
            drop: 5 * scale,
            duplicate: 10 * scale,
            delay: 20 * scale,
            store_error: 5 * scale,
            store_ack_lost: 3 * scale,
            crash_mid_write: scale,
            store_latency_ms_max: rng.between(0, 200),
        }
    }
}

/// How a write through the fault layer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Applied and acknowledged.
    Acknowledged,
    /// A compare-and-set guard (or a limit) refused the batch; nothing was written.
    Conflict,
    /// The caller saw an error; `applied` says whether the batch is in the store anyway.
    Failed { applied: bool },
    /// The node went down during the write; `applied` as above.
    Crashed { applied: bool },
}

#[derive(Debug, Clone)]
pub struct FaultyStore {
    pub inner: MemoryStore,
}

impl FaultyStore {
    pub fn new() -> FaultyStore {
        FaultyStore {
            inner: MemoryStore::new(),
        }
    }

    /// Apply `batch` as the fault layer decides. `rates` are `FaultRates::NONE` when faults are
    /// off.
    pub fn write(&self, rng: &mut SimRng, rates: &FaultRates, batch: Vec<Write>) -> WriteOutcome {
        let lost_before = rng.chance(rates.store_error);
        let crash = rng.chance(rates.crash_mid_write);
        let ack_lost = rng.chance(rates.store_ack_lost);
        if crash && rng.chance(500) || lost_before {
            let applied = false;
            return if crash {
                WriteOutcome::Crashed { applied }
            } else {
                WriteOutcome::Failed { applied }
            };
        }
        match block_on(self.inner.write(batch)) {
            Ok(()) if crash => WriteOutcome::Crashed { applied: true },
            Ok(()) if ack_lost => WriteOutcome::Failed { applied: true },
            Ok(()) => WriteOutcome::Acknowledged,
            Err(_) if crash => WriteOutcome::Crashed { applied: false },
            Err(_) => WriteOutcome::Conflict,
        }
    }
}

impl Default for FaultyStore {
    fn default() -> FaultyStore {
        FaultyStore::new()
    }
}
