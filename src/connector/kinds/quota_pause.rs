//! Pre-throttling from a vendor's remaining-quota headers: when a response says the quota is spent
//! (`remaining` 0) and when it refills, the kind's next request waits until then instead of spending a
//! request on a certain 429. Used by the kinds whose vendors send both numbers (Intercom's
//! `X-RateLimit-Remaining`/`X-RateLimit-Reset`, Zendesk's `ratelimit-remaining`/`ratelimit-reset`).
//!
//! This owns only the pause; parsing each vendor's headers stays in its kind, and 429 handling stays in the
//! HTTP engine. Waits go through the client's [`Clock`], so tests run on a manual clock.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::http::Clock;

/// A refill time further away than this is not waited for here (a wrong header must not stall a run);
/// the engine's 429 handling still applies.
const MAX_PAUSE: Duration = Duration::from_secs(300);

#[derive(Debug, Default)]
pub struct QuotaPause {
    until: Mutex<Option<DateTime<Utc>>>,
}

impl QuotaPause {
    /// Records what a response said: with `remaining` 0, no request before `refill`.
    pub fn observe(&self, remaining: Option<u64>, refill: Option<DateTime<Utc>>) {
        if let (Some(0), Some(at)) = (remaining, refill) {
            if let Ok(mut u) = self.until.lock() {
                *u = Some(u.map_or(at, |prev| prev.max(at)));
            }
        }
    }

    /// Waits until a recorded refill time has passed (at most [`MAX_PAUSE`]), then forgets it.
    pub async fn wait(&self, clock: &dyn Clock) {
        let until = self.until.lock().ok().and_then(|mut u| u.take());
        let Some(at) = until else {
            return;
        };
        let wait = (at - clock.now()).to_std().unwrap_or(Duration::ZERO);
        if wait > MAX_PAUSE {
            tracing::debug!(
                wait_secs = wait.as_secs(),
                "quota refill too far away; not pausing"
            );
            return;
        }
        if !wait.is_zero() {
            tracing::debug!(wait_ms = wait.as_millis() as u64, "quota spent; pausing");
            clock.sleep(wait).await;
        }
    }
}

/// A header as an unsigned integer.
pub fn header_u64(headers: &reqwest::header::HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::testing::manual_clock;

    #[tokio::test]
    async fn waits_only_when_spent_and_only_once() {
        let clock = manual_clock();
        let now = clock.now();
        let p = QuotaPause::default();
        p.observe(Some(3), Some(now + chrono::Duration::seconds(9)));
        p.wait(clock.as_ref()).await;
        assert!(clock.sleeps().is_empty(), "quota left: no pause");
        p.observe(Some(0), Some(now + chrono::Duration::seconds(9)));
        p.wait(clock.as_ref()).await;
        p.wait(clock.as_ref()).await;
        assert_eq!(clock.sleeps(), [Duration::from_secs(9)]);
        p.observe(Some(0), Some(clock.now() + chrono::Duration::hours(2)));
        p.wait(clock.as_ref()).await;
        assert_eq!(
            clock.sleeps().len(),
            1,
            "an absurd refill time is not waited for"
        );
    }
}
