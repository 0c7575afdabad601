//! orderhub's shared library: what every stage does the same way.
//!
//! - [`config`]: flags with environment fallbacks and the hub's TOML file
//!   (tenants, accounts, mappings, retry schedule), secrets resolved and
//!   redacted.
//! - [`subjects`] and [`streams`]: every subject and stream name, and the
//!   stream/consumer definitions of `nats/streams.toml`, applied at start.
//! - [`worker`]: the consume → handle → ack / retry later / dead-letter loop
//!   over JetStream, and [`dead_letter_mover`], its safety net for workers
//!   that die on a message's last delivery; [`dlq`] is the dead-letter entry
//!   format, [`failure_history`] what is remembered between deliveries.
//! - [`sequence`]: per-order ordering of the events to a backend and the
//!   answers to a provider, in the `ORDER_SEQUENCE` bucket.
//! - [`telemetry`] and [`ops`]: logs, metrics, `/health` `/ready` `/metrics`.
//! - [`verify`]: every provider's signature scheme (verify and sign), used
//!   by the ingress, and Standard Webhooks signing for the forwarder.
//! - [`live`]: the hub config a stage serves now, reloaded without a
//!   restart (SIGHUP for the file, NOTIFY for PostgreSQL).
//! - `config_db` (feature `postgres`): the hub config in PostgreSQL, its
//!   tables, the import, and the watcher that reloads on NOTIFY.
//! - [`app`]: connect, set up streams, shut down on signals; [`backoff`]:
//!   the one backoff for infrastructure retries.
//! - `outbound` (feature `outbound`): the one policy for every HTTP request
//!   the hub sends (no redirects, checked destinations, bounded bodies);
//!   [`redact`]: untrusted text cut for logs and escaped for terminals.
//! - `tokens` (feature `provider-api`): the provider API tokens the whole
//!   fleet shares, in a NATS key-value bucket, sealed at rest.

pub mod answer;
pub mod app;
pub mod backoff;
pub mod config;
#[cfg(feature = "postgres")]
pub mod config_db;
pub mod dead_letter_mover;
pub mod dlq;
pub mod failure;
pub mod failure_history;
pub mod headers;
pub mod live;
pub mod ops;
#[cfg(feature = "outbound")]
pub mod outbound;
pub mod outcome;
pub mod pull;
pub mod redact;
pub mod retry;
pub mod secret;
pub mod sequence;
pub mod streams;
pub mod subjects;
pub mod telemetry;
#[cfg(feature = "provider-api")]
pub mod tokens;
#[cfg(feature = "verify")]
pub mod verify;
pub mod worker;

// The provider registry lives with the canonical order (a backend needs the
// names); re-exported so every stage keeps saying `shared::Provider`.
pub use canonical::{Provider, provider};
