//! Per-identity rate limits on the ledger's write endpoints (token buckets), so one
//! certificate holder can neither flood the log nor starve the other agents. Limits are
//! configured per tenant; callers of unconfigured tenants get a small fixed allowance,
//! enough to record that they tried.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

use attestor_net::tls::AgentIdentity;

/// A token bucket's settings: a steady rate and the burst a quiet caller may spend at once.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteLimit {
    /// Requests per second, sustained.
    pub per_second: f64,
    /// Requests allowed at once after a quiet period.
    pub burst: u32,
}

impl WriteLimit {
    /// What an agent of a configured tenant gets unless its tenant says otherwise: ample
    /// for a heartbeat (two requests per interval) and for emptying a spool after an
    /// outage, far below what it takes to flood the log.
    pub const DEFAULT: WriteLimit = WriteLimit {
        per_second: 10.0,
        burst: 60,
    };

    /// Callers of tenants this ledger does not know: enough to be told so.
    pub const UNKNOWN_TENANT: WriteLimit = WriteLimit {
        per_second: 0.1,
        burst: 5,
    };

    /// How often a caller that is not an enrolled agent may have its refusal recorded in
    /// the log (as a summary): the record says it tried, the count in the metrics says
    /// how often.
    pub const STRANGER_RECORDS: WriteLimit = WriteLimit {
        per_second: 1.0 / 60.0,
        burst: 2,
    };

    /// Whether the settings can be used: a positive, finite rate and a burst of at least 1.
    pub fn is_usable(&self) -> bool {
        self.per_second.is_finite() && self.per_second > 0.0 && self.burst >= 1
    }
}

impl Default for WriteLimit {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets above this many are pruned of those that are full again (idle callers).
const PRUNE_ABOVE: usize = 100_000;

/// Token buckets by caller identity.
#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<AgentIdentity, Bucket>>,
}

impl RateLimiter {
    /// Takes one token of `who`'s bucket under `limit`; `Err(wait)` when there is none,
    /// with how long until there is.
    pub fn admit(&self, who: &AgentIdentity, limit: WriteLimit) -> Result<(), Duration> {
        self.admit_at(who, limit, Instant::now())
    }

    fn admit_at(
        &self,
        who: &AgentIdentity,
        limit: WriteLimit,
        now: Instant,
    ) -> Result<(), Duration> {
        let burst = f64::from(limit.burst.max(1));
        let rate = limit.per_second.max(f64::MIN_POSITIVE);
        let refill = |b: &Bucket| {
            let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
            (b.tokens + elapsed * rate).min(burst)
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            buckets.retain(|_, b| refill(b) < burst);
        }
        let bucket = buckets.entry(who.clone()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let tokens = refill(bucket);
        *bucket = Bucket { tokens, at: now };
        if tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_spent_then_the_rate_refills_it_per_caller() {
        let limiter = RateLimiter::default();
        let limit = WriteLimit {
            per_second: 2.0,
            burst: 3,
        };
        let a = AgentIdentity::new("t", "a").unwrap();
        let b = AgentIdentity::new("u", "a").unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.admit_at(&a, limit, t0).is_ok());
        }
        let wait = limiter.admit_at(&a, limit, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(limiter.admit_at(&b, limit, t0).is_ok(), "another identity");
        assert!(limiter
            .admit_at(&a, limit, t0 + Duration::from_millis(500))
            .is_ok());
        assert!(limiter
            .admit_at(&a, limit, t0 + Duration::from_millis(500))
            .is_err());
        // A long pause refills only up to the burst.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(limiter.admit_at(&a, limit, later).is_ok());
        }
        assert!(limiter.admit_at(&a, limit, later).is_err());
    }

    #[test]
    fn unusable_settings_are_recognised() {
        assert!(WriteLimit::DEFAULT.is_usable());
        assert!(WriteLimit::STRANGER_RECORDS.is_usable());
        for bad in [
            (0.0, 1),
            (f64::NAN, 1),
            (f64::INFINITY, 1),
            (1.0, 0),
            (-1.0, 3),
        ] {
            let limit = WriteLimit {
                per_second: bad.0,
                burst: bad.1,
            };
            assert!(!limit.is_usable(), "{limit:?}");
        }
    }
}
