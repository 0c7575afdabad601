//! Writing the ledger: embedded migrations, day partitions, batches in one
//! transaction, retention by dropping whole days.
//!
//! Contract:
//! - [`Store::write`] writes a batch in ONE transaction, one multi-row
//!   `INSERT ... ON CONFLICT DO NOTHING` per table, so a message stored
//!   before (a redelivery, an ack that was lost) is not stored again; the
//!   caller acks only after it returns `Ok`.
//! - A row PostgreSQL refuses (a data error, SQLSTATE class 22 or 23: a
//!   `\u0000` in a JSON string, say) does not block the batch: the batch is
//!   written again row by row, each in a savepoint, and a refused row goes
//!   to `ledger_unparsed` whole, with PostgreSQL's reason.
//! - Every other error ([`WriteError::Unavailable`]: connection refused or
//!   cut, the server shutting down, a pool timeout, ...) writes nothing; the
//!   caller retries the same batch.
//! - Partitions: each row's UTC day (its `stream_time`) gets its partitions
//!   before the batch (`ledger_ensure_day`); days already made are
//!   remembered, and forgotten after any error.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, QueryBuilder, Transaction};
use time::{Date, OffsetDateTime};

use crate::record::{Record, UnparsedRow};

/// The migrations under `ledger/migrations`, compiled in. The hub config's
/// (`shared::config_db`, versions 1001 and up) share the database's
/// `_sqlx_migrations`: each migrator ignores the other's rows.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate::Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("./migrations")
};

/// Why a write or a query did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Nothing was written; try again later.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for WriteError {
    fn from(e: sqlx::Error) -> Self {
        WriteError::Unavailable(e)
    }
}

/// A refused row: a data error PostgreSQL would give again for the same
/// row (SQLSTATE class 22 data exception or 23 integrity violation).
fn is_row_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c.starts_with("22") || c.starts_with("23")),
        _ => false,
    }
}

/// The ledger's database.
pub struct Store {
    pool: PgPool,
    days: Mutex<HashSet<Date>>,
}

/// What one [`Store::write`] stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Rows new to the ledger (not seen before).
    pub inserted: u64,
    /// Rows moved to `ledger_unparsed` because their table refused them.
    pub refused: u64,
}

impl Store {
    /// A pool that connects on first use (so the stage starts, and says it
    /// is not ready, while PostgreSQL is down). `acquire_timeout` bounds
    /// each wait for a connection.
    pub fn connect_lazy(options: PgConnectOptions, max_connections: u32) -> Store {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options);
        Store {
            pool,
            days: Mutex::new(HashSet::new()),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the embedded migrations (idempotent; serialised by sqlx's
    /// own advisory lock when replicas start together).
    pub async fn migrate(&self) -> Result<(), WriteError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Makes the partitions of `day` (UTC) unless this process made them.
    pub async fn ensure_day(&self, day: Date) -> Result<(), WriteError> {
        if self.days.lock().expect("days lock").contains(&day) {
            return Ok(());
        }
        sqlx::query("SELECT ledger_ensure_day($1)")
            .bind(day)
            .execute(&self.pool)
            .await?;
        self.days.lock().expect("days lock").insert(day);
        Ok(())
    }

    /// Writes `records` in one transaction (see the module contract).
    pub async fn write(&self, records: &[Record]) -> Result<Written, WriteError> {
        let result = self.write_inner(records).await;
        if result.is_err() {
            // A partition may have been dropped under us: ask again.
            self.days.lock().expect("days lock").clear();
        }
        result
    }

    async fn write_inner(&self, records: &[Record]) -> Result<Written, WriteError> {
        if records.is_empty() {
            return Ok(Written::default());
        }
        let mut days: Vec<Date> = records.iter().map(|r| utc_day(r.time())).collect();
        days.sort();
        days.dedup();
        for day in days {
            self.ensure_day(day).await?;
        }
        let mut tx = self.pool.begin().await?;
        match insert_all(&mut tx, records).await {
            Ok(inserted) => {
                tx.commit().await?;
                Ok(Written {
                    inserted,
                    refused: 0,
                })
            }
            Err(e) if is_row_error(&e) => {
                drop(tx);
                self.write_row_by_row(records).await
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn write_row_by_row(&self, records: &[Record]) -> Result<Written, WriteError> {
        let mut tx = self.pool.begin().await?;
        let mut written = Written::default();
        for record in records {
            sqlx::query("SAVEPOINT ledger_row")
                .execute(&mut *tx)
                .await?;
            match insert_all(&mut tx, std::slice::from_ref(record)).await {
                Ok(n) => written.inserted += n,
                Err(e) if is_row_error(&e) => {
                    sqlx::query("ROLLBACK TO SAVEPOINT ledger_row")
                        .execute(&mut *tx)
                        .await?;
                    let raw = refused_row(record, &e);
                    written.inserted +=
                        insert_all(&mut tx, std::slice::from_ref(&Record::Unparsed(raw))).await?;
                    written.refused += 1;
                }
                Err(e) => return Err(e.into()),
            }
            sqlx::query("RELEASE SAVEPOINT ledger_row")
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(written)
    }

    /// Drops the day partitions older than `days` days before `now` (UTC
    /// days: a row lives `days` to `days + 1` days). Gives up after
    /// `lock_timeout` waiting for a table lock, so it never queues the
    /// inserts behind a long query; the next round tries again.
    pub async fn drop_expired(
        &self,
        now: OffsetDateTime,
        days: u32,
        lock_timeout: Duration,
    ) -> Result<u32, WriteError> {
        let cutoff = retention_cutoff(now, days);
        let mut tx = self.pool.begin().await?;
        sqlx::query(&format!(
            "SET LOCAL lock_timeout = '{}ms'",
            lock_timeout.as_millis()
        ))
        .execute(&mut *tx)
        .await?;
        let dropped: i32 = sqlx::query_scalar("SELECT ledger_drop_days_before($1)")
            .bind(cutoff)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        self.days
            .lock()
            .expect("days lock")
            .retain(|d| *d >= cutoff);
        Ok(u32::try_from(dropped).unwrap_or(0))
    }
}

/// The UTC day of a time.
pub fn utc_day(t: OffsetDateTime) -> Date {
    t.to_offset(time::UtcOffset::UTC).date()
}

/// The first day kept: days before it are dropped.
pub fn retention_cutoff(now: OffsetDateTime, days: u32) -> Date {
    utc_day(now - time::Duration::days(i64::from(days)))
}

/// The raw form of a row its table refused.
fn refused_row(record: &Record, e: &sqlx::Error) -> UnparsedRow {
    let reason = format!("refused by its table: {e}");
    let (stream, headers, body) = match record {
        Record::Webhook(r) => ("WEBHOOKS", r.headers.clone(), r.body.clone()),
        Record::Order(r) => (
            "ORDERS",
            serde_json::json!({}),
            r.order.to_string().into_bytes(),
        ),
        Record::Decision(r) => (
            "STATUS",
            serde_json::json!({}),
            r.decision.to_string().into_bytes(),
        ),
        Record::Outcome(r) => (
            shared::outcome::OUTCOMES_STREAM,
            serde_json::json!({}),
            serde_json::to_vec(&r.outcome).expect("an outcome serializes"),
        ),
        Record::DeadLetter(r) => ("DLQ", r.headers.clone(), r.body.clone()),
        Record::Unparsed(r) => (r.stream, r.headers.clone(), r.body.clone()),
    };
    UnparsedRow {
        stream,
        origin: record.origin().clone(),
        reason: crate::record::clean(&reason),
        // The refused JSON may be what PostgreSQL refused: kept as bytes.
        headers: sanitize_json(headers),
        body,
    }
}

/// JSON without `\u0000` anywhere (jsonb refuses it).
fn sanitize_json(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => Value::String(crate::record::clean(&s)),
        Value::Array(a) => Value::Array(a.into_iter().map(sanitize_json).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, v)| (crate::record::clean(&k), sanitize_json(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Inserts every record, one statement per table; returns the rows new to
/// the ledger.
async fn insert_all(
    tx: &mut Transaction<'static, Postgres>,
    records: &[Record],
) -> Result<u64, sqlx::Error> {
    let mut inserted = 0;
    let webhooks: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            Record::Webhook(w) => Some(w),
            _ => None,
        })
        .collect();
    if !webhooks.is_empty() {
        let mut q = QueryBuilder::<Postgres>::new(
            "INSERT INTO webhook_logs (stream_seq, stream_time, subject, kind, provider, account, tenant, webhook_id, received_at, notification_event, replay_of, headers, body) ",
        );
        q.push_values(webhooks, |mut b, w| {
            b.push_bind(w.origin.seq)
                .push_bind(w.origin.time)
                .push_bind(&w.origin.subject)
                .push_bind(w.kind)
                .push_bind(&w.provider)
                .push_bind(&w.account)
                .push_bind(&w.tenant)
                .push_bind(&w.webhook_id)
                .push_bind(w.received_at)
                .push_bind(&w.notification_event)
                .push_bind(&w.replay_of)
                .push_bind(&w.headers)
                .push_bind(&w.body);
        });
        q.push(" ON CONFLICT DO NOTHING");
        inserted += q.build().execute(&mut **tx).await?.rows_affected();
    }
    let orders: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            Record::Order(o) => Some(o),
            _ => None,
        })
        .collect();
    if !orders.is_empty() {
        let mut q = QueryBuilder::<Postgres>::new(
            "INSERT INTO provider_order_logs (stream_seq, stream_time, subject, provider, tenant, webhook_id, provider_order_id, event, replay_of, \"order\") ",
        );
        q.push_values(orders, |mut b, o| {
            b.push_bind(o.origin.seq)
                .push_bind(o.origin.time)
                .push_bind(&o.origin.subject)
                .push_bind(&o.provider)
                .push_bind(&o.tenant)
                .push_bind(&o.webhook_id)
                .push_bind(&o.provider_order_id)
                .push_bind(&o.event)
                .push_bind(&o.replay_of)
                .push_bind(&o.order);
        });
        q.push(" ON CONFLICT DO NOTHING");
        inserted += q.build().execute(&mut **tx).await?.rows_affected();
    }
    let decisions: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            Record::Decision(d) => Some(d),
            _ => None,
        })
        .collect();
    if !decisions.is_empty() {
        let mut q = QueryBuilder::<Postgres>::new(
            "INSERT INTO status_decisions (stream_seq, stream_time, subject, provider, account, tenant, status_id, provider_order_id, action, origin, decided_at, order_webhook_id, decision) ",
        );
        q.push_values(decisions, |mut b, d| {
            b.push_bind(d.origin.seq)
                .push_bind(d.origin.time)
                .push_bind(&d.origin.subject)
                .push_bind(&d.provider)
                .push_bind(&d.account)
                .push_bind(&d.tenant)
                .push_bind(&d.status_id)
                .push_bind(&d.provider_order_id)
                .push_bind(&d.action)
                .push_bind(&d.origin_of_decision)
                .push_bind(d.decided_at)
                .push_bind(&d.order_webhook_id)
                .push_bind(&d.decision);
        });
        q.push(" ON CONFLICT DO NOTHING");
        inserted += q.build().execute(&mut **tx).await?.rows_affected();
    }
    let outcomes: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            Record::Outcome(o) => Some(o),
            _ => None,
        })
        .collect();
    if !outcomes.is_empty() {
        let mut q = QueryBuilder::<Postgres>::new(
            "INSERT INTO order_outcomes (stream_seq, stream_time, at, stage, kind, provider, account, tenant, webhook_id, provider_order_id, event, action, status_id, ok, already_done, http_status, duration_ms, error_class, error, source_stream, source_seq, source_delivery, order_seq, step) ",
        );
        q.push_values(outcomes, |mut b, r| {
            let o = &r.outcome;
            b.push_bind(r.origin.seq)
                .push_bind(r.origin.time)
                .push_bind(o.at)
                .push_bind(o.stage.as_str())
                .push_bind(o.kind.as_str())
                .push_bind(o.provider.as_str())
                .push_bind(&o.account)
                .push_bind(&o.tenant)
                .push_bind(&o.webhook_id)
                .push_bind(&o.provider_order_id)
                .push_bind(&o.event)
                .push_bind(&o.action)
                .push_bind(&o.status_id)
                .push_bind(o.ok)
                .push_bind(o.already_done)
                .push_bind(o.http_status.map(i32::from))
                .push_bind(o.duration_ms.map(|d| i64::try_from(d).unwrap_or(i64::MAX)))
                .push_bind(&o.error_class)
                .push_bind(&o.error)
                .push_bind(o.source.as_ref().map(|s| s.stream.clone()))
                .push_bind(o.source.as_ref().map(|s| big(s.seq)))
                .push_bind(o.source.as_ref().map(|s| big(s.delivery)))
                .push_bind(o.order_seq.map(big))
                .push_bind(i32::try_from(o.step).unwrap_or(i32::MAX));
        });
        q.push(" ON CONFLICT DO NOTHING");
        inserted += q.build().execute(&mut **tx).await?.rows_affected();
    }
    let dead: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            Record::DeadLetter(d) => Some(d),
            _ => None,
        })
        .collect();
    if !dead.is_empty() {
        let mut q = QueryBuilder::<Postgres>::new(
            "INSERT INTO delivery_error_logs (stream_seq, stream_time, subject, stage, original_stream, original_seq, original_subject, provider, account, tenant, webhook_id, provider_order_id, deliveries, first_failure, last_failure, error_class, error, moved_by, headers, body) ",
        );
        q.push_values(dead, |mut b, d| {
            b.push_bind(d.origin.seq)
                .push_bind(d.origin.time)
                .push_bind(&d.origin.subject)
                .push_bind(&d.stage)
                .push_bind(&d.original_stream)
                .push_bind(d.original_seq)
                .push_bind(&d.original_subject)
                .push_bind(&d.provider)
                .push_bind(&d.account)
                .push_bind(&d.tenant)
                .push_bind(&d.webhook_id)
                .push_bind(&d.provider_order_id)
                .push_bind(d.deliveries)
                .push_bind(d.first_failure)
                .push_bind(d.last_failure)
                .push_bind(&d.error_class)
                .push_bind(&d.error)
                .push_bind(&d.moved_by)
                .push_bind(&d.headers)
                .push_bind(&d.body);
        });
        q.push(" ON CONFLICT DO NOTHING");
        inserted += q.build().execute(&mut **tx).await?.rows_affected();
    }
    let unparsed: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            Record::Unparsed(u) => Some(u),
            _ => None,
        })
        .collect();
    if !unparsed.is_empty() {
        let mut q = QueryBuilder::<Postgres>::new(
            "INSERT INTO ledger_unparsed (stream, stream_seq, stream_time, subject, reason, headers, body) ",
        );
        q.push_values(unparsed, |mut b, u| {
            b.push_bind(u.stream)
                .push_bind(u.origin.seq)
                .push_bind(u.origin.time)
                .push_bind(&u.origin.subject)
                .push_bind(&u.reason)
                .push_bind(&u.headers)
                .push_bind(&u.body);
        });
        q.push(" ON CONFLICT DO NOTHING");
        inserted += q.build().execute(&mut **tx).await?.rows_affected();
    }
    Ok(inserted)
}

fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cutoff_keeps_whole_utc_days() {
        let now = OffsetDateTime::parse(
            "2027-03-31T23:30:00+02:00",
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        // 21:30 UTC on the 31st; 30 days back is the 1st.
        assert_eq!(retention_cutoff(now, 30).to_string(), "2027-03-01");
        assert_eq!(retention_cutoff(now, 0).to_string(), "2027-03-31");
        assert_eq!(utc_day(now).to_string(), "2027-03-31");
    }

    #[test]
    fn the_migrations_are_embedded() {
        assert_eq!(MIGRATOR.iter().count(), 1);
    }
}
