//! The transformer's log lines stay short whatever a provider sends (issue
//! 12, item 9): the real binary against a real nats-server, its JSON log
//! lines read back.

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use async_nats::jetstream;
use orderhub_tests::*;
use tokio::io::AsyncBufReadExt;

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
default = true

[retry]
schedule = ["200ms"]
max_deliver = 3
"#;

/// No log line may be longer: a few quoted values and the line's own
/// fields, never a payload.
const MAX_LINE: usize = 4096;

#[tokio::test]
async fn a_500_kb_field_value_makes_short_log_lines_and_a_short_dead_letter() -> anyhow::Result<()>
{
    let nats = NatsServer::start()?;
    let client = nats.client().await?;
    setup_streams(&client, &hub_from(HUB)).await?;
    let js = jetstream::new(client);
    let dir = tempfile::tempdir()?;
    let hub_path = dir.path().join("hub.toml");
    std::fs::write(&hub_path, HUB)?;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_transformer"))
        .env("NATS_URL", nats.url())
        .env("HUB_CONFIG", &hub_path)
        .env("OPS_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("TEST_CAREEM_SECRET", "s")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().expect("piped stdout");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = lines.clone();
        tokio::spawn(async move {
            let mut r = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(l)) = r.next_line().await {
                lines.lock().unwrap().push(l);
            }
        })
    };

    // 500 KB that is no number: serde quotes a refused value in its error.
    let huge = "9x".repeat(250_000);
    let body = format!(
        r#"{{"order_id":"T1","items":[{{"name":"Burger","quantity":"{huge}","price":1}}],"total_amount":1}}"#
    );
    publish_raw(&js, "wh-huge", &body).await?;
    let (entry, _) = await_dead_letter(&js).await?;
    assert_eq!(entry.error_class.as_str(), "invalid_payload");
    assert_eq!(
        entry.error,
        format!(
            "payload does not parse: items[0].quantity: invalid value: string \"{}…\", expected an integer quantity (number or string) at line 1 column 500056",
            "9x".repeat(32)
        )
    );
    let logged = eventually(STEP, "the dead-letter log line", || async {
        let l = lines.lock().unwrap();
        l.iter()
            .any(|l| l.contains("dead-lettered"))
            .then(|| l.clone())
    })
    .await?;
    child.start_kill()?;
    tokio::time::timeout(STEP, child.wait()).await??;
    reader.abort();

    assert!(
        logged.iter().any(|l| l.contains("conversion failed")),
        "{logged:#?}"
    );
    for l in &logged {
        assert!(
            l.len() < MAX_LINE,
            "a {}-byte log line: {}…",
            l.len(),
            &l[..300]
        );
    }
    Ok(())
}
