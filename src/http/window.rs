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
//! the configured quota stays enforced too. A vendor that reports no quota teaches one by throttling: a 429
//! with that many requests in the configured window means it allows fewer, and the guard keeps nine tenths
//! of them for a while ([`SendLog::throttled`]). This module does not sleep: it says how long to wait.

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

/// How long a quota inferred from a 429 holds, in windows of the configured quota, and at most. Long
/// enough that a throttled connector stays under the vendor's limit for the rest of a typical run (one 429
/// a minute at Stripe's 25 requests per second is 0.07 % of requests); short enough that a 429 caused by
/// someone else sharing the key does not slow this connector for good.
const INFERRED_HOLD_WINDOWS: u32 = 60;
const INFERRED_HOLD_MAX: Duration = Duration::from_secs(600);
/// The shortest window an inferred quota counts in: vendors count per second or longer.
const INFERRED_WINDOW_MIN: Duration = Duration::from_secs(1);

/// Send times within the longest window, and the quotas they are checked against.
#[derive(Debug)]
pub(crate) struct SendLog {
    configured: Option<WindowQuota>,
    vendor: Option<WindowQuota>,
    /// Learned from the vendor's 429s, with when it lapses.
    inferred: Option<(WindowQuota, DateTime<Utc>)>,
    sent: VecDeque<DateTime<Utc>>,
}

impl SendLog {
    pub(crate) fn new(configured: Option<WindowQuota>) -> SendLog {
        SendLog {
            configured,
            vendor: None,
            inferred: None,
            sent: VecDeque::new(),
        }
    }

    /// The vendor throttled a request sent in the last window without saying its quota: it allows fewer
    /// requests than were just sent, the refused one included, in the time they took. Keeps nine tenths
    /// of those others (at least one) per that time (at least [`INFERRED_WINDOW_MIN`], at most the
    /// configured window) for [`INFERRED_HOLD_WINDOWS`] configured windows; a 429 while an inferred
    /// quota holds tightens it by another tenth. Counting per the time the sends took, not per the whole
    /// configured window, matters early in a run: 20 sends in 0.4 s under a 60,000-a-minute quota said
    /// "18 a minute" and held a sink at that for ten minutes (issue 25, case 8); it now says 18 a second,
    /// and a vendor that allows fewer refuses again and tightens it. Without a configured window there
    /// is nothing to count in, and the engine's backoff alone applies.
    pub(crate) fn throttled(&mut self, now: DateTime<Utc>) {
        let Some(configured) = self.configured else {
            return;
        };
        let span = span(configured.window);
        let inside = self.sent.iter().filter(|t| since(now, **t) < span).count() as u32;
        let from_count = inside.saturating_sub(1).saturating_mul(9) / 10;
        // Sends are in time order: the first inside the window is the oldest.
        let took = self
            .sent
            .iter()
            .find(|t| since(now, **t) < span)
            .map_or(configured.window, |t| since(now, *t));
        let current = self.inferred(now);
        let window = match current {
            Some(q) => q.window,
            None => took
                .max(INFERRED_WINDOW_MIN.min(configured.window))
                .min(configured.window),
        };
        let tightened = current.map(|q| q.requests.saturating_mul(9) / 10);
        let requests = match (from_count, tightened) {
            // One or two sends in the window say nothing about a rate (the key may be shared, or the
            // vendor's window longer): the engine's backoff alone answers this 429.
            (0, None) => return,
            (0, Some(t)) => t,
            (c, None) => c,
            (c, Some(t)) => c.min(t),
        }
        .max(1);
        let hold = (configured.window * INFERRED_HOLD_WINDOWS).min(INFERRED_HOLD_MAX);
        let until = now + chrono::TimeDelta::from_std(hold).unwrap_or(chrono::TimeDelta::zero());
        self.inferred = Some((WindowQuota { requests, window }, until));
    }

    /// The quota inferred from 429s, while it holds.
    pub(crate) fn inferred(&mut self, now: DateTime<Utc>) -> Option<WindowQuota> {
        match self.inferred {
            Some((q, until)) if now < until => Some(q),
            _ => {
                self.inferred = None;
                None
            }
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
        let quotas = [self.configured, self.vendor, self.inferred(now)];
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

    #[test]
    fn a_429_without_a_quota_paces_at_nine_tenths_of_what_the_vendor_took_then_lapses() {
        let second = Duration::from_secs(1);
        let mut log = SendLog::new(Some(WindowQuota {
            requests: 1000,
            window: second,
        }));
        // 26 sends in 26 ms; the vendor (25 per second) refuses the 26th.
        for ms in 0..26 {
            assert_eq!(log.try_send(at(ms)), Duration::ZERO);
        }
        log.throttled(at(26));
        assert_eq!(
            log.inferred(at(26)),
            Some(WindowQuota {
                requests: 22,
                window: second
            })
        );
        // 26 are inside the window: the next waits until all but 21 have left it (1.02 s after the 5th).
        assert_eq!(log.try_send(at(27)), Duration::from_millis(1020 + 4 - 27));
        // A later window takes 22 and no more.
        let later = 5_000;
        let sent = (0..30)
            .filter(|i| log.try_send(at(later + i)).is_zero())
            .count();
        assert_eq!(sent, 22);
        // After sixty windows the guess lapses and the configured quota alone applies again.
        assert_eq!(log.inferred(at(26 + 60_000)), None);
        assert_eq!(log.try_send(at(26 + 60_000)), Duration::ZERO);
    }

    #[test]
    fn a_429_while_an_inferred_quota_holds_tightens_it_and_never_below_one() {
        let mut log = SendLog::new(Some(WindowQuota {
            requests: 100,
            window: Duration::from_secs(10),
        }));
        for ms in 0..11 {
            log.try_send(at(ms));
        }
        log.throttled(at(11));
        assert_eq!(log.inferred(at(11)).map(|q| q.requests), Some(9));
        // Throttled again with nothing sent in the window since: a tenth off the guess.
        log.throttled(at(30_000));
        assert_eq!(log.inferred(at(30_000)).map(|q| q.requests), Some(8));
        for ms in 0..40 {
            log.throttled(at(30_001 + ms));
        }
        assert_eq!(log.inferred(at(30_100)).map(|q| q.requests), Some(1));
    }

    #[test]
    fn a_429_after_one_or_two_sends_or_without_a_configured_window_infers_nothing() {
        let mut log = SendLog::new(Some(WindowQuota {
            requests: 100,
            window: Duration::from_secs(1),
        }));
        log.try_send(at(0));
        log.throttled(at(1));
        log.try_send(at(2));
        log.throttled(at(3));
        assert_eq!(log.inferred(at(3)), None);
        assert_eq!(log.try_send(at(4)), Duration::ZERO);
        let mut bare = SendLog::new(None);
        for ms in 0..10 {
            bare.try_send(at(ms));
        }
        bare.throttled(at(10));
        assert_eq!(bare.inferred(at(10)), None);
    }

    #[test]
    fn a_429_early_in_a_run_counts_per_the_time_the_sends_took_not_per_the_configured_window() {
        // Issue 25, case 8: one bare 429 after 20 sends in 0.4 s under 60,000 a minute inferred 18 a
        // minute and held a sink there for ten minutes. It is 18 a second now.
        let minute = Duration::from_secs(60);
        let mut log = SendLog::new(Some(WindowQuota {
            requests: 60_000,
            window: minute,
        }));
        for i in 0..21 {
            assert_eq!(log.try_send(at(i * 20)), Duration::ZERO);
        }
        log.throttled(at(420));
        assert_eq!(
            log.inferred(at(420)),
            Some(WindowQuota {
                requests: 18,
                window: Duration::from_secs(1)
            })
        );
        // Over the next minute that guess lets about a thousand through, not eighteen.
        let sent = (0..60_000)
            .step_by(10)
            .filter(|ms| log.try_send(at(2_000 + ms)).is_zero())
            .count();
        assert!((1_000..=1_100).contains(&sent), "{sent}");
        // A 429 while it holds tightens the guess in its own window.
        log.throttled(at(70_000));
        assert_eq!(
            log.inferred(at(70_000)).map(|q| (q.requests, q.window)),
            Some((16, Duration::from_secs(1)))
        );
    }
}
