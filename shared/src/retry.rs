//! The redelivery schedule: how long JetStream waits before delivery n+1 of a
//! message whose delivery n failed.
//!
//! The schedule is a list (`["1m", "5m", ...]`, the last step repeating), not
//! a geometric series, because operators think in such steps and the old
//! service used them. It is the one source of redelivery delays: the workers
//! NAK with [`RetrySchedule::delay_after`], and nothing retries a message
//! in-process (infrastructure retries, such as connecting or a failed pull,
//! use [`crate::backoff`]). Jitter is derived from the message's identity
//! rather than a random source: a burst of failures still spreads out, and a
//! test can predict every delay.

use std::time::Duration;

/// A validated redelivery schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
    max_deliver: i64,
    jitter: f64,
    max_hint: Duration,
}

/// A schedule that cannot work; `field` is the key under `[retry]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleError {
    pub field: &'static str,
    pub message: String,
}

impl RetrySchedule {
    /// `delays[k]` is the wait before delivery k+2; the last one repeats.
    /// `max_hint` bounds a `Retry-After` hint (default: an hour, or the
    /// longest delay if that is longer), so a backend cannot park an order
    /// for a week.
    pub fn new(
        delays: Vec<Duration>,
        max_deliver: i64,
        jitter: f64,
        max_hint: Option<Duration>,
    ) -> Result<Self, ScheduleError> {
        if max_deliver < 1 {
            return Err(ScheduleError {
                field: "max_deliver",
                message: "must be at least 1".into(),
            });
        }
        if delays.is_empty() {
            return Err(ScheduleError {
                field: "schedule",
                message: "needs at least one delay".into(),
            });
        }
        if let Some(k) = delays.iter().position(|d| d.is_zero()) {
            return Err(ScheduleError {
                field: "schedule",
                message: format!(
                    "step {k} is zero: a zero delay redelivers at once and burns the budget"
                ),
            });
        }
        if !(0.0..=0.5).contains(&jitter) {
            return Err(ScheduleError {
                field: "jitter",
                message: format!("{jitter} is outside 0 to 0.5"),
            });
        }
        let longest = delays.iter().copied().max().unwrap_or_default();
        Ok(RetrySchedule {
            delays,
            max_deliver,
            jitter,
            max_hint: max_hint.unwrap_or(longest.max(Duration::from_secs(3600))),
        })
    }

    /// The configured steps, without jitter.
    pub fn delays(&self) -> &[Duration] {
        &self.delays
    }

    /// Deliveries in all, the first included (JetStream's `max_deliver`).
    pub fn max_deliver(&self) -> i64 {
        self.max_deliver
    }

    /// True when `delivered` (1-based) is the last allowed delivery.
    pub fn is_last(&self, delivered: i64) -> bool {
        delivered >= self.max_deliver
    }

    /// The delay before the delivery after `delivered` (1-based), for the
    /// message identified by `seed` (its stream sequence), honouring a
    /// `Retry-After` hint within `max_hint`.
    pub fn delay_after(&self, delivered: i64, seed: u64, hint: Option<Duration>) -> Duration {
        let idx = usize::try_from(delivered.max(1) - 1).unwrap_or(usize::MAX);
        let base = self.delays[idx.min(self.delays.len() - 1)];
        let jittered = if self.jitter > 0.0 {
            // A value in [-1, 1) from the seed and attempt: spread, yet reproducible.
            let r = splitmix64(seed ^ (delivered as u64).rotate_left(32));
            let unit = (r >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
            base.mul_f64(1.0 + self.jitter * unit)
        } else {
            base
        };
        match hint {
            Some(h) => jittered.max(h.min(self.max_hint)),
            None => jittered,
        }
    }

    /// The whole schedule without jitter, one entry per retry
    /// (`max_deliver - 1` in all).
    pub fn backoff(&self) -> ScheduleBackoff {
        ScheduleBackoff {
            delays: self.delays.clone(),
            next: 0,
            remaining: usize::try_from(self.max_deliver - 1).unwrap_or(0),
        }
    }

    /// The longest time from the first delivery to the last one, assuming
    /// each handler run is instant: the horizon within which a redelivery can
    /// re-publish downstream. Stream duplicate windows are checked against it.
    pub fn horizon(&self) -> Duration {
        self.backoff().sum()
    }
}

/// Iterator over the schedule's delays, the last one repeating.
#[derive(Debug, Clone)]
pub struct ScheduleBackoff {
    delays: Vec<Duration>,
    next: usize,
    remaining: usize,
}

impl Iterator for ScheduleBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let d = self.delays[self.next.min(self.delays.len() - 1)];
        self.next += 1;
        Some(d)
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn the_last_step_repeats_and_max_deliver_bounds_it() {
        let s = RetrySchedule::new(vec![ms(10), ms(50)], 4, 0.0, None).unwrap();
        assert_eq!(s.delay_after(1, 7, None), ms(10));
        assert_eq!(s.delay_after(2, 7, None), ms(50));
        assert_eq!(s.delay_after(3, 7, None), ms(50));
        assert_eq!(s.backoff().collect::<Vec<_>>(), [ms(10), ms(50), ms(50)]);
        assert_eq!(s.horizon(), ms(110));
        assert!(!s.is_last(3));
        assert!(s.is_last(4));
    }

    #[test]
    fn a_hint_raises_the_delay_within_the_bound() {
        let s = RetrySchedule::new(vec![ms(10)], 5, 0.0, Some(ms(300))).unwrap();
        assert_eq!(s.delay_after(1, 0, Some(ms(200))), ms(200));
        assert_eq!(s.delay_after(1, 0, Some(ms(900))), ms(300));
        assert_eq!(s.delay_after(1, 0, Some(ms(1))), ms(10));
    }

    #[test]
    fn hints_are_bounded_by_an_hour_unless_configured() {
        let s = RetrySchedule::new(vec![ms(100)], 5, 0.0, None).unwrap();
        assert_eq!(s.delay_after(1, 0, Some(ms(2000))), ms(2000));
        assert_eq!(
            s.delay_after(1, 0, Some(Duration::from_secs(7 * 86400))),
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn jitter_stays_within_its_fraction_and_is_reproducible() {
        let s = RetrySchedule::new(vec![ms(1000)], 10, 0.2, None).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for seq in 0..200 {
            let d = s.delay_after(1, seq, None);
            assert!(d >= ms(800) && d <= ms(1200), "{d:?}");
            assert_eq!(d, s.delay_after(1, seq, None));
            seen.insert(d);
        }
        assert!(seen.len() > 100, "jitter barely varies: {}", seen.len());
    }

    #[test]
    fn unusable_schedules_are_refused() {
        assert_eq!(
            RetrySchedule::new(vec![], 3, 0.0, None).unwrap_err().field,
            "schedule"
        );
        assert_eq!(
            RetrySchedule::new(vec![ms(0)], 3, 0.0, None)
                .unwrap_err()
                .field,
            "schedule"
        );
        assert_eq!(
            RetrySchedule::new(vec![ms(1)], 0, 0.0, None)
                .unwrap_err()
                .field,
            "max_deliver"
        );
        assert_eq!(
            RetrySchedule::new(vec![ms(1)], 3, 0.9, None)
                .unwrap_err()
                .field,
            "jitter"
        );
    }
}
