//! Per-stage NATS identities from `nats/identities.toml`: the server's
//! `authorization { users = [...] }` block (NKey public keys and each
//! identity's publish and subscribe allow lists, nothing secret) and one
//! NKey seed per identity, generated fresh for every test server and every
//! `scripts/nats-identities` run, so tests and deployments use the same
//! permissions and no seed is ever committed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// What one identity touches, as `nats/identities.toml` lists it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySpec {
    #[serde(default)]
    pub streams: Vec<String>,
    #[serde(default)]
    pub consumers: Vec<String>,
    #[serde(default)]
    pub kv_read: Vec<String>,
    #[serde(default)]
    pub kv_write: Vec<String>,
    #[serde(default)]
    pub publish: Vec<String>,
    #[serde(default)]
    pub subscribe: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    identity: BTreeMap<String, IdentitySpec>,
}

/// The identities file: the workspace's `nats/identities.toml`.
pub fn specs_path() -> PathBuf {
    crate::workspace().join("nats/identities.toml")
}

/// Every identity of the file, by name.
pub fn load_specs(path: &Path) -> anyhow::Result<BTreeMap<String, IdentitySpec>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let file: File = toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
    anyhow::ensure!(
        file.identity.contains_key("admin"),
        "{}: no admin identity",
        path.display()
    );
    Ok(file.identity)
}

/// The publish and subscribe allow lists an identity gets. `manage`: it
/// may create and update its streams, buckets and consumers
/// (MANAGE_STREAMS=true).
pub fn permissions(name: &str, spec: &IdentitySpec, manage: bool) -> (Vec<String>, Vec<String>) {
    let mut publish = vec!["$JS.API.INFO".to_owned()];
    let stream = |publish: &mut Vec<String>, s: &str| {
        publish.push(format!("$JS.API.STREAM.INFO.{s}"));
        if manage {
            publish.push(format!("$JS.API.STREAM.CREATE.{s}"));
            publish.push(format!("$JS.API.STREAM.UPDATE.{s}"));
        }
    };
    for s in &spec.streams {
        stream(&mut publish, s);
    }
    for c in &spec.consumers {
        publish.push(format!("$JS.API.CONSUMER.INFO.{c}"));
        publish.push(format!("$JS.API.CONSUMER.MSG.NEXT.{c}"));
        publish.push(format!("$JS.ACK.{c}.>"));
        if manage {
            publish.push(format!("$JS.API.CONSUMER.CREATE.{c}"));
            publish.push(format!("$JS.API.CONSUMER.CREATE.{c}.>"));
        }
    }
    for b in spec.kv_read.iter().chain(&spec.kv_write) {
        stream(&mut publish, &format!("KV_{b}"));
        publish.push(format!("$JS.API.DIRECT.GET.KV_{b}.>"));
    }
    for b in &spec.kv_write {
        publish.push(format!("$KV.{b}.>"));
    }
    publish.extend(spec.publish.iter().cloned());
    // Its own reply inbox only (shared::subjects::inbox_prefix); the test
    // clients and the admin use async-nats' default _INBOX.
    let inbox = if name == "admin" {
        "_INBOX.>".to_owned()
    } else {
        format!("{}.>", shared::subjects::inbox_prefix(name))
    };
    let mut subscribe = vec![inbox];
    subscribe.extend(spec.subscribe.iter().cloned());
    for list in [&mut publish, &mut subscribe] {
        let mut seen = std::collections::BTreeSet::new();
        list.retain(|s| seen.insert(s.clone()));
    }
    (publish, subscribe)
}

fn quoted(list: &[String]) -> String {
    list.iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One identity's entry in the server's users list.
pub fn user_entry(name: &str, public_key: &str, spec: &IdentitySpec, manage: bool) -> String {
    let (publish, subscribe) = permissions(name, spec, manage);
    format!(
        "    # {name}\n    {{ nkey: {public_key}, permissions: {{\n      publish: {{ allow: [{}] }}\n      subscribe: {{ allow: [{}] }}\n    }} }}\n",
        quoted(&publish),
        quoted(&subscribe)
    )
}

/// A fresh NKey for each identity of a file, and the server block that
/// admits them with their permissions.
pub struct Identities {
    /// Seed (`SU...`) by identity name: secrets.
    seeds: BTreeMap<String, String>,
    /// `authorization { users = [...] }`, to append to a server config or
    /// include from one.
    pub server_block: String,
}

impl Identities {
    /// New keys for every identity of `nats/identities.toml`.
    pub fn generate(manage: bool) -> anyhow::Result<Identities> {
        Self::generate_from(&specs_path(), manage)
    }

    pub fn generate_from(path: &Path, manage: bool) -> anyhow::Result<Identities> {
        let specs = load_specs(path)?;
        let mut seeds = BTreeMap::new();
        let mut users = String::new();
        for (name, spec) in &specs {
            let key = nkeys::KeyPair::new_user();
            users.push_str(&user_entry(name, &key.public_key(), spec, manage));
            seeds.insert(name.clone(), key.seed()?);
        }
        let server_block = format!(
            "# Generated from nats/identities.toml (manage streams: {manage}).\n\
             # Public keys only; each identity's seed is its own secret.\n\
             authorization {{\n  users = [\n{users}  ]\n}}\n"
        );
        Ok(Identities {
            seeds,
            server_block,
        })
    }

    /// The identities' names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.seeds.keys().map(String::as_str)
    }

    /// `name`'s seed; panics on an identity the file does not have.
    pub fn seed(&self, name: &str) -> &str {
        self.seeds
            .get(name)
            .unwrap_or_else(|| panic!("no NATS identity {name:?} in nats/identities.toml"))
    }

    /// Writes `<dir>/<name>.nk` (the seed, mode 0600) for every identity
    /// and `<dir>/users.conf` (the server block).
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::create_dir_all(dir)?;
        for (name, seed) in &self.seeds {
            let path = dir.join(format!("{name}.nk"));
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("{}", path.display()))?;
            writeln!(f, "{seed}")?;
        }
        std::fs::write(dir.join("users.conf"), &self.server_block)?;
        Ok(())
    }

    /// The path of `name`'s seed file under `dir` (after [`Identities::write`]).
    pub fn seed_path(dir: &Path, name: &str) -> PathBuf {
        dir.join(format!("{name}.nk"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_loads_and_every_stage_has_an_identity() {
        let specs = load_specs(&specs_path()).unwrap();
        for name in crate::stack::STAGES
            .iter()
            .chain(&["ledger", "dlq-inspector", "admin"])
        {
            assert!(specs.contains_key(*name), "no identity {name}");
        }
    }

    #[test]
    fn without_manage_no_identity_creates_or_updates() {
        for (name, spec) in load_specs(&specs_path()).unwrap() {
            if name == "admin" {
                continue;
            }
            let (publish, _) = permissions(&name, &spec, false);
            for s in publish {
                // (dlq-inspector creates ephemeral consumers to read; that
                // is no setup.)
                assert!(
                    !s.starts_with("$JS.API.STREAM.CREATE.")
                        && !s.starts_with("$JS.API.STREAM.UPDATE.")
                        && (name == "dlq-inspector" || !s.starts_with("$JS.API.CONSUMER.CREATE.")),
                    "{name} may {s} without manage"
                );
            }
        }
    }

    #[test]
    fn only_admin_may_publish_or_subscribe_to_everything() {
        for (name, spec) in load_specs(&specs_path()).unwrap() {
            let (publish, subscribe) = permissions(&name, &spec, true);
            let everything = publish.iter().chain(&subscribe).any(|s| s == ">");
            assert_eq!(everything, name == "admin", "{name}");
        }
    }
}
