//! The token store as a stage that calls provider APIs holds it: opened on
//! the first call that needs a token (a stage whose accounts take no token
//! never opens the bucket nor needs the key), and shared with the stage's
//! `run` through the cell, so that shutdown waits for refreshes under way
//! ([`TokenStore::settle`]).

use std::sync::{Arc, Mutex};

use async_nats::jetstream;
use tokio::sync::OnceCell;

use super::{TokenKey, TokenMetrics, TokenStore};
use crate::config::ProviderApiSettings;
use crate::failure::FailureClass;
use crate::streams::TOKENS_BUCKET;
use crate::worker::Failure;

/// A [`TokenStore`] opened on first use.
pub struct LazyTokenStore {
    js: jetstream::Context,
    key: Mutex<Option<TokenKey>>,
    cell: Arc<OnceCell<TokenStore>>,
    settings: ProviderApiSettings,
    metrics: TokenMetrics,
    /// The failure when a token is needed and the stage has no key (a
    /// stage that checked its accounts at start never meets it).
    no_key: (FailureClass, &'static str),
}

impl LazyTokenStore {
    /// `key` is `None` when the stage started without one (none of its
    /// accounts takes a token); `no_key` is the failure a token request
    /// then meets.
    pub fn new(
        js: jetstream::Context,
        key: Option<TokenKey>,
        cell: Arc<OnceCell<TokenStore>>,
        settings: &ProviderApiSettings,
        metrics: TokenMetrics,
        no_key: (FailureClass, &'static str),
    ) -> LazyTokenStore {
        LazyTokenStore {
            js,
            key: Mutex::new(key),
            cell,
            settings: settings.clone(),
            metrics,
            no_key,
        }
    }

    /// The store, opening the `PROVIDER_TOKENS` bucket the first time.
    pub async fn get(&self) -> Result<&TokenStore, Failure> {
        self.cell
            .get_or_try_init(|| async {
                let kv = self.js.get_key_value(TOKENS_BUCKET).await.map_err(|e| {
                    Failure::new(
                        FailureClass::TokenStoreFailed,
                        format!("cannot open bucket {TOKENS_BUCKET}: {e}"),
                    )
                })?;
                let key = self
                    .key
                    .lock()
                    .expect("not poisoned")
                    .take()
                    .ok_or_else(|| Failure::new(self.no_key.0, self.no_key.1))?;
                Ok(TokenStore::new(
                    kv,
                    key,
                    &self.settings,
                    self.metrics.clone(),
                ))
            })
            .await
    }
}
