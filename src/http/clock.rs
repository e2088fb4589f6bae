//! Time as the HTTP engine and the kinds see it: the wall clock (for `Retry-After` dates and business dates
//! such as a task's due date), monotonic time (for the rate limiter) and sleeping (for retry backoff and
//! rate-limit waits).
//!
//! Production code uses [`SystemClock`]; tests inject [`ManualClock`], which records every requested sleep
//! and returns at once, so retry waits are asserted without sleeping in real time. This module does not
//! decide *how long* to wait; that is `retry.rs`.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::vocab::BoxFuture;

/// A source of "now" and of sleeps.
pub trait Clock: Send + Sync {
    /// The current wall-clock time.
    fn now(&self) -> DateTime<Utc>;
    /// Monotonic time since a fixed origin: what the rate limiter measures intervals with, so that it
    /// advances exactly as [`Clock::sleep`] does (see [`LimiterClock`]).
    fn elapsed(&self) -> Duration;
    /// Waits for `d`.
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()>;
}

/// The engine's clock as governor sees it. governor's own clock is the real one, while the engine sleeps
/// on this [`Clock`]: under a [`ManualClock`] a rate-limit wait would return at once and the loop would
/// spin in real time until governor's clock caught up. Measuring with the same clock the engine sleeps
/// on makes one wait enough.
#[derive(Clone)]
pub(super) struct LimiterClock(pub(super) Arc<dyn Clock>);

impl governor::clock::Clock for LimiterClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

/// The real clock: `Utc::now()` and `tokio::time::sleep` (which honours tokio's paused time in tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

/// The origin of [`SystemClock::elapsed`]: the first time any system clock was asked.
static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    /// On tokio's clock, which tests may pause and advance, like the sleeps below.
    fn elapsed(&self) -> Duration {
        let origin = tokio::time::Instant::from_std(*ORIGIN.get_or_init(std::time::Instant::now));
        tokio::time::Instant::now().saturating_duration_since(origin)
    }

    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(d))
    }
}

/// A test clock: a fixed "now" that advances by exactly what is slept, and a log of the sleeps.
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<Mutex<ManualState>>,
}

#[derive(Debug)]
struct ManualState {
    now: DateTime<Utc>,
    sleeps: Vec<Duration>,
    /// Everything slept so far: the monotonic time, which never goes back.
    elapsed: Duration,
}

impl ManualClock {
    pub fn new(now: DateTime<Utc>) -> ManualClock {
        ManualClock {
            inner: Arc::new(Mutex::new(ManualState {
                now,
                sleeps: Vec::new(),
                elapsed: Duration::ZERO,
            })),
        }
    }

    /// Every sleep requested so far, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.inner
            .lock()
            .map(|s| s.sleeps.clone())
            .unwrap_or_default()
    }

    /// The total time slept so far.
    pub fn slept(&self) -> Duration {
        self.sleeps().iter().sum()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.inner
            .lock()
            .map(|s| s.now)
            .unwrap_or_else(|e| e.get_ref().now)
    }

    fn elapsed(&self) -> Duration {
        self.inner
            .lock()
            .map(|s| s.elapsed)
            .unwrap_or_else(|e| e.get_ref().elapsed)
    }

    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        if let Ok(mut s) = self.inner.lock() {
            s.sleeps.push(d);
            s.elapsed += d;
            s.now += chrono::Duration::from_std(d).unwrap_or_default();
        }
        Box::pin(std::future::ready(()))
    }
}
