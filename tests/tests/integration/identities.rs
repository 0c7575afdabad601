//! Least-privilege NATS identities (issue 18, point 3): a nats-server that
//! admits only the identities of `nats/identities.toml`, each with its own
//! publish and subscribe allow lists. The whole hub runs on them (every
//! stage binary its own NKey, the ledger in process with its own, the
//! operator's `dlq-inspector` with its own) without one permissions
//! violation; and an identity reaching past its job is refused: the
//! ingress's cannot publish orders, the forwarder's cannot touch `WEBHOOKS`,
//! the ledger's can publish nothing.

use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream;
use orderhub_tests::identities::Identities;
use orderhub_tests::*;
use secrecy::SecretString;

use crate::e2e::{ENV, await_every_order, hub_toml, send_every_fixture};

/// The server logs every refused publish or subscribe this way
/// (`Publish Violation - Subject "..."`, `Subscription Violation - ...`).
const VIOLATION: &str = " Violation - ";

/// A JetStream context signed in as identity `name` (with its inbox, as
/// the binaries connect), whose requests give up after two seconds (a
/// refused request is never answered).
async fn js_as(
    nats: &NatsServer,
    ids: &Identities,
    name: &str,
) -> anyhow::Result<jetstream::Context> {
    let client = tokio::time::timeout(
        STEP,
        async_nats::ConnectOptions::with_nkey(ids.seed(name).to_owned())
            .custom_inbox_prefix(shared::subjects::inbox_prefix(name))
            .request_timeout(Some(Duration::from_secs(2)))
            .connect(nats.url()),
    )
    .await??;
    let mut js = jetstream::new(client);
    js.set_timeout(Duration::from_secs(2));
    Ok(js)
}

/// Every stream, set up by the admin identity; its context.
async fn setup(nats: &NatsServer) -> anyhow::Result<jetstream::Context> {
    let admin = jetstream::new(nats.client().await?);
    let hub = hub_from(&worker_hub_toml(&["1s"], 5, "30s"));
    let defs = shared::streams::Definitions::load(&hub.streams);
    let all = [
        "WEBHOOKS",
        "ORDERS",
        "STATUS",
        "OUTCOMES",
        "DLQ",
        "ADVISORIES",
    ];
    tokio::time::timeout(STEP, shared::app::ensure_streams(&admin, &defs, &all, true)).await??;
    Ok(admin)
}

/// What the server refused, one line each.
fn violations(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(VIOLATION))
        .map(|l| l.rsplit(" - ").take(2).collect::<Vec<_>>().join(" "))
        .collect()
}

/// The server's log line for a refused publish to `subject`.
fn refused(subject: &str) -> String {
    format!("Publish Violation - Subject \"{subject}\"")
}

async fn messages(js: &jetstream::Context, stream: &str) -> anyhow::Result<u64> {
    Ok(js.get_stream(stream).await?.info().await?.state.messages)
}

/// A JetStream publish as `js`'s identity: refused (no ack) or stored.
async fn publish(js: &jetstream::Context, subject: &str) -> Result<u64, String> {
    let ack = tokio::time::timeout(STEP, async {
        js.publish(subject.to_owned(), "{}".into())
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|_| "no answer".to_owned())?;
    ack.map(|a| a.sequence)
}

/// Every fixture through every stage binary, each signed in as its own
/// identity, with the ledger storing every stream as its own and
/// `dlq-inspector` listing and replaying as its own: the same orders and
/// dead letters as the open e2e run, and the server refused nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_hub_runs_with_one_least_privilege_identity_per_stage() -> anyhow::Result<()> {
    use crate::ledger::{TOKEN, count};
    use orderhub_tests::pg::TestDb;

    let ids = Identities::generate(true)?;
    let stack = Stack::start_with_identities(&hub_toml(), &ENV, &ids).await?;
    let js = jetstream::new(stack.nats.client().await?);

    // The ledger in process, as its own identity.
    let db = TestDb::create().await?;
    let pool = db.pool().await?;
    let keys = tempfile::tempdir()?;
    ids.write(keys.path())?;
    let ops_port = free_port();
    let mut args = common_args(&stack.nats.url(), ops_port);
    args.nats_nkey = Some(Identities::seed_path(keys.path(), "ledger"));
    let hub = hub_from(&worker_hub_toml(&["1s"], 5, "30s"));
    let options = ledger::Options {
        database: db.options(),
        api_addr: ([127, 0, 0, 1], free_port()).into(),
        token: SecretString::from(TOKEN),
        retention_days: 30,
        batch: 50,
        batch_wait: Duration::from_millis(200),
        max_connections: 4,
        writers: 2,
        retention_every: Duration::from_secs(3600),
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let token = shutdown.clone();
    let ledger = tokio::spawn(async move { ledger::run(&args, &hub, options, token).await });
    eventually(Duration::from_secs(60), "the ledger ready", || async {
        let r = reqwest::get(format!("http://127.0.0.1:{ops_port}/ready"))
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await?;

    let sent = send_every_fixture(&stack).await?;
    await_every_order(&stack, &js, &sent).await?;
    assert_eq!(stack.backend.requests().len(), sent.orders.len());
    assert!(!sent.dead.is_empty(), "the fixtures have refused payloads");

    // The ledger stored each stream whole.
    let tables = [
        ("WEBHOOKS", "webhook_logs"),
        ("ORDERS", "provider_order_logs"),
        ("OUTCOMES", "order_outcomes"),
        ("STATUS", "status_decisions"),
        ("DLQ", "delivery_error_logs"),
    ];
    eventually(Duration::from_secs(60), "the ledger caught up", || async {
        for (stream, table) in tables {
            let n = messages(&js, stream).await.ok()? as i64;
            let rows = count(&pool, &format!("SELECT count(*) FROM {table}")).await;
            if n == 0 || rows != n {
                return None;
            }
        }
        Some(())
    })
    .await?;

    // The operator's CLI lists and replays a dead letter as its own identity.
    let inspector = |verb: &'static [&'static str]| {
        tokio::process::Command::new(orderhub_tests::stack::bin("dlq-inspector").unwrap())
            .args(verb)
            .env("NATS_URL", stack.nats.url())
            .env(
                "NATS_NKEY",
                Identities::seed_path(keys.path(), "dlq-inspector"),
            )
            .output()
    };
    let out = tokio::time::timeout(STEP, inspector(&["list", "--json"])).await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}{:#?}",
        String::from_utf8_lossy(&out.stderr),
        violations(&stack.nats.log())
    );
    assert_eq!(stdout.lines().count(), sent.dead.len(), "{stdout}");
    let dead_before = messages(&js, "DLQ").await?;
    let first = stream_messages(&js, "DLQ").await?[0].sequence.to_string();
    let out = tokio::process::Command::new(orderhub_tests::stack::bin("dlq-inspector")?)
        .args(["replay", &first])
        .env("NATS_URL", stack.nats.url())
        .env(
            "NATS_NKEY",
            Identities::seed_path(keys.path(), "dlq-inspector"),
        )
        .output();
    let out = tokio::time::timeout(STEP, out).await??;
    assert!(
        out.status.success(),
        "{}{:#?}",
        String::from_utf8_lossy(&out.stderr),
        violations(&stack.nats.log())
    );
    // The replayed payload is refused again by the transformer: the entry
    // left the DLQ and came back as a new one.
    eventually(STEP, "the replay dead-lettered again", || async {
        let dlq = stream_messages(&js, "DLQ").await.ok()?;
        (dlq.len() as u64 == dead_before && !dlq.iter().any(|m| m.sequence.to_string() == first))
            .then_some(())
    })
    .await?;

    shutdown.cancel();
    tokio::time::timeout(STEP, ledger).await???;
    let refused = violations(&stack.nats.log());
    assert!(refused.is_empty(), "refused: {refused:#?}");
    stack.stop().await
}

/// The ingress's identity stores webhooks but cannot publish an order (or
/// anything else outside its subjects): no ack, nothing stored.
#[tokio::test]
async fn the_ingress_identity_cannot_publish_orders() -> anyhow::Result<()> {
    let ids = Identities::generate(true)?;
    let nats = NatsServer::start_with_identities(&ids)?;
    let admin = setup(&nats).await?;
    let ingress = js_as(&nats, &ids, "ingress").await?;

    assert_eq!(publish(&ingress, "webhooks.raw.careem.acme").await, Ok(1));
    for subject in [
        "orders.acme.careem",
        "webhooks.fetched.wolt.acme",
        "outcomes.transformer.careem",
        "dlq.transformer.careem",
    ] {
        assert!(
            publish(&ingress, subject).await.is_err(),
            "the ingress published to {subject}"
        );
        assert!(
            nats.log().contains(&refused(subject)),
            "{subject}: {}",
            nats.log()
        );
    }
    assert_eq!(messages(&admin, "ORDERS").await?, 0);
    assert_eq!(messages(&admin, "WEBHOOKS").await?, 1);

    // Nor read what is delivered to another stage: its own inbox only.
    let client = nats.client_as(ids.seed("ingress")).await?;
    for subject in ["_INBOX.>", "_INBOX_transformer.>", ">"] {
        let _sub = client.subscribe(subject).await?;
        client.flush().await?;
        let line = format!("Subscription Violation - Subject \"{subject}\"");
        eventually(STEP, &line, || async {
            nats.log().contains(&line).then_some(())
        })
        .await?;
    }
    assert_eq!(messages(&admin, "OUTCOMES").await?, 0);
    assert_eq!(messages(&admin, "DLQ").await?, 0);
    Ok(())
}

/// The forwarder's identity reads orders but cannot touch `WEBHOOKS`: its
/// info, a publish to it, a consumer on it, are all refused.
#[tokio::test]
async fn the_forwarder_identity_cannot_touch_webhooks() -> anyhow::Result<()> {
    let ids = Identities::generate(true)?;
    let nats = NatsServer::start_with_identities(&ids)?;
    let admin = setup(&nats).await?;
    let forwarder = js_as(&nats, &ids, "forwarder").await?;

    // What it may do, to show the refusals below are about WEBHOOKS.
    forwarder.get_stream("ORDERS").await?;
    assert!(publish(&forwarder, "status.careem.acme").await.is_ok());

    assert!(forwarder.get_stream("WEBHOOKS").await.is_err());
    assert!(
        nats.log()
            .contains(&refused("$JS.API.STREAM.INFO.WEBHOOKS")),
        "{}",
        nats.log()
    );
    assert!(
        publish(&forwarder, "webhooks.raw.careem.acme")
            .await
            .is_err()
    );
    let create = forwarder
        .create_consumer_on_stream(
            jetstream::consumer::pull::Config {
                durable_name: Some("forwarder".into()),
                ..Default::default()
            },
            "WEBHOOKS",
        )
        .await;
    assert!(create.is_err(), "a consumer on WEBHOOKS: {create:?}");
    assert!(
        nats.log()
            .contains("Publish Violation - Subject \"$JS.API.CONSUMER.CREATE.WEBHOOKS"),
        "{}",
        nats.log()
    );
    assert!(
        forwarder
            .publish("$JS.API.STREAM.PURGE.WEBHOOKS", "".into())
            .await?
            .await
            .is_err()
    );
    assert_eq!(messages(&admin, "WEBHOOKS").await?, 0);
    let consumers = admin
        .get_stream("WEBHOOKS")
        .await?
        .info()
        .await?
        .state
        .consumer_count;
    assert_eq!(consumers, 0);
    Ok(())
}

/// The ledger's identity only reads: it can publish to no stream's
/// subjects, nor manage anything it does not consume.
#[tokio::test]
async fn the_ledger_identity_publishes_nothing() -> anyhow::Result<()> {
    let ids = Identities::generate(true)?;
    let nats = NatsServer::start_with_identities(&ids)?;
    let admin = setup(&nats).await?;
    let ledger = js_as(&nats, &ids, "ledger").await?;

    ledger.get_stream("OUTCOMES").await?;
    for subject in [
        "webhooks.raw.careem.acme",
        "webhooks.fetched.wolt.acme",
        "orders.acme.careem",
        "status.careem.acme",
        "outcomes.ledger.careem",
        "dlq.ledger.careem",
        "$KV.ORDER_CONTEXT.x",
        "$JS.API.STREAM.PURGE.ORDERS",
        "$JS.API.STREAM.DELETE.DLQ",
    ] {
        assert!(
            publish(&ledger, subject).await.is_err(),
            "the ledger published to {subject}"
        );
        assert!(nats.log().contains(&refused(subject)), "{subject}");
    }
    for stream in ["WEBHOOKS", "ORDERS", "STATUS", "OUTCOMES", "DLQ"] {
        assert_eq!(messages(&admin, stream).await?, 0, "{stream}");
    }
    Ok(())
}

/// `scripts/nats-identities`' output is what `nats/dev-identities.conf` and
/// `nats/cluster-identities.conf` include: both are valid server configs
/// with it, and neither is without it (the server fails closed).
#[tokio::test]
async fn the_include_configs_are_valid_with_the_generated_users_and_only_with_them()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    for f in [
        "dev.conf",
        "dev-identities.conf",
        "cluster.conf",
        "cluster-identities.conf",
    ] {
        std::fs::copy(workspace().join("nats").join(f), dir.path().join(f))?;
    }
    let check = |conf: &str| {
        std::process::Command::new(nats_server_bin())
            .args(["-t", "-c"])
            .arg(dir.path().join(conf))
            .envs([
                ("NODE_NAME", "n1"),
                ("CLIENT_LISTEN", "127.0.0.1:4222"),
                ("CLUSTER_LISTEN", "127.0.0.1:6222"),
                ("ROUTE_1", "nats-route://127.0.0.1:6222"),
                ("ROUTE_2", "nats-route://127.0.0.1:6223"),
                ("ROUTE_3", "nats-route://127.0.0.1:6224"),
            ])
            .output()
    };
    for conf in ["dev-identities.conf", "cluster-identities.conf"] {
        assert!(!check(conf)?.status.success(), "{conf} without users.conf");
    }
    let out = std::process::Command::new(orderhub_tests::stack::bin("nats-identities")?)
        .arg(dir.path())
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for conf in ["dev-identities.conf", "cluster-identities.conf"] {
        let out = check(conf)?;
        assert!(
            out.status.success(),
            "{conf}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let users = std::fs::read_to_string(dir.path().join("users.conf"))?;
    for name in [
        "admin",
        "ingress",
        "fetcher",
        "transformer",
        "forwarder",
        "status-sync",
        "ledger",
        "dlq-inspector",
    ] {
        let seed = std::fs::read_to_string(dir.path().join(format!("{name}.nk")))?;
        let key = nkeys::KeyPair::from_seed(seed.trim())?;
        assert!(
            users.contains(&key.public_key()),
            "{name}'s key is not admitted"
        );
        assert!(
            !users.contains(seed.trim()),
            "users.conf holds {name}'s seed"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(format!("{name}.nk")))?
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}.nk");
    }
    Ok(())
}

/// The retry path on the identities: the backend fails each order's first
/// attempt, so the forwarder records the failure in `FAILURES` and NAKs,
/// and the second attempt delivers; no permission is missing on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_delivery_needs_no_more_than_the_forwarder_identity() -> anyhow::Result<()> {
    let ids = Identities::generate(true)?;
    // Every first attempt fails, which opens the tenant's breaker (30 s):
    // the fixtures' updates without their created must not arrive after
    // that (created_wait), or they wait out the cooldown.
    let toml = format!(
        "{}\n[retry]\nschedule = [\"100ms\"]\nmax_deliver = 5\n",
        hub_toml().replace("created_wait = \"1s\"", "created_wait = \"0s\"")
    );
    let stack = Stack::start_with_identities(&toml, &ENV, &ids).await?;
    let js = jetstream::new(stack.nats.client().await?);
    let mut seen = std::collections::BTreeSet::new();
    stack.backend.script(move |r| {
        let key = r
            .headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if seen.insert(key) {
            Reply::status(500)
        } else {
            Reply::status(200)
        }
    });
    let sent = send_every_fixture(&stack).await?;
    let delivered = || {
        let mut keys: Vec<String> = stack
            .backend
            .requests()
            .iter()
            .filter_map(|r| r.header("idempotency-key").map(str::to_owned))
            .collect();
        let attempts = keys.len();
        keys.sort();
        keys.dedup();
        (keys.len(), attempts)
    };
    let dlq = {
        let js = js.clone();
        move || {
            let js = js.clone();
            async move {
                dead_letters(&js)
                    .await
                    .map(|d| {
                        d.iter()
                            .map(|(e, _)| format!("{}: {}", e.error_class, e.error))
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
            }
        }
    };
    let result = eventually(
        Duration::from_secs(60),
        "every order delivered on its second attempt",
        || async {
            let (orders, attempts) = delivered();
            (orders == sent.orders.len() && attempts == 2 * orders).then_some(())
        },
    )
    .await
    .with_context(|| {
        // Each key's attempts, for the ones not at two.
        let mut per: std::collections::BTreeMap<String, (usize, String)> = Default::default();
        for r in stack.backend.requests() {
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
            let e = per
                .entry(r.header("idempotency-key").unwrap_or_default().to_owned())
                .or_default();
            e.0 += 1;
            e.1 = format!(
                "{} {} {}",
                body["provider"], body["provider_order_id"], body["event"]
            );
        }
        per.retain(|_, (n, _)| *n != 2);
        format!(
            "{:?} of {} orders; not at two attempts: {per:#?}; refused: {:#?}\nforwarder log:\n{}",
            delivered(),
            sent.orders.len(),
            violations(&stack.nats.log()),
            stack.log("forwarder")
        )
    });
    if let Err(e) = result {
        anyhow::bail!("{e:#}\ndead letters: {:#?}", dlq().await);
    }
    assert!(
        messages(&js, "KV_FAILURES").await? > 0,
        "the failures were recorded"
    );
    let refused = violations(&stack.nats.log());
    assert!(refused.is_empty(), "refused: {refused:#?}");
    stack.stop().await
}
