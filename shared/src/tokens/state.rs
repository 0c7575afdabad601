//! A credential's entry (sealed JSON in the bucket) and the one decision
//! made on it, without NATS or HTTP: use the stored token, wait for the
//! replica refreshing it, refresh it now, or fail for now.
//!
//! Times are unix milliseconds: replicas compare them, so they are wall
//! clock (a lease or a floor is off by the replicas' clock skew, which is
//! small beside the seconds they last).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What the bucket holds for one credential (sealed).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct State {
    /// The current access token, if any was ever issued.
    pub access_token: Option<String>,
    /// When it expires (its `expires_in` counted from the answer).
    pub expires_at: u64,
    /// Wolt: the refresh token to present next (single-use).
    pub refresh_token: Option<String>,
    /// Wolt: the fingerprint of the configured refresh token that started
    /// this chain.
    pub seed: Option<String>,
    /// Wolt: the fingerprints of configured refresh tokens that started
    /// earlier chains (the last [`SPENT_SEEDS`], oldest first). Such a
    /// token is spent: a replica still configured with it (a rolling
    /// update, a config rollback) keeps using the stored chain.
    pub spent_seeds: Vec<String>,
    /// When the token endpoint last issued a token for this credential.
    pub minted_at: Option<u64>,
    /// Who is calling the token endpoint now, and until when at most.
    pub lease: Option<Lease>,
    /// Why the last call failed (short, never a secret).
    pub last_error: Option<String>,
    /// Counts issued tokens: the identity of the current one in logs.
    pub generation: u64,
    /// The current access token was answered 401: never handed out again.
    pub rejected: bool,
    /// Token endpoint failures since the last success.
    pub failures: u32,
    /// No call to the token endpoint before this (after a failure: its
    /// `Retry-After`, or a pause growing with `failures`), so that N
    /// replicas do not spend the provider's token quota on a failing
    /// endpoint.
    pub not_before: Option<u64>,
}

// Tokens are secrets: a state shows its times and flags, never a token.
impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |t: &Option<String>| t.as_ref().map(|_| "[redacted]");
        f.debug_struct("State")
            .field("access_token", &shown(&self.access_token))
            .field("expires_at", &self.expires_at)
            .field("refresh_token", &shown(&self.refresh_token))
            .field("seed", &self.seed.as_ref().map(|_| "[fingerprint]"))
            .field("spent_seeds", &self.spent_seeds.len())
            .field("minted_at", &self.minted_at)
            .field("lease", &self.lease)
            .field("last_error", &self.last_error)
            .field("generation", &self.generation)
            .field("rejected", &self.rejected)
            .field("failures", &self.failures)
            .field("not_before", &self.not_before)
            .finish()
    }
}

/// How many spent seed fingerprints an entry remembers.
pub(crate) const SPENT_SEEDS: usize = 8;

/// A configured Wolt refresh token, against a credential's entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seed {
    /// It started the stored chain: the chain's token is presented.
    Current,
    /// It started an earlier chain: spent, never presented again; the
    /// stored chain is used.
    Spent,
    /// Never seen: it starts a new chain (an operator re-authorised).
    New,
}

/// A replica's claim on the right to call the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Lease {
    /// Random per token store instance.
    pub holder: String,
    pub until: u64,
}

/// The store's timing settings, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub refresh_ahead: u64,
    pub min_mint_interval: u64,
    pub lease: u64,
}

/// What a lease must have left, beyond the token call's timeout, for the
/// writes settling its outcome (a stored token, a released lease).
pub(crate) const SETTLE_MARGIN: u64 = 5_000;

/// Whether a lease ending at `until`, at `now` (its write just landed),
/// leaves room for a token call of `request_timeout` and the settling
/// writes ([`SETTLE_MARGIN`]); else another replica could take it over
/// while this one still spends a Wolt refresh token. The room asked is at
/// most three quarters of a `lease`, so that a lease shorter than the call
/// plus the margin (tests) still works when its write is prompt.
pub(crate) fn lease_leaves_room(until: u64, now: u64, request_timeout: u64, lease: u64) -> bool {
    let needed = request_timeout
        .saturating_add(SETTLE_MARGIN)
        .min(lease / 4 * 3);
    until.saturating_sub(now) >= needed
}

/// Why a token is refreshed (logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    /// The store holds none.
    Absent,
    /// It expires within `refresh_ahead` (or has).
    Expiring,
    /// It was answered 401.
    Rejected,
    /// The configured Wolt refresh token changed: a new chain.
    Reseeded,
}

impl Why {
    pub fn as_str(self) -> &'static str {
        match self {
            Why::Absent => "absent",
            Why::Expiring => "expiring",
            Why::Rejected => "rejected",
            Why::Reseeded => "reseeded",
        }
    }
}

/// What to do with a credential's entry now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Next {
    /// Hand out the stored token; keep it in memory until `fresh_until`
    /// (then look at the entry again).
    Use { fresh_until: u64 },
    /// Another replica holds a live lease and there is no token to use
    /// meanwhile: look again at `until` or when the entry changes.
    Wait { until: u64 },
    /// Take the lease and call the token endpoint; `mark_rejected`: the
    /// lease write also marks the stored token rejected.
    Refresh { why: Why, mark_rejected: bool },
    /// A token was issued less than the floor ago and none can be used.
    MintFloor { retry_after: Duration },
    /// The last call failed and the pause after it has not passed.
    Paused { retry_after: Duration },
}

impl State {
    /// How long the current token was issued for (0 when unknown: an entry
    /// without `minted_at`).
    fn lifetime(&self) -> u64 {
        self.minted_at
            .map_or(0, |minted| self.expires_at.saturating_sub(minted))
    }

    /// When the current token is due for renewal: `refresh_ahead` before
    /// it expires, but never before half its lifetime. A token shorter
    /// than twice `refresh_ahead` (Deliveroo's 5 minutes against a
    /// `token_refresh_ahead` of 10) is thus used for half its life, not
    /// renewed at every call from its mint on.
    pub fn renew_at(&self, timing: Timing) -> u64 {
        let ahead = match self.minted_at {
            Some(_) => timing.refresh_ahead.min(self.lifetime() / 2),
            None => timing.refresh_ahead,
        };
        self.expires_at.saturating_sub(ahead)
    }

    /// Whether the stored token may be handed out at `now` at all.
    pub fn usable(&self, now: u64, rejected: Option<&str>) -> bool {
        match &self.access_token {
            Some(t) => !self.rejected && now < self.expires_at && rejected != Some(t.as_str()),
            None => false,
        }
    }

    /// What the configured seed with fingerprint `fp` is to this entry.
    pub fn seed(&self, fp: &str) -> Seed {
        if self.seed.as_deref() == Some(fp) {
            Seed::Current
        } else if self.spent_seeds.iter().any(|s| s == fp) {
            Seed::Spent
        } else {
            Seed::New
        }
    }

    /// Decides for a caller at `now`. `seed`: the configured Wolt seed's
    /// fingerprint. `rejected`: the token a caller was answered 401 with
    /// (`None` for a plain request). `me`: this store's lease holder id.
    pub fn next(
        this: Option<&State>,
        now: u64,
        timing: Timing,
        seed: Option<&str>,
        rejected: Option<&str>,
        me: &str,
    ) -> Next {
        let Some(s) = this else {
            return Next::Refresh {
                why: Why::Absent,
                mark_rejected: false,
            };
        };
        let usable = s.usable(now, rejected);
        let reseeded = seed.is_some_and(|fp| s.seed(fp) == Seed::New);
        let mark_rejected = rejected.is_some() && rejected == s.access_token.as_deref();
        let why = if reseeded {
            Why::Reseeded
        } else if s.access_token.is_none() {
            Why::Absent
        } else if s.rejected || mark_rejected {
            Why::Rejected
        } else if now >= s.renew_at(timing) {
            Why::Expiring
        } else {
            return Next::Use {
                fresh_until: s.renew_at(timing),
            };
        };
        // Due for a refresh. Whatever holds it back, a token that still
        // works is handed out meanwhile, kept in memory only until the
        // obstacle passes.
        let hold = |until: u64| {
            if usable {
                Next::Use {
                    fresh_until: until.min(s.expires_at),
                }
            } else {
                Next::Wait { until }
            }
        };
        if let Some(lease) = &s.lease
            && lease.until > now
            && lease.holder != me
        {
            return hold(lease.until.min(now + timing.lease));
        }
        if let Some(minted) = s.minted_at {
            // A renewal due by age comes at least half a lifetime after the
            // mint, which paces it by the provider's own lifetime: the
            // floor holds it back no longer than that, so that a floor set
            // longer than a short token lives (5 minutes at Deliveroo)
            // does not leave it expired. Mints for any other reason (none
            // stored, a 401, a new Wolt seed) keep the whole floor.
            let floor = match why {
                Why::Expiring => timing.min_mint_interval.min(s.lifetime() / 2),
                Why::Absent | Why::Rejected | Why::Reseeded => timing.min_mint_interval,
            };
            let floor_end = minted.saturating_add(floor);
            if now < floor_end {
                return match hold(floor_end) {
                    Next::Wait { .. } => Next::MintFloor {
                        retry_after: Duration::from_millis(floor_end - now),
                    },
                    use_it => use_it,
                };
            }
        }
        if let Some(not_before) = s.not_before
            && now < not_before
        {
            return match hold(not_before) {
                Next::Wait { .. } => Next::Paused {
                    retry_after: Duration::from_millis(not_before - now),
                },
                use_it => use_it,
            };
        }
        Next::Refresh { why, mark_rejected }
    }

    /// The entry after a token was issued at `now`. `seed`: the
    /// fingerprint of the configured refresh token presented to start a
    /// new chain (the chain's seed before it is then remembered as spent);
    /// `None` when the chain's own token was presented (its seed stays).
    pub fn issued(
        &self,
        now: u64,
        access_token: String,
        expires_in: Duration,
        refresh_token: Option<String>,
        seed: Option<&str>,
    ) -> State {
        let mut spent_seeds = self.spent_seeds.clone();
        let chain_seed = match seed {
            Some(new) => {
                if let Some(old) = self.seed.clone()
                    && old != new
                    && !spent_seeds.contains(&old)
                {
                    spent_seeds.push(old);
                }
                spent_seeds.retain(|s| s != new);
                let over = spent_seeds.len().saturating_sub(SPENT_SEEDS);
                spent_seeds.drain(..over);
                Some(new.to_owned())
            }
            None => self.seed.clone(),
        };
        State {
            access_token: Some(access_token),
            expires_at: now.saturating_add(expires_in.as_millis() as u64),
            refresh_token,
            seed: chain_seed,
            spent_seeds,
            minted_at: Some(now),
            lease: None,
            last_error: None,
            generation: self.generation + 1,
            rejected: false,
            failures: 0,
            not_before: None,
        }
    }

    /// The entry after a failed call at `now`: the lease released, the
    /// tokens kept, the next call paused for `retry_after` when the
    /// endpoint said so, else for a pause doubling from 500 ms with each
    /// failure up to `max_pause` (the mint floor).
    pub fn failed(
        &self,
        now: u64,
        error: String,
        retry_after: Option<Duration>,
        max_pause: u64,
    ) -> State {
        let failures = self.failures.saturating_add(1);
        let backoff = 500u64
            .saturating_mul(1u64 << (failures - 1).min(20))
            .min(max_pause);
        let pause = retry_after
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
            .max(backoff);
        State {
            lease: None,
            last_error: Some(error),
            failures,
            not_before: (pause > 0).then(|| now.saturating_add(pause)),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timing = Timing {
        refresh_ahead: 120_000,
        min_mint_interval: 60_000,
        lease: 30_000,
    };
    const NOW: u64 = 1_000_000_000;

    fn live(expires_in: u64) -> State {
        State::default().issued(
            NOW - 300_000,
            "at-1".into(),
            Duration::from_millis(expires_in + 300_000),
            None,
            None,
        )
    }

    fn next(s: &State, rejected: Option<&str>) -> Next {
        State::next(Some(s), NOW, T, None, rejected, "me")
    }

    #[test]
    fn an_empty_store_refreshes_and_a_valid_token_is_used_until_refresh_ahead() {
        assert_eq!(
            State::next(None, NOW, T, None, None, "me"),
            Next::Refresh {
                why: Why::Absent,
                mark_rejected: false
            }
        );
        let s = live(3_600_000);
        assert_eq!(
            next(&s, None),
            Next::Use {
                fresh_until: NOW + 3_600_000 - 120_000
            }
        );
        assert_eq!(
            next(&live(100_000), None),
            Next::Refresh {
                why: Why::Expiring,
                mark_rejected: false
            }
        );
    }

    #[test]
    fn a_rejected_token_is_refreshed_only_if_it_is_still_the_stored_one() {
        let s = live(3_600_000);
        assert_eq!(
            next(&s, Some("at-1")),
            Next::Refresh {
                why: Why::Rejected,
                mark_rejected: true
            }
        );
        // Another replica already replaced it: the stored one is used.
        assert!(matches!(next(&s, Some("at-0")), Next::Use { .. }));
        // Once marked, nobody hands it out.
        let marked = State {
            rejected: true,
            ..s.clone()
        };
        assert_eq!(
            next(&marked, None),
            Next::Refresh {
                why: Why::Rejected,
                mark_rejected: false
            }
        );
    }

    #[test]
    fn another_replicas_lease_is_waited_for_unless_a_token_still_works() {
        let leased = |s: State, holder: &str, until: u64| State {
            lease: Some(Lease {
                holder: holder.into(),
                until,
            }),
            ..s
        };
        // Nothing to use: wait for the holder.
        let cold = leased(State::default(), "other", NOW + 5_000);
        assert_eq!(
            State::next(Some(&cold), NOW, T, None, None, "me"),
            Next::Wait { until: NOW + 5_000 }
        );
        // A token in its refresh window still works meanwhile.
        let expiring = leased(live(100_000), "other", NOW + 5_000);
        assert_eq!(
            next(&expiring, None),
            Next::Use {
                fresh_until: NOW + 5_000
            }
        );
        // An expired lease, or this store's own, is taken over.
        let stale = leased(State::default(), "other", NOW - 1);
        assert!(matches!(
            State::next(Some(&stale), NOW, T, None, None, "me"),
            Next::Refresh { .. }
        ));
        let mine = leased(State::default(), "me", NOW + 5_000);
        assert!(matches!(
            State::next(Some(&mine), NOW, T, None, None, "me"),
            Next::Refresh { .. }
        ));
        // A lease claiming longer than a lease lasts is waited for a lease.
        let far = leased(State::default(), "other", NOW + 10_000_000);
        assert_eq!(
            State::next(Some(&far), NOW, T, None, None, "me"),
            Next::Wait {
                until: NOW + 30_000
            }
        );
    }

    #[test]
    fn the_mint_floor_serves_the_stored_token_or_refuses() {
        let minted_now = State::default().issued(
            NOW - 10_000,
            "at-1".into(),
            Duration::from_secs(100),
            None,
            None,
        );
        // Due for a new Wolt chain (another seed configured) but minted
        // 10 s ago: the stored token is used until the floor ends.
        assert_eq!(
            State::next(Some(&minted_now), NOW, T, Some("fp-new"), None, "me"),
            Next::Use {
                fresh_until: NOW + 50_000
            }
        );
        // Rejected 10 s after its mint: no second mint within the floor.
        assert_eq!(
            next(&minted_now, Some("at-1")),
            Next::MintFloor {
                retry_after: Duration::from_secs(50)
            }
        );
        // After the floor it is refreshed.
        let later = State::next(Some(&minted_now), NOW + 50_000, T, None, Some("at-1"), "me");
        assert!(matches!(
            later,
            Next::Refresh {
                why: Why::Rejected,
                ..
            }
        ));
    }

    #[test]
    fn a_short_token_is_renewed_ahead_and_the_floor_does_not_let_it_expire() {
        // Deliveroo: 5-minute tokens.
        let minted = NOW;
        let five_min =
            State::default().issued(minted, "at-1".into(), Duration::from_secs(300), None, None);
        let at = |s: &State, t: u64, timing: Timing, rejected: Option<&str>| {
            State::next(Some(s), minted + t * 1000, timing, None, rejected, "me")
        };
        let refresh = Next::Refresh {
            why: Why::Expiring,
            mark_rejected: false,
        };
        // The defaults (2 min ahead, 1 min floor): used until 3 minutes,
        // renewed then.
        assert_eq!(five_min.renew_at(T), minted + 180_000);
        assert_eq!(
            at(&five_min, 10, T, None),
            Next::Use {
                fresh_until: minted + 180_000
            }
        );
        assert_eq!(at(&five_min, 180, T, None), refresh);
        // A 401 within the floor still waits for it.
        assert_eq!(
            at(&five_min, 10, T, Some("at-1")),
            Next::MintFloor {
                retry_after: Duration::from_secs(50)
            }
        );
        // Renewing further ahead than the token lives: renewed at half its
        // life, not due from its mint on (a mint at every floor's end).
        let far_ahead = Timing {
            refresh_ahead: 600_000,
            ..T
        };
        assert_eq!(
            at(&five_min, 10, far_ahead, None),
            Next::Use {
                fresh_until: minted + 150_000
            }
        );
        assert_eq!(at(&five_min, 150, far_ahead, None), refresh);
        // A floor longer than the token lives does not leave it to expire:
        // renewed when due ...
        let long_floor = Timing {
            min_mint_interval: 600_000,
            ..T
        };
        assert_eq!(at(&five_min, 180, long_floor, None), refresh);
        assert_eq!(at(&five_min, 299, long_floor, None), refresh);
        // ... while a 401 keeps the whole floor.
        assert_eq!(
            at(&five_min, 180, long_floor, Some("at-1")),
            Next::MintFloor {
                retry_after: Duration::from_secs(420)
            }
        );
        // A long token is unchanged: 2 minutes ahead of a 30-day expiry.
        let uber = State::default().issued(
            minted,
            "at-1".into(),
            Duration::from_secs(2_592_000),
            None,
            None,
        );
        assert_eq!(uber.renew_at(far_ahead), minted + 2_592_000_000 - 600_000);
        // An entry without minted_at (none is written so) renews
        // refresh_ahead early.
        let unknown = State {
            minted_at: None,
            ..five_min.clone()
        };
        assert_eq!(unknown.renew_at(T), minted + 180_000);
    }

    #[test]
    fn an_hour_of_calls_on_five_minute_tokens_mints_only_when_due() {
        // A call every second for an hour, one process: every call gets a
        // token that works, and mints come once per due renewal.
        for (timing, period_s) in [
            (T, 180),
            (
                Timing {
                    refresh_ahead: 600_000,
                    ..T
                },
                150,
            ),
            (
                Timing {
                    min_mint_interval: 600_000,
                    ..T
                },
                180,
            ),
        ] {
            let mut entry: Option<State> = None;
            let mut mints = Vec::new();
            for t in 0..3600u64 {
                let now = NOW + t * 1000;
                match State::next(entry.as_ref(), now, timing, None, None, "me") {
                    Next::Use { fresh_until } => {
                        let s = entry.as_ref().unwrap();
                        assert!(s.usable(now, None), "{timing:?} at {t}s");
                        assert!(fresh_until > now, "{timing:?} at {t}s");
                    }
                    Next::Refresh { .. } => {
                        mints.push(t);
                        entry = Some(entry.unwrap_or_default().issued(
                            now,
                            format!("at-{t}"),
                            Duration::from_secs(300),
                            None,
                            None,
                        ));
                    }
                    other => panic!("{timing:?} at {t}s: {other:?}"),
                }
            }
            let expected: Vec<u64> = (0..3600).step_by(period_s).collect();
            assert_eq!(mints, expected, "{timing:?}");
        }
    }

    #[test]
    fn failures_pause_the_next_call_growing_up_to_the_floor() {
        let s = State {
            lease: Some(Lease {
                holder: "me".into(),
                until: NOW + 30_000,
            }),
            ..State::default()
        };
        let f1 = s.failed(NOW, "token endpoint answered 503".into(), None, 60_000);
        assert_eq!(f1.lease, None);
        assert_eq!(f1.failures, 1);
        assert_eq!(f1.not_before, Some(NOW + 500));
        assert_eq!(
            State::next(Some(&f1), NOW + 100, T, None, None, "me"),
            Next::Paused {
                retry_after: Duration::from_millis(400)
            }
        );
        let f2 = f1.failed(NOW, "x".into(), None, 60_000);
        assert_eq!(f2.not_before, Some(NOW + 1_000));
        let mut f = f2;
        for _ in 0..20 {
            f = f.failed(NOW, "x".into(), None, 60_000);
        }
        assert_eq!(f.not_before, Some(NOW + 60_000));
        // Retry-After wins when longer.
        let r = s.failed(NOW, "429".into(), Some(Duration::from_secs(7)), 60_000);
        assert_eq!(r.not_before, Some(NOW + 7_000));
        // No floor, no Retry-After: no pause.
        assert_eq!(s.failed(NOW, "x".into(), None, 0).not_before, None);
        // A success clears it all and counts a generation.
        let ok = f.issued(
            NOW,
            "at-2".into(),
            Duration::from_secs(60),
            Some("rt-2".into()),
            Some("fp"),
        );
        assert_eq!(
            (ok.failures, ok.not_before, ok.last_error.as_deref()),
            (0, None, None)
        );
        assert_eq!(ok.generation, 1);
        assert_eq!(ok.seed.as_deref(), Some("fp"));
    }

    #[test]
    fn a_new_seed_replaces_the_chain() {
        let s = State {
            seed: Some("fp-old".into()),
            refresh_token: Some("rt-5".into()),
            ..live(3_600_000)
        };
        assert_eq!(
            State::next(Some(&s), NOW, T, Some("fp-new"), None, "me"),
            Next::Refresh {
                why: Why::Reseeded,
                mark_rejected: false
            }
        );
        assert!(matches!(
            State::next(Some(&s), NOW, T, Some("fp-old"), None, "me"),
            Next::Use { .. }
        ));
    }

    #[test]
    fn a_lease_is_used_only_with_room_for_the_call_and_its_writes() {
        // The defaults: a 30 s lease, a 10 s call: 15 s must be left.
        let until = NOW + 30_000;
        assert!(lease_leaves_room(until, NOW, 10_000, 30_000));
        assert!(lease_leaves_room(until, NOW + 15_000, 10_000, 30_000));
        assert!(!lease_leaves_room(until, NOW + 15_001, 10_000, 30_000));
        assert!(!lease_leaves_room(until, until + 1, 10_000, 30_000));
        // A short lease asks three quarters of itself.
        assert!(lease_leaves_room(NOW + 5_000, NOW + 1_250, 2_000, 5_000));
        assert!(!lease_leaves_room(NOW + 5_000, NOW + 1_251, 2_000, 5_000));
        assert!(lease_leaves_room(NOW + 1_000, NOW, 4_000, 1_000));
    }

    #[test]
    fn a_spent_seed_is_never_taken_for_a_new_one() {
        let chain = |s: &State, seed: Option<&str>| {
            s.issued(
                NOW,
                "at".into(),
                Duration::from_secs(3600),
                Some("rt".into()),
                seed,
            )
        };
        // S1 starts a chain; its own later refreshes keep S1 as the seed.
        let s1 = chain(&State::default(), Some("fp-1"));
        let s1 = chain(&s1, None);
        assert_eq!(s1.seed.as_deref(), Some("fp-1"));
        assert!(s1.spent_seeds.is_empty());
        assert_eq!(s1.seed("fp-1"), Seed::Current);
        assert_eq!(s1.seed("fp-2"), Seed::New);
        // S2 (a re-authorisation) starts a new chain: S1 is spent.
        let s2 = chain(&s1, Some("fp-2"));
        assert_eq!(s2.seed.as_deref(), Some("fp-2"));
        assert_eq!(s2.spent_seeds, ["fp-1"]);
        assert_eq!(s2.seed("fp-2"), Seed::Current);
        assert_eq!(s2.seed("fp-1"), Seed::Spent);
        // A replica still configured with S1 uses the chain, due or not.
        assert!(matches!(
            State::next(Some(&s2), NOW, T, Some("fp-1"), None, "me"),
            Next::Use { .. }
        ));
        let due = State::next(Some(&s2), s2.expires_at, T, Some("fp-1"), None, "me");
        assert_eq!(
            due,
            Next::Refresh {
                why: Why::Expiring,
                mark_rejected: false
            }
        );
        // ... and its refresh, presenting the chain's token, keeps S2.
        let s2 = chain(&s2, None);
        assert_eq!(s2.seed.as_deref(), Some("fp-2"));
        assert_eq!(s2.spent_seeds, ["fp-1"]);
        // The list keeps the last SPENT_SEEDS, without repeats.
        let mut s = s2;
        for k in 3..20 {
            s = chain(&s, Some(&format!("fp-{k}")));
        }
        assert_eq!(s.spent_seeds.len(), SPENT_SEEDS);
        assert_eq!(s.spent_seeds.first().map(String::as_str), Some("fp-11"));
        assert_eq!(s.spent_seeds.last().map(String::as_str), Some("fp-18"));
        assert_eq!(s.seed("fp-19"), Seed::Current);
        assert_eq!(s.seed("fp-18"), Seed::Spent);
        // Forgotten beyond the bound: taken for new (the bound is the
        // limit of this protection).
        assert_eq!(s.seed("fp-1"), Seed::New);
        // An entry written before the list existed reads as none spent.
        let old: State = serde_json::from_str(r#"{"access_token":"a","seed":"fp-1"}"#).unwrap();
        assert!(old.spent_seeds.is_empty());
        assert_eq!(old.seed("fp-1"), Seed::Current);
    }

    #[test]
    fn debug_and_json_round_trip_show_no_token_in_debug() {
        let s = State {
            refresh_token: Some("rt-secret".into()),
            ..live(1_000)
        };
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("at-1") && !shown.contains("rt-secret"),
            "{shown}"
        );
        assert!(shown.contains("[redacted]"));
        let json = serde_json::to_vec(&s).unwrap();
        assert_eq!(serde_json::from_slice::<State>(&json).unwrap(), s);
        // Fields missing (written by an earlier version) take their defaults.
        let old: State = serde_json::from_str(r#"{"access_token":"a","expires_at":5}"#).unwrap();
        assert_eq!(old.expires_at, 5);
    }
}
