//! `ledger order` and `ledger stats`: the API's answers for a person (a
//! table) or a script (`--json`, the body as the API sent it).
//! `ledger config import|export`: the hub config tables
//! ([`shared::config_db`]) from and to a TOML hub file.
//!
//! Text from the ledger (ids, error texts) came from providers and
//! backends: it is escaped before it reaches the terminal.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};
use shared::redact::for_terminal;

use crate::query::{Counts, Stats, Timeline};

/// Where the API is and how to get in.
pub struct Client {
    pub api: url::Url,
    pub token: SecretString,
    pub timeout: Duration,
}

impl Client {
    async fn get(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<String> {
        let mut url = self.api.clone();
        {
            let mut segments = url
                .path_segments_mut()
                .map_err(|_| anyhow::anyhow!("--api {} cannot take a path", self.api))?;
            segments.pop_if_empty();
            for s in path.split('/') {
                segments.push(s);
            }
        }
        for (k, v) in query {
            url.query_pairs_mut().append_pair(k, v);
        }
        let client = reqwest::Client::builder()
            .timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let resp = client
            .get(url)
            .bearer_auth(self.token.expose_secret())
            .send()
            .await
            .with_context(|| format!("cannot reach the ledger API at {}", self.api))?;
        let status = resp.status();
        let body = resp.text().await?;
        if !status.is_success() {
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| status.to_string());
            bail!(
                "the ledger API answered {}: {}",
                status.as_u16(),
                for_terminal(&message)
            );
        }
        Ok(body)
    }

    /// `ledger order`: the timeline as a table, or its JSON.
    pub async fn order(
        &self,
        provider: &str,
        id: &str,
        tenant: Option<&str>,
        json: bool,
    ) -> anyhow::Result<String> {
        let query: Vec<(&str, &str)> = tenant.map(|t| ("tenant", t)).into_iter().collect();
        let body = self
            .get(&format!("api/orders/{provider}/{id}"), &query)
            .await?;
        let timeline: Timeline =
            serde_json::from_str(&body).context("the API's answer is not a timeline")?;
        if json {
            return Ok(pretty(&body));
        }
        Ok(timeline_table(&timeline))
    }

    /// `ledger stats`: the counts as a table, or their JSON.
    pub async fn stats(&self, provider: &str, since: &str, json: bool) -> anyhow::Result<String> {
        let body = self
            .get(
                &format!("api/webhooks/stats/{provider}"),
                &[("since", since)],
            )
            .await?;
        let stats: Stats = serde_json::from_str(&body).context("the API's answer is not stats")?;
        if json {
            return Ok(pretty(&body));
        }
        Ok(stats_table(&stats))
    }
}

fn pretty(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).expect("checked above");
    // JSON escapes every control character: safe for a terminal as is,
    // except C1 and bidi controls, which json_line escapes too.
    let mut s = serde_json::to_string_pretty(&v).expect("a value serializes");
    if s.chars()
        .any(|c| ('\u{80}'..='\u{9f}').contains(&c) || c == '\u{202e}')
    {
        s = shared::redact::json_line(&v);
    }
    s.push('\n');
    s
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// One line per entry: time, kind, stage, and what the step says.
pub fn timeline_table(t: &Timeline) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "order {} from {}{}",
        for_terminal(&t.provider_order_id),
        t.provider,
        t.tenant
            .as_deref()
            .map(|x| format!(" (tenant {})", for_terminal(x)))
            .unwrap_or_default()
    );
    let _ = writeln!(out, "{:<32} {:<17} {:<13} DETAIL", "AT", "KIND", "STAGE");
    for e in &t.entries {
        let mut detail = Vec::new();
        if let Some(v) = &e.event {
            detail.push(format!("event={v}"));
        }
        if let Some(v) = &e.action {
            detail.push(format!("action={v}"));
        }
        if let Some(v) = &e.origin {
            detail.push(format!("by={v}"));
        }
        if let Some(v) = e.ok {
            detail.push(format!("ok={v}"));
        }
        if let Some(v) = e.http_status {
            detail.push(format!("http={v}"));
        }
        if let Some(v) = e.duration_ms {
            detail.push(format!("{v}ms"));
        }
        if let Some(v) = e.delivery {
            detail.push(format!("delivery={v}"));
        }
        if let Some(v) = &e.error_class {
            detail.push(format!("class={v}"));
        }
        if let Some(v) = &e.error {
            detail.push(format!("error={v:?}"));
        }
        if let Some(v) = &e.webhook_id {
            detail.push(format!("webhook={v}"));
        }
        if let Some(v) = &e.replay_of {
            detail.push(format!("replay_of={v}"));
        }
        let _ = writeln!(
            out,
            "{:<32} {:<17} {:<13} {}",
            rfc3339(e.at),
            for_terminal(&e.kind),
            for_terminal(e.stage.as_deref().unwrap_or("-")),
            for_terminal(&detail.join(" "))
        );
    }
    out
}

const COLUMNS: [&str; 12] = [
    "received",
    "fetched",
    "converted",
    "refused",
    "attempts_ok",
    "attempts_failed",
    "delivered",
    "dead_lettered",
    "status_calls_ok",
    "status_calls_failed",
    "replayed",
    "purged",
];

fn values(c: &Counts) -> [u64; 12] {
    [
        c.received,
        c.fetched,
        c.converted,
        c.refused,
        c.attempts_ok,
        c.attempts_failed,
        c.delivered,
        c.dead_lettered,
        c.status_calls_ok,
        c.status_calls_failed,
        c.replayed,
        c.purged,
    ]
}

/// One row per outcome; a column for the total, each account and each
/// tenant; the latency percentiles below.
pub fn stats_table(s: &Stats) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} since {} ({} to {})",
        s.provider,
        for_terminal(&s.since),
        rfc3339(s.from),
        rfc3339(s.to)
    );
    let mut heads = vec!["total".to_owned()];
    let mut cols = vec![values(&s.counts)];
    for (a, c) in &s.by_account {
        heads.push(format!("account:{}", for_terminal(a)));
        cols.push(values(c));
    }
    for (t, c) in &s.by_tenant {
        heads.push(format!("tenant:{}", for_terminal(t)));
        cols.push(values(c));
    }
    let widths: Vec<usize> = heads.iter().map(|h| h.chars().count().max(6)).collect();
    let _ = write!(out, "{:<20}", "OUTCOME");
    for (h, w) in heads.iter().zip(&widths) {
        let _ = write!(out, " {h:>w$}");
    }
    out.push('\n');
    for (i, name) in COLUMNS.iter().enumerate() {
        let _ = write!(out, "{name:<20}");
        for (c, w) in cols.iter().zip(&widths) {
            let _ = write!(out, " {:>w$}", c[i]);
        }
        out.push('\n');
    }
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}ms"));
    let _ = writeln!(
        out,
        "received -> delivered ({} orders): p50 {}  p90 {}  p99 {}",
        s.latency.count,
        ms(s.latency.p50_ms),
        ms(s.latency.p90_ms),
        ms(s.latency.p99_ms)
    );
    out
}

/// Why `ledger config` failed; never shows DATABASE_URL.
#[derive(Debug, thiserror::Error)]
pub enum ConfigCommandError {
    #[error("cannot read {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Db(#[from] shared::config_db::DbError),
}

impl ConfigCommandError {
    /// The file or the URL is wrong (exit 2), not the database.
    pub fn is_invalid(&self) -> bool {
        use shared::config_db::DbError;
        matches!(
            self,
            ConfigCommandError::File { .. }
                | ConfigCommandError::Db(DbError::Invalid(_) | DbError::Url)
        )
    }
}

async fn config_pool(url: &SecretString) -> Result<sqlx::PgPool, ConfigCommandError> {
    let options = shared::config_db::connect_options(url)?;
    Ok(shared::config_db::connect(options).await?)
}

/// Validates `path` fully, then replaces the tables' rows with it.
pub async fn config_import(
    url: &SecretString,
    path: &std::path::Path,
) -> Result<String, ConfigCommandError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigCommandError::File {
        path: path.display().to_string(),
        source,
    })?;
    let origin = path.display().to_string();
    // Validated before connecting: an invalid file never needs the database.
    shared::config::HubConfig::from_toml(&text, &origin, &|n| std::env::var(n).ok())
        .map_err(shared::config_db::DbError::from)?;
    let pool = config_pool(url).await?;
    let env = shared::config_db::process_env();
    let n = shared::config_db::import(&pool, &text, &origin, &*env).await;
    pool.close().await;
    let n = n?;
    Ok(format!(
        "imported {origin}: {} tenants, {} accounts, {} branch mappings, {} product mappings, {} settings sections\n",
        n.tenants, n.accounts, n.branches, n.products, n.settings
    ))
}

/// The tables as a TOML hub file.
pub async fn config_export(url: &SecretString) -> Result<String, ConfigCommandError> {
    let pool = config_pool(url).await?;
    let text = shared::config_db::export(&pool).await;
    pool.close().await;
    Ok(text?)
}
