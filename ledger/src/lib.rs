//! The ledger stage (issue 16): every stream's messages in PostgreSQL, and
//! the questions support asks of them, off the order's path.
//!
//! # Contract
//! - Consumes, with durable pull consumers of its own (`ledger-webhooks`,
//!   `ledger-orders`, `ledger-status`, `ledger-outcomes`, `ledger-dlq` in
//!   `nats/streams.toml`, `max_deliver = -1`): WEBHOOKS (raw and fetched
//!   webhooks: body, the hub's headers, subject), ORDERS (canonical orders),
//!   STATUS (decisions), OUTCOMES (`orderhub.outcome.v1` steps) and DLQ
//!   (dead letters). It publishes nothing: the rest of the hub never
//!   waits for it.
//! - Writes each batch in one transaction, idempotent on the stream
//!   sequence and stored time, and acks the batch after the commit
//!   ([`consume`], [`store`]). PostgreSQL down: nothing is acked, the batch
//!   is retried on the infrastructure backoff, the lag grows, `/ready`
//!   reports `database: false`; the ledger never dead-letters.
//! - A message it cannot read, or a row its table refuses, is kept whole in
//!   `ledger_unparsed` with the reason ([`record`]).
//! - Retention: day partitions older than `LEDGER_RETENTION_DAYS` are
//!   dropped hourly, whole; a message already older is acked without a row.
//! - Serves the query API on `API_ADDR` ([`api`], [`query`]) behind the
//!   operator token, and `/health`, `/ready`, `/metrics` on `OPS_ADDR`.
//!
//! Tables and the old service's logs: `webhook_logs` (WEBHOOKS, was
//! `webhook_logs`), `provider_order_logs` (ORDERS, was
//! `provider_order_logs`), `delivery_error_logs` (DLQ, was
//! `delivery_error_logs`), `order_outcomes` (OUTCOMES) and
//! `status_decisions` (STATUS) are new, `ledger_unparsed` keeps the rest.

pub mod api;
pub mod cli;
pub mod consume;
pub mod metrics;
pub mod query;
pub mod record;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream;
use backon::Retryable;
use secrecy::SecretString;
use sqlx::postgres::PgConnectOptions;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use shared::config::{CommonArgs, HubConfig};
use shared::streams::{Definitions, SetupError};

use crate::consume::{BatchOptions, Health, Loop};
use crate::record::Source;
use crate::store::{Store, WriteError};

/// The stage's name: metric prefix, NATS connection name.
pub const STAGE: &str = "ledger";

/// The ledger's own ops port (the other stages' dev ports run to 9096).
pub const DEFAULT_OPS_ADDR: &str = "127.0.0.1:9097";

/// Its validated settings.
#[derive(Clone)]
pub struct Options {
    pub database: PgConnectOptions,
    pub api_addr: SocketAddr,
    pub token: SecretString,
    pub retention_days: u32,
    pub batch: usize,
    pub batch_wait: Duration,
    pub max_connections: u32,
    /// Loops per stream, each writing its own batch: while one commits, the
    /// next batch is read and written (a single loop waits on every commit).
    pub writers: usize,
    /// How often old days are dropped.
    pub retention_every: Duration,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("database", &database_summary(&self.database))
            .field("api_addr", &self.api_addr)
            .field("token", &"[redacted]")
            .field("retention_days", &self.retention_days)
            .field("batch", &self.batch)
            .field("batch_wait", &self.batch_wait)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// `host:port/database` (no user, no password).
pub fn database_summary(o: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        o.get_host(),
        o.get_port(),
        o.get_database().unwrap_or("-")
    )
}

/// The largest batch: 2000 rows of the widest table stay under
/// PostgreSQL's 65535 parameters per statement.
pub const MAX_BATCH: usize = 2000;

/// Why the stage stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("{0}")]
    Connect(String),
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error("ops server on {addr}: {source}")]
    Ops {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("API server on {addr}: {source}")]
    Api {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("ledger migrations: {0}")]
    Migrate(sqlx::migrate::MigrateError),
}

/// A failure PostgreSQL may stop giving: no connection, the server
/// starting or shutting down, too many clients, a serialization failure.
fn transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d.code().is_some_and(|c| {
            ["08", "53", "57", "40"]
                .iter()
                .any(|class| c.starts_with(class))
        }),
        sqlx::Error::Configuration(_) | sqlx::Error::Migrate(_) => false,
        _ => true,
    }
}

fn migrate_transient(e: &sqlx::migrate::MigrateError) -> bool {
    use sqlx::migrate::MigrateError as M;
    match e {
        M::Execute(e) | M::ExecuteMigration(e, _) => transient(e),
        _ => false,
    }
}

/// Runs the ledger until `shutdown`.
pub async fn run(
    args: &CommonArgs,
    hub: &HubConfig,
    options: Options,
    shutdown: CancellationToken,
) -> Result<(), LedgerError> {
    info!(stage = STAGE, options = ?options, "starting");
    let client = shared::app::connect(args, STAGE)
        .await
        .map_err(LedgerError::Connect)?;
    let js = jetstream::new(client.clone());
    let readiness = shared::ops::Readiness::new();
    readiness.watch_client(client.clone());
    let streams_ok = readiness.condition("streams");
    let consuming = readiness.condition("consuming");

    let mut registry = shared::telemetry::registry(STAGE);
    let metrics = Arc::new(metrics::Metrics::register(&mut registry));
    let health = Arc::new(Health::new(metrics.clone()));
    readiness.add_condition("database", health.up.clone());
    let (ops_addr, ops_task) = shared::ops::serve(
        args.ops_addr,
        Arc::new(registry),
        readiness.clone(),
        shutdown.clone(),
    )
    .await
    .map_err(|source| LedgerError::Ops {
        addr: args.ops_addr,
        source,
    })?;
    info!(%ops_addr, "ops server listening");

    let store = Arc::new(Store::connect_lazy(
        options.database.clone(),
        options.max_connections,
    ));
    let state = Arc::new(api::ApiState::new(store.pool().clone(), &options.token));
    let (api_addr, api_task) = api::serve(options.api_addr, state, shutdown.clone())
        .await
        .map_err(|source| LedgerError::Api {
            addr: options.api_addr,
            source,
        })?;
    info!(%api_addr, "query API listening");

    let defs = Definitions::load(&hub.streams);
    let names: Vec<&str> = Source::ALL.iter().map(|s| s.stream()).collect();
    tokio::select! {
        r = shared::app::ensure_streams(&js, &defs, &names, args.manage_streams) => r?,
        _ = shutdown.cancelled() => return Ok(()),
    }
    let mut consumers = Vec::new();
    for source in Source::ALL {
        let def = defs.consumer(source.stream(), source.durable());
        let ensure = || shared::streams::ensure_consumer(&js, def, -1, args.manage_streams);
        let consumer = tokio::select! {
            r = ensure
                .retry(shared::backoff::infra().with_max_times(60))
                .when(|e: &SetupError| !e.is_permanent())
                .notify(|e, after| warn!(error = %e, retry_in_ms = after.as_millis() as u64, "consumer setup failed")) => r?,
            _ = shutdown.cancelled() => return Ok(()),
        };
        consumers.push((source, consumer, def.ack_wait));
    }
    streams_ok.store(true, Ordering::Relaxed);

    // The tables first; until PostgreSQL answers, nothing is pulled.
    let mut pauses = shared::backoff::pauses();
    loop {
        match store.migrate().await {
            Ok(()) => {
                health.succeeded();
                break;
            }
            Err(WriteError::Migrate(e)) if !migrate_transient(&e) => {
                return Err(LedgerError::Migrate(e));
            }
            Err(e) => health.failed(&e),
        }
        let pause = pauses.next().unwrap_or(shared::backoff::MAX_DELAY);
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
    }

    let mut tasks = tokio::task::JoinSet::new();
    let mut watched = Vec::new();
    for (source, consumer, ack_wait) in consumers {
        watched.push((source, consumer.clone()));
        // Several pullers on one durable consumer get different messages;
        // each acks its own batch after its commit, and a redelivery across
        // them is stored once.
        for _ in 0..options.writers.max(1) {
            let l = Loop {
                source,
                consumer: consumer.clone(),
                store: store.clone(),
                health: health.clone(),
                metrics: metrics.clone(),
                options: BatchOptions {
                    batch: options.batch,
                    batch_wait: options.batch_wait,
                    retention_days: options.retention_days,
                    ack_wait,
                },
            };
            tasks.spawn(l.run(shutdown.clone()));
        }
    }
    tasks.spawn(watch_lag(
        watched,
        health.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(retention(
        store.clone(),
        options.retention_days,
        options.retention_every,
        metrics.clone(),
        shutdown.clone(),
    ));
    consuming.store(true, Ordering::Relaxed);
    info!("ledger consuming");
    while tasks.join_next().await.is_some() {}
    if let Err(e) = client.drain().await {
        warn!(error = %e, "nats drain failed");
    }
    let _ = ops_task.await;
    let _ = api_task.await;
    store.pool().close().await;
    info!(stage = STAGE, "stopped");
    Ok(())
}

/// Every two seconds: each consumer's lag, and the outage gauge.
async fn watch_lag(
    consumers: Vec<(Source, jetstream::consumer::PullConsumer)>,
    health: Arc<Health>,
    metrics: Arc<metrics::Metrics>,
    shutdown: CancellationToken,
) {
    let mut consumers = consumers;
    loop {
        for (source, consumer) in &mut consumers {
            if let Ok(info) = consumer.info().await {
                let lag = info.num_pending + info.num_ack_pending as u64;
                metrics
                    .lag
                    .get_or_create(&metrics::StreamLabel {
                        stream: source.label(),
                    })
                    .set(i64::try_from(lag).unwrap_or(i64::MAX));
            }
        }
        health.tick();
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// At start and every `every`: today's and tomorrow's partitions, and the
/// days past the retention dropped.
async fn retention(
    store: Arc<Store>,
    days: u32,
    every: Duration,
    metrics: Arc<metrics::Metrics>,
    shutdown: CancellationToken,
) {
    loop {
        let now = time::OffsetDateTime::now_utc();
        for day in [
            store::utc_day(now),
            store::utc_day(now + time::Duration::days(1)),
        ] {
            if let Err(e) = store.ensure_day(day).await {
                warn!(error = %e, "partitions not made; the next batch tries again");
            }
        }
        match store.drop_expired(now, days, Duration::from_secs(5)).await {
            Ok(0) => {}
            Ok(n) => {
                metrics.partitions_dropped.inc_by(u64::from(n));
                info!(partitions = n, days, "retention dropped old days");
            }
            Err(e) => warn!(error = %e, "retention did not run; it tries again later"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
