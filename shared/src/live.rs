//! The live hub config: what every stage reads its tenants, accounts,
//! secrets and mappings from while it runs, and how a new config replaces
//! it without a restart.
//!
//! # Contract
//! - [`LiveConfig::load`] hands out the current `Arc<HubConfig>` without a
//!   lock (`arc_swap`); a handler loads it once per message, so one message
//!   sees one config from start to end and the next message sees a reload.
//! - [`LiveConfig::reload`] takes a candidate that was loaded and validated
//!   exactly like at start (the same `HubConfig` loader). An invalid one is
//!   refused whole: the last good config keeps serving, the error (origin,
//!   field or row, never a secret) is logged, counted in
//!   `<stage>_config_reload_failures_total`, `<stage>_config_reload_ok` is 0
//!   and `/ready` shows it under `config`. The stage stays ready: it still
//!   serves the last good config, and an unready fleet would stop orders
//!   for a typo in one row.
//! - What only a restart can apply ([`RESTART_ONLY`]: stream settings, the
//!   retry schedules, the ingress listener's limits, the outbound policy
//!   and the order age limit) is refused on its own: a reload that changes
//!   it applies the rest (tenants, accounts, secrets, branch and product
//!   mappings) with the running values of those sections, and reports the
//!   refused fields like a failed reload until a reload no longer differs.
//! - Each applied reload bumps the generation and wakes
//!   [`LiveConfig::subscribe`]rs, so parts that precompute from the config
//!   (HTTP clients, breakers, verifiers, pollers) rebuild.
//! - Sources: the TOML file (`HUB_CONFIG`), reloaded on SIGHUP
//!   ([`reload_file_on_sighup`]); or PostgreSQL (`CONFIG_SOURCE=postgres`,
//!   `crate::config_db`), reloaded on NOTIFY and a periodic check.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{ConfigError, HubConfig};

/// Where the hub config comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ConfigSource {
    /// `HUB_CONFIG` (or the embedded default); SIGHUP reloads the file
    #[default]
    File,
    /// The hub's tables in `DATABASE_URL`; changes apply on NOTIFY or the
    /// periodic check
    Postgres,
}

/// The config source flags of a stage binary (flattened beside
/// [`crate::config::CommonArgs`]).
#[derive(Debug, Clone, clap::Args)]
pub struct SourceArgs {
    /// Where the hub config comes from: file (HUB_CONFIG or the embedded
    /// default) or postgres (the hub's tables in DATABASE_URL)
    #[arg(long, env = "CONFIG_SOURCE", value_enum, default_value = "file")]
    pub config_source: ConfigSource,

    /// PostgreSQL URL of the hub config tables (CONFIG_SOURCE=postgres)
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_parser = secret_arg)]
    pub database_url: Option<secrecy::SecretString>,

    /// How often the stage compares the tables' version with the one it
    /// runs, catching a lost notification (CONFIG_SOURCE=postgres)
    #[arg(long, env = "CONFIG_POLL_INTERVAL_MS", default_value_t = 30_000)]
    pub config_poll_interval_ms: u64,
}

fn secret_arg(s: &str) -> Result<secrecy::SecretString, std::convert::Infallible> {
    Ok(secrecy::SecretString::from(s.to_owned()))
}

/// Sections and fields that only a restart applies; a reload that changes
/// one keeps the running value and reports it.
pub const RESTART_ONLY: [&str; 8] = [
    "retry",
    "streams",
    "ingress",
    "forwarder.max_order_age",
    "forwarder.allowed_private_destinations",
    "provider_api",
    "fetcher",
    "status_sync",
];

/// What [`LiveConfig::reload`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// The whole candidate now serves, as `generation`.
    Applied { generation: u64 },
    /// Everything but the restart-only `refused` fields now serves.
    Partly {
        generation: u64,
        refused: Vec<&'static str>,
    },
}

/// Why a reload was refused (the last good config keeps serving).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The candidate does not validate.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// The source could not be read (the database is unreachable...).
    #[error("{origin}: {message}")]
    Source { origin: String, message: String },
}

struct Status {
    ok: bool,
    error: Option<String>,
    origin: String,
}

struct Inner {
    current: ArcSwap<HubConfig>,
    generation: watch::Sender<u64>,
    status: Mutex<Status>,
    failures: Counter,
    reloads: Counter,
    ok: Gauge,
    generation_gauge: Gauge,
    /// Reloads run one at a time (SIGHUP and NOTIFY may race).
    reloading: tokio::sync::Mutex<()>,
}

/// The stage's current hub config; clones share it.
#[derive(Clone)]
pub struct LiveConfig(Arc<Inner>);

impl std::fmt::Debug for LiveConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveConfig")
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

/// What a stage precomputes from the config (verifiers, clients,
/// breakers, credentials), tagged with the generation it was built from.
pub trait Generational {
    fn generation(&self) -> u64;
}

/// A value derived from the live config and rebuilt at most once per
/// reload: readers take the current one without a lock; the first reader
/// after a reload rebuilds it (the others wait for that one build, then
/// take it). `build` gets the config, its generation and the previous
/// value (to carry state over, e.g. unchanged breakers).
pub struct Derived<T> {
    current: ArcSwap<T>,
    rebuilding: Mutex<()>,
}

impl<T: Generational> Derived<T> {
    pub fn new(initial: T) -> Self {
        Derived {
            current: ArcSwap::from_pointee(initial),
            rebuilding: Mutex::new(()),
        }
    }

    /// The value as last built, without checking for a reload.
    pub fn peek(&self) -> Arc<T> {
        self.current.load_full()
    }

    /// The value for the config serving now.
    pub fn get(
        &self,
        live: &LiveConfig,
        build: impl FnOnce(Arc<HubConfig>, u64, &T) -> T,
    ) -> Arc<T> {
        let current = self.current.load_full();
        if current.generation() == live.generation() {
            return current;
        }
        let _one = self.rebuilding.lock().expect("rebuild lock");
        let current = self.current.load_full();
        let generation = live.generation();
        if current.generation() == generation {
            return current;
        }
        let next = Arc::new(build(live.load(), generation, &current));
        self.current.store(next.clone());
        next
    }
}

impl LiveConfig {
    /// Starts at generation 1 with the config the stage started with.
    pub fn new(initial: HubConfig, origin: &str) -> Self {
        let (generation, _) = watch::channel(1);
        let ok = Gauge::default();
        ok.set(1);
        let generation_gauge = Gauge::default();
        generation_gauge.set(1);
        LiveConfig(Arc::new(Inner {
            current: ArcSwap::from_pointee(initial),
            generation,
            status: Mutex::new(Status {
                ok: true,
                error: None,
                origin: origin.to_owned(),
            }),
            failures: Counter::default(),
            reloads: Counter::default(),
            ok,
            generation_gauge,
            reloading: tokio::sync::Mutex::new(()),
        }))
    }

    /// The config serving now.
    pub fn load(&self) -> Arc<HubConfig> {
        self.0.current.load_full()
    }

    /// Bumped by every applied reload.
    pub fn generation(&self) -> u64 {
        *self.0.generation.borrow()
    }

    /// Wakes on every applied reload (the value is the generation).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.generation.subscribe()
    }

    /// Registers `config_reload_failures`, `config_reloads`,
    /// `config_reload_ok` and `config_generation` (the registry carries the
    /// stage's prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "config_reload_failures",
            "Hub config reloads refused (invalid, unreadable, or changing a restart-only setting)",
            self.0.failures.clone(),
        );
        registry.register(
            "config_reloads",
            "Hub config reloads applied",
            self.0.reloads.clone(),
        );
        registry.register(
            "config_reload_ok",
            "1 when the last hub config reload applied fully, 0 when it was refused",
            self.0.ok.clone(),
        );
        registry.register(
            "config_generation",
            "The generation of the hub config serving (1 at start, +1 per applied reload)",
            self.0.generation_gauge.clone(),
        );
    }

    /// The `/ready` detail: `{"ok", "error", "generation", "source"}`.
    pub fn detail(&self) -> serde_json::Value {
        let status = self.0.status.lock().expect("config status lock");
        serde_json::json!({
            "ok": status.ok,
            "error": status.error,
            "generation": self.generation(),
            "source": status.origin,
        })
    }

    /// Replaces the config with `candidate` (loaded and validated by the
    /// same loader as at start), keeping what only a restart applies.
    /// `Err`: nothing changed.
    pub async fn reload(
        &self,
        origin: &str,
        candidate: Result<HubConfig, ReloadError>,
    ) -> Result<Reloaded, ReloadError> {
        let _one = self.0.reloading.lock().await;
        self.apply(origin, candidate)
    }

    fn apply(
        &self,
        origin: &str,
        candidate: Result<HubConfig, ReloadError>,
    ) -> Result<Reloaded, ReloadError> {
        let new = match candidate {
            Ok(c) => c,
            Err(e) => {
                self.refused(origin, e.to_string());
                return Err(e);
            }
        };
        let old = self.load();
        let (merged, refused) = keep_restart_only(&old, new);
        let generation = self.generation() + 1;
        self.0.current.store(Arc::new(merged));
        self.0.generation.send_replace(generation);
        self.0.generation_gauge.set(generation as i64);
        self.0.reloads.inc();
        if refused.is_empty() {
            info!(origin, generation, "hub config reloaded");
            self.0.ok.set(1);
            *self.0.status.lock().expect("config status lock") = Status {
                ok: true,
                error: None,
                origin: origin.to_owned(),
            };
            Ok(Reloaded::Applied { generation })
        } else {
            let message = restart_only_message(&refused);
            warn!(origin, generation, error = %message, "hub config reloaded in part");
            self.0.failures.inc();
            self.0.ok.set(0);
            *self.0.status.lock().expect("config status lock") = Status {
                ok: false,
                error: Some(format!("{origin}: {message}")),
                origin: origin.to_owned(),
            };
            Ok(Reloaded::Partly {
                generation,
                refused,
            })
        }
    }

    fn refused(&self, origin: &str, error: String) {
        warn!(origin, error = %error, "hub config reload refused; the last good config keeps serving");
        self.0.failures.inc();
        self.0.ok.set(0);
        let mut status = self.0.status.lock().expect("config status lock");
        status.ok = false;
        status.error = Some(error);
    }

    /// Reads the file again (`None`: the embedded default, which never
    /// changes) and reloads it.
    pub async fn reload_file(&self, path: Option<&Path>) -> Result<Reloaded, ReloadError> {
        let origin = file_origin(path);
        let candidate = HubConfig::load(path).map_err(ReloadError::from);
        self.reload(&origin, candidate).await
    }
}

/// How a file source is named in logs and `/ready`.
pub fn file_origin(path: Option<&Path>) -> String {
    match path {
        Some(p) => format!("file {}", p.display()),
        None => "(embedded default)".to_owned(),
    }
}

/// The error text for refused restart-only fields.
pub fn restart_only_message(refused: &[&'static str]) -> String {
    format!(
        "{} changed: only a restart applies it (running values kept; the rest applied)",
        refused.join(", ")
    )
}

/// `new` with the running `old` values of what only a restart applies, and
/// the names of those that differed.
pub fn keep_restart_only(old: &HubConfig, mut new: HubConfig) -> (HubConfig, Vec<&'static str>) {
    let mut refused = Vec::new();
    if old.retry != new.retry {
        refused.push("retry");
        new.retry = old.retry.clone();
    }
    if old.streams != new.streams {
        refused.push("streams");
        new.streams = old.streams.clone();
    }
    if old.ingress != new.ingress {
        refused.push("ingress");
        new.ingress = old.ingress.clone();
    }
    // The forwarder's request timeout and breaker defaults only feed each
    // tenant's own values, which reload.
    if old.forwarder.max_order_age != new.forwarder.max_order_age {
        refused.push("forwarder.max_order_age");
        new.forwarder.max_order_age = old.forwarder.max_order_age;
    }
    if old.forwarder.allowed_private_destinations != new.forwarder.allowed_private_destinations {
        refused.push("forwarder.allowed_private_destinations");
        new.forwarder.allowed_private_destinations =
            old.forwarder.allowed_private_destinations.clone();
    }
    if old.provider_api != new.provider_api {
        refused.push("provider_api");
        new.provider_api = old.provider_api.clone();
    }
    // No PartialEq on these (no secret in them; Debug shows every field).
    if format!("{:?}", old.fetcher) != format!("{:?}", new.fetcher) {
        refused.push("fetcher");
        new.fetcher = old.fetcher.clone();
    }
    if format!("{:?}", old.status_sync) != format!("{:?}", new.status_sync) {
        refused.push("status_sync");
        new.status_sync = old.status_sync.clone();
    }
    (new, refused)
}

/// Reloads the file on every SIGHUP until `shutdown`. With no file (the
/// embedded default) a SIGHUP only logs that there is nothing to reload.
pub fn reload_file_on_sighup(
    live: LiveConfig,
    path: Option<PathBuf>,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                got = hup.recv() => if got.is_none() { return },
            }
            if path.is_none() {
                info!("SIGHUP: the embedded default config has nothing to reload");
                continue;
            }
            info!("SIGHUP: reloading the hub config");
            // The outcome is logged, counted and shown by `reload`.
            let _ = live.reload_file(path.as_deref()).await;
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[[tenant]]
id = "t1"
backend_url = "http://127.0.0.1:1/orders"

[[account]]
id = "main"
provider = "careem"
tenant = "t1"
secret_envs = ["S"]
branches = { "store-1" = "branch-1" }
"#;

    fn hub(text: &str) -> HubConfig {
        HubConfig::from_toml(text, "test", &|_| Some("secret-value".into())).unwrap()
    }

    fn branch(live: &LiveConfig, store: &str) -> Option<String> {
        live.load().accounts[0].branches.get(store).cloned()
    }

    #[tokio::test]
    async fn a_valid_reload_applies_mappings_and_bumps_the_generation() {
        let live = LiveConfig::new(hub(BASE), "test");
        let mut rx = live.subscribe();
        let edited = BASE.replace(
            r#"{ "store-1" = "branch-1" }"#,
            r#"{ "store-1" = "branch-2" }"#,
        );
        let r = live.reload("test", Ok(hub(&edited))).await.unwrap();
        assert_eq!(r, Reloaded::Applied { generation: 2 });
        assert_eq!(branch(&live, "store-1").as_deref(), Some("branch-2"));
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 2);
        assert_eq!(
            live.detail(),
            serde_json::json!({"ok": true, "error": null, "generation": 2, "source": "test"})
        );
    }

    /// A derived value and how many builds it took.
    struct Built {
        generation: u64,
        builds: u32,
    }

    impl Generational for Built {
        fn generation(&self) -> u64 {
            self.generation
        }
    }

    #[tokio::test]
    async fn a_derived_value_is_rebuilt_once_per_reload_from_the_previous() {
        let live = LiveConfig::new(hub(BASE), "test");
        let derived = Derived::new(Built {
            generation: live.generation(),
            builds: 0,
        });
        let rebuild = |hub: Arc<HubConfig>, generation, previous: &Built| {
            assert_eq!(hub.accounts.len(), live.load().accounts.len());
            Built {
                generation,
                builds: previous.builds + 1,
            }
        };
        assert_eq!(derived.get(&live, rebuild).builds, 0, "no reload yet");
        live.reload("test", Ok(hub(BASE))).await.unwrap();
        assert_eq!(derived.peek().builds, 0, "peek does not rebuild");
        for _ in 0..3 {
            let now = derived.get(&live, rebuild);
            assert_eq!((now.generation, now.builds), (2, 1));
        }
    }

    #[tokio::test]
    async fn an_invalid_candidate_is_refused_and_the_last_good_config_serves() {
        let live = LiveConfig::new(hub(BASE), "test");
        let bad = BASE.replace(r#"tenant = "t1""#, r#"tenant = "nope""#);
        let candidate = HubConfig::from_toml(&bad, "file hub.toml", &|_| Some("x".into()))
            .map_err(ReloadError::from);
        let err = live.reload("file hub.toml", candidate).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"hub config file hub.toml: account main.tenant: unknown tenant "nope""#
        );
        assert_eq!(live.generation(), 1);
        assert_eq!(branch(&live, "store-1").as_deref(), Some("branch-1"));
        assert_eq!(
            live.detail(),
            serde_json::json!({
                "ok": false,
                "error": r#"hub config file hub.toml: account main.tenant: unknown tenant "nope""#,
                "generation": 1,
                "source": "test",
            })
        );
        assert_eq!(live.0.failures.get(), 1);
        assert_eq!(live.0.ok.get(), 0);
        // The next good reload clears it.
        live.reload("test", Ok(hub(BASE))).await.unwrap();
        assert_eq!(live.detail()["ok"], true);
        assert_eq!(live.0.ok.get(), 1);
    }

    #[tokio::test]
    async fn restart_only_changes_are_refused_by_name_and_the_rest_applies() {
        let live = LiveConfig::new(hub(BASE), "test");
        let edited = format!(
            "{}\n[retry]\nschedule = [\"1s\"]\nmax_deliver = 3\n[streams]\nreplicas = 3\n[ingress]\nmax_body_bytes = 10\n[forwarder]\nmax_order_age = \"1h\"\nrequest_timeout = \"3s\"\n",
            BASE.replace("branch-1", "branch-9")
        );
        let r = live.reload("test", Ok(hub(&edited))).await.unwrap();
        assert_eq!(
            r,
            Reloaded::Partly {
                generation: 2,
                refused: vec!["retry", "streams", "ingress", "forwarder.max_order_age"],
            }
        );
        let now = live.load();
        let before = hub(BASE);
        assert_eq!(now.retry, before.retry);
        assert_eq!(now.streams, before.streams);
        assert_eq!(now.ingress, before.ingress);
        assert_eq!(now.forwarder.max_order_age, before.forwarder.max_order_age);
        // Reloadable: the mapping and the tenant's timeout (from the new
        // forwarder default).
        assert_eq!(branch(&live, "store-1").as_deref(), Some("branch-9"));
        assert_eq!(
            now.tenants[0].request_timeout,
            std::time::Duration::from_secs(3)
        );
        assert_eq!(
            live.detail()["error"],
            "test: retry, streams, ingress, forwarder.max_order_age changed: only a restart applies it (running values kept; the rest applied)"
        );
        assert_eq!(live.0.ok.get(), 0);
    }

    #[test]
    fn each_restart_only_section_is_named() {
        let base = hub(BASE);
        for (section, field) in [
            ("[fetcher]\nmax_deliver = 30\n", "fetcher"),
            ("[status_sync]\nmax_deliver = 30\n", "status_sync"),
            ("[provider_api]\nrequest_timeout = \"2s\"\n", "provider_api"),
            (
                "[forwarder]\nallowed_private_destinations = [\"10.0.0.0/8\"]\n",
                "forwarder.allowed_private_destinations",
            ),
        ] {
            let (_, refused) = keep_restart_only(&base, hub(&format!("{BASE}\n{section}")));
            assert_eq!(refused, vec![field], "{section}");
        }
        let (_, refused) = keep_restart_only(&base, hub(BASE));
        assert!(refused.is_empty());
    }
}
