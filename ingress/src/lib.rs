//! orderhub's ingress: the HTTP edge that receives order webhooks from
//! delivery providers.
//!
//! Contract (DESIGN §3.1, §5):
//! - Consumes: `POST /api/webhooks/{provider}[/{account}]` and the routes a
//!   provider dictates (Talabat's POS plugin routes, Just Eat's appended
//!   event names), see `openapi.json`.
//! - Verifies each request with its provider's scheme ([`verify`]) on the
//!   exact raw body, against any of the account's secrets, before anything
//!   parses it. Bad or missing signatures, unknown accounts and stale
//!   timestamps all get one generic 401.
//! - Publishes the untouched body to `webhooks.raw.<provider>.<account>` on
//!   the `WEBHOOKS` stream with the hub headers (webhook id, provider,
//!   account, tenant, received-at, traceparent, path parameters) and
//!   `Nats-Msg-Id` from the provider's event identity, and answers 202 only
//!   after JetStream acked. A duplicate within the stream's window answers
//!   200 with the first webhook id. No ack (NATS down, timeout, stream
//!   full): 503, nothing accepted, and `/ready` false until a publish works.
//!   A provider that dictates its answer gets it: Talabat's
//!   `remoteResponse`, Keeta's `200 {"code":0,"message":"Success"}` for a
//!   new and a duplicate event alike.
//! - Grab's token endpoint, `POST /api/webhooks/grab/{account}/oauth/token`
//!   ([`token`]): client credentials in, a short-lived JWT out that every
//!   replica verifies on Grab's webhooks (signed with the account's secret,
//!   no shared state); rate-limited per account, the webhook routes' 401 on
//!   any authentication failure.
//! - Limits: body size before reading (413, after reading and discarding a
//!   bounded amount of the body so a client that writes it all before
//!   reading sees the answer), slow headers and bodies (cut / 408), a
//!   per-client-address budget for requests refused before verification,
//!   per-provider and per-account rate limits drawn only by verified
//!   requests (429 + `Retry-After`), per-account IP allow-lists honouring
//!   `X-Forwarded-For` only from trusted proxies (403).
//! - The backend's status API, `POST
//!   /api/tenants/{tenant}/orders/{provider}/{provider_order_id}/status`
//!   ([`status`]): verified with the tenant's signing secrets, checked
//!   against the order's context in the `ORDER_CONTEXT` bucket, stored on
//!   the `STATUS` stream (`status.<provider>.<account>`) and answered 202
//!   only after JetStream acked.
//! - Config ([`shared::live`]): each request is verified with the config
//!   serving when it arrives: accounts (added, removed, secrets, allowed
//!   addresses, rate limits, which is the default), tenants' signing
//!   secrets for the status API and Grab's token clients reload without a
//!   restart (an account's rate limiter starts full after a reload). The
//!   `[ingress]` section (body limit, proxies, provider quotas, timeouts)
//!   needs a restart.
//! - The webhook port serves only the webhook and status routes; `/health`, `/ready`
//!   and `/metrics` are on the ops address alone.
//! - Stateless: no database; any number of replicas behind a load balancer.

pub mod clients;
pub mod net;
pub mod pipeline;
pub mod routes;
pub mod server;
pub mod status;
pub mod token;

/// Provider signature schemes; they live in `shared` because the forwarder
/// signs with Standard Webhooks too.
pub use shared::verify;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use shared::config::{CommonArgs, HubConfig};
use shared::live::LiveConfig;
use shared::streams::Definitions;
use tokio_util::sync::CancellationToken;
use tracing::info;
use warp::Filter;

/// The ingress's own flags (on top of [`CommonArgs`]).
#[derive(Debug, Clone, clap::Args)]
pub struct IngressArgs {
    /// Address the webhook server listens on
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:3002")]
    pub listen_addr: SocketAddr,

    /// A client must send its request headers within this time
    #[arg(long, env = "HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,

    /// A client must send its whole body within this time (408 after)
    #[arg(long, env = "BODY_READ_TIMEOUT_MS", default_value_t = 15_000)]
    pub body_read_timeout_ms: u64,

    /// On shutdown, how long open requests may take to finish
    #[arg(long, env = "SHUTDOWN_DRAIN_MS", default_value_t = 10_000)]
    pub shutdown_drain_ms: u64,
}

/// Why the ingress could not run.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("{0}")]
    Connect(String),
    #[error(transparent)]
    Setup(#[from] shared::streams::SetupError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running ingress.
pub struct Running {
    pub addr: SocketAddr,
    pub ops_addr: SocketAddr,
    pub task: tokio::task::JoinHandle<()>,
}

/// [`start_live`] on a config that never reloads.
pub async fn start(
    common: &CommonArgs,
    args: &IngressArgs,
    hub: HubConfig,
    shutdown: CancellationToken,
) -> Result<Running, IngressError> {
    start_live(common, args, LiveConfig::new(hub, "(in process)"), shutdown).await
}

/// Connects, makes sure `WEBHOOKS`, `STATUS` and the `ORDER_CONTEXT`
/// bucket exist, binds both servers and serves
/// until `shutdown`. Returns once listening. Each request is verified
/// with the config serving when it arrives ([`shared::live`]).
pub async fn start_live(
    common: &CommonArgs,
    args: &IngressArgs,
    live: LiveConfig,
    shutdown: CancellationToken,
) -> Result<Running, IngressError> {
    let hub = live.load();
    info!(config = %hub.summary(), "starting");
    let client = shared::app::connect(common, "ingress")
        .await
        .map_err(IngressError::Connect)?;
    let js = jetstream::new(client.clone());
    let defs = Definitions::load(&hub.streams);
    shared::app::ensure_streams(
        &js,
        &defs,
        &[
            shared::subjects::WEBHOOKS_STREAM,
            shared::subjects::STATUS_STREAM,
        ],
        common.manage_streams,
    )
    .await?;
    let contexts = shared::app::ensure_bucket_retrying(
        &js,
        defs.bucket(shared::answer::ORDER_CONTEXT_BUCKET),
        common.manage_streams,
    )
    .await?;
    let webhooks = js
        .get_stream(shared::subjects::WEBHOOKS_STREAM)
        .await
        .map_err(|e| IngressError::Connect(format!("stream WEBHOOKS: {e}")))?;

    let readiness = shared::ops::Readiness::new();
    readiness.watch_client(client.clone());
    readiness
        .condition("streams")
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let mut registry = shared::telemetry::registry("ingress");
    shared::app::expose_config(&live, &mut registry, &readiness);
    let ingress = Arc::new(pipeline::Ingress::live(
        live,
        client.clone(),
        webhooks,
        &mut registry,
    ));
    let status_api = Arc::new(status::StatusApi::new(
        ingress.clone(),
        contexts,
        &mut registry,
    ));
    let token_endpoint = Arc::new(token::TokenEndpoint::new(ingress.clone(), &mut registry));
    readiness.add_condition("publishing", ingress.publishing.clone());
    let registry = Arc::new(registry);

    let (ops_addr, _ops_task) =
        shared::ops::serve(common.ops_addr, registry, readiness, shutdown.clone())
            .await
            .map_err(|source| IngressError::Listen {
                addr: common.ops_addr,
                source,
            })?;
    // The webhook port is the internet-facing one: no ops routes on it.
    let body_timeout = Duration::from_millis(args.body_read_timeout_ms);
    let routes = routes::webhooks(ingress.clone(), body_timeout)
        .or(routes::grab_token(token_endpoint, body_timeout))
        .unify()
        .or(routes::status(status_api, body_timeout))
        .unify()
        .recover(routes::recover);
    let (listener, addr) =
        server::bind(args.listen_addr)
            .await
            .map_err(|source| IngressError::Listen {
                addr: args.listen_addr,
                source,
            })?;
    info!(%addr, %ops_addr, "ingress listening");
    tokio::spawn(sweep_clients(ingress, shutdown.clone()));
    let header_timeout = Duration::from_millis(args.header_read_timeout_ms);
    let drain = Duration::from_millis(args.shutdown_drain_ms);
    let task = tokio::spawn(async move {
        server::serve(
            listener,
            warp::service(routes),
            header_timeout,
            drain,
            shutdown,
        )
        .await;
        if let Err(e) = client.drain().await {
            tracing::warn!(error = %e, "nats drain failed");
        }
        info!("ingress stopped");
    });
    Ok(Running {
        addr,
        ops_addr,
        task,
    })
}

/// How often the client budgets forget addresses that recovered.
const CLIENT_SWEEP_INTERVAL: Duration = Duration::from_secs(10);

async fn sweep_clients(ingress: Arc<pipeline::Ingress>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(CLIENT_SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => ingress.sweep_clients(),
            _ = shutdown.cancelled() => return,
        }
    }
}
