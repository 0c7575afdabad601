//! What every binary does at start and stop: connect to NATS, set up the
//! streams it uses, turn SIGTERM/SIGINT into a cancellation token.

use async_nats::jetstream;
use backon::Retryable;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{CommonArgs, HubConfig};
use crate::live::{ConfigSource, LiveConfig, SourceArgs};
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
        .custom_inbox_prefix(crate::subjects::inbox_prefix(name))
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
    if let Some(seed) = &args.nats_nkey {
        options = crate::config::nkey_option(options, seed)?;
    }
    args.tls
        .apply(options)
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

/// Runs a consuming stage until `shutdown` on a config that never
/// reloads (tests, tools): [`run_stage_live`] with `hub`.
#[cfg(feature = "ops-server")]
pub async fn run_stage<H: crate::worker::Handler>(
    args: &CommonArgs,
    hub: &crate::config::HubConfig,
    spec: &StageSpec,
    make_handler: impl FnOnce(&mut prometheus_client::registry::Registry, &jetstream::Context) -> H,
    tune: impl FnOnce(&mut crate::worker::WorkerOptions),
    shutdown: CancellationToken,
) -> Result<(), StageError> {
    let live = LiveConfig::new(hub.clone(), "(in process)");
    run_stage_live(args, &live, spec, make_handler, tune, shutdown).await
}

/// The live config's metrics (`<stage>_config_reload_failures_total`,
/// `_config_reload_ok`, ...) in `registry` and its reload state under
/// `config` in `/ready`.
pub fn expose_config(
    live: &LiveConfig,
    registry: &mut prometheus_client::registry::Registry,
    readiness: &crate::ops::Readiness,
) {
    live.register(registry);
    let live = live.clone();
    readiness.add_detail("config", move || live.detail());
}

/// Runs a consuming stage until `shutdown`: connect, set up its streams,
/// serve `/health` `/ready` `/metrics`, run the worker (and its mover).
/// `make_handler` builds the handler with the stage's metric registry (to
/// add its own metrics) and a JetStream context (to publish downstream);
/// `tune` adjusts the worker options (concurrency, timings) before start.
/// Streams, consumers and the retry schedule come from the config at start
/// (a reload never changes them); the handler holds `live` itself.
#[cfg(feature = "ops-server")]
pub async fn run_stage_live<H: crate::worker::Handler>(
    args: &CommonArgs,
    live: &LiveConfig,
    spec: &StageSpec,
    make_handler: impl FnOnce(&mut prometheus_client::registry::Registry, &jetstream::Context) -> H,
    tune: impl FnOnce(&mut crate::worker::WorkerOptions),
    shutdown: CancellationToken,
) -> Result<(), StageError> {
    let hub = live.load();
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
    expose_config(live, &mut registry, &readiness);
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

/// What a stage binary's `main` does first: logging on, then the hub config
/// from its source, kept live: the file reloads on SIGHUP, the PostgreSQL
/// tables on NOTIFY and every `CONFIG_POLL_INTERVAL_MS`. A config that
/// cannot be loaded at start (missing, invalid, the database unreachable or
/// without the tables) is an error on stderr and exit code 2.
pub async fn init_live(
    args: &CommonArgs,
    source: &SourceArgs,
) -> Result<LiveConfig, std::process::ExitCode> {
    crate::telemetry::init_tracing(args.log_format);
    let fail = |message: String| {
        eprintln!("error: {message}");
        std::process::ExitCode::from(2)
    };
    match source.config_source {
        ConfigSource::File => {
            let path = args.hub_config.clone();
            let hub = HubConfig::load(path.as_deref()).map_err(|e| fail(e.to_string()))?;
            let live = LiveConfig::new(hub, &crate::live::file_origin(path.as_deref()));
            crate::live::reload_file_on_sighup(live.clone(), path, CancellationToken::new())
                .map_err(|e| fail(format!("SIGHUP handler: {e}")))?;
            Ok(live)
        }
        #[cfg(feature = "postgres")]
        ConfigSource::Postgres => init_postgres(args, source).await.map_err(fail),
        #[cfg(not(feature = "postgres"))]
        ConfigSource::Postgres => Err(fail(
            "CONFIG_SOURCE=postgres: this binary is built without the postgres feature".into(),
        )),
    }
}

#[cfg(feature = "postgres")]
async fn init_postgres(args: &CommonArgs, source: &SourceArgs) -> Result<LiveConfig, String> {
    use crate::config_db;
    let url = source
        .database_url
        .as_ref()
        .ok_or("CONFIG_SOURCE=postgres needs DATABASE_URL")?;
    if source.config_poll_interval_ms == 0 {
        return Err("CONFIG_POLL_INTERVAL_MS: must be above 0".into());
    }
    if args.hub_config.is_some() {
        warn!("HUB_CONFIG is ignored: CONFIG_SOURCE=postgres");
    }
    let fail = |e: config_db::DbError| format!("CONFIG_SOURCE=postgres: {e}");
    let options = config_db::connect_options(url).map_err(fail)?;
    let pool = config_db::connect(options).await.map_err(fail)?;
    let env = config_db::process_env();
    let (hub, version) = config_db::load(&pool, &*env).await.map_err(fail)?;
    let live = LiveConfig::new(hub, config_db::ORIGIN);
    info!(version, "hub config read from postgres");
    tokio::spawn(config_db::watch(
        live.clone(),
        pool,
        version,
        std::time::Duration::from_millis(source.config_poll_interval_ms),
        env,
        CancellationToken::new(),
    ));
    // SIGHUP's default would end the process; the tables reload themselves.
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| format!("SIGHUP handler: {e}"))?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            info!("SIGHUP: the config comes from postgres and reloads on its own");
        }
    });
    Ok(live)
}
