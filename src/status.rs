//! What `healthsync status`, `GET /status` and `GET /readyz` report: per-connector runs and freshness,
//! outbox and dead-letter depth, the last scoring run, and readiness.
//!
//! [`collect`] reads the store and the config and builds one serializable [`StatusReport`]; the CLI prints
//! it, the daemon serves it as JSON (so `healthsync status` works while the daemon holds the store's lock),
//! and [`StatusReport::readiness`] judges it. Time is passed in. This module formats nothing for people
//! (that is `cli::output`) and changes nothing in the store.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::book::ScoreSummary;
use crate::config::Config;
use crate::outbox::DeliveryReport;
use crate::store::{MetaKey, ProjectRecord, ProjectState, RunKey, Store, StoreError};
use crate::sync::SyncStatus;
use crate::vocab::Role;

/// Dead letters shown in a status report; the count is always exact.
const DEAD_LETTER_EXAMPLES: usize = 5;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub generated_at: DateTime<Utc>,
    /// Set when a running daemon produced the report.
    pub daemon: Option<DaemonInfo>,
    pub connectors: Vec<ConnectorStatus>,
    pub outbox_depth: usize,
    pub dead_letter_count: usize,
    /// The newest few, newest first.
    pub dead_letters: Vec<DeadLetterSummary>,
    pub last_score_run: Option<ScoreSummary>,
    pub last_delivery: Option<DeliveryReport>,
    /// Each enabled export's last outcome (files written, or why not), by export id.
    #[serde(default)]
    pub exports: Vec<ExportStatus>,
    pub projects_open: usize,
    pub projects_pending: usize,
    pub projects_resolved: usize,
}

/// One export: its last outcome (`None` before its first scoring run) and why it could not be built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportStatus {
    pub id: String,
    pub kind: String,
    pub build_error: Option<String>,
    pub last_run: Option<crate::book::ExportOutcome>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub pid: u32,
    pub started_at: DateTime<Utc>,
    pub config: String,
    /// The last SIGHUP reload, if any: when, and the errors that made it keep the old config.
    pub last_reload: Option<ReloadOutcome>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadOutcome {
    pub at: DateTime<Utc>,
    pub applied: bool,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectorStatus {
    pub id: String,
    pub kind: String,
    pub role: Role,
    pub enabled: bool,
    pub schedule: Option<String>,
    /// Why the connector cannot run (a missing secret, bad params), if it cannot.
    pub build_error: Option<String>,
    pub last_run: Option<SyncStatus>,
    pub last_success: Option<DateTime<Utc>>,
    pub max_age_secs: u64,
    /// An enabled source whose last success is older than `max_age` (or that never succeeded).
    pub stale: bool,
    /// Where each stream's incremental sync stands (the kind's opaque cursor).
    pub cursors: BTreeMap<String, serde_json::Value>,
}

impl ConnectorStatus {
    /// Its last run failed (or it cannot be built): "failing", as opposed to merely not run yet.
    pub fn failing(&self) -> bool {
        self.build_error.is_some()
            || self
                .last_run
                .as_ref()
                .is_some_and(|r| !r.interrupted && !r.ok())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterSummary {
    pub sink: String,
    pub account: String,
    pub key: String,
    pub reason: String,
    pub attempts: u32,
    pub failed_at: DateTime<Utc>,
}

/// The verdict of `GET /readyz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: bool,
    pub problems: Vec<String>,
}

impl StatusReport {
    /// Ready unless a source has been failing for longer than its max age. A source that has simply not
    /// run yet is not failing, so a freshly started daemon is ready; its store is open by construction.
    pub fn readiness(&self) -> Readiness {
        let problems: Vec<String> = self
            .connectors
            .iter()
            .filter(|c| c.stale && c.failing())
            .map(|c| {
                let since = match c.last_success {
                    Some(t) => format!("last success {}", t.format("%Y-%m-%d %H:%M:%S UTC")),
                    None => "never succeeded".to_string(),
                };
                let error = c
                    .build_error
                    .clone()
                    .or_else(|| c.last_run.as_ref().and_then(|r| r.error.clone()))
                    .unwrap_or_default();
                format!(
                    "connector {} failing beyond its max age of {}s ({since}): {error}",
                    c.id, c.max_age_secs
                )
            })
            .collect();
        Readiness {
            ready: problems.is_empty(),
            problems,
        }
    }
}

/// A source is stale when its last fully successful sync is older than its max age, or it never had one.
pub fn is_stale(
    last_success: Option<DateTime<Utc>>,
    max_age: std::time::Duration,
    now: DateTime<Utc>,
) -> bool {
    let max_age = chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX);
    last_success.is_none_or(|t| now - t > max_age)
}

/// Builds the report from the store, as of `now`.
pub fn collect(
    config: &Config,
    store: &Store,
    build_errors: &BTreeMap<String, String>,
    now: DateTime<Utc>,
) -> Result<StatusReport, StoreError> {
    let mut connectors = Vec::new();
    for c in &config.connectors {
        let source = c.role == Role::Source;
        let (last_run, last_success) = if source {
            (
                store.status::<SyncStatus>(RunKey::Sync(&c.id))?,
                store.status::<DateTime<Utc>>(RunKey::SyncOk(&c.id))?,
            )
        } else {
            (None, None)
        };
        let stale = source && c.enabled && is_stale(last_success, c.max_age, now);
        let mut cursors = BTreeMap::new();
        if let Some(run) = &last_run {
            for s in &run.streams {
                if let Some(cursor) = store.cursor(&c.id, &s.stream)? {
                    cursors.insert(s.stream.clone(), cursor.0);
                }
            }
        }
        connectors.push(ConnectorStatus {
            id: c.id.clone(),
            kind: c.kind.clone(),
            role: c.role,
            enabled: c.enabled,
            schedule: c.schedule.clone(),
            build_error: build_errors.get(&c.id).cloned(),
            last_run,
            last_success,
            max_age_secs: c.max_age.as_secs(),
            stale,
            cursors,
        });
    }
    let mut dead = store.dead_letters()?;
    dead.sort_by_key(|d| std::cmp::Reverse(d.failed_at));
    let projects = store.projects()?;
    let count = |f: fn(&ProjectRecord) -> bool| projects.iter().filter(|p| f(p)).count();
    Ok(StatusReport {
        generated_at: now,
        daemon: None,
        outbox_depth: store.outbox_len(),
        dead_letter_count: dead.len(),
        dead_letters: dead
            .into_iter()
            .take(DEAD_LETTER_EXAMPLES)
            .map(|d| DeadLetterSummary {
                sink: d.entry.sink.clone(),
                account: d.entry.op.account().account_id.clone(),
                key: d.entry.key.clone(),
                reason: d.reason,
                attempts: d.entry.attempts,
                failed_at: d.failed_at,
            })
            .collect(),
        last_score_run: store.meta(MetaKey::LastScoreRun)?,
        last_delivery: store.status(RunKey::Delivery)?,
        exports: config
            .exports
            .iter()
            .filter(|e| e.enabled)
            .map(|e| {
                Ok(ExportStatus {
                    id: e.id.clone(),
                    kind: e.kind.clone(),
                    build_error: build_errors.get(&e.id).cloned(),
                    last_run: store.status(RunKey::Export(&e.id))?,
                })
            })
            .collect::<Result<_, StoreError>>()?,
        projects_open: count(|p| p.state == ProjectState::Open),
        projects_pending: count(|p| p.state == ProjectState::Pending),
        projects_resolved: count(|p| matches!(p.state, ProjectState::Resolved { .. })),
        connectors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::StreamOutcome;

    fn at(h: u32) -> DateTime<Utc> {
        use chrono::TimeZone as _;
        Utc.with_ymd_and_hms(2026, 11, 23, h, 0, 0)
            .single()
            .expect("valid time")
    }

    fn run(ok: bool, interrupted: bool) -> SyncStatus {
        SyncStatus {
            connector: "crm".into(),
            kind: "hubspot".into(),
            started_at: at(11),
            duration_ms: 10,
            streams: vec![StreamOutcome {
                stream: "companies".into(),
                pages: 1,
                records: 1,
                changed: 1,
                rejected: 0,
                rejections: Vec::new(),
                stored: 1,
                error: (!ok).then(|| "http 500".to_string()),
                high_water: None,
            }],
            error: (!ok).then(|| "stream companies failed".to_string()),
            interrupted,
        }
    }

    fn connector(
        last_run: Option<SyncStatus>,
        last_success: Option<DateTime<Utc>>,
    ) -> ConnectorStatus {
        let now = at(12);
        ConnectorStatus {
            id: "crm".into(),
            kind: "hubspot".into(),
            role: Role::Source,
            enabled: true,
            schedule: Some("0 0 * * * *".into()),
            build_error: None,
            last_run,
            last_success,
            max_age_secs: 3 * 3600,
            stale: is_stale(last_success, std::time::Duration::from_secs(3 * 3600), now),
            cursors: BTreeMap::new(),
        }
    }

    fn report(connectors: Vec<ConnectorStatus>) -> StatusReport {
        StatusReport {
            generated_at: at(12),
            daemon: None,
            connectors,
            outbox_depth: 0,
            dead_letter_count: 0,
            dead_letters: Vec::new(),
            last_score_run: None,
            last_delivery: None,
            exports: Vec::new(),
            projects_open: 0,
            projects_pending: 0,
            projects_resolved: 0,
        }
    }

    #[test]
    fn readiness_fails_only_for_a_source_failing_beyond_its_max_age() {
        // Not run yet: not failing, so ready (a fresh daemon is ready).
        assert!(report(vec![connector(None, None)]).readiness().ready);
        // Failing, but its last success is within max age: still ready.
        assert!(
            report(vec![connector(Some(run(false, false)), Some(at(10)))])
                .readiness()
                .ready
        );
        // Stale but its last run succeeded (its schedule stopped): reported stale, not unready.
        assert!(
            report(vec![connector(Some(run(true, false)), Some(at(1)))])
                .readiness()
                .ready
        );
        // Interrupted by a shutdown is not a failure.
        assert!(
            report(vec![connector(Some(run(false, true)), Some(at(1)))])
                .readiness()
                .ready
        );
        // Failing and the last success is older than max age: not ready, and the reason names it.
        let verdict = report(vec![connector(Some(run(false, false)), Some(at(1)))]).readiness();
        assert!(!verdict.ready);
        assert_eq!(verdict.problems.len(), 1);
        assert!(verdict.problems[0].contains("connector crm failing beyond its max age of 10800s"));
        assert!(verdict.problems[0].contains("stream companies failed"));
        // A connector that cannot be built and never succeeded is failing.
        let mut broken = connector(None, None);
        broken.build_error = Some("secret env:CRM_TOKEN is not set".into());
        let verdict = report(vec![broken]).readiness();
        assert!(!verdict.ready);
        assert!(verdict.problems[0].contains("never succeeded"));
    }
}
