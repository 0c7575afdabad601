//! Every subject and stream name the hub uses (DESIGN §3.3). No call site
//! formats a subject string; they all come from here.

use crate::provider::Provider;

pub const WEBHOOKS_STREAM: &str = "WEBHOOKS";
pub const ORDERS_STREAM: &str = "ORDERS";
pub const DLQ_STREAM: &str = "DLQ";
/// Captures the consumers' max-deliveries and terminated advisories, which
/// are plain core-NATS messages and would otherwise be lost.
pub const ADVISORIES_STREAM: &str = "ADVISORIES";
/// The restaurants' answers on their way to the providers.
pub const STATUS_STREAM: &str = "STATUS";

/// `_INBOX_<name>`: the reply inbox prefix of the connection named `name`
/// (a stage, `dlq-inspector`). Every identity may subscribe to its own
/// inbox only (nats/identities.toml), so no stage can read the replies and
/// pull deliveries meant for another.
pub fn inbox_prefix(name: &str) -> String {
    format!("_INBOX_{name}")
}

/// `webhooks.raw.<provider>.<account>`
pub fn raw_webhook(provider: Provider, account: &str) -> String {
    debug_assert!(check_token(account).is_ok());
    format!("webhooks.raw.{provider}.{account}")
}

/// All raw webhooks.
pub const RAW_WEBHOOKS_ALL: &str = "webhooks.raw.>";

/// `webhooks.fetched.<provider>.<account>`: an order the fetcher fetched
/// from the provider's API after its notification, as the API answered it.
pub fn fetched_webhook(provider: Provider, account: &str) -> String {
    debug_assert!(check_token(account).is_ok());
    format!("webhooks.fetched.{provider}.{account}")
}

/// All fetched orders.
pub const FETCHED_WEBHOOKS_ALL: &str = "webhooks.fetched.>";

/// `webhooks.raw.<provider>.>`: one provider's raw webhooks.
pub fn raw_webhooks_of(provider: Provider) -> String {
    format!("webhooks.raw.{provider}.>")
}

/// `orders.<tenant>.<provider>`
pub fn order(tenant: &str, provider: Provider) -> String {
    debug_assert!(check_token(tenant).is_ok());
    format!("orders.{tenant}.{provider}")
}

/// `status.<provider>.<account>`: a decision about an order of that
/// account (the backend's, or the hub's auto-accept / auto-reject), for the
/// status worker.
pub fn status_command(provider: Provider, account: &str) -> String {
    debug_assert!(check_token(account).is_ok());
    format!("status.{provider}.{account}")
}

/// All status commands.
pub const STATUS_ALL: &str = "status.>";

/// All canonical orders.
pub const ORDERS_ALL: &str = "orders.>";

/// `orders.<tenant>.>`: one tenant's orders.
pub fn orders_of_tenant(tenant: &str) -> String {
    format!("orders.{tenant}.>")
}

/// `dlq.<stage>.<provider>`; `provider` is a token (an unknown provider is
/// dead-lettered under `unknown`, never lost).
pub fn dead_letter(stage: &str, provider: &str) -> String {
    format!("dlq.{stage}.{provider}")
}

/// All dead letters.
pub const DLQ_ALL: &str = "dlq.>";

/// The advisory subjects the `ADVISORIES` stream captures for `stream`.
pub fn advisory_capture(stream: &str) -> [String; 2] {
    [
        format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.>"),
        format!("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{stream}.>"),
    ]
}

/// The advisories about one consumer (what its mover reads).
pub fn advisories_of(stream: &str, consumer: &str) -> [String; 2] {
    [
        format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{consumer}"),
        format!("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{stream}.{consumer}"),
    ]
}

/// The value cannot be one subject token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidToken {
    #[error("must not be empty")]
    Empty,
    #[error("{0:?} contains {1:?}, which cannot appear in a NATS subject token")]
    Forbidden(String, char),
    #[error("{0:?} is longer than 64 characters")]
    TooLong(String),
}

/// Ids (tenant, account, stage) become subject tokens: no `.`, `*`, `>`,
/// whitespace or control characters, and short enough to stay readable.
pub fn check_token(value: &str) -> Result<(), InvalidToken> {
    if value.is_empty() {
        return Err(InvalidToken::Empty);
    }
    if value.chars().count() > 64 {
        return Err(InvalidToken::TooLong(value.to_owned()));
    }
    if let Some(c) = value
        .chars()
        .find(|c| matches!(c, '.' | '*' | '>') || c.is_whitespace() || c.is_control())
    {
        return Err(InvalidToken::Forbidden(value.to_owned(), c));
    }
    Ok(())
}

/// The `n`th dot-separated token of `subject` (0-based).
pub fn token(subject: &str, n: usize) -> Option<&str> {
    subject.split('.').nth(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_have_the_contract_shapes() {
        assert_eq!(
            raw_webhook(Provider::Careem, "acme-careem"),
            "webhooks.raw.careem.acme-careem"
        );
        assert_eq!(order("acme", Provider::Talabat), "orders.acme.talabat");
        assert_eq!(
            status_command(Provider::Wolt, "acme-wolt"),
            "status.wolt.acme-wolt"
        );
        assert_eq!(dead_letter("forwarder", "wolt"), "dlq.forwarder.wolt");
        assert_eq!(
            advisories_of("ORDERS", "forwarder")[0],
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.ORDERS.forwarder"
        );
        assert_eq!(token("orders.acme.talabat", 2), Some("talabat"));
    }

    #[test]
    fn tokens_refuse_wildcards_dots_and_whitespace() {
        assert_eq!(check_token("acme-eu_1"), Ok(()));
        assert_eq!(check_token("مطعم"), Ok(()));
        assert_eq!(check_token(""), Err(InvalidToken::Empty));
        for (bad, c) in [
            ("a.b", '.'),
            ("a*", '*'),
            ("a>", '>'),
            ("a b", ' '),
            ("a\tb", '\t'),
        ] {
            assert_eq!(
                check_token(bad),
                Err(InvalidToken::Forbidden(bad.into(), c))
            );
        }
        assert!(matches!(
            check_token(&"x".repeat(65)),
            Err(InvalidToken::TooLong(_))
        ));
    }
}
