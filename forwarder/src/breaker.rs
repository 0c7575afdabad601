//! A circuit breaker per tenant that holds requests instead of failing them.
//!
//! Closed: requests go through, and each result is counted in a sliding
//! window (`window`, kept as ten buckets). It opens on either of two rules:
//! - **failure rate**: at least `min_requests` in the window and a share of
//!   failures (5xx, 408, 429, refused, timeouts) of at least `failure_rate`.
//!   The share is looked at once per bucket (a tenth of the window), not
//!   after every request, so the first handful of results after a start
//!   cannot open it on a run of bad luck: at the rates where it matters
//!   the window holds hundreds of results when it is first looked at;
//! - **consecutive failures**: `failures` requests in a row that found the
//!   backend unreachable (refused connection, timeout, broken transport).
//!   Any answer, even a 503, resets that count: an answering backend is
//!   judged by the rate, a dead one by this count, quickly.
//!
//! Open: no request goes to the backend until `cooldown` has passed; callers
//! wait (the worker keeps their messages alive with in-progress acks, so
//! waiting spends no JetStream delivery). Then half-open: up to `probes`
//! requests go through; it closes (fresh window, waiters woken) once the
//! share of them that failed is sure to stay below `failure_rate`, and opens
//! again with the cooldown doubled (up to `max_cooldown`) once it is sure
//! not to. Results of requests sent before the breaker opened, or probes of
//! an earlier round, are not counted while it is open or half-open.
//!
//! Hand-written rather than a crate: the breakers on crates.io answer "not
//! permitted" and leave waiting to the caller; here waiting for the state to
//! change is the point, and it is a small state machine.

use std::sync::Mutex;
use std::time::Duration;

use shared::config::BreakerSettings;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How many buckets the window is kept in.
const BUCKETS: u32 = 10;

/// The observable state, for metrics (`0` closed, `1` open, `2` half-open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn as_gauge(self) -> i64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
        }
    }
}

/// Why the breaker opened: a bounded metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Closed, the window's failure share reached `failure_rate`.
    FailureRate,
    /// Closed, `failures` requests in a row found the backend unreachable.
    ConsecutiveFailures,
    /// Half-open, too many probes failed.
    ProbesFailed,
}

impl Reason {
    pub const ALL: [Reason; 3] = [
        Reason::FailureRate,
        Reason::ConsecutiveFailures,
        Reason::ProbesFailed,
    ];

    pub fn as_label(self) -> &'static str {
        match self {
            Reason::FailureRate => "failure_rate",
            Reason::ConsecutiveFailures => "consecutive_failures",
            Reason::ProbesFailed => "probes_failed",
        }
    }
}

/// A change a report caused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Opened(Reason),
    Closed,
}

/// What one request says about the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It answered and took the order or refused it for good (2xx, 409, a
    /// permanent 4xx): it is up.
    Success,
    /// It answered with a failure (5xx, 408, 429): it is struggling.
    Failed,
    /// It did not answer (refused connection, timeout): it may be down.
    Unreachable,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    index: u64,
    ok: u32,
    failed: u32,
}

/// Results over the last `window`, in [`BUCKETS`] buckets.
#[derive(Debug)]
struct Window {
    buckets: [Bucket; BUCKETS as usize],
    bucket_len: Duration,
    epoch: Instant,
    /// The last bucket in which the failure share was looked at.
    looked: u64,
}

impl Window {
    fn new(window: Duration, now: Instant) -> Window {
        Window {
            buckets: [Bucket::default(); BUCKETS as usize],
            bucket_len: window / BUCKETS,
            epoch: now,
            looked: 0,
        }
    }

    fn index(&self, now: Instant) -> u64 {
        let nanos = now.saturating_duration_since(self.epoch).as_nanos();
        (nanos / self.bucket_len.as_nanos().max(1)) as u64
    }

    fn record(&mut self, now: Instant, failed: bool) {
        let i = self.index(now);
        let b = &mut self.buckets[(i % u64::from(BUCKETS)) as usize];
        if b.index != i {
            *b = Bucket {
                index: i,
                ..Bucket::default()
            };
        }
        if failed {
            b.failed += 1;
        } else {
            b.ok += 1;
        }
    }

    /// Requests and failures in the window.
    fn totals(&self, now: Instant) -> (u32, u32) {
        let i = self.index(now);
        self.buckets
            .iter()
            .filter(|b| i.saturating_sub(b.index) < u64::from(BUCKETS))
            .fold((0, 0), |(n, f), b| (n + b.ok + b.failed, f + b.failed))
    }

    /// True once per bucket, from the second bucket on.
    fn due(&mut self, now: Instant) -> bool {
        let i = self.index(now);
        if i > self.looked {
            self.looked = i;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
enum Inner {
    Closed {
        window: Window,
        unreachable: u32,
    },
    Open {
        until: Instant,
        cooldown: Duration,
    },
    HalfOpen {
        round: u64,
        cooldown: Duration,
        admitted: u32,
        ok: u32,
        failed: u32,
    },
}

#[derive(Debug)]
struct Core {
    state: Inner,
    /// Half-open rounds so far, to tell a late probe of an earlier round.
    rounds: u64,
}

/// One tenant's breaker.
#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    core: Mutex<Core>,
    changed: Notify,
}

/// Leave to send one request; report how it went.
#[derive(Debug)]
#[must_use = "report the request's result"]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    /// The half-open round this permit probes in, if it is a probe.
    probe: Option<u64>,
    reported: bool,
}

impl Breaker {
    pub fn new(settings: BreakerSettings) -> Self {
        Breaker {
            settings,
            core: Mutex::new(Core {
                state: Inner::Closed {
                    window: Window::new(settings.window, Instant::now()),
                    unreachable: 0,
                },
                rounds: 0,
            }),
            changed: Notify::new(),
        }
    }

    pub fn state(&self) -> State {
        match self.core.lock().expect("breaker lock").state {
            Inner::Closed { .. } => State::Closed,
            Inner::Open { .. } => State::Open,
            Inner::HalfOpen { .. } => State::HalfOpen,
        }
    }

    /// A permit now, or the instant worth trying again.
    pub fn try_acquire(&self) -> Result<Permit<'_>, Instant> {
        let now = Instant::now();
        let mut core = self.core.lock().expect("breaker lock");
        let core = &mut *core;
        match &mut core.state {
            Inner::Closed { .. } => Ok(self.permit(None)),
            Inner::Open { until, cooldown } => {
                if now < *until {
                    return Err(*until);
                }
                core.rounds += 1;
                core.state = Inner::HalfOpen {
                    round: core.rounds,
                    cooldown: *cooldown,
                    admitted: 1,
                    ok: 0,
                    failed: 0,
                };
                Ok(self.permit(Some(core.rounds)))
            }
            Inner::HalfOpen {
                round, admitted, ..
            } => {
                if *admitted < self.settings.probes {
                    *admitted += 1;
                    Ok(self.permit(Some(*round)))
                } else {
                    // The probes are out: wait for their verdict (woken by
                    // `changed`), but look again soon in any case.
                    Err(now + Duration::from_millis(200))
                }
            }
        }
    }

    /// Waits for a permit until `deadline`; `None` if none came in time.
    pub async fn acquire_until(&self, deadline: Instant) -> Option<Permit<'_>> {
        loop {
            // Register for wake-ups before looking, so a change between the
            // look and the wait is not missed.
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.try_acquire() {
                Ok(p) => return Some(p),
                Err(retry_at) => {
                    if retry_at >= deadline && Instant::now() >= deadline {
                        return None;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep_until(retry_at.min(deadline)) => {}
                        _ = notified => {}
                    }
                    if Instant::now() >= deadline {
                        return self.try_acquire().ok();
                    }
                }
            }
        }
    }

    fn permit(&self, probe: Option<u64>) -> Permit<'_> {
        Permit {
            breaker: self,
            probe,
            reported: false,
        }
    }

    fn open(&self, now: Instant, cooldown: Duration) -> Inner {
        Inner::Open {
            until: now + cooldown,
            cooldown,
        }
    }

    fn report(&self, probe: Option<u64>, verdict: Verdict) -> Option<Change> {
        let now = Instant::now();
        let s = &self.settings;
        let mut core = self.core.lock().expect("breaker lock");
        let change = match &mut core.state {
            // Every result counts while closed, a late probe's too: it is
            // what the backend did.
            Inner::Closed {
                window,
                unreachable,
            } => {
                window.record(now, verdict != Verdict::Success);
                *unreachable = match verdict {
                    Verdict::Unreachable => *unreachable + 1,
                    Verdict::Success | Verdict::Failed => 0,
                };
                let reason = if *unreachable >= s.failures {
                    Some(Reason::ConsecutiveFailures)
                } else if verdict != Verdict::Success && window.due(now) {
                    let (n, failed) = window.totals(now);
                    (n >= s.min_requests && f64::from(failed) >= s.failure_rate * f64::from(n))
                        .then_some(Reason::FailureRate)
                } else {
                    None
                };
                reason.map(|r| {
                    core.state = self.open(now, s.cooldown);
                    Change::Opened(r)
                })
            }
            Inner::HalfOpen {
                round,
                cooldown,
                admitted,
                ok,
                failed,
            } if probe == Some(*round) => {
                if verdict == Verdict::Success {
                    *ok += 1;
                } else {
                    *failed += 1;
                }
                let limit = s.failure_rate * f64::from(s.probes);
                let outstanding = s.probes - *ok - *failed;
                if f64::from(*failed) >= limit {
                    let cooldown = (*cooldown * 2).min(s.max_cooldown);
                    core.state = self.open(now, cooldown);
                    Some(Change::Opened(Reason::ProbesFailed))
                } else if f64::from(*failed + outstanding) < limit {
                    core.state = Inner::Closed {
                        window: Window::new(s.window, now),
                        unreachable: 0,
                    };
                    Some(Change::Closed)
                } else {
                    // Undecided: this probe's slot goes to the next caller
                    // only if the round still needs it.
                    debug_assert!(*admitted <= s.probes);
                    None
                }
            }
            // A request sent before the breaker opened, or a probe of an
            // earlier round, answered late: the breaker has moved on.
            Inner::Open { .. } | Inner::HalfOpen { .. } => None,
        };
        drop(core);
        if change.is_some() {
            self.changed.notify_waiters();
        }
        change
    }

    /// A probe went without a verdict (shutdown): its slot is free again.
    fn abandon(&self, probe: u64) {
        let mut core = self.core.lock().expect("breaker lock");
        if let Inner::HalfOpen {
            round, admitted, ..
        } = &mut core.state
            && *round == probe
        {
            *admitted -= 1;
        }
        drop(core);
        self.changed.notify_waiters();
    }
}

impl Permit<'_> {
    /// Counts the result; says if it opened or closed the breaker.
    pub fn report(mut self, verdict: Verdict) -> Option<Change> {
        self.reported = true;
        self.breaker.report(self.probe, verdict)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        // A probe abandoned without a verdict must not leave the breaker
        // half-open with its slot taken.
        if let Some(round) = self.probe
            && !self.reported
        {
            self.breaker.abandon(round);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            failures: 3,
            failure_rate: 0.5,
            min_requests: 10,
            window: Duration::from_secs(10),
            probes: 3,
            cooldown: Duration::from_secs(10),
            max_cooldown: Duration::from_secs(25),
        }
    }

    fn report(b: &Breaker, v: Verdict) -> Option<Change> {
        b.try_acquire().expect("a permit").report(v)
    }

    fn open_by_unreachable(b: &Breaker) {
        for _ in 0..b.settings.failures {
            report(b, Verdict::Unreachable);
        }
        assert_eq!(b.state(), State::Open);
    }

    /// Takes every probe of a half-open round.
    fn probes(b: &Breaker) -> Vec<Permit<'_>> {
        let mut v = Vec::new();
        while let Ok(p) = b.try_acquire() {
            v.push(p);
        }
        v
    }

    #[tokio::test(start_paused = true)]
    async fn unreachable_in_a_row_opens_it_and_an_answer_resets_the_count() {
        let b = Breaker::new(settings());
        report(&b, Verdict::Unreachable);
        report(&b, Verdict::Unreachable);
        report(&b, Verdict::Failed);
        report(&b, Verdict::Unreachable);
        report(&b, Verdict::Unreachable);
        assert_eq!(b.state(), State::Closed, "a 503 is an answer");
        assert_eq!(
            report(&b, Verdict::Unreachable),
            Some(Change::Opened(Reason::ConsecutiveFailures))
        );
        assert_eq!(b.state(), State::Open);
        let retry_at = b.try_acquire().unwrap_err();
        assert_eq!(retry_at - Instant::now(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_share_at_the_rate_opens_it_when_the_window_is_looked_at() {
        let b = Breaker::new(settings());
        // Bucket 0: 5 ok, 5 failed answers (50%, 10 requests). Not looked
        // at within the first bucket.
        for _ in 0..5 {
            assert_eq!(report(&b, Verdict::Success), None);
            assert_eq!(report(&b, Verdict::Failed), None);
        }
        assert_eq!(b.state(), State::Closed);
        // The next bucket: the next failure looks at the window.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            report(&b, Verdict::Failed),
            Some(Change::Opened(Reason::FailureRate))
        );
        assert_eq!(b.state(), State::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn a_share_below_the_rate_or_too_few_requests_keep_it_closed() {
        let b = Breaker::new(settings());
        // 40% failed, 100 requests a second, for a minute.
        for _ in 0..600 {
            for k in 0..10 {
                let v = if k % 5 < 2 {
                    Verdict::Failed
                } else {
                    Verdict::Success
                };
                assert_eq!(report(&b, v), None);
            }
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        // Everything failing, but fewer than `min_requests` in the window.
        let b = Breaker::new(settings());
        for _ in 0..30 {
            tokio::time::advance(Duration::from_secs(2)).await;
            assert_eq!(report(&b, Verdict::Failed), None);
        }
        assert_eq!(b.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn results_older_than_the_window_are_forgotten() {
        let b = Breaker::new(settings());
        for _ in 0..9 {
            report(&b, Verdict::Failed);
        }
        // Twelve seconds on those nine are out of the window: one success
        // and eight failures are 9 requests, under `min_requests` (with the
        // old ones kept, the first look would have found 10 of 11 failed).
        tokio::time::advance(Duration::from_secs(12)).await;
        report(&b, Verdict::Success);
        for _ in 0..8 {
            assert_eq!(report(&b, Verdict::Failed), None);
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.state(), State::Closed);
        // A ninth failure, in the next bucket: 9 of 10.
        assert_eq!(
            report(&b, Verdict::Failed),
            Some(Change::Opened(Reason::FailureRate))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_closes_on_enough_good_probes() {
        let b = Breaker::new(settings());
        open_by_unreachable(&b);
        tokio::time::advance(Duration::from_secs(10)).await;
        let mut p = probes(&b);
        assert_eq!(p.len(), 3, "`probes` requests go through");
        assert_eq!(b.state(), State::HalfOpen);
        // 3 probes at 50%: one failure can still close it, two cannot.
        assert_eq!(p.pop().unwrap().report(Verdict::Failed), None);
        assert_eq!(p.pop().unwrap().report(Verdict::Success), None);
        assert_eq!(
            p.pop().unwrap().report(Verdict::Success),
            Some(Change::Closed)
        );
        assert_eq!(b.state(), State::Closed);
        assert!(b.try_acquire().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_decides_as_soon_as_the_outcome_is_sure() {
        let b = Breaker::new(settings());
        open_by_unreachable(&b);
        tokio::time::advance(Duration::from_secs(10)).await;
        let mut p = probes(&b);
        assert_eq!(p.pop().unwrap().report(Verdict::Unreachable), None);
        assert_eq!(
            p.pop().unwrap().report(Verdict::Failed),
            Some(Change::Opened(Reason::ProbesFailed))
        );
        // The third probe answers late: it belongs to a finished round.
        assert_eq!(p.pop().unwrap().report(Verdict::Success), None);
        assert_eq!(b.state(), State::Open);
        let until = b.try_acquire().unwrap_err();
        assert_eq!(until - Instant::now(), Duration::from_secs(20));

        // With one probe of three allowed to fail, two successes close it
        // before the third answers; its late failure counts as a closed
        // breaker's result.
        tokio::time::advance(Duration::from_secs(20)).await;
        let mut p = probes(&b);
        p.pop().unwrap().report(Verdict::Success);
        assert_eq!(
            p.pop().unwrap().report(Verdict::Success),
            Some(Change::Closed)
        );
        assert_eq!(p.pop().unwrap().report(Verdict::Unreachable), None);
        assert_eq!(b.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_rounds_double_the_cooldown_up_to_the_cap() {
        let b = Breaker::new(settings());
        open_by_unreachable(&b);
        let mut waits = Vec::new();
        for _ in 0..3 {
            let until = b.try_acquire().unwrap_err();
            waits.push((until - Instant::now()).as_secs());
            tokio::time::advance(until - Instant::now()).await;
            for p in probes(&b) {
                p.report(Verdict::Unreachable);
            }
        }
        assert_eq!(waits, [10, 20, 25]);
    }

    #[tokio::test(start_paused = true)]
    async fn late_results_do_not_count_while_open() {
        let b = Breaker::new(settings());
        let early = b.try_acquire().unwrap();
        open_by_unreachable(&b);
        // Sent before the breaker opened; says nothing about the probes.
        assert_eq!(early.report(Verdict::Success), None);
        assert_eq!(b.state(), State::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_released_when_the_probes_close_it() {
        let b = std::sync::Arc::new(Breaker::new(settings()));
        open_by_unreachable(&b);
        let far = Instant::now() + Duration::from_secs(3600);
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move {
                b.acquire_until(far)
                    .await
                    .map(|p| p.report(Verdict::Success))
                    .is_some()
            })
        };
        tokio::time::advance(Duration::from_secs(10)).await;
        // The waiter may have woken at the end of the cooldown and taken a
        // probe; the test takes the rest and answers them.
        tokio::task::yield_now().await;
        for p in probes(&b) {
            p.report(Verdict::Success);
        }
        assert!(waiter.await.unwrap());
        assert_eq!(b.state(), State::Closed);
        // A deadline before the breaker reopens: no permit.
        open_by_unreachable(&b);
        let soon = Instant::now() + Duration::from_secs(1);
        assert!(b.acquire_until(soon).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_frees_its_slot() {
        let b = Breaker::new(settings());
        open_by_unreachable(&b);
        tokio::time::advance(Duration::from_secs(10)).await;
        let mut p = probes(&b);
        assert!(b.try_acquire().is_err());
        drop(p.pop());
        let again = b.try_acquire().expect("the slot is free");
        drop(again);
        drop(p);
        assert_eq!(probes(&b).len(), 3);
    }
}
