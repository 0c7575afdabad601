//! Stream, consumer and bucket definitions (`nats/streams.toml`, embedded)
//! and applying them idempotently at start: create what is missing, update
//! what can change in place, refuse with a message naming the stream and the
//! field when JetStream cannot change it (storage, retention).

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use serde::Deserialize;

use crate::config::StreamSettings;

/// The definitions file, compiled in.
pub const DEFINITIONS: &str = include_str!("../../nats/streams.toml");

/// Failure history of messages being retried (see [`crate::dlq`]).
pub const FAILURES_BUCKET: &str = "FAILURES";

/// Provider API tokens, encrypted, shared by every replica.
pub const TOKENS_BUCKET: &str = "PROVIDER_TOKENS";

/// The consumers `nats/streams.toml` defines, by durable name.
pub const CONSUMER_NAMES: [&str; 14] = [
    "transformer",
    "fetcher",
    "forwarder",
    "status-sync",
    "auto-reject",
    "ledger-webhooks",
    "ledger-orders",
    "ledger-status",
    "ledger-outcomes",
    "ledger-dlq",
    "mover-transformer",
    "mover-fetcher",
    "mover-forwarder",
    "mover-status-sync",
];

/// The streams `nats/streams.toml` defines, by name.
pub const STREAM_NAMES: [&str; 6] = [
    "WEBHOOKS",
    "ORDERS",
    "STATUS",
    "OUTCOMES",
    "DLQ",
    "ADVISORIES",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefinitions {
    stream: Vec<StreamDef>,
    consumer: Vec<ConsumerDef>,
    bucket: Vec<BucketDef>,
}

/// One stream, after the hub config's overrides.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamDef {
    pub name: String,
    pub description: String,
    pub subjects: Vec<String>,
    pub retention: String,
    pub storage: String,
    pub replicas: usize,
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    pub max_bytes: i64,
    pub discard: String,
    pub allow_direct: bool,
    /// Largest message the stream stores, in bytes; -1 leaves the server's
    /// `max_payload` (1 MiB by default) as the only bound.
    #[serde(default = "unlimited")]
    pub max_msg_size: i32,
}

fn unlimited() -> i32 {
    -1
}

/// One durable pull consumer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerDef {
    pub stream: String,
    pub durable: String,
    pub filter_subjects: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    pub max_ack_pending: i64,
    /// Set for movers (-1: unlimited); work consumers take `[retry].max_deliver`.
    pub max_deliver: Option<i64>,
    /// A template: one consumer per tenant, `<durable>-<tenant>` reading
    /// `orders.<tenant>.>`, so tenants never wait behind each other.
    #[serde(default)]
    pub per_tenant: bool,
}

impl ConsumerDef {
    /// This template's consumer for one tenant.
    pub fn for_tenant(&self, tenant: &str) -> ConsumerDef {
        ConsumerDef {
            durable: format!("{}-{tenant}", self.durable),
            filter_subjects: vec![crate::subjects::orders_of_tenant(tenant)],
            per_tenant: false,
            ..self.clone()
        }
    }
}

/// One key-value bucket.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketDef {
    pub name: String,
    pub description: String,
    pub storage: String,
    pub replicas: usize,
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

/// Everything in `nats/streams.toml`, with overrides applied.
#[derive(Debug, Clone)]
pub struct Definitions {
    pub streams: BTreeMap<String, StreamDef>,
    pub consumers: Vec<ConsumerDef>,
    pub buckets: BTreeMap<String, BucketDef>,
}

impl Definitions {
    /// The embedded definitions with the hub config's `[streams]` applied.
    pub fn load(settings: &StreamSettings) -> Definitions {
        let raw: RawDefinitions =
            toml::from_str(DEFINITIONS).expect("nats/streams.toml is valid (unit-tested)");
        let mut streams = BTreeMap::new();
        for mut s in raw.stream {
            if let Some(r) = settings.replicas {
                s.replicas = r;
            }
            if let Some(st) = &settings.storage {
                s.storage = st.clone();
            }
            if let Some(o) = settings.overrides.get(&s.name) {
                if let Some(v) = o.max_age {
                    s.max_age = v;
                }
                if let Some(v) = o.duplicate_window {
                    s.duplicate_window = v;
                }
                if let Some(v) = o.max_bytes {
                    s.max_bytes = v;
                }
                if let Some(v) = o.max_msg_size {
                    s.max_msg_size = v;
                }
                if let Some(v) = o.replicas {
                    s.replicas = v;
                }
                if let Some(v) = &o.storage {
                    s.storage = v.clone();
                }
                if let Some(v) = &o.retention {
                    s.retention = v.clone();
                }
            }
            streams.insert(s.name.clone(), s);
        }
        let buckets = raw
            .bucket
            .into_iter()
            .map(|mut b| {
                if let Some(r) = settings.replicas {
                    b.replicas = r;
                }
                // The token bucket stays on file whatever the global
                // storage: a NATS restart must not lose Wolt's rotated
                // refresh tokens (a lost chain means re-authorising the
                // venue).
                if let Some(st) = &settings.storage
                    && b.name != TOKENS_BUCKET
                {
                    b.storage = st.clone();
                }
                // A bucket is a stream: `[streams.overrides.<BUCKET>]`
                // sets its max_age too (ORDER_CONTEXT's TTL).
                if let Some(v) = settings.overrides.get(&b.name).and_then(|o| o.max_age) {
                    b.max_age = v;
                }
                (b.name.clone(), b)
            })
            .collect();
        let consumers = raw
            .consumer
            .into_iter()
            .map(|mut c| {
                if let Some(o) = settings.consumers.get(&c.durable) {
                    if let Some(v) = o.ack_wait {
                        c.ack_wait = v;
                    }
                    if let Some(v) = o.max_ack_pending {
                        c.max_ack_pending = v;
                    }
                }
                c
            })
            .collect();
        Definitions {
            streams,
            consumers,
            buckets,
        }
    }

    pub fn stream(&self, name: &str) -> &StreamDef {
        self.streams
            .get(name)
            .unwrap_or_else(|| panic!("stream {name} is defined in nats/streams.toml"))
    }

    pub fn consumer(&self, stream: &str, durable: &str) -> &ConsumerDef {
        self.consumers
            .iter()
            .find(|c| c.stream == stream && c.durable == durable)
            .unwrap_or_else(|| {
                panic!("consumer {stream}/{durable} is defined in nats/streams.toml")
            })
    }

    pub fn bucket(&self, name: &str) -> &BucketDef {
        self.buckets
            .get(name)
            .unwrap_or_else(|| panic!("bucket {name} is defined in nats/streams.toml"))
    }

    /// The mover consumer for a work consumer.
    pub fn mover_of(&self, work: &ConsumerDef) -> &ConsumerDef {
        self.consumer(
            crate::subjects::ADVISORIES_STREAM,
            &format!("mover-{}", work.durable),
        )
    }
}

/// Why the streams could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "stream {stream} exists with {field} {existing}, the definition wants {wanted}: JetStream cannot change it in place; migrate the stream or change the definition"
    )]
    Incompatible {
        stream: String,
        field: &'static str,
        existing: String,
        wanted: String,
    },
    #[error("stream {0} does not exist (and MANAGE_STREAMS is off)")]
    Missing(String),
    #[error("consumer {stream}/{consumer} does not exist (and MANAGE_STREAMS is off)")]
    MissingConsumer { stream: String, consumer: String },
    #[error("{what}: {message}")]
    Nats { what: String, message: String },
}

impl SetupError {
    fn nats(what: impl Into<String>, e: impl std::fmt::Display) -> Self {
        SetupError::Nats {
            what: what.into(),
            message: e.to_string(),
        }
    }

    /// True when retrying cannot help (a definition conflicts with the server).
    pub fn is_permanent(&self) -> bool {
        matches!(self, SetupError::Incompatible { .. })
    }
}

fn retention(s: &str) -> stream::RetentionPolicy {
    match s {
        "workqueue" => stream::RetentionPolicy::WorkQueue,
        "interest" => stream::RetentionPolicy::Interest,
        _ => stream::RetentionPolicy::Limits,
    }
}

fn storage(s: &str) -> stream::StorageType {
    match s {
        "memory" => stream::StorageType::Memory,
        _ => stream::StorageType::File,
    }
}

impl StreamDef {
    pub fn to_config(&self) -> stream::Config {
        stream::Config {
            name: self.name.clone(),
            description: Some(self.description.clone()),
            subjects: self.subjects.clone(),
            retention: retention(&self.retention),
            storage: storage(&self.storage),
            num_replicas: self.replicas,
            max_age: self.max_age,
            duplicate_window: self.duplicate_window,
            max_bytes: self.max_bytes,
            discard: if self.discard == "new" {
                stream::DiscardPolicy::New
            } else {
                stream::DiscardPolicy::Old
            },
            allow_direct: self.allow_direct,
            max_message_size: self.max_msg_size,
            ..Default::default()
        }
    }

    /// True when messages leave the stream on ack (so a dead-lettered one
    /// must be deleted explicitly after it exhausted its deliveries).
    pub fn deletes_on_ack(&self) -> bool {
        self.retention != "limits"
    }
}

fn retention_name(r: stream::RetentionPolicy) -> &'static str {
    match r {
        stream::RetentionPolicy::Limits => "limits",
        stream::RetentionPolicy::Interest => "interest",
        stream::RetentionPolicy::WorkQueue => "workqueue",
    }
}

fn storage_name(s: stream::StorageType) -> &'static str {
    match s {
        stream::StorageType::File => "file",
        stream::StorageType::Memory => "memory",
    }
}

/// What `ensure_stream` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Created,
    Updated,
    Unchanged,
    /// `manage` was off and the stream exists.
    Checked,
}

/// Creates the stream, updates it in place, or refuses; with `manage` off,
/// only checks that it exists.
pub async fn ensure_stream(
    js: &jetstream::Context,
    def: &StreamDef,
    manage: bool,
) -> Result<Applied, SetupError> {
    let wanted = def.to_config();
    let existing = match js.get_stream(&def.name).await {
        Ok(mut s) => Some(
            s.info()
                .await
                .map_err(|e| SetupError::nats(format!("stream {} info", def.name), e))?
                .config
                .clone(),
        ),
        Err(e) => match e.kind() {
            jetstream::context::GetStreamErrorKind::JetStream(j)
                if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                None
            }
            _ => return Err(SetupError::nats(format!("stream {}", def.name), e)),
        },
    };
    let Some(have) = existing else {
        if !manage {
            return Err(SetupError::Missing(def.name.clone()));
        }
        js.create_stream(wanted)
            .await
            .map_err(|e| SetupError::nats(format!("create stream {}", def.name), e))?;
        return Ok(Applied::Created);
    };
    if !manage {
        return Ok(Applied::Checked);
    }
    if have.storage != wanted.storage {
        return Err(SetupError::Incompatible {
            stream: def.name.clone(),
            field: "storage",
            existing: storage_name(have.storage).into(),
            wanted: storage_name(wanted.storage).into(),
        });
    }
    if have.retention != wanted.retention {
        return Err(SetupError::Incompatible {
            stream: def.name.clone(),
            field: "retention",
            existing: retention_name(have.retention).into(),
            wanted: retention_name(wanted.retention).into(),
        });
    }
    let same = have.subjects == wanted.subjects
        && have.description == wanted.description
        && have.num_replicas == wanted.num_replicas
        && have.max_age == wanted.max_age
        && have.duplicate_window == wanted.duplicate_window
        && have.max_bytes == wanted.max_bytes
        && have.discard == wanted.discard
        && have.allow_direct == wanted.allow_direct;
    if same {
        return Ok(Applied::Unchanged);
    }
    // Keep what an operator set that the definition does not manage.
    let update = stream::Config {
        metadata: have.metadata.clone(),
        placement: have.placement.clone(),
        compression: have.compression.clone(),
        ..wanted
    };
    js.update_stream(update)
        .await
        .map_err(|e| SetupError::nats(format!("update stream {}", def.name), e))?;
    Ok(Applied::Updated)
}

/// Creates or updates a durable pull consumer (`max_deliver` from the retry
/// schedule for work consumers); with `manage` off, only checks it exists.
pub async fn ensure_consumer(
    js: &jetstream::Context,
    def: &ConsumerDef,
    max_deliver: i64,
    manage: bool,
) -> Result<consumer::PullConsumer, SetupError> {
    let what = format!("consumer {}/{}", def.stream, def.durable);
    let stream = js
        .get_stream(&def.stream)
        .await
        .map_err(|e| SetupError::nats(&what, e))?;
    if !manage {
        return stream
            .get_consumer(&def.durable)
            .await
            .map_err(|_| SetupError::MissingConsumer {
                stream: def.stream.clone(),
                consumer: def.durable.clone(),
            });
    }
    let (filter_subject, filter_subjects) = match def.filter_subjects.as_slice() {
        [one] => (one.clone(), Vec::new()),
        many => (String::new(), many.to_vec()),
    };
    let config = consumer::pull::Config {
        durable_name: Some(def.durable.clone()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: def.ack_wait,
        max_deliver: def.max_deliver.unwrap_or(max_deliver),
        max_ack_pending: def.max_ack_pending,
        filter_subject,
        filter_subjects,
        ..Default::default()
    };
    stream
        .create_consumer(config)
        .await
        .map_err(|e| SetupError::nats(format!("create {what}"), e))
}

/// Creates or updates a key-value bucket; with `manage` off, opens it.
pub async fn ensure_bucket(
    js: &jetstream::Context,
    def: &BucketDef,
    manage: bool,
) -> Result<kv::Store, SetupError> {
    let what = format!("bucket {}", def.name);
    if let Ok(store) = js.get_key_value(&def.name).await {
        if !manage {
            return Ok(store);
        }
        // Leave an unchanged bucket alone: an update of a replicated
        // bucket's stream costs a cluster round of its own.
        let current = js
            .get_stream(format!("KV_{}", def.name))
            .await
            .map_err(|e| SetupError::nats(&what, e))?
            .info()
            .await
            .map_err(|e| SetupError::nats(&what, e))?
            .config
            .clone();
        if current.max_age == def.max_age
            && current.num_replicas == def.replicas
            && current.storage == storage(&def.storage)
        {
            return Ok(store);
        }
    } else if !manage {
        return Err(SetupError::Missing(format!("KV_{}", def.name)));
    }
    js.create_or_update_key_value(kv::Config {
        bucket: def.name.clone(),
        description: def.description.clone(),
        history: 1,
        max_age: def.max_age,
        storage: storage(&def.storage),
        num_replicas: def.replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| SetupError::nats(what, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{StreamOverride, StreamSettings};

    #[test]
    fn the_definitions_parse_and_cover_every_stream_and_mover() {
        let defs = Definitions::load(&StreamSettings::default());
        let mut consumers: Vec<&str> = defs.consumers.iter().map(|c| c.durable.as_str()).collect();
        consumers.sort();
        let mut want_consumers = CONSUMER_NAMES.to_vec();
        want_consumers.sort();
        assert_eq!(consumers, want_consumers);
        let names: Vec<&str> = defs.streams.keys().map(String::as_str).collect();
        let mut want = STREAM_NAMES.to_vec();
        want.sort();
        assert_eq!(names, want);
        // Readers of ADVISORIES (movers) and of the DLQ (auto-reject) read
        // the only record of what they handle: they retry without limit
        // and have no mover.
        let auto_reject = defs.consumer("DLQ", "auto-reject");
        assert_eq!(auto_reject.max_deliver, Some(-1));
        assert_eq!(auto_reject.filter_subjects, ["dlq.forwarder.>"]);
        // The ledger reads every stream but ADVISORIES, each whole, and
        // never dead-letters: it retries without limit and has no mover.
        let ledger: Vec<&ConsumerDef> = defs
            .consumers
            .iter()
            .filter(|c| c.durable.starts_with("ledger-"))
            .collect();
        let mut read: Vec<&str> = ledger.iter().map(|c| c.stream.as_str()).collect();
        read.sort();
        assert_eq!(read, ["DLQ", "ORDERS", "OUTCOMES", "STATUS", "WEBHOOKS"]);
        for c in &ledger {
            assert_eq!(c.max_deliver, Some(-1), "{}", c.durable);
            assert_eq!(
                c.filter_subjects,
                defs.stream(&c.stream)
                    .subjects
                    .iter()
                    .map(|s| s.split('.').next().unwrap().to_owned() + ".>")
                    .take(1)
                    .collect::<Vec<_>>(),
                "{} reads all of {}",
                c.durable,
                c.stream
            );
            assert!(
                c.max_ack_pending >= 2000,
                "{}: a whole batch in flight",
                c.durable
            );
        }
        for work in defs.consumers.iter().filter(|c| {
            !matches!(c.stream.as_str(), "ADVISORIES" | "DLQ") && !c.durable.starts_with("ledger-")
        }) {
            let mover = defs.mover_of(work);
            let consumer = if work.per_tenant {
                "*"
            } else {
                work.durable.as_str()
            };
            let advisories = crate::subjects::advisories_of(&work.stream, consumer);
            assert_eq!(mover.filter_subjects, advisories.to_vec());
            assert_eq!(mover.max_deliver, Some(-1));
            assert_eq!(
                work.max_deliver, None,
                "work consumers take [retry].max_deliver"
            );
            let captured = &defs.stream("ADVISORIES").subjects;
            for s in crate::subjects::advisory_capture(&work.stream) {
                assert!(captured.contains(&s), "ADVISORIES does not capture {s}");
            }
        }
        for s in defs.streams.values() {
            assert!(
                s.max_age.is_zero() || s.duplicate_window <= s.max_age,
                "{}: duplicate window beyond max_age",
                s.name
            );
        }
        assert_eq!(
            defs.stream("WEBHOOKS").subjects,
            [
                crate::subjects::RAW_WEBHOOKS_ALL,
                crate::subjects::FETCHED_WEBHOOKS_ALL
            ]
        );
        assert_eq!(
            defs.stream("ORDERS").subjects,
            [crate::subjects::ORDERS_ALL]
        );
        assert_eq!(defs.stream("DLQ").subjects, [crate::subjects::DLQ_ALL]);
        let forwarder = defs.consumer("ORDERS", "forwarder");
        assert!(forwarder.per_tenant);
        let acme = forwarder.for_tenant("acme");
        assert_eq!(acme.durable, "forwarder-acme");
        assert_eq!(acme.filter_subjects, ["orders.acme.>"]);
        assert_eq!(acme.ack_wait, forwarder.ack_wait);
    }

    /// Every provider's raw webhooks go to exactly one of the transformer
    /// (providers that push orders) and the fetcher (providers that send
    /// notifications only); fetched orders go to the transformer. A new
    /// provider missing from both would be stored and never read.
    #[test]
    fn each_raw_webhook_has_exactly_one_reader() {
        use crate::provider::Provider;
        let defs = Definitions::load(&StreamSettings::default());
        let transformer = &defs.consumer("WEBHOOKS", "transformer").filter_subjects;
        let fetcher = &defs.consumer("WEBHOOKS", "fetcher").filter_subjects;
        let mut want_transformer: Vec<String> = Provider::ALL
            .into_iter()
            .filter(|p| !p.sends_notifications_only())
            .map(crate::subjects::raw_webhooks_of)
            .collect();
        want_transformer.push(crate::subjects::FETCHED_WEBHOOKS_ALL.to_owned());
        let want_fetcher: Vec<String> = Provider::ALL
            .into_iter()
            .filter(|p| p.sends_notifications_only())
            .map(crate::subjects::raw_webhooks_of)
            .collect();
        assert_eq!(transformer, &want_transformer);
        assert_eq!(fetcher, &want_fetcher);
        assert_eq!(defs.bucket(TOKENS_BUCKET).max_age, Duration::ZERO);
    }

    #[test]
    fn overrides_apply_globally_then_per_stream() {
        let mut overrides = BTreeMap::new();
        overrides.insert(
            "WEBHOOKS".to_owned(),
            StreamOverride {
                max_age: Some(Duration::from_secs(3600)),
                replicas: Some(5),
                ..Default::default()
            },
        );
        let mut consumers = BTreeMap::new();
        consumers.insert(
            "forwarder".to_owned(),
            crate::config::ConsumerOverride {
                ack_wait: Some(Duration::from_secs(5)),
                max_ack_pending: None,
            },
        );
        let defs = Definitions::load(&StreamSettings {
            replicas: Some(3),
            storage: Some("memory".into()),
            overrides,
            consumers,
        });
        assert_eq!(
            defs.consumer("ORDERS", "forwarder").ack_wait,
            Duration::from_secs(5)
        );
        assert_eq!(defs.consumer("ORDERS", "forwarder").max_ack_pending, 1000);
        assert_eq!(
            defs.consumer("WEBHOOKS", "transformer").ack_wait,
            Duration::from_secs(30)
        );
        let w = defs.stream("WEBHOOKS");
        assert_eq!(
            (w.replicas, w.max_age, w.storage.as_str()),
            (5, Duration::from_secs(3600), "memory")
        );
        let o = defs.stream("ORDERS");
        assert_eq!((o.replicas, o.storage.as_str()), (3, "memory"));
        assert_eq!(defs.bucket(FAILURES_BUCKET).replicas, 3);
        assert_eq!(defs.bucket(FAILURES_BUCKET).storage, "memory");
        assert_eq!(defs.bucket(TOKENS_BUCKET).replicas, 3);
        assert_eq!(
            defs.bucket(TOKENS_BUCKET).storage,
            "file",
            "Wolt refresh tokens survive a restart"
        );
    }
}
