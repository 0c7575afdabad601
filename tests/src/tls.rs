//! TLS material for a test, made by `openssl` (Debian's `openssl`
//! package; `.ci/run` installs it where missing): a CA, a server
//! certificate for 127.0.0.1 signed by it, and a client certificate signed
//! by it for mutual TLS. Nothing here is a secret: the files live in the
//! test's temporary directory and die with it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// A CA with one server and one client certificate.
pub struct TlsFiles {
    _dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .context("run openssl (Debian's openssl package)")?;
    if !out.status.success() {
        bail!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A key and a certificate for `name` signed by the CA in `dir`, with
/// `ext` as its extensions.
fn signed(dir: &Path, name: &str, subject: &str, ext: &str) -> anyhow::Result<()> {
    let (key, csr, pem, cnf) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
        format!("{name}.cnf"),
    );
    openssl(
        dir,
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", subject,
        ],
    )?;
    std::fs::write(dir.join(&cnf), ext)?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "1",
            "-extfile",
            &cnf,
        ],
    )
}

impl TlsFiles {
    pub fn generate() -> anyhow::Result<TlsFiles> {
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
        )?;
        signed(
            d,
            "server",
            "/CN=localhost",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )?;
        signed(
            d,
            "client",
            "/CN=orderhub-stage",
            "extendedKeyUsage=clientAuth\n",
        )?;
        Ok(TlsFiles {
            ca: d.join("ca.pem"),
            server_cert: d.join("server.pem"),
            server_key: d.join("server.key"),
            client_cert: d.join("client.pem"),
            client_key: d.join("client.key"),
            _dir: dir,
        })
    }

    /// The environment a stage binary reads them from.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("NATS_TLS_CA", &self.ca),
            ("NATS_TLS_CERT", &self.client_cert),
            ("NATS_TLS_KEY", &self.client_key),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.display().to_string()))
        .collect()
    }

    /// The same as the stages' flags, for an in-process stage.
    pub fn args(&self) -> shared::config::NatsTlsArgs {
        shared::config::NatsTlsArgs {
            tls_ca: Some(self.ca.clone()),
            tls_cert: Some(self.client_cert.clone()),
            tls_key: Some(self.client_key.clone()),
        }
    }

    /// A `tls { }` block for nats-server: its certificate, and every
    /// client must present one the CA signed.
    pub fn server_block(&self) -> String {
        format!(
            "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: true\n}}\n",
            self.server_cert, self.server_key, self.ca
        )
    }
}
