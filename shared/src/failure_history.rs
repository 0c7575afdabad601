//! The failure history of messages being retried, in the `FAILURES`
//! key-value bucket ([`crate::streams::FAILURES_BUCKET`]), keyed
//! `<stream>.<seq>`.
//!
//! Contract: the worker writes a record only when a delivery fails (never on
//! the success path of a first delivery), keeping the first failure time;
//! it forgets the record once the message is acked or dead-lettered. A dead
//! letter takes its first failure time from here, and the dead-letter mover
//! names the last error of a message whose worker died. Everything is best
//! effort: a bucket error loses history, never the message.

use crate::failure::FailureClass;
use std::time::SystemTime;

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};

/// An error text longer than this is cut (the record is for a human).
const MAX_ERROR_LEN: usize = 4096;

/// What the bucket remembers about a message being retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureRecord {
    #[serde(with = "humantime_serde")]
    pub first_failure: SystemTime,
    #[serde(with = "humantime_serde")]
    pub last_failure: SystemTime,
    pub deliveries: i64,
    pub error_class: FailureClass,
    pub error: String,
}

/// The bucket key for a message: `<stream>.<seq>`.
pub fn key(stream: &str, seq: u64) -> String {
    format!("{stream}.{seq}")
}

/// Whether the failure of delivery `delivered` needs writing down: the
/// first (it fixes `first_failure`) and the one before the last delivery
/// (the last error the mover can name if the last delivery's worker dies).
/// The ones between would only be overwritten; skipping them saves the
/// server a read and a write per retry (a backend failing a share of
/// requests at random retries a lot: BENCHMARKS.md).
pub fn worth_recording(delivered: i64, next_is_last: bool) -> bool {
    delivered <= 1 || next_is_last
}

/// Records a failed delivery, keeping the first failure time; returns the
/// updated record. A first delivery has no earlier history to read.
pub async fn record(
    bucket: &kv::Store,
    stream: &str,
    seq: u64,
    deliveries: i64,
    error_class: FailureClass,
    error: &str,
) -> FailureRecord {
    let now = SystemTime::now();
    let key = key(stream, seq);
    let first = if deliveries <= 1 {
        now
    } else {
        load(bucket, stream, seq)
            .await
            .map(|r| r.first_failure)
            .unwrap_or(now)
    };
    let record = FailureRecord {
        first_failure: first,
        last_failure: now,
        deliveries,
        error_class,
        error: crate::redact::prefix_within(error, MAX_ERROR_LEN).to_owned(),
    };
    if let Ok(bytes) = serde_json::to_vec(&record)
        && let Err(e) = bucket.put(&key, bytes.into()).await
    {
        tracing::warn!(key, error = %e, "cannot record failure history");
    }
    record
}

/// The failure history of a message, if any.
pub async fn load(bucket: &kv::Store, stream: &str, seq: u64) -> Option<FailureRecord> {
    match bucket.get(key(stream, seq)).await {
        Ok(Some(bytes)) => serde_json::from_slice(&bytes).ok(),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(stream, seq, error = %e, "cannot read failure history");
            None
        }
    }
}

/// Forgets the history once the message is done (acked or dead-lettered).
pub async fn forget(bucket: &kv::Store, stream: &str, seq: u64) {
    if let Err(e) = bucket.purge(key(stream, seq)).await {
        tracing::debug!(stream, seq, error = %e, "cannot purge failure history");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_failure_and_the_one_before_the_last_are_written() {
        let written: Vec<i64> = (1..=10)
            .filter(|&d| worth_recording(d, d + 1 == 10))
            .collect();
        assert_eq!(written, [1, 9]);
    }

    #[test]
    fn keys_and_long_errors() {
        assert_eq!(key("WEBHOOKS", 42), "WEBHOOKS.42");
        let long = "é".repeat(3000);
        let cut = crate::redact::prefix_within(&long, MAX_ERROR_LEN);
        assert_eq!(cut.len(), MAX_ERROR_LEN);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
