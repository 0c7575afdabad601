//! What the fake provider knows and decides, without HTTP: the clients,
//! venues, logins and keys it accepts, every token it issued and whether it
//! is still live, the stored orders, what each order was answered at its
//! provider, the recorded requests and status calls, and the fault queue. Every
//! decision is made under one lock, so concurrent requests are served in
//! some order, never interleaved (two refreshes with one Wolt refresh token:
//! one wins, the other is a reuse).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use super::status::{Effect, Refusal, StatusEndpoint, error_body, keeta_conflict};
use super::{Api, Decision, Endpoint, FakeRequest, FaultReply, Matcher, Platform, StatusCall};

/// Uber's documented token lifetime (30 days) and Wolt's (1 hour).
pub(super) const UBER_EXPIRES_IN: Duration = Duration::from_secs(2_592_000);
pub(super) const WOLT_EXPIRES_IN: Duration = Duration::from_secs(3600);
/// The Delivery Hero middleware's login (1800 s in two public clients) and
/// Deliveroo's documented 5 minutes.
pub(super) const TALABAT_EXPIRES_IN: Duration = Duration::from_secs(1800);
pub(super) const DELIVEROO_EXPIRES_IN: Duration = Duration::from_secs(300);
/// Grab's SDK: `expires_in` 604799 s (7 days).
pub(super) const GRAB_EXPIRES_IN: Duration = Duration::from_secs(604_799);
/// How far ahead of the fake's clock a DoorDash JWT's `iat` may be.
pub(super) const DOORDASH_IAT_SKEW: Duration = Duration::from_secs(60);
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

    /// A provider's error body for a refused request (Keeta's with HTTP
    /// 200: its outcome is the body's `code`).
    pub fn refused(platform: Platform, refusal: Refusal, message: &str) -> Answer {
        let status = match platform {
            Platform::Keeta => 200,
            _ => refusal.status(),
        };
        Answer::json(status, error_body(platform, refusal, message))
    }

    fn empty(status: u16) -> Answer {
        Answer {
            status,
            retry_after: None,
            body: Bytes::new(),
        }
    }

    /// An OAuth2 error (`{"error": ..., "error_description": ...}`).
    pub fn oauth(status: u16, error: &str, description: impl Into<String>) -> Answer {
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

/// What an order was told at its provider so far.
#[derive(Debug, Default)]
struct Progress {
    decision: Option<Decision>,
    /// Deliveroo: `confirmed` (after accepted).
    confirmed: bool,
    /// Deliveroo: `sync_status` was reported.
    synced: bool,
    /// Cancelled by the restaurant.
    cancelled: bool,
    /// Marked ready (Grab, DoorDash, Keeta take it once).
    ready: bool,
}

/// A DoorDash signing key the fake accepts JWTs of.
struct DoordashKey {
    developer_id: String,
    key_id: String,
    key: Vec<u8>,
}

/// A Keeta app the fake accepts signed calls of.
struct KeetaApp {
    secret: secrecy::SecretString,
    access_token: String,
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
    pub talabat_expires_in: Duration,
    pub deliveroo_expires_in: Duration,
    pub grab_expires_in: Duration,
    uber_clients: HashMap<String, String>,
    grab_clients: HashMap<String, String>,
    doordash_keys: Vec<DoordashKey>,
    glovo_tokens: HashSet<String>,
    keeta_apps: HashMap<String, KeetaApp>,
    talabat_users: HashMap<String, String>,
    deliveroo_clients: HashMap<String, String>,
    justeat_keys: HashSet<String>,
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
    progress: HashMap<(Platform, String), Progress>,
    status_calls: Vec<StatusCall>,
    /// Woken at every recorded status call.
    pub recorded: Arc<tokio::sync::Notify>,
    faults: Vec<Fault>,
}

impl Default for State {
    fn default() -> State {
        State {
            uber_expires_in: UBER_EXPIRES_IN,
            wolt_expires_in: WOLT_EXPIRES_IN,
            uber_hourly_cap: UBER_HOURLY_CAP,
            uber_live_limit: UBER_LIVE_LIMIT,
            talabat_expires_in: TALABAT_EXPIRES_IN,
            deliveroo_expires_in: DELIVEROO_EXPIRES_IN,
            grab_expires_in: GRAB_EXPIRES_IN,
            uber_clients: HashMap::new(),
            grab_clients: HashMap::new(),
            doordash_keys: Vec::new(),
            glovo_tokens: HashSet::new(),
            keeta_apps: HashMap::new(),
            talabat_users: HashMap::new(),
            deliveroo_clients: HashMap::new(),
            justeat_keys: HashSet::new(),
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
            progress: HashMap::new(),
            status_calls: Vec::new(),
            recorded: Default::default(),
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

    pub fn add_talabat_user(&mut self, username: &str, password: &str) {
        self.talabat_users
            .insert(username.to_owned(), password.to_owned());
    }

    pub fn add_deliveroo_client(&mut self, id: &str, secret: &str) {
        self.deliveroo_clients
            .insert(id.to_owned(), secret.to_owned());
    }

    pub fn add_justeat_key(&mut self, key: &str) {
        self.justeat_keys.insert(key.to_owned());
    }

    pub fn justeat_key(&self, key: &str) -> bool {
        self.justeat_keys.contains(key)
    }

    pub fn add_grab_client(&mut self, id: &str, secret: &str) {
        self.grab_clients.insert(id.to_owned(), secret.to_owned());
    }

    /// `Err` if the secret is not base64url.
    pub fn add_doordash_key(
        &mut self,
        developer_id: &str,
        key_id: &str,
        signing_secret: &str,
    ) -> Result<(), String> {
        use secrecy::ExposeSecret;
        let key = shared::secret::doordash_signing_key(&secrecy::SecretString::from(
            signing_secret.to_owned(),
        ))
        .ok_or("the signing secret is not base64url")?;
        self.doordash_keys
            .retain(|k| !(k.developer_id == developer_id && k.key_id == key_id));
        self.doordash_keys.push(DoordashKey {
            developer_id: developer_id.to_owned(),
            key_id: key_id.to_owned(),
            key: key.expose_secret().to_vec(),
        });
        Ok(())
    }

    /// Whether `jwt` is a live DoorDash JWT of a registered developer and
    /// key: DoorDash's header, `aud`, a lifetime of at most 30 minutes,
    /// `iat` not ahead, signed with that key.
    pub fn doordash_jwt(&self, jwt: &str) -> bool {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        self.doordash_keys.iter().any(|k| {
            shared::tokens::doordash::verify(jwt, &k.key, now, DOORDASH_IAT_SKEW)
                .is_ok_and(|c| c.iss == k.developer_id && c.kid == k.key_id)
        })
    }

    pub fn add_glovo_token(&mut self, token: &str) {
        self.glovo_tokens.insert(token.to_owned());
    }

    pub fn glovo_token(&self, token: &str) -> bool {
        self.glovo_tokens.contains(token)
    }

    pub fn add_keeta_app(&mut self, app_id: &str, secret: &str, access_token: &str) {
        self.keeta_apps.insert(
            app_id.to_owned(),
            KeetaApp {
                secret: secret.to_owned().into(),
                access_token: access_token.to_owned(),
            },
        );
    }

    /// Whether a Keeta call to `url` with this JSON body is signed right
    /// by a registered app and carries its access token.
    pub fn keeta_signed(&self, url: &str, body: &[u8]) -> bool {
        use shared::verify::keeta;
        let Ok(params) = keeta::json_params(body) else {
            return false;
        };
        let get = |k: &str| {
            params
                .iter()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.as_str())
        };
        let (Some(app_id), Some(token), Some(sig)) =
            (get("appId"), get("accessToken"), get(keeta::SIG_FIELD))
        else {
            return false;
        };
        let Some(app) = self.keeta_apps.get(app_id) else {
            return false;
        };
        let pairs: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        token == app.access_token && keeta::signature(url, &pairs, &app.secret) == sig
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

    pub fn record_status(&mut self, call: StatusCall) {
        self.status_calls.push(call);
        self.recorded.notify_waiters();
    }

    pub fn status_calls(&self) -> &[StatusCall] {
        &self.status_calls
    }

    pub fn decision(&self, platform: Platform, id: &str) -> Option<Decision> {
        self.progress
            .get(&(platform, id.to_owned()))
            .and_then(|p| p.decision)
    }

    pub fn set_decision(&mut self, platform: Platform, id: &str, decision: Decision) {
        self.progress
            .entry((platform, id.to_owned()))
            .or_default()
            .decision = Some(decision);
    }

    /// A valid, authorized status request for order `id`: the provider's
    /// success, or its "already done" answer.
    pub fn status(&mut self, e: StatusEndpoint, id: &str, effect: Effect) -> Answer {
        let platform = e.platform();
        let p = self.progress.entry((platform, id.to_owned())).or_default();
        let conflict = |message: String| match platform {
            // The middleware names the order's state; the hub retries on
            // some of them (a fault plays those).
            Platform::Talabat => Answer::json(
                409,
                json!({"currentState": match p.decision {
                    Some(Decision::Rejected) => "REJECTED",
                    _ => "ACCEPTED",
                }}),
            ),
            // DoorDash's documented 400 [DOC].
            Platform::Doordash => Answer::json(
                400,
                json!({"code": "validation_error", "message": "Order already processed or expired"}),
            ),
            // Grab: 400 for the order's state or a repeated mark, 409 for
            // a cancel [SDK].
            Platform::Grab if e != StatusEndpoint::GrabCancel => Answer::json(
                400,
                json!({"code": "invalid_state", "message": match e {
                    StatusEndpoint::GrabMark => "order already marked ready",
                    _ => "invalid order state",
                }}),
            ),
            Platform::Keeta => Answer::refused(platform, Refusal::Conflict, &keeta_conflict(e)),
            _ => Answer::refused(platform, Refusal::Conflict, &message),
        };
        let decided = |d: Decision| match d {
            Decision::Accepted => "accepted",
            Decision::Rejected => "rejected",
        };
        match effect {
            Effect::Accept | Effect::Reject => {
                if let Some(d) = p.decision {
                    return conflict(format!("order {id} is already {}", decided(d)));
                }
                p.decision = Some(match effect {
                    Effect::Accept => Decision::Accepted,
                    _ => Decision::Rejected,
                });
            }
            Effect::Confirm => {
                if p.decision != Some(Decision::Accepted) || p.confirmed {
                    return conflict(format!("order {id} cannot be confirmed now"));
                }
                p.confirmed = true;
            }
            Effect::Sync => {
                if p.synced {
                    return conflict(format!("order {id} already has a sync status"));
                }
                p.synced = true;
            }
            Effect::Cancel => {
                if p.cancelled || p.decision == Some(Decision::Rejected) {
                    let message = format!("order {id} is already cancelled or denied");
                    return match e {
                        // Uber's legacy cancel: 404 for a terminal order.
                        StatusEndpoint::UberCancel => {
                            Answer::refused(platform, Refusal::NotFound, &message)
                        }
                        _ => conflict(message),
                    };
                }
                p.cancelled = true;
            }
            Effect::Ready => {
                if p.ready {
                    return conflict(format!("order {id} is already marked ready"));
                }
                p.ready = true;
            }
            Effect::Progress => {}
        }
        match platform {
            Platform::Keeta => {
                Answer::json(200, json!({"code": 0, "message": "success", "data": null}))
            }
            _ => Answer::empty(e.success()),
        }
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

        let token = self.issue(Platform::Ubereats, client, self.uber_expires_in, now);
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

    /// An access token of `platform` for `owner`, counted as a mint.
    fn issue(
        &mut self,
        platform: Platform,
        owner: &str,
        expires_in: Duration,
        now: Instant,
    ) -> String {
        let token = new_token(match platform {
            Platform::Talabat => "talabat-at-",
            Platform::Deliveroo => "deliveroo-at-",
            Platform::Ubereats => "KA.fake-",
            Platform::Wolt => "wolt-at-",
            Platform::Grab => "grab-at-",
            Platform::Justeat | Platform::Doordash | Platform::Glovo | Platform::Keeta => {
                unreachable!("{platform} has no token endpoint")
            }
        });
        self.access.insert(
            token.clone(),
            AccessToken {
                platform,
                expires_at: now + expires_in,
                revoked: false,
            },
        );
        *self.mints.entry((platform, owner.to_owned())).or_default() += 1;
        token
    }

    /// `POST /v2/login` with a parsed form: the Delivery Hero middleware.
    pub fn talabat_login(&mut self, form: &HashMap<String, String>, now: Instant) -> Answer {
        let bad =
            |message: String| Answer::refused(Platform::Talabat, Refusal::BadRequest, &message);
        for field in ["username", "password", "grant_type"] {
            if form.get(field).is_none_or(|v| v.is_empty()) {
                return bad(format!("missing {field}"));
            }
        }
        if form["grant_type"] != "client_credentials" {
            return bad(format!(
                "grant_type {:?} is not client_credentials",
                form["grant_type"]
            ));
        }
        let user = form["username"].as_str();
        if self.talabat_users.get(user) != Some(&form["password"]) {
            return Answer::refused(
                Platform::Talabat,
                Refusal::Unauthorized,
                "unknown user or wrong password",
            );
        }
        let expires_in = self.talabat_expires_in;
        let token = self.issue(Platform::Talabat, user, expires_in, now);
        Answer::json(
            200,
            json!({
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": expires_in.as_secs(),
            }),
        )
    }

    /// `POST /grabid/v1/oauth2/token` with a parsed JSON body: Grab's
    /// client credentials [SDK].
    pub fn grab_mint(&mut self, body: &Value, now: Instant) -> Answer {
        let field = |name: &str| {
            body.get(name)
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
        };
        for name in ["client_id", "client_secret", "grant_type", "scope"] {
            if field(name).is_none() {
                return Answer::oauth(400, "invalid_request", format!("missing {name}"));
            }
        }
        let grant = field("grant_type").expect("checked");
        if grant != "client_credentials" {
            return Answer::oauth(
                400,
                "unsupported_grant_type",
                format!("grant_type {grant:?} is not client_credentials"),
            );
        }
        let client = field("client_id").expect("checked");
        if self.grab_clients.get(client).map(String::as_str) != field("client_secret") {
            return Answer::oauth(401, "invalid_client", "unknown client or wrong secret");
        }
        let expires_in = self.grab_expires_in;
        let token = self.issue(Platform::Grab, client, expires_in, now);
        Answer::json(
            200,
            json!({
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": expires_in.as_secs(),
            }),
        )
    }

    /// `POST /deliveroo/oauth2/token` for a client already authenticated
    /// as `client_id` with `secret` (HTTP Basic).
    pub fn deliveroo_token(
        &mut self,
        client_id: &str,
        secret: &str,
        form: &HashMap<String, String>,
        now: Instant,
    ) -> Answer {
        if self.deliveroo_clients.get(client_id).map(String::as_str) != Some(secret) {
            return Answer::oauth(401, "invalid_client", "unknown client or wrong secret");
        }
        match form.get("grant_type").map(String::as_str) {
            Some("client_credentials") => {}
            Some(other) => {
                return Answer::oauth(
                    400,
                    "unsupported_grant_type",
                    format!("grant_type {other:?} is not client_credentials"),
                );
            }
            None => return Answer::oauth(400, "invalid_request", "missing grant_type"),
        }
        let expires_in = self.deliveroo_expires_in;
        let token = self.issue(Platform::Deliveroo, client_id, expires_in, now);
        Answer::json(
            200,
            json!({
                "access_token": token,
                "expires_in": expires_in.as_secs(),
                "token_type": "Bearer",
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
        let access = self.issue(Platform::Wolt, client_id, self.wolt_expires_in, now);
        let refresh = new_token("wolt-rt-");
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

    /// Whether the fake accepts some client of the provider, or issued it
    /// a token.
    fn knows(&self, p: Platform) -> bool {
        let registered = match p {
            Platform::Ubereats => !self.uber_clients.is_empty(),
            Platform::Wolt => !self.wolt_venues.is_empty(),
            Platform::Talabat => !self.talabat_users.is_empty(),
            Platform::Deliveroo => !self.deliveroo_clients.is_empty(),
            Platform::Justeat => !self.justeat_keys.is_empty(),
            Platform::Grab => !self.grab_clients.is_empty(),
            Platform::Doordash => !self.doordash_keys.is_empty(),
            Platform::Glovo => !self.glovo_tokens.is_empty(),
            Platform::Keeta => !self.keeta_apps.is_empty(),
        };
        registered || self.mints(p) > 0
    }

    /// The counters as JSON (`GET /_fake/stats`). No token or secret is in
    /// it: the binary's stats are for people watching a dev hub. Mints and
    /// live tokens are shown for the providers with a token endpoint that
    /// the fake has a client of; status calls by provider, for those that
    /// got any.
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
        let minting = || {
            Platform::ALL
                .into_iter()
                .filter(|p| p.mints() && self.knows(*p))
        };
        let mints: serde_json::Map<String, Value> = minting()
            .map(|p| (p.to_string(), json!(self.mints(p))))
            .collect();
        let live: serde_json::Map<String, Value> =
            minting().map(|p| (p.to_string(), json!(live(p)))).collect();
        let mut calls: BTreeMap<&str, usize> = BTreeMap::new();
        for c in &self.status_calls {
            *calls.entry(c.provider).or_default() += 1;
        }
        json!({
            "mints": mints,
            "mints_by_client": by_client,
            "live_access_tokens": live,
            "refresh_token_reuses": self.reuses,
            "revoked": self.revoked,
            "requests": self.requests.len(),
            "requests_by_path": paths,
            "status_calls": calls,
            "faults_pending": self.faults_pending(),
        })
    }
}
