//! Delivery: drains the durable outbox into the sinks.
//!
//! One worker per sink, all running at once, each sending its entries in queue order under its own
//! connector's rate limit (the HTTP engine's governor). Consecutive field writes go out through the sink's
//! batch endpoint when it has one, with one result per item, so a batch with per-item errors still lands
//! its good items. An entry leaves the outbox only when its sink confirmed it (`Store::confirm`, which
//! also records the confirmed values and opens the project in the same transaction), or when the platform
//! refused it for good (it moves to the dead letters with the vendor's reason). Transient failures stay
//! queued with an attempt count and a `not_before` time (exponential backoff between cycles, so a sick
//! platform is not hammered every five minutes); after `MAX_ATTEMPTS` they are dead-lettered too. The HTTP
//! engine has already retried within a cycle, so this loop never sleeps. One sink failing does not stop
//! the others.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::Instrument as _;

use crate::connector::{Delivered, DeliveryError, Sink};
use crate::observe;
use crate::store::{OutboxEntry, Store, StoreError};
use crate::vocab::WriteOp;

/// Delivery attempts a write may fail transiently before it is dead-lettered.
pub const MAX_ATTEMPTS: u32 = 10;

/// The wait before attempt `attempts + 1` after `attempts` transient failures: 1, 2, 4 … minutes, capped
/// at 4 hours (ten attempts span about eight and a half hours).
pub fn retry_delay(attempts: u32) -> chrono::Duration {
    let minutes = 1i64 << attempts.saturating_sub(1).min(8);
    chrono::Duration::minutes(minutes.min(240))
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryReport {
    pub applied: usize,
    /// Writes the platform already had (an earlier attempt landed before a crash).
    pub already_present: usize,
    pub projects_created: usize,
    #[serde(default)]
    pub projects_closed: usize,
    pub transient_failures: usize,
    pub dead_lettered: usize,
    /// Entries still queued after this cycle.
    pub remaining: usize,
    /// Entries whose sink is not configured or could not be built; they stay queued.
    pub skipped_no_sink: usize,
    /// Entries waiting out their backoff after a transient failure; not sent this cycle.
    #[serde(default)]
    pub deferred: usize,
    /// Calls made to sinks (a batch counts once).
    #[serde(default)]
    pub calls: usize,
}

impl DeliveryReport {
    fn add(&mut self, o: &DeliveryReport) {
        self.applied += o.applied;
        self.already_present += o.already_present;
        self.projects_created += o.projects_created;
        self.projects_closed += o.projects_closed;
        self.transient_failures += o.transient_failures;
        self.dead_lettered += o.dead_lettered;
        self.skipped_no_sink += o.skipped_no_sink;
        self.deferred += o.deferred;
        self.calls += o.calls;
    }
}

/// Delivers every due entry once: one worker per sink, in queue order within a sink.
pub async fn deliver(
    store: &Store,
    sinks: &BTreeMap<String, Box<dyn Sink>>,
    shutdown: &watch::Receiver<bool>,
    now: DateTime<Utc>,
    progress: &(dyn Fn(usize, usize) + Send + Sync),
) -> Result<DeliveryReport, StoreError> {
    let mut report = DeliveryReport::default();
    let mut per_sink: BTreeMap<String, Vec<OutboxEntry>> = BTreeMap::new();
    for entry in store.outbox(None)? {
        if entry.not_before.is_some_and(|t| t > now) {
            report.deferred += 1;
        } else if !sinks.contains_key(&entry.sink) {
            report.skipped_no_sink += 1;
        } else {
            per_sink.entry(entry.sink.clone()).or_default().push(entry);
        }
    }
    let total: usize = per_sink.values().map(Vec::len).sum();
    let done = AtomicUsize::new(0);
    let tick = |n: usize| progress(done.fetch_add(n, Ordering::Relaxed) + n, total);
    let workers = per_sink.iter().filter_map(|(id, entries)| {
        let sink = sinks.get(id)?;
        let worker = SinkWorker {
            store,
            sink: sink.as_ref(),
            shutdown,
            now,
            report: Mutex::new(DeliveryReport::default()),
        };
        let span = tracing::info_span!("deliver_sink", sink = %id, queued = entries.len());
        Some(
            async move { worker.run(entries, &tick).await.map(|()| worker.finish()) }
                .instrument(span),
        )
    });
    for r in futures_util::future::join_all(workers).await {
        report.add(&r?);
    }
    report.remaining = store.outbox_len();
    Ok(report)
}

/// Drains one sink's entries.
struct SinkWorker<'a> {
    store: &'a Store,
    sink: &'a dyn Sink,
    shutdown: &'a watch::Receiver<bool>,
    now: DateTime<Utc>,
    report: Mutex<DeliveryReport>,
}

impl SinkWorker<'_> {
    async fn run(
        &self,
        entries: &[OutboxEntry],
        tick: &(dyn Fn(usize) + Sync),
    ) -> Result<(), StoreError> {
        let batch_size = self.sink.batch_size().max(1);
        let mut i = 0;
        while i < entries.len() {
            if *self.shutdown.borrow() {
                break;
            }
            // A run of consecutive field writes goes out as one batch; anything else alone.
            let run = entries[i..]
                .iter()
                .take(batch_size)
                .take_while(|e| batch_size > 1 && matches!(e.op, WriteOp::SetFields { .. }))
                .count()
                .max(1);
            let batch = &entries[i..i + run];
            self.count(|r| r.calls += 1);
            let results = if run == 1 {
                let span =
                    tracing::info_span!("deliver", key = %batch[0].key, op = batch[0].op.kind());
                vec![self.sink.deliver(&batch[0].op).instrument(span).await]
            } else {
                let ops: Vec<WriteOp> = batch.iter().map(|e| e.op.clone()).collect();
                let span = tracing::info_span!("deliver_batch", size = run);
                let results = self.sink.deliver_batch(&ops).instrument(span).await;
                if results.len() == run {
                    results
                } else {
                    // A sink bug, not the platform's answer: keep every write queued for the next cycle.
                    let reason = format!(
                        "sink returned {} results for a batch of {run}",
                        results.len()
                    );
                    batch
                        .iter()
                        .map(|_| Err(DeliveryError::Transient(reason.clone())))
                        .collect()
                }
            };
            for (entry, result) in batch.iter().zip(results) {
                self.settle(entry, result)?;
            }
            tick(run);
            i += run;
        }
        Ok(())
    }

    fn count(&self, f: impl FnOnce(&mut DeliveryReport)) {
        f(&mut self.report.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Records one write's outcome in the store, the report and the metrics.
    fn settle(
        &self,
        entry: &OutboxEntry,
        result: Result<Delivered, DeliveryError>,
    ) -> Result<(), StoreError> {
        match result {
            Ok(outcome) => {
                self.store.confirm(entry)?;
                let applied = outcome == Delivered::Applied;
                observe::write(
                    &entry.sink,
                    if applied {
                        "applied"
                    } else {
                        "already_present"
                    },
                );
                self.count(|r| {
                    if applied {
                        r.applied += 1;
                    } else {
                        r.already_present += 1;
                    }
                    match (&entry.op, applied) {
                        (WriteOp::CreateProject { .. }, true) => r.projects_created += 1,
                        (WriteOp::CloseProject { .. }, _) => r.projects_closed += 1,
                        _ => {}
                    }
                });
            }
            Err(DeliveryError::Transient(reason)) if entry.attempts + 1 < MAX_ATTEMPTS => {
                let retry_at = self.now + retry_delay(entry.attempts + 1);
                tracing::warn!(key = %entry.key, %reason, attempts = entry.attempts + 1, %retry_at, "write failed, will retry");
                self.store.record_attempt(entry, &reason, retry_at)?;
                observe::write(&entry.sink, "transient");
                self.count(|r| r.transient_failures += 1);
            }
            Err(e) => {
                tracing::warn!(key = %entry.key, error = %e, "write dead-lettered");
                self.store.dead_letter(entry, &e.to_string(), self.now)?;
                observe::write(&entry.sink, "dead_lettered");
                self.count(|r| r.dead_lettered += 1);
            }
        }
        Ok(())
    }

    fn finish(self) -> DeliveryReport {
        self.report.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests;
