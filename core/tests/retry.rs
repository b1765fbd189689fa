//! Retry delays as Airflow computes them, with seeded jitter.

use expect_test::expect;
use weft_core::ids::TaskInstanceKey;
use weft_core::retry::{jitter, RetryPolicy, MAX_RETRY_DELAY_DEFAULT_MS};

fn key() -> TaskInstanceKey {
    TaskInstanceKey::new("d", "r", "t", -1)
}

fn sequence(policy: RetryPolicy, seed: u64) -> String {
    (2..=policy.retries + 1)
        .map(|next| {
            format!(
                "try {next}: {} ms\n",
                policy.delay_before_try_ms(next, jitter(seed, &key(), next))
            )
        })
        .collect()
}

#[test]
fn fixed_delay_without_backoff() {
    let policy = RetryPolicy {
        retries: 3,
        retry_delay_ms: 300_000,
        exponential_backoff: false,
        max_retry_delay_ms: None,
    };
    expect![[r#"
        try 2: 300000 ms
        try 3: 300000 ms
        try 4: 300000 ms
    "#]]
    .assert_eq(&sequence(policy, 1));
}

#[test]
fn exponential_backoff_doubles_with_jitter_and_is_capped() {
    let policy = RetryPolicy {
        retries: 6,
        retry_delay_ms: 1_000,
        exponential_backoff: true,
        max_retry_delay_ms: Some(20_000),
    };
    for next in 2..=7u32 {
        let min_backoff = 1_000u64 << (next - 2);
        let delay = policy.delay_before_try_ms(next, jitter(9, &key(), next));
        assert!(
            delay >= min_backoff.min(20_000) && delay < 2 * min_backoff,
            "try {next}: {delay}"
        );
        assert!(delay <= 20_000);
    }
    expect![[r#"
        try 2: 1871 ms
        try 3: 2844 ms
        try 4: 4390 ms
        try 5: 10293 ms
        try 6: 20000 ms
        try 7: 20000 ms
    "#]]
    .assert_eq(&sequence(policy, 9));
}

#[test]
fn jitter_is_deterministic_and_depends_on_seed_key_and_try() {
    assert_eq!(jitter(1, &key(), 2), jitter(1, &key(), 2));
    assert_ne!(jitter(1, &key(), 2), jitter(2, &key(), 2));
    assert_ne!(jitter(1, &key(), 2), jitter(1, &key(), 3));
    assert_ne!(
        jitter(1, &key(), 2),
        jitter(1, &TaskInstanceKey::new("d", "r", "t", 0), 2)
    );
}

#[test]
fn unset_cap_is_a_day_and_huge_tries_do_not_overflow() {
    let policy = RetryPolicy {
        retries: 100,
        retry_delay_ms: 60_000,
        exponential_backoff: true,
        max_retry_delay_ms: None,
    };
    assert_eq!(
        policy.delay_before_try_ms(101, u64::MAX),
        MAX_RETRY_DELAY_DEFAULT_MS
    );
    let zero = RetryPolicy {
        retry_delay_ms: 0,
        ..policy
    };
    assert!(
        zero.delay_before_try_ms(2, 12345) <= 1,
        "Airflow's lower bound of one unit"
    );
}
