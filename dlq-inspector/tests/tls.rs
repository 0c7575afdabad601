//! The inspector against a nats-server that only speaks TLS and wants a
//! client certificate (the harness's `TlsFiles`, made by `openssl`): with
//! the operator's CA, certificate and key it connects and lists; without
//! them it refuses the server.

use std::time::Duration;

use orderhub_tests::tls::TlsFiles;
use orderhub_tests::*;

#[tokio::test]
async fn the_inspector_speaks_tls_with_the_operators_ca() -> anyhow::Result<()> {
    let tls = TlsFiles::generate()?;
    let nats = NatsServer::start_tls(&tls)?;

    // A stage (here: the test) sets up the streams over TLS.
    let js = async_nats::jetstream::new(nats.client().await?);
    let defs = shared::streams::Definitions::load(&Default::default());
    shared::streams::ensure_stream(&js, defs.stream("DLQ"), true).await?;
    shared::streams::ensure_stream(&js, defs.stream("OUTCOMES"), true).await?;

    let url = nats.url();
    let run = |extra: &[&str]| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_dlq-inspector"));
        cmd.args(["--nats-url", &url]).args(extra).arg("stats");
        for var in ["NATS_URL", "NATS_TLS_CA", "NATS_TLS_CERT", "NATS_TLS_KEY"] {
            cmd.env_remove(var);
        }
        async move { tokio::time::timeout(Duration::from_secs(30), cmd.output()).await }
    };
    let path = |p: &std::path::Path| p.display().to_string();
    let (ca, cert, key) = (path(&tls.ca), path(&tls.client_cert), path(&tls.client_key));
    let with_tls = run(&["--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key]).await??;
    assert_eq!(
        with_tls.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&with_tls.stderr)
    );
    let without = run(&[]).await??;
    assert_eq!(without.status.code(), Some(1));
    let err = String::from_utf8_lossy(&without.stderr);
    assert!(err.contains("cannot connect to NATS"), "{err}");
    Ok(())
}
