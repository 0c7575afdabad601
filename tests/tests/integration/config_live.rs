//! The live hub config (issue 16 point 4) against a real nats-server and
//! the machine's PostgreSQL: a branch mapping added in the tables changes
//! the next order without a restart; an invalid change is refused, the
//! last good config keeps converting, and the refusal shows in the metrics
//! and `/ready`; an imported TOML file converts every fixture exactly like
//! the file; a lost notification is caught by the periodic check; SIGHUP
//! reloads an edited file in a stage binary and refuses an invalid edit;
//! postgres mode fails closed at start; `ledger config import` refuses an
//! invalid file and writes nothing; the ledger's and the config's
//! migrations share one database.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use orderhub_tests::pg::TestDb;
use orderhub_tests::tcp_proxy::TcpProxy;
use orderhub_tests::*;
use shared::config::HubConfig;
use shared::config_db::{self, Env};
use shared::live::LiveConfig;
use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio_util::sync::CancellationToken;

/// The transformer suite's hub: one tenant, a careem account whose store
/// 991 is branch `amman-abdoun`; store 992 is unmapped (the tenant does not
/// require mappings, so its orders have no branch).
const HUB: &str = r#"
[[tenant]]
id = "acme"
backend_url = "http://127.0.0.1:9/orders"

[[account]]
id = "acme-careem"
provider = "careem"
tenant = "acme"
secret_envs = ["TEST_CAREEM_SECRET"]
currency = "JOD"
country = "JO"
default = true
[account.branches]
"991" = "amman-abdoun"
[account.products]
"burger-classic" = "prod_1001"

[retry]
schedule = ["200ms"]
max_deliver = 5

[streams.consumers.transformer]
ack_wait = "1s"
"#;

const ORDER: &str = r#"{"order_id":"TEST123","store_id":"991","created_at":"2025-05-01T18:30:00+03:00","customer":{"name":"Laila","phone":"0791234567"},"items":[{"id":"burger-classic","name":"Burger","quantity":2,"price":2.675}],"total_amount":"5.350"}"#;

fn env() -> Env {
    Arc::new(|_: &str| Some("test-secret".to_owned()))
}

fn order(store: &str) -> String {
    ORDER.replace(r#""store_id":"991""#, &format!(r#""store_id":"{store}""#))
}

async fn imported(db: &TestDb, text: &str) -> anyhow::Result<PgPool> {
    let pool = db.pool().await?;
    tokio::time::timeout(
        STEP,
        config_db::import(&pool, text, "test", &|_| Some("test-secret".into())),
    )
    .await??;
    Ok(pool)
}

/// The real transformer on `live`, in process.
struct Running {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), shared::app::StageError>>,
    ops_port: u16,
}

impl Running {
    fn transformer(nats_url: &str, live: LiveConfig) -> Running {
        let shutdown = CancellationToken::new();
        let ops_port = free_port();
        let args = common_args(nats_url, ops_port);
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            let options = transformer::Options {
                concurrency: 4,
                publish_timeout: Duration::from_secs(5),
            };
            transformer::run_live(&args, live, options, token).await
        });
        Running {
            shutdown,
            task,
            ops_port,
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(STEP, self.task).await???;
        Ok(())
    }
}

/// `/ready`'s status and body.
async fn ready(ops_port: u16) -> anyhow::Result<(u16, serde_json::Value)> {
    let r = tokio::time::timeout(
        STEP,
        reqwest::get(format!("http://127.0.0.1:{ops_port}/ready")),
    )
    .await??;
    let status = r.status().as_u16();
    Ok((status, r.json().await?))
}

async fn metrics(ops_port: u16) -> String {
    let get = async {
        reqwest::get(format!("http://127.0.0.1:{ops_port}/metrics"))
            .await?
            .text()
            .await
    };
    match tokio::time::timeout(STEP, get).await {
        Ok(Ok(t)) => t,
        _ => String::new(),
    }
}

/// Publishes a careem webhook for `store` and returns the branch of the
/// order it became.
async fn branch_of(
    js: &jetstream::Context,
    webhook_id: &str,
    store: &str,
) -> anyhow::Result<serde_json::Value> {
    publish_raw(js, webhook_id, &order(store)).await?;
    let order = eventually(STEP, &format!("the order of {webhook_id}"), || async {
        let messages = stream_messages(js, "ORDERS").await.ok()?;
        messages.into_iter().find_map(|m| {
            let id = m.headers.get(shared::headers::WEBHOOK_ID)?.as_str();
            (id == webhook_id)
                .then(|| serde_json::from_slice::<serde_json::Value>(&m.payload).ok())
                .flatten()
        })
    })
    .await?;
    Ok(order["branch"].clone())
}

#[tokio::test]
async fn a_branch_mapping_added_in_postgres_changes_the_next_order_without_a_restart()
-> anyhow::Result<()> {
    let db = TestDb::create().await?;
    let pool = imported(&db, HUB).await?;
    let (hub, version) = config_db::load(&pool, &*env()).await?;
    let live = LiveConfig::new(hub, config_db::ORIGIN);
    let shutdown = CancellationToken::new();
    // A poll far beyond the test: the change arrives by NOTIFY.
    let watcher = tokio::spawn(config_db::watch(
        live.clone(),
        pool.clone(),
        version,
        Duration::from_secs(3600),
        env(),
        shutdown.clone(),
    ));

    let nats = NatsServer::start()?;
    let client = nats.client().await?;
    setup_streams(&client, &hub_from(HUB)).await?;
    let js = jetstream::new(client);
    let stage = Running::transformer(&nats.url(), live.clone());

    assert_eq!(branch_of(&js, "wh-1", "991").await?, "amman-abdoun");
    assert_eq!(
        branch_of(&js, "wh-2", "992").await?,
        serde_json::Value::Null
    );

    // The LISTEN connection is up before the change (else it would be
    // caught only by the poll, an hour away).
    eventually(STEP, "the stage listening", || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'listen%'",
        )
        .fetch_one(&pool)
        .await
        .ok()?;
        (n == 1).then_some(())
    })
    .await?;
    sqlx::query(
        "INSERT INTO hub_branches VALUES ('careem', 'acme-careem', '992', 'amman-sweifieh')",
    )
    .execute(&pool)
    .await?;
    eventually(STEP, "generation 2", || async {
        (live.generation() == 2).then_some(())
    })
    .await?;
    assert_eq!(branch_of(&js, "wh-3", "992").await?, "amman-sweifieh");
    assert_eq!(branch_of(&js, "wh-4", "991").await?, "amman-abdoun");
    let (status, body) = ready(stage.ops_port).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["checks"]["config"],
        serde_json::json!({"ok": true, "error": null, "generation": 2, "source": "postgres"})
    );
    let text = metrics(stage.ops_port).await;
    for line in [
        "transformer_config_generation 2\n",
        "transformer_config_reloads_total 1\n",
        "transformer_config_reload_failures_total 0\n",
        "transformer_config_reload_ok 1\n",
    ] {
        assert!(text.contains(line), "{line:?} not in\n{text}");
    }

    stage.stop().await?;
    shutdown.cancel();
    tokio::time::timeout(STEP, watcher).await??;
    Ok(())
}

#[tokio::test]
async fn an_invalid_change_is_refused_and_the_old_config_keeps_serving() -> anyhow::Result<()> {
    let db = TestDb::create().await?;
    let pool = imported(&db, HUB).await?;
    let (hub, version) = config_db::load(&pool, &*env()).await?;
    let live = LiveConfig::new(hub, config_db::ORIGIN);
    let shutdown = CancellationToken::new();
    let watcher = tokio::spawn(config_db::watch(
        live.clone(),
        pool.clone(),
        version,
        Duration::from_millis(300),
        env(),
        shutdown.clone(),
    ));
    let nats = NatsServer::start()?;
    let client = nats.client().await?;
    setup_streams(&client, &hub_from(HUB)).await?;
    let js = jetstream::new(client);
    let stage = Running::transformer(&nats.url(), live.clone());
    assert_eq!(branch_of(&js, "wh-1", "991").await?, "amman-abdoun");

    // One transaction: a new mapping and an account pointing at a tenant
    // that does not exist. Neither applies.
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO hub_branches VALUES ('careem', 'acme-careem', '992', 'amman-sweifieh')",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        r#"UPDATE hub_accounts SET doc = jsonb_set(doc, '{tenant}', '"ghost"') WHERE id = 'acme-careem'"#,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;

    let error = r#"hub config postgres: account acme-careem.tenant: unknown tenant "ghost""#;
    let body = eventually(STEP, "the refusal in /ready", || async {
        let (_, body) = ready(stage.ops_port).await.ok()?;
        (body["checks"]["config"]["ok"] == false).then_some(body)
    })
    .await?;
    assert_eq!(
        body["checks"]["config"],
        serde_json::json!({"ok": false, "error": error, "generation": 1, "source": "postgres"})
    );
    // Still ready: it serves the last good config.
    let (status, body) = ready(stage.ops_port).await?;
    assert_eq!((status, &body["ready"]), (200, &serde_json::json!(true)));
    let text = metrics(stage.ops_port).await;
    for line in [
        "transformer_config_generation 1\n",
        "transformer_config_reload_failures_total 1\n",
        "transformer_config_reload_ok 0\n",
    ] {
        assert!(text.contains(line), "{line:?} not in\n{text}");
    }
    assert_eq!(live.generation(), 1);
    assert_eq!(
        branch_of(&js, "wh-2", "992").await?,
        serde_json::Value::Null
    );
    assert_eq!(branch_of(&js, "wh-3", "991").await?, "amman-abdoun");
    // The refused version is not read again at every poll.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(
        metrics(stage.ops_port)
            .await
            .contains("transformer_config_reload_failures_total 1\n")
    );

    // Fixed: the whole change applies.
    sqlx::query(
        r#"UPDATE hub_accounts SET doc = jsonb_set(doc, '{tenant}', '"acme"') WHERE id = 'acme-careem'"#,
    )
    .execute(&pool)
    .await?;
    eventually(STEP, "generation 2", || async {
        (live.generation() == 2).then_some(())
    })
    .await?;
    assert_eq!(branch_of(&js, "wh-4", "992").await?, "amman-sweifieh");
    assert_eq!(
        ready(stage.ops_port).await?.1["checks"]["config"]["ok"],
        true
    );

    stage.stop().await?;
    shutdown.cancel();
    tokio::time::timeout(STEP, watcher).await??;
    Ok(())
}

/// The fixtures' deliveries as the golden tests build them.
fn delivery(f: &fixtures::Fixture) -> shared::worker::Delivery {
    let account = f
        .path_headers
        .get(shared::headers::ACCOUNT)
        .cloned()
        .unwrap_or_else(|| format!("acme-{}", f.provider));
    let tenant = if account.starts_with("strict") {
        "strict"
    } else {
        "acme"
    };
    let mut h = async_nats::HeaderMap::new();
    h.insert(shared::headers::WEBHOOK_ID, "wh-import");
    h.insert(shared::headers::PROVIDER, f.provider.as_str());
    h.insert(shared::headers::ACCOUNT, account.as_str());
    h.insert(shared::headers::TENANT, tenant);
    h.insert(shared::headers::RECEIVED_AT, fixtures::GOLDEN_RECEIVED_AT);
    for (k, v) in &f.path_headers {
        h.insert(k.as_str(), v.as_str());
    }
    shared::worker::Delivery {
        subject: shared::subjects::raw_webhook(f.provider, &account),
        headers: h,
        payload: bytes::Bytes::from(f.body.clone()),
        stream: "WEBHOOKS".to_owned(),
        stream_seq: 42,
        delivered: 1,
        published: std::time::SystemTime::UNIX_EPOCH,
        is_last: false,
        provider: f.provider.as_str().to_owned(),
        tenant: Some(tenant.to_owned()),
        webhook_id: Some("wh-import".to_owned()),
    }
}

#[tokio::test]
async fn an_imported_toml_file_converts_every_fixture_like_the_file() -> anyhow::Result<()> {
    let text = std::fs::read_to_string(workspace().join("tests/fixtures/hub.toml"))?;
    let secrets = |name: &str| {
        Some(match name {
            "S_GRAB" => "grab-token-signing-key-for-tests-only-32b".to_owned(),
            _ => "whsec_dGVzdA==".to_owned(),
        })
    };
    let from_file = HubConfig::from_toml(&text, "tests/fixtures/hub.toml", &secrets)?;
    let db = TestDb::create().await?;
    let pool = db.pool().await?;
    config_db::import(&pool, &text, "tests/fixtures/hub.toml", &secrets).await?;
    let (from_db, _) = config_db::load(&pool, &secrets).await?;
    assert_eq!(from_db.accounts.len(), from_file.accounts.len());
    assert_eq!(from_db.tenants.len(), from_file.tenants.len());

    let all = fixtures::all();
    assert!(all.len() >= 20, "fixtures went missing: {}", all.len());
    let mut orders = 0;
    for f in &all {
        let d = delivery(f);
        let want = transformer::convert(&from_file, &d)
            .map(|o| serde_json::to_value(o).unwrap())
            .map_err(|e| e.to_string());
        let got = transformer::convert(&from_db, &d)
            .map(|o| serde_json::to_value(o).unwrap())
            .map_err(|e| e.to_string());
        assert_eq!(got, want, "{}", f.name);
        orders += usize::from(want.is_ok());
    }
    assert!(orders >= 15, "only {orders} fixtures converted");

    // A second import of the same file is the same tables.
    let before = config_db::read(&pool).await?;
    config_db::import(&pool, &text, "tests/fixtures/hub.toml", &secrets).await?;
    let after = config_db::read(&pool).await?;
    assert_eq!(after.doc, before.doc);
    assert!(after.version > before.version);
    Ok(())
}

#[tokio::test]
async fn a_lost_notification_is_caught_by_the_periodic_check() -> anyhow::Result<()> {
    let db = TestDb::create().await?;
    let direct = imported(&db, HUB).await?;
    let server: sqlx::postgres::PgConnectOptions = pg::server_url().parse()?;
    let target = tokio::net::lookup_host((server.get_host(), server.get_port()))
        .await?
        .next()
        .ok_or_else(|| anyhow::anyhow!("no address for the test server"))?;
    let mut proxy = TcpProxy::start(target).await?;
    let via = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(2))
        .connect_with(db.options_via(proxy.port))
        .await?;
    let (hub, version) = config_db::load(&via, &*env()).await?;
    let live = LiveConfig::new(hub, config_db::ORIGIN);
    let shutdown = CancellationToken::new();
    let watcher = tokio::spawn(config_db::watch(
        live.clone(),
        via,
        version,
        Duration::from_millis(300),
        env(),
        shutdown.clone(),
    ));
    let listening = || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'listen%'",
        )
        .fetch_one(&direct)
        .await
        .ok()?;
        (n == 1).then_some(())
    };
    eventually(STEP, "the watcher listening", listening).await?;

    // The LISTEN connection is cut; the change's notification goes nowhere.
    proxy.down();
    eventually(STEP, "the LISTEN connection gone", || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'listen%'",
        )
        .fetch_one(&direct)
        .await
        .ok()?;
        (n == 0).then_some(())
    })
    .await?;
    sqlx::query(
        "INSERT INTO hub_branches VALUES ('careem', 'acme-careem', '992', 'amman-sweifieh')",
    )
    .execute(&direct)
    .await?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(live.generation(), 1, "applied while the database was away");
    proxy.up().await?;

    eventually(STEP, "the change caught by the periodic check", || async {
        (live.generation() == 2).then_some(())
    })
    .await?;
    assert_eq!(
        live.load().accounts[0]
            .branches
            .get("992")
            .map(String::as_str),
        Some("amman-sweifieh")
    );
    assert_eq!(live.detail()["ok"], true);
    shutdown.cancel();
    tokio::time::timeout(STEP, watcher).await??;
    Ok(())
}

#[tokio::test]
async fn the_ledger_and_config_migrations_share_one_database_in_either_order() -> anyhow::Result<()>
{
    let want: Vec<i64> = {
        let mut v: Vec<i64> = ledger::store::MIGRATOR
            .iter()
            .chain(config_db::MIGRATOR.iter())
            .map(|m| m.version)
            .collect();
        v.sort();
        v
    };
    for config_first in [false, true] {
        let db = TestDb::create().await?;
        let pool = db.pool().await?;
        for _ in 0..2 {
            if config_first {
                config_db::MIGRATOR.run(&pool).await?;
                ledger::store::MIGRATOR.run(&pool).await?;
            } else {
                ledger::store::MIGRATOR.run(&pool).await?;
                config_db::MIGRATOR.run(&pool).await?;
            }
        }
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
                .fetch_all(&pool)
                .await?;
        assert_eq!(applied, want, "config first: {config_first}");
        pool.close().await;
    }
    Ok(())
}

/// Runs a workspace binary to its exit: (code, stdout, stderr).
async fn run_bin(
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<(Option<i32>, String, String)> {
    let mut cmd = tokio::process::Command::new(stack::bin(name)?);
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env_remove("CONFIG_SOURCE")
        .env_remove("HUB_CONFIG")
        .env("OPS_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("NATS_URL", format!("nats://127.0.0.1:{}", free_port()))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(STEP, cmd.output()).await??;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test]
async fn postgres_mode_fails_closed_at_start() -> anyhow::Result<()> {
    let (code, _, stderr) = run_bin("transformer", &[], &[("CONFIG_SOURCE", "postgres")]).await?;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("error: CONFIG_SOURCE=postgres needs DATABASE_URL\n"),
        "{stderr}"
    );

    let empty = TestDb::create().await?;
    let url = empty.url()?;
    let (code, _, stderr) = run_bin(
        "transformer",
        &[],
        &[("CONFIG_SOURCE", "postgres"), ("DATABASE_URL", &url)],
    )
    .await?;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("error: CONFIG_SOURCE=postgres: the hub config tables are missing from the database (`ledger config import <file>` creates them)\n"),
        "{stderr}"
    );

    // Nothing listens there; the password never shows.
    let away = format!(
        "postgres://orderhub:hunter2-not-shown@127.0.0.1:{}/hub",
        free_port()
    );
    let (code, stdout, stderr) = run_bin(
        "transformer",
        &[],
        &[("CONFIG_SOURCE", "postgres"), ("DATABASE_URL", &away)],
    )
    .await?;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("error: CONFIG_SOURCE=postgres: cannot connect to the config database:"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2") && !stdout.contains("hunter2"));

    // The tables there but a row invalid: refused at start, naming it.
    let db = TestDb::create().await?;
    let pool = imported(&db, HUB).await?;
    sqlx::query(
        r#"UPDATE hub_accounts SET doc = jsonb_set(doc, '{tenant}', '"ghost"') WHERE id = 'acme-careem'"#,
    )
    .execute(&pool)
    .await?;
    let (code, _, stderr) = run_bin(
        "transformer",
        &[],
        &[
            ("CONFIG_SOURCE", "postgres"),
            ("DATABASE_URL", &db.url()?),
            ("TEST_CAREEM_SECRET", "test-secret"),
        ],
    )
    .await?;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(r#"error: CONFIG_SOURCE=postgres: hub config postgres: account acme-careem.tenant: unknown tenant "ghost""#),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn the_import_refuses_an_invalid_file_and_writes_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let good = dir.path().join("hub.toml");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&good, HUB)?;
    std::fs::write(
        &bad,
        HUB.replace(r#"tenant = "acme""#, r#"tenant = "ghost""#),
    )?;
    let db = TestDb::create().await?;
    let url = db.url()?;
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("TEST_CAREEM_SECRET", "test-secret"),
    ];
    let import = |file: &std::path::Path| {
        let file = file.display().to_string();
        async move { run_bin("ledger", &["config", "import", &file], &env).await }
    };

    // Refused before anything is written: not even the tables.
    let (code, _, stderr) = import(&bad).await?;
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "error: hub config {}: account acme-careem.tenant: unknown tenant \"ghost\"\n",
            bad.display()
        )
    );
    let pool = db.pool().await?;
    let table: Option<String> = sqlx::query_scalar("SELECT to_regclass('hub_tenants')::text")
        .fetch_one(&pool)
        .await?;
    assert_eq!(table, None);

    let (code, stdout, stderr) = import(&good).await?;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stdout,
        format!(
            "imported {}: 1 tenants, 1 accounts, 1 branch mappings, 1 product mappings, 2 settings sections\n",
            good.display()
        )
    );
    let before = config_db::read(&pool).await?;

    // Refused over a good config: the rows stay as they were.
    let (code, _, stderr) = import(&bad).await?;
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(config_db::read(&pool).await?, before);

    // Export gives back the file's config.
    let (code, exported, stderr) = run_bin("ledger", &["config", "export"], &env).await?;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        format!("{:?}", hub_from(&exported)),
        format!("{:?}", hub_from(HUB))
    );

    // Without DATABASE_URL it says so.
    let (code, _, stderr) = run_bin(
        "ledger",
        &["config", "import", &good.display().to_string()],
        &[],
    )
    .await?;
    assert_eq!(
        (code, stderr.as_str()),
        (
            Some(2),
            "error: DATABASE_URL is required for ledger config\n"
        )
    );
    Ok(())
}

#[tokio::test]
async fn sighup_reloads_an_edited_file_and_refuses_an_invalid_edit() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let client = nats.client().await?;
    setup_streams(&client, &hub_from(HUB)).await?;
    let js = jetstream::new(client);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("hub.toml");
    std::fs::write(&path, HUB)?;
    let ops_port = free_port();
    let log = std::fs::File::create(dir.path().join("transformer.log"))?;
    let mut child = tokio::process::Command::new(stack::bin("transformer")?)
        .env_remove("DATABASE_URL")
        .env_remove("CONFIG_SOURCE")
        .env("HUB_CONFIG", &path)
        .env("NATS_URL", nats.url())
        .env("OPS_ADDR", format!("127.0.0.1:{ops_port}"))
        .env("TEST_CAREEM_SECRET", "test-secret")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().expect("running").to_string();
    let hup = || {
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
    };
    let log = || std::fs::read_to_string(dir.path().join("transformer.log")).unwrap_or_default();
    eventually(STEP, "the transformer ready", || async {
        let (status, _) = ready(ops_port).await.ok()?;
        (status == 200).then_some(())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", log()))?;
    assert_eq!(branch_of(&js, "wh-1", "991").await?, "amman-abdoun");

    std::fs::write(&path, HUB.replace("amman-abdoun", "amman-jabal"))?;
    assert!(hup()?.success());
    eventually(STEP, "generation 2", || async {
        let (_, body) = ready(ops_port).await.ok()?;
        (body["checks"]["config"]["generation"] == 2).then_some(())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", log()))?;
    assert_eq!(branch_of(&js, "wh-2", "991").await?, "amman-jabal");

    std::fs::write(
        &path,
        HUB.replace("amman-abdoun", "amman-other")
            .replace(r#"tenant = "acme""#, r#"tenant = "ghost""#),
    )?;
    assert!(hup()?.success());
    let body = eventually(STEP, "the refusal", || async {
        let (_, body) = ready(ops_port).await.ok()?;
        (body["checks"]["config"]["ok"] == false).then_some(body)
    })
    .await?;
    assert_eq!(
        body["checks"]["config"],
        serde_json::json!({
            "ok": false,
            "error": format!("hub config {}: account acme-careem.tenant: unknown tenant \"ghost\"", path.display()),
            "generation": 2,
            "source": format!("file {}", path.display()),
        })
    );
    assert_eq!(body["ready"], true);
    assert_eq!(branch_of(&js, "wh-3", "991").await?, "amman-jabal");
    assert!(
        metrics(ops_port)
            .await
            .contains("transformer_config_reload_failures_total 1\n")
    );
    assert!(log().contains("hub config reload refused"), "{}", log());

    child.start_kill()?;
    tokio::time::timeout(STEP, child.wait()).await??;
    Ok(())
}

/// The ingress on `live`, in process: (webhook base URL, ops URL, stop).
async fn start_ingress(
    nats: &NatsServer,
    live: LiveConfig,
) -> anyhow::Result<(
    String,
    String,
    CancellationToken,
    tokio::task::JoinHandle<()>,
)> {
    let args = ingress::IngressArgs {
        listen_addr: "127.0.0.1:0".parse()?,
        header_read_timeout_ms: 2000,
        body_read_timeout_ms: 2000,
        shutdown_drain_ms: 2000,
    };
    let shutdown = CancellationToken::new();
    let running = tokio::time::timeout(
        STEP,
        ingress::start_live(&common_args(&nats.url(), 0), &args, live, shutdown.clone()),
    )
    .await??;
    Ok((
        format!("http://{}", running.addr),
        format!("http://{}", running.ops_addr),
        shutdown,
        running.task,
    ))
}

/// The status of a Careem webhook to `account` signed with `secret`.
async fn careem_status(base: &str, account: &str, secret: &str) -> anyhow::Result<u16> {
    // A new order each time: the same one twice is a duplicate (200).
    let body = order("991").replace("TEST123", &uuid::Uuid::new_v4().simple().to_string());
    let headers = shared::verify::careem::sign(
        body.as_bytes(),
        &secrecy::SecretString::from(secret.to_owned()),
    );
    let r = tokio::time::timeout(
        STEP,
        reqwest::Client::new()
            .post(format!("{base}/api/webhooks/careem/{account}"))
            .headers(headers)
            .header("content-type", "application/json")
            .body(body)
            .send(),
    )
    .await??;
    Ok(r.status().as_u16())
}

#[tokio::test]
async fn the_ingress_applies_a_rotated_secret_and_a_new_account_without_a_restart()
-> anyhow::Result<()> {
    let secrets = |name: &str| match name {
        "SECRET_OLD" => Some("the-old-careem-secret".to_owned()),
        "SECRET_NEW" => Some("the-new-careem-secret".to_owned()),
        _ => None,
    };
    let base_toml = HUB.replace(r#"["TEST_CAREEM_SECRET"]"#, r#"["SECRET_OLD"]"#);
    let hub = HubConfig::from_toml(&base_toml, "test", &secrets)?;
    let live = LiveConfig::new(hub, "test");
    let nats = NatsServer::start()?;
    let (base, ops, shutdown, task) = start_ingress(&nats, live.clone()).await?;

    assert_eq!(
        careem_status(&base, "acme-careem", "the-old-careem-secret").await?,
        202
    );
    assert_eq!(
        careem_status(&base, "acme-careem", "the-new-careem-secret").await?,
        401
    );
    assert_eq!(
        careem_status(&base, "acme-second", "the-new-careem-secret").await?,
        401
    );

    // The secret rotated to the new one, and a second account.
    let edited = format!(
        "{}\n[[account]]\nid = \"acme-second\"\nprovider = \"careem\"\ntenant = \"acme\"\nsecret_envs = [\"SECRET_NEW\"]\ncurrency = \"JOD\"\n",
        base_toml.replace(r#"["SECRET_OLD"]"#, r#"["SECRET_NEW"]"#)
    );
    let reloaded = live
        .reload("test", Ok(HubConfig::from_toml(&edited, "test", &secrets)?))
        .await?;
    assert_eq!(reloaded, shared::live::Reloaded::Applied { generation: 2 });
    assert_eq!(
        careem_status(&base, "acme-careem", "the-old-careem-secret").await?,
        401
    );
    assert_eq!(
        careem_status(&base, "acme-careem", "the-new-careem-secret").await?,
        202
    );
    assert_eq!(
        careem_status(&base, "acme-second", "the-new-careem-secret").await?,
        202
    );

    // A change to the listener's limits waits for a restart; the rest applies.
    let limited = format!("{edited}\n[ingress]\nmax_body_bytes = 100\n");
    let partly = live
        .reload(
            "test",
            Ok(HubConfig::from_toml(&limited, "test", &secrets)?),
        )
        .await?;
    assert_eq!(
        partly,
        shared::live::Reloaded::Partly {
            generation: 3,
            refused: vec!["ingress"]
        }
    );
    // Larger than 100 bytes, and still accepted.
    assert!(order("991").len() > 100);
    assert_eq!(
        careem_status(&base, "acme-careem", "the-new-careem-secret").await?,
        202
    );
    let body: serde_json::Value = reqwest::get(format!("{ops}/ready")).await?.json().await?;
    assert_eq!(
        body["checks"]["config"],
        serde_json::json!({
            "ok": false,
            "error": "test: ingress changed: only a restart applies it (running values kept; the rest applied)",
            "generation": 3,
            "source": "test",
        })
    );
    let text = reqwest::get(format!("{ops}/metrics")).await?.text().await?;
    assert!(
        text.contains("ingress_config_reload_failures_total 1\n"),
        "{text}"
    );
    assert!(text.contains("ingress_config_reload_ok 0\n"), "{text}");

    shutdown.cancel();
    tokio::time::timeout(STEP, task).await??;
    Ok(())
}

fn forwarder_hub(backend_url: &str, key: bool) -> String {
    let key = if key {
        "backend_key_env = \"BACKEND_KEY\"\n"
    } else {
        ""
    };
    format!(
        "[[tenant]]\nid = \"acme\"\nbackend_url = \"{backend_url}\"\n{key}\n[forwarder]\nallowed_private_destinations = [\"127.0.0.0/8\"]\n\n[retry]\nschedule = [\"200ms\"]\nmax_deliver = 5\n"
    )
}

#[tokio::test]
async fn the_forwarder_delivers_to_a_tenants_new_backend_after_a_reload() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let first = TestBackend::start().await?;
    let second = TestBackend::start().await?;
    let hub = hub_from(&forwarder_hub(&first.url(), false));
    let client = nats.client().await?;
    setup_streams(&client, &hub).await?;
    let js = jetstream::new(client);
    let live = LiveConfig::new(hub, "test");

    let shutdown = CancellationToken::new();
    let args = common_args(&nats.url(), free_port());
    let (stage_live, token) = (live.clone(), shutdown.clone());
    let task = tokio::spawn(async move {
        shared::app::run_stage_live(
            &args,
            &stage_live,
            &forwarder::SPEC,
            |registry, js| forwarder::Forwarder::live(stage_live.clone(), registry, js.clone()),
            |o| {
                o.concurrency = 4;
                o.pull_expires = Duration::from_secs(1);
                o.shutdown_grace = Duration::from_secs(2);
            },
            token,
        )
        .await
    });

    let body = r#"{"provider_order_id":"TEST123"}"#;
    publish_order(&js, "acme", "wh-f1", body).await?;
    eventually(STEP, "the first backend's delivery", || async {
        (first.requests().len() == 1).then_some(())
    })
    .await?;
    assert_eq!(first.requests()[0].header("x-auth"), None);

    let reloaded = live
        .reload("test", Ok(hub_from(&forwarder_hub(&second.url(), true))))
        .await?;
    assert_eq!(reloaded, shared::live::Reloaded::Applied { generation: 2 });
    publish_order(&js, "acme", "wh-f2", body).await?;
    eventually(STEP, "the second backend's delivery", || async {
        (second.requests().len() == 1).then_some(())
    })
    .await?;
    let got = &second.requests()[0];
    assert_eq!(got.header("x-auth"), Some("test-secret"));
    assert_eq!(got.header("idempotency-key"), Some("wh-f2"));
    assert_eq!(first.requests().len(), 1);

    // The tenant removed: its orders still reach its last backend until a
    // restart (its consumer was made at start), not dead-lettered.
    let without = forwarder_hub(&first.url(), false).replace("id = \"acme\"", "id = \"other\"");
    live.reload("test", Ok(hub_from(&without))).await?;
    publish_order(&js, "acme", "wh-f3", body).await?;
    eventually(STEP, "the removed tenant's delivery", || async {
        (second.requests().len() == 2).then_some(())
    })
    .await?;
    assert_eq!(
        second.requests()[1].header("idempotency-key"),
        Some("wh-f3")
    );
    assert_eq!(first.requests().len(), 1);

    shutdown.cancel();
    tokio::time::timeout(STEP, task).await???;
    Ok(())
}

fn fetcher_hub(api_url: &str, late_has_api: bool) -> String {
    let api = |late: bool| {
        if late && !late_has_api {
            String::new()
        } else {
            format!(
                "[account.api]\nbase_url = \"{api_url}\"\ntoken_url = \"{api_url}/oauth/v2/token\"\nclient_id_env = \"S\"\nclient_secret_env = \"S\"\n"
            )
        }
    };
    format!(
        "[[tenant]]\nid = \"acme\"\nbackend_url = \"http://127.0.0.1:9/orders\"\n\n\
         [[account]]\nid = \"acme-ubereats\"\nprovider = \"ubereats\"\ntenant = \"acme\"\nsecret_envs = [\"S\"]\n{}\n\
         [[account]]\nid = \"acme-late\"\nprovider = \"ubereats\"\ntenant = \"acme\"\nsecret_envs = [\"S\"]\n{}\n\
         [provider_api]\nallowed_private_destinations = [\"127.0.0.0/8\"]\nrequest_timeout = \"2s\"\n\n\
         [fetcher]\nschedule = [\"200ms\"]\nmax_deliver = 5\nnot_found_retries = 2\n",
        api(false),
        api(true)
    )
}

/// An Uber Eats notification for `order` to `account`, as the ingress
/// stores it.
async fn notify(
    js: &jetstream::Context,
    account: &str,
    webhook_id: &str,
    order: &str,
) -> anyhow::Result<()> {
    let body = serde_json::json!({
        "event_id": format!("ev-{order}"),
        "event_time": 1718388131,
        "event_type": "orders.notification",
        "meta": {"user_id": "store-1", "resource_id": order, "status": "pos"},
        "resource_href": format!("https://api.uber.com/v2/eats/order/{order}"),
    })
    .to_string();
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Msg-Id", format!("ubereats:{webhook_id}").as_str());
    h.insert(shared::headers::WEBHOOK_ID, webhook_id);
    h.insert(shared::headers::PROVIDER, "ubereats");
    h.insert(shared::headers::ACCOUNT, account);
    h.insert(shared::headers::TENANT, "acme");
    h.insert(
        shared::headers::RECEIVED_AT,
        shared::dlq::rfc3339(std::time::SystemTime::now()).as_str(),
    );
    let subject = shared::subjects::raw_webhook(shared::Provider::Ubereats, account);
    tokio::time::timeout(
        STEP,
        js.publish_with_headers(subject, h, bytes::Bytes::from(body)),
    )
    .await??
    .await?;
    Ok(())
}

#[tokio::test]
async fn the_fetcher_fetches_for_an_account_given_its_api_by_a_reload() -> anyhow::Result<()> {
    use orderhub_tests::fake_provider::{Api, FakeProvider, Platform};
    let fake = FakeProvider::start().await?;
    fake.add_uber_client("test-secret", "test-secret");
    fake.put_order(
        Platform::Ubereats,
        Api::V2,
        "order-2",
        br#"{"id":"order-2"}"#,
    );
    let hub = hub_from(&fetcher_hub(&fake.url(), false));
    let nats = NatsServer::start()?;
    let client = nats.client().await?;
    setup_streams(&client, &hub).await?;
    let js = jetstream::new(client);
    let live = LiveConfig::new(hub.clone(), "test");
    let prepared =
        fetcher::Prepared::new(Arc::new(hub), Ok(test_token_key()))?.follow(live.clone());
    let shutdown = CancellationToken::new();
    let args = common_args(&nats.url(), free_port());
    let token = shutdown.clone();
    let task = tokio::spawn(async move {
        let options = fetcher::Options {
            concurrency: 4,
            publish_timeout: Duration::from_secs(5),
        };
        fetcher::run(&args, prepared, options, token).await
    });

    notify(&js, "acme-late", "wh-late-1", "order-1").await?;
    let (entry, _) = await_dead_letter(&js).await?;
    assert_eq!(
        entry.error_class,
        shared::failure::FailureClass::FetchRequired
    );
    assert_eq!(
        entry.error,
        "ubereats account acme-late has no [account.api]: configure its API credentials, then replay"
    );

    let reloaded = live
        .reload("test", Ok(hub_from(&fetcher_hub(&fake.url(), true))))
        .await?;
    assert_eq!(reloaded, shared::live::Reloaded::Applied { generation: 2 });
    notify(&js, "acme-late", "wh-late-2", "order-2").await?;
    let fetched = eventually(STEP, "the fetched order", || async {
        let m = stream_messages(&js, "WEBHOOKS").await.ok()?;
        m.into_iter()
            .find(|m| m.subject.as_str() == "webhooks.fetched.ubereats.acme-late")
    })
    .await?;
    assert_eq!(&fetched.payload[..], br#"{"id":"order-2"}"#);
    assert_eq!(dead_letters(&js).await?.len(), 1);

    shutdown.cancel();
    tokio::time::timeout(STEP, task).await???;
    Ok(())
}

#[tokio::test]
async fn a_burst_of_changes_in_one_transaction_reloads_once() -> anyhow::Result<()> {
    let db = TestDb::create().await?;
    let pool = imported(&db, HUB).await?;
    let (hub, version) = config_db::load(&pool, &*env()).await?;
    let live = LiveConfig::new(hub, config_db::ORIGIN);
    let shutdown = CancellationToken::new();
    let watcher = tokio::spawn(config_db::watch(
        live.clone(),
        pool.clone(),
        version,
        Duration::from_millis(200),
        env(),
        shutdown.clone(),
    ));
    let mut tx = pool.begin().await?;
    for store in 0..20 {
        sqlx::query("INSERT INTO hub_branches VALUES ('careem', 'acme-careem', $1, $2)")
            .bind(format!("s{store}"))
            .bind(format!("b{store}"))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    eventually(STEP, "generation 2", || async {
        (live.generation() == 2).then_some(())
    })
    .await?;
    // Several polls later: nothing more to load.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(live.generation(), 2);
    assert_eq!(live.load().accounts[0].branches.len(), 21);
    shutdown.cancel();
    tokio::time::timeout(STEP, watcher).await??;
    Ok(())
}
