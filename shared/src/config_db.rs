//! The hub config in PostgreSQL (`CONFIG_SOURCE=postgres`): the TOML
//! file's sections as rows of the hub's own tables
//! (`shared/migrations`), read by every stage, written by the import.
//!
//! # Contract
//! - Tables: `hub_tenants` (key `id`), `hub_accounts` (key `provider`,
//!   `id`), `hub_branches` and `hub_products` (an account's mappings, one
//!   row each), `hub_settings` (one row per other section: `retry`,
//!   `streams`, `ingress`, `forwarder`, `provider_api`, `fetcher`,
//!   `status_sync`). Each `doc` is a jsonb object in the shape of its TOML
//!   section, so a stage turns the rows into the same document the file
//!   would be and validates it with the same code ([`HubConfig::from_toml`]);
//!   an unknown field or a wrong type names its row. Secrets are never in a
//!   row: only the `*_env` / `*_file` names the file uses.
//! - Every statement that changes a table bumps `hub_config_version` and
//!   notifies `orderhub_config` (one notification per transaction). A
//!   stage reads the rows and the version in one snapshot, LISTENs, and
//!   also compares the version every poll interval, so a lost notification
//!   or a dropped connection is caught; a burst of notifications finds the
//!   version already loaded and reloads once.
//! - Stages only read. [`import`] (the `ledger config import` command)
//!   applies the migrations and replaces every row in one transaction
//!   after the file validated fully; a file that does not validate writes
//!   nothing.
//! - The migrations are versions 1001 and up; the ledger's share the
//!   database's `_sqlx_migrations`, and each migrator ignores the other's.
//! - `DATABASE_URL` is never printed: errors say which step failed, with
//!   sqlx's message for it, which never holds the URL.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{ConfigError, HubConfig};
use crate::live::{LiveConfig, ReloadError};

/// The hub config migrations, compiled in; they leave the ledger's alone.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate::Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("./migrations")
};

/// The channel the tables' trigger notifies.
pub const CHANNEL: &str = "orderhub_config";

/// How a config from the tables is named in errors, logs and `/ready`.
pub const ORIGIN: &str = "postgres";

/// The sections `hub_settings` may hold.
pub const SETTINGS: [&str; 7] = [
    "retry",
    "streams",
    "ingress",
    "forwarder",
    "provider_api",
    "fetcher",
    "status_sync",
];

/// Looks up a secret's environment variable.
pub type Env = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The process environment.
pub fn process_env() -> Env {
    Arc::new(|name: &str| std::env::var(name).ok())
}

/// Why the config could not be read from or written to PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("DATABASE_URL: not a PostgreSQL URL (postgres://user@host:5432/db)")]
    Url,
    #[error("cannot connect to the config database: {0}")]
    Connect(sqlx::Error),
    #[error(
        "the hub config tables are missing from the database (`ledger config import <file>` creates them)"
    )]
    MissingTables,
    #[error("reading the hub config tables: {0}")]
    Read(sqlx::Error),
    #[error("writing the hub config tables: {0}")]
    Write(sqlx::Error),
    #[error("hub config migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

/// Parses `DATABASE_URL` without ever echoing it.
pub fn connect_options(url: &SecretString) -> Result<PgConnectOptions, DbError> {
    let url = url.expose_secret();
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(DbError::Url);
    }
    // sqlx's parse error may quote the URL: never shown.
    PgConnectOptions::from_str(url).map_err(|_| DbError::Url)
}

/// A small pool (the config is read rarely), connected now: an unreachable
/// database is an error at start, not later.
pub async fn connect(options: PgConnectOptions) -> Result<PgPool, DbError> {
    PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(DbError::Connect)
}

fn read_error(e: sqlx::Error) -> DbError {
    match &e {
        sqlx::Error::Database(d) if d.code().as_deref() == Some("42P01") => DbError::MissingTables,
        _ => DbError::Read(e),
    }
}

/// The tables as one hub document (the TOML file's shape), with the
/// version it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub version: i64,
    pub doc: Value,
}

/// The version the tables are at.
pub async fn version(pool: &PgPool) -> Result<i64, DbError> {
    sqlx::query_scalar("SELECT version FROM hub_config_version")
        .fetch_one(pool)
        .await
        .map_err(read_error)
}

/// Reads every table in one snapshot.
pub async fn read(pool: &PgPool) -> Result<Snapshot, DbError> {
    let mut tx = pool.begin().await.map_err(DbError::Read)?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(DbError::Read)?;
    let version: i64 = sqlx::query_scalar("SELECT version FROM hub_config_version")
        .fetch_one(&mut *tx)
        .await
        .map_err(read_error)?;
    let tenants: Vec<(String, Value)> =
        sqlx::query_as("SELECT id, doc FROM hub_tenants ORDER BY id")
            .fetch_all(&mut *tx)
            .await
            .map_err(read_error)?;
    let accounts: Vec<(String, String, Value)> =
        sqlx::query_as("SELECT provider, id, doc FROM hub_accounts ORDER BY provider, id")
            .fetch_all(&mut *tx)
            .await
            .map_err(read_error)?;
    let branches: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT provider, account_id, store_id, branch_id FROM hub_branches ORDER BY 1, 2, 3",
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(read_error)?;
    let products: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT provider, account_id, provider_product_id, product_id FROM hub_products ORDER BY 1, 2, 3",
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(read_error)?;
    let settings: Vec<(String, Value)> =
        sqlx::query_as("SELECT section, doc FROM hub_settings ORDER BY section")
            .fetch_all(&mut *tx)
            .await
            .map_err(read_error)?;
    tx.commit().await.map_err(DbError::Read)?;

    let mut doc = Map::new();
    for (section, value) in settings {
        doc.insert(section, value);
    }
    let tenants = tenants
        .into_iter()
        .map(|(id, d)| {
            let mut row = Map::new();
            row.insert("id".into(), Value::String(id));
            extend(&mut row, d);
            Value::Object(row)
        })
        .collect();
    doc.insert("tenant".into(), Value::Array(tenants));
    let mappings = |rows: &[(String, String, String, String)], provider: &str, id: &str| {
        rows.iter()
            .filter(|(p, a, _, _)| p == provider && a == id)
            .map(|(_, _, k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<Map<_, _>>()
    };
    let accounts = accounts
        .into_iter()
        .map(|(provider, id, d)| {
            let mut row = Map::new();
            row.insert("id".into(), Value::String(id.clone()));
            row.insert("provider".into(), Value::String(provider.clone()));
            extend(&mut row, d);
            let b = mappings(&branches, &provider, &id);
            if !b.is_empty() {
                row.insert("branches".into(), Value::Object(b));
            }
            let p = mappings(&products, &provider, &id);
            if !p.is_empty() {
                row.insert("products".into(), Value::Object(p));
            }
            Value::Object(row)
        })
        .collect();
    doc.insert("account".into(), Value::Array(accounts));
    Ok(Snapshot {
        version,
        doc: Value::Object(doc),
    })
}

fn extend(row: &mut Map<String, Value>, doc: Value) {
    if let Value::Object(fields) = doc {
        for (k, v) in fields {
            row.entry(k).or_insert(v);
        }
    }
}

/// A hub document as the TOML file it stands for (nulls dropped: TOML has
/// none, and an absent key means the same).
pub fn to_toml(doc: &Value) -> Result<String, String> {
    let value = toml::Value::try_from(strip_nulls(doc.clone())).map_err(|e| e.to_string())?;
    toml::to_string(&value).map_err(|e| e.to_string())
}

fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

/// Validates a hub document exactly like the file. A field that does not
/// parse (unknown, wrong type) is named by its table and row.
pub fn to_hub(doc: &Value, env: &dyn Fn(&str) -> Option<String>) -> Result<HubConfig, ConfigError> {
    let text = to_toml(doc).map_err(|message| ConfigError::Parse {
        origin: ORIGIN.to_owned(),
        message,
    })?;
    match HubConfig::from_toml(&text, ORIGIN, env) {
        Err(ConfigError::Parse { message, .. }) => {
            Err(locate_parse_error(doc, env).unwrap_or(ConfigError::Parse {
                origin: ORIGIN.to_owned(),
                message,
            }))
        }
        other => other,
    }
}

/// Parses each row alone to find the one that does not parse.
fn locate_parse_error(doc: &Value, env: &dyn Fn(&str) -> Option<String>) -> Option<ConfigError> {
    let mut alone: Vec<(String, Value)> = Vec::new();
    for (key, table, label) in [
        ("tenant", "hub_tenants", &["id"][..]),
        ("account", "hub_accounts", &["provider", "id"][..]),
    ] {
        for row in doc[key].as_array().into_iter().flatten() {
            let name = label
                .iter()
                .map(|f| row[*f].as_str().unwrap_or("?"))
                .collect::<Vec<_>>()
                .join("/");
            alone.push((
                format!("{table} row {name}"),
                serde_json::json!({ key: [row] }),
            ));
        }
    }
    if let Some(sections) = doc.as_object() {
        for (section, value) in sections {
            if section != "tenant" && section != "account" {
                alone.push((
                    format!("hub_settings row {section}"),
                    serde_json::json!({ section: value }),
                ));
            }
        }
    }
    alone.into_iter().find_map(|(origin, doc)| {
        let text = to_toml(&doc).ok()?;
        match HubConfig::from_toml(&text, &origin, env) {
            Err(ConfigError::Parse { message, .. }) => Some(ConfigError::Parse {
                origin: format!("{ORIGIN} {origin}"),
                // The line quoted from the generated text means nothing to
                // whoever edits the row: the first line says what is wrong.
                message: message.lines().last().unwrap_or_default().to_owned(),
            }),
            _ => None,
        }
    })
}

/// Reads and validates the tables: the config and the version it is.
pub async fn load(
    pool: &PgPool,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(HubConfig, i64), DbError> {
    let snapshot = read(pool).await?;
    let hub = to_hub(&snapshot.doc, env)?;
    Ok((hub, snapshot.version))
}

/// What [`import`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    pub tenants: usize,
    pub accounts: usize,
    pub branches: usize,
    pub products: usize,
    pub settings: usize,
}

/// Validates the TOML `text` fully (secrets resolved through `env`), then
/// applies the migrations and replaces every row in one transaction. An
/// invalid file writes nothing.
pub async fn import(
    pool: &PgPool,
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Imported, DbError> {
    HubConfig::from_toml(text, origin, env)?;
    let value: toml::Value = toml::from_str(text).map_err(|e| ConfigError::Parse {
        origin: origin.to_owned(),
        message: e.to_string(),
    })?;
    let doc = serde_json::to_value(value).map_err(|e| ConfigError::Parse {
        origin: origin.to_owned(),
        message: e.to_string(),
    })?;
    MIGRATOR.run(pool).await?;

    let mut count = Imported {
        tenants: 0,
        accounts: 0,
        branches: 0,
        products: 0,
        settings: 0,
    };
    let mut tx = pool.begin().await.map_err(DbError::Write)?;
    for table in [
        "hub_branches",
        "hub_products",
        "hub_accounts",
        "hub_tenants",
        "hub_settings",
    ] {
        sqlx::query(&format!("DELETE FROM {table}"))
            .execute(&mut *tx)
            .await
            .map_err(DbError::Write)?;
    }
    let Value::Object(sections) = doc else {
        return Err(DbError::Invalid(ConfigError::Parse {
            origin: origin.to_owned(),
            message: "not a table".into(),
        }));
    };
    for (section, value) in sections {
        match section.as_str() {
            "tenant" => {
                for row in value.as_array().into_iter().flatten() {
                    let mut row = row.as_object().cloned().unwrap_or_default();
                    let id = take_str(&mut row, "id");
                    sqlx::query("INSERT INTO hub_tenants (id, doc) VALUES ($1, $2)")
                        .bind(id)
                        .bind(Value::Object(row))
                        .execute(&mut *tx)
                        .await
                        .map_err(DbError::Write)?;
                    count.tenants += 1;
                }
            }
            "account" => {
                for row in value.as_array().into_iter().flatten() {
                    let mut row = row.as_object().cloned().unwrap_or_default();
                    let id = take_str(&mut row, "id");
                    let provider = take_str(&mut row, "provider");
                    let branches = row.remove("branches");
                    let products = row.remove("products");
                    sqlx::query("INSERT INTO hub_accounts (provider, id, doc) VALUES ($1, $2, $3)")
                        .bind(&provider)
                        .bind(&id)
                        .bind(Value::Object(row))
                        .execute(&mut *tx)
                        .await
                        .map_err(DbError::Write)?;
                    count.accounts += 1;
                    for (table, columns, map, n) in [
                        (
                            "hub_branches",
                            "store_id, branch_id",
                            branches,
                            &mut count.branches,
                        ),
                        (
                            "hub_products",
                            "provider_product_id, product_id",
                            products,
                            &mut count.products,
                        ),
                    ] {
                        for (k, v) in map
                            .as_ref()
                            .and_then(Value::as_object)
                            .into_iter()
                            .flatten()
                        {
                            sqlx::query(&format!(
                                "INSERT INTO {table} (provider, account_id, {columns}) VALUES ($1, $2, $3, $4)"
                            ))
                            .bind(&provider)
                            .bind(&id)
                            .bind(k)
                            .bind(v.as_str().unwrap_or_default())
                            .execute(&mut *tx)
                            .await
                            .map_err(DbError::Write)?;
                            *n += 1;
                        }
                    }
                }
            }
            _ => {
                sqlx::query("INSERT INTO hub_settings (section, doc) VALUES ($1, $2)")
                    .bind(&section)
                    .bind(value)
                    .execute(&mut *tx)
                    .await
                    .map_err(DbError::Write)?;
                count.settings += 1;
            }
        }
    }
    tx.commit().await.map_err(DbError::Write)?;
    Ok(count)
}

fn take_str(row: &mut Map<String, Value>, key: &str) -> String {
    match row.remove(key) {
        Some(Value::String(s)) => s,
        _ => String::new(),
    }
}

/// The tables as a TOML hub file.
pub async fn export(pool: &PgPool) -> Result<String, DbError> {
    let snapshot = read(pool).await?;
    to_toml(&snapshot.doc).map_err(|message| {
        DbError::Invalid(ConfigError::Parse {
            origin: ORIGIN.to_owned(),
            message,
        })
    })
}

/// Keeps `live` on the tables' config until `shutdown`: reloads on each
/// notification and whenever the version differs from `loaded` at a poll.
/// A failed read (the database away) is logged and tried again at the next
/// poll; the config serving is untouched.
pub async fn watch(
    live: LiveConfig,
    pool: PgPool,
    mut loaded: i64,
    poll: Duration,
    env: Env,
    shutdown: CancellationToken,
) {
    let mut listener: Option<PgListener> = None;
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        if listener.is_none() {
            listener = listen(&pool).await;
        }
        let notified = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => false,
            r = recv(listener.as_mut()) => match r {
                Ok(()) => true,
                Err(e) => {
                    warn!(error = %e, "config LISTEN connection lost; the periodic check covers the gap");
                    listener = None;
                    false
                }
            },
        };
        if notified && let Some(l) = listener.as_mut() {
            // A burst is one reload: the snapshot holds every change committed.
            while l.next_buffered().is_some() {}
        }
        let now = match version(&pool).await {
            Ok(v) => v,
            Err(e) => {
                warn!(error = %e, "config version check failed; retrying at the next poll");
                continue;
            }
        };
        if now == loaded {
            continue;
        }
        match read(&pool).await {
            Ok(snapshot) => {
                loaded = snapshot.version;
                let candidate = to_hub(&snapshot.doc, &*env).map_err(ReloadError::from);
                let _ = live.reload(ORIGIN, candidate).await;
            }
            Err(e) => warn!(error = %e, "config read failed; retrying at the next poll"),
        }
    }
}

async fn listen(pool: &PgPool) -> Option<PgListener> {
    let mut l = match PgListener::connect_with(pool).await {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "config LISTEN connection failed; polling meanwhile");
            return None;
        }
    };
    match l.listen(CHANNEL).await {
        Ok(()) => {
            info!(channel = CHANNEL, "listening for hub config changes");
            Some(l)
        }
        Err(e) => {
            warn!(error = %e, "config LISTEN failed; polling meanwhile");
            None
        }
    }
}

async fn recv(listener: Option<&mut PgListener>) -> Result<(), sqlx::Error> {
    match listener {
        Some(l) => {
            // `try_recv` reports a lost connection (None) instead of
            // reconnecting silently, so the loop reconnects and re-checks.
            match l.try_recv().await? {
                Some(_) => Ok(()),
                None => Err(sqlx::Error::PoolClosed),
            }
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_round_trips_through_toml_and_names_a_bad_row() {
        let doc = serde_json::json!({
            "retry": {"schedule": ["1s"], "max_deliver": 3},
            "tenant": [{"id": "t1", "backend_url": "http://127.0.0.1:1/", "backend_key_env": null}],
            "account": [{"id": "a", "provider": "careem", "tenant": "t1", "secret_envs": ["S"],
                         "branches": {"s1": "b1"}}],
        });
        let hub = to_hub(&doc, &|_| Some("x".into())).unwrap();
        assert_eq!(
            hub.accounts[0].branches.get("s1").map(String::as_str),
            Some("b1")
        );
        assert_eq!(hub.retry.max_deliver(), 3);

        let mut bad = doc.clone();
        bad["account"][0]["secret"] = "leak".into();
        let err = to_hub(&bad, &|_| Some("x".into())).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(
                "hub config postgres hub_accounts row careem/a: unknown field `secret`"
            ),
            "{text}"
        );

        let mut bad = doc;
        bad["account"][0]["tenant"] = "t2".into();
        assert_eq!(
            to_hub(&bad, &|_| Some("x".into())).unwrap_err().to_string(),
            r#"hub config postgres: account a.tenant: unknown tenant "t2""#
        );
    }
}
