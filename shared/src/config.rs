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

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

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
    pub backend_url: String,
    /// Sent as `X-Auth`.
    pub backend_key: Option<SecretString>,
    /// Standard Webhooks secret the backend verifies (`whsec_...`).
    pub signing_secret: Option<SecretString>,
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

/// A tenant's circuit breaker: after `failures` transient failures in a
/// row the backend gets no request for `cooldown` (doubling after each
/// failed probe, up to `max_cooldown`); then one probe decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    pub failures: u32,
    pub cooldown: Duration,
    pub max_cooldown: Duration,
}

/// Forwarder defaults (`[forwarder]`), which tenants may override.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwarderSettings {
    /// An order older than this (since the ingress accepted it) is
    /// dead-lettered as stale instead of delivered, breaker or not.
    pub max_order_age: Duration,
    pub request_timeout: Duration,
    pub breaker: BreakerSettings,
}

impl Default for ForwarderSettings {
    fn default() -> Self {
        ForwarderSettings {
            max_order_age: Duration::from_secs(24 * 3600),
            request_timeout: Duration::from_secs(10),
            breaker: BreakerSettings {
                failures: 5,
                cooldown: Duration::from_secs(30),
                max_cooldown: Duration::from_secs(300),
            },
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
    /// CIDRs allowed to call; empty means any.
    pub allowed_ips: Vec<String>,
    /// For providers whose payloads carry no currency.
    pub currency: Option<String>,
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
    pub jwt_algorithm: Option<String>,
    /// Accepted clock difference for providers that sign a timestamp.
    pub timestamp_tolerance: Option<Duration>,
    /// Requests per second for this account (on top of the provider's limit).
    pub rate_limit: Option<RateLimit>,
}

/// A token bucket: a sustained rate and a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

/// Ingress settings that live in the hub file (flags hold the addresses).
#[derive(Debug, Clone, PartialEq)]
pub struct IngressSettings {
    /// Largest accepted body; larger gets 413 before it is read.
    pub max_body_bytes: u64,
    /// Peers whose `X-Forwarded-For` is believed (CIDRs).
    pub trusted_proxies: Vec<String>,
    /// How long a webhook may wait for JetStream's ack before the answer is 503.
    pub publish_timeout: Duration,
    /// Per provider name, or `default` for the others.
    pub rate_limits: BTreeMap<String, RateLimit>,
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
            rate_limits: BTreeMap::new(),
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
    /// Per stream name (`WEBHOOKS`, `ORDERS`, `DLQ`, `ADVISORIES`).
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
                "backend_url": t.backend_url,
                "backend_key": t.backend_key.as_ref().map(|_| "[redacted]"),
                "signing_secret": t.signing_secret.as_ref().map(|_| "[redacted]"),
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForwarder {
    #[serde(default, with = "humantime_serde")]
    max_order_age: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    request_timeout: Option<Duration>,
    breaker_failures: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    breaker_cooldown: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    breaker_max_cooldown: Option<Duration>,
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
    #[serde(default)]
    require_product_mapping: bool,
    #[serde(default)]
    require_branch_mapping: bool,
    #[serde(default, with = "humantime_serde")]
    request_timeout: Option<Duration>,
    breaker_failures: Option<u32>,
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
    rate_limit: Option<RateLimit>,
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
    fn validate(
        self,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<HubConfig, ConfigError> {
        let check = Check { origin };
        let defaults = ForwarderSettings::default();
        let forwarder = ForwarderSettings {
            max_order_age: self
                .forwarder
                .max_order_age
                .unwrap_or(defaults.max_order_age),
            request_timeout: self
                .forwarder
                .request_timeout
                .unwrap_or(defaults.request_timeout),
            breaker: breaker_of(
                &check,
                "forwarder",
                defaults.breaker,
                self.forwarder.breaker_failures,
                self.forwarder.breaker_cooldown,
                self.forwarder.breaker_max_cooldown,
            )?,
        };
        if forwarder.request_timeout.is_zero() {
            return Err(check.err("forwarder.request_timeout", "must be above 0"));
        }
        if forwarder.max_order_age < Duration::from_secs(1) {
            return Err(check.err("forwarder.max_order_age", "must be at least 1s"));
        }

        let mut tenants = Vec::with_capacity(self.tenant.len());
        let mut tenant_ids = BTreeSet::new();
        for (i, t) in self.tenant.into_iter().enumerate() {
            let at = |f: &str| format!("tenant[{i}].{f}");
            check.token(at("id"), &t.id)?;
            if !tenant_ids.insert(t.id.clone()) {
                return Err(check.err(at("id"), format!("duplicate tenant id {:?}", t.id)));
            }
            match reqwest_like_url_ok(&t.backend_url) {
                Ok(()) => {}
                Err(msg) => return Err(check.err(at("backend_url"), msg)),
            }
            if t.backend_key_env.is_some() && t.backend_key_file.is_some() {
                return Err(check.err(
                    at("backend_key_env"),
                    "set backend_key_env or backend_key_file, not both",
                ));
            }
            if t.signing_secret_env.is_some() && t.signing_secret_file.is_some() {
                return Err(check.err(
                    at("signing_secret_env"),
                    "set signing_secret_env or signing_secret_file, not both",
                ));
            }
            let backend_key = read_secret(
                &check,
                at(if t.backend_key_file.is_some() {
                    "backend_key_file"
                } else {
                    "backend_key_env"
                }),
                t.backend_key_env.as_deref(),
                t.backend_key_file.as_deref(),
                env,
            )?;
            let signing_secret = read_secret(
                &check,
                at(if t.signing_secret_file.is_some() {
                    "signing_secret_file"
                } else {
                    "signing_secret_env"
                }),
                t.signing_secret_env.as_deref(),
                t.signing_secret_file.as_deref(),
                env,
            )?;
            if let Some(s) = &signing_secret
                && !s.expose_secret().starts_with("whsec_")
            {
                return Err(check.err(
                    at("signing_secret_env"),
                    "the signing secret must be a Standard Webhooks secret (whsec_...)",
                ));
            }
            let request_timeout = t.request_timeout.unwrap_or(forwarder.request_timeout);
            if request_timeout.is_zero() {
                return Err(check.err(at("request_timeout"), "must be above 0"));
            }
            let breaker = breaker_of(
                &check,
                &format!("tenant[{i}]"),
                forwarder.breaker,
                t.breaker_failures,
                t.breaker_cooldown,
                t.breaker_max_cooldown,
            )?;
            tenants.push(Tenant {
                request_timeout,
                breaker,
                id: t.id,
                backend_url: t.backend_url,
                backend_key,
                signing_secret,
                require_product_mapping: t.require_product_mapping,
                require_branch_mapping: t.require_branch_mapping,
            });
        }

        let mut accounts = Vec::with_capacity(self.account.len());
        let mut account_keys = BTreeSet::new();
        let mut defaults = BTreeSet::new();
        for (i, a) in self.account.into_iter().enumerate() {
            let at = |f: &str| format!("account[{i}].{f}");
            check.token(at("id"), &a.id)?;
            let provider = Provider::from_str(&a.provider)
                .map_err(|e| check.err(at("provider"), e.to_string()))?;
            if !tenant_ids.contains(&a.tenant) {
                return Err(check.err(at("tenant"), format!("unknown tenant {:?}", a.tenant)));
            }
            if !account_keys.insert((provider, a.id.clone())) {
                return Err(check.err(
                    at("id"),
                    format!("duplicate account {:?} for provider {provider}", a.id),
                ));
            }
            if a.default && !defaults.insert(provider) {
                return Err(check.err(
                    at("default"),
                    format!("provider {provider} already has a default account"),
                ));
            }
            if a.secret_envs.is_empty() && a.secret_files.is_empty() {
                return Err(check.err(
                    at("secret_envs"),
                    "an account needs at least one secret (secret_envs or secret_files)",
                ));
            }
            let mut secrets = Vec::new();
            for (k, name) in a.secret_envs.iter().enumerate() {
                if let Some(s) = read_secret(
                    &check,
                    at(&format!("secret_envs[{k}]")),
                    Some(name),
                    None,
                    env,
                )? {
                    secrets.push(s);
                }
            }
            for (k, path) in a.secret_files.iter().enumerate() {
                if let Some(s) = read_secret(
                    &check,
                    at(&format!("secret_files[{k}]")),
                    None,
                    Some(path),
                    env,
                )? {
                    secrets.push(s);
                }
            }
            for (k, cidr) in a.allowed_ips.iter().enumerate() {
                if parse_cidr(cidr).is_none() {
                    return Err(check.err(
                        at(&format!("allowed_ips[{k}]")),
                        format!("{cidr:?} is not an IP address or CIDR"),
                    ));
                }
            }
            if let Some(c) = &a.currency
                && !(c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()))
            {
                return Err(check.err(
                    at("currency"),
                    format!("{c:?} is not an ISO 4217 code (three capital letters)"),
                ));
            }
            if let Some(c) = &a.country
                && !(c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()))
            {
                return Err(check.err(
                    at("country"),
                    format!("{c:?} is not an ISO 3166-1 alpha-2 code (two capital letters)"),
                ));
            }
            if let Some(alg) = &a.jwt_algorithm
                && !matches!(alg.as_str(), "HS256" | "HS384" | "HS512")
            {
                return Err(check.err(
                    at("jwt_algorithm"),
                    format!("{alg:?} is not HS256, HS384 or HS512"),
                ));
            }
            if let Some(r) = &a.rate_limit {
                check_rate(&check, at("rate_limit"), r)?;
            }
            accounts.push(Account {
                id: a.id,
                provider,
                tenant: a.tenant,
                secrets,
                allowed_ips: a.allowed_ips,
                currency: a.currency,
                branches: a.branches,
                products: a.products,
                default: a.default,
                country: a.country,
                jwt_algorithm: a.jwt_algorithm,
                timestamp_tolerance: a.timestamp_tolerance,
                rate_limit: a.rate_limit,
            });
        }

        let mut delays = Vec::with_capacity(self.retry.schedule.len());
        for (k, s) in self.retry.schedule.iter().enumerate() {
            let d = humantime::parse_duration(s)
                .map_err(|e| check.err(format!("retry.schedule[{k}]"), format!("{s:?}: {e}")))?;
            delays.push(d);
        }
        let retry = RetrySchedule::new(
            delays,
            self.retry.max_deliver,
            self.retry.jitter,
            self.retry.max_hint,
        )
        .map_err(|e| check.err(format!("retry.{}", e.field), e.message))?;

        check_storage(&check, "streams.storage", &self.streams.storage)?;
        for (name, o) in &self.streams.overrides {
            if !crate::streams::STREAM_NAMES.contains(&name.as_str()) {
                return Err(check.err(
                    format!("streams.overrides.{name}"),
                    format!(
                        "unknown stream (known: {})",
                        crate::streams::STREAM_NAMES.join(", ")
                    ),
                ));
            }
            check_storage(
                &check,
                &format!("streams.overrides.{name}.storage"),
                &o.storage,
            )?;
            if let Some(r) = &o.retention
                && !matches!(r.as_str(), "limits" | "workqueue" | "interest")
            {
                return Err(check.err(
                    format!("streams.overrides.{name}.retention"),
                    format!("{r:?} is not limits, workqueue or interest"),
                ));
            }
        }
        for (name, c) in &self.streams.consumers {
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
        for (field, r) in std::iter::once(("streams.replicas".to_owned(), self.streams.replicas))
            .chain(
                self.streams
                    .overrides
                    .iter()
                    .map(|(n, o)| (format!("streams.overrides.{n}.replicas"), o.replicas)),
            )
        {
            if let Some(r) = r
                && !(1..=5).contains(&r)
            {
                return Err(check.err(field, format!("{r} replicas: JetStream allows 1 to 5")));
            }
        }

        let mut ingress = IngressSettings::default();
        if let Some(m) = self.ingress.max_body_bytes {
            if m == 0 {
                return Err(check.err("ingress.max_body_bytes", "must be above 0"));
            }
            ingress.max_body_bytes = m;
        }
        for (k, cidr) in self.ingress.trusted_proxies.iter().enumerate() {
            if parse_cidr(cidr).is_none() {
                return Err(check.err(
                    format!("ingress.trusted_proxies[{k}]"),
                    format!("{cidr:?} is not an IP address or CIDR"),
                ));
            }
        }
        ingress.trusted_proxies = self.ingress.trusted_proxies;
        if let Some(t) = self.ingress.publish_timeout {
            ingress.publish_timeout = t;
        }
        for (name, r) in &self.ingress.rate_limits {
            if name != "default" && Provider::from_str(name).is_err() {
                return Err(check.err(
                    format!("ingress.rate_limits.{name}"),
                    "not a provider name or default",
                ));
            }
            check_rate(&check, format!("ingress.rate_limits.{name}"), r)?;
        }
        ingress.rate_limits = self.ingress.rate_limits;
        if let Some(p) = self.ingress.trace_sample_percent {
            if p > 100 {
                return Err(check.err("ingress.trace_sample_percent", "must be 0 to 100"));
            }
            ingress.trace_sample_percent = p;
        }

        Ok(HubConfig {
            tenants,
            accounts,
            retry,
            ingress,
            forwarder,
            streams: StreamSettings {
                replicas: self.streams.replicas,
                storage: self.streams.storage,
                overrides: self.streams.overrides,
                consumers: self.streams.consumers,
            },
        })
    }
}

fn breaker_of(
    check: &Check<'_>,
    at: &str,
    base: BreakerSettings,
    failures: Option<u32>,
    cooldown: Option<Duration>,
    max_cooldown: Option<Duration>,
) -> Result<BreakerSettings, ConfigError> {
    let b = BreakerSettings {
        failures: failures.unwrap_or(base.failures),
        cooldown: cooldown.unwrap_or(base.cooldown),
        max_cooldown: max_cooldown.unwrap_or(base.max_cooldown),
    };
    if b.failures == 0 {
        return Err(check.err(format!("{at}.breaker_failures"), "must be at least 1"));
    }
    if b.cooldown.is_zero() {
        return Err(check.err(format!("{at}.breaker_cooldown"), "must be above 0"));
    }
    if b.max_cooldown < b.cooldown {
        return Err(check.err(
            format!("{at}.breaker_max_cooldown"),
            "must be at least breaker_cooldown",
        ));
    }
    Ok(b)
}

fn check_rate(check: &Check<'_>, field: String, r: &RateLimit) -> Result<(), ConfigError> {
    if r.per_second == 0 || r.burst == 0 {
        return Err(check.err(field, "per_second and burst must be above 0"));
    }
    Ok(())
}

/// The backend URL must be absolute http(s); anything else fails at start
/// rather than on the first order.
fn reqwest_like_url_ok(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("{url:?} is not an http:// or https:// URL"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    Ok(())
}

/// Parses `10.0.0.0/8`, `2001:db8::/32` or a bare address (a /32 or /128).
pub fn parse_cidr(s: &str) -> Option<(std::net::IpAddr, u8)> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: std::net::IpAddr = addr.trim().parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l.trim().parse::<u8>().ok().filter(|l| *l <= max)?,
        None => max,
    };
    Some((ip, len))
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
            "hub config hub.toml: account[0].secret_envs[1]: environment variable ACME_CAREEM_SECRET_NEXT is not set or empty"
        );
    }

    #[test]
    fn an_unknown_provider_is_named() {
        let e = err_of(&GOOD.replace("provider = \"careem\"", "provider = \"carem\""));
        assert_eq!(
            e,
            "hub config hub.toml: account[0].provider: unknown provider \"carem\" (known: careem, talabat, deliveroo, ubereats, wolt, justeat, direct)"
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
                "account[0].tenant: unknown tenant \"acne\"",
            ),
            (
                GOOD.replace("\"10.0.0.0/8\"", "\"10.0.0.0/33\""),
                "account[0].allowed_ips[0]: \"10.0.0.0/33\" is not an IP address or CIDR",
            ),
            (
                GOOD.replace("currency = \"JOD\"", "currency = \"jod\""),
                "account[0].currency: \"jod\" is not an ISO 4217 code (three capital letters)",
            ),
            (
                GOOD.replace("max_deliver = 10", "max_deliver = 0"),
                "retry.max_deliver: must be at least 1",
            ),
            (
                GOOD.replace("http://127.0.0.1:3001", "ftp://x"),
                "tenant[0].backend_url: \"ftp://x/api/v1/orders\" is not an http:// or https:// URL",
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
                "account[0].country: \"jordan\" is not an ISO 3166-1 alpha-2 code (two capital letters)",
            ),
            (
                GOOD.replace(
                    "currency = \"JOD\"",
                    "currency = \"JOD\"\njwt_algorithm = \"none\"",
                ),
                "account[0].jwt_algorithm: \"none\" is not HS256, HS384 or HS512",
            ),
            (
                GOOD.replace(
                    "currency = \"JOD\"",
                    "currency = \"JOD\"\nrate_limit = { per_second = 0, burst = 5 }",
                ),
                "account[0].rate_limit: per_second and burst must be above 0",
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
                "tenant[0].breaker_max_cooldown: must be at least breaker_cooldown",
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
            (
                format!("{GOOD}\n[streams.overrides.ORDRES]\nmax_age = \"1d\"\n"),
                "streams.overrides.ORDRES: unknown stream (known: WEBHOOKS, ORDERS, DLQ, ADVISORIES)",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(err_of(&text), format!("hub config hub.toml: {want}"));
        }
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
            e.contains("account[0].secret_files[0]: cannot read secret file"),
            "{e}"
        );
    }

    #[test]
    fn the_embedded_default_is_valid_with_the_example_environment() {
        let hub = HubConfig::from_toml(EMBEDDED_HUB_CONFIG, "(embedded default)", &|_| {
            Some("whsec_ZXhhbXBsZS1zZWNyZXQtZG8tbm90LXVzZQ==".to_owned())
        })
        .unwrap();
        for p in Provider::ALL {
            assert!(
                hub.default_account(p).is_some(),
                "no default account for {p}"
            );
        }
    }
}
