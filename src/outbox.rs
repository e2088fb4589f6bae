//! Delivery: drains the durable outbox into the sinks.
//!
//! An entry leaves the outbox only when its sink confirmed it (`Store::confirm`, which also records the
//! confirmed values and opens the project in the same transaction), or when the platform refused it for good
//! (it moves to the dead letters with the vendor's reason). Transient failures stay queued for the next
//! cycle, with an attempt count; after `MAX_ATTEMPTS` cycles they are dead-lettered too. The HTTP engine has
//! already retried within a cycle, so this loop never sleeps. One sink failing does not stop the others.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::Instrument as _;

use crate::connector::{Delivered, DeliveryError, Sink};
use crate::observe;
use crate::store::{Store, StoreError};

/// Delivery cycles a write may fail transiently before it is dead-lettered.
pub const MAX_ATTEMPTS: u32 = 10;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryReport {
    pub applied: usize,
    /// Writes the platform already had (an earlier attempt landed before a crash).
    pub already_present: usize,
    pub projects_created: usize,
    pub transient_failures: usize,
    pub dead_lettered: usize,
    /// Entries still queued after this cycle.
    pub remaining: usize,
    /// Entries whose sink is not configured or could not be built; they stay queued.
    pub skipped_no_sink: usize,
}

/// Delivers every queued entry once, in order.
pub async fn deliver(
    store: &Store,
    sinks: &BTreeMap<String, Box<dyn Sink>>,
    shutdown: &watch::Receiver<bool>,
    now: DateTime<Utc>,
    progress: &(dyn Fn(usize, usize) + Send + Sync),
) -> Result<DeliveryReport, StoreError> {
    let entries = store.outbox(None)?;
    let total = entries.len();
    let mut report = DeliveryReport::default();
    for (i, entry) in entries.into_iter().enumerate() {
        if *shutdown.borrow() {
            break;
        }
        let Some(sink) = sinks.get(&entry.sink) else {
            report.skipped_no_sink += 1;
            continue;
        };
        let span = tracing::info_span!("deliver", sink = %entry.sink, key = %entry.key);
        let result = sink.deliver(&entry.op).instrument(span.clone()).await;
        let _enter = span.enter();
        match result {
            Ok(outcome) => {
                store.confirm(&entry)?;
                match outcome {
                    Delivered::Applied => {
                        observe::write(&entry.sink, "applied");
                        report.applied += 1
                    }
                    Delivered::AlreadyPresent => {
                        observe::write(&entry.sink, "already_present");
                        report.already_present += 1
                    }
                }
                if matches!(entry.op, crate::connector::WriteOp::CreateProject { .. })
                    && outcome == Delivered::Applied
                {
                    report.projects_created += 1;
                }
            }
            Err(DeliveryError::Transient(reason)) if entry.attempts + 1 < MAX_ATTEMPTS => {
                tracing::warn!(%reason, attempts = entry.attempts + 1, "write failed, will retry next cycle");
                store.record_attempt(&entry, &reason)?;
                observe::write(&entry.sink, "transient");
                report.transient_failures += 1;
            }
            Err(e) => {
                tracing::warn!(error = %e, "write dead-lettered");
                store.dead_letter(&entry, &e.to_string(), now)?;
                observe::write(&entry.sink, "dead_lettered");
                report.dead_lettered += 1;
            }
        }
        progress(i + 1, total);
    }
    report.remaining = store.outbox_len();
    Ok(report)
}
