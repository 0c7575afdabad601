//! `scripts/dev-up` as a newcomer meets it: with the example config it
//! comes up, and every fixture `sample-traffic` sends becomes an order at
//! the sample backend (the Uber Eats and Wolt notifications through the
//! fetcher reading them from the fake provider API); with `--db`, the
//! ledger answers for an order. And it fails loudly: given a hub config that
//! does not validate, it does not say "up" but exits 1, names the stage
//! that exited and shows its config error, and leaves nothing running
//! behind it.
//!
//! dev-up runs as a process with the workspace's already built binaries
//! (`DEV_BIN_DIR`), free ports and a temporary data directory, so it neither
//! builds nor collides with a dev-up a developer has running.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use orderhub_tests::{fixtures, free_port, stack::bin, workspace};
use shared::Provider;

/// A running `scripts/dev-up`. Dropped while running, it gets SIGTERM (its
/// own clean stop), then SIGKILL; and every process it listed in its pid
/// file is killed, since those run in their own sessions and outlive it.
struct DevUp {
    child: Child,
    data: PathBuf,
}

impl DevUp {
    fn pidfile(data: &Path) -> PathBuf {
        data.join("dev-up.pids")
    }

    /// Its exit status, waiting at most `within`.
    fn wait(&mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("dev-up still running after {within:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for DevUp {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            if self.wait(Duration::from_secs(30)).is_err() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if let Ok(pids) = std::fs::read_to_string(Self::pidfile(&self.data)) {
            for pid in pids.split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
    }
}

fn port_is_closed(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
}

/// The ports a dev-up listens on, all free.
struct Ports {
    nats: u16,
    backend: u16,
    ingress: u16,
    fake_provider: u16,
    ingress_ops: u16,
    transformer_ops: u16,
    fetcher_ops: u16,
    forwarder_ops: u16,
    status_sync_ops: u16,
}

impl Ports {
    fn free() -> Ports {
        Ports {
            nats: free_port(),
            backend: free_port(),
            ingress: free_port(),
            fake_provider: free_port(),
            ingress_ops: free_port(),
            transformer_ops: free_port(),
            fetcher_ops: free_port(),
            forwarder_ops: free_port(),
            status_sync_ops: free_port(),
        }
    }
}

/// The directory of the built binaries dev-up runs, checked to hold every
/// one of them.
fn bin_dir() -> anyhow::Result<PathBuf> {
    let dir = bin("ingress")?
        .parent()
        .context("binaries have a directory")?
        .to_owned();
    for name in [
        "transformer",
        "fetcher",
        "forwarder",
        "status-sync",
        "sample-backend",
        "fake-provider",
    ] {
        bin(name)?;
    }
    Ok(dir)
}

/// Starts `scripts/dev-up` with `hub` as its config on `ports`, its data in
/// `dir/data`, its output in `dir/stdout` and `dir/stderr`.
fn start_dev_up(dir: &Path, hub: &Path, ports: &Ports) -> anyhow::Result<DevUp> {
    start_dev_up_with(dir, hub, ports, &[])
}

/// [`start_dev_up`] with more environment (`--db` mode's variables).
fn start_dev_up_with(
    dir: &Path,
    hub: &Path,
    ports: &Ports,
    env: &[(&str, String)],
) -> anyhow::Result<DevUp> {
    let data = dir.join("data");
    let child = Command::new(workspace().join("scripts/dev-up"))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("HUB_CONFIG", hub)
        .env("DEV_BIN_DIR", bin_dir()?)
        .env("DEV_DATA_DIR", &data)
        .env("DEV_NATS_PORT", ports.nats.to_string())
        .env("DEV_BACKEND_PORT", ports.backend.to_string())
        .env("DEV_INGRESS_PORT", ports.ingress.to_string())
        .env("DEV_FAKE_PROVIDER_PORT", ports.fake_provider.to_string())
        .env("DEV_INGRESS_OPS_PORT", ports.ingress_ops.to_string())
        .env(
            "DEV_TRANSFORMER_OPS_PORT",
            ports.transformer_ops.to_string(),
        )
        .env("DEV_FETCHER_OPS_PORT", ports.fetcher_ops.to_string())
        .env("DEV_FORWARDER_OPS_PORT", ports.forwarder_ops.to_string())
        .env(
            "DEV_STATUS_SYNC_OPS_PORT",
            ports.status_sync_ops.to_string(),
        )
        .env("DEV_READY_TIMEOUT_SECS", "60")
        // A newcomer has no key: dev-up makes one.
        .env_remove("TOKEN_STORE_KEY")
        .env_remove("TOKEN_STORE_KEY_FILE")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("stdout"))?)
        .stderr(std::fs::File::create(dir.join("stderr"))?)
        .spawn()
        .context("spawn scripts/dev-up")?;
    Ok(DevUp { child, data })
}

/// What dev-up printed so far, for assertions and failure messages.
fn output(dir: &Path) -> (String, String) {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    (read("stdout"), read("stderr"))
}

/// The EXAMPLE secrets dev-up and sample-traffic use, from
/// `scripts/example-secrets.env` (`export NAME=value` lines).
fn example_secrets() -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(workspace().join("scripts/example-secrets.env"))?;
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// The example hub config read with the example secrets (a DoorDash
/// signing secret must be base64url, a Grab token key 32 bytes: no one
/// value fits every secret).
fn example_config(hub_text: &str) -> anyhow::Result<shared::config::HubConfig> {
    let secrets = example_secrets()?;
    Ok(shared::config::HubConfig::from_toml(
        hub_text,
        "hub.toml",
        &|name| {
            secrets
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        },
    )?)
}

/// The fake dev-up started takes the example DoorDash, Glovo, Grab and
/// Keeta accounts' API credentials, as the example config names them: one
/// call each, made the way the status worker makes it.
fn example_api_credentials_work_at_the_fake(hub_text: &str, port: u16) -> anyhow::Result<()> {
    use secrecy::ExposeSecret;
    use serde_json::{Value, json};
    let config = example_config(hub_text)?;
    let api = |p: Provider| {
        config
            .account(p, &format!("acme-{p}"))
            .and_then(|a| a.api.clone())
            .with_context(|| format!("acme-{p} has [account.api]"))
    };
    let (doordash, glovo, grab, keeta) = (
        api(Provider::Doordash)?,
        api(Provider::Glovo)?,
        api(Provider::Grab)?,
        api(Provider::Keeta)?,
    );
    let base = format!("http://127.0.0.1:{port}");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    tokio::runtime::Runtime::new()?.block_on(async {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        // DoorDash: a JWT from the example developer, key and secret.
        let jwt = shared::tokens::doordash::Signer::new(&doordash)
            .context("the example DoorDash signer")?
            .token(now);
        let r = http
            .patch(format!(
                "{base}/api/v1/orders/devup-dd/events/order_delivered"
            ))
            .bearer_auth(jwt)
            .header("auth-version", "v2")
            .json(&json!({"merchant_supplied_id": "devup"}))
            .send()
            .await?;
        assert_eq!(r.status().as_u16(), 202, "doordash: {}", r.text().await?);
        // Glovo: the partner token, raw.
        let r = http
            .put(format!("{base}/webhook/stores/devup/orders/devup-g/status"))
            .header("authorization", glovo.client_secret.expose_secret())
            .json(&json!({"status": "READY_FOR_PICKUP"}))
            .send()
            .await?;
        assert_eq!(r.status().as_u16(), 204, "glovo: {}", r.text().await?);
        // Grab: a token from the configured token_url, as a JSON grant.
        let token_url = grab.token_url.clone().context("grab's token_url")?;
        let r = http
            .post(token_url)
            .json(&json!({
                "client_id": grab.client_id.as_ref().context("grab's client id")?.expose_secret(),
                "client_secret": grab.client_secret.expose_secret(),
                "grant_type": "client_credentials",
                "scope": grab.scope.clone().unwrap_or_default(),
            }))
            .send()
            .await?;
        assert_eq!(r.status().as_u16(), 200, "grab token");
        let token: Value = r.json().await?;
        assert!(
            token["access_token"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        );
        // Keeta: a call signed with the app secret, with the access token.
        let url = format!("{base}/order/prepare");
        let mut body = json!({
            "appId": keeta.app_id.as_deref().context("keeta's app id")?.parse::<u64>()?,
            "accessToken": keeta.access_token.as_ref().context("keeta's token")?.expose_secret(),
            "timestamp": now,
            "orderViewId": 42,
            "shopId": 7,
        });
        let params = shared::verify::keeta::json_params(&serde_json::to_vec(&body)?)?;
        let pairs: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        body["sig"] = json!(shared::verify::keeta::signature(
            &url,
            &pairs,
            &keeta.client_secret
        ));
        let answer: Value = http.post(&url).json(&body).send().await?.json().await?;
        assert_eq!(answer["code"], 0, "keeta: {answer}");
        anyhow::Ok(())
    })
}

/// The example config with its backend and fake provider moved to `ports`
/// (dev-up's defaults may be in use on this machine), written to
/// `dir/hub.toml`: its path and text.
fn example_hub(dir: &Path, ports: &Ports) -> anyhow::Result<(PathBuf, String)> {
    let example = std::fs::read_to_string(workspace().join("config/hub.example.toml"))?;
    for fixed in [
        "http://127.0.0.1:3001/api/v1/orders",
        "base_url = \"http://127.0.0.1:8099\"",
        "token_url = \"http://127.0.0.1:8099/oauth/v2/token\"",
        "token_url = \"http://127.0.0.1:8099/oauth2/token\"",
    ] {
        assert!(example.contains(fixed), "the example config has {fixed}");
    }
    let hub_text = example
        .replace("127.0.0.1:3001", &format!("127.0.0.1:{}", ports.backend))
        .replace(
            "127.0.0.1:8099",
            &format!("127.0.0.1:{}", ports.fake_provider),
        );
    let hub = dir.join("hub.toml");
    std::fs::write(&hub, &hub_text)?;
    Ok((hub, hub_text))
}

/// Waits until dev-up says it is up; fails with its output if it exits
/// first or is not up within two minutes (a bound on a hang, not a timing
/// assertion).
fn wait_up(devup: &mut DevUp, dir: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (stdout, stderr) = output(dir);
        if stdout.contains("orderhub is up") {
            return Ok(());
        }
        if let Some(status) = devup.child.try_wait()? {
            bail!(
                "dev-up exited with {status} before it was up:\nstdout:\n{stdout}\nstderr:\n{stderr}"
            );
        }
        if Instant::now() >= deadline {
            bail!("dev-up not up after 120 s:\nstdout:\n{stdout}\nstderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn every_providers_sample_traffic_becomes_orders_at_the_sample_backend() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ports = Ports::free();
    let (hub, hub_text) = example_hub(dir.path(), &ports)?;
    let mut devup = start_dev_up(dir.path(), &hub, &ports)?;
    wait_up(&mut devup, dir.path())?;
    let (stdout, _) = output(dir.path());
    assert!(
        stdout.contains(
            "generated a throw-away TOKEN_STORE_KEY for this run; set one to keep tokens across runs"
        ),
        "{stdout}"
    );
    example_api_credentials_work_at_the_fake(&hub_text, ports.fake_provider)?;

    // What a newcomer runs next (scripts/sample-traffic, without the build).
    let traffic = Command::new(bin("sample-traffic")?)
        .arg("--ingress")
        .arg(format!("http://127.0.0.1:{}", ports.ingress))
        .envs(example_secrets()?)
        .env("HUB_CONFIG", &hub)
        .output()
        .context("run sample-traffic")?;
    let sent = String::from_utf8_lossy(&traffic.stdout).into_owned();
    assert!(
        traffic.status.success(),
        "{sent}{}",
        String::from_utf8_lossy(&traffic.stderr)
    );

    // Every Uber Eats and Wolt notification it sent to an account of the
    // example config, and the order each must become.
    let config = example_config(&hub_text)?;
    // 202, or the 200 Keeta dictates.
    let accepted = |line: &str| line.starts_with("202 ") || line.starts_with("200 ");
    let mut wanted = Vec::new();
    for f in fixtures::all() {
        if f.is_refused() {
            continue;
        }
        let account = f
            .path_headers
            .get(shared::headers::ACCOUNT)
            .cloned()
            .unwrap_or_else(|| format!("acme-{}", f.provider));
        if config.account(f.provider, &account).is_none() {
            assert!(
                sent.contains(&format!("{} ", f.name)) && sent.contains("skipped"),
                "{} (account {account}) is not reported skipped:\n{sent}",
                f.name
            );
            continue;
        }
        let field = |k: &str| f.expected[k].as_str().map(str::to_owned);
        let (Some(event), Some(order)) = (field("event"), field("provider_order_id")) else {
            bail!(
                "{}: the expected order has no event or provider_order_id",
                f.name
            );
        };
        assert!(
            sent.lines()
                .any(|l| accepted(l) && l.contains(&format!("{} -> backend", f.name))),
            "{} was not accepted:\n{sent}",
            f.name
        );
        wanted.push((
            f.provider,
            format!(
                "signature ok: {event} {} order {order} for acme/",
                f.provider
            ),
        ));
    }
    for p in Provider::ALL {
        assert!(
            wanted.iter().any(|(q, _)| *q == p),
            "no {p} fixture for the example config"
        );
    }

    // The sample backend prints each order it receives.
    let log = devup.data.join("logs/backend.log");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let printed = std::fs::read_to_string(&log).unwrap_or_default();
        let missing: Vec<&str> = wanted
            .iter()
            .map(|(_, line)| line.as_str())
            .filter(|line| !printed.contains(line))
            .collect();
        if missing.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let logs = devup.data.join("logs");
            let tail = |name: &str| std::fs::read_to_string(logs.join(name)).unwrap_or_default();
            bail!(
                "not at the sample backend: {missing:#?}\nbackend.log:\n{printed}\nfetcher.log:\n{}\nfake-provider.log:\n{}",
                tail("fetcher.log"),
                tail("fake-provider.log")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    // The sample backend's 2xx accepted each created order at the fake
    // provider (auto_accept): one accept per created Uber Eats and Wolt
    // order, answered 2xx.
    let created: Vec<String> = fixtures::all()
        .into_iter()
        .filter(|f| f.provider.sends_notifications_only() && !f.is_refused())
        .filter(|f| f.expected["event"] == "created")
        .filter(|f| {
            let account = f
                .path_headers
                .get(shared::headers::ACCOUNT)
                .cloned()
                .unwrap_or_else(|| format!("acme-{}", f.provider));
            config.account(f.provider, &account).is_some()
        })
        .filter_map(|f| f.expected["provider_order_id"].as_str().map(str::to_owned))
        .collect();
    assert!(!created.is_empty(), "a created Uber Eats or Wolt order");
    let calls_url = format!(
        "http://127.0.0.1:{}/_fake/status-calls",
        ports.fake_provider
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // dev-up's own tool for its /ready checks; this test is synchronous.
        let out = Command::new("curl")
            .args(["-sf", "--max-time", "5", &calls_url])
            .output()
            .context("run curl")?;
        let calls: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        let accepted = |id: &str| {
            calls.as_array().is_some_and(|calls| {
                calls.iter().any(|c| {
                    c["order_id"] == id
                        && c["endpoint"]
                            .as_str()
                            .is_some_and(|e| e.contains("Accept") || e.contains("ConfirmPreorder"))
                        && c["answered"]
                            .as_u64()
                            .is_some_and(|s| (200..300).contains(&s))
                })
            })
        };
        let missing: Vec<&String> = created.iter().filter(|id| !accepted(id)).collect();
        if missing.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let tail = |name: &str| {
                std::fs::read_to_string(devup.data.join("logs").join(name)).unwrap_or_default()
            };
            bail!(
                "not accepted at the fake provider: {missing:?}\ncalls: {calls:#}\nstatus-sync.log:\n{}",
                tail("status-sync.log")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    // SIGTERM: dev-up stops everything and exits 143 (128 + TERM).
    Command::new("kill")
        .args(["-TERM", &devup.child.id().to_string()])
        .status()?;
    let status = devup.wait(Duration::from_secs(90))?;
    let (stdout, stderr) = output(dir.path());
    assert_eq!(
        status.code(),
        Some(143),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(!DevUp::pidfile(&devup.data).exists());
    assert!(
        port_is_closed(ports.fake_provider),
        "the fake provider still listens"
    );
    assert!(port_is_closed(ports.nats), "nats still listens");
    Ok(())
}

#[test]
fn a_config_error_stops_dev_up_naming_the_stage_and_the_error() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // The example config with an account pointing at a tenant that does not
    // exist: valid TOML, refused by validation.
    let example = std::fs::read_to_string(workspace().join("config/hub.example.toml"))?;
    let bad = example.replacen("tenant = \"acme\"", "tenant = \"nobody\"", 1);
    assert_ne!(
        bad, example,
        "the example config has an account of tenant acme"
    );
    let hub = dir.path().join("hub.toml");
    std::fs::write(&hub, &bad)?;
    // What the stages say about it: the loader's own message, with every
    // secret variable set (as dev-up sets them) so that only the tenant is
    // wrong.
    let expected =
        shared::config::HubConfig::from_toml(&bad, &hub.display().to_string(), &|name| {
            Some(
                if name.ends_with("SIGNING_SECRET") || name.ends_with("DIRECT_SECRET") {
                    "whsec_c2VjcmV0".to_owned()
                } else {
                    "secret".to_owned()
                },
            )
        })
        .err()
        .context("the changed config must not validate")?
        .to_string();
    assert!(expected.contains("nobody"), "{expected}");

    let ports = Ports::free();
    let mut devup = start_dev_up(dir.path(), &hub, &ports)?;

    // A bound on a hang, not a timing assertion: the stages exit at once.
    let status = devup.wait(Duration::from_secs(120))?;
    let (stdout, stderr) = output(dir.path());
    let shown = format!("stdout:\n{stdout}\nstderr:\n{stderr}");

    assert_eq!(status.code(), Some(1), "{shown}");
    assert!(!stdout.contains("orderhub is up"), "{shown}");
    let named = ["ingress", "transformer", "fetcher", "forwarder"]
        .iter()
        .any(|stage| stderr.contains(&format!("dev-up: {stage} exited with status 2 at start")));
    assert!(named, "no stage named with its exit status: {shown}");
    assert!(
        stderr.contains(&format!("| error: {expected}")),
        "the config error {expected:?} is not shown: {shown}"
    );
    // Everything it started is gone: it removed its pid file after stopping
    // them, and NATS no longer listens.
    assert!(!DevUp::pidfile(&devup.data).exists(), "{shown}");
    assert!(port_is_closed(ports.nats), "nats still listening: {shown}");
    Ok(())
}

/// `scripts/dev-up --db`: on the machine's PostgreSQL, in a database
/// dev-up creates, the stages run from the config tables it imported the
/// hub file into, and the ledger answers "what happened to order X?" for
/// the banner's own Careem order, through the command the banner prints.
#[test]
fn with_a_database_the_ledger_tells_what_happened_to_the_sample_order() -> anyhow::Result<()> {
    let db = orderhub_tests::pg::TestDb::reserve()?;
    let dir = tempfile::tempdir()?;
    let ports = Ports::free();
    let (ledger_port, ledger_ops_port) = (free_port(), free_port());
    let (hub, _) = example_hub(dir.path(), &ports)?;
    let mut devup = start_dev_up_with(
        dir.path(),
        &hub,
        &ports,
        &[
            ("DEV_DATABASE_URL", db.url()?),
            ("DEV_LEDGER_PORT", ledger_port.to_string()),
            ("DEV_LEDGER_OPS_PORT", ledger_ops_port.to_string()),
        ],
    )?;
    wait_up(&mut devup, dir.path())?;
    let (stdout, _) = output(dir.path());
    // A new database: created, the hub file imported into its config
    // tables, and the stages reading them.
    for line in [
        format!("created database {}", db.name),
        format!("into the config tables of database {}", db.name),
        format!("hub config: the tables of database {}, live", db.name),
    ] {
        assert!(stdout.contains(&line), "{line}:\n{stdout}");
    }
    let secrets = example_secrets()?;
    let secret = |name: &str| {
        secrets
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .with_context(|| format!("{name} in example-secrets.env"))
    };
    let token = secret("ACME_OPERATOR_TOKEN")?;
    let ledger = bin("ledger")?;
    let api = format!("http://127.0.0.1:{ledger_port}");
    assert!(
        stdout.contains(&format!("ledger order careem TEST123 --api {api}")),
        "the banner shows the ledger command:\n{stdout}"
    );

    // The banner's signed Careem order.
    let body = r#"{"order_id":"TEST123","customer":{"name":"Test User","phone":"0791234567"},"items":[{"name":"Burger","quantity":1,"price":10}],"total_amount":10}"#;
    let headers =
        shared::verify::careem::sign(body.as_bytes(), &secret("ACME_CAREEM_SECRET")?.into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let status = rt.block_on(async {
        reqwest::Client::new()
            .post(format!(
                "http://127.0.0.1:{}/api/webhooks/careem/acme-careem",
                ports.ingress
            ))
            .headers(headers)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map(|r| r.status().as_u16())
    })?;
    assert_eq!(status, 202);

    // The support desk's question, until the ledger has the delivery.
    let deadline = Instant::now() + Duration::from_secs(60);
    let kinds = loop {
        let out = Command::new(&ledger)
            .args(["order", "careem", "TEST123", "--json", "--api", &api])
            .env("OPERATOR_TOKEN", &token)
            .env_remove("OPERATOR_TOKEN_FILE")
            .output()?;
        let timeline: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        let kinds: Vec<String> = timeline["entries"]
            .as_array()
            .map(|e| {
                e.iter()
                    .filter_map(|e| e["kind"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if kinds.iter().any(|k| k == "delivered") {
            break kinds;
        }
        if Instant::now() >= deadline {
            bail!(
                "the ledger never showed the delivery: {}{}\nledger.log:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(devup.data.join("logs/ledger.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    // The converted step and the ORDERS message are stamped by two clocks
    // (the stage's, the server's) within the same moment: either may come
    // first.
    let (first, rest) = kinds.split_first().context("a timeline")?;
    let mut middle = rest.to_vec();
    let last = middle.pop();
    middle.sort();
    assert_eq!(
        (first.as_str(), middle, last.as_deref()),
        (
            "webhook_received",
            vec![
                "attempt".to_owned(),
                "converted".to_owned(),
                "order_published".to_owned()
            ],
            Some("delivered")
        ),
        "the timeline: {kinds:?}"
    );
    assert!(
        kinds.iter().position(|k| k == "attempt") > kinds.iter().position(|k| k == "converted"),
        "{kinds:?}"
    );
    drop(devup);
    Ok(())
}
