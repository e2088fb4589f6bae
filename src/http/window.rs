//! The rolling-window guard: never more than N requests in any window of W, for the connector's configured
//! quota and for the quota the vendor itself reports in its response headers (HubSpot's
//! `X-HubSpot-RateLimit-Max` per `X-HubSpot-RateLimit-Interval-Milliseconds`).
//!
//! Why it exists next to governor: governor's GCRA with a burst of N lets up to 2N - 1 requests through in one
//! rolling window (a full burst, then one every W/N while the bucket refills), and vendors such as HubSpot
//! count a rolling window, so a client that honours its quota with GCRA alone still gets 429s. The guard
//! keeps the send time of every request within the longest window and waits until the oldest leaves it,
//! plus a margin of 2% of the window for the latency difference between our clock and the vendor's arrival
//! time. A vendor-reported quota replaces the configured guess for that window (the vendor is the authority);
//! the configured quota stays enforced too. This module does not sleep: it says how long to wait.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Requests allowed per rolling window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowQuota {
    pub requests: u32,
    pub window: Duration,
}

/// Reads the vendor's own quota from a response's headers, when the vendor sends it.
pub type QuotaReader = fn(&reqwest::header::HeaderMap) -> Option<WindowQuota>;

/// Send times within the longest window, and the quotas they are checked against.
#[derive(Debug)]
pub(crate) struct SendLog {
    configured: Option<WindowQuota>,
    vendor: Option<WindowQuota>,
    sent: VecDeque<DateTime<Utc>>,
}

impl SendLog {
    pub(crate) fn new(configured: Option<WindowQuota>) -> SendLog {
        SendLog {
            configured,
            vendor: None,
            sent: VecDeque::new(),
        }
    }

    pub(crate) fn learn(&mut self, vendor: WindowQuota) {
        if vendor.requests > 0 && !vendor.window.is_zero() {
            self.vendor = Some(vendor);
        }
    }

    /// Records a send at `now` and returns zero, or returns how long to wait before asking again.
    pub(crate) fn try_send(&mut self, now: DateTime<Utc>) -> Duration {
        let wait = self.wait_at(now);
        if wait.is_zero() {
            self.sent.push_back(now);
        }
        wait
    }

    /// How long a send at `now` would have to wait, without recording anything.
    pub(crate) fn wait_at(&mut self, now: DateTime<Utc>) -> Duration {
        let quotas = [self.configured, self.vendor];
        let longest = quotas
            .iter()
            .flatten()
            .map(|q| span(q.window))
            .max()
            .unwrap_or(Duration::ZERO);
        while let Some(first) = self.sent.front() {
            if since(now, *first) >= longest {
                self.sent.pop_front();
            } else {
                break;
            }
        }
        let mut wait = Duration::ZERO;
        for q in quotas.iter().flatten() {
            let span = span(q.window);
            // Sends are in time order: the ones inside this window are a suffix of the log.
            let start = self.sent.partition_point(|t| since(now, *t) >= span);
            let inside = self.sent.len() - start;
            if inside >= q.requests as usize {
                // The send that must leave the window before one more fits.
                let oldest = inside - q.requests as usize + start;
                if let Some(t) = self.sent.get(oldest) {
                    wait = wait.max(span.saturating_sub(since(now, *t)));
                }
            }
        }
        wait
    }
}

/// The window plus the latency margin.
fn span(window: Duration) -> Duration {
    window + window / 50
}

fn since(now: DateTime<Utc>, then: DateTime<Utc>) -> Duration {
    (now - then).to_std().unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
            .single()
            .expect("valid date")
    }

    fn at(ms: i64) -> DateTime<Utc> {
        t0() + chrono::TimeDelta::milliseconds(ms)
    }

    #[test]
    fn a_full_burst_waits_for_the_oldest_to_leave_the_window() {
        let mut log = SendLog::new(Some(WindowQuota {
            requests: 3,
            window: Duration::from_secs(10),
        }));
        for ms in [0, 1000, 2000] {
            assert_eq!(log.try_send(at(ms)), Duration::ZERO);
        }
        // The fourth must wait until the first is 10.2 s old (window plus 2%).
        assert_eq!(log.try_send(at(3000)), Duration::from_millis(7200));
        assert_eq!(log.try_send(at(10_199)), Duration::from_millis(1));
        assert_eq!(log.try_send(at(10_200)), Duration::ZERO);
        // Now 1000, 2000 and 10200 are inside: the next waits for 1000 to leave.
        assert_eq!(log.try_send(at(10_200)), Duration::from_millis(1000));
    }

    #[test]
    fn a_vendor_reported_quota_tightens_the_configured_one() {
        let mut log = SendLog::new(Some(WindowQuota {
            requests: 1000,
            window: Duration::from_secs(10),
        }));
        assert_eq!(log.try_send(at(0)), Duration::ZERO);
        log.learn(WindowQuota {
            requests: 2,
            window: Duration::from_secs(1),
        });
        assert_eq!(log.try_send(at(10)), Duration::ZERO);
        assert_eq!(log.try_send(at(20)), Duration::from_millis(1000));
        // A nonsense report (zero requests) is ignored rather than stalling the connector.
        log.learn(WindowQuota {
            requests: 0,
            window: Duration::from_secs(1),
        });
        assert_eq!(log.try_send(at(1020)), Duration::ZERO);
    }
}
