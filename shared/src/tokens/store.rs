//! [`TokenStore`]: the lease protocol over the bucket (see the module docs
//! of `tokens`), an in-memory copy per credential, one refresh per
//! credential at a time in this process.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use secrecy::zeroize::Zeroize;
use secrecy::{ExposeSecret, SecretString};
use tracing::{error, info, warn};

use super::cipher::TokenKey;
use super::credential::{Credential, Grant};
use super::endpoint::{self, CallError};
use super::metrics::{Outcome, TokenMetrics};
use super::state::{Lease, Next, Seed, State, Timing, Why, lease_leaves_room};
use super::{AccessToken, TokenError, now_ms};
use crate::config::ProviderApiSettings;
use crate::outbound::OutboundPolicy;

/// The fleet-shared token store. Cheap to clone (one shared inner).
#[derive(Clone)]
pub struct TokenStore {
    inner: Arc<Inner>,
}

struct Inner {
    kv: kv::Store,
    key: TokenKey,
    client: reqwest::Client,
    policy: OutboundPolicy,
    request_timeout: Duration,
    timing: Timing,
    metrics: TokenMetrics,
    /// This store's lease holder id (random: two stores in one process are
    /// two holders).
    holder: String,
    /// Per bucket key: the last token this store handed out, and until when
    /// it is handed out without looking at the bucket.
    cache: Mutex<HashMap<String, Cached>>,
    /// Per bucket key: held by the task refreshing it in this process.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Slow-path tasks running (see [`TokenStore::settle`]).
    in_flight: tokio::sync::watch::Sender<usize>,
}

/// Counts a slow-path task from its spawn until it ends (or panics).
struct InFlight(Arc<Inner>);

impl InFlight {
    fn new(inner: &Arc<Inner>) -> InFlight {
        inner.in_flight.send_modify(|n| *n += 1);
        InFlight(inner.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.send_modify(|n| *n -= 1);
    }
}

struct Cached {
    token: AccessToken,
    fresh_until: u64,
}

impl fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenStore")
            .field("bucket", &self.inner.kv.name)
            .field("holder", &self.inner.holder)
            .finish_non_exhaustive()
    }
}

/// A compare-and-set write that did not happen.
enum WriteError {
    /// The entry moved since it was read: someone else wrote first.
    Conflict,
    Failed(String),
}

impl TokenStore {
    /// A store over `kv` (the `PROVIDER_TOKENS` bucket), sealing with `key`.
    /// Token calls go through a client of the outbound policy with
    /// `settings.allowed_private_destinations`, each bounded by
    /// `settings.request_timeout`.
    pub fn new(
        kv: kv::Store,
        key: TokenKey,
        settings: &ProviderApiSettings,
        metrics: TokenMetrics,
    ) -> TokenStore {
        let policy = OutboundPolicy::new(settings.allowed_private_destinations.clone());
        let client = policy
            .client_builder()
            .user_agent(concat!("orderhub/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client's settings are valid");
        let ms = |d: Duration| d.as_millis() as u64;
        TokenStore {
            inner: Arc::new(Inner {
                kv,
                key,
                client,
                policy,
                request_timeout: settings.request_timeout,
                timing: Timing {
                    refresh_ahead: ms(settings.token_refresh_ahead),
                    min_mint_interval: ms(settings.token_min_mint_interval),
                    lease: ms(settings.token_lease),
                },
                metrics,
                holder: uuid::Uuid::new_v4().simple().to_string(),
                cache: Mutex::new(HashMap::new()),
                locks: Mutex::new(HashMap::new()),
                in_flight: tokio::sync::watch::Sender::new(0),
            }),
        }
    }

    /// A token for `cred`: from memory until it is due for renewal
    /// (`token_refresh_ahead` before it expires, at most half its lifetime
    /// early), else from the bucket, else from the token endpoint under the
    /// credential's lease.
    pub async fn token(&self, cred: &Credential) -> Result<AccessToken, TokenError> {
        if let Some(t) = self.fresh(&cred.key, now_ms()) {
            return Ok(t);
        }
        self.spawn(cred, None).await
    }

    /// After `rejected` was answered 401: the stored token if it is another
    /// one (someone refreshed meanwhile), else a new one (one refresh, under
    /// the lease and the mint floor). The caller retries its request once
    /// with the result and never calls this twice for one request.
    pub async fn token_rejected(
        &self,
        cred: &Credential,
        rejected: &AccessToken,
    ) -> Result<AccessToken, TokenError> {
        self.spawn(cred, Some(rejected.clone())).await
    }

    /// Drops `cred`'s entry, whatever it holds: the one write that does not
    /// read first. For an operator: an entry sealed with another
    /// `TOKEN_STORE_KEY`, or a Wolt chain to restart from the configured
    /// refresh token (which must not have been used before).
    pub async fn reseed(&self, cred: &Credential) -> Result<(), TokenError> {
        self.inner
            .kv
            .purge(&cred.key)
            .await
            .map_err(|e| store_error(cred, format!("purging entry {} failed: {e}", cred.key)))?;
        self.inner
            .cache
            .lock()
            .expect("cache lock")
            .remove(&cred.key);
        warn!(
            provider = cred.provider.as_str(),
            account = cred.account,
            key = cred.key,
            "provider token entry re-seeded: the next token comes from the configured credentials"
        );
        Ok(())
    }

    /// Waits up to `within` for the token tasks of this store still running
    /// (a caller may have given up on them, they go on to store what the
    /// endpoint answered); true if none is left. For a stage's shutdown,
    /// after it stopped asking for tokens and before the process exits: a
    /// Wolt refresh cut between the answer and its write loses the venue's
    /// refresh token.
    pub async fn settle(&self, within: Duration) -> bool {
        let mut running = self.inner.in_flight.subscribe();
        matches!(
            tokio::time::timeout(within, running.wait_for(|n| *n == 0)).await,
            Ok(Ok(_))
        )
    }

    /// The remembered token while it is fresh.
    fn fresh(&self, key: &str, now: u64) -> Option<AccessToken> {
        let cache = self.inner.cache.lock().expect("cache lock");
        cache
            .get(key)
            .filter(|c| now < c.fresh_until)
            .map(|c| c.token.clone())
    }

    /// Runs the slow path in its own task, so that a caller giving up (a
    /// timeout, a shutdown) cannot cut it between the token endpoint's
    /// answer and the write of a rotated refresh token.
    async fn spawn(
        &self,
        cred: &Credential,
        rejected: Option<AccessToken>,
    ) -> Result<AccessToken, TokenError> {
        let this = self.clone();
        let task_cred = cred.clone();
        let in_flight = InFlight::new(&self.inner);
        let task = tokio::spawn(async move {
            let _in_flight = in_flight;
            let cred = task_cred;
            let lock = this.lock_for(&cred.key);
            let _one_at_a_time = lock.lock().await;
            // A task that waited here may find the work done.
            if let Some(t) = this.fresh(&cred.key, now_ms())
                && rejected.as_ref() != Some(&t)
            {
                return Ok(t);
            }
            this.obtain(&cred, rejected.as_ref()).await
        });
        match task.await {
            Ok(result) => result,
            Err(e) => Err(store_error(cred, format!("the token task ended: {e}"))),
        }
    }

    fn lock_for(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.inner
            .locks
            .lock()
            .expect("locks lock")
            .entry(key.to_owned())
            .or_default()
            .clone()
    }

    /// The protocol: read, decide, and use, wait, or lease and refresh.
    async fn obtain(
        &self,
        cred: &Credential,
        rejected: Option<&AccessToken>,
    ) -> Result<AccessToken, TokenError> {
        let inner = &*self.inner;
        // However the others behave, a caller gets an answer within two
        // leases and a call.
        let deadline = now_ms() + 2 * inner.timing.lease + inner.request_timeout.as_millis() as u64;
        let mut poll = Duration::from_millis(20);
        let mut told_spent = false;
        loop {
            let now = now_ms();
            let (state, revision) = self
                .read(cred)
                .await
                .inspect_err(|e| self.failed(cred, e))?;
            if !told_spent
                && let (Some(s), Some(fp)) = (&state, cred.seed_fingerprint())
                && s.seed(fp) == Seed::Spent
            {
                told_spent = true;
                error!(
                    provider = cred.provider.as_str(),
                    account = cred.account,
                    key = cred.key,
                    "the configured refresh token is an old one, already spent: the stored chain is used; configure the venue's current refresh token (an old replica or a config rollback)"
                );
            }
            let next = State::next(
                state.as_ref(),
                now,
                inner.timing,
                cred.seed_fingerprint(),
                rejected.map(AccessToken::expose),
                &inner.holder,
            );
            match next {
                Next::Use { fresh_until } => {
                    let s = state.as_ref().expect("a token to use is a stored one");
                    let token = token_of(s);
                    if self.remember(cred, &token, fresh_until) {
                        self.inner.metrics.obtained(cred, Outcome::Reused);
                    }
                    return Ok(token);
                }
                Next::Wait { until } => {
                    if now >= deadline {
                        let e = TokenError::Unavailable {
                            provider: cred.provider,
                            account: cred.account.clone(),
                            reason: "another replica holds the refresh lease and has not written a token"
                                .to_owned(),
                            retry_after: None,
                        };
                        self.failed(cred, &e);
                        return Err(e);
                    }
                    let left = Duration::from_millis(until.saturating_sub(now).max(1));
                    tokio::time::sleep(poll.min(left)).await;
                    poll = (poll * 2).min(Duration::from_millis(250));
                }
                Next::MintFloor { retry_after } => {
                    let e = TokenError::MintFloor {
                        provider: cred.provider,
                        account: cred.account.clone(),
                        retry_after,
                    };
                    self.failed(cred, &e);
                    return Err(e);
                }
                Next::Paused { retry_after } => {
                    let last = state
                        .as_ref()
                        .and_then(|s| s.last_error.clone())
                        .unwrap_or_else(|| "the last token call failed".to_owned());
                    let e = TokenError::Unavailable {
                        provider: cred.provider,
                        account: cred.account.clone(),
                        reason: format!("{last} (not asked again yet)"),
                        retry_after: Some(retry_after),
                    };
                    self.failed(cred, &e);
                    return Err(e);
                }
                Next::Refresh { why, mark_rejected } => {
                    if now >= deadline {
                        let e = TokenError::Unavailable {
                            provider: cred.provider,
                            account: cred.account.clone(),
                            reason: "the entry kept changing under this replica's lease attempts"
                                .to_owned(),
                            retry_after: None,
                        };
                        self.failed(cred, &e);
                        return Err(e);
                    }
                    let before = state.unwrap_or_default();
                    // Counted from the write, not from before the read.
                    let leased = State {
                        lease: Some(Lease {
                            holder: inner.holder.clone(),
                            until: now_ms() + inner.timing.lease,
                        }),
                        rejected: before.rejected || mark_rejected,
                        ..before.clone()
                    };
                    match self.write(cred, &leased, revision).await {
                        Ok(lease_revision) => {
                            let until = leased.lease.as_ref().map_or(0, |l| l.until);
                            if !lease_leaves_room(
                                until,
                                now_ms(),
                                inner.request_timeout.as_millis() as u64,
                                inner.timing.lease,
                            ) {
                                return self
                                    .lease_too_short(
                                        cred,
                                        &before,
                                        leased,
                                        lease_revision,
                                        rejected,
                                    )
                                    .await;
                            }
                            return self
                                .refresh(cred, &before, leased, lease_revision, why, rejected)
                                .await;
                        }
                        // Someone moved first: look again.
                        Err(WriteError::Conflict) => continue,
                        Err(WriteError::Failed(reason)) => {
                            let e = store_error(cred, reason);
                            self.failed(cred, &e);
                            return Err(e);
                        }
                    }
                }
            }
        }
    }

    /// A lease whose write landed too late to hold the token call and its
    /// writes: released without calling, the stored token handed out if it
    /// still works.
    async fn lease_too_short(
        &self,
        cred: &Credential,
        before: &State,
        leased: State,
        lease_revision: u64,
        rejected: Option<&AccessToken>,
    ) -> Result<AccessToken, TokenError> {
        let released = State {
            lease: None,
            ..leased
        };
        if self
            .write(cred, &released, Some(lease_revision))
            .await
            .is_err()
        {
            warn!(
                provider = cred.provider.as_str(),
                account = cred.account,
                key = cred.key,
                "the token lease could not be released; it ends by itself"
            );
        }
        warn!(
            provider = cred.provider.as_str(),
            account = cred.account,
            key = cred.key,
            "the token lease was written too late to hold a token call; no call made"
        );
        if before.usable(now_ms(), rejected.map(AccessToken::expose)) {
            return Ok(token_of(before));
        }
        let e = TokenError::Unavailable {
            provider: cred.provider,
            account: cred.account.clone(),
            reason: "the token store answered too slowly to lease a token call in time".to_owned(),
            retry_after: None,
        };
        self.failed(cred, &e);
        Err(e)
    }

    /// Holding the lease (written at `lease_revision`): calls the token
    /// endpoint and writes the outcome, releasing the lease.
    async fn refresh(
        &self,
        cred: &Credential,
        before: &State,
        leased: State,
        lease_revision: u64,
        why: Why,
        rejected: Option<&AccessToken>,
    ) -> Result<AccessToken, TokenError> {
        let inner = &*self.inner;
        // A seed never seen starts a chain; else the chain's current token.
        // A configured seed is never presented twice: neither the current
        // chain's nor a spent one (an old replica, a config rollback).
        let new_seed = cred
            .seed_fingerprint()
            .filter(|fp| leased.seed(fp) == Seed::New);
        let presented: Option<SecretString> = match &cred.grant {
            Grant::ClientCredentials { .. }
            | Grant::Login { .. }
            | Grant::ClientCredentialsBasic { .. }
            | Grant::ClientCredentialsJson { .. } => None,
            Grant::RefreshToken { seed, .. } => match new_seed {
                Some(_) => Some(seed.clone()),
                None => leased.refresh_token.clone().map(SecretString::from),
            },
        };
        info!(
            provider = cred.provider.as_str(),
            account = cred.account,
            key = cred.key,
            why = why.as_str(),
            generation = leased.generation,
            "calling the provider's token endpoint"
        );
        let result = endpoint::call(
            &inner.client,
            &inner.policy,
            inner.request_timeout,
            cred,
            presented.as_ref().map(|s| s.expose_secret()),
        )
        .await;
        let now = now_ms();
        match result {
            Ok(issued) => {
                let outcome = if before.access_token.is_none() || why == Why::Reseeded {
                    Outcome::Minted
                } else {
                    Outcome::Refreshed
                };
                let new = leased.issued(
                    now,
                    issued.access_token,
                    issued.expires_in,
                    issued.refresh_token,
                    new_seed,
                );
                let token = token_of(&new);
                if let Err(reason) = self.write_settled(cred, &new, lease_revision).await {
                    if matches!(cred.grant, Grant::RefreshToken { .. }) {
                        error!(
                            provider = cred.provider.as_str(),
                            account = cred.account,
                            key = cred.key,
                            error = reason,
                            "the rotated refresh token could not be stored: the one presented is spent; the venue may need to be authorised again"
                        );
                        let e = store_error(
                            cred,
                            format!(
                                "the new token could not be stored ({reason}): the refresh token presented is spent and the rotated one is lost; the venue may need to be authorised again"
                            ),
                        );
                        self.failed(cred, &e);
                        return Err(e);
                    }
                    // A token without a refresh token works without the
                    // store; the fleet mints its own after the lease (for
                    // Uber Eats one more live token of the app's hundred).
                    warn!(
                        provider = cred.provider.as_str(),
                        account = cred.account,
                        key = cred.key,
                        error = reason,
                        "a minted token could not be stored; used by this replica only"
                    );
                    self.failed(cred, &store_error(cred, reason));
                }
                info!(
                    provider = cred.provider.as_str(),
                    account = cred.account,
                    key = cred.key,
                    generation = new.generation,
                    expires_in_s = (new.expires_at.saturating_sub(now)) / 1000,
                    "provider token {}",
                    match outcome {
                        Outcome::Minted => "minted",
                        _ => "refreshed",
                    }
                );
                self.remember(cred, &token, new.renew_at(inner.timing));
                inner.metrics.obtained(cred, outcome);
                Ok(token)
            }
            Err(call_error) => {
                let (e, retry_after) = self.call_failed(cred, call_error);
                let short = match &e {
                    TokenError::Rejected { reason, .. }
                    | TokenError::Unavailable { reason, .. }
                    | TokenError::Store { reason, .. } => reason.clone(),
                    TokenError::MintFloor { .. } => e.to_string(),
                };
                let released =
                    leased.failed(now, short, retry_after, inner.timing.min_mint_interval);
                if let Err(WriteError::Conflict | WriteError::Failed(_)) =
                    self.write(cred, &released, Some(lease_revision)).await
                {
                    warn!(
                        provider = cred.provider.as_str(),
                        account = cred.account,
                        key = cred.key,
                        "the token lease could not be released; it ends by itself"
                    );
                }
                self.failed(cred, &e);
                match &e {
                    TokenError::Rejected { .. } => error!(
                        provider = cred.provider.as_str(),
                        account = cred.account,
                        error = %e,
                        error_type = e.class().as_str(),
                        "provider token refused"
                    ),
                    _ => warn!(
                        provider = cred.provider.as_str(),
                        account = cred.account,
                        error = %e,
                        error_type = e.class().as_str(),
                        "provider token call failed"
                    ),
                }
                // A refresh ahead of expiry that failed leaves a token that
                // still works: better than an error.
                if before.usable(now, rejected.map(AccessToken::expose)) {
                    let token = token_of(before);
                    if let Some(until) = released.not_before {
                        self.remember(cred, &token, until.min(before.expires_at));
                    }
                    return Ok(token);
                }
                Err(e)
            }
        }
    }

    /// The error of a failed call, and its `Retry-After`.
    fn call_failed(&self, cred: &Credential, e: CallError) -> (TokenError, Option<Duration>) {
        match e {
            CallError::Rejected(reason) => {
                let hint = match cred.grant {
                    Grant::RefreshToken { .. } => {
                        "re-authorise the venue and configure its new refresh token"
                    }
                    Grant::ClientCredentials { .. } => {
                        "check the account's api.client_id, client_secret and scope"
                    }
                    Grant::Login { .. } => {
                        "check the account's api.client_id (the middleware user name) and client_secret (its password)"
                    }
                    Grant::ClientCredentialsBasic { .. } => {
                        "check the account's api.client_id and client_secret"
                    }
                    Grant::ClientCredentialsJson { .. } => {
                        "check the account's api.client_id, client_secret and scope"
                    }
                };
                (
                    TokenError::Rejected {
                        provider: cred.provider,
                        account: cred.account.clone(),
                        reason: format!("{reason}; {hint}"),
                    },
                    None,
                )
            }
            CallError::Unavailable {
                reason,
                retry_after,
            } => (
                TokenError::Unavailable {
                    provider: cred.provider,
                    account: cred.account.clone(),
                    reason,
                    retry_after,
                },
                retry_after,
            ),
        }
    }

    /// Keeps `token` in memory until `fresh_until`; true if it is not the
    /// token this store held for the key before.
    fn remember(&self, cred: &Credential, token: &AccessToken, fresh_until: u64) -> bool {
        let mut cache = self.inner.cache.lock().expect("cache lock");
        let new = cache.get(&cred.key).is_none_or(|c| c.token != *token);
        cache.insert(
            cred.key.clone(),
            Cached {
                token: token.clone(),
                fresh_until,
            },
        );
        new
    }

    fn failed(&self, cred: &Credential, e: &TokenError) {
        self.inner.metrics.failed(cred, e.reason());
    }

    /// The entry and its revision (the revision also of a deleted entry:
    /// a write after it is an update at that revision).
    async fn read(&self, cred: &Credential) -> Result<(Option<State>, Option<u64>), TokenError> {
        let entry =
            self.inner.kv.entry(&cred.key).await.map_err(|e| {
                store_error(cred, format!("reading entry {} failed: {e}", cred.key))
            })?;
        let Some(entry) = entry else {
            return Ok((None, None));
        };
        if entry.operation != Operation::Put {
            return Ok((None, Some(entry.revision)));
        }
        let mut plain = self
            .inner
            .key
            .open(&cred.key, &entry.value)
            .map_err(|e| store_error(cred, e.to_string()))?;
        let state = serde_json::from_slice::<State>(&plain).map_err(|_| {
            store_error(
                cred,
                format!("entry {} holds no token state this version reads", cred.key),
            )
        });
        plain.zeroize();
        Ok((Some(state?), Some(entry.revision)))
    }

    /// Seals and writes `state` by compare-and-set: created if `revision`
    /// is `None`, else only over that revision.
    async fn write(
        &self,
        cred: &Credential,
        state: &State,
        revision: Option<u64>,
    ) -> Result<u64, WriteError> {
        let mut plain = serde_json::to_vec(state).expect("a state serialises");
        let sealed = self.inner.key.seal(&cred.key, &plain);
        plain.zeroize();
        let kv = &self.inner.kv;
        match revision {
            None => kv
                .create(&cred.key, sealed.into())
                .await
                .map_err(|e| match e.kind() {
                    CreateErrorKind::AlreadyExists => WriteError::Conflict,
                    _ => WriteError::Failed(format!("creating entry {} failed: {e}", cred.key)),
                }),
            Some(r) => kv
                .update(&cred.key, sealed.into(), r)
                .await
                .map_err(|e| match e.kind() {
                    UpdateErrorKind::WrongLastRevision => WriteError::Conflict,
                    _ => WriteError::Failed(format!("updating entry {} failed: {e}", cred.key)),
                }),
        }
    }

    /// Writes a new token over the lease, trying again on a failed write
    /// (the lease keeps the revision ours); a conflict after a failed try
    /// may be that try having landed, so the entry is read to tell.
    async fn write_settled(
        &self,
        cred: &Credential,
        state: &State,
        lease_revision: u64,
    ) -> Result<(), String> {
        let mut last = String::new();
        for attempt in 0..4u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
            match self.write(cred, state, Some(lease_revision)).await {
                Ok(_) => return Ok(()),
                Err(WriteError::Conflict) => {
                    if attempt > 0
                        && let Ok((Some(stored), _)) = self.read(cred).await
                        && stored == *state
                    {
                        return Ok(());
                    }
                    return Err(format!(
                        "entry {} was written by another replica while this one held the lease",
                        cred.key
                    ));
                }
                Err(WriteError::Failed(reason)) => last = reason,
            }
        }
        Err(last)
    }
}

/// The handle of a state's current token.
fn token_of(s: &State) -> AccessToken {
    AccessToken {
        value: SecretString::from(s.access_token.clone().unwrap_or_default()),
        generation: s.generation,
        expires_at: s.expires_at,
    }
}

fn store_error(cred: &Credential, reason: String) -> TokenError {
    TokenError::Store {
        provider: cred.provider,
        account: cred.account.clone(),
        reason,
    }
}
