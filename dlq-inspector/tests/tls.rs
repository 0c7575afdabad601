//! `--tls-ca` against a nats-server that only speaks TLS, with a CA and a
//! server certificate made for the test by `openssl`: with the CA the
//! inspector connects and lists; without it, it refuses the server.

use std::process::{Command, Stdio};
use std::time::Duration;

use orderhub_tests::*;

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let ok = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl is installed (Debian's openssl package)");
    assert!(ok.success(), "openssl {args:?}");
}

#[tokio::test]
async fn the_inspector_speaks_tls_with_the_operators_ca() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=orderhub-test-ca",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )?;
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
        ],
    );

    let port = free_port();
    std::fs::write(
        d.join("tls.conf"),
        format!(
            "listen: 127.0.0.1:{port}\njetstream {{ max_memory_store: 64MB, max_file_store: 256MB }}\ntls {{ cert_file: {:?}, key_file: {:?} }}\n",
            d.join("server.pem"),
            d.join("server.key")
        ),
    )?;
    let log = d.join("server.log");
    let mut server = Command::new(nats_server_bin())
        .arg("-c")
        .arg(d.join("tls.conf"))
        .arg("-sd")
        .arg(d.join("js"))
        .arg("-l")
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    eventually(STEP, "the TLS server ready", || async {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|l| l.contains("Server is ready"))
    })
    .await?;

    // A stage (here: the test) sets up the streams over TLS.
    let client = tokio::time::timeout(
        STEP,
        async_nats::ConnectOptions::new()
            .add_root_certificates(d.join("ca.pem"))
            .require_tls(true)
            .connect(format!("tls://127.0.0.1:{port}")),
    )
    .await??;
    let js = async_nats::jetstream::new(client);
    let defs = shared::streams::Definitions::load(&Default::default());
    shared::streams::ensure_stream(&js, defs.stream("DLQ"), true).await?;
    shared::streams::ensure_stream(&js, defs.stream("OUTCOMES"), true).await?;

    let url = format!("nats://127.0.0.1:{port}");
    let run = |extra: &[&str]| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_dlq-inspector"));
        cmd.args(["--nats-url", &url]).args(extra).arg("stats");
        cmd.env_remove("NATS_URL");
        async move { tokio::time::timeout(Duration::from_secs(30), cmd.output()).await }
    };
    let ca = d.join("ca.pem").display().to_string();
    let with_ca = run(&["--tls-ca", &ca]).await??;
    assert_eq!(
        with_ca.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&with_ca.stderr)
    );
    let without = run(&[]).await??;
    assert_eq!(without.status.code(), Some(1));
    let err = String::from_utf8_lossy(&without.stderr);
    assert!(err.contains("cannot connect to NATS"), "{err}");
    let _ = server.kill();
    let _ = server.wait();
    Ok(())
}
