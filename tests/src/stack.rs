//! The whole hub as separate processes, for end-to-end and soak tests: a
//! nats-server, the `ingress`, `fetcher`, `transformer`, `forwarder` and `status-sync`
//! binaries, the in-test [`TestBackend`] and the in-test
//! [`FakeProvider`] (Uber Eats and Wolt APIs, which the fetcher reads).
//! Each stage can be SIGKILLed and restarted.
//!
//! The binaries are the workspace's own, from the target directory these
//! tests run from (`scripts/test` builds them before running the tests).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::fake_provider::FakeProvider;
use crate::{
    NatsServer, STEP, TEST_TOKEN_STORE_KEY, TestBackend, WOLT_V1_SEED, eventually, free_port,
};

/// A stage binary of the workspace.
pub fn bin(name: &str) -> anyhow::Result<PathBuf> {
    // Tests run from <target>/<profile>/deps/<test>; binaries live in
    // <target>/<profile>/.
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("test binary has no target dir")?;
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} is missing: build the binaries first (`cargo build --bins`, as scripts/test does)",
            path.display()
        );
    }
    Ok(path)
}

/// The processes of a running hub.
pub struct Stack {
    pub nats: NatsServer,
    pub backend: TestBackend,
    /// Answers the Uber Eats and Wolt accounts' API calls; every client id,
    /// client secret and Wolt refresh token the fake accepts is the value of
    /// the config's `S` variable, when the test passes one.
    pub provider: FakeProvider,
    pub ingress_port: u16,
    ops_ports: BTreeMap<&'static str, u16>,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    /// Each stage's own variables besides `env` (its NATS identity).
    stage_env: BTreeMap<&'static str, Vec<(String, String)>>,
    children: BTreeMap<&'static str, tokio::process::Child>,
}

/// The stages, in start order.
pub const STAGES: [&str; 5] = [
    "ingress",
    "fetcher",
    "transformer",
    "forwarder",
    "status-sync",
];

impl Stack {
    /// Starts NATS, the backend, the fake provider API (with every
    /// fixture's fetched order) and every stage with `hub_toml`, in which
    /// `{{BACKEND_URL}}` is replaced by the test backend's URL and
    /// `{{PROVIDER_URL}}` by the fake provider's; `env` holds the secrets the
    /// config names.
    pub async fn start(hub_toml: &str, env: &[(&str, &str)]) -> anyhow::Result<Stack> {
        Self::start_on(NatsServer::start()?, hub_toml, env, Vec::new(), None).await
    }

    /// [`Stack::start`] on a nats-server that admits only `ids`: each stage
    /// signs in as its own identity (`NATS_NKEY`, a seed file in the
    /// stack's directory) with that identity's permissions.
    pub async fn start_with_identities(
        hub_toml: &str,
        env: &[(&str, &str)],
        ids: &crate::identities::Identities,
    ) -> anyhow::Result<Stack> {
        let nats = NatsServer::start_with_identities(ids)?;
        Self::start_on(nats, hub_toml, env, Vec::new(), Some(ids)).await
    }

    /// [`Stack::start`] on a nats-server that speaks only TLS and wants a
    /// client certificate: every stage gets `tls`'s CA and client
    /// certificate through `NATS_TLS_CA`, `NATS_TLS_CERT`, `NATS_TLS_KEY`.
    pub async fn start_tls(
        hub_toml: &str,
        env: &[(&str, &str)],
        tls: &crate::tls::TlsFiles,
    ) -> anyhow::Result<Stack> {
        Self::start_on(NatsServer::start_tls(tls)?, hub_toml, env, tls.env(), None).await
    }

    async fn start_on(
        nats: NatsServer,
        hub_toml: &str,
        env: &[(&str, &str)],
        more_env: Vec<(String, String)>,
        ids: Option<&crate::identities::Identities>,
    ) -> anyhow::Result<Stack> {
        let backend = TestBackend::start().await?;
        let provider = FakeProvider::start().await?;
        provider.load_orders(&crate::workspace().join("tests/fixtures"))?;
        if let Some((_, s)) = env.iter().find(|(k, _)| *k == "S") {
            provider.add_uber_client(s, s);
            provider.add_wolt_venue(s, s, s);
            provider.add_wolt_venue(s, s, WOLT_V1_SEED);
        }
        let dir = tempfile::tempdir()?;
        let hub_path = dir.path().join("hub.toml");
        std::fs::write(
            &hub_path,
            hub_toml
                .replace("{{BACKEND_URL}}", &backend.url())
                .replace("{{PROVIDER_URL}}", &provider.url()),
        )?;
        let mut vars: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        vars.extend(more_env);
        vars.push(("NATS_URL".into(), nats.url()));
        vars.push(("TOKEN_STORE_KEY".into(), TEST_TOKEN_STORE_KEY.into()));
        vars.push(("S_WOLT_V1".into(), WOLT_V1_SEED.into()));
        vars.push(("HUB_CONFIG".into(), hub_path.display().to_string()));
        vars.push(("LOG_FORMAT".into(), "json".into()));
        vars.push((
            "RUST_LOG".into(),
            std::env::var("STACK_LOG").unwrap_or_else(|_| "warn".into()),
        ));
        let mut stage_env = BTreeMap::new();
        if let Some(ids) = ids {
            let keys = dir.path().join("nkeys");
            ids.write(&keys)?;
            for stage in STAGES {
                let seed = crate::identities::Identities::seed_path(&keys, stage);
                stage_env.insert(
                    stage,
                    vec![("NATS_NKEY".to_owned(), seed.display().to_string())],
                );
            }
        }
        let mut stack = Stack {
            nats,
            backend,
            provider,
            ingress_port: free_port(),
            ops_ports: STAGES.iter().map(|s| (*s, free_port())).collect(),
            dir,
            env: vars,
            stage_env,
            children: BTreeMap::new(),
        };
        for stage in STAGES {
            stack.spawn(stage)?;
        }
        for stage in STAGES {
            stack.wait_ready(stage).await?;
        }
        Ok(stack)
    }

    /// The hub config the stages read at start (rewrite it, then restart
    /// a stage to change its config).
    pub fn hub_path(&self) -> PathBuf {
        self.dir.path().join("hub.toml")
    }

    pub fn ingress_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ingress_port)
    }

    pub fn ops_url(&self, stage: &str) -> String {
        format!("http://127.0.0.1:{}", self.ops_ports[stage])
    }

    /// Starts (or starts again) one stage.
    pub fn spawn(&mut self, stage: &'static str) -> anyhow::Result<()> {
        self.spawn_as(stage, stage)
    }

    /// Starts (or starts again) another replica of the stage `binary`,
    /// known as `name` (its own ops port and log; [`Stack::kill`] and
    /// [`Stack::log`] take the name).
    pub fn spawn_replica(
        &mut self,
        name: &'static str,
        binary: &'static str,
    ) -> anyhow::Result<()> {
        self.spawn_as(name, binary)
    }

    fn spawn_as(&mut self, stage: &'static str, binary: &'static str) -> anyhow::Result<()> {
        let ops_port = *self.ops_ports.entry(stage).or_insert_with(free_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{stage}.log")))?;
        let mut cmd = tokio::process::Command::new(bin(binary)?);
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(
                self.stage_env
                    .get(binary)
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .env("OPS_ADDR", format!("127.0.0.1:{ops_port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        if binary == "ingress" {
            cmd.env("LISTEN_ADDR", format!("127.0.0.1:{}", self.ingress_port));
        }
        let child = cmd.spawn().with_context(|| format!("spawn {stage}"))?;
        self.children.insert(stage, child);
        Ok(())
    }

    /// Waits until the stage's `/ready` answers 200.
    pub async fn wait_ready(&self, stage: &str) -> anyhow::Result<()> {
        let url = format!("{}/ready", self.ops_url(stage));
        eventually(
            Duration::from_secs(60),
            &format!("{stage} ready"),
            || async {
                let r = reqwest::get(&url).await.ok()?;
                (r.status() == 200).then_some(())
            },
        )
        .await
        .with_context(|| format!("{stage} log:\n{}", self.log(stage)))
    }

    /// SIGKILLs one stage.
    pub async fn kill(&mut self, stage: &'static str) -> anyhow::Result<()> {
        if let Some(mut c) = self.children.remove(stage) {
            c.start_kill()?;
            tokio::time::timeout(STEP, c.wait()).await??;
        }
        Ok(())
    }

    /// SIGTERMs one stage and waits for it to exit; returns its exit code.
    pub async fn terminate(&mut self, stage: &'static str) -> anyhow::Result<Option<i32>> {
        let Some(mut c) = self.children.remove(stage) else {
            return Ok(None);
        };
        if let Some(pid) = c.id() {
            std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()?;
        }
        let status = tokio::time::timeout(Duration::from_secs(60), c.wait()).await??;
        Ok(status.code())
    }

    /// What the stage wrote to stderr so far (its logs).
    pub fn log(&self, stage: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{stage}.log"))).unwrap_or_default()
    }

    /// Stops every stage (SIGTERM), then NATS with the stack.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        for stage in STAGES.iter().rev() {
            if let Some(code) = self.terminate(stage).await?
                && code != 0
            {
                bail!("{stage} exited {code}:\n{}", self.log(stage));
            }
        }
        Ok(())
    }
}
