//! Soak with faults: N signed webhooks (`SOAK_WEBHOOKS`, default 2000) are
//! sent like a provider sends them (retrying until a 2xx) while every stage
//! is SIGKILLed and restarted at random moments, the backend fails a share
//! of requests and goes away for a while. At the end every webhook answered
//! 2xx is at the backend or in the DLQ with a reason: none vanishes. Prints
//! the counts, the duplicates the backend saw and the time to drain.
//! `SOAK_SEED` replays a run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use orderhub_tests::stack::STAGES;
use orderhub_tests::*;
use secrecy::SecretString;
use serde_json::Value;
use tokio::sync::Mutex;

const SECRET: &str = "soak-careem-secret";

fn hub_toml() -> String {
    r#"
[[tenant]]
id = "acme"
backend_url = "{{BACKEND_URL}}"
backend_key_env = "BACKEND_KEY"
breaker_failures = 5
breaker_cooldown = "300ms"
breaker_max_cooldown = "1s"
request_timeout = "2s"

[[account]]
id = "acme-careem"
provider = "careem"
tenant = "acme"
secret_envs = ["CAREEM_SECRET"]
currency = "JOD"
country = "JO"

[retry]
schedule = ["200ms", "500ms", "1s"]
max_deliver = 20

[streams.consumers.transformer]
ack_wait = "2s"
[streams.consumers.forwarder]
ack_wait = "2s"

[forwarder]
allowed_private_destinations = ["127.0.0.0/8"]
"#
    .to_owned()
}

/// xorshift64*: reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn body(n: usize, malformed: bool) -> String {
    if malformed {
        // Parses, but an order needs items: a permanent error.
        format!(
            r#"{{"order_id":"SOAK-{n}","customer":{{"name":"Soak"}},"items":[],"total_amount":0}}"#
        )
    } else {
        format!(
            r#"{{"order_id":"SOAK-{n}","customer":{{"name":"Soak {n}","phone":"0791234567"}},"items":[{{"name":"Burger","quantity":1,"price":2.675}}],"total_amount":2.675}}"#
        )
    }
}

/// Sends like a provider: until a 2xx, backing off, for at most a minute.
async fn send(client: &reqwest::Client, url: &str, body: String) -> bool {
    let signed =
        shared::verify::careem::sign(body.as_bytes(), &SecretString::from(SECRET.to_owned()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut pause = Duration::from_millis(50);
    while Instant::now() < deadline {
        let r = client
            .post(url)
            .headers(signed.clone())
            .header("content-type", "application/json")
            .body(body.clone())
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        if let Ok(r) = r
            && r.status().is_success()
        {
            return true;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
    false
}

#[tokio::test]
async fn no_accepted_webhook_vanishes_under_faults() -> anyhow::Result<()> {
    let total: usize = std::env::var("SOAK_WEBHOOKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let seed: u64 = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    // Paced like real traffic, so the faults land in the middle of it.
    let rate: u64 = std::env::var("SOAK_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    println!("soak: {total} webhooks at {rate}/s, SOAK_SEED={seed}");
    let stack = Arc::new(Mutex::new(
        Stack::start(
            &hub_toml(),
            &[("CAREEM_SECRET", SECRET), ("BACKEND_KEY", "soak-key")],
        )
        .await?,
    ));
    let (url, js) = {
        let s = stack.lock().await;
        // A share of the backend's answers fail; the rest succeed.
        let mut rng = Rng(seed ^ 0x5eed);
        s.backend.script(move |_| {
            if rng.below(100) < 10 {
                Reply::status(503)
            } else {
                Reply::status(200)
            }
        });
        (
            format!("{}/api/webhooks/careem/acme-careem", s.ingress_url()),
            jetstream::new(s.nats.client().await?),
        )
    };

    // Chaos: kill and restart stages, take the backend away once.
    let sending = Arc::new(AtomicBool::new(true));
    let chaos = {
        let stack = stack.clone();
        let sending = sending.clone();
        tokio::spawn(async move {
            let mut rng = Rng(seed);
            let mut kills: BTreeMap<&str, u32> = BTreeMap::new();
            let mut backend_outages = 0;
            let began = Instant::now();
            while sending.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(300 + rng.below(900))).await;
                let mut s = stack.lock().await;
                // Once, a few seconds in: the backend goes away.
                if backend_outages == 0 && began.elapsed() > Duration::from_secs(4) {
                    s.backend.down().await;
                    drop(s);
                    tokio::time::sleep(Duration::from_millis(1500 + rng.below(1500))).await;
                    stack.lock().await.backend.up().await?;
                    backend_outages += 1;
                    continue;
                }
                // The stages careem webhooks pass through (the fetcher
                // runs too, with nothing to fetch).
                let stage = ["ingress", "transformer", "forwarder"][rng.below(3) as usize];
                s.kill(stage).await?;
                drop(s);
                tokio::time::sleep(Duration::from_millis(100 + rng.below(600))).await;
                stack.lock().await.spawn(stage)?;
                *kills.entry(stage).or_default() += 1;
            }
            anyhow::Ok((kills, backend_outages))
        })
    };

    let started = Instant::now();
    let client = reqwest::Client::new();
    let mut accepted = BTreeSet::new();
    let mut malformed = BTreeSet::new();
    let mut rng = Rng(seed ^ 0xbad);
    let mut n = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(16_000 / rate.max(1)));
    while n < total {
        tick.tick().await;
        let batch: Vec<(usize, bool)> = (n..(n + 16).min(total))
            .map(|i| (i, rng.below(100) < 2))
            .collect();
        n += batch.len();
        let results = futures::future::join_all(batch.iter().map(|(i, bad)| {
            let client = client.clone();
            let url = url.clone();
            async move { (*i, *bad, send(&client, &url, body(*i, *bad)).await) }
        }))
        .await;
        for (i, bad, ok) in results {
            if ok {
                accepted.insert(format!("SOAK-{i}"));
                if bad {
                    malformed.insert(format!("SOAK-{i}"));
                }
            }
        }
    }
    let send_time = started.elapsed();
    let sent_at = Instant::now();
    sending.store(false, Ordering::Relaxed);
    let (kills, outages) = chaos.await??;

    // Everything up again; the backend healthy; let the pipeline drain.
    {
        let mut s = stack.lock().await;
        s.backend.script(|_| Reply::status(200));
        for stage in STAGES {
            if s.wait_ready(stage).await.is_err() {
                s.kill(stage).await?;
                s.spawn(stage)?;
                s.wait_ready(stage).await?;
            }
        }
    }

    let accounted = |s: &Stack, dead: &[(shared::dlq::DeadLetter, Value)]| {
        let mut seen: BTreeSet<String> = BTreeSet::new();
        for r in s.backend.requests() {
            if let Ok(order) = serde_json::from_slice::<Value>(&r.body)
                && let Some(id) = order["provider_order_id"].as_str()
            {
                seen.insert(id.to_owned());
            }
        }
        for (_, body) in dead {
            let id = body["provider_order_id"]
                .as_str()
                .or_else(|| body["order_id"].as_str());
            if let Some(id) = id {
                seen.insert(id.to_owned());
            }
        }
        seen
    };
    let read_dead = || async {
        dead_letters(&js).await.map(|d| {
            d.into_iter()
                .map(|(e, m)| {
                    let v = serde_json::from_slice(&m.payload).unwrap_or(Value::Null);
                    (e, v)
                })
                .collect::<Vec<_>>()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let dead = read_dead().await?;
        let s = stack.lock().await;
        let missing = accepted.difference(&accounted(&s, &dead)).count();
        if missing == 0 || Instant::now() > deadline {
            break;
        }
        drop(s);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drain_time = sent_at.elapsed();

    let s = stack.lock().await;
    let dead = read_dead().await?;
    let seen = accounted(&s, &dead);
    let vanished: Vec<&String> = accepted.difference(&seen).collect();
    let requests = s.backend.requests();
    let mut keys_per_order: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in &requests {
        if let Ok(order) = serde_json::from_slice::<Value>(&r.body)
            && let (Some(id), Some(key)) = (
                order["provider_order_id"].as_str(),
                r.header("idempotency-key"),
            )
        {
            keys_per_order
                .entry(id.to_owned())
                .or_default()
                .insert(key.to_owned());
        }
    }
    let delivered: BTreeSet<&String> = keys_per_order
        .keys()
        .filter(|id| accepted.contains(*id))
        .collect();
    let distinct_keys: usize = keys_per_order.values().map(BTreeSet::len).sum();
    let dead_ids: BTreeSet<String> = dead
        .iter()
        .filter_map(|(_, b)| {
            b["provider_order_id"]
                .as_str()
                .or_else(|| b["order_id"].as_str())
                .map(str::to_owned)
        })
        .collect();
    println!(
        "soak: sent {total} in {send_time:.1?}, accepted {}, delivered {} (distinct Idempotency-Keys {distinct_keys}), \
         backend requests {} (duplicates {}), dead letters {} (malformed sent {}), vanished {}, drained {drain_time:.1?} after the last send; \
         kills {kills:?}, backend outages {outages}",
        accepted.len(),
        delivered.len(),
        requests.len(),
        requests.len() - distinct_keys,
        dead.len(),
        malformed.len(),
        vanished.len(),
    );
    assert!(vanished.is_empty(), "vanished: {vanished:?}");
    assert_eq!(
        accepted.len(),
        total,
        "a provider retrying for a minute always got a 2xx"
    );
    // A provider's re-send after a lost answer is deduplicated at the
    // ingress: one webhook id, so one key, per order.
    for (id, keys) in &keys_per_order {
        assert_eq!(
            keys.len(),
            1,
            "order {id} reached the backend under {keys:?}"
        );
    }
    // Every malformed webhook is in the DLQ with its reason; nothing valid is.
    for (entry, body) in &dead {
        assert!(!entry.error.is_empty());
        let id = body["order_id"]
            .as_str()
            .or_else(|| body["provider_order_id"].as_str());
        assert!(
            id.is_some_and(|id| malformed.contains(id)),
            "a valid order was dead-lettered: {entry:?}"
        );
        assert_eq!(entry.error_class.as_str(), "invalid_payload");
    }
    assert_eq!(dead_ids, malformed);
    assert_eq!(delivered.len() + malformed.len(), accepted.len());
    drop(s);
    Arc::try_unwrap(stack)
        .map_err(|_| anyhow::anyhow!("stack still shared"))?
        .into_inner()
        .stop()
        .await
}
