//! The clock the core's decisions are stamped with.

/// The current time for the core, at the microsecond precision every store keeps, so that a
/// time read back from the store equals the one decided on.
pub(crate) fn now() -> weft_core::Timestamp {
    use chrono::{DurationRound, TimeDelta};
    let now = chrono::Utc::now();
    now.duration_trunc(TimeDelta::microseconds(1))
        .unwrap_or(now)
}
