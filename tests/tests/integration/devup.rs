//! `scripts/dev-up` fails loudly: given a hub config that does not validate,
//! it does not say "up" but exits 1, names the stage that exited and shows
//! its config error, and leaves nothing running behind it.
//!
//! dev-up runs as a process with the workspace's already built binaries
//! (`DEV_BIN_DIR`), free ports and a temporary data directory, so it neither
//! builds nor collides with a dev-up a developer has running.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use orderhub_tests::{free_port, stack::bin, workspace};

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

#[test]
fn a_config_error_stops_dev_up_naming_the_stage_and_the_error() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
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

    let bin_dir = bin("ingress")?
        .parent()
        .context("binaries have a directory")?
        .to_owned();
    for name in ["transformer", "forwarder", "sample-backend"] {
        bin(name)?;
    }
    let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
    let out = dir.path().join("stdout");
    let err = dir.path().join("stderr");
    let child = Command::new(workspace().join("scripts/dev-up"))
        .env("HUB_CONFIG", &hub)
        .env("DEV_BIN_DIR", &bin_dir)
        .env("DEV_DATA_DIR", &data)
        .env("DEV_NATS_PORT", ports[0].to_string())
        .env("DEV_BACKEND_PORT", ports[1].to_string())
        .env("DEV_INGRESS_PORT", ports[2].to_string())
        .env("DEV_INGRESS_OPS_PORT", ports[3].to_string())
        .env("DEV_TRANSFORMER_OPS_PORT", ports[4].to_string())
        .env("DEV_FORWARDER_OPS_PORT", ports[5].to_string())
        .env("DEV_READY_TIMEOUT_SECS", "60")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out)?)
        .stderr(std::fs::File::create(&err)?)
        .spawn()
        .context("spawn scripts/dev-up")?;
    let mut devup = DevUp {
        child,
        data: data.clone(),
    };

    // A bound on a hang, not a timing assertion: the stages exit at once.
    let status = devup.wait(Duration::from_secs(120))?;
    let stdout = std::fs::read_to_string(&out)?;
    let stderr = std::fs::read_to_string(&err)?;
    let shown = format!("stdout:\n{stdout}\nstderr:\n{stderr}");

    assert_eq!(status.code(), Some(1), "{shown}");
    assert!(!stdout.contains("orderhub is up"), "{shown}");
    let named = ["ingress", "transformer", "forwarder"]
        .iter()
        .any(|stage| stderr.contains(&format!("dev-up: {stage} exited with status 2 at start")));
    assert!(named, "no stage named with its exit status: {shown}");
    assert!(
        stderr.contains(&format!("| error: {expected}")),
        "the config error {expected:?} is not shown: {shown}"
    );
    // Everything it started is gone: it removed its pid file after stopping
    // them, and NATS no longer listens.
    assert!(!DevUp::pidfile(&data).exists(), "{shown}");
    assert!(port_is_closed(ports[0]), "nats still listening: {shown}");
    Ok(())
}
