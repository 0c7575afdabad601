//! The `fake-provider` binary as `scripts/dev-up` runs it: credentials from
//! the environment, orders from a fixtures directory, driven over its
//! `/_fake/` routes, stopped by SIGTERM, and never printing a secret.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use orderhub_tests::STEP;
use serde_json::{Value, json};

const SECRETS: [&str; 3] = ["uber-secret-xyz", "wolt-secret-xyz", "wolt-first-rt-xyz"];

fn fake_provider() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fake-provider"));
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in [
        "FAKE_PROVIDER_ADDR",
        "FAKE_PROVIDER_ORDERS",
        "FAKE_UBER_CLIENT_ID",
        "FAKE_UBER_CLIENT_SECRET",
        "FAKE_WOLT_CLIENT_ID",
        "FAKE_WOLT_CLIENT_SECRET",
        "FAKE_WOLT_REFRESH_TOKEN",
    ] {
        c.env_remove(var);
    }
    c
}

/// Kills the process if the test fails half way.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The first line the process prints on stdout (None if it exits first).
fn first_line(child: &mut Child) -> Option<String> {
    let stdout = child.stdout.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(STEP).ok()?;
    (!line.is_empty()).then(|| line.trim_end().to_owned())
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(STEP)
        .build()
        .unwrap()
}

#[tokio::test]
async fn fake_provider_binary_serves_fixtures_with_the_credentials_it_was_given() {
    let dir = tempfile::tempdir().unwrap();
    let uber_order = r#"{"id": "u-1", "store": {"id": "s-1"}}"#;
    std::fs::create_dir_all(dir.path().join("ubereats/fetched")).unwrap();
    std::fs::create_dir_all(dir.path().join("wolt/fetched")).unwrap();
    std::fs::write(dir.path().join("ubereats/fetched/o.json"), uber_order).unwrap();
    std::fs::write(dir.path().join("wolt/fetched/w.json"), r#"{"id":"w-1"}"#).unwrap();
    std::fs::write(
        dir.path().join("wolt/fetched/w.headers.json"),
        r#"{"Orderhub-Fetched-Api":"v1"}"#,
    )
    .unwrap();

    let child = fake_provider()
        .args(["--addr", "127.0.0.1:0", "--orders"])
        .arg(dir.path())
        .env("FAKE_UBER_CLIENT_ID", "uber-app")
        .env("FAKE_UBER_CLIENT_SECRET", SECRETS[0])
        .env("FAKE_WOLT_CLIENT_ID", "venue-1")
        .env("FAKE_WOLT_CLIENT_SECRET", SECRETS[1])
        .env("FAKE_WOLT_REFRESH_TOKEN", SECRETS[2])
        .spawn()
        .unwrap();
    let mut running = Running(child);
    let line = first_line(&mut running.0).expect("the listening line");
    let url = line
        .strip_prefix("fake provider listening on ")
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let c = client();

    let token: Value = c
        .post(format!("{url}/oauth/v2/token"))
        .form(&[
            ("client_id", "uber-app"),
            ("client_secret", SECRETS[0]),
            ("grant_type", "client_credentials"),
            ("scope", "eats.order"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap();
    let r = c
        .get(format!("{url}/v2/eats/order/u-1"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), uber_order);

    let basic = base64::engine::general_purpose::STANDARD.encode(format!("venue-1:{}", SECRETS[1]));
    let wolt: Value = c
        .post(format!("{url}/oauth2/token"))
        .header("authorization", format!("Basic {basic}"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", SECRETS[2]),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let wolt = wolt["access_token"].as_str().unwrap();
    let get_wolt = || c.get(format!("{url}/orders/w-1")).bearer_auth(wolt).send();
    assert_eq!(get_wolt().await.unwrap().status(), 200);

    let r = c
        .post(format!("{url}/_fake/faults"))
        .json(&json!({"provider": "wolt", "endpoint": "order", "status": 503}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(get_wolt().await.unwrap().status(), 503);
    assert_eq!(get_wolt().await.unwrap().status(), 200);

    let stats: Value = c
        .get(format!("{url}/_fake/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["mints"], json!({"ubereats": 1, "wolt": 1}));
    assert_eq!(stats["requests_by_path"]["/orders/w-1"], 3);

    let pid = running.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + STEP;
    let status = loop {
        if let Some(s) = running.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    let mut stderr = String::new();
    running
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("2 orders"), "{stderr}");
    for secret in SECRETS {
        assert!(
            !stderr.contains(secret) && !line.contains(secret),
            "{stderr}"
        );
    }
}

#[test]
fn fake_provider_binary_refuses_half_given_credentials() {
    let out = fake_provider()
        .args(["--addr", "127.0.0.1:0"])
        .env("FAKE_WOLT_CLIENT_ID", "venue-1")
        .env("FAKE_WOLT_CLIENT_SECRET", SECRETS[1])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--wolt-refresh-token"), "{stderr}");
    assert!(!stderr.contains(SECRETS[1]), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
}
