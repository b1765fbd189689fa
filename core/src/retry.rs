//! Retry policy: how many tries, and how long to wait before each.
//!
//! Airflow's `TaskInstance.next_retry_datetime`: without exponential backoff the delay is
//! `retry_delay`; with it, `min_backoff = retry_delay * 2^(try - 2)` (try 2 is the first retry)
//! and the delay is `min_backoff + hash % min_backoff`, so it lies in `[min_backoff,
//! 2 * min_backoff)`, capped at `max_retry_delay` (24 hours when unset). Airflow hashes
//! `dag_id#task_id#logical_date#try`; we mix the run's seed with the task instance key and the
//! try, so the jitter is deterministic for a run yet differs between runs and task instances.
//! Airflow works in whole seconds; we apply the same formula to milliseconds.

use crate::ids::TaskInstanceKey;
use crate::spec::TaskSpec;

/// The cap on an exponential backoff when the task sets none (Airflow's
/// `core.max_task_retry_delay` default).
pub const MAX_RETRY_DELAY_DEFAULT_MS: u64 = 24 * 60 * 60 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries after the first; a task makes at most `1 + retries` tries (until cleared).
    pub retries: u32,
    pub retry_delay_ms: u64,
    pub exponential_backoff: bool,
    /// Caps the exponential backoff; `None` caps it at [`MAX_RETRY_DELAY_DEFAULT_MS`].
    pub max_retry_delay_ms: Option<u64>,
}

impl RetryPolicy {
    pub fn of_task(task: &TaskSpec) -> RetryPolicy {
        RetryPolicy {
            retries: task.retries,
            retry_delay_ms: task.retry_delay_ms,
            exponential_backoff: task.retry_exponential_backoff,
            max_retry_delay_ms: task.max_retry_delay_ms,
        }
    }

    /// How long to wait after a failed try before try `next_try` (2 for the first retry).
    pub fn delay_before_try_ms(&self, next_try: u32, jitter: u64) -> u64 {
        if !self.exponential_backoff {
            return self.retry_delay_ms;
        }
        let doublings = next_try.saturating_sub(2);
        let factor = 1u64.checked_shl(doublings).unwrap_or(u64::MAX);
        // Airflow imposes a lower bound of 1 so the modulo below is defined.
        let min_backoff = self.retry_delay_ms.saturating_mul(factor).max(1);
        let delay = min_backoff.saturating_add(jitter % min_backoff);
        delay.min(
            self.max_retry_delay_ms
                .unwrap_or(MAX_RETRY_DELAY_DEFAULT_MS),
        )
    }
}

/// The jitter for one try of one task instance: deterministic in `(seed, key, try)`.
pub fn jitter(seed: u64, key: &TaskInstanceKey, try_number: u32) -> u64 {
    let mut hash = fnv1a(0xcbf2_9ce4_8422_2325, key.dag_id.as_bytes());
    for part in [key.run_id.as_bytes(), key.task_id.as_bytes()] {
        hash = fnv1a(hash, b"#");
        hash = fnv1a(hash, part);
    }
    hash = fnv1a(hash, &key.map_index.to_le_bytes());
    splitmix64(seed ^ splitmix64(hash ^ u64::from(try_number)))
}

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Steele, Lea and Flood's SplitMix64 finaliser: a cheap, well-mixed 64-bit permutation.
pub fn splitmix64(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
