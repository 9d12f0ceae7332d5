//! Per-key rate limits: each API key may send `per_sec` requests a second, with bursts of
//! `burst`; beyond, requests are answered 429 `rate_limited` with `Retry-After` (the seconds
//! until the key may send again), before their body is read. A GCRA limiter (`governor`)
//! keyed by the key's hash: only configured keys reach it, so its memory is bounded by them.

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

/// A per-key rate limit's settings (`per_sec = 0`: no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests a second each key may send on average (0: unlimited).
    pub per_sec: u32,
    /// Requests a key may send at once above the average (at least 1).
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig { per_sec: 0, burst: 1 }
    }
}

impl RateLimitConfig {
    /// A limit of `per_sec` requests a second with bursts of `burst`.
    pub fn new(per_sec: u32, burst: u32) -> Self {
        RateLimitConfig { per_sec, burst }
    }

    /// A readable reason when the settings make no sense.
    pub fn check(&self) -> Result<(), String> {
        if self.per_sec > 0 && self.burst == 0 {
            return Err("burst must be at least 1 when per_sec is set".into());
        }
        Ok(())
    }

    /// The limiter, or `None` when unlimited.
    pub fn limiter(&self) -> Option<KeyRateLimit> {
        let per_sec = NonZeroU32::new(self.per_sec)?;
        let burst = NonZeroU32::new(self.burst).unwrap_or(per_sec);
        Some(KeyRateLimit { limiter: RateLimiter::keyed(Quota::per_second(per_sec).allow_burst(burst)), clock: DefaultClock::default() })
    }
}

/// The per-key limiter.
pub struct KeyRateLimit {
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl std::fmt::Debug for KeyRateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRateLimit").finish_non_exhaustive()
    }
}

impl KeyRateLimit {
    /// Takes one request of `key`'s allowance (a key's hash, as [`crate::auth::ApiKeys::check_key`]
    /// gives it): `Ok`, or the whole seconds to wait (at least 1).
    #[allow(clippy::ptr_arg)] // the keyed limiter looks up &K, K = String: no copy of the key
    pub fn check(&self, key: &String) -> Result<(), u64> {
        // Only configured keys get here, so the map of keys stays bounded.
        match self.limiter.check_key(key) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Err((wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_burst_then_waits_and_keys_are_apart() {
        let limit = RateLimitConfig::new(1, 3).limiter().expect("limited");
        let (a, b) = ("a".to_owned(), "b".to_owned());
        for _ in 0..3 {
            assert_eq!(limit.check(&a), Ok(()));
        }
        assert_eq!(limit.check(&a), Err(1), "the fourth request at once waits about a second");
        assert_eq!(limit.check(&b), Ok(()), "another key has its own allowance");
        assert!(RateLimitConfig::default().limiter().is_none());
        assert!(RateLimitConfig::new(5, 0).check().is_err());
    }
}
