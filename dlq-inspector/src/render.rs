//! What the operator reads: the list table, one entry in full (secrets
//! redacted), the stats.
//!
//! Everything in an entry came from outside (a provider's body and headers,
//! a backend's answer in the error text, ids): in text output every control
//! character of it is shown as an escape (`\x1b`), never sent to the
//! terminal ([`shared::redact::for_terminal`]). JSON output is escaped by
//! serde.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, SystemTime};

use async_nats::HeaderMap;
use async_nats::jetstream::message::StreamMessage;

use shared::redact::{for_terminal, for_terminal_lines};

use crate::entry::{Entry, rfc3339};
use crate::held::{self, Standing};

/// What `show` prints instead of a secret header's value.
pub const REDACTED: &str = "<redacted>";

/// Header names whose values are credentials (the providers' signature
/// schemes, the backends' keys, sessions). Compared without case.
const SECRET_NAMES: [&str; 8] = [
    "authorization",
    "proxy-authorization",
    "x-auth",
    "x-api-key",
    "api-key",
    "cookie",
    "set-cookie",
    "x-jet-connect-hash",
];

/// Parts of header names that mark a credential (`x-careem-signature`,
/// `x-deliveroo-hmac-sha256`, `webhook-signature`, ...).
const SECRET_PARTS: [&str; 5] = ["signature", "hmac", "secret", "token", "password"];

pub fn is_secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    SECRET_NAMES.contains(&n.as_str()) || SECRET_PARTS.iter().any(|p| n.contains(p))
}

/// The original's headers as shown: sorted, without the dead-letter fields
/// and NATS control headers (shown as fields), secrets redacted.
pub fn shown_headers(h: &HeaderMap) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, values) in h.iter() {
        let n: &str = name.as_ref();
        if n.starts_with("Orderhub-Dlq-") || n.to_ascii_lowercase().starts_with("nats-") {
            continue;
        }
        let secret = is_secret_header(n);
        out.entry(n.to_owned())
            .or_default()
            .extend(values.iter().map(|v| {
                if secret {
                    REDACTED.to_owned()
                } else {
                    v.as_str().to_owned()
                }
            }));
    }
    out
}

/// `42s`, `17m`, `3h12m`, `2d4h`.
pub fn short_age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

/// One line, at most `max` characters, control characters escaped.
pub fn short(text: &str, max: usize) -> String {
    let flat = for_terminal(text);
    if flat.chars().count() <= max {
        return flat.into_owned();
    }
    let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// The `list` table (and `replay --dry-run`'s).
pub fn table(out: &mut dyn Write, entries: &[Entry], now: SystemTime) -> std::io::Result<()> {
    let header = [
        "ID",
        "AGE",
        "STAGE",
        "PROVIDER",
        "TENANT",
        "DELIVERIES",
        "ERROR CLASS",
        "REASON",
    ];
    let rows: Vec<[String; 8]> = entries
        .iter()
        .map(|e| {
            [
                e.id.to_string(),
                short_age(e.age(now)),
                for_terminal(e.stage()).into_owned(),
                for_terminal(e.provider()).into_owned(),
                for_terminal(e.tenant().unwrap_or("-")).into_owned(),
                e.deliveries().map_or("-".to_owned(), |d| d.to_string()),
                e.error_class().to_owned(),
                short(&e.error(), 72),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut dyn Write, cells: [&str; 8]| -> std::io::Result<()> {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i == 7 {
                s.push_str(cell);
            } else {
                let pad = w - cell.chars().count();
                s.push_str(cell);
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        writeln!(out, "{}", s.trim_end())
    };
    line(out, header)?;
    for row in &rows {
        line(out, row.each_ref().map(String::as_str))?;
    }
    Ok(())
}

/// The body: pretty JSON if it is JSON, else text.
fn body_text(payload: &[u8]) -> (String, bool) {
    match serde_json::from_slice::<serde_json::Value>(payload) {
        Ok(v) => (serde_json::to_string_pretty(&v).unwrap_or_default(), true),
        Err(_) => (String::from_utf8_lossy(payload).into_owned(), false),
    }
}

/// `show` as text.
pub fn show(
    out: &mut dyn Write,
    e: &Entry,
    msg: &StreamMessage,
    standing: &Standing,
    now: SystemTime,
) -> std::io::Result<()> {
    writeln!(
        out,
        "DLQ entry {} on {}, dead-lettered {} ({} ago)",
        e.id,
        for_terminal(&e.dlq_subject),
        rfc3339(e.stored_at),
        short_age(e.age(now))
    )?;
    let field =
        |out: &mut dyn Write, k: &str, v: &str| writeln!(out, "  {k:<16}{}", for_terminal(v));
    match &e.letter {
        Ok(l) => {
            field(out, "stage", &l.stage)?;
            field(out, "provider", &l.provider)?;
            field(out, "tenant", l.tenant.as_deref().unwrap_or("-"))?;
            field(out, "webhook id", l.webhook_id.as_deref().unwrap_or("-"))?;
            field(
                out,
                "original",
                &if l.subject.is_empty() {
                    format!("{} #{} (gone before it was moved)", l.stream, l.seq)
                } else {
                    format!("{} #{} on {}", l.stream, l.seq, l.subject)
                },
            )?;
            field(
                out,
                "original msg id",
                e.original_msg_id.as_deref().unwrap_or("-"),
            )?;
            field(
                out,
                "received at",
                &e.received_at.map_or("-".to_owned(), rfc3339),
            )?;
            field(out, "deliveries", &l.deliveries.to_string())?;
            field(out, "first failure", &rfc3339(l.first_failure))?;
            field(out, "last failure", &rfc3339(l.last_failure))?;
            field(out, "error class", l.error_class.as_str())?;
            field(out, "moved by", l.moved_by.as_str())?;
        }
        Err(why) => field(out, "unreadable", why)?,
    }
    match e.replayable() {
        Ok(()) => field(out, "replayable", "yes")?,
        Err(why) => field(out, "replayable", &format!("no: {why}"))?,
    }
    field(out, "in its order", &standing.field(now))?;
    if let Some(behind) = standing.behind() {
        writeln!(out, "\nwaiting behind it:")?;
        if behind.is_empty() {
            writeln!(out, "  nothing waits behind it")?;
        }
        for w in behind {
            writeln!(
                out,
                "  {}  {} {}, first seen {}, key {}",
                for_terminal(&w.name),
                w.state.as_str(),
                held::since(w, now),
                rfc3339(SystemTime::UNIX_EPOCH + Duration::from_millis(w.first_seen_ms)),
                for_terminal(&w.key)
            )?;
        }
    }
    writeln!(out, "\nerror:\n  {}", for_terminal(&e.error()))?;
    writeln!(out, "\nheaders (secrets redacted):")?;
    for (name, values) in shown_headers(&msg.headers) {
        for v in values {
            writeln!(out, "  {}: {}", for_terminal(&name), for_terminal(&v))?;
        }
    }
    let (body, is_json) = body_text(&msg.payload);
    writeln!(
        out,
        "\nbody ({} bytes{}):",
        msg.payload.len(),
        if is_json { ", JSON" } else { "" }
    )?;
    writeln!(out, "{}", for_terminal_lines(&body))
}

/// `show --json`: one object.
pub fn show_json(
    e: &Entry,
    msg: &StreamMessage,
    standing: &Standing,
    now: SystemTime,
) -> serde_json::Value {
    let mut v = e.to_json(now);
    let body = match serde_json::from_slice::<serde_json::Value>(&msg.payload) {
        Ok(v) => v,
        Err(_) => serde_json::Value::String(String::from_utf8_lossy(&msg.payload).into_owned()),
    };
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "dlq_subject".into(),
            serde_json::Value::String(e.dlq_subject.clone()),
        );
        o.insert(
            "original_msg_id".into(),
            serde_json::json!(e.original_msg_id),
        );
        o.insert(
            "headers".into(),
            serde_json::json!(shown_headers(&msg.headers)),
        );
        o.insert("body_bytes".into(), serde_json::json!(msg.payload.len()));
        o.insert("body".into(), body);
        if let Err(why) = e.replayable() {
            o.insert("not_replayable_because".into(), serde_json::json!(why));
        }
        o.insert("sequence".into(), standing.to_json(now));
    }
    v
}

/// Counts for `stats`.
#[derive(Debug, Default)]
pub struct Stats {
    pub total: usize,
    pub by_stage: BTreeMap<String, usize>,
    pub by_provider: BTreeMap<String, usize>,
    pub by_tenant: BTreeMap<String, usize>,
    pub by_error_class: BTreeMap<String, usize>,
    pub oldest: Option<(u64, SystemTime)>,
}

impl Stats {
    pub fn of(entries: &[Entry]) -> Stats {
        let mut s = Stats::default();
        for e in entries {
            s.total += 1;
            *s.by_stage.entry(e.stage().to_owned()).or_default() += 1;
            *s.by_provider.entry(e.provider().to_owned()).or_default() += 1;
            *s.by_tenant
                .entry(e.tenant().unwrap_or("-").to_owned())
                .or_default() += 1;
            *s.by_error_class
                .entry(e.error_class().to_owned())
                .or_default() += 1;
            if s.oldest.is_none_or(|(_, t)| e.stored_at < t) {
                s.oldest = Some((e.id, e.stored_at));
            }
        }
        s
    }

    pub fn to_json(&self, now: SystemTime) -> serde_json::Value {
        serde_json::json!({
            "total": self.total,
            "by_stage": self.by_stage,
            "by_provider": self.by_provider,
            "by_tenant": self.by_tenant,
            "by_error_class": self.by_error_class,
            "oldest": self.oldest.map(|(id, t)| serde_json::json!({
                "id": id,
                "dead_lettered_at": rfc3339(t),
                "age_seconds": now.duration_since(t).unwrap_or_default().as_secs(),
            })),
        })
    }

    pub fn write(&self, out: &mut dyn Write, now: SystemTime) -> std::io::Result<()> {
        match self.oldest {
            Some((id, t)) => writeln!(
                out,
                "{} dead letters; oldest: {} ago (id {id}, {})",
                self.total,
                short_age(now.duration_since(t).unwrap_or_default()),
                rfc3339(t)
            )?,
            None => writeln!(out, "0 dead letters")?,
        }
        for (title, counts) in [
            ("by stage", &self.by_stage),
            ("by provider", &self.by_provider),
            ("by tenant", &self.by_tenant),
            ("by error class", &self.by_error_class),
        ] {
            if counts.is_empty() {
                continue;
            }
            writeln!(out, "\n{title}:")?;
            let mut sorted: Vec<(&String, &usize)> = counts.iter().collect();
            sorted.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            for (k, n) in sorted {
                writeln!(out, "  {n:>7}  {}", for_terminal(k))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_headers_are_secret_and_others_are_not() {
        for name in [
            "Authorization",
            "X-Auth",
            "x-careem-signature",
            "X-Deliveroo-Hmac-Sha256",
            "X-JET-Connect-Hash",
            "Cookie",
            "X-Api-Key",
            "webhook-signature",
            "Wolt-Signature",
            "X-Uber-Signature",
        ] {
            assert!(is_secret_header(name), "{name}");
        }
        for name in [
            "Content-Type",
            "Orderhub-Webhook-Id",
            "traceparent",
            "x-deliveroo-sequence-guid",
            "X-Test",
        ] {
            assert!(!is_secret_header(name), "{name}");
        }
    }

    #[test]
    fn shown_headers_redact_and_drop_control_headers() {
        let mut h = HeaderMap::new();
        h.insert("X-Careem-Signature", "abc123");
        h.insert("Content-Type", "application/json");
        h.insert("Nats-Msg-Id", "dlq:ORDERS:1");
        h.insert("Orderhub-Dlq-Error", "boom");
        let shown = shown_headers(&h);
        assert_eq!(
            shown,
            BTreeMap::from([
                (
                    "Content-Type".to_owned(),
                    vec!["application/json".to_owned()]
                ),
                ("X-Careem-Signature".to_owned(), vec![REDACTED.to_owned()]),
            ])
        );
    }

    #[test]
    fn ages_and_reasons_are_short() {
        assert_eq!(short_age(Duration::from_secs(42)), "42s");
        assert_eq!(short_age(Duration::from_secs(17 * 60 + 5)), "17m");
        assert_eq!(short_age(Duration::from_secs(3 * 3600 + 12 * 60)), "3h12m");
        assert_eq!(short_age(Duration::from_secs(2 * 86400 + 4 * 3600)), "2d4h");
        assert_eq!(short("a\nb", 10), "a\\x0ab");
        assert_eq!(short("abcdef", 4), "abc…");
        assert_eq!(short("\x1b[2Jx", 10), "\\x1b[2Jx");
    }
}
