//! The sync loop: drives one source connector stream by stream, page by page, into the store.
//!
//! Each page's records and the cursor that covers them are committed in one store transaction, so a crash at
//! any point re-reads at most one page. A failing stream is recorded and the connector's other streams still
//! run; a failing connector never stops the others (the caller runs each one separately). The loop knows
//! nothing about vendors: paging, auth and rate limits are the kind's and `crate::http`'s business.

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::connector::{RejectedRecord, Source};
use crate::store::{Store, StoreError};

/// A safety net against a source that never says `done`: far above any real stream's page count.
pub const MAX_PAGES_PER_RUN: usize = 100_000;

/// How many rejected records are kept per stream for display; the count is always exact.
const KEPT_REJECTIONS: usize = 20;

#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// Forget cursors first: re-read everything.
    pub full: bool,
}

/// What happened to one stream in one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamOutcome {
    pub stream: String,
    pub pages: usize,
    pub records: usize,
    /// Records that were new or different from the stored copy.
    pub changed: usize,
    pub rejected: usize,
    pub rejections: Vec<RejectedRecord>,
    /// Records stored for this stream after the run.
    pub stored: usize,
    pub error: Option<String>,
}

/// What happened to one connector in one run; stored as its status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncStatus {
    pub connector: String,
    pub kind: String,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    pub streams: Vec<StreamOutcome>,
    /// Set when the connector could not run at all (build failed, missing secret) or a stream failed.
    pub error: Option<String>,
    /// True when a shutdown request stopped the run between pages.
    pub interrupted: bool,
}

impl SyncStatus {
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.streams.iter().all(|s| s.error.is_none())
    }

    pub fn records(&self) -> usize {
        self.streams.iter().map(|s| s.records).sum()
    }

    /// Status of a connector that could not be built; recorded so `status` shows why it did not run.
    pub fn failed(
        connector: &str,
        kind: &str,
        started_at: DateTime<Utc>,
        error: String,
    ) -> SyncStatus {
        SyncStatus {
            connector: connector.to_string(),
            kind: kind.to_string(),
            started_at,
            duration_ms: 0,
            streams: Vec::new(),
            error: Some(error),
            interrupted: false,
        }
    }
}

/// Called after every committed page: (stream, records so far in this stream).
pub type Progress<'a> = &'a (dyn Fn(&str, usize) + Send + Sync);

/// Syncs every stream of one connector. Store errors end the run (the disk is the problem, not the vendor);
/// vendor errors end only the stream they happened in.
pub async fn sync_connector(
    store: &Store,
    connector: &str,
    kind: &str,
    source: &dyn Source,
    options: &SyncOptions,
    shutdown: &watch::Receiver<bool>,
    progress: Progress<'_>,
) -> Result<SyncStatus, StoreError> {
    let started_at = Utc::now();
    let clock = Instant::now();
    let mut status = SyncStatus {
        connector: connector.to_string(),
        kind: kind.to_string(),
        started_at,
        duration_ms: 0,
        streams: Vec::new(),
        error: None,
        interrupted: false,
    };
    for stream in source.streams() {
        if *shutdown.borrow() {
            status.interrupted = true;
            break;
        }
        let span = tracing::info_span!("sync_stream", connector, kind, stream = %stream);
        let _enter = span.enter();
        if options.full {
            store.reset_cursor(connector, &stream)?;
        }
        let mut outcome = StreamOutcome {
            stream: stream.clone(),
            pages: 0,
            records: 0,
            changed: 0,
            rejected: 0,
            rejections: Vec::new(),
            stored: 0,
            error: None,
        };
        let mut cursor = store.cursor(connector, &stream)?;
        loop {
            if *shutdown.borrow() {
                status.interrupted = true;
                break;
            }
            if outcome.pages >= MAX_PAGES_PER_RUN {
                outcome.error = Some(format!(
                    "stopped after {MAX_PAGES_PER_RUN} pages without reaching the end"
                ));
                break;
            }
            let page = match source.fetch_page(&stream, cursor.as_ref()).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "stream failed");
                    outcome.error = Some(e.to_string());
                    break;
                }
            };
            outcome.changed +=
                store.commit_page(connector, &stream, &page.records, &page.cursor)?;
            outcome.pages += 1;
            outcome.records += page.records.len();
            outcome.rejected += page.rejected.len();
            for r in page.rejected {
                tracing::warn!(record = r.id.as_deref().unwrap_or("(no id)"), reason = %r.reason, "record rejected");
                if outcome.rejections.len() < KEPT_REJECTIONS {
                    outcome.rejections.push(r);
                }
            }
            progress(&stream, outcome.records);
            cursor = Some(page.cursor);
            if page.done {
                break;
            }
        }
        outcome.stored = store.record_count(connector, &stream)?;
        tracing::info!(
            pages = outcome.pages,
            records = outcome.records,
            changed = outcome.changed,
            "stream synced"
        );
        status.streams.push(outcome);
    }
    status.duration_ms = clock.elapsed().as_millis() as u64;
    if let Some(failed) = status.streams.iter().find(|s| s.error.is_some()) {
        status.error = Some(format!("stream {} failed", failed.stream));
    }
    store.put_status(&format!("sync/{connector}"), &status)?;
    Ok(status)
}
