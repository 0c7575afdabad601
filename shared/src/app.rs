//! What every binary does at start and stop: connect to NATS, set up the
//! streams it uses, turn SIGTERM/SIGINT into a cancellation token.

use async_nats::jetstream;
use backon::Retryable;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::CommonArgs;
use crate::streams::{self, Applied, Definitions, SetupError};

/// Connects with the stage's name (visible in the server's connection
/// list); reconnects forever after the first connection. The first
/// connection is retried too, so a binary started before NATS waits for it.
/// Both wait [`crate::backoff::reconnect_delay`] between attempts.
pub async fn connect(args: &CommonArgs, name: &str) -> Result<async_nats::Client, String> {
    let urls: Vec<async_nats::ServerAddr> = args
        .nats_url
        .split(',')
        .map(|u| u.trim().parse().map_err(|e| format!("NATS_URL {u:?}: {e}")))
        .collect::<Result<_, _>>()?;
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(crate::backoff::reconnect_delay)
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Disconnected => warn!("nats disconnected"),
                async_nats::Event::Connected => info!("nats connected"),
                other => info!(event = %other, "nats event"),
            }
        });
    if let Some(creds) = &args.nats_creds {
        options = options
            .credentials_file(creds)
            .await
            .map_err(|e| format!("NATS_CREDS {}: {e}", creds.display()))?;
    }
    options
        .connect(urls.as_slice())
        .await
        .map_err(|e| format!("cannot connect to NATS: {e}"))
}

/// Applies the named streams and the failure bucket, retrying on the
/// infrastructure backoff while NATS is unreachable (for about five minutes:
/// the ingress calls it before it listens for shutdown); fails at once on a
/// definition that conflicts with the server.
pub async fn ensure_streams(
    js: &jetstream::Context,
    defs: &Definitions,
    names: &[&str],
    manage: bool,
) -> Result<(), SetupError> {
    let attempt = || async {
        for name in names {
            let applied = streams::ensure_stream(js, defs.stream(name), manage).await?;
            if applied != Applied::Unchanged && applied != Applied::Checked {
                info!(stream = name, ?applied, "stream set up");
            }
        }
        streams::ensure_bucket(js, defs.bucket(streams::FAILURES_BUCKET), manage).await?;
        Ok(())
    };
    attempt
        .retry(crate::backoff::infra().with_max_times(60))
        .when(|e: &SetupError| !e.is_permanent())
        .notify(|e, after| warn!(error = %e, retry_in_ms = after.as_millis() as u64, "stream setup failed"))
        .await
}

/// Applies one bucket, retrying like [`ensure_streams`].
pub async fn ensure_bucket_retrying(
    js: &jetstream::Context,
    def: &streams::BucketDef,
    manage: bool,
) -> Result<async_nats::jetstream::kv::Store, SetupError> {
    (|| streams::ensure_bucket(js, def, manage))
        .retry(crate::backoff::infra().with_max_times(60))
        .when(|e: &SetupError| !e.is_permanent())
        .notify(|e, after| warn!(error = %e, retry_in_ms = after.as_millis() as u64, "bucket setup failed"))
        .await
}

/// Cancelled on the first SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
        }
        t.cancel();
    });
    token
}

/// What a consuming stage is: its name, its consumer, the streams it needs.
#[derive(Debug, Clone)]
pub struct StageSpec {
    /// `transformer`, `forwarder`: metric prefix, DLQ subject token, NATS
    /// connection name.
    pub stage: &'static str,
    /// The stream and durable consumer it reads.
    pub stream: &'static str,
    pub durable: &'static str,
    /// Every stream it reads or writes (set up at start).
    pub streams: &'static [&'static str],
    /// Key-value buckets it uses besides `FAILURES` (set up at start).
    pub buckets: &'static [&'static str],
}

/// Why a stage stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("{0}")]
    Connect(String),
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error("ops server on {addr}: {source}")]
    Ops {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Worker(#[from] crate::worker::WorkerError),
}

/// Runs a consuming stage until `shutdown`: connect, set up its streams,
/// serve `/health` `/ready` `/metrics`, run the worker (and its mover).
/// `make_handler` builds the handler with the stage's metric registry (to
/// add its own metrics) and a JetStream context (to publish downstream);
/// `tune` adjusts the worker options (concurrency, timings) before start.
#[cfg(feature = "ops-server")]
pub async fn run_stage<H: crate::worker::Handler>(
    args: &CommonArgs,
    hub: &crate::config::HubConfig,
    spec: &StageSpec,
    make_handler: impl FnOnce(&mut prometheus_client::registry::Registry, &jetstream::Context) -> H,
    tune: impl FnOnce(&mut crate::worker::WorkerOptions),
    shutdown: CancellationToken,
) -> Result<(), StageError> {
    info!(stage = spec.stage, config = %hub.summary(), "starting");
    let client = connect(args, spec.stage)
        .await
        .map_err(StageError::Connect)?;
    let js = jetstream::new(client.clone());
    let readiness = crate::ops::Readiness::new();
    readiness.watch_client(client.clone());
    let streams_ok = readiness.condition("streams");
    let consuming = readiness.condition("consuming");

    let mut registry = crate::telemetry::registry(spec.stage);
    let metrics = crate::worker::WorkerMetrics::register(&mut registry);
    let handler = make_handler(&mut registry, &js);
    let (ops_addr, ops_task) = crate::ops::serve(
        args.ops_addr,
        std::sync::Arc::new(registry),
        readiness.clone(),
        shutdown.clone(),
    )
    .await
    .map_err(|source| StageError::Ops {
        addr: args.ops_addr,
        source,
    })?;
    info!(%ops_addr, "ops server listening");

    let defs = Definitions::load(&hub.streams);
    tokio::select! {
        r = ensure_streams(&js, &defs, spec.streams, args.manage_streams) => r?,
        _ = shutdown.cancelled() => return Ok(()),
    }
    for bucket in spec.buckets {
        tokio::select! {
            r = ensure_bucket_retrying(&js, defs.bucket(bucket), args.manage_streams) => { r?; }
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
    streams_ok.store(true, std::sync::atomic::Ordering::Relaxed);

    let tenants: Vec<&str> = hub.tenants.iter().map(|t| t.id.as_str()).collect();
    let mut options = crate::worker::WorkerOptions::new(
        spec.stage,
        &defs,
        spec.stream,
        spec.durable,
        &tenants,
        hub.retry.clone(),
    );
    options.manage = args.manage_streams;
    tune(&mut options);
    crate::worker::Worker::new(client.clone(), options, handler, metrics, consuming)
        .run(shutdown)
        .await?;
    if let Err(e) = client.drain().await {
        warn!(error = %e, "nats drain failed");
    }
    let _ = ops_task.await;
    info!(stage = spec.stage, "stopped");
    Ok(())
}

/// What every binary's `main` does first: logging on, then the hub config,
/// or the config error on stderr and exit code 2 (bad configuration).
pub fn init(args: &CommonArgs) -> Result<crate::config::HubConfig, std::process::ExitCode> {
    crate::telemetry::init_tracing(args.log_format);
    crate::config::HubConfig::load(args.hub_config.as_deref()).map_err(|e| {
        eprintln!("error: {e}");
        std::process::ExitCode::from(2)
    })
}

/// A binary's exit code: 0, or 1 with the error on stderr.
pub fn exit_code<E: std::fmt::Display>(result: Result<(), E>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
