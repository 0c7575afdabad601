//! The ledger's metrics (prefix `ledger_`), each bumped by one function
//! together with what it counts. Labels: `stream` (the five streams the
//! ledger reads) and `error_type`; never ids or error text.
//!
//! - `ledger_messages_received_total{stream}`: messages pulled.
//! - `ledger_rows_inserted_total{stream}`: rows new to PostgreSQL (a
//!   redelivered message adds none).
//! - `ledger_rows_unparsed_total{stream}`: messages kept raw in
//!   `ledger_unparsed` (unreadable, or refused by their table).
//! - `ledger_messages_expired_total{stream}`: messages older than the
//!   retention, acked without a row (dropped).
//! - `ledger_batch_size_messages`, `ledger_write_duration_seconds`.
//! - `ledger_write_errors_total{error_type}`: failed writes (`unavailable`,
//!   `migrate`).
//! - `ledger_lag_messages{stream}`: the consumer's pending plus
//!   unacknowledged messages.
//! - `ledger_db_up` (0/1), `ledger_db_outage_seconds` (the current
//!   outage so far), `ledger_db_outages_ended_seconds_total` (outages that ended).
//! - `ledger_partitions_dropped_total`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::store::WriteError;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StreamLabel {
    pub stream: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ErrorLabel {
    pub error_type: &'static str,
}

pub struct Metrics {
    pub received: Family<StreamLabel, Counter>,
    pub inserted: Family<StreamLabel, Counter>,
    pub unparsed: Family<StreamLabel, Counter>,
    pub expired: Family<StreamLabel, Counter>,
    pub batch_size: Histogram,
    pub write_duration: Histogram,
    pub write_errors: Family<ErrorLabel, Counter>,
    pub lag: Family<StreamLabel, Gauge>,
    pub db_up: Gauge,
    pub db_outage_seconds: Gauge<f64, AtomicU64>,
    pub db_outage_seconds_total: Counter<f64, AtomicU64>,
    pub partitions_dropped: Counter,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            received: Family::default(),
            inserted: Family::default(),
            unparsed: Family::default(),
            expired: Family::default(),
            batch_size: Histogram::new([1.0, 5.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0]),
            write_duration: Histogram::new(shared::telemetry::duration_buckets()),
            write_errors: Family::default(),
            lag: Family::default(),
            db_up: Gauge::default(),
            db_outage_seconds: Gauge::default(),
            db_outage_seconds_total: Counter::default(),
            partitions_dropped: Counter::default(),
        };
        registry.register(
            "messages_received",
            "Messages pulled from a stream",
            m.received.clone(),
        );
        registry.register(
            "rows_inserted",
            "Rows new to PostgreSQL",
            m.inserted.clone(),
        );
        registry.register(
            "rows_unparsed",
            "Messages kept raw in ledger_unparsed",
            m.unparsed.clone(),
        );
        registry.register(
            "messages_expired",
            "Messages older than the retention, acked without a row",
            m.expired.clone(),
        );
        registry.register(
            "batch_size_messages",
            "Messages per written batch",
            m.batch_size.clone(),
        );
        registry.register(
            "write_duration_seconds",
            "Time to write one batch",
            m.write_duration.clone(),
        );
        registry.register(
            "write_errors",
            "Failed batch writes",
            m.write_errors.clone(),
        );
        registry.register(
            "lag_messages",
            "Messages of a stream the ledger has not acked",
            m.lag.clone(),
        );
        registry.register(
            "db_up",
            "PostgreSQL answered the last write",
            m.db_up.clone(),
        );
        registry.register(
            "db_outage_seconds",
            "Length of the current PostgreSQL outage",
            m.db_outage_seconds.clone(),
        );
        registry.register(
            "db_outages_ended_seconds",
            "Seconds of PostgreSQL outages that ended",
            m.db_outage_seconds_total.clone(),
        );
        registry.register(
            "partitions_dropped",
            "Day partitions dropped by the retention",
            m.partitions_dropped.clone(),
        );
        m
    }

    pub fn received(&self, stream: &'static str, n: usize) {
        self.received
            .get_or_create(&StreamLabel { stream })
            .inc_by(n as u64);
    }

    /// A committed batch: `messages` rows handed to the store, what it
    /// wrote, how many were kept raw and how many were past the retention.
    pub fn stored(
        &self,
        stream: &'static str,
        messages: usize,
        written: crate::store::Written,
        unparsed: usize,
        expired: usize,
    ) {
        let label = StreamLabel { stream };
        self.batch_size.observe(messages as f64);
        self.inserted.get_or_create(&label).inc_by(written.inserted);
        self.unparsed
            .get_or_create(&label)
            .inc_by(unparsed as u64 + written.refused);
        self.expired.get_or_create(&label).inc_by(expired as u64);
        if written.refused > 0 {
            tracing::warn!(
                stream,
                refused = written.refused,
                "rows refused by their table kept raw in ledger_unparsed"
            );
        }
    }

    pub fn write_error(&self, e: &WriteError) {
        let error_type = match e {
            WriteError::Unavailable(_) => "unavailable",
            WriteError::Migrate(_) => "migrate",
        };
        self.write_errors
            .get_or_create(&ErrorLabel { error_type })
            .inc();
    }
}
