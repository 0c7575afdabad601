//! A circuit breaker per tenant that holds requests instead of failing them.
//!
//! Closed: requests go through; `failures` transient failures in a row open
//! it. Open: no request goes to the backend until `cooldown` has passed;
//! callers wait (the worker keeps their messages alive with in-progress
//! acks, so waiting spends no JetStream delivery). Then half-open: one probe
//! at a time; success closes it and wakes every waiter, failure opens it
//! again with the cooldown doubled (up to `max_cooldown`).
//!
//! Hand-written rather than a crate: the breakers on crates.io answer "not
//! permitted" and leave waiting to the caller; here waiting for the state to
//! change is the point, and it is a small state machine.

use std::sync::Mutex;
use std::time::Duration;

use shared::config::BreakerSettings;
use tokio::sync::Notify;
use tokio::time::Instant;

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

#[derive(Debug)]
enum Inner {
    Closed { failures: u32 },
    Open { until: Instant, cooldown: Duration },
    HalfOpen { probing: bool, cooldown: Duration },
}

/// One tenant's breaker.
#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    inner: Mutex<Inner>,
    changed: Notify,
}

/// Leave to send one request; report how it went.
#[derive(Debug)]
#[must_use = "report the request's result"]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    reported: bool,
}

/// What one request says about the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It answered (2xx, 409, or a permanent 4xx): it is up.
    Up,
    /// Timeout, refused connection, 5xx, 408, 429: it is struggling.
    Down,
}

impl Breaker {
    pub fn new(settings: BreakerSettings) -> Self {
        Breaker {
            settings,
            inner: Mutex::new(Inner::Closed { failures: 0 }),
            changed: Notify::new(),
        }
    }

    pub fn state(&self) -> State {
        match *self.inner.lock().expect("breaker lock") {
            Inner::Closed { .. } => State::Closed,
            Inner::Open { .. } => State::Open,
            Inner::HalfOpen { .. } => State::HalfOpen,
        }
    }

    /// A permit now, or the instant worth trying again.
    pub fn try_acquire(&self) -> Result<Permit<'_>, Instant> {
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("breaker lock");
        match &mut *inner {
            Inner::Closed { .. } => Ok(self.permit(false)),
            Inner::Open { until, cooldown } => {
                if now < *until {
                    return Err(*until);
                }
                *inner = Inner::HalfOpen {
                    probing: true,
                    cooldown: *cooldown,
                };
                Ok(self.permit(true))
            }
            Inner::HalfOpen { probing, .. } => {
                if *probing {
                    // Someone is probing: wait for the verdict (woken by
                    // `changed`), but look again soon in any case.
                    Err(now + Duration::from_millis(200))
                } else {
                    *probing = true;
                    Ok(self.permit(true))
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

    fn permit(&self, probe: bool) -> Permit<'_> {
        Permit {
            breaker: self,
            probe,
            reported: false,
        }
    }

    fn report(&self, probe: bool, verdict: Verdict) {
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("breaker lock");
        let next = match (&*inner, verdict) {
            (_, Verdict::Up) => Inner::Closed { failures: 0 },
            (Inner::Closed { failures }, Verdict::Down) => {
                let failures = failures + 1;
                if failures >= self.settings.failures {
                    Inner::Open {
                        until: now + self.settings.cooldown,
                        cooldown: self.settings.cooldown,
                    }
                } else {
                    Inner::Closed { failures }
                }
            }
            (Inner::HalfOpen { cooldown, .. }, Verdict::Down) if probe => {
                let cooldown = (*cooldown * 2).min(self.settings.max_cooldown);
                Inner::Open {
                    until: now + cooldown,
                    cooldown,
                }
            }
            // A request sent before the breaker opened failed late: the
            // breaker already knows.
            (Inner::Open { .. } | Inner::HalfOpen { .. }, Verdict::Down) => return,
        };
        *inner = next;
        drop(inner);
        self.changed.notify_waiters();
    }
}

impl Permit<'_> {
    pub fn report(mut self, verdict: Verdict) {
        self.reported = true;
        self.breaker.report(self.probe, verdict);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        // A probe abandoned without a verdict (shutdown) must not leave the
        // breaker half-open with nobody probing.
        if self.probe && !self.reported {
            let mut inner = self.breaker.inner.lock().expect("breaker lock");
            if let Inner::HalfOpen { probing, .. } = &mut *inner {
                *probing = false;
            }
            drop(inner);
            self.breaker.changed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            failures: 3,
            cooldown: Duration::from_secs(10),
            max_cooldown: Duration::from_secs(25),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_and_closes_after_a_good_probe() {
        let b = Breaker::new(settings());
        b.try_acquire().unwrap().report(Verdict::Down);
        b.try_acquire().unwrap().report(Verdict::Down);
        b.try_acquire().unwrap().report(Verdict::Up);
        assert_eq!(b.state(), State::Closed, "a success resets the count");
        for _ in 0..3 {
            b.try_acquire().unwrap().report(Verdict::Down);
        }
        assert_eq!(b.state(), State::Open);
        let retry_at = b.try_acquire().unwrap_err();
        assert_eq!(retry_at - Instant::now(), Duration::from_secs(10));

        tokio::time::advance(Duration::from_secs(10)).await;
        let probe = b.try_acquire().unwrap();
        assert_eq!(b.state(), State::HalfOpen);
        assert!(b.try_acquire().is_err(), "one probe at a time");
        probe.report(Verdict::Up);
        assert_eq!(b.state(), State::Closed);
        assert!(b.try_acquire().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_doubles_the_cooldown_up_to_the_cap() {
        let b = Breaker::new(settings());
        for _ in 0..3 {
            b.try_acquire().unwrap().report(Verdict::Down);
        }
        let mut waits = Vec::new();
        for _ in 0..3 {
            let until = b.try_acquire().unwrap_err();
            waits.push((until - Instant::now()).as_secs());
            tokio::time::advance(until - Instant::now()).await;
            b.try_acquire().unwrap().report(Verdict::Down);
        }
        assert_eq!(waits, [10, 20, 25]);
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_released_when_a_probe_succeeds() {
        let b = std::sync::Arc::new(Breaker::new(settings()));
        for _ in 0..3 {
            b.try_acquire().unwrap().report(Verdict::Down);
        }
        let far = Instant::now() + Duration::from_secs(3600);
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move {
                b.acquire_until(far)
                    .await
                    .map(|p| p.report(Verdict::Up))
                    .is_some()
            })
        };
        tokio::time::advance(Duration::from_secs(10)).await;
        let probe = b.try_acquire().unwrap();
        probe.report(Verdict::Up);
        assert!(waiter.await.unwrap());
        // A deadline before the breaker reopens: no permit.
        for _ in 0..3 {
            b.try_acquire().unwrap().report(Verdict::Down);
        }
        let soon = Instant::now() + Duration::from_secs(1);
        assert!(b.acquire_until(soon).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_lets_the_next_caller_probe() {
        let b = Breaker::new(settings());
        for _ in 0..3 {
            b.try_acquire().unwrap().report(Verdict::Down);
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        drop(b.try_acquire().unwrap());
        assert!(b.try_acquire().is_ok());
    }
}
