//! The ledger stage against a real nats-server and a real PostgreSQL (a
//! database of each test's own): every stream lands once, redeliveries
//! are stored once, acks wait for the commit, an outage is waited out,
//! stats and timelines answer what the test published, old days go.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_nats::HeaderMap;
use async_nats::jetstream;
use bytes::Bytes;
use secrecy::SecretString;
use shared::Provider;
use shared::headers;
use shared::outcome::{Kind, Outcome, Source as OutcomeSource, Stage};
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use orderhub_tests::pg::TestDb;
use orderhub_tests::tcp_proxy::TcpProxy;
use orderhub_tests::{
    NatsServer, STEP, common_args, eventually, free_port, hub_from, worker_hub_toml,
};

pub(crate) const TOKEN: &str = "ledger-operator-token-for-tests";

/// The ledger running in this process (the e2e suite runs it beside the
/// whole hub too).
pub(crate) struct Ledger {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), ledger::LedgerError>>,
    api: String,
    ops: String,
}

impl Ledger {
    pub(crate) fn start(nats: &NatsServer, database: sqlx::postgres::PgConnectOptions) -> Ledger {
        let hub = hub_from(&worker_hub_toml(&["1s"], 5, "30s"));
        let api_port = free_port();
        let ops_port = free_port();
        let options = ledger::Options {
            database,
            api_addr: ([127, 0, 0, 1], api_port).into(),
            token: SecretString::from(TOKEN),
            retention_days: 30,
            batch: 50,
            batch_wait: Duration::from_millis(200),
            max_connections: 4,
            writers: 2,
            retention_every: Duration::from_secs(3600),
        };
        let args = common_args(&nats.url(), ops_port);
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = tokio::spawn(async move { ledger::run(&args, &hub, options, token).await });
        Ledger {
            shutdown,
            task,
            api: format!("http://127.0.0.1:{api_port}"),
            ops: format!("http://127.0.0.1:{ops_port}"),
        }
    }

    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(STEP, self.task).await???;
        Ok(())
    }

    pub(crate) async fn get(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let mut req = reqwest::Client::new().get(format!("{}{path}", self.api));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = tokio::time::timeout(STEP, req.send()).await??;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await?))
    }

    pub(crate) async fn ready(&self) -> Option<(u16, serde_json::Value)> {
        let resp = reqwest::get(format!("{}/ready", self.ops)).await.ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.json().await.ok()?))
    }
}

pub(crate) async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap_or(-1)
}

/// Waits until `sql` counts `n`.
async fn await_count(pool: &PgPool, sql: &str, n: i64) -> anyhow::Result<()> {
    let shown = eventually(Duration::from_secs(30), &format!("{sql} = {n}"), || async {
        (count(pool, sql).await == n).then_some(())
    })
    .await;
    match shown {
        Ok(()) => Ok(()),
        Err(e) => anyhow::bail!("{e} (it is {})", count(pool, sql).await),
    }
}

fn ms(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(t.millisecond() as u32 * 1_000_000)
        .unwrap()
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

async fn publish(
    js: &jetstream::Context,
    subject: String,
    headers: HeaderMap,
    body: impl Into<Bytes>,
) -> anyhow::Result<u64> {
    let ack = tokio::time::timeout(STEP, js.publish_with_headers(subject, headers, body.into()))
        .await??
        .await?;
    Ok(ack.sequence)
}

/// A raw webhook as the ingress stores it, accepted at `received`.
async fn raw(
    js: &jetstream::Context,
    provider: Provider,
    account: &str,
    webhook_id: &str,
    received: OffsetDateTime,
    replay_of: Option<&str>,
) -> anyhow::Result<u64> {
    let mut h = HeaderMap::new();
    h.insert(
        "Nats-Msg-Id",
        format!("{provider}:{webhook_id}:{}", replay_of.unwrap_or("")).as_str(),
    );
    h.insert(headers::WEBHOOK_ID, webhook_id);
    h.insert(headers::PROVIDER, provider.as_str());
    h.insert(headers::ACCOUNT, account);
    h.insert(headers::TENANT, "acme");
    h.insert(headers::RECEIVED_AT, rfc3339(received).as_str());
    if let Some(r) = replay_of {
        h.insert(headers::REPLAY_OF, r);
    }
    let subject = shared::subjects::raw_webhook(provider, account);
    publish(js, subject, h, format!("{{\"order\":\"{webhook_id}\"}}")).await
}

fn order_body(webhook_id: &str, order_id: &str, notes: &str) -> String {
    serde_json::json!({
        "schema": "orderhub.order.v1",
        "webhook_id": webhook_id,
        "event": "created",
        "provider": "careem",
        "provider_order_id": order_id,
        "tenant": "acme",
        "notes": notes,
    })
    .to_string()
}

async fn order(js: &jetstream::Context, webhook_id: &str, order_id: &str) -> anyhow::Result<u64> {
    orderhub_tests::publish_order(
        js,
        "acme",
        webhook_id,
        &order_body(webhook_id, order_id, ""),
    )
    .await
}

fn decision_body(status_id: &str, order_id: &str, webhook_id: &str, action: &str) -> String {
    serde_json::json!({
        "schema": "orderhub.status.v1",
        "status_id": status_id,
        "tenant": "acme",
        "provider": "careem",
        "account": "acme-careem",
        "provider_order_id": order_id,
        "action": action,
        "reason": null,
        "origin": "backend",
        "decided_at": rfc3339(OffsetDateTime::now_utc()),
        "order_webhook_id": webhook_id,
    })
    .to_string()
}

async fn decision(
    js: &jetstream::Context,
    status_id: &str,
    order_id: &str,
    webhook_id: &str,
    action: &str,
) -> anyhow::Result<u64> {
    let mut h = HeaderMap::new();
    h.insert("Nats-Msg-Id", format!("status:{status_id}").as_str());
    h.insert(headers::STATUS_ID, status_id);
    let subject = shared::subjects::status_command(Provider::Careem, "acme-careem");
    publish(
        js,
        subject,
        h,
        decision_body(status_id, order_id, webhook_id, action),
    )
    .await
}

/// An outcome of a careem message of `acme-careem`.
fn step(stage: Stage, kind: Kind, ok: bool, webhook_id: &str, order_id: Option<&str>) -> Outcome {
    let mut o = Outcome::new(stage, kind, Provider::Careem, ok);
    o.account = Some("acme-careem".into());
    o.tenant = Some("acme".into());
    o.webhook_id = Some(webhook_id.into());
    o.provider_order_id = order_id.map(str::to_owned);
    o
}

async fn outcome(js: &jetstream::Context, o: &Outcome) -> anyhow::Result<()> {
    shared::outcome::publish(js, o, STEP).await?;
    Ok(())
}

/// A dead letter of `stage` about a message of `stream`.
async fn dead_letter(
    js: &jetstream::Context,
    stage: &str,
    stream: &str,
    seq: u64,
    webhook_id: &str,
    body: String,
) -> anyhow::Result<u64> {
    let now = std::time::SystemTime::now();
    let entry = shared::dlq::DeadLetter {
        stage: stage.into(),
        stream: stream.into(),
        subject: "x.y".into(),
        seq,
        webhook_id: Some(webhook_id.into()),
        provider: "careem".into(),
        tenant: Some("acme".into()),
        deliveries: 3,
        first_failure: now,
        last_failure: now,
        error_class: "invalid_payload".parse().unwrap(),
        error: "the test said so".into(),
        moved_by: shared::dlq::MovedBy::Worker,
    };
    let mut original = HeaderMap::new();
    original.insert(headers::ACCOUNT, "acme-careem");
    let ack = tokio::time::timeout(
        STEP,
        js.publish_with_headers(entry.subject(), entry.headers(Some(&original)), body.into()),
    )
    .await??
    .await?;
    Ok(ack.sequence)
}

async fn setup() -> anyhow::Result<(NatsServer, jetstream::Context, TestDb, PgPool)> {
    let nats = NatsServer::start()?;
    let js = jetstream::new(nats.client().await?);
    let hub = hub_from(&worker_hub_toml(&["1s"], 5, "30s"));
    let defs = shared::streams::Definitions::load(&hub.streams);
    tokio::time::timeout(
        STEP,
        shared::app::ensure_streams(
            &js,
            &defs,
            &["WEBHOOKS", "ORDERS", "STATUS", "OUTCOMES", "DLQ"],
            true,
        ),
    )
    .await??;
    let db = TestDb::create().await?;
    let pool = db.pool().await?;
    Ok((nats, js, db, pool))
}

const ROWS: [(&str, i64); 6] = [
    ("webhook_logs", 1),
    ("provider_order_logs", 1),
    ("status_decisions", 1),
    ("order_outcomes", 1),
    ("delivery_error_logs", 1),
    ("ledger_unparsed", 2),
];

async fn assert_rows(pool: &PgPool) -> anyhow::Result<()> {
    for (table, n) in ROWS {
        await_count(pool, &format!("SELECT count(*) FROM {table}"), n).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stream_lands_once_and_three_redeliveries_store_nothing_more() -> anyhow::Result<()> {
    let (nats, js, db, pool) = setup().await?;
    let now = ms(OffsetDateTime::now_utc());
    raw(&js, Provider::Careem, "acme-careem", "wh_a", now, None).await?;
    let order_seq = order(&js, "wh_a", "4471").await?;
    decision(&js, "st_a", "4471", "wh_a", "accept").await?;
    outcome(
        &js,
        &step(
            Stage::Transformer,
            Kind::Converted,
            true,
            "wh_a",
            Some("4471"),
        ),
    )
    .await?;
    dead_letter(
        &js,
        "forwarder",
        "ORDERS",
        order_seq,
        "wh_a",
        order_body("wh_a", "4471", ""),
    )
    .await?;
    // Kept raw: an order that is not JSON, and one whose JSON PostgreSQL's
    // jsonb refuses (a \u0000 in a string): neither blocks its batch.
    orderhub_tests::publish_order(&js, "acme", "wh_bad", "{not json").await?;
    orderhub_tests::publish_order(
        &js,
        "acme",
        "wh_nul",
        &order_body("wh_nul", "4499", "a\u{0}b"),
    )
    .await?;

    // Three times: the ledger reads every stream from the start (its
    // consumers deleted while it was stopped, as after a lost ack).
    for round in 0..4 {
        let l = Ledger::start(&nats, db.options());
        assert_rows(&pool)
            .await
            .with_context(|| format!("round {round}"))?;
        eventually(STEP, "every consumer acked", || async {
            for source in ledger::record::Source::ALL {
                let (pending, unacked) =
                    orderhub_tests::consumer_pending(&js, source.stream(), source.durable())
                        .await
                        .ok()?;
                if pending + unacked as u64 != 0 {
                    return None;
                }
            }
            Some(())
        })
        .await?;
        l.stop().await?;
        for source in ledger::record::Source::ALL {
            js.get_stream(source.stream())
                .await?
                .delete_consumer(source.durable())
                .await?;
        }
    }
    assert_rows(&pool).await?;
    let reasons: Vec<String> =
        sqlx::query_scalar("SELECT reason FROM ledger_unparsed ORDER BY stream_seq")
            .fetch_all(&pool)
            .await?;
    assert!(reasons[0].starts_with("body is not JSON"), "{reasons:?}");
    assert!(
        reasons[1].starts_with("refused by its table"),
        "{reasons:?}"
    );
    let body: Vec<u8> = sqlx::query_scalar("SELECT body FROM ledger_unparsed ORDER BY stream_seq")
        .fetch_one(&pool)
        .await?;
    assert_eq!(body, b"{not json");
    let (webhook_id, account, body): (String, String, Vec<u8>) =
        sqlx::query_as("SELECT webhook_id, account, body FROM webhook_logs")
            .fetch_one(&pool)
            .await?;
    assert_eq!(
        (webhook_id.as_str(), account.as_str()),
        ("wh_a", "acme-careem")
    );
    assert_eq!(body, b"{\"order\":\"wh_a\"}");
    let (class, stage, order_id): (String, String, Option<String>) =
        sqlx::query_as("SELECT error_class, stage, provider_order_id FROM delivery_error_logs")
            .fetch_one(&pool)
            .await?;
    assert_eq!(
        (class.as_str(), stage.as_str(), order_id.as_deref()),
        ("invalid_payload", "forwarder", Some("4471"))
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_refused_nothing_is_acked_and_the_ledger_catches_up() -> anyhow::Result<()> {
    let (nats, js, db, pool) = setup().await?;
    let mut proxy = TcpProxy::start("127.0.0.1:5432".parse()?).await?;
    let l = Ledger::start(&nats, db.options_via(proxy.port));
    for i in 0..5 {
        order(&js, &format!("wh_{i}"), &format!("{i}")).await?;
    }
    await_count(&pool, "SELECT count(*) FROM provider_order_logs", 5).await?;
    eventually(STEP, "ready", || async {
        (l.ready().await?.0 == 200).then_some(())
    })
    .await?;
    eventually(STEP, "the first orders acked", || async {
        let (p, u) = orderhub_tests::consumer_pending(&js, "ORDERS", "ledger-orders")
            .await
            .ok()?;
        (p == 0 && u == 0).then_some(())
    })
    .await?;

    // PostgreSQL goes away (open connections cut, new ones refused) while
    // orders keep coming.
    proxy.down();
    for i in 5..25 {
        order(&js, &format!("wh_{i}"), &format!("{i}")).await?;
    }
    let (_, ready) = eventually(Duration::from_secs(30), "not ready", || async {
        l.ready().await.filter(|(s, _)| *s == 503)
    })
    .await?;
    assert_eq!(ready["checks"]["database"], false);
    // It keeps trying (several failed writes) and acks nothing meanwhile.
    let metrics = format!("{}/metrics", l.ops);
    eventually(Duration::from_secs(30), "failed writes", || async {
        let text = reqwest::get(&metrics).await.ok()?.text().await.ok()?;
        let failed: f64 = text
            .lines()
            .find(|l| l.starts_with("ledger_write_errors_total{error_type=\"unavailable\"}"))?
            .rsplit(' ')
            .next()?
            .parse()
            .ok()?;
        (failed >= 3.0).then_some(())
    })
    .await?;
    let (pending, unacked) =
        orderhub_tests::consumer_pending(&js, "ORDERS", "ledger-orders").await?;
    assert_eq!(
        pending + unacked as u64,
        20,
        "nothing acked while PostgreSQL is away"
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM provider_order_logs").await,
        5
    );
    let text = reqwest::get(&metrics).await?.text().await?;
    assert!(text.contains("ledger_db_up 0"), "{text}");

    proxy.up().await?;
    await_count(&pool, "SELECT count(*) FROM provider_order_logs", 25).await?;
    eventually(Duration::from_secs(30), "all acked", || async {
        let (p, u) = orderhub_tests::consumer_pending(&js, "ORDERS", "ledger-orders")
            .await
            .ok()?;
        (p == 0 && u == 0).then_some(())
    })
    .await?;
    let seqs: Vec<i64> =
        sqlx::query_scalar("SELECT stream_seq FROM provider_order_logs ORDER BY stream_seq")
            .fetch_all(&pool)
            .await?;
    assert_eq!(
        seqs,
        (1..=25).collect::<Vec<i64>>(),
        "none missing, none doubled"
    );
    eventually(STEP, "ready again", || async {
        (l.ready().await?.0 == 200).then_some(())
    })
    .await?;
    l.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_and_the_timeline_answer_what_was_published() -> anyhow::Result<()> {
    let (nats, js, db, pool) = setup().await?;
    let l = Ledger::start(&nats, db.options());
    let pause = || tokio::time::sleep(Duration::from_millis(5));

    // Order A: a 503 then a 200, delivered 100 ms after it was received,
    // accepted at the provider.
    let ra = ms(OffsetDateTime::now_utc());
    raw(&js, Provider::Careem, "acme-careem", "wh_a", ra, None).await?;
    pause().await;
    let mut converted = step(
        Stage::Transformer,
        Kind::Converted,
        true,
        "wh_a",
        Some("4471"),
    );
    converted.event = Some("created".into());
    outcome(&js, &converted).await?;
    pause().await;
    let seq_a = order(&js, "wh_a", "4471").await?;
    pause().await;
    for (delivery, (ok, status)) in [(false, 503), (true, 200)].into_iter().enumerate() {
        let mut a = step(Stage::Forwarder, Kind::Attempt, ok, "wh_a", Some("4471"));
        a.http_status = Some(status);
        a.duration_ms = Some(12);
        a.source = Some(OutcomeSource {
            stream: "ORDERS".into(),
            seq: seq_a,
            delivery: delivery as u64 + 1,
        });
        outcome(&js, &a).await?;
        pause().await;
    }
    tokio::time::sleep_until(tokio::time::Instant::now() + Duration::from_millis(120)).await;
    let mut delivered = step(
        Stage::Forwarder,
        Kind::Delivered,
        true,
        "wh_a",
        Some("4471"),
    );
    delivered.at = ra + time::Duration::milliseconds(100);
    delivered.source = Some(OutcomeSource {
        stream: "ORDERS".into(),
        seq: seq_a,
        delivery: 2,
    });
    outcome(&js, &delivered).await?;
    pause().await;
    decision(&js, "st_a", "4471", "wh_a", "accept").await?;
    pause().await;
    let mut call = step(
        Stage::StatusSync,
        Kind::StatusCall,
        true,
        "wh_a",
        Some("4471"),
    );
    call.action = Some("accept".into());
    call.status_id = Some("st_a".into());
    call.http_status = Some(200);
    outcome(&js, &call).await?;

    // Order B: delivered after 300 ms; its reject failed at the provider
    // and was dead-lettered.
    let rb = ms(OffsetDateTime::now_utc());
    raw(&js, Provider::Careem, "acme-careem", "wh_b", rb, None).await?;
    pause().await;
    outcome(
        &js,
        &step(
            Stage::Transformer,
            Kind::Converted,
            true,
            "wh_b",
            Some("4472"),
        ),
    )
    .await?;
    pause().await;
    let seq_b = order(&js, "wh_b", "4472").await?;
    pause().await;
    let mut a = step(Stage::Forwarder, Kind::Attempt, true, "wh_b", Some("4472"));
    a.source = Some(OutcomeSource {
        stream: "ORDERS".into(),
        seq: seq_b,
        delivery: 1,
    });
    a.http_status = Some(200);
    outcome(&js, &a).await?;
    tokio::time::sleep(Duration::from_millis(320)).await;
    let mut delivered = step(
        Stage::Forwarder,
        Kind::Delivered,
        true,
        "wh_b",
        Some("4472"),
    );
    delivered.at = rb + time::Duration::milliseconds(300);
    outcome(&js, &delivered).await?;
    pause().await;
    let status_seq = decision(&js, "st_b", "4472", "wh_b", "reject").await?;
    pause().await;
    let mut call = step(
        Stage::StatusSync,
        Kind::StatusCall,
        false,
        "wh_b",
        Some("4472"),
    )
    .with_error("provider_rejected", "the provider said no");
    call.action = Some("reject".into());
    outcome(&js, &call).await?;
    pause().await;
    dead_letter(
        &js,
        "status-sync",
        "STATUS",
        status_seq,
        "wh_b",
        decision_body("st_b", "4472", "wh_b", "reject"),
    )
    .await?;

    // Webhook C: refused by the transformer and dead-lettered; its replay
    // is not received again. A Talabat webhook is another provider's.
    let raw_c = raw(
        &js,
        Provider::Careem,
        "acme-careem",
        "wh_c",
        ms(OffsetDateTime::now_utc()),
        None,
    )
    .await?;
    outcome(
        &js,
        &step(Stage::Transformer, Kind::Refused, false, "wh_c", None)
            .with_error("invalid_payload", "no items"),
    )
    .await?;
    dead_letter(
        &js,
        "transformer",
        "WEBHOOKS",
        raw_c,
        "wh_c",
        "{\"order\":\"wh_c\"}".into(),
    )
    .await?;
    raw(
        &js,
        Provider::Careem,
        "acme-careem",
        "wh_c",
        ms(OffsetDateTime::now_utc()),
        Some("dlq:WEBHOOKS:3"),
    )
    .await?;
    raw(
        &js,
        Provider::Talabat,
        "acme-talabat",
        "wh_t",
        ms(OffsetDateTime::now_utc()),
        None,
    )
    .await?;

    await_count(&pool, "SELECT count(*) FROM order_outcomes", 10).await?;
    await_count(&pool, "SELECT count(*) FROM delivery_error_logs", 2).await?;
    await_count(&pool, "SELECT count(*) FROM webhook_logs", 5).await?;
    await_count(&pool, "SELECT count(*) FROM status_decisions", 2).await?;
    await_count(&pool, "SELECT count(*) FROM provider_order_logs", 2).await?;

    let (status, stats) = l
        .get("/api/webhooks/stats/careem?since=1h", Some(TOKEN))
        .await?;
    assert_eq!(status, 200, "{stats}");
    let want = serde_json::json!({
        "received": 3, "fetched": 0, "converted": 2, "refused": 1,
        "attempts_ok": 2, "attempts_failed": 1, "delivered": 2, "dead_lettered": 2,
        "status_calls_ok": 1, "status_calls_failed": 1, "replayed": 0, "purged": 0,
    });
    assert_eq!(stats["counts"], want);
    assert_eq!(
        stats["by_account"],
        serde_json::json!({"acme-careem": want})
    );
    assert_eq!(stats["by_tenant"], serde_json::json!({"acme": want}));
    assert_eq!(
        stats["latency"],
        serde_json::json!({"count": 2, "p50_ms": 100.0, "p90_ms": 300.0, "p99_ms": 300.0})
    );
    assert_eq!(stats["since"], "1h");
    let (_, talabat) = l.get("/api/webhooks/stats/talabat", Some(TOKEN)).await?;
    assert_eq!(talabat["counts"]["received"], 1);
    assert_eq!(talabat["counts"]["delivered"], 0);

    // The API's refusals.
    let (status, body) = l
        .get("/api/webhooks/stats/careem?since=soon", Some(TOKEN))
        .await?;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().starts_with("since: "),
        "{body}"
    );
    for token in [None, Some("wrong-token")] {
        for path in ["/api/webhooks/stats/careem", "/api/orders/careem/4471"] {
            assert_eq!(
                l.get(path, token).await?,
                (401, serde_json::json!({"error": "unauthorized"}))
            );
        }
    }
    let (status, body) = l.get("/api/orders/careem/9999", Some(TOKEN)).await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("no record of this order"))
    );
    let (status, _) = l
        .get("/api/orders/careem/4471?tenant=other", Some(TOKEN))
        .await?;
    assert_eq!(status, 404);

    // The timelines, in order.
    let kinds = |t: &serde_json::Value| -> Vec<String> {
        t["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, a) = l
        .get("/api/orders/careem/4471?tenant=acme", Some(TOKEN))
        .await?;
    assert_eq!(status, 200, "{a}");
    assert_eq!(
        kinds(&a),
        [
            "webhook_received",
            "converted",
            "order_published",
            "attempt",
            "attempt",
            "delivered",
            "decision",
            "status_call"
        ]
    );
    let e = &a["entries"];
    assert_eq!(e[0]["at"], rfc3339(ra));
    assert_eq!(
        (
            e[3]["http_status"].as_i64(),
            e[3]["ok"].as_bool(),
            e[3]["delivery"].as_i64()
        ),
        (Some(503), Some(false), Some(1))
    );
    assert_eq!(
        (e[4]["http_status"].as_i64(), e[4]["delivery"].as_i64()),
        (Some(200), Some(2))
    );
    assert_eq!(
        (e[6]["action"].as_str(), e[6]["origin"].as_str()),
        (Some("accept"), Some("backend"))
    );
    let (_, b) = l.get("/api/orders/careem/4472", Some(TOKEN)).await?;
    assert_eq!(
        kinds(&b),
        [
            "webhook_received",
            "converted",
            "order_published",
            "attempt",
            "delivered",
            "decision",
            "status_call",
            "dead_letter"
        ]
    );
    let last = &b["entries"][7];
    assert_eq!(
        (
            last["stage"].as_str(),
            last["error_class"].as_str(),
            last["delivery"].as_i64()
        ),
        (Some("status-sync"), Some("invalid_payload"), Some(3))
    );

    // The CLI: the same answers as a table and as JSON.
    let cli = ledger::cli::Client {
        api: l.api.parse()?,
        token: SecretString::from(TOKEN),
        timeout: STEP,
    };
    let table = cli.order("careem", "4471", None, false).await?;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], "order 4471 from careem");
    assert!(lines[1].starts_with("AT"), "{table}");
    let table_kinds: Vec<&str> = lines[2..]
        .iter()
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(table_kinds, kinds(&a));
    assert!(
        lines[5].contains("http=503") && lines[5].contains("delivery=1"),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&cli.order("careem", "4471", None, true).await?)?;
    assert_eq!(json["entries"], a["entries"]);
    let stats_table = cli.stats("careem", "1h", false).await?;
    let received = stats_table
        .lines()
        .find(|l| l.starts_with("received "))
        .unwrap();
    assert_eq!(
        received.split_whitespace().collect::<Vec<_>>(),
        ["received", "3", "3", "3"]
    );
    assert!(
        stats_table.contains("p50 100ms  p90 300ms  p99 300ms"),
        "{stats_table}"
    );
    let json: serde_json::Value = serde_json::from_str(&cli.stats("careem", "1h", true).await?)?;
    assert_eq!(json["counts"], want);
    let err = cli.order("careem", "9999", None, false).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the ledger API answered 404: no record of this order"
    );
    let wrong = ledger::cli::Client {
        token: SecretString::from("not-the-token"),
        ..cli
    };
    let err = wrong.stats("careem", "1h", false).await.unwrap_err();
    assert_eq!(err.to_string(), "the ledger API answered 401: unauthorized");
    l.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_old_days_whole_and_keeps_new_ones() -> anyhow::Result<()> {
    let db = TestDb::create().await?;
    let pool = db.pool().await?;
    let store = Arc::new(ledger::store::Store::connect_lazy(db.options(), 2));
    tokio::time::timeout(STEP, store.migrate()).await??;
    let now = OffsetDateTime::now_utc();
    let records: Vec<ledger::record::Record> = [(1, 40), (2, 31), (3, 29), (4, 0)]
        .into_iter()
        .map(|(seq, days_ago)| {
            let mut h = ledger::record::Headers::new();
            h.insert(headers::PROVIDER.into(), vec!["careem".into()]);
            h.insert(headers::WEBHOOK_ID.into(), vec![format!("wh_{seq}")]);
            ledger::record::Record::read(&ledger::record::Incoming {
                source: ledger::record::Source::Webhooks,
                seq,
                time: now - time::Duration::days(days_ago),
                subject: "webhooks.raw.careem.acme-careem".into(),
                headers: h,
                body: Bytes::from_static(b"{}"),
            })
        })
        .collect();
    let written = tokio::time::timeout(STEP, store.write(&records)).await??;
    assert_eq!(written.inserted, 4);
    let dropped =
        tokio::time::timeout(STEP, store.drop_expired(now, 30, Duration::from_secs(5))).await??;
    // Two old days, six tables each.
    assert_eq!(dropped, 12);
    let left: Vec<String> =
        sqlx::query_scalar("SELECT webhook_id FROM webhook_logs ORDER BY stream_seq")
            .fetch_all(&pool)
            .await?;
    assert_eq!(left, ["wh_3", "wh_4"]);
    // Nothing left to drop; a new row of an old-but-kept day still lands.
    assert_eq!(
        store.drop_expired(now, 30, Duration::from_secs(5)).await?,
        0
    );
    assert_eq!(store.write(&records[2..]).await?.inserted, 0, "stored once");
    Ok(())
}
