//! Request rate limits: a fixed one-minute window per key (a client address and a username
//! for sign-in, a username for the API), with a bounded number of keys.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys tracked at once; past it, expired windows are dropped, and if none expired the
/// tracker starts over (a flood of distinct keys must not grow memory without bound).
pub const RATE_LIMIT_KEYS_MAX: usize = 100_000;
const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> RateLimiter {
        RateLimiter {
            per_minute,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one request of `key`; false when it is over the limit for this minute.
    pub fn allow(&self, key: &str) -> bool {
        self.allow_at(key, Instant::now())
    }

    /// Whether `key` used up this minute's limit already; counts nothing.
    pub fn is_over(&self, key: &str) -> bool {
        self.is_over_at(key, Instant::now())
    }

    fn is_over_at(&self, key: &str, now: Instant) -> bool {
        let windows = self
            .windows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        windows.get(key).is_some_and(|(start, count)| {
            now.duration_since(*start) < WINDOW && *count >= self.per_minute
        })
    }

    fn allow_at(&self, key: &str, now: Instant) -> bool {
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if windows.len() >= RATE_LIMIT_KEYS_MAX && !windows.contains_key(key) {
            windows.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
            if windows.len() >= RATE_LIMIT_KEYS_MAX {
                windows.clear();
            }
        }
        let (start, count) = windows.entry(key.to_string()).or_insert((now, 0));
        if now.duration_since(*start) >= WINDOW {
            *start = now;
            *count = 0;
        }
        *count += 1;
        *count <= self.per_minute
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_over_its_limit_waits_for_the_next_window() {
        let limiter = RateLimiter::new(2);
        let start = Instant::now();
        assert!(limiter.allow_at("a", start));
        assert!(limiter.allow_at("a", start));
        assert!(!limiter.allow_at("a", start));
        assert!(limiter.allow_at("b", start), "keys are counted apart");
        assert!(limiter.allow_at("a", start + WINDOW));
    }

    #[test]
    fn is_over_counts_nothing() {
        let limiter = RateLimiter::new(1);
        let start = Instant::now();
        assert!(!limiter.is_over_at("a", start));
        assert!(!limiter.is_over_at("a", start));
        assert!(limiter.allow_at("a", start));
        assert!(limiter.is_over_at("a", start));
        assert!(!limiter.is_over_at("a", start + WINDOW));
    }
}
