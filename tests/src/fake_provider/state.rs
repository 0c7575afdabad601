//! What the fake provider knows and decides, without HTTP: the clients and
//! venues it accepts, every token it issued and whether it is still live,
//! the stored orders, the recorded requests and the fault queue. Every
//! decision is made under one lock, so concurrent requests are served in
//! some order, never interleaved (two refreshes with one Wolt refresh token:
//! one wins, the other is a reuse).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use super::{Api, Endpoint, FakeRequest, FaultReply, Matcher, Platform};

/// Uber's documented token lifetime (30 days) and Wolt's (1 hour).
pub(super) const UBER_EXPIRES_IN: Duration = Duration::from_secs(2_592_000);
pub(super) const WOLT_EXPIRES_IN: Duration = Duration::from_secs(3600);
/// Uber: 100 token requests an hour, and minting when 100 are live evicts
/// the oldest.
pub(super) const UBER_HOURLY_CAP: usize = 100;
pub(super) const UBER_LIVE_LIMIT: usize = 100;
const HOUR: Duration = Duration::from_secs(3600);

/// An answer to a provider request: always JSON (or empty).
#[derive(Debug, Clone)]
pub(super) struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Bytes,
}

impl Answer {
    fn json(status: u16, body: Value) -> Answer {
        Answer {
            status,
            retry_after: None,
            body: Bytes::from(body.to_string()),
        }
    }

    /// An OAuth2 error (`{"error": ..., "error_description": ...}`).
    fn oauth(status: u16, error: &str, description: impl Into<String>) -> Answer {
        Answer::json(
            status,
            json!({"error": error, "error_description": description.into()}),
        )
    }
}

struct AccessToken {
    platform: Platform,
    expires_at: Instant,
    revoked: bool,
}

impl AccessToken {
    fn live(&self, now: Instant) -> bool {
        !self.revoked && now < self.expires_at
    }
}

struct RefreshToken {
    client_id: String,
    used: bool,
    revoked: bool,
    uses: usize,
    /// The access and refresh token issued when it was used.
    issued: Option<(String, String)>,
}

struct Fault {
    matcher: Matcher,
    reply: FaultReply,
    /// Matching requests it still answers.
    left: usize,
}

pub(super) struct State {
    pub uber_expires_in: Duration,
    pub wolt_expires_in: Duration,
    pub uber_hourly_cap: usize,
    pub uber_live_limit: usize,
    uber_clients: HashMap<String, String>,
    wolt_venues: HashMap<String, String>,
    /// Wolt authorization codes: client id, and whether it was exchanged.
    wolt_codes: HashMap<String, (String, bool)>,
    access: HashMap<String, AccessToken>,
    /// Per Uber client, its tokens in minting order (live ones at least).
    uber_minted: HashMap<String, VecDeque<String>>,
    /// Per Uber client, when it minted within the last hour.
    uber_mint_times: HashMap<String, VecDeque<Instant>>,
    refresh: HashMap<String, RefreshToken>,
    mints: BTreeMap<(Platform, String), usize>,
    reuses: usize,
    revoked: usize,
    orders: HashMap<(Platform, Api, String), Bytes>,
    requests: Vec<FakeRequest>,
    faults: Vec<Fault>,
}

impl Default for State {
    fn default() -> State {
        State {
            uber_expires_in: UBER_EXPIRES_IN,
            wolt_expires_in: WOLT_EXPIRES_IN,
            uber_hourly_cap: UBER_HOURLY_CAP,
            uber_live_limit: UBER_LIVE_LIMIT,
            uber_clients: HashMap::new(),
            wolt_venues: HashMap::new(),
            wolt_codes: HashMap::new(),
            access: HashMap::new(),
            uber_minted: HashMap::new(),
            uber_mint_times: HashMap::new(),
            refresh: HashMap::new(),
            mints: BTreeMap::new(),
            reuses: 0,
            revoked: 0,
            orders: HashMap::new(),
            requests: Vec::new(),
            faults: Vec::new(),
        }
    }
}

fn new_token(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

impl State {
    pub fn add_uber_client(&mut self, id: &str, secret: &str) {
        self.uber_clients.insert(id.to_owned(), secret.to_owned());
    }

    pub fn add_wolt_venue(&mut self, client_id: &str, secret: &str, first_refresh_token: &str) {
        self.wolt_venues
            .insert(client_id.to_owned(), secret.to_owned());
        self.refresh.insert(
            first_refresh_token.to_owned(),
            RefreshToken {
                client_id: client_id.to_owned(),
                used: false,
                revoked: false,
                uses: 0,
                issued: None,
            },
        );
    }

    pub fn add_wolt_code(&mut self, client_id: &str, code: &str) {
        self.wolt_codes
            .insert(code.to_owned(), (client_id.to_owned(), false));
    }

    pub fn put_order(&mut self, platform: Platform, api: Api, id: &str, body: Bytes) {
        self.orders.insert((platform, api, id.to_owned()), body);
    }

    pub fn order(&self, platform: Platform, api: Api, id: &str) -> Option<Bytes> {
        self.orders.get(&(platform, api, id.to_owned())).cloned()
    }

    pub fn record(&mut self, request: FakeRequest) {
        self.requests.push(request);
    }

    pub fn requests(&self) -> &[FakeRequest] {
        &self.requests
    }

    pub fn add_fault(&mut self, matcher: Matcher, reply: FaultReply) {
        let left = reply.times;
        self.faults.push(Fault {
            matcher,
            reply,
            left,
        });
    }

    /// The first queued fault that answers this request, used up by it.
    pub fn take_fault(&mut self, endpoint: Option<Endpoint>, path: &str) -> Option<FaultReply> {
        let i = self
            .faults
            .iter()
            .position(|f| f.matcher.matches(endpoint, path))?;
        let fault = &mut self.faults[i];
        fault.left -= 1;
        let reply = fault.reply.clone();
        if fault.left == 0 {
            self.faults.remove(i);
        }
        Some(reply)
    }

    /// Requests the queued faults will still answer.
    pub fn faults_pending(&self) -> usize {
        self.faults.iter().map(|f| f.left).sum()
    }

    /// `POST /oauth/v2/token` with a parsed form: Uber's client credentials.
    pub fn uber_mint(&mut self, form: &HashMap<String, String>, now: Instant) -> Answer {
        for field in ["client_id", "client_secret", "grant_type", "scope"] {
            if form.get(field).is_none_or(|v| v.is_empty()) {
                return Answer::oauth(400, "invalid_request", format!("missing {field}"));
            }
        }
        if form["grant_type"] != "client_credentials" {
            return Answer::oauth(
                400,
                "unsupported_grant_type",
                format!(
                    "grant_type {:?} is not client_credentials",
                    form["grant_type"]
                ),
            );
        }
        let client = form["client_id"].as_str();
        if self.uber_clients.get(client) != Some(&form["client_secret"]) {
            return Answer::oauth(401, "invalid_client", "unknown client or wrong secret");
        }
        let times = self.uber_mint_times.entry(client.to_owned()).or_default();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= HOUR)
        {
            times.pop_front();
        }
        if times.len() >= self.uber_hourly_cap {
            // When the oldest mint of the hour leaves the window.
            let wait = times
                .front()
                .map(|t| HOUR.saturating_sub(now.duration_since(*t)))
                .unwrap_or(HOUR);
            let mut a = Answer::oauth(
                429,
                "rate_limited",
                format!(
                    "more than {} token requests in an hour",
                    self.uber_hourly_cap
                ),
            );
            a.retry_after = Some(wait.as_secs().max(1).to_string());
            return a;
        }
        times.push_back(now);

        let token = new_token("KA.fake-");
        self.access.insert(
            token.clone(),
            AccessToken {
                platform: Platform::Ubereats,
                expires_at: now + self.uber_expires_in,
                revoked: false,
            },
        );
        *self
            .mints
            .entry((Platform::Ubereats, client.to_owned()))
            .or_default() += 1;
        // More live tokens than the limit: the oldest live ones are evicted.
        let minted = self.uber_minted.entry(client.to_owned()).or_default();
        minted.push_back(token.clone());
        minted.retain(|t| self.access.get(t).is_some_and(|a| a.live(now)));
        while minted.len() > self.uber_live_limit {
            let oldest = minted.pop_front().expect("more than the limit");
            if let Some(a) = self.access.get_mut(&oldest) {
                a.revoked = true;
                self.revoked += 1;
            }
        }
        Answer::json(
            200,
            json!({
                "access_token": token,
                "expires_in": self.uber_expires_in.as_secs(),
                "token_type": "Bearer",
                "scope": form["scope"],
                "refresh_token": "",
            }),
        )
    }

    /// `POST /oauth2/token` for a Wolt venue already authenticated as
    /// `client_id` with `secret` (HTTP Basic).
    pub fn wolt_token(
        &mut self,
        client_id: &str,
        secret: &str,
        form: &HashMap<String, String>,
        now: Instant,
    ) -> Answer {
        if self.wolt_venues.get(client_id).map(String::as_str) != Some(secret) {
            return Answer::oauth(401, "invalid_client", "unknown client or wrong secret");
        }
        let field = |name: &str| form.get(name).filter(|v| !v.is_empty());
        match form.get("grant_type").map(String::as_str) {
            Some("refresh_token") => match field("refresh_token") {
                Some(r) => self.wolt_refresh(client_id, r, now),
                None => Answer::oauth(400, "invalid_request", "missing refresh_token"),
            },
            Some("authorization_code") => match field("code") {
                Some(code) => self.wolt_code(client_id, code, now),
                None => Answer::oauth(400, "invalid_request", "missing code"),
            },
            Some(other) => Answer::oauth(
                400,
                "unsupported_grant_type",
                format!("grant_type {other:?} is not refresh_token or authorization_code"),
            ),
            None => Answer::oauth(400, "invalid_request", "missing grant_type"),
        }
    }

    fn wolt_refresh(&mut self, client_id: &str, presented: &str, now: Instant) -> Answer {
        let Some(r) = self.refresh.get_mut(presented) else {
            return Answer::oauth(400, "invalid_grant", "unknown refresh token");
        };
        if r.client_id != client_id {
            return Answer::oauth(400, "invalid_grant", "refresh token of another client");
        }
        r.uses += 1;
        if r.used {
            // Wolt: reuse "immediately deactivates and revokes the newly
            // issued access and refresh tokens".
            self.reuses += 1;
            self.revoke_issued_from(presented);
            return Answer::oauth(400, "invalid_grant", "refresh token already used");
        }
        if r.revoked {
            return Answer::oauth(400, "invalid_grant", "refresh token revoked");
        }
        r.used = true;
        let (access, refresh, body) = self.wolt_issue(client_id, now);
        self.refresh
            .get_mut(presented)
            .expect("looked up above")
            .issued = Some((access, refresh));
        Answer::json(200, body)
    }

    fn wolt_code(&mut self, client_id: &str, code: &str, now: Instant) -> Answer {
        match self.wolt_codes.get_mut(code) {
            Some((owner, used)) if owner == client_id && !*used => *used = true,
            Some((owner, _)) if owner == client_id => {
                return Answer::oauth(400, "invalid_grant", "authorization code already used");
            }
            _ => return Answer::oauth(400, "invalid_grant", "unknown authorization code"),
        }
        let (_, _, body) = self.wolt_issue(client_id, now);
        Answer::json(200, body)
    }

    /// A new access token and refresh token for a venue.
    fn wolt_issue(&mut self, client_id: &str, now: Instant) -> (String, String, Value) {
        let access = new_token("wolt-at-");
        let refresh = new_token("wolt-rt-");
        self.access.insert(
            access.clone(),
            AccessToken {
                platform: Platform::Wolt,
                expires_at: now + self.wolt_expires_in,
                revoked: false,
            },
        );
        self.refresh.insert(
            refresh.clone(),
            RefreshToken {
                client_id: client_id.to_owned(),
                used: false,
                revoked: false,
                uses: 0,
                issued: None,
            },
        );
        *self
            .mints
            .entry((Platform::Wolt, client_id.to_owned()))
            .or_default() += 1;
        let body = json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.wolt_expires_in.as_secs(),
            "refresh_token": refresh,
        });
        (access, refresh, body)
    }

    /// Revokes the pair issued from a refresh token, and whatever was
    /// issued from that pair's refresh token in turn: the whole line of
    /// tokens descending from the reused one.
    fn revoke_issued_from(&mut self, refresh: &str) {
        let mut next = self.refresh.get(refresh).and_then(|r| r.issued.clone());
        while let Some((access, refresh)) = next {
            self.revoke_access(&access);
            next = self.refresh.get_mut(&refresh).and_then(|r| {
                r.revoked = true;
                r.issued.clone()
            });
        }
    }

    fn revoke_access(&mut self, token: &str) -> bool {
        match self.access.get_mut(token) {
            Some(a) if !a.revoked => {
                a.revoked = true;
                self.revoked += 1;
                true
            }
            Some(_) => true,
            None => false,
        }
    }

    /// Revokes an access or a refresh token; false if it is unknown.
    pub fn revoke(&mut self, token: &str) -> bool {
        if self.revoke_access(token) {
            return true;
        }
        match self.refresh.get_mut(token) {
            Some(r) => {
                r.revoked = true;
                true
            }
            None => false,
        }
    }

    /// Every live access token of both providers expires now.
    pub fn expire_all(&mut self, now: Instant) {
        for a in self.access.values_mut() {
            if a.expires_at > now {
                a.expires_at = now;
            }
        }
    }

    /// Whether an access token is valid for `platform`'s API now.
    pub fn authorized(&self, platform: Platform, token: &str, now: Instant) -> bool {
        self.access
            .get(token)
            .is_some_and(|a| a.platform == platform && a.live(now))
    }

    /// Whether an access token, or a refresh token, can still be used.
    pub fn live(&self, token: &str, now: Instant) -> bool {
        self.access.get(token).is_some_and(|a| a.live(now))
            || self
                .refresh
                .get(token)
                .is_some_and(|r| !r.used && !r.revoked)
    }

    /// The venue's refresh token that can still be used, if any.
    pub fn live_refresh_token(&self, client_id: &str) -> Option<String> {
        self.refresh
            .iter()
            .find(|(_, r)| r.client_id == client_id && !r.used && !r.revoked)
            .map(|(t, _)| t.clone())
    }

    pub fn mints(&self, platform: Platform) -> usize {
        self.mints
            .iter()
            .filter(|((p, _), _)| *p == platform)
            .map(|(_, n)| n)
            .sum()
    }

    pub fn mints_by(&self, platform: Platform, client_id: &str) -> usize {
        self.mints
            .get(&(platform, client_id.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    pub fn refresh_uses(&self, token: &str) -> usize {
        self.refresh.get(token).map(|r| r.uses).unwrap_or(0)
    }

    pub fn refresh_token_reuses(&self) -> usize {
        self.reuses
    }

    pub fn revoked(&self) -> usize {
        self.revoked
    }

    /// The counters as JSON (`GET /_fake/stats`). No token or secret is in
    /// it: the binary's stats are for people watching a dev hub.
    pub fn stats(&self, now: Instant) -> Value {
        let mut by_client = serde_json::Map::new();
        for ((p, client), n) in &self.mints {
            by_client.insert(format!("{p}:{client}"), json!(n));
        }
        let mut paths: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &self.requests {
            *paths.entry(r.path.as_str()).or_default() += 1;
        }
        let live = |p: Platform| {
            self.access
                .values()
                .filter(|a| a.platform == p && a.live(now))
                .count()
        };
        json!({
            "mints": {
                "ubereats": self.mints(Platform::Ubereats),
                "wolt": self.mints(Platform::Wolt),
            },
            "mints_by_client": by_client,
            "live_access_tokens": {
                "ubereats": live(Platform::Ubereats),
                "wolt": live(Platform::Wolt),
            },
            "refresh_token_reuses": self.reuses,
            "revoked": self.revoked,
            "requests": self.requests.len(),
            "requests_by_path": paths,
            "faults_pending": self.faults_pending(),
        })
    }
}
