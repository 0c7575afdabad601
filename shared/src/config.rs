//! Configuration: the command-line flags every binary shares (each with an
//! environment fallback, DESIGN §3.2) and the hub's TOML file (tenants,
//! accounts, mappings, the retry schedule, stream settings).
//!
//! The TOML file never holds a secret: it names an environment variable or a
//! file (Kubernetes mounts secrets as either), and [`HubConfig::load`]
//! resolves them at start. A missing secret, an unknown provider, a bad
//! duration or an id that cannot be a subject token stops the binary with a
//! message naming the field.
//!
//! Without `HUB_CONFIG` the embedded default (`config/hub.example.toml`, with
//! example secrets read from the environment) is used, so a local stack runs
//! with no file at all.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use canonical::money::Currency;
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use crate::provider::Provider;
use crate::retry::RetrySchedule;
use crate::subjects::{self, InvalidToken};

/// The hub file compiled into every binary; used when `HUB_CONFIG` is unset.
pub const EMBEDDED_HUB_CONFIG: &str = include_str!("../../config/hub.example.toml");

/// Flags every binary takes. Binaries flatten this into their own clap parser.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// NATS server URL(s), comma separated (every node of a cluster)
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// NATS credentials file (.creds) for this stage's least-privilege user
    #[arg(long, env = "NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,

    /// File holding this stage's NATS NKey seed (`SU...`), the identity a
    /// server without an operator knows by its public key (nats/identities.toml)
    #[arg(long, env = "NATS_NKEY", conflicts_with = "nats_creds")]
    pub nats_nkey: Option<PathBuf>,

    /// Path of the hub's TOML file; the embedded example config when unset
    #[arg(long, env = "HUB_CONFIG")]
    pub hub_config: Option<PathBuf>,

    /// Address of the ops server (/health, /ready, /metrics)
    #[arg(long, env = "OPS_ADDR", default_value = "127.0.0.1:9090")]
    pub ops_addr: SocketAddr,

    /// Log format: json (production) or pretty (a terminal); RUST_LOG filters
    #[arg(long, env = "LOG_FORMAT", default_value = "json")]
    pub log_format: LogFormat,

    /// Create or update the streams and consumers this binary uses at start;
    /// turn off where an operator (e.g. NACK) owns them, and the binary then
    /// only checks that they exist
    #[arg(long, env = "MANAGE_STREAMS", default_value_t = true, action = clap::ArgAction::Set)]
    pub manage_streams: bool,

    #[command(flatten)]
    pub tls: NatsTlsArgs,
}

/// TLS to NATS, shared by every binary (the stages and `dlq-inspector`):
/// with a CA the server is verified against it and TLS is required; with a
/// certificate and key the client presents them (mutual TLS). Without
/// either, the connection follows the URL (`tls://` requires TLS against
/// the system roots).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NatsTlsArgs {
    /// CA certificate (PEM) to verify the NATS server with; implies TLS
    #[arg(long, env = "NATS_TLS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,

    /// Client certificate (PEM) for mutual TLS with NATS; needs --tls-key
    #[arg(long, env = "NATS_TLS_CERT", requires = "tls_key", global = true)]
    pub tls_cert: Option<PathBuf>,

    /// Client private key (PEM) for mutual TLS with NATS; needs --tls-cert
    #[arg(long, env = "NATS_TLS_KEY", requires = "tls_cert", global = true)]
    pub tls_key: Option<PathBuf>,
}

impl NatsTlsArgs {
    /// `options` with this TLS configuration. A missing or unreadable file
    /// fails the connection with the file's name.
    pub fn apply(&self, mut options: async_nats::ConnectOptions) -> async_nats::ConnectOptions {
        if let Some(ca) = &self.tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            options = options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        options
    }
}

/// `options` signing in with the NKey seed in the file at `path` (one line,
/// `SU...`). The error names the file, never its content.
pub fn nkey_option(
    options: async_nats::ConnectOptions,
    path: &std::path::Path,
) -> Result<async_nats::ConnectOptions, String> {
    let seed =
        std::fs::read_to_string(path).map_err(|e| format!("NATS_NKEY {}: {e}", path.display()))?;
    let seed = seed.trim();
    if !seed.starts_with("SU") {
        return Err(format!(
            "NATS_NKEY {}: not a user seed (SU...)",
            path.display()
        ));
    }
    Ok(options.nkey(seed.to_owned()))
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Something in the configuration is wrong; the message names the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read hub config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("hub config {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("hub config {origin}: {field}: {message}")]
    Invalid {
        origin: String,
        field: String,
        message: String,
    },
}

/// A tenant: a restaurant company with its own backend.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: String,
    pub backend_url: Url,
    /// Sent as `X-Auth`.
    pub backend_key: Option<SecretString>,
    /// Standard Webhooks secrets (`whsec_...`) the hub signs deliveries
    /// with, each checked at start: every one signs, so a backend verifying
    /// with any of them accepts (rotation). Empty: deliveries are unsigned.
    pub signing_secrets: Vec<SecretString>,
    /// When true, an item without a product mapping is a permanent error
    /// instead of `product_id: null`.
    pub require_product_mapping: bool,
    /// When true, an order for an unmapped store is a permanent error.
    pub require_branch_mapping: bool,
    /// How long one POST to the backend may take.
    pub request_timeout: Duration,
    /// When the backend counts as down.
    pub breaker: BreakerSettings,
}

/// A tenant's circuit breaker. It opens when the backend fails a share of
/// requests (`failure_rate` of at least `min_requests` over the last
/// `window`) or is unreachable `failures` times in a row (refused
/// connections, timeouts). Open, the backend gets no request for `cooldown`
/// (doubling after each failed half-open round, up to `max_cooldown`); then
/// `probes` requests decide: it closes when the share of them that failed
/// stays below `failure_rate`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSettings {
    pub failures: u32,
    /// Above 0, at most 1.
    pub failure_rate: f64,
    pub min_requests: u32,
    pub window: Duration,
    pub probes: u32,
    pub cooldown: Duration,
    pub max_cooldown: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failures: 5,
            // The old service's threshold.
            failure_rate: 0.5,
            min_requests: 20,
            window: Duration::from_secs(10),
            probes: 5,
            cooldown: Duration::from_secs(30),
            max_cooldown: Duration::from_secs(300),
        }
    }
}

/// Forwarder defaults (`[forwarder]`), which tenants may override.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwarderSettings {
    /// An order older than this (since the ingress accepted it) is
    /// dead-lettered as stale instead of delivered, breaker or not.
    pub max_order_age: Duration,
    pub request_timeout: Duration,
    pub breaker: BreakerSettings,
    /// Special-purpose networks (loopback, private, link-local, ...) a
    /// backend may be on anyway; empty: a backend resolving to any of them
    /// is refused (`shared::outbound`).
    pub allowed_private_destinations: Vec<IpNet>,
    /// Deliver one order's events in the order of its life
    /// (`shared::sequence`): an event waits for the earlier ones of its
    /// own order. Off: every event goes as soon as it arrives, and the
    /// transformer registers nothing (turned on again, an order whose
    /// earlier events went while it was off has its later ones wait
    /// `created_wait` for a `created` the hub does not know of, then go).
    pub per_order_ordering: bool,
    /// How long an order's later event (`updated`, `cancelled`) waits for
    /// the order's `created` when the hub has not seen it; then it goes
    /// alone (logged, `forwarder_sequence_went_alone`). `0s`: never waits
    /// for it.
    pub created_wait: Duration,
}

impl Default for ForwarderSettings {
    fn default() -> Self {
        ForwarderSettings {
            max_order_age: Duration::from_secs(24 * 3600),
            request_timeout: Duration::from_secs(10),
            breaker: BreakerSettings::default(),
            allowed_private_destinations: Vec::new(),
            per_order_ordering: true,
            created_wait: Duration::from_secs(30),
        }
    }
}

/// A provider account: one set of credentials a provider signs with.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: String,
    pub provider: Provider,
    pub tenant: String,
    /// Any of these may sign (rotation). Never logged.
    pub secrets: Vec<SecretString>,
    /// Networks allowed to call; empty means any.
    pub allowed_ips: Vec<IpNet>,
    /// For providers whose payloads carry no currency.
    pub currency: Option<Currency>,
    /// Provider store id -> internal branch id.
    pub branches: BTreeMap<String, String>,
    /// Provider item or modifier id (PLU) -> internal product id.
    pub products: BTreeMap<String, String>,
    /// This account answers `/api/webhooks/{provider}` without an account segment.
    pub default: bool,
    /// ISO 3166-1 alpha-2 country of the account's stores (e.g. `JO`):
    /// phone numbers without a country code are read as this country's.
    pub country: Option<String>,
    /// JWT algorithm pinned for token-signing providers (Talabat):
    /// `HS256` (default), `HS384` or `HS512`.
    pub jwt_algorithm: JwtAlgorithm,
    /// Accepted clock difference for providers that sign a timestamp.
    pub timestamp_tolerance: Option<Duration>,
    /// Longest JWT lifetime accepted (Talabat; default 1h).
    pub jwt_max_lifetime: Option<Duration>,
    /// How far in the future a JWT's `iat` may be (Talabat; default 5m).
    pub jwt_iat_skew: Option<Duration>,
    /// Just Eat: the event path segment this account's URL was registered
    /// with (`.../{account}/{event}`); a body that does not name its own
    /// event is accepted only there. `None`: only the bare account URL.
    pub event: Option<String>,
    /// Requests per second for this account (on top of the provider's limit).
    pub rate_limit: Option<RateLimit>,
    /// The provider's API as this account calls it (`[account.api]`): where
    /// the fetcher fetches notified orders from and the status worker sends
    /// the restaurant's answers, with which credentials. `None`: the account
    /// only receives webhooks.
    pub api: Option<ProviderApi>,
    /// `direct` accounts: where the status worker POSTs the backend's
    /// decisions (Standard Webhooks, signed with the account's first
    /// secret). Other providers: `None`.
    pub status_url: Option<Url>,
    /// The backend's 2xx for a `created` order is the restaurant's
    /// acceptance: the hub accepts it at the provider. Default on for a
    /// provider whose orders expire unanswered, when the account can call
    /// its API.
    pub auto_accept: bool,
    /// A `created` order dead-lettered before the backend took it is
    /// rejected at the provider (reason `other`), so the customer is not
    /// left waiting. Default on when the account can reject.
    pub auto_reject: bool,
    /// Grab: the client credentials Grab presents at the hub's token
    /// endpoint (`[account.token_endpoint]`); required on Grab accounts,
    /// refused elsewhere. The tokens the hub issues are signed with the
    /// account's `secrets` (the first signs, any verifies: rotation).
    pub token_endpoint: Option<TokenEndpoint>,
    /// Keeta: the webhook URL exactly as registered with Keeta. Keeta's
    /// `sig` is SHA-256 over a URL, the sorted parameters and the app
    /// secret [DOC]; that a push is signed over the receiver's registered
    /// URL is inferred [GUESS], so it is configured, not derived from the
    /// request. Required on Keeta accounts, refused elsewhere.
    pub webhook_url: Option<String>,
}

/// `[account.token_endpoint]`: a provider that obtains its bearer token
/// from the hub (GrabFood's "partner OAuth" [SDK]) presents these client
/// credentials; the hub answers with a short-lived token every ingress
/// replica verifies.
#[derive(Debug, Clone)]
pub struct TokenEndpoint {
    /// The client id issued to the provider (not a secret).
    pub client_id: String,
    /// Any of these is the client secret (rotation). Never logged.
    pub client_secrets: Vec<SecretString>,
    /// How long an issued token is valid (default 1h; 1m to 24h).
    pub token_lifetime: Duration,
    /// Token requests per second for this account (default 1/s, burst 10).
    pub rate_limit: RateLimit,
}

/// [`TokenEndpoint::token_lifetime`] unless configured: short enough that a
/// leaked token is soon useless, long enough that Grab asks rarely (its own
/// tokens last 7 days [SDK]; how early Grab renews is not published).
pub const DEFAULT_ISSUED_TOKEN_LIFETIME: Duration = Duration::from_secs(60 * 60);

/// The least length of a secret that signs issued tokens (HMAC-SHA256 key).
pub const MIN_TOKEN_SIGNING_SECRET_BYTES: usize = 32;

impl Account {
    /// Whether the status worker can call this account's provider at all.
    pub fn can_answer(&self) -> bool {
        match self.provider {
            Provider::Direct => self.status_url.is_some(),
            Provider::Careem => false,
            _ => self.api.is_some(),
        }
    }
}

/// `[account.api]`: an account's credentials for its provider's API.
///
/// Every secret is named by an environment variable (`*_env`) or a file
/// (`*_file`), like the webhook secrets; the client id counts as one (for
/// Talabat it is the middleware's user name). Nothing here is logged.
#[derive(Debug, Clone)]
pub struct ProviderApi {
    /// Every call to the provider's API goes here (`https://api.uber.com`,
    /// `https://pos-integration-service.wolt.com`); tests and sandboxes
    /// point it elsewhere. Paths are appended to it.
    pub base_url: Url,
    /// The OAuth token (or login) endpoint. `None` for a provider whose API
    /// takes a static key (Just Eat).
    pub token_url: Option<Url>,
    /// The OAuth client id (Talabat: the middleware user name). `None` for
    /// a static-key provider (Just Eat, Glovo) and DoorDash (its own JWT).
    pub client_id: Option<SecretString>,
    /// The OAuth client secret (Talabat: the middleware password; Just Eat:
    /// the API key; Glovo: the partner token; DoorDash: the JWT signing
    /// secret, base64url as the portal shows it).
    pub client_secret: SecretString,
    /// DoorDash: the developer id (the JWT's `iss`).
    pub developer_id: Option<String>,
    /// DoorDash: the key id (the JWT's `kid`).
    pub key_id: Option<String>,
    /// Keeta: the application id (`appId`) every call carries.
    pub app_id: Option<String>,
    /// Keeta: the store's (or brand's) OAuth access token every call
    /// carries (90 days [DOC]; renewed by replacing the secret).
    pub access_token: Option<SecretString>,
    /// Wolt: the refresh token of the venue's authorisation. Used only
    /// while the token store holds none for the account (first start), or
    /// when it changes here (the venue was authorised again).
    pub refresh_token: Option<SecretString>,
    /// OAuth scopes, space separated in the token request (Uber Eats
    /// default `eats.order`; Wolt none).
    pub scope: Option<String>,
    /// Hosts a payload's callback URL may name besides `base_url`'s.
    pub callback_hosts: Vec<String>,
    /// Which order API the fetcher reads (Uber Eats: `auto` follows the
    /// notification's `resource_href` path, legacy v2 or the Order
    /// Fulfillment v1; Wolt: `v2` by default, `v1` for venues still on it).
    pub order_api: OrderApi,
    /// A new order whose notification is older than this is not fetched
    /// any more but dead-lettered (`fetch_deadline_passed`): the provider
    /// has cancelled it (Uber Eats 11.5 min, Wolt 3 min to accept).
    pub fetch_deadline: Duration,
    /// Wolt: the venue id the tokens are bound to; a notification naming
    /// another venue is refused. Optional.
    pub venue_id: Option<String>,
    /// How long after the hub received a new order the provider still takes
    /// an accept or a reject (Uber Eats 11.5 min, Wolt 3 min, Deliveroo 10
    /// min, Just Eat 5 min [DOC]; Talabat: the order's `expiryDate`, else
    /// 15 min [GUESS]). The status worker never calls after it.
    pub answer_deadline: Duration,
    /// Just Eat: which API answers the order, JET Connect (`connect`, the
    /// default) or the partner API (`partner`); Glovo: `legacy` (default)
    /// or `integrations`.
    pub status_api: StatusApi,
}

/// Which of a provider's status APIs an account calls (Just Eat and Glovo
/// have two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusApi {
    /// The provider's only one.
    Standard,
    /// Just Eat JET Connect (`X-Flyt-Api-Key`): sent-to-pos success or failure.
    JustEatConnect,
    /// Just Eat partner API (`JE-API-KEY`): accept, reject, ready, ...
    JustEatPartner,
    /// Glovo's legacy `PUT /webhook/stores/{store}/orders/{id}/status`
    /// (`legacy`, the default) [CODE×5].
    GlovoLegacy,
    /// Glovo's newer `PUT /api/v0/integrations/orders/{id}/...` with the
    /// store in `Glovo-Store-Address-External-Id` (`integrations`) [CODE×4].
    GlovoIntegrations,
}

impl StatusApi {
    pub const fn as_str(self) -> &'static str {
        match self {
            StatusApi::Standard => "standard",
            StatusApi::JustEatConnect => "connect",
            StatusApi::JustEatPartner => "partner",
            StatusApi::GlovoLegacy => "legacy",
            StatusApi::GlovoIntegrations => "integrations",
        }
    }
}

/// Which of a provider's order APIs the fetcher reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderApi {
    /// Uber Eats: from the notification's `resource_href` path.
    Auto,
    V1,
    V2,
}

impl OrderApi {
    pub const fn as_str(self) -> &'static str {
        match self {
            OrderApi::Auto => "auto",
            OrderApi::V1 => "v1",
            OrderApi::V2 => "v2",
        }
    }
}

/// `[provider_api]`: how every stage that calls provider APIs (the fetcher
/// now, the status worker next) does it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderApiSettings {
    /// Special-purpose networks a provider API may be on anyway (loopback
    /// for tests and the fake provider of `scripts/dev-up`); empty: refused.
    pub allowed_private_destinations: Vec<IpNet>,
    /// How long one API call (including its body) may take.
    pub request_timeout: Duration,
    /// Largest answer read; a larger order is refused, never cut.
    pub max_body_bytes: usize,
    /// A token is renewed this long before it expires.
    pub token_refresh_ahead: Duration,
    /// At most one token mint per credential in this time, across the fleet
    /// (Uber Eats allows 100 per hour and revokes the oldest live token
    /// beyond 100).
    pub token_min_mint_interval: Duration,
    /// How long a replica may hold a credential's refresh lease; the token
    /// call's own timeout stays well inside it.
    pub token_lease: Duration,
}

impl Default for ProviderApiSettings {
    fn default() -> Self {
        ProviderApiSettings {
            allowed_private_destinations: Vec::new(),
            request_timeout: Duration::from_secs(10),
            max_body_bytes: 1024 * 1024,
            token_refresh_ahead: Duration::from_secs(120),
            token_min_mint_interval: Duration::from_secs(60),
            token_lease: Duration::from_secs(30),
        }
    }
}

/// `[fetcher]`: the fetcher stage's own redelivery, shorter than the
/// hub's: a new Wolt order must be accepted within 3 minutes.
#[derive(Debug, Clone)]
pub struct FetcherSettings {
    pub retry: RetrySchedule,
    /// A `404` is retried while the notification has had at most this many
    /// deliveries (every try counts, whatever it met), then dead-lettered
    /// as `order_not_found`: a new order may not be readable yet. Below
    /// `max_deliver`.
    pub not_found_retries: u32,
}

/// `[status_sync]`: the status worker's redelivery. Like the fetcher's, in
/// seconds: an answer has minutes to reach the provider, and each action's
/// deadline, not `max_deliver`, usually ends its retries.
#[derive(Debug, Clone)]
pub struct StatusSyncSettings {
    pub retry: RetrySchedule,
    /// How long an action without a provider deadline (ready, picked up,
    /// delivered, cancel, delay) keeps being retried after the backend's
    /// decision; then it is dead-lettered as `deadline_passed`.
    pub late_action_window: Duration,
    /// Send one order's answers in the order of its life
    /// (`shared::sequence`): `ready` waits for an `accept` still on its way.
    pub per_order_ordering: bool,
}

/// A token bucket: a sustained rate and a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

/// `[ingress.rate_limits]`: a provider's own limit, else `default`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimits {
    pub default: Option<RateLimit>,
    pub providers: BTreeMap<Provider, RateLimit>,
}

impl RateLimits {
    /// The limit that applies to `provider`, if any is configured.
    pub fn for_provider(&self, provider: Provider) -> Option<RateLimit> {
        self.providers.get(&provider).copied().or(self.default)
    }
}

/// The JWT algorithm an account pins (Talabat); tokens signed with any other
/// are refused, `none` above all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum JwtAlgorithm {
    #[default]
    Hs256,
    Hs384,
    Hs512,
}

impl JwtAlgorithm {
    /// The JOSE name, as in a token's `alg` and in configuration.
    pub const fn as_str(self) -> &'static str {
        match self {
            JwtAlgorithm::Hs256 => "HS256",
            JwtAlgorithm::Hs384 => "HS384",
            JwtAlgorithm::Hs512 => "HS512",
        }
    }
}

impl std::fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JwtAlgorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "HS256" => Ok(JwtAlgorithm::Hs256),
            "HS384" => Ok(JwtAlgorithm::Hs384),
            "HS512" => Ok(JwtAlgorithm::Hs512),
            other => Err(format!("{other:?} is not HS256, HS384 or HS512")),
        }
    }
}

/// Ingress settings that live in the hub file (flags hold the addresses).
#[derive(Debug, Clone, PartialEq)]
pub struct IngressSettings {
    /// Largest accepted body; larger gets 413 before it is read.
    pub max_body_bytes: u64,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// How long a webhook may wait for JetStream's ack before the answer is 503.
    pub publish_timeout: Duration,
    /// Per provider, and a default for the others.
    pub rate_limits: RateLimits,
    /// Per client address: requests refused before their signature
    /// verified (401, 413, 408). Over it, the address gets 429 unverified.
    pub unauthenticated_rate_limit: RateLimit,
    /// Share (0–100) of the traces the ingress starts that it marks sampled
    /// in `traceparent`. A request's own valid `traceparent` keeps its flag.
    pub trace_sample_percent: u8,
}

impl Default for IngressSettings {
    fn default() -> Self {
        IngressSettings {
            max_body_bytes: 1024 * 1024,
            trusted_proxies: Vec::new(),
            publish_timeout: Duration::from_secs(5),
            rate_limits: RateLimits::default(),
            unauthenticated_rate_limit: RateLimit {
                per_second: 20,
                burst: 200,
            },
            trace_sample_percent: 100,
        }
    }
}

/// Per-stream settings that differ between a laptop and a cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamSettings {
    /// Replicas for every stream (1 locally, 3 in a cluster) unless overridden.
    pub replicas: Option<usize>,
    /// `file` or `memory` for every stream unless overridden.
    pub storage: Option<String>,
    /// Per stream name (`WEBHOOKS`, `ORDERS`, `STATUS`, `OUTCOMES`, `DLQ`, `ADVISORIES`).
    pub overrides: BTreeMap<String, StreamOverride>,
    /// Per durable consumer name (`transformer`, `forwarder`, ...).
    pub consumers: BTreeMap<String, ConsumerOverride>,
}

/// Overrides for one consumer of `nats/streams.toml`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerOverride {
    /// How long a delivery may go without an ack or in-progress ack before
    /// JetStream redelivers it (what a dead worker costs).
    #[serde(default, with = "humantime_serde")]
    pub ack_wait: Option<Duration>,
    /// Unacked deliveries across all replicas.
    pub max_ack_pending: Option<i64>,
}

/// Overrides for one stream of `nats/streams.toml`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOverride {
    #[serde(default, with = "humantime_serde")]
    pub max_age: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub duplicate_window: Option<Duration>,
    pub max_bytes: Option<i64>,
    /// Largest message the stream stores, in bytes (-1: the server's
    /// `max_payload`); larger ones are dead-lettered as `message_too_large`.
    pub max_msg_size: Option<i32>,
    pub replicas: Option<usize>,
    pub storage: Option<String>,
    pub retention: Option<String>,
}

/// The hub's configuration, validated and with secrets resolved.
#[derive(Debug, Clone)]
pub struct HubConfig {
    pub tenants: Vec<Tenant>,
    pub accounts: Vec<Account>,
    pub retry: RetrySchedule,
    pub streams: StreamSettings,
    pub ingress: IngressSettings,
    pub forwarder: ForwarderSettings,
    pub provider_api: ProviderApiSettings,
    pub fetcher: FetcherSettings,
    pub status_sync: StatusSyncSettings,
}

impl HubConfig {
    /// Reads `path` (or the embedded default), parses, validates and resolves
    /// secrets from the process environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let env = |name: &str| std::env::var(name).ok();
        match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_owned(),
                    source,
                })?;
                Self::from_toml(&text, &p.display().to_string(), &env)
            }
            None => Self::from_toml(EMBEDDED_HUB_CONFIG, "(embedded default)", &env),
        }
    }

    /// Parses and validates `text`; `env` looks up environment variables
    /// (injected so tests do not mutate the process environment).
    pub fn from_toml(
        text: &str,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let raw: RawHub = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        raw.validate(origin, env)
    }

    pub fn tenant(&self, id: &str) -> Option<&Tenant> {
        self.tenants.iter().find(|t| t.id == id)
    }

    pub fn account(&self, provider: Provider, id: &str) -> Option<&Account> {
        self.accounts
            .iter()
            .find(|a| a.provider == provider && a.id == id)
    }

    /// The account that `/api/webhooks/{provider}` addresses.
    pub fn default_account(&self, provider: Provider) -> Option<&Account> {
        self.accounts
            .iter()
            .find(|a| a.provider == provider && a.default)
    }

    /// What is safe to log at start: ids, providers, URLs, counts; no secret.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "tenants": self.tenants.iter().map(|t| serde_json::json!({
                "id": t.id,
                "backend_url": redact_url(&t.backend_url),
                "backend_key": t.backend_key.as_ref().map(|_| "[redacted]"),
                "signing_secrets": t.signing_secrets.len(),
            })).collect::<Vec<_>>(),
            "accounts": self.accounts.iter().map(|a| serde_json::json!({
                "id": a.id,
                "provider": a.provider,
                "tenant": a.tenant,
                "secrets": a.secrets.len(),
                "branches": a.branches.len(),
                "products": a.products.len(),
            })).collect::<Vec<_>>(),
            "retry": {
                "schedule": self.retry.delays().iter()
                    .map(|d| humantime::format_duration(*d).to_string()).collect::<Vec<_>>(),
                "max_deliver": self.retry.max_deliver(),
            },
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHub {
    #[serde(default)]
    tenant: Vec<RawTenant>,
    #[serde(default)]
    account: Vec<RawAccount>,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    streams: RawStreams,
    #[serde(default)]
    ingress: RawIngress,
    #[serde(default)]
    forwarder: RawForwarder,
    #[serde(default)]
    provider_api: RawProviderApiSettings,
    #[serde(default)]
    fetcher: RawFetcher,
    #[serde(default)]
    status_sync: RawStatusSync,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProviderApiSettings {
    #[serde(default)]
    allowed_private_destinations: Vec<String>,
    #[serde(default, with = "humantime_serde")]
    request_timeout: Option<Duration>,
    max_body_bytes: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    token_refresh_ahead: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    token_min_mint_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    token_lease: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFetcher {
    #[serde(default = "default_fetcher_schedule")]
    schedule: Vec<String>,
    #[serde(default = "default_fetcher_max_deliver")]
    max_deliver: i64,
    #[serde(default)]
    jitter: f64,
    #[serde(default, with = "humantime_serde")]
    max_hint: Option<Duration>,
    #[serde(default = "default_not_found_retries")]
    not_found_retries: u32,
}

impl Default for RawFetcher {
    fn default() -> Self {
        RawFetcher {
            schedule: default_fetcher_schedule(),
            max_deliver: default_fetcher_max_deliver(),
            jitter: 0.0,
            max_hint: None,
            not_found_retries: default_not_found_retries(),
        }
    }
}

/// Seconds, not minutes: a new order has minutes to be accepted. The
/// deadline, not `max_deliver`, usually ends a new order's retries.
fn default_fetcher_schedule() -> Vec<String> {
    ["1s", "2s", "5s", "10s", "20s", "30s", "1m"]
        .map(String::from)
        .to_vec()
}

/// With the schedule above, about 15 minutes of retries: past Uber Eats'
/// 11.5-minute deadline, for the notifications that have none
/// (cancellations, updates).
fn default_fetcher_max_deliver() -> i64 {
    20
}

fn default_not_found_retries() -> u32 {
    5
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatusSync {
    #[serde(default = "default_fetcher_schedule")]
    schedule: Vec<String>,
    #[serde(default = "default_status_max_deliver")]
    max_deliver: i64,
    #[serde(default)]
    jitter: f64,
    #[serde(default, with = "humantime_serde")]
    max_hint: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    late_action_window: Option<Duration>,
    per_order_ordering: Option<bool>,
}

impl Default for RawStatusSync {
    fn default() -> Self {
        RawStatusSync {
            schedule: default_fetcher_schedule(),
            max_deliver: default_status_max_deliver(),
            jitter: 0.0,
            max_hint: None,
            late_action_window: None,
            per_order_ordering: None,
        }
    }
}

/// With the fetcher's schedule, about 70 minutes of tries: past the
/// default `late_action_window`, so the window ends them.
fn default_status_max_deliver() -> i64 {
    75
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForwarder {
    #[serde(default, with = "humantime_serde")]
    max_order_age: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    request_timeout: Option<Duration>,
    breaker_failures: Option<u32>,
    breaker_failure_rate: Option<f64>,
    breaker_min_requests: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    breaker_window: Option<Duration>,
    breaker_probes: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    breaker_cooldown: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    breaker_max_cooldown: Option<Duration>,
    #[serde(default)]
    allowed_private_destinations: Vec<String>,
    per_order_ordering: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    created_wait: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIngress {
    max_body_bytes: Option<u64>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    #[serde(default, with = "humantime_serde")]
    publish_timeout: Option<Duration>,
    #[serde(default)]
    rate_limits: BTreeMap<String, RateLimit>,
    unauthenticated_rate_limit: Option<RateLimit>,
    trace_sample_percent: Option<u8>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    id: String,
    backend_url: String,
    backend_key_env: Option<String>,
    backend_key_file: Option<PathBuf>,
    signing_secret_env: Option<String>,
    signing_secret_file: Option<PathBuf>,
    /// More signing secrets, for rotation: every one signs each delivery.
    #[serde(default)]
    signing_secret_envs: Vec<String>,
    #[serde(default)]
    signing_secret_files: Vec<PathBuf>,
    #[serde(default)]
    require_product_mapping: bool,
    #[serde(default)]
    require_branch_mapping: bool,
    #[serde(default, with = "humantime_serde")]
    request_timeout: Option<Duration>,
    breaker_failures: Option<u32>,
    breaker_failure_rate: Option<f64>,
    breaker_min_requests: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    breaker_window: Option<Duration>,
    breaker_probes: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    breaker_cooldown: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    breaker_max_cooldown: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    id: String,
    provider: String,
    tenant: String,
    #[serde(default)]
    secret_envs: Vec<String>,
    #[serde(default)]
    secret_files: Vec<PathBuf>,
    #[serde(default)]
    allowed_ips: Vec<String>,
    currency: Option<String>,
    #[serde(default)]
    branches: BTreeMap<String, String>,
    #[serde(default)]
    products: BTreeMap<String, String>,
    #[serde(default)]
    default: bool,
    country: Option<String>,
    jwt_algorithm: Option<String>,
    #[serde(default, with = "humantime_serde")]
    timestamp_tolerance: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    jwt_max_lifetime: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    jwt_iat_skew: Option<Duration>,
    event: Option<String>,
    rate_limit: Option<RateLimit>,
    api: Option<RawApi>,
    status_url: Option<String>,
    auto_accept: Option<bool>,
    auto_reject: Option<bool>,
    token_endpoint: Option<RawTokenEndpoint>,
    webhook_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTokenEndpoint {
    client_id: String,
    #[serde(default)]
    client_secret_envs: Vec<String>,
    #[serde(default)]
    client_secret_files: Vec<PathBuf>,
    #[serde(default, with = "humantime_serde")]
    token_lifetime: Option<Duration>,
    rate_limit: Option<RateLimit>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    base_url: String,
    token_url: Option<String>,
    client_id_env: Option<String>,
    client_id_file: Option<PathBuf>,
    client_secret_env: Option<String>,
    client_secret_file: Option<PathBuf>,
    refresh_token_env: Option<String>,
    refresh_token_file: Option<PathBuf>,
    scope: Option<String>,
    #[serde(default)]
    callback_hosts: Vec<String>,
    order_api: Option<String>,
    #[serde(default, with = "humantime_serde")]
    fetch_deadline: Option<Duration>,
    venue_id: Option<String>,
    #[serde(default, with = "humantime_serde")]
    answer_deadline: Option<Duration>,
    status_api: Option<String>,
    developer_id: Option<String>,
    key_id: Option<String>,
    app_id: Option<String>,
    access_token_env: Option<String>,
    access_token_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    #[serde(default = "default_schedule")]
    schedule: Vec<String>,
    #[serde(default = "default_max_deliver")]
    max_deliver: i64,
    /// Fraction of each delay added or removed at random (0 to 0.5).
    #[serde(default)]
    jitter: f64,
    /// Upper bound for a `Retry-After` hint from a backend.
    #[serde(default, with = "humantime_serde")]
    max_hint: Option<Duration>,
}

impl Default for RawRetry {
    fn default() -> Self {
        RawRetry {
            schedule: default_schedule(),
            max_deliver: default_max_deliver(),
            jitter: 0.0,
            max_hint: None,
        }
    }
}

fn default_schedule() -> Vec<String> {
    ["1m", "5m", "15m", "1h", "4h", "12h", "24h"]
        .map(String::from)
        .to_vec()
}

fn default_max_deliver() -> i64 {
    10
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStreams {
    replicas: Option<usize>,
    storage: Option<String>,
    #[serde(default)]
    overrides: BTreeMap<String, StreamOverride>,
    #[serde(default)]
    consumers: BTreeMap<String, ConsumerOverride>,
}

/// Collects the first error with its field path.
struct Check<'a> {
    origin: &'a str,
}

impl Check<'_> {
    fn err(&self, field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.to_owned(),
            field: field.into(),
            message: message.into(),
        }
    }

    fn token(&self, field: String, value: &str) -> Result<(), ConfigError> {
        subjects::check_token(value).map_err(|e: InvalidToken| self.err(field, e.to_string()))
    }
}

fn read_secret(
    check: &Check<'_>,
    field: String,
    env_name: Option<&str>,
    file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<SecretString>, ConfigError> {
    if let Some(name) = env_name {
        return match env(name) {
            Some(v) if !v.trim().is_empty() => Ok(Some(SecretString::from(v.trim().to_owned()))),
            _ => Err(check.err(
                field,
                format!("environment variable {name} is not set or empty"),
            )),
        };
    }
    if let Some(path) = file {
        return match std::fs::read_to_string(path) {
            Ok(v) if !v.trim().is_empty() => Ok(Some(SecretString::from(v.trim().to_owned()))),
            Ok(_) => Err(check.err(field, format!("secret file {} is empty", path.display()))),
            Err(e) => Err(check.err(
                field,
                format!("cannot read secret file {}: {e}", path.display()),
            )),
        };
    }
    Ok(None)
}

fn check_storage(
    check: &Check<'_>,
    field: &str,
    value: &Option<String>,
) -> Result<(), ConfigError> {
    match value.as_deref() {
        None | Some("file") | Some("memory") => Ok(()),
        Some(other) => Err(check.err(field, format!("{other:?} is not file or memory"))),
    }
}

impl RawHub {
    /// Turns what the file says into the types the stages use, section by
    /// section; the first bad value stops it, named by its field.
    fn validate(
        self,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<HubConfig, ConfigError> {
        let check = Check { origin };
        let forwarder = forwarder_section(&check, self.forwarder)?;
        let tenants = tenant_section(&check, self.tenant, &forwarder, env)?;
        let accounts = account_section(&check, self.account, &tenants, env)?;
        let retry = retry_section(&check, self.retry)?;
        let streams = stream_section(&check, self.streams)?;
        let ingress = ingress_section(&check, self.ingress)?;
        let provider_api = provider_api_section(&check, self.provider_api)?;
        let fetcher = fetcher_section(&check, self.fetcher)?;
        let status_sync = status_sync_section(&check, self.status_sync)?;
        plain_http_only_inside(&check, &accounts, &provider_api)?;
        Ok(HubConfig {
            tenants,
            accounts,
            retry,
            ingress,
            forwarder,
            streams,
            provider_api,
            fetcher,
            status_sync,
        })
    }
}

fn forwarder_section(
    check: &Check<'_>,
    raw: RawForwarder,
) -> Result<ForwarderSettings, ConfigError> {
    let defaults = ForwarderSettings::default();
    let mut forwarder = ForwarderSettings {
        max_order_age: raw.max_order_age.unwrap_or(defaults.max_order_age),
        request_timeout: raw.request_timeout.unwrap_or(defaults.request_timeout),
        breaker: breaker_of(
            check,
            "forwarder",
            defaults.breaker,
            RawBreaker {
                failures: raw.breaker_failures,
                failure_rate: raw.breaker_failure_rate,
                min_requests: raw.breaker_min_requests,
                window: raw.breaker_window,
                probes: raw.breaker_probes,
                cooldown: raw.breaker_cooldown,
                max_cooldown: raw.breaker_max_cooldown,
            },
        )?,
        allowed_private_destinations: Vec::with_capacity(raw.allowed_private_destinations.len()),
        per_order_ordering: raw
            .per_order_ordering
            .unwrap_or(defaults.per_order_ordering),
        // Unset, it stays below a short max_order_age.
        created_wait: raw.created_wait.unwrap_or_else(|| {
            defaults
                .created_wait
                .min(raw.max_order_age.unwrap_or(defaults.max_order_age) / 2)
        }),
    };
    for (k, cidr) in raw.allowed_private_destinations.iter().enumerate() {
        let net = ip_net(cidr)
            .map_err(|m| check.err(format!("forwarder.allowed_private_destinations[{k}]"), m))?;
        forwarder.allowed_private_destinations.push(net);
    }
    if forwarder.request_timeout.is_zero() {
        return Err(check.err("forwarder.request_timeout", "must be above 0"));
    }
    if forwarder.max_order_age < Duration::from_secs(1) {
        return Err(check.err("forwarder.max_order_age", "must be at least 1s"));
    }
    if forwarder.created_wait >= forwarder.max_order_age {
        return Err(check.err(
            "forwarder.created_wait",
            "must be below max_order_age: an event waiting for its order's created longer would go stale",
        ));
    }
    Ok(forwarder)
}

fn tenant_section(
    check: &Check<'_>,
    raw: Vec<RawTenant>,
    forwarder: &ForwarderSettings,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Tenant>, ConfigError> {
    let mut tenants: Vec<Tenant> = Vec::with_capacity(raw.len());
    for (i, t) in raw.into_iter().enumerate() {
        check.token(format!("tenant[{i}].id"), &t.id)?;
        if tenants.iter().any(|seen| seen.id == t.id) {
            return Err(check.err(
                format!("tenant[{i}].id"),
                format!("duplicate tenant id {:?}", t.id),
            ));
        }
        // From here on a field is named by the tenant's id, which is what an
        // operator searches the file for.
        let at = |f: &str| format!("tenant {}.{f}", t.id);
        let backend_url = http_url(&t.backend_url).map_err(|m| check.err(at("backend_url"), m))?;
        if t.backend_key_env.is_some() && t.backend_key_file.is_some() {
            return Err(check.err(
                at("backend_key_env"),
                "set backend_key_env or backend_key_file, not both",
            ));
        }
        let backend_key = read_secret(
            check,
            at(if t.backend_key_file.is_some() {
                "backend_key_file"
            } else {
                "backend_key_env"
            }),
            t.backend_key_env.as_deref(),
            t.backend_key_file.as_deref(),
            env,
        )?;
        if t.signing_secret_env.is_some() && t.signing_secret_file.is_some() {
            return Err(check.err(
                at("signing_secret_env"),
                "set signing_secret_env or signing_secret_file, not both",
            ));
        }
        let sources = (t.signing_secret_env.iter())
            .map(|n| (at("signing_secret_env"), SecretSource::Env(n)))
            .chain(
                t.signing_secret_file
                    .iter()
                    .map(|f| (at("signing_secret_file"), SecretSource::File(f))),
            )
            .chain(t.signing_secret_envs.iter().enumerate().map(|(k, n)| {
                (
                    at(&format!("signing_secret_envs[{k}]")),
                    SecretSource::Env(n),
                )
            }))
            .chain(t.signing_secret_files.iter().enumerate().map(|(k, f)| {
                (
                    at(&format!("signing_secret_files[{k}]")),
                    SecretSource::File(f),
                )
            }));
        let signing_secrets = secret_list(check, sources, env)?;
        for (field, secret) in &signing_secrets {
            if crate::secret::standard_webhooks_key(secret).is_none() {
                return Err(check.err(
                    field.clone(),
                    "the signing secret must be a Standard Webhooks secret (whsec_ and base64)",
                ));
            }
        }
        let request_timeout = t.request_timeout.unwrap_or(forwarder.request_timeout);
        if request_timeout.is_zero() {
            return Err(check.err(at("request_timeout"), "must be above 0"));
        }
        let breaker = breaker_of(
            check,
            &format!("tenant {}", t.id),
            forwarder.breaker,
            RawBreaker {
                failures: t.breaker_failures,
                failure_rate: t.breaker_failure_rate,
                min_requests: t.breaker_min_requests,
                window: t.breaker_window,
                probes: t.breaker_probes,
                cooldown: t.breaker_cooldown,
                max_cooldown: t.breaker_max_cooldown,
            },
        )?;
        tenants.push(Tenant {
            request_timeout,
            breaker,
            id: t.id,
            backend_url,
            backend_key,
            signing_secrets: signing_secrets.into_iter().map(|(_, s)| s).collect(),
            require_product_mapping: t.require_product_mapping,
            require_branch_mapping: t.require_branch_mapping,
        });
    }
    Ok(tenants)
}

fn account_section(
    check: &Check<'_>,
    raw: Vec<RawAccount>,
    tenants: &[Tenant],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Account>, ConfigError> {
    let mut accounts: Vec<Account> = Vec::with_capacity(raw.len());
    for (i, a) in raw.into_iter().enumerate() {
        check.token(format!("account[{i}].id"), &a.id)?;
        let at = |f: &str| format!("account {}.{f}", a.id);
        let provider = Provider::from_str(&a.provider)
            .map_err(|e| check.err(at("provider"), e.to_string()))?;
        if !tenants.iter().any(|t| t.id == a.tenant) {
            return Err(check.err(at("tenant"), format!("unknown tenant {:?}", a.tenant)));
        }
        if accounts
            .iter()
            .any(|seen| seen.provider == provider && seen.id == a.id)
        {
            return Err(check.err(
                format!("account[{i}].id"),
                format!("duplicate account {:?} for provider {provider}", a.id),
            ));
        }
        if a.default
            && let Some(other) = accounts
                .iter()
                .find(|s| s.provider == provider && s.default)
        {
            return Err(check.err(
                at("default"),
                format!(
                    "provider {provider} already has a default account ({})",
                    other.id
                ),
            ));
        }
        if a.secret_envs.is_empty() && a.secret_files.is_empty() {
            return Err(check.err(
                at("secret_envs"),
                "an account needs at least one secret (secret_envs or secret_files)",
            ));
        }
        let sources = (a.secret_envs.iter().enumerate())
            .map(|(k, n)| (at(&format!("secret_envs[{k}]")), SecretSource::Env(n)))
            .chain(
                a.secret_files
                    .iter()
                    .enumerate()
                    .map(|(k, f)| (at(&format!("secret_files[{k}]")), SecretSource::File(f))),
            );
        let secrets = secret_list(check, sources, env)?;
        // A `direct` channel signs with Standard Webhooks: a secret that is
        // not one would start fine and refuse every webhook.
        if provider == Provider::Direct {
            for (field, secret) in &secrets {
                if crate::secret::standard_webhooks_key(secret).is_none() {
                    return Err(check.err(
                        field.clone(),
                        "a direct account's secret must be a Standard Webhooks secret (whsec_ and base64)",
                    ));
                }
            }
        }
        // A Grab account's secrets sign the tokens the hub issues to Grab:
        // HMAC-SHA256 keys, so at least 32 bytes.
        if provider == Provider::Grab {
            for (field, secret) in &secrets {
                if secret.expose_secret().len() < MIN_TOKEN_SIGNING_SECRET_BYTES {
                    return Err(check.err(
                        field.clone(),
                        format!("a grab account's secret signs the tokens the hub issues: at least {MIN_TOKEN_SIGNING_SECRET_BYTES} bytes (e.g. openssl rand -base64 32)"),
                    ));
                }
            }
        }
        let token_endpoint = match (a.token_endpoint, provider) {
            (None, Provider::Grab) => {
                return Err(check.err(
                    at("token_endpoint"),
                    "a grab account needs [account.token_endpoint] (the client credentials Grab presents for its token)",
                ));
            }
            (None, _) => None,
            (Some(_), p) if p != Provider::Grab => {
                return Err(check.err(
                    at("token_endpoint"),
                    format!(
                        "{p} does not obtain its token from the hub; only grab accounts have one"
                    ),
                ));
            }
            (Some(raw), _) => Some(token_endpoint_of(check, &at, raw, env)?),
        };
        let webhook_url = match (a.webhook_url, provider) {
            (None, Provider::Keeta) => {
                return Err(check.err(
                    at("webhook_url"),
                    "a keeta account needs the webhook URL registered with Keeta (its sig covers it)",
                ));
            }
            (None, _) => None,
            (Some(_), p) if p != Provider::Keeta => {
                return Err(check.err(
                    at("webhook_url"),
                    format!("only keeta accounts sign over their URL ({p} has no webhook_url)"),
                ));
            }
            (Some(u), _) => {
                let parsed = Url::parse(u.trim()).map_err(|e| {
                    check.err(at("webhook_url"), format!("{u:?} is not a URL: {e}"))
                })?;
                if !matches!(parsed.scheme(), "https" | "http") || parsed.query().is_some() {
                    return Err(check.err(
                        at("webhook_url"),
                        "must be an http(s) URL without a query, as registered with Keeta",
                    ));
                }
                Some(u.trim().to_owned())
            }
        };
        let mut allowed_ips = Vec::with_capacity(a.allowed_ips.len());
        for (k, cidr) in a.allowed_ips.iter().enumerate() {
            allowed_ips
                .push(ip_net(cidr).map_err(|m| check.err(at(&format!("allowed_ips[{k}]")), m))?);
        }
        let currency = match &a.currency {
            None => None,
            Some(c) => Some(Currency::from_code(c).map_err(|e| {
                check.err(
                    at("currency"),
                    format!("{c:?} is not an ISO 4217 currency: {e}"),
                )
            })?),
        };
        if let Some(c) = &a.country
            && !(c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()))
        {
            return Err(check.err(
                at("country"),
                format!("{c:?} is not an ISO 3166-1 alpha-2 code (two capital letters)"),
            ));
        }
        let jwt_algorithm = match &a.jwt_algorithm {
            None => JwtAlgorithm::default(),
            Some(s) => s
                .parse()
                .map_err(|e: String| check.err(at("jwt_algorithm"), e))?,
        };
        if let Some(r) = &a.rate_limit {
            check_rate(check, at("rate_limit"), r)?;
        }
        if a.jwt_max_lifetime.is_some_and(|d| d.is_zero()) {
            return Err(check.err(at("jwt_max_lifetime"), "must be more than 0s"));
        }
        if let Some(e) = &a.event {
            if provider != Provider::Justeat {
                return Err(check.err(at("event"), "only Just Eat accounts have an event route"));
            }
            if e.is_empty()
                || e.len() > 64
                || !e
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(check.err(
                    at("event"),
                    format!("{e:?} is not an event path segment (a-z, 0-9 and -, up to 64)"),
                ));
            }
        }
        let api = match a.api {
            None => None,
            Some(_) if matches!(provider, Provider::Careem | Provider::Direct) => {
                return Err(check.err(
                    at("api"),
                    format!(
                        "{provider} has no provider API to call{}",
                        if provider == Provider::Direct {
                            " (a direct account's answers go to its status_url)"
                        } else {
                            ""
                        }
                    ),
                ));
            }
            Some(raw) => Some(api_of(check, &a.id, provider, raw, env)?),
        };
        let status_url = match a.status_url {
            None => None,
            Some(_) if provider != Provider::Direct => {
                return Err(check.err(
                    at("status_url"),
                    format!("only direct accounts have a status_url ({provider} answers go to its [account.api])"),
                ));
            }
            Some(u) => Some(http_url(&u).map_err(|m| check.err(at("status_url"), m))?),
        };
        let can_answer = match provider {
            Provider::Direct => status_url.is_some(),
            Provider::Careem => false,
            _ => api.is_some(),
        };
        let how = if provider == Provider::Direct {
            "a status_url"
        } else {
            "an [account.api]"
        };
        let auto_accept = match a.auto_accept {
            Some(true) if !can_answer => {
                return Err(check.err(
                    at("auto_accept"),
                    format!("the hub cannot answer {provider} for this account: it needs {how}"),
                ));
            }
            Some(v) => v,
            None => can_answer && provider.expires_unanswered(),
        };
        let auto_reject = match a.auto_reject {
            Some(true) if !can_answer => {
                return Err(check.err(
                    at("auto_reject"),
                    format!("the hub cannot answer {provider} for this account: it needs {how}"),
                ));
            }
            Some(true) if !provider_can_reject(provider) => {
                return Err(check.err(
                    at("auto_reject"),
                    format!("{provider} has no API to reject an order"),
                ));
            }
            Some(v) => v,
            None => can_answer && provider_can_reject(provider),
        };
        accounts.push(Account {
            api,
            status_url,
            auto_accept,
            auto_reject,
            id: a.id,
            provider,
            tenant: a.tenant,
            secrets: secrets.into_iter().map(|(_, s)| s).collect(),
            allowed_ips,
            currency,
            branches: a.branches,
            products: a.products,
            default: a.default,
            country: a.country,
            jwt_algorithm,
            timestamp_tolerance: a.timestamp_tolerance,
            jwt_max_lifetime: a.jwt_max_lifetime,
            jwt_iat_skew: a.jwt_iat_skew,
            event: a.event,
            rate_limit: a.rate_limit,
            token_endpoint,
            webhook_url,
        });
    }
    Ok(accounts)
}

/// Whether the provider has any API call that rejects a new order (Glovo
/// has none: the restaurant phones Glovo's support [DOC-3rd]).
fn provider_can_reject(provider: Provider) -> bool {
    !matches!(provider, Provider::Glovo | Provider::Careem)
}

fn token_endpoint_of(
    check: &Check<'_>,
    at: &dyn Fn(&str) -> String,
    raw: RawTokenEndpoint,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<TokenEndpoint, ConfigError> {
    let at = |f: &str| at(&format!("token_endpoint.{f}"));
    let client_id = raw.client_id.trim();
    if client_id.is_empty()
        || client_id.len() > 256
        || !client_id.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(check.err(at("client_id"), "must be 1 to 256 visible ASCII characters"));
    }
    if raw.client_secret_envs.is_empty() && raw.client_secret_files.is_empty() {
        return Err(check.err(
            at("client_secret_envs"),
            "needs at least one client secret (client_secret_envs or client_secret_files)",
        ));
    }
    let sources = (raw.client_secret_envs.iter().enumerate())
        .map(|(k, n)| {
            (
                at(&format!("client_secret_envs[{k}]")),
                SecretSource::Env(n),
            )
        })
        .chain(raw.client_secret_files.iter().enumerate().map(|(k, f)| {
            (
                at(&format!("client_secret_files[{k}]")),
                SecretSource::File(f),
            )
        }));
    let client_secrets = secret_list(check, sources, env)?;
    for (field, secret) in &client_secrets {
        if secret.expose_secret().len() < 16 {
            return Err(check.err(
                field.clone(),
                "a client secret the hub issues must be at least 16 bytes",
            ));
        }
    }
    let token_lifetime = raw.token_lifetime.unwrap_or(DEFAULT_ISSUED_TOKEN_LIFETIME);
    if !(Duration::from_secs(60)..=Duration::from_secs(24 * 60 * 60)).contains(&token_lifetime) {
        return Err(check.err(at("token_lifetime"), "must be between 1m and 24h"));
    }
    let rate_limit = raw.rate_limit.unwrap_or(RateLimit {
        per_second: 1,
        burst: 10,
    });
    check_rate(check, at("rate_limit"), &rate_limit)?;
    Ok(TokenEndpoint {
        client_id: client_id.to_owned(),
        client_secrets: client_secrets.into_iter().map(|(_, s)| s).collect(),
        token_lifetime,
        rate_limit,
    })
}

/// One secret that must be there, from `<name>_env` or `<name>_file`.
fn required_secret(
    check: &Check<'_>,
    at: &dyn Fn(&str) -> String,
    name: &str,
    env_name: Option<&str>,
    file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<SecretString>, ConfigError> {
    if env_name.is_some() && file.is_some() {
        return Err(check.err(
            at(&format!("{name}_env")),
            format!("set {name}_env or {name}_file, not both"),
        ));
    }
    let field = at(&format!(
        "{name}_{}",
        if file.is_some() { "file" } else { "env" }
    ));
    read_secret(check, field, env_name, file, env)
}

fn api_of(
    check: &Check<'_>,
    account: &str,
    provider: Provider,
    raw: RawApi,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ProviderApi, ConfigError> {
    let at = |f: &str| format!("account {account}.api.{f}");
    let base_url = http_url(&raw.base_url).map_err(|m| check.err(at("base_url"), m))?;
    // Just Eat's and Glovo's APIs take a static key (the client secret),
    // DoorDash a JWT the hub signs with it; every other provider's a token
    // from its token or login endpoint.
    let static_key = matches!(
        provider,
        Provider::Justeat | Provider::Glovo | Provider::Doordash | Provider::Keeta
    );
    let key_kind = match provider {
        Provider::Doordash => {
            "a JWT the hub signs itself (developer_id, key_id, client_secret_env)"
        }
        Provider::Keeta => {
            "calls signed with the app secret (app_id, client_secret_env, access_token_env)"
        }
        _ => "a static key (client_secret_env)",
    };
    let token_url = match (&raw.token_url, static_key) {
        (Some(_), true) => {
            return Err(check.err(
                at("token_url"),
                format!("{provider}'s API takes {key_kind}, not a token from a token endpoint"),
            ));
        }
        (Some(u), false) => Some(http_url(u).map_err(|m| check.err(at("token_url"), m))?),
        (None, true) => None,
        (None, false) => return Err(check.err(at("token_url"), "is required")),
    };
    let client_id = required_secret(
        check,
        &at,
        "client_id",
        raw.client_id_env.as_deref(),
        raw.client_id_file.as_deref(),
        env,
    )?;
    match (&client_id, static_key) {
        (None, false) => {
            return Err(check.err(at("client_id_env"), "is required (or client_id_file)"));
        }
        (Some(_), true) => {
            return Err(check.err(
                at("client_id_env"),
                format!("{provider}'s API takes {key_kind}, no client id"),
            ));
        }
        _ => {}
    }
    let client_secret = required_secret(
        check,
        &at,
        "client_secret",
        raw.client_secret_env.as_deref(),
        raw.client_secret_file.as_deref(),
        env,
    )?
    .ok_or_else(|| {
        check.err(
            at("client_secret_env"),
            "is required (or client_secret_file)",
        )
    })?;
    let refresh_token = required_secret(
        check,
        &at,
        "refresh_token",
        raw.refresh_token_env.as_deref(),
        raw.refresh_token_file.as_deref(),
        env,
    )?;
    if provider == Provider::Wolt && refresh_token.is_none() {
        return Err(check.err(
            at("refresh_token_env"),
            "a Wolt venue needs the refresh token of its authorisation (or refresh_token_file)",
        ));
    }
    if provider != Provider::Wolt && refresh_token.is_some() {
        return Err(check.err(
            at("refresh_token_env"),
            format!("{provider} tokens are minted from the client credentials; only Wolt takes a refresh token"),
        ));
    }
    let scope = match raw.scope {
        Some(s) if s.trim().is_empty() => {
            return Err(check.err(at("scope"), "is empty; leave it out for the default"));
        }
        // One spelling per set of scopes: accounts of one app that list
        // them in another order still share one token.
        Some(s) => {
            let mut scopes: Vec<&str> = s.split_whitespace().collect();
            scopes.sort_unstable();
            scopes.dedup();
            Some(scopes.join(" "))
        }
        None if provider == Provider::Ubereats => Some("eats.order".to_owned()),
        // The scope Grab's SDK asks for [SDK].
        None if provider == Provider::Grab => Some("food.partner_api".to_owned()),
        None => None,
    };
    let mut callback_hosts = Vec::with_capacity(raw.callback_hosts.len());
    for (k, h) in raw.callback_hosts.iter().enumerate() {
        let host = h.trim().to_ascii_lowercase();
        if host.is_empty() || url::Host::parse(&host).is_err() || host.contains(['/', ':', '@']) {
            return Err(check.err(
                at(&format!("callback_hosts[{k}]")),
                format!("{h:?} is not a host name (no scheme, port or path)"),
            ));
        }
        callback_hosts.push(host);
    }
    let order_api = match (provider, raw.order_api.as_deref()) {
        (Provider::Ubereats, None | Some("auto")) => OrderApi::Auto,
        (Provider::Wolt, None) => OrderApi::V2,
        (_, None) => OrderApi::V2,
        (_, Some("v1")) => OrderApi::V1,
        (_, Some("v2")) => OrderApi::V2,
        (_, Some(other)) => {
            return Err(check.err(
                at("order_api"),
                if provider == Provider::Ubereats {
                    format!("{other:?} is not auto, v1 or v2")
                } else {
                    format!("{other:?} is not v1 or v2")
                },
            ));
        }
    };
    let fetch_deadline = raw.fetch_deadline.unwrap_or(match provider {
        // Uber Eats auto-cancels an order not accepted in 11.5 minutes [DOC].
        Provider::Ubereats => Duration::from_secs(690),
        // Wolt: 3 minutes to accept [DOC].
        Provider::Wolt => Duration::from_secs(180),
        _ => Duration::from_secs(600),
    });
    if fetch_deadline < Duration::from_secs(1) {
        return Err(check.err(at("fetch_deadline"), "must be at least 1s"));
    }
    let venue_id = raw.venue_id.map(|v| v.trim().to_owned());
    if venue_id.as_deref().is_some_and(str::is_empty) {
        return Err(check.err(at("venue_id"), "is empty"));
    }
    let answer_deadline = raw.answer_deadline.unwrap_or(match provider {
        // Uber Eats auto-cancels an order not accepted in 11.5 minutes [DOC].
        Provider::Ubereats => Duration::from_secs(690),
        // Wolt: 3 minutes to accept [DOC].
        Provider::Wolt => Duration::from_secs(180),
        // Deliveroo auto-rejects ASAP orders after 10 minutes [DOC].
        Provider::Deliveroo => Duration::from_secs(600),
        // JET Connect: sent-to-pos within 5 minutes [CODE×2].
        Provider::Justeat => Duration::from_secs(300),
        // DoorDash treats an order not confirmed in 3-8 minutes as failed
        // [CODE×1 quoting DOC]: the low end.
        Provider::Doordash => Duration::from_secs(180),
        // Glovo, Grab and Keeta publish none [GUESS]: 5 minutes.
        Provider::Glovo | Provider::Grab | Provider::Keeta => Duration::from_secs(300),
        // Talabat orders carry `expiryDate`; without one, ~15 minutes
        // [CODE×1, GUESS].
        _ => Duration::from_secs(900),
    });
    if answer_deadline < Duration::from_secs(1) {
        return Err(check.err(at("answer_deadline"), "must be at least 1s"));
    }
    let status_api = match (provider, raw.status_api.as_deref()) {
        (Provider::Justeat, None | Some("connect")) => StatusApi::JustEatConnect,
        (Provider::Justeat, Some("partner")) => StatusApi::JustEatPartner,
        (Provider::Justeat, Some(other)) => {
            return Err(check.err(
                at("status_api"),
                format!("{other:?} is not connect or partner"),
            ));
        }
        (Provider::Glovo, None | Some("legacy")) => StatusApi::GlovoLegacy,
        (Provider::Glovo, Some("integrations")) => StatusApi::GlovoIntegrations,
        (Provider::Glovo, Some(other)) => {
            return Err(check.err(
                at("status_api"),
                format!("{other:?} is not legacy or integrations"),
            ));
        }
        (_, None) => StatusApi::Standard,
        (_, Some(_)) => {
            return Err(check.err(
                at("status_api"),
                format!("{provider} has one status API; only Just Eat (connect or partner) and Glovo (legacy or integrations) accounts choose"),
            ));
        }
    };
    let plain = |name: &str, v: Option<String>| -> Result<Option<String>, ConfigError> {
        match v.map(|v| v.trim().to_owned()) {
            Some(_) if provider != Provider::Doordash => Err(check.err(
                at(name),
                format!("only doordash accounts sign their own JWT ({provider} has no {name})"),
            )),
            Some(v) if v.is_empty() || !v.bytes().all(|b| b.is_ascii_graphic()) => {
                Err(check.err(at(name), "must be visible ASCII, not empty"))
            }
            Some(v) => Ok(Some(v)),
            None if provider == Provider::Doordash => {
                Err(check.err(at(name), "is required for a doordash account's JWT"))
            }
            None => Ok(None),
        }
    };
    let developer_id = plain("developer_id", raw.developer_id)?;
    let key_id = plain("key_id", raw.key_id)?;
    let app_id = match raw.app_id.map(|v| v.trim().to_owned()) {
        Some(_) if provider != Provider::Keeta => {
            return Err(check.err(
                at("app_id"),
                format!("only keeta accounts have an app_id ({provider})"),
            ));
        }
        Some(v) if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) => {
            return Err(check.err(at("app_id"), "must be Keeta's numeric application id"));
        }
        Some(v) => Some(v),
        None if provider == Provider::Keeta => {
            return Err(check.err(at("app_id"), "is required for a keeta account"));
        }
        None => None,
    };
    let access_token = required_secret(
        check,
        &at,
        "access_token",
        raw.access_token_env.as_deref(),
        raw.access_token_file.as_deref(),
        env,
    )?;
    match (&access_token, provider) {
        (None, Provider::Keeta) => {
            return Err(check.err(
                at("access_token_env"),
                "a keeta account needs the store's access token (or access_token_file)",
            ));
        }
        (Some(_), p) if p != Provider::Keeta => {
            return Err(check.err(
                at("access_token_env"),
                format!("only keeta accounts take a static access token ({p})"),
            ));
        }
        _ => {}
    }
    // DoorDash signs with the base64url-decoded secret [DOC]: one that does
    // not decode would start fine and fail every call.
    if provider == Provider::Doordash
        && crate::secret::doordash_signing_key(&client_secret).is_none()
    {
        return Err(check.err(
            at("client_secret_env"),
            "a DoorDash signing secret is base64url (as the developer portal shows it)",
        ));
    }
    Ok(ProviderApi {
        developer_id,
        key_id,
        app_id,
        access_token,
        base_url,
        token_url,
        client_id,
        client_secret,
        refresh_token,
        scope,
        callback_hosts,
        order_api,
        fetch_deadline,
        venue_id,
        answer_deadline,
        status_api,
    })
}

/// A provider API gets bearer tokens, client secrets and Wolt refresh
/// tokens: `http://` is refused unless the host is an address the operator
/// listed in `[provider_api] allowed_private_destinations` (a fake API on
/// loopback, a sandbox inside the network).
fn plain_http_only_inside(
    check: &Check<'_>,
    accounts: &[Account],
    settings: &ProviderApiSettings,
) -> Result<(), ConfigError> {
    for a in accounts {
        let mut urls: Vec<(String, &Url)> = Vec::new();
        if let Some(api) = &a.api {
            urls.push((format!("account {}.api.base_url", a.id), &api.base_url));
            if let Some(t) = &api.token_url {
                urls.push((format!("account {}.api.token_url", a.id), t));
            }
        }
        // A direct account's status calls are signed with its secret.
        if let Some(u) = &a.status_url {
            urls.push((format!("account {}.status_url", a.id), u));
        }
        for (field, url) in urls {
            if url.scheme() != "http" {
                continue;
            }
            let ip = match url.host() {
                Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
                Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
                _ => None,
            };
            let inside = ip.is_some_and(|ip| {
                settings
                    .allowed_private_destinations
                    .iter()
                    .any(|n| n.contains(&ip))
            });
            if !inside {
                return Err(check.err(
                    field,
                    format!(
                        "{} would send credentials in clear text: use https:// (http:// only for an address in provider_api.allowed_private_destinations)",
                        redact_url(url)
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn provider_api_section(
    check: &Check<'_>,
    raw: RawProviderApiSettings,
) -> Result<ProviderApiSettings, ConfigError> {
    let d = ProviderApiSettings::default();
    let mut settings = ProviderApiSettings {
        allowed_private_destinations: Vec::with_capacity(raw.allowed_private_destinations.len()),
        request_timeout: raw.request_timeout.unwrap_or(d.request_timeout),
        max_body_bytes: raw.max_body_bytes.unwrap_or(d.max_body_bytes),
        token_refresh_ahead: raw.token_refresh_ahead.unwrap_or(d.token_refresh_ahead),
        token_min_mint_interval: raw
            .token_min_mint_interval
            .unwrap_or(d.token_min_mint_interval),
        token_lease: raw.token_lease.unwrap_or(d.token_lease),
    };
    for (k, cidr) in raw.allowed_private_destinations.iter().enumerate() {
        let net = ip_net(cidr)
            .map_err(|m| check.err(format!("provider_api.allowed_private_destinations[{k}]"), m))?;
        settings.allowed_private_destinations.push(net);
    }
    if settings.request_timeout.is_zero() {
        return Err(check.err("provider_api.request_timeout", "must be above 0"));
    }
    if !(1024..=64 * 1024 * 1024).contains(&settings.max_body_bytes) {
        return Err(check.err(
            "provider_api.max_body_bytes",
            "must be 1024 to 67108864 (64 MiB)",
        ));
    }
    // The token call must end inside the lease, or a second replica could
    // take the lease and spend a Wolt refresh token the first one is still
    // spending.
    if settings
        .request_timeout
        .checked_mul(2)
        .is_none_or(|twice| settings.token_lease < twice)
    {
        return Err(check.err(
            "provider_api.token_lease",
            "must be at least twice provider_api.request_timeout",
        ));
    }
    Ok(settings)
}

fn fetcher_section(check: &Check<'_>, raw: RawFetcher) -> Result<FetcherSettings, ConfigError> {
    let mut delays = Vec::with_capacity(raw.schedule.len());
    for (k, s) in raw.schedule.iter().enumerate() {
        let d = humantime::parse_duration(s)
            .map_err(|e| check.err(format!("fetcher.schedule[{k}]"), format!("{s:?}: {e}")))?;
        delays.push(d);
    }
    let retry = RetrySchedule::new(delays, raw.max_deliver, raw.jitter, raw.max_hint)
        .map_err(|e| check.err(format!("fetcher.{}", e.field), e.message))?;
    // A 404 on delivery `not_found_retries + 1` is final; with fewer
    // deliveries allowed, the retries could never all happen.
    if i64::from(raw.not_found_retries) >= raw.max_deliver {
        return Err(check.err(
            "fetcher.not_found_retries",
            format!("must be below fetcher.max_deliver ({})", raw.max_deliver),
        ));
    }
    Ok(FetcherSettings {
        retry,
        not_found_retries: raw.not_found_retries,
    })
}

fn status_sync_section(
    check: &Check<'_>,
    raw: RawStatusSync,
) -> Result<StatusSyncSettings, ConfigError> {
    let mut delays = Vec::with_capacity(raw.schedule.len());
    for (k, s) in raw.schedule.iter().enumerate() {
        let d = humantime::parse_duration(s)
            .map_err(|e| check.err(format!("status_sync.schedule[{k}]"), format!("{s:?}: {e}")))?;
        delays.push(d);
    }
    let retry = RetrySchedule::new(delays, raw.max_deliver, raw.jitter, raw.max_hint)
        .map_err(|e| check.err(format!("status_sync.{}", e.field), e.message))?;
    let late_action_window = raw.late_action_window.unwrap_or(Duration::from_secs(3600));
    if late_action_window < Duration::from_secs(1) {
        return Err(check.err("status_sync.late_action_window", "must be at least 1s"));
    }
    Ok(StatusSyncSettings {
        retry,
        late_action_window,
        per_order_ordering: raw.per_order_ordering.unwrap_or(true),
    })
}

fn retry_section(check: &Check<'_>, raw: RawRetry) -> Result<RetrySchedule, ConfigError> {
    let mut delays = Vec::with_capacity(raw.schedule.len());
    for (k, s) in raw.schedule.iter().enumerate() {
        let d = humantime::parse_duration(s)
            .map_err(|e| check.err(format!("retry.schedule[{k}]"), format!("{s:?}: {e}")))?;
        delays.push(d);
    }
    RetrySchedule::new(delays, raw.max_deliver, raw.jitter, raw.max_hint)
        .map_err(|e| check.err(format!("retry.{}", e.field), e.message))
}

fn stream_section(check: &Check<'_>, raw: RawStreams) -> Result<StreamSettings, ConfigError> {
    check_storage(check, "streams.storage", &raw.storage)?;
    for (name, o) in &raw.overrides {
        // The order-context bucket's TTL is an operator's choice; the other
        // buckets' lifetimes are part of their design.
        if name == crate::answer::ORDER_CONTEXT_BUCKET || name == crate::sequence::SEQUENCE_BUCKET {
            if o.duplicate_window.is_some()
                || o.max_bytes.is_some()
                || o.max_msg_size.is_some()
                || o.replicas.is_some()
                || o.storage.is_some()
                || o.retention.is_some()
            {
                return Err(check.err(
                    format!("streams.overrides.{name}"),
                    "a key-value bucket takes max_age only",
                ));
            }
            if o.max_age.is_some_and(|a| a < Duration::from_secs(3600)) {
                return Err(check.err(
                    format!("streams.overrides.{name}.max_age"),
                    if name == crate::answer::ORDER_CONTEXT_BUCKET {
                        "must be at least 1h: an order's context must outlive its answers"
                    } else {
                        "must be at least 1h: an order's sequence must outlive its events"
                    },
                ));
            }
            continue;
        }
        if !crate::streams::STREAM_NAMES.contains(&name.as_str()) {
            return Err(check.err(
                format!("streams.overrides.{name}"),
                format!(
                    "unknown stream (known: {}; buckets {}, {})",
                    crate::streams::STREAM_NAMES.join(", "),
                    crate::answer::ORDER_CONTEXT_BUCKET,
                    crate::sequence::SEQUENCE_BUCKET
                ),
            ));
        }
        check_storage(
            check,
            &format!("streams.overrides.{name}.storage"),
            &o.storage,
        )?;
        if o.max_msg_size.is_some_and(|m| m == 0 || m < -1) {
            return Err(check.err(
                format!("streams.overrides.{name}.max_msg_size"),
                "must be -1 (the server's max_payload) or at least 1",
            ));
        }
        if let Some(r) = &o.retention
            && !matches!(r.as_str(), "limits" | "workqueue" | "interest")
        {
            return Err(check.err(
                format!("streams.overrides.{name}.retention"),
                format!("{r:?} is not limits, workqueue or interest"),
            ));
        }
    }
    for (name, c) in &raw.consumers {
        if !crate::streams::CONSUMER_NAMES.contains(&name.as_str()) {
            return Err(check.err(
                format!("streams.consumers.{name}"),
                format!(
                    "unknown consumer (known: {})",
                    crate::streams::CONSUMER_NAMES.join(", ")
                ),
            ));
        }
        if c.ack_wait.is_some_and(|d| d < Duration::from_secs(1)) {
            return Err(check.err(
                format!("streams.consumers.{name}.ack_wait"),
                "must be at least 1s",
            ));
        }
        if c.max_ack_pending.is_some_and(|m| m < 1) {
            return Err(check.err(
                format!("streams.consumers.{name}.max_ack_pending"),
                "must be at least 1",
            ));
        }
    }
    let replicas = std::iter::once(("streams.replicas".to_owned(), raw.replicas)).chain(
        raw.overrides
            .iter()
            .map(|(n, o)| (format!("streams.overrides.{n}.replicas"), o.replicas)),
    );
    for (field, r) in replicas {
        if let Some(r) = r
            && !(1..=5).contains(&r)
        {
            return Err(check.err(field, format!("{r} replicas: JetStream allows 1 to 5")));
        }
    }
    Ok(StreamSettings {
        replicas: raw.replicas,
        storage: raw.storage,
        overrides: raw.overrides,
        consumers: raw.consumers,
    })
}

fn ingress_section(check: &Check<'_>, raw: RawIngress) -> Result<IngressSettings, ConfigError> {
    let mut ingress = IngressSettings::default();
    if let Some(m) = raw.max_body_bytes {
        if m == 0 {
            return Err(check.err("ingress.max_body_bytes", "must be above 0"));
        }
        ingress.max_body_bytes = m;
    }
    for (k, cidr) in raw.trusted_proxies.iter().enumerate() {
        ingress
            .trusted_proxies
            .push(ip_net(cidr).map_err(|m| check.err(format!("ingress.trusted_proxies[{k}]"), m))?);
    }
    if let Some(t) = raw.publish_timeout {
        if t.is_zero() {
            return Err(check.err("ingress.publish_timeout", "must be above 0"));
        }
        ingress.publish_timeout = t;
    }
    for (name, r) in &raw.rate_limits {
        let field = format!("ingress.rate_limits.{name}");
        check_rate(check, field.clone(), r)?;
        if name == "default" {
            ingress.rate_limits.default = Some(*r);
        } else {
            let p = Provider::from_str(name)
                .map_err(|_| check.err(field, "not a provider name or default"))?;
            ingress.rate_limits.providers.insert(p, *r);
        }
    }
    if let Some(r) = raw.unauthenticated_rate_limit {
        check_rate(check, "ingress.unauthenticated_rate_limit".into(), &r)?;
        ingress.unauthenticated_rate_limit = r;
    }
    if let Some(p) = raw.trace_sample_percent {
        if p > 100 {
            return Err(check.err("ingress.trace_sample_percent", "must be 0 to 100"));
        }
        ingress.trace_sample_percent = p;
    }
    Ok(ingress)
}

/// The `breaker_*` keys of `[forwarder]` or of one tenant, as written.
struct RawBreaker {
    failures: Option<u32>,
    failure_rate: Option<f64>,
    min_requests: Option<u32>,
    window: Option<Duration>,
    probes: Option<u32>,
    cooldown: Option<Duration>,
    max_cooldown: Option<Duration>,
}

fn breaker_of(
    check: &Check<'_>,
    at: &str,
    base: BreakerSettings,
    raw: RawBreaker,
) -> Result<BreakerSettings, ConfigError> {
    let b = BreakerSettings {
        failures: raw.failures.unwrap_or(base.failures),
        failure_rate: raw.failure_rate.unwrap_or(base.failure_rate),
        min_requests: raw.min_requests.unwrap_or(base.min_requests),
        window: raw.window.unwrap_or(base.window),
        probes: raw.probes.unwrap_or(base.probes),
        cooldown: raw.cooldown.unwrap_or(base.cooldown),
        max_cooldown: raw.max_cooldown.unwrap_or(base.max_cooldown),
    };
    let field = |f: &str| format!("{at}.breaker_{f}");
    if b.failures == 0 {
        return Err(check.err(field("failures"), "must be at least 1"));
    }
    // Written so that NaN fails too.
    if !(b.failure_rate > 0.0 && b.failure_rate <= 1.0) {
        return Err(check.err(field("failure_rate"), "must be above 0 and at most 1"));
    }
    if b.min_requests == 0 {
        return Err(check.err(field("min_requests"), "must be at least 1"));
    }
    // The window is kept in ten buckets; below 100 ms they would be too
    // short to count anything.
    if b.window < Duration::from_millis(100) {
        return Err(check.err(field("window"), "must be at least 100ms"));
    }
    if b.probes == 0 {
        return Err(check.err(field("probes"), "must be at least 1"));
    }
    if b.cooldown.is_zero() {
        return Err(check.err(field("cooldown"), "must be above 0"));
    }
    if b.max_cooldown < b.cooldown {
        return Err(check.err(field("max_cooldown"), "must be at least breaker_cooldown"));
    }
    Ok(b)
}

fn check_rate(check: &Check<'_>, field: String, r: &RateLimit) -> Result<(), ConfigError> {
    if r.per_second == 0 || r.burst == 0 {
        return Err(check.err(field, "per_second and burst must be above 0"));
    }
    Ok(())
}

/// Where one secret comes from, with the field that names it in errors.
enum SecretSource<'a> {
    Env(&'a str),
    File(&'a Path),
}

/// Reads every listed secret; the first missing one is an error naming its
/// field.
fn secret_list<'a>(
    check: &Check<'_>,
    sources: impl IntoIterator<Item = (String, SecretSource<'a>)>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, SecretString)>, ConfigError> {
    let mut secrets = Vec::new();
    for (field, source) in sources {
        let secret = match source {
            SecretSource::Env(name) => read_secret(check, field.clone(), Some(name), None, env)?,
            SecretSource::File(path) => read_secret(check, field.clone(), None, Some(path), env)?,
        };
        if let Some(s) = secret {
            secrets.push((field, s));
        }
    }
    Ok(secrets)
}

/// An absolute `http`/`https` URL with a host; anything else fails at start
/// rather than on the first order.
fn http_url(text: &str) -> Result<Url, String> {
    let url =
        Url::parse(text).map_err(|e| format!("{:?} is not a URL: {e}", redact_url_text(text)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "{} is not an http:// or https:// URL",
            redact_url(&url)
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{} has no host", redact_url(&url)));
    }
    Ok(url)
}

/// A URL as it may be logged: scheme, host, port and path; no userinfo,
/// query or fragment, which may carry credentials.
pub fn redact_url(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// [`redact_url`] for text that did not parse: everything after a `?` or
/// `#` and before an `@` is dropped.
fn redact_url_text(text: &str) -> String {
    let text = text.split(['?', '#']).next().unwrap_or_default();
    match (text.find("://"), text.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}{}", &text[..s + 3], &text[at + 1..]),
        _ => text.to_owned(),
    }
}

/// `10.0.0.0/8`, `2001:db8::/32` or a bare address (one host), written
/// exactly so: no spaces, no address bits beyond the prefix (`10.0.0.1/8`
/// is refused rather than guessed at).
pub fn ip_net(text: &str) -> Result<IpNet, String> {
    let net = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => match text.parse::<IpAddr>() {
            Ok(addr) => IpNet::from(addr),
            Err(_) => return Err(format!("{text:?} is not an IP address or CIDR")),
        },
    };
    if net.trunc() != net {
        return Err(format!(
            "{text:?} has address bits beyond its prefix; write {}",
            net.trunc()
        ));
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_with(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    const GOOD: &str = r#"
[[tenant]]
id = "acme"
backend_url = "http://127.0.0.1:3001/api/v1/orders"
backend_key_env = "ACME_BACKEND_KEY"
signing_secret_env = "ACME_SIGNING_SECRET"

[[account]]
id = "acme-careem"
provider = "careem"
tenant = "acme"
secret_envs = ["ACME_CAREEM_SECRET", "ACME_CAREEM_SECRET_NEXT"]
allowed_ips = ["10.0.0.0/8", "192.0.2.7"]
currency = "JOD"
default = true
[account.branches]
"991" = "amman-abdoun"
[account.products]
"burger-classic" = "prod_1001"

[retry]
schedule = ["1m", "5m", "15m", "1h", "4h", "12h", "24h"]
max_deliver = 10
"#;

    const ENV: &[(&str, &str)] = &[
        ("ACME_BACKEND_KEY", "k-123"),
        ("ACME_SIGNING_SECRET", "whsec_c2VjcmV0"),
        ("ACME_CAREEM_SECRET", "s1"),
        ("ACME_CAREEM_SECRET_NEXT", "s2"),
    ];

    fn load(text: &str) -> Result<HubConfig, ConfigError> {
        HubConfig::from_toml(text, "hub.toml", &env_with(ENV))
    }

    #[test]
    fn the_design_example_loads_with_secrets_resolved() {
        let hub = load(GOOD).unwrap();
        assert_eq!(hub.tenants.len(), 1);
        let acc = hub.account(Provider::Careem, "acme-careem").unwrap();
        assert_eq!(acc.tenant, "acme");
        let secrets: Vec<&str> = acc.secrets.iter().map(|s| s.expose_secret()).collect();
        assert_eq!(secrets, ["s1", "s2"]);
        assert_eq!(acc.branches["991"], "amman-abdoun");
        assert_eq!(
            hub.default_account(Provider::Careem).unwrap().id,
            "acme-careem"
        );
        assert!(hub.default_account(Provider::Wolt).is_none());
        assert_eq!(hub.retry.max_deliver(), 10);
        assert_eq!(hub.retry.delays()[0], Duration::from_secs(60));
    }

    #[test]
    fn debug_and_summary_never_show_a_secret() {
        let hub = load(GOOD).unwrap();
        let debug = format!("{hub:?}");
        let summary = hub.summary().to_string();
        for secret in ["k-123", "whsec_c2VjcmV0", "\"s1\"", "\"s2\""] {
            assert!(!debug.contains(secret), "Debug shows {secret}");
            assert!(!summary.contains(secret), "summary shows {secret}");
        }
        assert!(summary.contains("[redacted]"));
    }

    fn err_of(text: &str) -> String {
        load(text).unwrap_err().to_string()
    }

    #[test]
    fn a_bad_field_is_named() {
        let text = GOOD.replace("max_deliver = 10", "max_deliver = \"ten\"");
        let e = err_of(&text);
        assert!(e.starts_with("hub config hub.toml: "), "{e}");
        assert!(e.contains("max_deliver"), "{e}");

        let text = GOOD.replace("backend_url =", "backend_urll =");
        let e = err_of(&text);
        assert!(e.contains("unknown field `backend_urll`"), "{e}");

        let text = GOOD.replace("\"15m\"", "\"15 parsecs\"");
        assert_eq!(
            err_of(&text),
            "hub config hub.toml: retry.schedule[2]: \"15 parsecs\": unknown time unit \"parsecs\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)"
        );
    }

    #[test]
    fn a_missing_secret_env_var_is_named() {
        let e = HubConfig::from_toml(
            GOOD,
            "hub.toml",
            &env_with(&[
                ("ACME_BACKEND_KEY", "k"),
                ("ACME_SIGNING_SECRET", "whsec_c2VjcmV0"),
                ("ACME_CAREEM_SECRET", "s1"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "hub config hub.toml: account acme-careem.secret_envs[1]: environment variable ACME_CAREEM_SECRET_NEXT is not set or empty"
        );
    }

    #[test]
    fn an_unknown_provider_is_named() {
        let e = err_of(&GOOD.replace("provider = \"careem\"", "provider = \"carem\""));
        assert_eq!(
            e,
            "hub config hub.toml: account acme-careem.provider: unknown provider \"carem\" (known: careem, talabat, deliveroo, ubereats, wolt, justeat, doordash, glovo, grab, keeta, direct)"
        );
    }

    #[test]
    fn ids_that_cannot_be_subject_tokens_are_refused() {
        for bad in ["acme.eu", "ac*me", "acme>", "ac me", ""] {
            let e = err_of(&GOOD.replace("id = \"acme-careem\"", &format!("id = {bad:?}")));
            assert!(
                e.starts_with("hub config hub.toml: account[0].id: "),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn cross_references_and_values_are_checked() {
        let cases = [
            (
                GOOD.replace("tenant = \"acme\"", "tenant = \"acne\""),
                "account acme-careem.tenant: unknown tenant \"acne\"",
            ),
            (
                GOOD.replace("\"10.0.0.0/8\"", "\"10.0.0.0/33\""),
                "account acme-careem.allowed_ips[0]: \"10.0.0.0/33\" is not an IP address or CIDR",
            ),
            (
                GOOD.replace("currency = \"JOD\"", "currency = \"jod\""),
                "account acme-careem.currency: \"jod\" is not an ISO 4217 currency: currency code \"jod\" is not three upper-case letters",
            ),
            (
                GOOD.replace("max_deliver = 10", "max_deliver = 0"),
                "retry.max_deliver: must be at least 1",
            ),
            (
                GOOD.replace("http://127.0.0.1:3001", "ftp://x"),
                "tenant acme.backend_url: ftp://x/api/v1/orders is not an http:// or https:// URL",
            ),
            (
                format!("{GOOD}\n[streams]\nreplicas = 7\n"),
                "streams.replicas: 7 replicas: JetStream allows 1 to 5",
            ),
            (
                GOOD.replace(
                    "currency = \"JOD\"",
                    "currency = \"JOD\"\ncountry = \"jordan\"",
                ),
                "account acme-careem.country: \"jordan\" is not an ISO 3166-1 alpha-2 code (two capital letters)",
            ),
            (
                GOOD.replace(
                    "currency = \"JOD\"",
                    "currency = \"JOD\"\njwt_algorithm = \"none\"",
                ),
                "account acme-careem.jwt_algorithm: \"none\" is not HS256, HS384 or HS512",
            ),
            (
                GOOD.replace(
                    "currency = \"JOD\"",
                    "currency = \"JOD\"\nrate_limit = { per_second = 0, burst = 5 }",
                ),
                "account acme-careem.rate_limit: per_second and burst must be above 0",
            ),
            (
                format!("{GOOD}\n[forwarder]\nbreaker_failures = 0\n"),
                "forwarder.breaker_failures: must be at least 1",
            ),
            (
                GOOD.replace(
                    "backend_key_env",
                    "breaker_cooldown = \"1m\"\nbreaker_max_cooldown = \"30s\"\nbackend_key_env",
                ),
                "tenant acme.breaker_max_cooldown: must be at least breaker_cooldown",
            ),
            (
                GOOD.replace(
                    "backend_key_env",
                    "breaker_failure_rate = 0.0\nbackend_key_env",
                ),
                "tenant acme.breaker_failure_rate: must be above 0 and at most 1",
            ),
            (
                format!("{GOOD}\n[forwarder]\nbreaker_failure_rate = 1.5\n"),
                "forwarder.breaker_failure_rate: must be above 0 and at most 1",
            ),
            (
                format!("{GOOD}\n[forwarder]\nbreaker_failure_rate = nan\n"),
                "forwarder.breaker_failure_rate: must be above 0 and at most 1",
            ),
            (
                format!("{GOOD}\n[forwarder]\nbreaker_min_requests = 0\n"),
                "forwarder.breaker_min_requests: must be at least 1",
            ),
            (
                GOOD.replace(
                    "backend_key_env",
                    "breaker_window = \"50ms\"\nbackend_key_env",
                ),
                "tenant acme.breaker_window: must be at least 100ms",
            ),
            (
                format!("{GOOD}\n[forwarder]\nbreaker_probes = 0\n"),
                "forwarder.breaker_probes: must be at least 1",
            ),
            (
                format!("{GOOD}\n[forwarder]\nallowed_private_destinations = [\"localhost\"]\n"),
                "forwarder.allowed_private_destinations[0]: \"localhost\" is not an IP address or CIDR",
            ),
            (
                format!("{GOOD}\n[ingress]\ntrusted_proxies = [\"10.0.0.300\"]\n"),
                "ingress.trusted_proxies[0]: \"10.0.0.300\" is not an IP address or CIDR",
            ),
            (
                format!("{GOOD}\n[ingress.rate_limits]\ncarem = {{ per_second = 5, burst = 5 }}\n"),
                "ingress.rate_limits.carem: not a provider name or default",
            ),
            (
                format!("{GOOD}\n[ingress]\ntrace_sample_percent = 101\n"),
                "ingress.trace_sample_percent: must be 0 to 100",
            ),
            // Each of these used to load and then misbehave at run time.
            (
                GOOD.replace("\"10.0.0.0/8\"", "\"10.0.0.0 /8\""),
                "account acme-careem.allowed_ips[0]: \"10.0.0.0 /8\" is not an IP address or CIDR",
            ),
            (
                GOOD.replace("\"10.0.0.0/8\"", "\"10.0.0.1/8\""),
                "account acme-careem.allowed_ips[0]: \"10.0.0.1/8\" has address bits beyond its prefix; write 10.0.0.0/8",
            ),
            (
                GOOD.replace("currency = \"JOD\"", "currency = \"JDO\""),
                "account acme-careem.currency: \"JDO\" is not an ISO 4217 currency: unknown currency code \"JDO\"",
            ),
            (
                format!("{GOOD}\n[ingress]\ntrusted_proxies = [\" 10.0.0.1\"]\n"),
                "ingress.trusted_proxies[0]: \" 10.0.0.1\" is not an IP address or CIDR",
            ),
            (
                GOOD.replace(
                    "http://127.0.0.1:3001/api/v1/orders",
                    "https://user:pw@/orders?key=k",
                ),
                "tenant acme.backend_url: \"https:///orders\" is not a URL: empty host",
            ),
            (
                GOOD.replace("provider = \"careem\"", "provider = \"direct\""),
                "account acme-careem.secret_envs[0]: a direct account's secret must be a Standard Webhooks secret (whsec_ and base64)",
            ),
            (
                GOOD.replace(
                    "signing_secret_env = \"ACME_SIGNING_SECRET\"",
                    "signing_secret_envs = [\"ACME_SIGNING_SECRET\", \"ACME_CAREEM_SECRET\"]",
                ),
                "tenant acme.signing_secret_envs[1]: the signing secret must be a Standard Webhooks secret (whsec_ and base64)",
            ),
            (
                format!("{GOOD}\n[ingress]\npublish_timeout = \"0s\"\n"),
                "ingress.publish_timeout: must be above 0",
            ),
            (
                format!("{GOOD}\n[streams.overrides.ORDRES]\nmax_age = \"1d\"\n"),
                "streams.overrides.ORDRES: unknown stream (known: WEBHOOKS, ORDERS, STATUS, OUTCOMES, DLQ, ADVISORIES; buckets ORDER_CONTEXT, ORDER_SEQUENCE)",
            ),
            (
                format!("{GOOD}\n[streams.overrides.ORDER_CONTEXT]\nmax_age = \"10m\"\n"),
                "streams.overrides.ORDER_CONTEXT.max_age: must be at least 1h: an order's context must outlive its answers",
            ),
            (
                format!("{GOOD}\n[streams.overrides.ORDER_CONTEXT]\nreplicas = 3\n"),
                "streams.overrides.ORDER_CONTEXT: a key-value bucket takes max_age only",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(err_of(&text), format!("hub config hub.toml: {want}"));
        }
    }

    #[test]
    fn breaker_keys_default_then_forwarder_then_tenant() {
        let hub = load(GOOD).unwrap();
        assert_eq!(hub.tenants[0].breaker, BreakerSettings::default());
        assert_eq!(hub.tenants[0].breaker.failure_rate, 0.5);
        let text = format!(
            "{}\n[forwarder]\nbreaker_failure_rate = 0.8\nbreaker_window = \"30s\"\nbreaker_probes = 3\n",
            GOOD.replace(
                "backend_key_env",
                "breaker_min_requests = 50\nbreaker_failure_rate = 0.25\nbackend_key_env"
            )
        );
        let hub = load(&text).unwrap();
        assert_eq!(hub.forwarder.breaker.failure_rate, 0.8);
        assert_eq!(
            hub.tenants[0].breaker,
            BreakerSettings {
                failure_rate: 0.25,
                min_requests: 50,
                window: Duration::from_secs(30),
                probes: 3,
                ..BreakerSettings::default()
            }
        );
    }

    #[test]
    fn values_arrive_as_types() {
        let hub = load(&format!(
            "{GOOD}\n[ingress]\ntrusted_proxies = [\"10.1.0.0/16\", \"2001:db8::7\"]\n[ingress.rate_limits]\ndefault = {{ per_second = 9, burst = 9 }}\ntalabat = {{ per_second = 2, burst = 4 }}\n"
        ))
        .unwrap();
        let acc = &hub.accounts[0];
        assert_eq!(
            acc.allowed_ips,
            [
                "10.0.0.0/8".parse::<IpNet>().unwrap(),
                "192.0.2.7/32".parse().unwrap()
            ]
        );
        assert_eq!(acc.currency, Some(Currency::from_code("JOD").unwrap()));
        assert_eq!(acc.jwt_algorithm, JwtAlgorithm::Hs256);
        assert_eq!(
            hub.ingress.trusted_proxies,
            [
                "10.1.0.0/16".parse::<IpNet>().unwrap(),
                "2001:db8::7/128".parse().unwrap()
            ]
        );
        let limits = &hub.ingress.rate_limits;
        let rate = |per_second, burst| Some(RateLimit { per_second, burst });
        assert_eq!(limits.for_provider(Provider::Talabat), rate(2, 4));
        assert_eq!(limits.for_provider(Provider::Careem), rate(9, 9));
        assert_eq!(
            hub.tenants[0].backend_url.as_str(),
            "http://127.0.0.1:3001/api/v1/orders"
        );
    }

    #[test]
    fn a_tenant_signs_with_every_signing_secret() {
        let text = GOOD.replace(
            "signing_secret_env = \"ACME_SIGNING_SECRET\"",
            "signing_secret_env = \"ACME_SIGNING_SECRET\"\nsigning_secret_envs = [\"NEXT_SIGNING_SECRET\"]",
        );
        let env = |name: &str| match name {
            "NEXT_SIGNING_SECRET" => Some("whsec_bmV4dA==".to_owned()),
            other => env_with(ENV)(other),
        };
        let hub = HubConfig::from_toml(&text, "hub.toml", &env).unwrap();
        let secrets: Vec<&str> = hub.tenants[0]
            .signing_secrets
            .iter()
            .map(|s| s.expose_secret())
            .collect();
        assert_eq!(secrets, ["whsec_c2VjcmV0", "whsec_bmV4dA=="]);
    }

    #[test]
    fn the_summary_shows_no_url_credentials_or_query() {
        let hub = load(&GOOD.replace(
            "http://127.0.0.1:3001/api/v1/orders",
            "https://user:pw@orders.example/api?key=k#f",
        ))
        .unwrap();
        let summary = hub.summary().to_string();
        assert!(
            summary.contains("\"https://orders.example/api\""),
            "{summary}"
        );
        for leak in ["user", "pw", "key=k"] {
            assert!(!summary.contains(leak), "summary shows {leak}: {summary}");
        }
    }

    #[test]
    fn private_destinations_are_refused_unless_listed() {
        assert!(
            load(GOOD)
                .unwrap()
                .forwarder
                .allowed_private_destinations
                .is_empty()
        );
        let hub = load(&format!(
            "{GOOD}\n[forwarder]\nallowed_private_destinations = [\"127.0.0.0/8\", \"::1\"]\n"
        ))
        .unwrap();
        assert_eq!(
            hub.forwarder.allowed_private_destinations,
            [
                "127.0.0.0/8".parse::<IpNet>().unwrap(),
                "::1/128".parse().unwrap()
            ]
        );
    }

    #[test]
    fn trace_sampling_defaults_to_every_trace() {
        assert_eq!(load(GOOD).unwrap().ingress.trace_sample_percent, 100);
        let hub = load(&format!("{GOOD}\n[ingress]\ntrace_sample_percent = 0\n")).unwrap();
        assert_eq!(hub.ingress.trace_sample_percent, 0);
    }

    #[test]
    fn secrets_can_come_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("careem.secret");
        std::fs::write(&path, "from-file\n").unwrap();
        let text = GOOD.replace(
            "secret_envs = [\"ACME_CAREEM_SECRET\", \"ACME_CAREEM_SECRET_NEXT\"]",
            &format!("secret_files = [{:?}]", path.display().to_string()),
        );
        let hub = load(&text).unwrap();
        let acc = &hub.accounts[0];
        assert_eq!(acc.secrets.len(), 1);
        assert_eq!(acc.secrets[0].expose_secret(), "from-file");

        let missing = text.replace("careem.secret", "nope.secret");
        let e = err_of(&missing);
        assert!(
            e.contains("account acme-careem.secret_files[0]: cannot read secret file"),
            "{e}"
        );
    }

    #[test]
    fn the_embedded_default_is_valid_with_the_example_environment() {
        // Every secret one value; DoorDash's signing secret is base64url.
        let hub = HubConfig::from_toml(EMBEDDED_HUB_CONFIG, "(embedded default)", &|name| {
            Some(if name.contains("DOORDASH_SIGNING") {
                "ZXhhbXBsZS1zZWNyZXQtZG8tbm90LXVzZQ".to_owned()
            } else {
                "whsec_ZXhhbXBsZS1zZWNyZXQtZG8tbm90LXVzZQ==".to_owned()
            })
        })
        .unwrap();
        for p in Provider::ALL {
            assert!(
                hub.default_account(p).is_some(),
                "no default account for {p}"
            );
        }
    }

    /// An Uber Eats and a Wolt account with `[account.api]` tables.
    const API: &str = r#"
[[tenant]]
id = "acme"
backend_url = "https://orders.acme.example/hub"

[[account]]
id = "acme-uber"
provider = "ubereats"
tenant = "acme"
secret_envs = ["S"]
[account.api]
base_url = "https://api.uber.com"
token_url = "https://auth.uber.com/oauth/v2/token"
client_id_env = "UBER_ID"
client_secret_env = "UBER_SECRET"

[[account]]
id = "acme-wolt"
provider = "wolt"
tenant = "acme"
secret_envs = ["S"]
[account.api]
base_url = "https://pos-integration-service.wolt.com"
token_url = "https://integrations-authentication-service.wolt.com/oauth2/token"
client_id_env = "WOLT_ID"
client_secret_env = "WOLT_SECRET"
refresh_token_env = "WOLT_REFRESH"
"#;

    const API_ENV: &[(&str, &str)] = &[
        ("S", "webhook-secret"),
        ("UBER_ID", "uber-client"),
        ("UBER_SECRET", "uber-secret"),
        ("WOLT_ID", "wolt-client"),
        ("WOLT_SECRET", "wolt-secret"),
        ("WOLT_REFRESH", "wolt-refresh"),
    ];

    fn api_load(text: &str) -> Result<HubConfig, ConfigError> {
        HubConfig::from_toml(text, "hub.toml", &env_with(API_ENV))
    }

    fn api_err(text: &str) -> String {
        api_load(text).unwrap_err().to_string()
    }

    #[test]
    fn provider_api_accounts_get_their_providers_defaults() {
        let hub = api_load(API).unwrap();
        let uber = hub.account(Provider::Ubereats, "acme-uber").unwrap();
        let api = uber.api.as_ref().unwrap();
        assert_eq!(
            api.client_id.as_ref().unwrap().expose_secret(),
            "uber-client"
        );
        assert_eq!(api.client_secret.expose_secret(), "uber-secret");
        assert!(api.refresh_token.is_none());
        assert_eq!(api.scope.as_deref(), Some("eats.order"));
        assert_eq!(api.order_api, OrderApi::Auto);
        assert_eq!(api.fetch_deadline, Duration::from_secs(690));
        let wolt = hub.account(Provider::Wolt, "acme-wolt").unwrap();
        let api = wolt.api.as_ref().unwrap();
        assert_eq!(
            api.refresh_token.as_ref().unwrap().expose_secret(),
            "wolt-refresh"
        );
        assert_eq!(api.scope, None);
        assert_eq!(api.order_api, OrderApi::V2);
        assert_eq!(api.fetch_deadline, Duration::from_secs(180));
        assert_eq!(hub.provider_api, ProviderApiSettings::default());
        assert_eq!(hub.fetcher.not_found_retries, 5);
        assert_eq!(hub.fetcher.retry.max_deliver(), 20);
        // The summary names no credential.
        let summary = hub.summary().to_string();
        for secret in [
            "uber-client",
            "uber-secret",
            "wolt-client",
            "wolt-secret",
            "wolt-refresh",
        ] {
            assert!(!summary.contains(secret), "{summary}");
        }
        assert!(!format!("{hub:?}").contains("wolt-refresh"));
    }

    #[test]
    fn provider_api_settings_are_read_and_checked() {
        let text = format!(
            "{API}\n[provider_api]\nallowed_private_destinations = [\"127.0.0.0/8\"]\nrequest_timeout = \"3s\"\ntoken_lease = \"6s\"\ntoken_min_mint_interval = \"5m\"\n\n[fetcher]\nschedule = [\"1s\"]\nmax_deliver = 4\nnot_found_retries = 2\n"
        );
        let hub = api_load(&text).unwrap();
        assert_eq!(hub.provider_api.request_timeout, Duration::from_secs(3));
        assert_eq!(
            hub.provider_api.token_min_mint_interval,
            Duration::from_secs(300)
        );
        assert_eq!(hub.provider_api.allowed_private_destinations.len(), 1);
        assert_eq!(hub.fetcher.retry.max_deliver(), 4);
        assert_eq!(hub.fetcher.not_found_retries, 2);

        let short_lease = text.replace("token_lease = \"6s\"", "token_lease = \"5s\"");
        assert_eq!(
            api_err(&short_lease),
            "hub config hub.toml: provider_api.token_lease: must be at least twice provider_api.request_timeout"
        );
        let zero = text.replace("request_timeout = \"3s\"", "request_timeout = \"0s\"");
        assert_eq!(
            api_err(&zero),
            "hub config hub.toml: provider_api.request_timeout: must be above 0"
        );
        let net = text.replace("127.0.0.0/8", "127.0.0.1/8");
        assert!(
            api_err(&net)
                .starts_with("hub config hub.toml: provider_api.allowed_private_destinations[0]: "),
            "{}",
            api_err(&net)
        );
        let schedule = text.replace("schedule = [\"1s\"]", "schedule = []");
        assert!(
            api_err(&schedule).starts_with("hub config hub.toml: fetcher.schedule"),
            "{}",
            api_err(&schedule)
        );
        let unknown = format!("{API}\n[fetcher]\nretries = 3\n");
        assert!(api_err(&unknown).contains("unknown field `retries`"));
    }

    #[test]
    fn provider_api_accounts_fail_closed() {
        let cases = [
            (
                API.replace("token_url = \"https://auth.uber.com/oauth/v2/token\"\n", ""),
                "account acme-uber.api.token_url: is required",
            ),
            (
                API.replace("client_secret_env = \"UBER_SECRET\"\n", ""),
                "account acme-uber.api.client_secret_env: is required (or client_secret_file)",
            ),
            (
                API.replace("client_id_env = \"UBER_ID\"", "client_id_env = \"MISSING\""),
                "account acme-uber.api.client_id_env: environment variable MISSING is not set or empty",
            ),
            (
                API.replace("refresh_token_env = \"WOLT_REFRESH\"\n", ""),
                "account acme-wolt.api.refresh_token_env: a Wolt venue needs the refresh token of its authorisation (or refresh_token_file)",
            ),
            (
                API.replace(
                    "client_secret_env = \"UBER_SECRET\"",
                    "client_secret_env = \"UBER_SECRET\"\nrefresh_token_env = \"WOLT_REFRESH\"",
                ),
                "account acme-uber.api.refresh_token_env: ubereats tokens are minted from the client credentials; only Wolt takes a refresh token",
            ),
            (
                API.replace(
                    "client_secret_env = \"UBER_SECRET\"",
                    "client_secret_env = \"UBER_SECRET\"\nclient_secret_file = \"/run/secrets/uber\"",
                ),
                "account acme-uber.api.client_secret_env: set client_secret_env or client_secret_file, not both",
            ),
            (
                API.replace("https://api.uber.com", "ftp://api.uber.com"),
                "account acme-uber.api.base_url: ftp://api.uber.com/ is not an http:// or https:// URL",
            ),
            (
                API.replace(
                    "client_secret_env = \"WOLT_SECRET\"",
                    "client_secret_env = \"WOLT_SECRET\"\norder_api = \"auto\"",
                ),
                "account acme-wolt.api.order_api: \"auto\" is not v1 or v2",
            ),
            (
                API.replace(
                    "client_secret_env = \"UBER_SECRET\"",
                    "client_secret_env = \"UBER_SECRET\"\norder_api = \"v3\"",
                ),
                "account acme-uber.api.order_api: \"v3\" is not auto, v1 or v2",
            ),
            (
                API.replace(
                    "client_secret_env = \"UBER_SECRET\"",
                    "client_secret_env = \"UBER_SECRET\"\nfetch_deadline = \"500ms\"",
                ),
                "account acme-uber.api.fetch_deadline: must be at least 1s",
            ),
            (
                API.replace(
                    "client_secret_env = \"UBER_SECRET\"",
                    "client_secret_env = \"UBER_SECRET\"\nscope = \" \"",
                ),
                "account acme-uber.api.scope: is empty; leave it out for the default",
            ),
            (
                API.replace(
                    "client_secret_env = \"UBER_SECRET\"",
                    "client_secret_env = \"UBER_SECRET\"\ncallback_hosts = [\"https://x.example/cb\"]",
                ),
                "account acme-uber.api.callback_hosts[0]: \"https://x.example/cb\" is not a host name (no scheme, port or path)",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(api_err(&text), format!("hub config hub.toml: {want}"));
        }
        // Plain http only inside the networks the operator listed.
        let plain = API.replace("https://api.uber.com", "http://api.uber.com");
        assert_eq!(
            api_err(&plain),
            "hub config hub.toml: account acme-uber.api.base_url: http://api.uber.com/ would send credentials in clear text: use https:// (http:// only for an address in provider_api.allowed_private_destinations)"
        );
        let loopback = API.replace("https://api.uber.com", "http://127.0.0.1:8099");
        assert!(
            api_err(&loopback)
                .contains("acme-uber.api.base_url: http://127.0.0.1:8099/ would send")
        );
        let listed = format!(
            "{loopback}\n[provider_api]\nallowed_private_destinations = [\"127.0.0.0/8\"]\n"
        );
        assert!(api_load(&listed).is_ok());
        let huge = format!("{API}\n[provider_api]\nmax_body_bytes = 100000000\n");
        assert_eq!(
            api_err(&huge),
            "hub config hub.toml: provider_api.max_body_bytes: must be 1024 to 67108864 (64 MiB)"
        );
        let absurd = format!("{API}\n[provider_api]\nrequest_timeout = \"400000000years\"\n");
        assert!(
            api_err(&absurd).starts_with("hub config hub.toml: provider_api."),
            "{}",
            api_err(&absurd)
        );
        let retries = format!("{API}\n[fetcher]\nmax_deliver = 5\nnot_found_retries = 5\n");
        assert_eq!(
            api_err(&retries),
            "hub config hub.toml: fetcher.not_found_retries: must be below fetcher.max_deliver (5)"
        );
        let venue = API.replace(
            "refresh_token_env = \"WOLT_REFRESH\"",
            "refresh_token_env = \"WOLT_REFRESH\"\nvenue_id = \" v-1 \"",
        );
        let hub = api_load(&venue).unwrap();
        let wolt = hub.account(Provider::Wolt, "acme-wolt").unwrap();
        assert_eq!(wolt.api.as_ref().unwrap().venue_id.as_deref(), Some("v-1"));
        // Scopes in any order are one set.
        let scopes = API.replace(
            "client_secret_env = \"UBER_SECRET\"",
            "client_secret_env = \"UBER_SECRET\"\nscope = \"eats.store.orders.read  eats.order eats.order\"",
        );
        let hub = api_load(&scopes).unwrap();
        let uber = hub.account(Provider::Ubereats, "acme-uber").unwrap();
        assert_eq!(
            uber.api.as_ref().unwrap().scope.as_deref(),
            Some("eats.order eats.store.orders.read")
        );
        // No secret value ever appears in an error.
        let e = api_err(&API.replace("https://api.uber.com", "https://uber-secret@"));
        assert!(!e.contains("uber-secret"), "{e}");
    }

    const ANSWERING: &str = r#"
[[account]]
id = "acme-je"
provider = "justeat"
tenant = "acme"
secret_envs = ["S"]
[account.api]
base_url = "https://uk-partnerapi.just-eat.io"
client_secret_env = "JE_KEY"
status_api = "partner"

[[account]]
id = "acme-direct"
provider = "direct"
tenant = "acme"
secret_envs = ["WHSEC"]
status_url = "https://pos.acme.example/orderhub/status"

[[account]]
id = "acme-careem"
provider = "careem"
tenant = "acme"
secret_envs = ["S"]
currency = "JOD"

[[account]]
id = "acme-talabat"
provider = "talabat"
tenant = "acme"
secret_envs = ["S"]
"#;

    const ANSWERING_ENV: &[(&str, &str)] = &[
        ("S", "webhook-secret"),
        ("UBER_ID", "uber-client"),
        ("UBER_SECRET", "uber-secret"),
        ("WOLT_ID", "wolt-client"),
        ("WOLT_SECRET", "wolt-secret"),
        ("WOLT_REFRESH", "wolt-refresh"),
        ("JE_KEY", "je-key"),
        ("WHSEC", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
    ];

    fn answering(extra: &str) -> Result<HubConfig, ConfigError> {
        HubConfig::from_toml(
            &format!("{API}{ANSWERING}{extra}"),
            "hub.toml",
            &env_with(ANSWERING_ENV),
        )
    }

    #[test]
    fn accounts_answer_automatically_where_orders_expire_and_the_hub_can_call() {
        let hub = answering("").unwrap();
        let get = |p, id| hub.account(p, id).unwrap();
        let uber = get(Provider::Ubereats, "acme-uber");
        assert!(uber.auto_accept && uber.auto_reject && uber.can_answer());
        let api = uber.api.as_ref().unwrap();
        assert_eq!(api.answer_deadline, Duration::from_secs(690));
        assert_eq!(api.status_api, StatusApi::Standard);
        let je = get(Provider::Justeat, "acme-je");
        assert!(je.auto_accept && je.auto_reject);
        let api = je.api.as_ref().unwrap();
        assert_eq!(api.status_api, StatusApi::JustEatPartner);
        assert_eq!(api.answer_deadline, Duration::from_secs(300));
        assert!(api.token_url.is_none() && api.client_id.is_none());
        // Direct orders do not expire: the backend answers when it likes.
        let direct = get(Provider::Direct, "acme-direct");
        assert!(!direct.auto_accept && direct.auto_reject && direct.can_answer());
        assert_eq!(
            direct.status_url.as_ref().unwrap().as_str(),
            "https://pos.acme.example/orderhub/status"
        );
        // No API, nothing to call: both off.
        for (p, id) in [
            (Provider::Careem, "acme-careem"),
            (Provider::Talabat, "acme-talabat"),
        ] {
            let a = get(p, id);
            assert!(!a.auto_accept && !a.auto_reject && !a.can_answer(), "{id}");
        }
        assert_eq!(
            hub.status_sync.late_action_window,
            Duration::from_secs(3600)
        );
        assert_eq!(hub.status_sync.retry.max_deliver(), 75);
        assert!(hub.status_sync.per_order_ordering);
        assert!(hub.forwarder.per_order_ordering);
        assert_eq!(hub.forwarder.created_wait, Duration::from_secs(30));
    }

    #[test]
    fn answering_settings_fail_closed() {
        let err = |extra: &str| answering(extra).unwrap_err().to_string();
        let on_talabat = ANSWERING.replace(
            "id = \"acme-talabat\"\nprovider = \"talabat\"\ntenant = \"acme\"\nsecret_envs = [\"S\"]\n",
            "id = \"acme-talabat\"\nprovider = \"talabat\"\ntenant = \"acme\"\nsecret_envs = [\"S\"]\nauto_accept = true\n",
        );
        let e = HubConfig::from_toml(
            &format!("{API}{on_talabat}"),
            "hub.toml",
            &env_with(ANSWERING_ENV),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "hub config hub.toml: account acme-talabat.auto_accept: the hub cannot answer talabat for this account: it needs an [account.api]"
        );
        assert_eq!(
            err(
                "\n[[account]]\nid = \"x\"\nprovider = \"wolt\"\ntenant = \"acme\"\nsecret_envs = [\"S\"]\nstatus_url = \"https://x.example\"\n"
            ),
            "hub config hub.toml: account x.status_url: only direct accounts have a status_url (wolt answers go to its [account.api])"
        );
        assert_eq!(
            err(
                "\n[[account]]\nid = \"d2\"\nprovider = \"direct\"\ntenant = \"acme\"\nsecret_envs = [\"WHSEC\"]\nstatus_url = \"http://pos.acme.example/s\"\n"
            ),
            "hub config hub.toml: account d2.status_url: http://pos.acme.example/s would send credentials in clear text: use https:// (http:// only for an address in provider_api.allowed_private_destinations)"
        );
        assert_eq!(
            err(
                "\n[[account]]\nid = \"c2\"\nprovider = \"careem\"\ntenant = \"acme\"\nsecret_envs = [\"S\"]\ncurrency = \"JOD\"\n[account.api]\nbase_url = \"https://x.example\"\ntoken_url = \"https://x.example/t\"\nclient_id_env = \"S\"\nclient_secret_env = \"S\"\n"
            ),
            "hub config hub.toml: account c2.api: careem has no provider API to call"
        );
        let je = |api: &str| {
            format!(
                "\n[[account]]\nid = \"je2\"\nprovider = \"justeat\"\ntenant = \"acme\"\nsecret_envs = [\"S\"]\n[account.api]\nbase_url = \"https://x.example\"\n{api}"
            )
        };
        assert_eq!(
            err(&je("client_secret_env = \"S\"\nstatus_api = \"rest\"\n")),
            "hub config hub.toml: account je2.api.status_api: \"rest\" is not connect or partner"
        );
        assert_eq!(
            err(&je(
                "client_secret_env = \"S\"\ntoken_url = \"https://x.example/t\"\n"
            )),
            "hub config hub.toml: account je2.api.token_url: justeat's API takes a static key (client_secret_env), not a token from a token endpoint"
        );
        assert_eq!(
            err("\n[status_sync]\nlate_action_window = \"0s\"\n"),
            "hub config hub.toml: status_sync.late_action_window: must be at least 1s"
        );
        assert_eq!(
            err("\n[forwarder]\nmax_order_age = \"1m\"\ncreated_wait = \"1m\"\n"),
            "hub config hub.toml: forwarder.created_wait: must be below max_order_age: an event waiting for its order's created longer would go stale"
        );
        assert_eq!(
            err("\n[forwarder]\nper_order_ordering = \"yes\"\n")
                .split(':')
                .next(),
            Some("hub config hub.toml"),
        );
        let wolt_api = API.replace(
            "refresh_token_env = \"WOLT_REFRESH\"\n",
            "refresh_token_env = \"WOLT_REFRESH\"\nstatus_api = \"partner\"\n",
        );
        assert_eq!(
            api_err(&wolt_api),
            "hub config hub.toml: account acme-wolt.api.status_api: wolt has one status API; only Just Eat (connect or partner) and Glovo (legacy or integrations) accounts choose"
        );
    }

    /// A DoorDash, a Glovo and a Grab account with everything they take.
    const NEW_PROVIDERS: &str = r#"
[[account]]
id = "acme-dd"
provider = "doordash"
tenant = "acme"
secret_envs = ["S"]
[account.api]
base_url = "https://openapi.doordash.com/marketplace"
developer_id = "dev-1"
key_id = "key-1"
client_secret_env = "DD_SIGNING"

[[account]]
id = "acme-glovo"
provider = "glovo"
tenant = "acme"
secret_envs = ["S"]
[account.api]
base_url = "https://api.glovoapp.com"
client_secret_env = "GLOVO_TOKEN"

[[account]]
id = "acme-grab"
provider = "grab"
tenant = "acme"
secret_envs = ["GRAB_KEY"]
[account.token_endpoint]
client_id = "grab-client"
client_secret_envs = ["GRAB_SECRET", "GRAB_SECRET_NEXT"]
[account.api]
base_url = "https://partner-api.grab.com/grabfood"
token_url = "https://api.grab.com/grabid/v1/oauth2/token"
client_id_env = "GRAB_API_ID"
client_secret_env = "GRAB_API_SECRET"
"#;

    const NEW_PROVIDERS_ENV: &[(&str, &str)] = &[
        ("S", "webhook-secret"),
        ("UBER_ID", "uber-client"),
        ("UBER_SECRET", "uber-secret"),
        ("WOLT_ID", "wolt-client"),
        ("WOLT_SECRET", "wolt-secret"),
        ("WOLT_REFRESH", "wolt-refresh"),
        ("DD_SIGNING", "c2VjcmV0Pz4"),
        ("GLOVO_TOKEN", "glovo-token"),
        ("GRAB_KEY", "grab-token-signing-key-of-32-bytes-or-more"),
        ("GRAB_SECRET", "grab-client-secret-1"),
        ("GRAB_SECRET_NEXT", "grab-client-secret-2"),
        ("GRAB_API_ID", "grab-api-id"),
        ("GRAB_API_SECRET", "grab-api-secret"),
    ];

    fn new_providers(text: &str) -> Result<HubConfig, ConfigError> {
        HubConfig::from_toml(
            &format!("{API}{text}"),
            "hub.toml",
            &env_with(NEW_PROVIDERS_ENV),
        )
    }

    #[test]
    fn doordash_glovo_and_grab_accounts_read_with_their_defaults() {
        let hub = new_providers(NEW_PROVIDERS).unwrap();
        let dd = hub.account(Provider::Doordash, "acme-dd").unwrap();
        let api = dd.api.as_ref().unwrap();
        assert_eq!(api.developer_id.as_deref(), Some("dev-1"));
        assert_eq!(api.key_id.as_deref(), Some("key-1"));
        assert!(api.token_url.is_none() && api.client_id.is_none());
        assert_eq!(api.answer_deadline, Duration::from_secs(180));
        assert!(dd.auto_accept && dd.auto_reject && dd.token_endpoint.is_none());

        let glovo = hub.account(Provider::Glovo, "acme-glovo").unwrap();
        let api = glovo.api.as_ref().unwrap();
        assert_eq!(api.status_api, StatusApi::GlovoLegacy);
        assert_eq!(api.client_secret.expose_secret(), "glovo-token");
        // Glovo has no reject API: nothing to auto-reject with.
        assert!(glovo.auto_accept && !glovo.auto_reject);

        let grab = hub.account(Provider::Grab, "acme-grab").unwrap();
        let te = grab.token_endpoint.as_ref().unwrap();
        assert_eq!(te.client_id, "grab-client");
        assert_eq!(te.client_secrets.len(), 2);
        assert_eq!(te.token_lifetime, DEFAULT_ISSUED_TOKEN_LIFETIME);
        assert_eq!(
            te.rate_limit,
            RateLimit {
                per_second: 1,
                burst: 10
            }
        );
        let api = grab.api.as_ref().unwrap();
        assert_eq!(api.scope.as_deref(), Some("food.partner_api"));
        assert!(grab.auto_accept && grab.auto_reject);
        let shown = format!("{hub:?}{}", hub.summary());
        for secret in ["grab-client-secret-1", "glovo-token", "c2VjcmV0Pz4"] {
            assert!(!shown.contains(secret), "{secret} shown");
        }
    }

    #[test]
    fn doordash_glovo_and_grab_settings_fail_closed() {
        let err = |from: &str, to: &str| {
            assert!(NEW_PROVIDERS.contains(from), "{from}");
            new_providers(&NEW_PROVIDERS.replace(from, to))
                .unwrap_err()
                .to_string()
                .replace("hub config hub.toml: ", "")
        };
        let cases = [
            (
                "key_id = \"key-1\"\n",
                "",
                "account acme-dd.api.key_id: is required for a doordash account's JWT",
            ),
            (
                "developer_id = \"dev-1\"",
                "developer_id = \" \"",
                "account acme-dd.api.developer_id: must be visible ASCII, not empty",
            ),
            (
                "client_secret_env = \"DD_SIGNING\"",
                "client_secret_env = \"GLOVO_TOKEN\"",
                "account acme-dd.api.client_secret_env: a DoorDash signing secret is base64url (as the developer portal shows it)",
            ),
            (
                "base_url = \"https://openapi.doordash.com/marketplace\"",
                "base_url = \"https://openapi.doordash.com/marketplace\"\ntoken_url = \"https://x.example/t\"",
                "account acme-dd.api.token_url: doordash's API takes a JWT the hub signs itself (developer_id, key_id, client_secret_env), not a token from a token endpoint",
            ),
            (
                "client_secret_env = \"GLOVO_TOKEN\"",
                "client_secret_env = \"GLOVO_TOKEN\"\nstatus_api = \"v9\"",
                "account acme-glovo.api.status_api: \"v9\" is not legacy or integrations",
            ),
            (
                "client_secret_env = \"GLOVO_TOKEN\"",
                "client_secret_env = \"GLOVO_TOKEN\"\nclient_id_env = \"S\"",
                "account acme-glovo.api.client_id_env: glovo's API takes a static key (client_secret_env), no client id",
            ),
            (
                "client_secret_env = \"GLOVO_TOKEN\"",
                "client_secret_env = \"GLOVO_TOKEN\"\nkey_id = \"k\"",
                "account acme-glovo.api.key_id: only doordash accounts sign their own JWT (glovo has no key_id)",
            ),
            (
                "provider = \"glovo\"\ntenant = \"acme\"\n",
                "provider = \"glovo\"\ntenant = \"acme\"\nauto_reject = true\n",
                "account acme-glovo.auto_reject: glovo has no API to reject an order",
            ),
            (
                "secret_envs = [\"GRAB_KEY\"]",
                "secret_envs = [\"S\"]",
                "account acme-grab.secret_envs[0]: a grab account's secret signs the tokens the hub issues: at least 32 bytes (e.g. openssl rand -base64 32)",
            ),
            (
                "[account.token_endpoint]\nclient_id = \"grab-client\"\nclient_secret_envs = [\"GRAB_SECRET\", \"GRAB_SECRET_NEXT\"]\n",
                "",
                "account acme-grab.token_endpoint: a grab account needs [account.token_endpoint] (the client credentials Grab presents for its token)",
            ),
            (
                "client_secret_envs = [\"GRAB_SECRET\", \"GRAB_SECRET_NEXT\"]",
                "client_secret_envs = []",
                "account acme-grab.token_endpoint.client_secret_envs: needs at least one client secret (client_secret_envs or client_secret_files)",
            ),
            (
                "client_secret_envs = [\"GRAB_SECRET\", \"GRAB_SECRET_NEXT\"]",
                "client_secret_envs = [\"GLOVO_TOKEN\"]",
                "account acme-grab.token_endpoint.client_secret_envs[0]: a client secret the hub issues must be at least 16 bytes",
            ),
            (
                "client_id = \"grab-client\"",
                "client_id = \"grab client\"",
                "account acme-grab.token_endpoint.client_id: must be 1 to 256 visible ASCII characters",
            ),
            (
                "client_id = \"grab-client\"",
                "client_id = \"grab-client\"\ntoken_lifetime = \"30s\"",
                "account acme-grab.token_endpoint.token_lifetime: must be between 1m and 24h",
            ),
            (
                "id = \"acme-glovo\"\nprovider = \"glovo\"\ntenant = \"acme\"\nsecret_envs = [\"S\"]\n",
                "id = \"acme-glovo\"\nprovider = \"glovo\"\ntenant = \"acme\"\nsecret_envs = [\"S\"]\n[account.token_endpoint]\nclient_id = \"c\"\nclient_secret_envs = [\"GRAB_SECRET\"]\n",
                "account acme-glovo.token_endpoint: glovo does not obtain its token from the hub; only grab accounts have one",
            ),
        ];
        for (from, to, want) in cases {
            assert_eq!(err(from, to), want, "{to}");
        }
    }
}
