//! The per-client-address budget for unauthenticated work: requests
//! refused before their signature verified (401, 413, 408).
//!
//! Only refusals are charged, so a provider sending verified webhooks from
//! one address never draws on it, whatever its rate; an address that spent
//! its budget gets 429 for everything, before its body is read or any
//! signature checked, until the budget refills. Provider and account quotas
//! are drawn only after a signature verified (see `pipeline.rs`), so junk from
//! one address cannot make a provider's real webhooks answer 429.
//!
//! The budget is a GCRA token bucket per key (`per_second` sustained,
//! `burst` at once). A key is an IPv4 address, or an IPv6 /64 (one host
//! commonly holds a whole /64). Memory is bounded: an address is tracked
//! only once it was refused, [`ClientLimits::sweep`] forgets addresses whose
//! budget is full again (the same as never seen), and past
//! [`MAX_TRACKED`] addresses new ones are not tracked (fail open: the
//! provider's real traffic matters more than the CPU of a verification),
//! which `ingress_client_limit_overflows_total` counts.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use shared::config::RateLimit;

/// Addresses tracked at most (about 40 bytes each, so a few MB).
pub const MAX_TRACKED: usize = 100_000;

const SHARDS: usize = 16;

/// Per shard: key → the bucket's theoretical arrival time, in nanoseconds
/// since [`ClientLimits::epoch`]. An entry at or before now is a full
/// bucket, the same as no entry.
type Shard = HashMap<u128, u64>;

/// See the module header.
pub struct ClientLimits {
    /// Nanoseconds one refusal costs (`1 / per_second`).
    interval: u64,
    /// Nanoseconds of debt the bucket holds (`burst × interval`).
    tolerance: u64,
    shards: Vec<Mutex<Shard>>,
    /// Entries over all shards; 0 lets the request path skip the look-up.
    tracked: AtomicUsize,
    max_tracked: usize,
    epoch: Instant,
    hasher: std::hash::RandomState,
}

/// The key of an address: IPv4 (also when IPv4-mapped) or an IPv6 /64.
fn key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_bits()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(v4.to_bits()),
            // Keeps the /64; bit 32 marks IPv6 so it never equals an IPv4
            // key (below 2^32).
            None => (v6.to_bits() & !u128::from(u64::MAX)) | 1 << 32,
        },
    }
}

impl ClientLimits {
    pub fn new(limit: RateLimit) -> Self {
        Self::with_capacity(limit, MAX_TRACKED)
    }

    fn with_capacity(limit: RateLimit, max_tracked: usize) -> Self {
        let interval = 1_000_000_000 / u64::from(limit.per_second.max(1));
        ClientLimits {
            interval,
            tolerance: interval * u64::from(limit.burst.max(1)),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            tracked: AtomicUsize::new(0),
            max_tracked,
            epoch: Instant::now(),
            hasher: std::hash::RandomState::new(),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn shard(&self, key: u128) -> &Mutex<Shard> {
        let mut h = self.hasher.build_hasher();
        h.write_u128(key);
        &self.shards[h.finish() as usize % SHARDS]
    }

    /// `Err(wait)` when `ip` has spent its budget: refuse it unverified and
    /// tell it to come back after `wait`.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.check_at(ip, self.now())
    }

    fn check_at(&self, ip: IpAddr, now: u64) -> Result<(), Duration> {
        if self.tracked.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        let key = key(ip);
        let tat = self
            .shard(key)
            .lock()
            .expect("not poisoned")
            .get(&key)
            .copied();
        match tat {
            Some(tat) => self.conforms(tat, now),
            None => Ok(()),
        }
    }

    /// `Err(wait)` if charging one more refusal now would overdraw a bucket
    /// whose theoretical arrival time is `tat`.
    fn conforms(&self, tat: u64, now: u64) -> Result<(), Duration> {
        let next = tat.max(now) + self.interval;
        if next > now + self.tolerance {
            Err(Duration::from_nanos(next - now - self.tolerance))
        } else {
            Ok(())
        }
    }

    /// Charges one refusal to `ip`. Over budget it costs nothing more
    /// (GCRA's non-conforming requests are not counted), so an address
    /// flooding at any rate still gets `per_second` verifications a second.
    pub fn charge(&self, ip: IpAddr) -> ChargeOutcome {
        self.charge_at(ip, self.now())
    }

    fn charge_at(&self, ip: IpAddr, now: u64) -> ChargeOutcome {
        let key = key(ip);
        let mut shard = self.shard(key).lock().expect("not poisoned");
        match shard.get_mut(&key) {
            Some(tat) => {
                if self.conforms(*tat, now).is_ok() {
                    *tat = (*tat).max(now) + self.interval;
                }
                ChargeOutcome::Tracked
            }
            None => {
                // A sweep may have lowered the count since: only then is
                // there room again.
                if self.tracked.load(Ordering::Relaxed) >= self.max_tracked {
                    return ChargeOutcome::Overflow;
                }
                shard.insert(key, now + self.interval);
                self.tracked.fetch_add(1, Ordering::Relaxed);
                ChargeOutcome::Tracked
            }
        }
    }

    /// Forgets addresses whose budget is full again and gives the memory
    /// back; returns how many are still tracked. Run it every few seconds.
    pub fn sweep(&self) -> usize {
        self.sweep_at(self.now())
    }

    fn sweep_at(&self, now: u64) -> usize {
        let mut total = 0;
        for shard in &self.shards {
            let mut shard = shard.lock().expect("not poisoned");
            shard.retain(|_, tat| *tat > now);
            if shard.capacity() > 2 * shard.len() + 64 {
                shard.shrink_to_fit();
            }
            total += shard.len();
        }
        self.tracked.store(total, Ordering::Relaxed);
        total
    }
}

/// Whether a refusal could be charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeOutcome {
    Tracked,
    /// [`MAX_TRACKED`] addresses are tracked already: not charged.
    Overflow,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_gets_its_burst_then_per_second_refusals() {
        let l = ClientLimits::new(RateLimit {
            per_second: 1,
            burst: 3,
        });
        let a = ip("198.51.100.66");
        let t0 = 5 * SECOND;
        for _ in 0..3 {
            assert_eq!(l.check_at(a, t0), Ok(()));
            assert_eq!(l.charge_at(a, t0), ChargeOutcome::Tracked);
        }
        assert_eq!(l.check_at(a, t0), Err(Duration::from_secs(1)));
        // Charging while over budget does not push the wait further out.
        l.charge_at(a, t0);
        assert_eq!(
            l.check_at(a, t0 + SECOND / 2),
            Err(Duration::from_millis(500))
        );
        assert_eq!(l.check_at(a, t0 + SECOND), Ok(()));
        // Another address is not affected.
        assert_eq!(l.check_at(ip("192.0.2.10"), t0), Ok(()));
    }

    #[test]
    fn ipv6_addresses_share_their_64_and_mapped_v4_is_v4() {
        let l = ClientLimits::new(RateLimit {
            per_second: 1,
            burst: 1,
        });
        l.charge_at(ip("2001:db8:1:2::1"), 0);
        assert!(l.check_at(ip("2001:db8:1:2:ffff::9"), 0).is_err());
        assert!(l.check_at(ip("2001:db8:1:3::1"), 0).is_ok());
        l.charge_at(ip("192.0.2.1"), 0);
        assert!(l.check_at(ip("::ffff:192.0.2.1"), 0).is_err());
        assert!(l.check_at(ip("::c000:201"), 0).is_ok());
    }

    #[test]
    fn memory_is_bounded_and_given_back() {
        let l = ClientLimits::with_capacity(
            RateLimit {
                per_second: 1,
                burst: 1,
            },
            3,
        );
        for i in 1..=3 {
            assert_eq!(
                l.charge_at(ip(&format!("192.0.2.{i}")), 0),
                ChargeOutcome::Tracked
            );
        }
        // Full: a new address is not tracked, known ones still are.
        let new = ip("192.0.2.200");
        assert_eq!(l.charge_at(new, 0), ChargeOutcome::Overflow);
        assert!(l.check_at(new, 0).is_ok());
        assert_eq!(l.charge_at(ip("192.0.2.1"), 0), ChargeOutcome::Tracked);
        // Once their buckets are full again they are forgotten.
        assert_eq!(l.sweep_at(SECOND / 2), 3);
        assert_eq!(l.sweep_at(SECOND), 0);
        assert_eq!(l.charge_at(new, SECOND), ChargeOutcome::Tracked);
        assert!(l.check_at(new, SECOND).is_err());
    }
}
