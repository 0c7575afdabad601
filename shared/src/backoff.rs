//! The one backoff for infrastructure retries: connecting to NATS, setting
//! up streams and consumers, a failed pull, the dead-letter mover's pauses.
//!
//! Contract: 100 ms doubling up to 5 s, each pause plus a random share of
//! up to as much again (so replicas that lost NATS together do not come back
//! in step), and no limit on attempts; a call site that must give up adds `.with_max_times(n)`.
//! Messages never use it: how long a failed message waits before its next
//! delivery is the configured schedule ([`crate::retry::RetrySchedule`]),
//! the one source of redelivery delays.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// The first pause and the bound of the doubling, both before jitter.
pub const MIN_DELAY: Duration = Duration::from_millis(100);
pub const MAX_DELAY: Duration = Duration::from_secs(5);

/// The infrastructure backoff, for `backon::Retryable::retry` or, where a
/// loop keeps its own state, `.build()` as an iterator of pauses.
pub fn infra() -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(MIN_DELAY)
        .with_max_delay(MAX_DELAY)
        .with_jitter()
        .without_max_times()
}

/// The same backoff as an endless iterator of pauses, for a loop that
/// keeps its own state (start a new one after a success).
pub fn pauses() -> impl Iterator<Item = Duration> + Send {
    infra().build()
}

/// The pause before retry number `attempt` (1-based) of the same
/// backoff, for callers that only know the attempt count (async-nats'
/// reconnect callback, a redelivered advisory).
pub fn delay(attempt: usize) -> Duration {
    infra()
        .build()
        .nth(attempt.saturating_sub(1).min(64))
        .unwrap_or(MAX_DELAY)
}

/// async-nats' reconnect delay: the first attempt at once (a server that
/// restarted is usually back), then [`delay`].
pub fn reconnect_delay(attempts: usize) -> Duration {
    if attempts <= 1 {
        Duration::ZERO
    } else {
        delay(attempts - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_to_the_bound_and_never_end() {
        let pauses: Vec<Duration> = pauses().take(200).collect();
        assert_eq!(pauses.len(), 200, "no limit on attempts");
        // Jitter adds up to one base delay on top: [base, 2 * base).
        assert!(pauses[0] >= MIN_DELAY && pauses[0] < 2 * MIN_DELAY);
        assert!(pauses.iter().all(|p| *p < 2 * MAX_DELAY), "{pauses:?}");
        assert!(pauses[199] >= MAX_DELAY);
        assert!(delay(1) < 2 * MIN_DELAY);
        assert!(delay(1_000) >= MAX_DELAY && delay(1_000) < 2 * MAX_DELAY);
        assert_eq!(reconnect_delay(1), Duration::ZERO);
        assert!(reconnect_delay(2) >= MIN_DELAY);
    }
}
