//! The token store's metrics, registered in the caller's (stage-prefixed)
//! registry:
//!
//! - `provider_token_refreshes_total{provider,account,outcome}`: each time
//!   this process needed a token beyond what it held in memory, and got
//!   one: `minted` (the endpoint issued the credential's first token, or
//!   the first of a new Wolt chain), `refreshed` (the endpoint replaced a
//!   stored token: expiring or answered 401), `reused` (a token another
//!   replica or an earlier process stored: no call made).
//! - `provider_token_failures_total{provider,account,reason}`: a token
//!   call or store access that failed, by [`super::TokenError::reason`]:
//!   `rejected`, `unavailable`, `mint_floor`, `store_failed`. Counted also
//!   when a still valid token was handed out instead.
//!
//! Series exist at 0 for every credential passed to
//! [`TokenMetrics::start_at_zero`], so an alert on `increase()` works from
//! the first scrape.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::credential::Credential;

/// How a token was obtained (`outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Minted,
    Refreshed,
    Reused,
}

impl Outcome {
    const ALL: [Outcome; 3] = [Outcome::Minted, Outcome::Refreshed, Outcome::Reused];

    const fn as_str(self) -> &'static str {
        match self {
            Outcome::Minted => "minted",
            Outcome::Refreshed => "refreshed",
            Outcome::Reused => "reused",
        }
    }
}

/// Every `reason` label value.
pub(crate) const REASONS: [&str; 4] = ["rejected", "unavailable", "mint_floor", "store_failed"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefreshLabels {
    provider: &'static str,
    account: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    provider: &'static str,
    account: String,
    reason: &'static str,
}

/// The token store's counters (cheap to clone: the families are shared).
#[derive(Clone, Debug, Default)]
pub struct TokenMetrics {
    refreshes: Family<RefreshLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
}

impl TokenMetrics {
    /// Registers under `registry` (already prefixed with the stage).
    pub fn register(registry: &mut Registry) -> TokenMetrics {
        let m = TokenMetrics::default();
        registry.register(
            "provider_token_refreshes",
            "Provider API tokens obtained beyond the in-memory cache, by outcome (minted, refreshed, reused)",
            m.refreshes.clone(),
        );
        registry.register(
            "provider_token_failures",
            "Provider API token calls or token store accesses that failed, by reason",
            m.failures.clone(),
        );
        m
    }

    /// Creates every series of these credentials at 0.
    pub fn start_at_zero<'a>(&self, credentials: impl IntoIterator<Item = &'a Credential>) {
        for c in credentials {
            for outcome in Outcome::ALL {
                let _ = self.refreshes.get_or_create(&RefreshLabels {
                    provider: c.provider.as_str(),
                    account: c.account.clone(),
                    outcome: outcome.as_str(),
                });
            }
            for reason in REASONS {
                let _ = self.failures.get_or_create(&FailureLabels {
                    provider: c.provider.as_str(),
                    account: c.account.clone(),
                    reason,
                });
            }
        }
    }

    pub(crate) fn obtained(&self, c: &Credential, outcome: Outcome) {
        self.refreshes
            .get_or_create(&RefreshLabels {
                provider: c.provider.as_str(),
                account: c.account.clone(),
                outcome: outcome.as_str(),
            })
            .inc();
    }

    pub(crate) fn failed(&self, c: &Credential, reason: &'static str) {
        self.failures
            .get_or_create(&FailureLabels {
                provider: c.provider.as_str(),
                account: c.account.clone(),
                reason,
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;
    use crate::Provider;
    use crate::tokens::credential::tests::api;

    #[test]
    fn every_series_of_a_credential_starts_at_zero_and_counts() {
        let mut registry = Registry::with_prefix("fetcher");
        let m = TokenMetrics::register(&mut registry);
        let c = Credential::new(
            Provider::Wolt,
            "acme-wolt",
            &api("http://127.0.0.1:1/oauth2/token", "venue", Some("rt")),
        )
        .unwrap();
        m.start_at_zero([&c]);
        m.obtained(&c, Outcome::Refreshed);
        m.failed(&c, "unavailable");
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for line in [
            r#"fetcher_provider_token_refreshes_total{provider="wolt",account="acme-wolt",outcome="minted"} 0"#,
            r#"fetcher_provider_token_refreshes_total{provider="wolt",account="acme-wolt",outcome="refreshed"} 1"#,
            r#"fetcher_provider_token_refreshes_total{provider="wolt",account="acme-wolt",outcome="reused"} 0"#,
            r#"fetcher_provider_token_failures_total{provider="wolt",account="acme-wolt",reason="rejected"} 0"#,
            r#"fetcher_provider_token_failures_total{provider="wolt",account="acme-wolt",reason="unavailable"} 1"#,
            r#"fetcher_provider_token_failures_total{provider="wolt",account="acme-wolt",reason="mint_floor"} 0"#,
            r#"fetcher_provider_token_failures_total{provider="wolt",account="acme-wolt",reason="store_failed"} 0"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }
}
