//! Retry decisions: how a response is classified, how long to wait before the next attempt, and when to
//! give up. Pure functions over status, headers, body and a clock reading, so each rule is tested without
//! a server.
//!
//! This module owns the default classification and the per-kind [`Classifier`] hook that maps vendor
//! throttle signals onto it; it does not send requests or sleep (that is `mod.rs`, through a `Clock`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;

/// How a non-success response is to be treated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classified {
    /// Throttled; wait `retry_after` if the vendor said, else back off.
    RateLimited { retry_after: Option<Duration> },
    /// A quota that will not refill within this run (HubSpot's daily limit): stop now, try a later run.
    QuotaExhausted { reason: String },
    /// Worth retrying: 5xx, 408.
    Transient,
    /// Credentials refused (401/403 that are not throttling).
    Auth,
    /// The request itself is wrong; retrying cannot help.
    Permanent,
}

/// A per-kind override: return `Some` to decide, `None` to fall back to [`default_classify`].
/// Called only for non-2xx responses.
pub type Classifier = fn(StatusCode, &HeaderMap, &[u8], DateTime<Utc>) -> Option<Classified>;

/// The vendor-neutral rules: 429 → rate limited (honouring `Retry-After`), 503 → transient (honouring
/// `Retry-After` through [`retry_after`] in the engine), 408 and 5xx → transient, 401/403 → auth, other
/// 4xx → permanent.
pub fn default_classify(status: StatusCode, headers: &HeaderMap, now: DateTime<Utc>) -> Classified {
    match status.as_u16() {
        429 => Classified::RateLimited {
            retry_after: retry_after(headers, now),
        },
        408 => Classified::Transient,
        401 | 403 => Classified::Auth,
        s if (500..600).contains(&s) => Classified::Transient,
        _ => Classified::Permanent,
    }
}

/// Parses `Retry-After` as delta-seconds or an HTTP-date (RFC 7231 IMF-fixdate, which RFC 2822 parsing
/// accepts). A date in the past means "now" (zero).
pub fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    parse_retry_after(value, now)
}

pub(crate) fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(Duration::from_secs_f64(secs));
        }
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// Attempt and wait limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts including the first.
    pub max_attempts: u32,
    /// The first backoff ceiling; doubles per retry.
    pub base_delay: Duration,
    /// The largest single backoff ceiling.
    pub max_delay: Duration,
    /// The most the engine waits across all retries of one request. A `Retry-After` longer than what is
    /// left ends the retries: the caller gets `RateLimited` and decides (a later run, the outbox).
    pub max_total_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_total_wait: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// Full-jitter exponential backoff (AWS architecture blog): uniform in `[0, min(max, base * 2^retry)]`,
    /// where `retry` counts from 0 for the first retry.
    pub fn backoff(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(retry.min(30)))
            .min(self.max_delay);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.gen_range(0..=nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use reqwest::header::HeaderValue;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
    }

    #[test]
    fn retry_after_seconds_and_http_date() {
        assert_eq!(parse_retry_after("7", now()), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Mon, 23 Nov 2026 12:00:30 GMT", now()),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Mon, 23 Nov 2026 11:00:00 GMT", now()),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now()), None);
    }

    #[test]
    fn default_classification() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        let c =
            |s: u16, h: &HeaderMap| default_classify(StatusCode::from_u16(s).unwrap(), h, now());
        assert_eq!(
            c(429, &h),
            Classified::RateLimited {
                retry_after: Some(Duration::from_secs(3))
            }
        );
        let none = HeaderMap::new();
        assert_eq!(c(429, &none), Classified::RateLimited { retry_after: None });
        assert_eq!(c(408, &none), Classified::Transient);
        assert_eq!(c(500, &none), Classified::Transient);
        assert_eq!(c(503, &none), Classified::Transient);
        assert_eq!(c(401, &none), Classified::Auth);
        assert_eq!(c(403, &none), Classified::Auth);
        assert_eq!(c(400, &none), Classified::Permanent);
        assert_eq!(c(404, &none), Classified::Permanent);
        assert_eq!(c(409, &none), Classified::Permanent);
    }

    #[test]
    fn backoff_is_jittered_under_a_growing_ceiling() {
        use rand::SeedableRng;
        let p = RetryPolicy::default();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        for retry in 0..12 {
            let ceiling =
                (Duration::from_millis(500) * 2u32.pow(retry)).min(Duration::from_secs(30));
            let waits: Vec<Duration> = (0..50).map(|_| p.backoff(retry, &mut rng)).collect();
            assert!(
                waits.iter().all(|w| *w <= ceiling),
                "retry {retry}: {waits:?}"
            );
            assert!(
                waits.iter().any(|w| *w != waits[0]),
                "retry {retry}: no jitter"
            );
        }
    }
}
