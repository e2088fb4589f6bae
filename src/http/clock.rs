//! Time as the HTTP engine and the kinds see it: the wall clock (for `Retry-After` dates and business dates
//! such as a task's due date) and sleeping (for retry backoff and the rate limiter).
//!
//! Production code uses [`SystemClock`]; tests inject [`ManualClock`], which records every requested sleep
//! and returns at once, so retry waits are asserted without sleeping in real time. This module does not
//! decide *how long* to wait; that is `retry.rs`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::connector::BoxFuture;

/// A source of "now" and of sleeps.
pub trait Clock: Send + Sync {
    /// The current wall-clock time.
    fn now(&self) -> DateTime<Utc>;
    /// Waits for `d`.
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()>;
}

/// The real clock: `Utc::now()` and `tokio::time::sleep` (which honours tokio's paused time in tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
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
}

impl ManualClock {
    pub fn new(now: DateTime<Utc>) -> ManualClock {
        ManualClock {
            inner: Arc::new(Mutex::new(ManualState {
                now,
                sleeps: Vec::new(),
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

    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        if let Ok(mut s) = self.inner.lock() {
            s.sleeps.push(d);
            s.now += chrono::Duration::from_std(d).unwrap_or_default();
        }
        Box::pin(std::future::ready(()))
    }
}
