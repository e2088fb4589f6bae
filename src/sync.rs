//! The sync loop: drives one source connector stream by stream, page by page, into the store.
//!
//! Each page's records are committed before the cursor that covers them (`Store::commit_page`), so a crash at
//! any point re-reads at most one page. A failing stream is recorded and the connector's other streams still
//! run; a failing connector never stops the others (the caller runs each one separately). The loop knows
//! nothing about vendors: paging, auth and rate limits are the kind's and `crate::http`'s business.

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::Instrument as _;

use crate::connector::{RejectedRecord, Source};
use crate::observe;
use crate::store::{RunKey, Store, StoreError};

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
    /// The newest `updated_at` this run read, or the previous run's when nothing new came: how far behind
    /// the vendor the stored copy is (`cursor_lag_seconds`).
    #[serde(default)]
    pub high_water: Option<DateTime<Utc>>,
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

    pub fn finished_at(&self) -> DateTime<Utc> {
        self.started_at + chrono::Duration::milliseconds(self.duration_ms as i64)
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
    let previous: Option<SyncStatus> = store.status(RunKey::Sync(connector))?;
    for stream in source.streams() {
        if *shutdown.borrow() {
            status.interrupted = true;
            break;
        }
        let span = tracing::info_span!("sync_stream", stream = %stream);
        let previous_high_water = previous
            .as_ref()
            .and_then(|p| p.streams.iter().find(|s| s.stream == stream))
            .and_then(|s| s.high_water);
        let outcome = sync_stream(
            store, connector, source, &stream, options, shutdown, progress,
        )
        .instrument(span)
        .await?;
        let mut outcome = match outcome {
            StreamRun::Finished(o) => o,
            StreamRun::Interrupted(o) => {
                status.interrupted = true;
                o
            }
        };
        outcome.high_water = outcome.high_water.max(previous_high_water);
        status.streams.push(outcome);
    }
    status.duration_ms = clock.elapsed().as_millis() as u64;
    if let Some(failed) = status.streams.iter().find(|s| s.error.is_some()) {
        status.error = Some(format!("stream {} failed", failed.stream));
    }
    store.put_status(RunKey::Sync(connector), &status)?;
    if status.ok() && !status.interrupted {
        store.put_status(RunKey::SyncOk(connector), &status.finished_at())?;
    }
    record_metrics(&status);
    Ok(status)
}

enum StreamRun {
    Finished(StreamOutcome),
    Interrupted(StreamOutcome),
}

/// Syncs one stream page by page until it is done, fails, or shutdown is requested between pages.
async fn sync_stream(
    store: &Store,
    connector: &str,
    source: &dyn Source,
    stream: &str,
    options: &SyncOptions,
    shutdown: &watch::Receiver<bool>,
    progress: Progress<'_>,
) -> Result<StreamRun, StoreError> {
    {
        let stream = stream.to_string();
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
            high_water: None,
        };
        let mut interrupted = false;
        let mut cursor = store.cursor(connector, &stream)?;
        let writer = store.stream_writer(connector, &stream)?;
        loop {
            if *shutdown.borrow() {
                interrupted = true;
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
                    tracing::warn!(connector, stream = %stream, error = %e, "stream failed");
                    outcome.error = Some(e.to_string());
                    break;
                }
            };
            outcome.changed += writer.commit_page(&page.records, &page.cursor)?;
            outcome.pages += 1;
            outcome.records += page.records.len();
            outcome.rejected += page.rejected.len();
            outcome.high_water = outcome
                .high_water
                .max(page.records.iter().map(|r| r.updated_at).max());
            count_records(connector, &stream, "stored", page.records.len());
            count_records(connector, &stream, "rejected", page.rejected.len());
            for r in page.rejected {
                // Named in full on the event itself, not only through the spans around it: a JSON log line
                // or a journal entry then says which connector, stream and record on its own.
                tracing::warn!(
                    connector,
                    stream = %stream,
                    record = r.id.as_deref().unwrap_or("(no id)"),
                    reason = %r.reason,
                    "record rejected"
                );
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
        Ok(if interrupted {
            StreamRun::Interrupted(outcome)
        } else {
            StreamRun::Finished(outcome)
        })
    }
}

fn count_records(connector: &str, stream: &str, outcome: &str, n: usize) {
    if n > 0 {
        observe::metrics()
            .records_synced
            .get_or_create(&observe::RecordLabels {
                connector: connector.to_string(),
                stream: stream.to_string(),
                outcome: outcome.to_string(),
            })
            .inc_by(n as u64);
    }
}

/// Run duration, outcome, last success and per-stream lag, for `/metrics`.
fn record_metrics(status: &SyncStatus) {
    let m = observe::metrics();
    let label = observe::connector(&status.connector);
    m.sync_duration_seconds
        .get_or_create(&label)
        .observe(status.duration_ms as f64 / 1000.0);
    let outcome = match (status.interrupted, status.ok()) {
        (true, _) => "interrupted",
        (false, true) => "ok",
        (false, false) => "failed",
    };
    m.sync_runs
        .get_or_create(&observe::OutcomeLabels {
            connector: status.connector.clone(),
            outcome: outcome.to_string(),
        })
        .inc();
    let finished = status.finished_at();
    if outcome == "ok" {
        m.last_success_timestamp
            .get_or_create(&label)
            .set(finished.timestamp());
    }
    for s in &status.streams {
        if let Some(hw) = s.high_water {
            let lag = (finished - hw).num_milliseconds().max(0) as f64 / 1000.0;
            m.cursor_lag_seconds
                .get_or_create(&observe::StreamLabels {
                    connector: status.connector.clone(),
                    stream: s.stream.clone(),
                })
                .set(lag);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::{Page, SourceError};
    use crate::vocab::{BoxFuture, Cursor, Record};
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    /// `tickets`: a page with two records and one the kind rejected, then a page that does not decode.
    /// `orgs`: one good page.
    struct Scripted;

    fn record(id: &str) -> Record {
        Record {
            id: id.into(),
            updated_at: Utc::now(),
            account_keys: BTreeMap::new(),
            fields: serde_json::Map::new(),
        }
    }

    impl Source for Scripted {
        fn streams(&self) -> Vec<String> {
            vec!["tickets".into(), "orgs".into()]
        }

        fn fetch_page<'a>(
            &'a self,
            stream: &'a str,
            cursor: Option<&'a Cursor>,
        ) -> BoxFuture<'a, Result<Page, SourceError>> {
            Box::pin(async move {
                match (stream, cursor) {
                    ("tickets", None) => Ok(Page {
                        records: vec![record("t-1"), record("t-2")],
                        cursor: Cursor(serde_json::json!({"page": 2})),
                        done: false,
                        rejected: vec![RejectedRecord {
                            id: Some("t-3".into()),
                            reason: "no updated_at".into(),
                        }],
                    }),
                    ("tickets", Some(_)) => Err(SourceError::Malformed {
                        stream: stream.into(),
                        reason: "expected value at line 1 column 7".into(),
                    }),
                    _ => Ok(Page {
                        records: vec![record("o-1")],
                        cursor: Cursor(serde_json::json!({"page": 1})),
                        done: true,
                        rejected: Vec::new(),
                    }),
                }
            })
        }
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_rejected_record_and_a_failed_stream_are_named_in_full_and_the_other_stream_still_runs(
    ) {
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let store = Store::temporary().unwrap();
        let (_tx, shutdown) = watch::channel(false);
        let status = sync_connector(
            &store,
            "acme-desk",
            "zendesk",
            &Scripted,
            &SyncOptions::default(),
            &shutdown,
            &|_, _| {},
        )
        .await
        .unwrap();

        let tickets = &status.streams[0];
        assert_eq!((tickets.records, tickets.rejected), (2, 1));
        assert_eq!(tickets.rejections[0].id.as_deref(), Some("t-3"));
        let error = tickets.error.as_deref().unwrap();
        assert!(
            error.contains("tickets") && error.contains("line 1 column 7"),
            "{error}"
        );
        assert_eq!(status.error.as_deref(), Some("stream tickets failed"));
        // The records before the bad page are kept, and the next stream ran.
        assert_eq!(store.record_count("acme-desk", "tickets").unwrap(), 2);
        assert!(status.streams[1].error.is_none());
        assert_eq!(store.record_count("acme-desk", "orgs").unwrap(), 1);

        let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        let line = |needle: &str| {
            text.lines()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no `{needle}` line in:\n{text}"))
                .to_string()
        };
        let rejected = line("record rejected");
        for part in [
            "connector=\"acme-desk\"",
            "stream=tickets",
            "record=\"t-3\"",
            "no updated_at",
        ] {
            assert!(rejected.contains(part), "{part} missing from: {rejected}");
        }
        let failed = line("stream failed");
        for part in [
            "connector=\"acme-desk\"",
            "stream=tickets",
            "line 1 column 7",
        ] {
            assert!(failed.contains(part), "{part} missing from: {failed}");
        }
    }
}
