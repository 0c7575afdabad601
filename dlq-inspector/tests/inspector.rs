//! dlq-inspector against a real nats-server, through the real binary:
//! listing and filtering, JSON output, `show` redaction, dry runs and
//! purges that change nothing, NATS down, bad usage.

mod common;

use std::time::Duration;

use async_nats::HeaderMap;
use common::*;
use orderhub_tests::*;
use shared::dlq::MovedBy;

/// Four entries, oldest first: ids 1..=4.
async fn four(js: &async_nats::jetstream::Context) -> anyhow::Result<[u64; 4]> {
    Ok([
        seed(
            js,
            letter(
                "forwarder",
                "careem",
                Some("acme"),
                "backend_5xx",
                "deliveries exhausted after 3 attempts: backend answered 503: upstream down",
            ),
            None,
            r#"{"schema":"orderhub.order.v1","provider_order_id":"P-1"}"#,
        )
        .await?,
        seed(
            js,
            letter(
                "forwarder",
                "talabat",
                Some("globex"),
                "backend_rejected",
                "backend answered 422: unknown branch",
            ),
            None,
            r#"{"schema":"orderhub.order.v1","provider_order_id":"P-2"}"#,
        )
        .await?,
        seed(
            js,
            letter(
                "transformer",
                "careem",
                Some("acme"),
                "unmapped_product",
                "invalid order: 1 problem: items[0].product_id: no product mapping for \"burger-x\"",
            ),
            None,
            r#"{"order_id":"C-3"}"#,
        )
        .await?,
        seed(
            js,
            letter(
                "transformer",
                "deliveroo",
                None,
                "invalid_payload",
                "invalid order: 1 problem: body: expected value at line 1 column 1",
            ),
            None,
            "not json",
        )
        .await?,
    ])
}

#[tokio::test]
async fn list_filters_each_way_newest_first() -> anyhow::Result<()> {
    let (nats, js) = server_with_streams().await?;
    let [a, b, c, d] = four(&js).await?;
    let url = nats.url();
    let ids = |args: &'static [&'static str]| {
        let url = url.clone();
        async move {
            let mut all = vec!["list", "--json"];
            all.extend_from_slice(args);
            let r = inspector(&url, &all).await?;
            anyhow::ensure!(r.code == 0, "{args:?}: {r:?}");
            anyhow::Ok(r.ids())
        }
    };
    assert_eq!(ids(&[]).await?, [d, c, b, a]);
    assert_eq!(ids(&["--provider", "careem"]).await?, [c, a]);
    assert_eq!(ids(&["--tenant", "acme"]).await?, [c, a]);
    assert_eq!(ids(&["--tenant", "globex"]).await?, [b]);
    assert_eq!(ids(&["--stage", "transformer"]).await?, [d, c]);
    assert_eq!(
        ids(&["--stage", "forwarder", "--tenant", "acme"]).await?,
        [a]
    );
    assert_eq!(ids(&["--error", "backend_rejected"]).await?, [b]);
    assert_eq!(ids(&["--error", "unmapped_product"]).await?, [c]);
    assert_eq!(ids(&["--text", "422"]).await?, [b]);
    assert_eq!(ids(&["--text", "UNKNOWN BRANCH"]).await?, [b]);
    assert_eq!(
        ids(&["--error", "backend_rejected", "--text", "503"]).await?,
        Vec::<u64>::new()
    );
    assert_eq!(ids(&["--limit", "2"]).await?, [d, c]);
    assert_eq!(ids(&["--since", "1h"]).await?, [d, c, b, a]);
    assert_eq!(ids(&["--provider", "wolt"]).await?, Vec::<u64>::new());

    // --since an RFC 3339 time: exactly the entries stored at or after it.
    let dlq = stream_messages(&js, "DLQ").await?;
    let third = dlq.iter().find(|m| m.sequence == c).expect("entry c");
    let cut = third
        .time
        .format(&time::format_description::well_known::Rfc3339)?;
    let r = inspector(&url, &["list", "--json", "--since", &cut]).await?;
    assert_eq!((r.code, r.ids()), (0, vec![d, c]), "{r:?}");
    let r = inspector(&url, &["list", "--json", "--since", "2999-01-01T00:00:00Z"]).await?;
    assert_eq!((r.code, r.ids()), (0, vec![]), "{r:?}");

    // The table: a header, one row per entry, newest first, a count.
    let r = inspector(&url, &["list", "--tenant", "acme"]).await?;
    assert_eq!(r.code, 0, "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", r.stdout);
    let cols: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        cols,
        [
            "ID",
            "AGE",
            "STAGE",
            "PROVIDER",
            "TENANT",
            "DELIVERIES",
            "ERROR",
            "CLASS",
            "REASON"
        ]
    );
    let row: Vec<&str> = lines[1].split_whitespace().take(7).collect();
    assert_eq!(row[0], c.to_string());
    assert_eq!(
        &row[2..],
        ["transformer", "careem", "acme", "3", "unmapped_product"]
    );
    assert!(
        lines[1].ends_with(
            " invalid order: 1 problem: items[0].product_id: no product mapping for \"…"
        ),
        "{}",
        lines[1]
    );
    let row: Vec<&str> = lines[2].split_whitespace().take(7).collect();
    assert_eq!(row[0], a.to_string());
    assert_eq!(
        &row[2..],
        ["forwarder", "careem", "acme", "3", "backend_5xx"]
    );
    assert_eq!(lines[3], "2 entries (newest first)");
    Ok(())
}

#[tokio::test]
async fn json_lines_parse_with_the_contract_fields() -> anyhow::Result<()> {
    let (nats, js) = server_with_streams().await?;
    let [a, ..] = four(&js).await?;
    let r = inspector(&nats.url(), &["list", "--json", "--stage", "forwarder"]).await?;
    assert_eq!(r.code, 0, "{r:?}");
    let lines = r.json_lines();
    assert_eq!(lines.len(), 2);
    let v = &lines[1];
    assert_eq!(v["id"], a);
    assert_eq!(v["stage"], "forwarder");
    assert_eq!(v["provider"], "careem");
    assert_eq!(v["tenant"], "acme");
    assert_eq!(v["webhook_id"], "wh-careem-backend_5xx");
    assert_eq!(v["deliveries"], 3);
    assert_eq!(v["error_class"], "backend_5xx");
    assert_eq!(
        v["error"],
        "deliveries exhausted after 3 attempts: backend answered 503: upstream down"
    );
    assert_eq!(v["stream"], "ORDERS");
    assert_eq!(v["subject"], "orders.acme.careem");
    assert_eq!(v["moved_by"], "worker");
    assert_eq!(v["replayable"], true);
    assert!(v["age_seconds"].as_u64().expect("age") < 60);

    let r = inspector(&nats.url(), &["list", "--json", "--provider", "deliveroo"]).await?;
    assert_eq!(r.json_lines()[0]["tenant"], serde_json::Value::Null);

    let r = inspector(&nats.url(), &["stats", "--json"]).await?;
    assert_eq!(r.code, 0, "{r:?}");
    let mut stats = r.json_lines().remove(0);
    assert_eq!(stats["oldest"]["id"], a);
    stats.as_object_mut().unwrap().remove("oldest");
    assert_eq!(
        stats,
        serde_json::json!({
            "total": 4,
            "by_stage": {"forwarder": 2, "transformer": 2},
            "by_provider": {"careem": 2, "deliveroo": 1, "talabat": 1},
            "by_tenant": {"acme": 2, "globex": 1, "-": 1},
            "by_error_class": {"backend_5xx": 1, "backend_rejected": 1, "unmapped_product": 1, "invalid_payload": 1},
        })
    );
    let r = inspector(&nats.url(), &["stats", "--tenant", "acme"]).await?;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.starts_with("2 dead letters; oldest: "),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("\nby stage:\n        1  forwarder\n        1  transformer\n"),
        "{}",
        r.stdout
    );
    Ok(())
}

const SECRETS: [(&str, &str); 8] = [
    ("X-Careem-Signature", "sig-0f3a9c"),
    ("Authorization", "Bearer eyJhbGciOi.secret-jwt"),
    ("X-Auth", "backend-key-77"),
    ("Cookie", "session=s3cr3t"),
    ("X-Api-Key", "api-key-42"),
    ("X-Jet-Connect-Hash", "jet-hash-99"),
    ("X-Deliveroo-Hmac-Sha256", "hmac-abc"),
    ("webhook-signature", "v1,c2lnbmF0dXJl"),
];

#[tokio::test]
async fn show_prints_everything_but_the_secrets() -> anyhow::Result<()> {
    let (nats, js) = server_with_streams().await?;
    let mut original = HeaderMap::new();
    for (k, v) in SECRETS {
        original.insert(k, v);
    }
    original.insert("X-Test", "kept-value");
    original.insert("Content-Type", "application/json");
    original.insert("Nats-Msg-Id", "careem:evt-7");
    let long_error = format!(
        "invalid order: 2 problems: items[0].product_id: no product mapping for \"burger-x\"; {}",
        "x".repeat(300)
    );
    let mut l = letter(
        "transformer",
        "careem",
        Some("acme"),
        "unmapped_product",
        &long_error,
    );
    l.webhook_id = Some("wh-show".into());
    let id = seed(
        &js,
        l,
        Some(&original),
        r#"{"order_id":"S-1","items":[{"id":"burger-x","quantity":1}]}"#,
    )
    .await?;

    let r = inspector(&nats.url(), &["show", &id.to_string()]).await?;
    assert_eq!(r.code, 0, "{r:?}");
    let text = &r.stdout;
    for (name, value) in SECRETS {
        assert!(!text.contains(value), "{name}'s value leaked:\n{text}");
        assert!(
            text.contains(&format!("  {name}: <redacted>\n")),
            "{name}:\n{text}"
        );
    }
    for want in [
        format!("DLQ entry {id} on dlq.transformer.careem, dead-lettered "),
        "  stage           transformer\n".into(),
        "  tenant          acme\n".into(),
        "  webhook id      wh-show\n".into(),
        "  original msg id careem:evt-7\n".into(),
        "  error class     unmapped_product\n".into(),
        "  replayable      yes\n".into(),
        format!("\nerror:\n  {long_error}\n"),
        "  X-Test: kept-value\n".into(),
        "\nbody (59 bytes, JSON):\n{\n  \"items\": [\n    {\n      \"id\": \"burger-x\",".into(),
    ] {
        assert!(text.contains(&want), "want {want:?} in:\n{text}");
    }
    assert!(!text.contains("Orderhub-Dlq-"), "{text}");

    let r = inspector(&nats.url(), &["show", &id.to_string(), "--json"]).await?;
    assert_eq!(r.code, 0, "{r:?}");
    for (_, value) in SECRETS {
        assert!(!r.stdout.contains(value), "{}", r.stdout);
    }
    let v = r.json_lines().remove(0);
    assert_eq!(v["headers"]["X-Auth"], serde_json::json!(["<redacted>"]));
    assert_eq!(v["headers"]["X-Test"], serde_json::json!(["kept-value"]));
    assert_eq!(v["body"]["order_id"], "S-1");
    assert_eq!(v["error"], long_error.as_str());

    let r = inspector(&nats.url(), &["show", "999"]).await?;
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(
        r.stderr,
        "dlq-inspector: no DLQ entry 999 (ids are DLQ stream sequences, as `list` shows them)\n"
    );
    Ok(())
}

/// What a provider sent reaches the operator's terminal as text, never as
/// escape sequences: not from the body, a header, an id or the error.
#[tokio::test]
async fn show_and_list_escape_control_characters() -> anyhow::Result<()> {
    const HOSTILE: &str = "\x1b[2J\x1b]0;pwned\x07";
    const SHOWN: &str = "\\x1b[2J\\x1b]0;pwned\\x07";
    let (nats, js) = server_with_streams().await?;
    let mut original = HeaderMap::new();
    original.insert("X-Note", format!("note{HOSTILE}").as_str());
    let mut l = letter(
        "forwarder",
        "careem",
        Some("acme"),
        "backend_rejected",
        "backend answered 400",
    );
    l.webhook_id = Some(format!("wh-{HOSTILE}"));
    l.tenant = Some(format!("acme{HOSTILE}"));
    l.error = format!("backend answered 400: {HOSTILE}");
    let id = seed(
        &js,
        l,
        Some(&original),
        &format!("not json {HOSTILE}\u{9b}31m\r\nsecond line"),
    )
    .await?;

    let r = inspector(&nats.url(), &["show", &id.to_string()]).await?;
    assert_eq!(r.code, 0, "{r:?}");
    let text = &r.stdout;
    assert!(
        !text.contains('\x1b') && !text.contains('\x07') && !text.contains('\u{9b}'),
        "control characters reached the terminal:\n{text:?}"
    );
    for want in [
        format!("  webhook id      wh-{SHOWN}\n"),
        format!("  tenant          acme{SHOWN}\n"),
        format!("  X-Note: note{SHOWN}\n"),
        format!("not json {SHOWN}\\u{{9b}}31m\\x0d\nsecond line\n"),
    ] {
        assert!(text.contains(&want), "want {want:?} in:\n{text}");
    }

    let r = inspector(&nats.url(), &["list"]).await?;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.stdout.contains('\x1b'), "{:?}", r.stdout);
    assert!(r.stdout.contains(&format!("acme{SHOWN}")), "{}", r.stdout);

    // JSON for scripts: the same values, but nothing a terminal acts on
    // (serde escapes C0 itself; C1 and bidi overrides are escaped too).
    let r = inspector(&nats.url(), &["show", &id.to_string(), "--json"]).await?;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        !r.stdout.chars().any(|c| c.is_control() && c != '\n'),
        "{:?}",
        r.stdout
    );
    assert!(r.stdout.contains("\\u009b31m"), "{}", r.stdout);
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim())?;
    assert_eq!(
        v["body"],
        format!("not json {HOSTILE}\u{9b}31m\r\nsecond line")
    );
    Ok(())
}

#[tokio::test]
async fn an_entry_whose_original_vanished_is_shown_but_not_replayed() -> anyhow::Result<()> {
    let (nats, js) = server_with_streams().await?;
    let mut ghost = letter(
        "forwarder",
        "careem",
        Some("acme"),
        "deliveries_exhausted",
        "no worker finished the last of 3 deliveries; the original is no longer in ORDERS",
    );
    ghost.subject = String::new();
    ghost.moved_by = MovedBy::Mover;
    let id = seed(&js, ghost, None, "").await?;
    let ok = seed(
        &js,
        letter("forwarder", "careem", Some("acme"), "backend_5xx", "503"),
        None,
        r#"{"n":1}"#,
    )
    .await?;

    let r = inspector(&nats.url(), &["show", &id.to_string()]).await?;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("  replayable      no: the original had already left ORDERS when it was dead-lettered (entry written by the mover without subject or body): there is nothing to republish"),
        "{}",
        r.stdout
    );

    // Named together with a replayable one: nothing is replayed.
    let r = inspector(&nats.url(), &["replay", &ok.to_string(), &id.to_string()]).await?;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.starts_with(&format!(
            "dlq-inspector: DLQ entry {id} cannot be replayed: the original had already left ORDERS"
        )),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.ends_with("; nothing was replayed\n"),
        "{}",
        r.stderr
    );
    assert_eq!(dlq_ids(&js).await?, [id, ok]);
    assert!(stream_messages(&js, "ORDERS").await?.is_empty());

    // Selected by a filter: the others are replayed, it is skipped and the
    // run fails so that a script notices.
    let r = inspector(&nats.url(), &["replay", "--tenant", "acme", "--json"]).await?;
    assert_eq!(r.code, 1, "{r:?}");
    let lines = r.json_lines();
    assert_eq!(lines.len(), 2, "{}", r.stdout);
    assert_eq!(lines[0]["id"], id);
    assert_eq!(lines[0]["action"], "skipped");
    assert_eq!(lines[1]["id"], ok);
    assert_eq!(lines[1]["action"], "replayed");
    assert_eq!(lines[1]["subject"], "orders.acme.careem");
    assert_eq!(
        r.stderr,
        "dlq-inspector: 1 of 2 entries were not replayed\n"
    );
    assert_eq!(dlq_ids(&js).await?, [id]);
    assert_eq!(stream_messages(&js, "ORDERS").await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_dry_run_changes_nothing() -> anyhow::Result<()> {
    let (nats, js) = server_with_streams().await?;
    let ids = four(&js).await?;
    let before: Vec<_> = stream_messages(&js, "DLQ").await?;

    let r = inspector(&nats.url(), &["replay", "--all", "--dry-run"]).await?;
    assert_eq!(r.code, 0, "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{}", r.stdout);
    // Oldest first: the order a replay would go in.
    for (line, id) in lines[1..5].iter().zip(ids) {
        assert!(line.starts_with(&format!("{id} ")), "{line}");
    }
    assert_eq!(
        lines[5],
        "dry run: 4 of 4 entries would be replayed to their original subjects, oldest first; nothing changed"
    );
    let r = inspector(
        &nats.url(),
        &["replay", "--stage", "transformer", "--dry-run", "--json"],
    )
    .await?;
    assert_eq!((r.code, r.ids()), (0, vec![ids[2], ids[3]]), "{r:?}");
    let r = inspector(&nats.url(), &["replay", &ids[0].to_string(), "--dry-run"]).await?;
    assert_eq!(r.code, 0, "{r:?}");

    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = stream_messages(&js, "DLQ").await?;
    assert_eq!(
        after
            .iter()
            .map(|m| (m.sequence, m.payload.clone()))
            .collect::<Vec<_>>(),
        before
            .iter()
            .map(|m| (m.sequence, m.payload.clone()))
            .collect::<Vec<_>>()
    );
    assert!(stream_messages(&js, "ORDERS").await?.is_empty());
    assert!(stream_messages(&js, "WEBHOOKS").await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn purge_deletes_only_when_confirmed() -> anyhow::Result<()> {
    let (nats, js) = server_with_streams().await?;
    let [a, b, c, d] = four(&js).await?;
    let url = nats.url();

    // stdin is not a terminal: no one to ask, nothing deleted.
    for args in [
        vec!["purge".to_owned(), a.to_string()],
        vec!["purge".to_owned(), "--all".to_owned()],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = inspector(&url, &args).await?;
        assert_eq!(r.code, 1, "{r:?}");
        assert!(r.stderr.contains("pass --yes"), "{}", r.stderr);
        assert!(r.stderr.contains("nothing deleted"), "{}", r.stderr);
    }
    assert_eq!(dlq_ids(&js).await?, [a, b, c, d]);

    // On a terminal the operator is asked; "no" deletes nothing.
    let asked = std::cell::RefCell::new(Vec::<String>::new());
    let in_process = |answer: bool, args: &'static [&'static str]| {
        let url = url.clone();
        let asked = &asked;
        async move {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let mut confirm = |q: &str| {
                asked.borrow_mut().push(q.to_owned());
                Ok::<bool, std::io::Error>(answer)
            };
            let mut argv = vec!["dlq-inspector", "--nats-url", url.as_str()];
            argv.extend_from_slice(args);
            let code = tokio::time::timeout(
                STEP,
                dlq_inspector::run(
                    argv,
                    dlq_inspector::Console {
                        out: &mut out,
                        err: &mut err,
                        confirm: Some(&mut confirm),
                        progress: false,
                    },
                ),
            )
            .await?;
            anyhow::Ok((code, String::from_utf8(out)?, String::from_utf8(err)?))
        }
    };
    let (code, _, err) = in_process(false, &["purge", "--tenant", "acme"]).await?;
    assert_eq!(
        (code, err.as_str()),
        (1, "dlq-inspector: purge not confirmed: nothing deleted\n")
    );
    assert_eq!(
        asked.borrow().as_slice(),
        [format!("delete 2 dead letters for good (ids {a}, {c})?")]
    );
    assert_eq!(dlq_ids(&js).await?, [a, b, c, d]);

    let (code, out, _) = in_process(true, &["purge", "--tenant", "acme"]).await?;
    assert_eq!((code, out.as_str()), (0, "purged 2 of 2\n"));
    assert_eq!(dlq_ids(&js).await?, [b, d]);

    // --yes needs no terminal.
    let r = inspector(&url, &["purge", &d.to_string(), "--yes", "--json"]).await?;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.json_lines(),
        [serde_json::json!({"id": d, "action": "purged"})]
    );
    assert_eq!(dlq_ids(&js).await?, [b]);
    let r = inspector(&url, &["purge", &d.to_string(), "--yes"]).await?;
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(dlq_ids(&js).await?, [b]);
    Ok(())
}

#[tokio::test]
async fn replay_with_nats_down_fails_and_keeps_the_dlq() -> anyhow::Result<()> {
    let (mut nats, js) = server_with_streams().await?;
    let [a, b, c, d] = four(&js).await?;
    let before = stream_messages(&js, "DLQ").await?;
    drop(js);
    nats.kill();

    let started = std::time::Instant::now();
    let r = inspector(&nats.url(), &["replay", &a.to_string()]).await?;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.starts_with(&format!(
            "dlq-inspector: cannot connect to NATS at {}: ",
            nats.url()
        )),
        "{}",
        r.stderr
    );
    let r2 = inspector(&nats.url(), &["replay", "--all"]).await?;
    assert_eq!(r2.code, 1, "{r2:?}");
    let r3 = inspector(&nats.url(), &["list"]).await?;
    assert_eq!((r3.code, r3.stdout.as_str()), (1, ""), "{r3:?}");
    eprintln!(
        "three runs against a dead server took {:?}",
        started.elapsed()
    );

    nats.restart()?;
    let js = async_nats::jetstream::new(nats.client().await?);
    let after = stream_messages(&js, "DLQ").await?;
    assert_eq!(
        after
            .iter()
            .map(|m| (m.sequence, m.payload.clone()))
            .collect::<Vec<_>>(),
        before
            .iter()
            .map(|m| (m.sequence, m.payload.clone()))
            .collect::<Vec<_>>()
    );
    assert_eq!(dlq_ids(&js).await?, [a, b, c, d]);
    assert!(stream_messages(&js, "ORDERS").await?.is_empty());
    assert!(stream_messages(&js, "WEBHOOKS").await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_server_without_the_dlq_stream_is_named() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let r = inspector(&nats.url(), &["list"]).await?;
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(
        r.stderr,
        format!(
            "dlq-inspector: there is no DLQ stream on {}: wrong server or account, or no stage has run there yet (they create it at start)\n",
            nats.url()
        )
    );
    Ok(())
}

#[tokio::test]
async fn bad_usage_exits_2_without_touching_nats() -> anyhow::Result<()> {
    // Nothing listens here: a command that tried to connect would exit 1.
    let url = format!("nats://127.0.0.1:{}", free_port());
    for args in [
        &[][..],
        &["frobnicate"],
        &["list", "--bogus"],
        &["show"],
        &["show", "abc"],
        &["replay"],
        &["purge"],
        &["purge", "--yes"],
        &["release"],
        &["release", "--yes"],
        &["release", "1", "--stage", "forwarder"],
        &["list", "--since", "yesterday-ish"],
        &["list", "--provider", "a.b"],
        &["list", "--tenant", ">"],
        &["replay", "1", "--tenant", "acme"],
        &["replay", "--all", "--rate=-1"],
        &["list", "--tls-cert", "/nonexistent.pem"],
        &["completions", "tcsh"],
    ] {
        let r = inspector(&url, args).await?;
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(!r.stderr.is_empty(), "{args:?}");
        assert_eq!(r.stdout, "", "{args:?}");
    }
    let r = inspector(&url, &["replay"]).await?;
    assert_eq!(
        r.stderr,
        "dlq-inspector: replay needs entry ids, a filter (--provider --tenant --stage --since --error --text) or --all\n"
    );
    let r = inspector(&url, &["release"]).await?;
    assert_eq!(
        r.stderr,
        "dlq-inspector: release needs entry ids, a filter (--provider --tenant --stage --since --error --text) or --all\n"
    );

    let r = inspector(&url, &["--help"]).await?;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("Examples:\n  dlq-inspector list "),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("--nats-url <NATS_URL>"), "{}", r.stdout);
    assert!(r.stdout.contains("[env: NATS_URL="), "{}", r.stdout);
    for verb in [
        "list",
        "show",
        "replay",
        "release",
        "purge",
        "stats",
        "completions",
    ] {
        assert!(
            r.stdout.contains(&format!("\n  {verb} ")),
            "{verb}: {}",
            r.stdout
        );
    }
    let r = inspector(&url, &["replay", "--help"]).await?;
    assert_eq!(r.code, 0, "{r:?}");
    for flag in [
        "--dry-run",
        "--rate <RATE>",
        "--since <SINCE>",
        "--limit <LIMIT>",
        "--all",
    ] {
        assert!(r.stdout.contains(flag), "{flag}: {}", r.stdout);
    }
    let r = inspector(&url, &["completions", "bash"]).await?;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("complete -F _dlq__inspector"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("--dry-run"), "{}", r.stdout);

    // Not bad usage but a failure: NATS is not there.
    let r = inspector(&url, &["list"]).await?;
    assert_eq!(r.code, 1, "{r:?}");
    Ok(())
}

#[tokio::test]
async fn a_replay_id_already_taken_deletes_only_a_true_earlier_replay() -> anyhow::Result<()> {
    let (nats, js) = server_with_streams().await?;
    let body = r#"{"provider_order_id":"P-7"}"#;
    let l = letter("forwarder", "careem", Some("acme"), "backend_5xx", "503");
    let webhook_id = l.webhook_id.clone().expect("webhook id");
    let a = seed(&js, l.clone(), None, body).await?;
    let b = seed(&js, l, None, body).await?;
    let publish = |id: u64, body: &'static str| {
        let js = js.clone();
        let webhook_id = webhook_id.clone();
        async move {
            let mut h = HeaderMap::new();
            h.insert("Nats-Msg-Id", format!("replay:{id}").as_str());
            h.insert(shared::headers::WEBHOOK_ID, webhook_id.as_str());
            tokio::time::timeout(
                STEP,
                js.publish_with_headers("orders.acme.careem", h, body.into()),
            )
            .await??
            .await?;
            anyhow::Ok(())
        }
    };
    // An earlier replay of `a` was stored but its entry not deleted.
    publish(a, body).await?;
    // Something else took `b`'s replay id (a recreated DLQ stream).
    publish(b, r#"{"provider_order_id":"OTHER"}"#).await?;

    let r = inspector(&nats.url(), &["replay", &a.to_string()]).await?;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stdout,
        format!(
            "replayed {a} -> orders.acme.careem (ORDERS #1, already there from an earlier replay)\n"
        )
    );
    let r = inspector(&nats.url(), &["replay", &b.to_string()]).await?;
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(
        r.stderr,
        format!(
            "DLQ entry {b} kept: ORDERS #2 already holds another message with id replay:{b} \
             (was the DLQ stream recreated?)\n\
             replayed 0 of 1\n\
             dlq-inspector: 1 of 1 entries were not replayed\n"
        )
    );
    assert_eq!(dlq_ids(&js).await?, [b]);
    assert_eq!(stream_messages(&js, "ORDERS").await?.len(), 2);
    Ok(())
}

/// The stored outcomes, without their time.
async fn outcome_steps(
    js: &async_nats::jetstream::Context,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    for m in stream_messages(js, "OUTCOMES").await? {
        let _: shared::outcome::Outcome = serde_json::from_slice(&m.payload)?;
        let mut v: serde_json::Value = serde_json::from_slice(&m.payload)?;
        v.as_object_mut().unwrap().remove("at");
        out.push(v);
    }
    Ok(out)
}

/// A replay records `replayed` and a purge `purged` (source: the DLQ
/// entry); without OUTCOMES a replay fails and keeps its entry.
#[tokio::test]
async fn replays_and_purges_are_recorded_as_outcomes() -> anyhow::Result<()> {
    let (nats, js) = server_with_streams().await?;
    let [a, b, ..] = four(&js).await?;
    let url = nats.url();
    let step = |kind: &str, id: u64| {
        serde_json::json!({
            "schema": "orderhub.outcome.v1",
            "stage": "dlq-inspector",
            "kind": kind,
            "provider": "careem",
            "tenant": "acme",
            "webhook_id": "wh-careem-backend_5xx",
            "ok": true,
            "error_class": "backend_5xx",
            "source": {"stream": "DLQ", "seq": id, "delivery": 1},
        })
    };
    let r = inspector(&url, &["replay", &a.to_string()]).await?;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(outcome_steps(&js).await?, [step("replayed", a)]);

    js.delete_stream("OUTCOMES").await?;
    let r = inspector(&url, &["replay", &b.to_string()]).await?;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains(&format!("record the replay of entry {b}"))
            && r.stderr.contains("the entry is kept"),
        "{}",
        r.stderr
    );
    assert!(dlq_ids(&js).await?.contains(&b));
    let r = inspector(&url, &["purge", &b.to_string(), "--yes"]).await?;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        dlq_ids(&js).await?.contains(&b),
        "purged without its outcome"
    );

    let defs = shared::streams::Definitions::load(&Default::default());
    shared::streams::ensure_stream(&js, defs.stream("OUTCOMES"), true).await?;
    let r = inspector(&url, &["purge", &b.to_string(), "--yes"]).await?;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!dlq_ids(&js).await?.contains(&b));
    // `four`'s second entry; the first's `replayed` went with the stream.
    let purged = serde_json::json!({
        "schema": "orderhub.outcome.v1",
        "stage": "dlq-inspector",
        "kind": "purged",
        "provider": "talabat",
        "tenant": "globex",
        "webhook_id": "wh-talabat-backend_rejected",
        "ok": true,
        "error_class": "backend_rejected",
        "source": {"stream": "DLQ", "seq": b, "delivery": 1},
    });
    assert_eq!(outcome_steps(&js).await?, [purged]);
    Ok(())
}
