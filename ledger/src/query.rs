//! The ledger's two questions, and their JSON answers (the API's bodies).
//!
//! - [`stats`]: what happened to a provider's webhooks over a window, by
//!   outcome, by account and by tenant, and how long a webhook took from
//!   the ingress's acceptance to the backend taking it.
//! - [`timeline`]: everything the hub did about one order, in time order.
//!
//! The window is on `stream_time` (when the hub recorded each step), so
//! it prunes day partitions; a replayed webhook (`Orderhub-Replay-Of`) is
//! not counted as received again.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use time::OffsetDateTime;

use shared::Provider;

/// Counts of one slice (everything, an account, a tenant).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Raw webhooks the ingress accepted (replays not counted).
    pub received: u64,
    /// Orders the fetcher fetched for a notification.
    pub fetched: u64,
    pub converted: u64,
    pub refused: u64,
    /// Backend attempts that got a 2xx/409, and those that did not.
    pub attempts_ok: u64,
    pub attempts_failed: u64,
    pub delivered: u64,
    /// Entries in the DLQ.
    pub dead_lettered: u64,
    pub status_calls_ok: u64,
    pub status_calls_failed: u64,
    pub replayed: u64,
    pub purged: u64,
}

impl Counts {
    fn add(&mut self, outcome: &str, n: u64) {
        let slot = match outcome {
            "received" => &mut self.received,
            "fetched" => &mut self.fetched,
            "converted" => &mut self.converted,
            "refused" => &mut self.refused,
            "attempts_ok" => &mut self.attempts_ok,
            "attempts_failed" => &mut self.attempts_failed,
            "delivered" => &mut self.delivered,
            "dead_lettered" => &mut self.dead_lettered,
            "status_calls_ok" => &mut self.status_calls_ok,
            "status_calls_failed" => &mut self.status_calls_failed,
            "replayed" => &mut self.replayed,
            "purged" => &mut self.purged,
            _ => return,
        };
        *slot += n;
    }
}

/// Milliseconds from the ingress accepting a webhook to the backend
/// taking it (its `delivered` step), over the deliveries in the window;
/// `None` without any.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// `GET /api/webhooks/stats/{provider}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub provider: String,
    /// The window as asked (`1h`).
    pub since: String,
    #[serde(with = "time::serde::rfc3339")]
    pub from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub to: OffsetDateTime,
    pub counts: Counts,
    pub by_account: BTreeMap<String, Counts>,
    pub by_tenant: BTreeMap<String, Counts>,
    pub latency: Latency,
}

/// Counts by account and tenant; status calls and attempts split by `ok`.
const COUNTS_SQL: &str = "
SELECT account, tenant, 'received' AS outcome, count(*) AS n
  FROM webhook_logs
 WHERE provider = $1 AND stream_time >= $2 AND kind = 'raw' AND replay_of IS NULL
 GROUP BY 1, 2
UNION ALL
SELECT account, tenant,
       CASE kind WHEN 'attempt' THEN CASE WHEN ok THEN 'attempts_ok' ELSE 'attempts_failed' END
                 WHEN 'status_call' THEN CASE WHEN ok THEN 'status_calls_ok' ELSE 'status_calls_failed' END
                 ELSE kind END,
       count(*)
  FROM order_outcomes
 WHERE provider = $1 AND stream_time >= $2 AND kind <> 'dead_lettered'
 GROUP BY 1, 2, 3
UNION ALL
SELECT account, tenant, 'dead_lettered', count(*)
  FROM delivery_error_logs
 WHERE provider = $1 AND stream_time >= $2
 GROUP BY 1, 2";

/// Percentiles of observed values (`percentile_disc`: each is a latency
/// that happened).
const LATENCY_SQL: &str = "
SELECT count(*),
       percentile_disc(0.5) WITHIN GROUP (ORDER BY ms),
       percentile_disc(0.9) WITHIN GROUP (ORDER BY ms),
       percentile_disc(0.99) WITHIN GROUP (ORDER BY ms)
  FROM (SELECT (extract(epoch FROM (o.at - w.received_at)) * 1000)::float8 AS ms
          FROM order_outcomes o
          JOIN LATERAL (SELECT min(received_at) AS received_at
                          FROM webhook_logs
                         WHERE webhook_id = o.webhook_id) w ON w.received_at IS NOT NULL
         WHERE o.provider = $1 AND o.stream_time >= $2 AND o.kind = 'delivered' AND o.ok) d";

/// The stats of `provider` from `now - since` to `now`.
pub async fn stats(
    pool: &PgPool,
    provider: Provider,
    since: std::time::Duration,
    since_text: &str,
    now: OffsetDateTime,
) -> Result<Stats, sqlx::Error> {
    let from = now - since;
    let rows: Vec<(Option<String>, Option<String>, String, i64)> = sqlx::query_as(COUNTS_SQL)
        .bind(provider.as_str())
        .bind(from)
        .fetch_all(pool)
        .await?;
    let mut counts = Counts::default();
    let mut by_account: BTreeMap<String, Counts> = BTreeMap::new();
    let mut by_tenant: BTreeMap<String, Counts> = BTreeMap::new();
    for (account, tenant, outcome, n) in rows {
        let n = u64::try_from(n).unwrap_or(0);
        counts.add(&outcome, n);
        if let Some(a) = account {
            by_account.entry(a).or_default().add(&outcome, n);
        }
        if let Some(t) = tenant {
            by_tenant.entry(t).or_default().add(&outcome, n);
        }
    }
    let (count, p50, p90, p99): (i64, Option<f64>, Option<f64>, Option<f64>) =
        sqlx::query_as(LATENCY_SQL)
            .bind(provider.as_str())
            .bind(from)
            .fetch_one(pool)
            .await?;
    Ok(Stats {
        provider: provider.as_str().to_owned(),
        since: since_text.to_owned(),
        from,
        to: now,
        counts,
        by_account,
        by_tenant,
        latency: Latency {
            count: u64::try_from(count).unwrap_or(0),
            p50_ms: p50,
            p90_ms: p90,
            p99_ms: p99,
        },
    })
}

/// One step in an order's timeline. `kind` is one of
/// `webhook_received`, `webhook_fetched`, `order_published` (the canonical
/// order on ORDERS), the outcome kinds (`converted`, `refused`, `fetched`,
/// `attempt`, `delivered`, `status_call`, `replayed`, `purged`),
/// `decision` (on STATUS) and `dead_letter` (a DLQ entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub kind: String,
    /// The stream the entry was read from, and its sequence there.
    pub stream: String,
    pub seq: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The order event (`created`, `cancelled`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// A decision's or a status call's action, and the decision's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_id: Option<String>,
    /// Who decided (`backend`, `auto_accept`, `auto_reject`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    /// Which delivery of its message took the step (outcomes), or how many
    /// deliveries a dead letter had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A replayed message: the DLQ entry it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<String>,
}

/// `GET /api/orders/{provider}/{provider_order_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    pub provider: String,
    pub provider_order_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub entries: Vec<Entry>,
}

/// Where an entry's kind falls in the pipeline: the tie-break for steps
/// recorded in the same microsecond.
fn rank(kind: &str) -> u8 {
    match kind {
        "webhook_received" => 0,
        "fetched" => 1,
        "webhook_fetched" => 2,
        "converted" | "refused" => 3,
        "order_published" => 4,
        "attempt" => 5,
        "delivered" => 6,
        "decision" => 7,
        "status_call" => 8,
        "dead_letter" => 9,
        "replayed" | "purged" => 10,
        _ => 11,
    }
}

/// Every row of the order: its canonical orders, outcomes, decisions and
/// dead letters by (provider, provider_order_id), and the webhooks (and
/// their steps) those name by webhook id.
const TIMELINE_SQL: &str = "
WITH ids AS (
    SELECT webhook_id FROM provider_order_logs
     WHERE provider = $1 AND provider_order_id = $2 AND ($3::text IS NULL OR tenant = $3)
    UNION
    SELECT webhook_id FROM order_outcomes
     WHERE provider = $1 AND provider_order_id = $2 AND ($3::text IS NULL OR tenant = $3)
       AND webhook_id IS NOT NULL
    UNION
    SELECT order_webhook_id FROM status_decisions
     WHERE provider = $1 AND provider_order_id = $2 AND ($3::text IS NULL OR tenant = $3)
       AND order_webhook_id IS NOT NULL
)
SELECT CASE WHEN kind = 'raw' THEN received_at ELSE stream_time END AS at,
       'webhook_' || CASE kind WHEN 'raw' THEN 'received' ELSE 'fetched' END AS kind,
       'WEBHOOKS' AS stream, stream_seq AS seq, NULL::text AS stage, webhook_id, account, tenant,
       notification_event AS event, NULL::text AS action, NULL::text AS status_id,
       NULL::text AS origin, NULL::bool AS ok, NULL::int AS http_status,
       NULL::bigint AS duration_ms, NULL::bigint AS delivery, NULL::text AS error_class,
       NULL::text AS error, replay_of
  FROM webhook_logs WHERE provider = $1 AND webhook_id IN (SELECT webhook_id FROM ids)
UNION ALL
SELECT stream_time, 'order_published', 'ORDERS', stream_seq, NULL, webhook_id, NULL, tenant,
       event, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, replay_of
  FROM provider_order_logs
 WHERE provider = $1 AND provider_order_id = $2 AND ($3::text IS NULL OR tenant = $3)
UNION ALL
SELECT at, kind, 'OUTCOMES', stream_seq, stage, webhook_id, account, tenant, event, action,
       status_id, NULL, ok, http_status, duration_ms, source_delivery, error_class, error, NULL
  FROM order_outcomes
 WHERE provider = $1 AND kind <> 'dead_lettered'
   AND (provider_order_id = $2 OR (provider_order_id IS NULL AND webhook_id IN (SELECT webhook_id FROM ids)))
   AND ($3::text IS NULL OR tenant IS NULL OR tenant = $3)
UNION ALL
SELECT stream_time, 'decision', 'STATUS', stream_seq, NULL, order_webhook_id, account, tenant,
       NULL, action, status_id, origin, NULL, NULL, NULL, NULL, NULL, NULL, NULL
  FROM status_decisions
 WHERE provider = $1 AND provider_order_id = $2 AND ($3::text IS NULL OR tenant = $3)
UNION ALL
SELECT stream_time, 'dead_letter', 'DLQ', stream_seq, stage, webhook_id, account, tenant,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, deliveries, error_class, error, NULL
  FROM delivery_error_logs
 WHERE provider = $1
   AND (provider_order_id = $2 OR (provider_order_id IS NULL AND webhook_id IN (SELECT webhook_id FROM ids)))
   AND ($3::text IS NULL OR tenant IS NULL OR tenant = $3)";

/// The order's timeline; `None` when the ledger never saw it.
pub async fn timeline(
    pool: &PgPool,
    provider: Provider,
    provider_order_id: &str,
    tenant: Option<&str>,
) -> Result<Option<Timeline>, sqlx::Error> {
    // sqlx's tuples stop at 16 columns: each row comes as one JSON object
    // (PostgreSQL writes its timestamps in RFC 3339).
    let rows: Vec<(sqlx::types::Json<serde_json::Value>,)> =
        sqlx::query_as(&format!("SELECT to_jsonb(t) FROM ({TIMELINE_SQL}) t"))
            .bind(provider.as_str())
            .bind(provider_order_id)
            .bind(tenant)
            .fetch_all(pool)
            .await?;
    let mut entries = Vec::with_capacity(rows.len());
    for (json,) in rows {
        let mut v = json.0;
        if let Some(o) = v.as_object_mut() {
            o.retain(|_, v| !v.is_null());
        }
        let e: Entry = serde_json::from_value(v).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        entries.push(e);
    }
    if entries.is_empty() {
        return Ok(None);
    }
    entries.sort_by(|a, b| {
        a.at.cmp(&b.at)
            .then(rank(&a.kind).cmp(&rank(&b.kind)))
            .then(a.seq.cmp(&b.seq))
    });
    Ok(Some(Timeline {
        provider: provider.as_str().to_owned(),
        provider_order_id: provider_order_id.to_owned(),
        tenant: tenant.map(str::to_owned),
        entries,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_take_every_outcome_and_ignore_others() {
        let mut c = Counts::default();
        for (o, n) in [
            ("received", 3),
            ("converted", 2),
            ("status_calls_failed", 1),
            ("dead_lettered", 1),
            ("something_new", 9),
        ] {
            c.add(o, n);
        }
        assert_eq!(
            c,
            Counts {
                received: 3,
                converted: 2,
                status_calls_failed: 1,
                dead_lettered: 1,
                ..Counts::default()
            }
        );
    }

    #[test]
    fn ties_follow_the_pipeline() {
        let kinds = [
            "dead_letter",
            "status_call",
            "decision",
            "delivered",
            "attempt",
            "order_published",
            "converted",
            "webhook_received",
        ];
        let mut sorted = kinds.to_vec();
        sorted.sort_by_key(|k| rank(k));
        sorted.reverse();
        assert_eq!(sorted, kinds);
    }
}
