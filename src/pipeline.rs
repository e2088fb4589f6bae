//! The pipeline as library calls: build connectors, sync, score, plan, enqueue, push.
//!
//! Shared by the CLI subcommands, the daemon's scheduled jobs and the demo, so all three run the same code.
//! A connector that cannot be built (a secret missing on this machine) is recorded and skipped; the others
//! run. Time is always passed in (`as_of`, `now`): the demo runs on the simulator's clock, tests on a fixed
//! one. This module wires; the work itself is in `sync`, `identity`, `metrics`, `scoring`, `planner` and
//! `outbox`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::Instrument as _;

use crate::config::{Config, MetricInput, StreamRef};
use crate::connector::{self, BuildContext, Built, Sink, Source};
use crate::identity::{self, Unmatched};
use crate::outbox::{self, DeliveryReport};
use crate::planner::{self, Plan};
use crate::scoring::{self, AccountScore, Distribution};
use crate::secrets::ResolvedSecrets;
use crate::store::{ProjectState, Store, StoreError};
use crate::sync::{self, SyncOptions, SyncStatus};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("unknown connector `{name}`; configured connectors: {known}")]
    UnknownConnector { name: String, known: String },
    #[error("connector {0} is a sink; only sources sync")]
    NotASource(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The result of one scoring run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScoreRun {
    pub as_of: DateTime<Utc>,
    pub model: String,
    pub model_hash: String,
    pub scores: Vec<AccountScore>,
    pub distribution: Distribution,
    /// Records that joined no account, by `connector.stream`.
    pub unmatched: BTreeMap<String, Unmatched>,
    pub duration_ms: u64,
    /// What each export wrote after this run (empty for a run that stored nothing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exports: Vec<ExportOutcome>,
}

/// What one export did after a scoring run; stored as the `export/<id>` status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportOutcome {
    pub export: String,
    pub as_of: DateTime<Utc>,
    /// The current files written (not the timestamped copies or the history).
    pub files: Vec<std::path::PathBuf>,
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// Whether every enabled export can write into its folder: an effect (a probe file is created and
/// removed), kept out of the pure config validation and run by `healthsync validate` after it. Each
/// problem names the connector file, the line of `directory`, the folder and why.
pub fn check_exports(config: &Config) -> Vec<crate::config::Diagnostic> {
    config
        .exports
        .iter()
        .filter(|e| e.enabled)
        .filter_map(|e| {
            connector::kinds::file_export::probe_directory(&e.directory)
                .err()
                .map(|why| crate::config::Diagnostic {
                    file: e.file.clone(),
                    line: e.directory_line,
                    message: format!("export directory {} {why}", e.directory.display()),
                })
        })
        .collect()
}

/// Summary of the last scoring run, stored in meta for `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScoreSummary {
    pub as_of: DateTime<Utc>,
    pub model: String,
    pub model_hash: String,
    pub accounts: usize,
    pub distribution: Distribution,
    pub unmatched: BTreeMap<String, Unmatched>,
    pub duration_ms: u64,
}

/// Everything one `once` run did: sync, score, plan and delivery.
pub struct OnceOutcome {
    pub statuses: Vec<SyncStatus>,
    pub run: ScoreRun,
    pub plan: Plan,
    pub delivery: DeliveryReport,
}

/// Progress callbacks for a whole run: records per (connector, stream), then writes delivered of total.
pub struct RunProgress<'a> {
    pub records: &'a (dyn Fn(&str, &str, usize) + Send + Sync),
    pub deliveries: &'a (dyn Fn(usize, usize) + Send + Sync),
}

/// Configured connectors, built, with the store.
pub struct Runtime {
    pub config: Config,
    pub store: Store,
    sources: BTreeMap<String, Box<dyn Source>>,
    sinks: BTreeMap<String, Box<dyn Sink>>,
    exports: BTreeMap<String, Box<dyn connector::Export>>,
    /// Connectors that could not be built, with the reason (no secret values in it).
    pub build_errors: BTreeMap<String, String>,
}

impl Runtime {
    /// Resolves secrets and builds every enabled connector. Failures are kept per connector.
    pub fn build(config: Config, store: Store) -> Runtime {
        let mut sources = BTreeMap::new();
        let mut sinks = BTreeMap::new();
        let mut build_errors = BTreeMap::new();
        for c in config.connectors.iter().filter(|c| c.enabled) {
            let built = ResolvedSecrets::resolve(&c.auth)
                .map_err(|e| e.to_string())
                .and_then(|secrets| {
                    let spec = connector::kind(&c.kind)
                        .ok_or_else(|| format!("unknown kind {}", c.kind))?;
                    (spec.build)(&BuildContext {
                        connector: c,
                        secrets: &secrets,
                    })
                    .map_err(|e| e.to_string())
                });
            match built {
                Ok(Built::Source(s)) => {
                    sources.insert(c.id.clone(), s);
                }
                Ok(Built::Sink(s)) => {
                    sinks.insert(c.id.clone(), s);
                }
                Err(e) => {
                    tracing::error!(connector = %c.id, error = %e, "connector not built");
                    build_errors.insert(c.id.clone(), e);
                }
            }
        }
        let mut exports = BTreeMap::new();
        for e in config.exports.iter().filter(|e| e.enabled) {
            match connector::kinds::build_export(e) {
                Ok(x) => {
                    exports.insert(e.id.clone(), x);
                }
                Err(err) => {
                    tracing::error!(export = %e.id, error = %err, "export not built");
                    build_errors.insert(e.id.clone(), err.to_string());
                }
            }
        }
        Runtime {
            config,
            store,
            sources,
            sinks,
            exports,
            build_errors,
        }
    }

    /// The source connectors to sync: `only` if given (each must be a configured source), else all enabled.
    pub fn select_sources(&self, only: &[String]) -> Result<Vec<String>, PipelineError> {
        if only.is_empty() {
            return Ok(self.config.sources().map(|c| c.id.clone()).collect());
        }
        let mut out = Vec::new();
        for name in only {
            match self.config.connector(name) {
                None => {
                    return Err(PipelineError::UnknownConnector {
                        name: name.clone(),
                        known: self
                            .config
                            .connectors
                            .iter()
                            .map(|c| c.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
                }
                Some(c) if c.role != connector::Role::Source => {
                    return Err(PipelineError::NotASource(name.clone()))
                }
                Some(c) => out.push(c.id.clone()),
            }
        }
        Ok(out)
    }

    /// Syncs the given source connectors one after another. A failing connector is recorded in its status
    /// and the next one runs.
    pub async fn sync(
        &self,
        ids: &[String],
        options: &SyncOptions,
        shutdown: &watch::Receiver<bool>,
        progress: &(dyn Fn(&str, &str, usize) + Send + Sync),
    ) -> Result<Vec<SyncStatus>, PipelineError> {
        let mut out = Vec::new();
        for id in ids {
            let Some(cfg) = self.config.connector(id) else {
                continue;
            };
            let status = match self.sources.get(id) {
                Some(source) => {
                    let p = |stream: &str, n: usize| progress(id, stream, n);
                    let run_id = format!("{:016x}", rand::random::<u64>());
                    let span = tracing::info_span!("sync_run", connector = %id, kind = %cfg.kind, run_id = %run_id);
                    sync::sync_connector(
                        &self.store,
                        id,
                        &cfg.kind,
                        source.as_ref(),
                        options,
                        shutdown,
                        &p,
                    )
                    .instrument(span)
                    .await?
                }
                None => {
                    let reason = self
                        .build_errors
                        .get(id)
                        .cloned()
                        .unwrap_or_else(|| "not built".into());
                    let s = SyncStatus::failed(id, &cfg.kind, Utc::now(), reason);
                    self.store.put_status(&format!("sync/{id}"), &s)?;
                    s
                }
            };
            out.push(status);
        }
        Ok(out)
    }

    /// Streams scoring reads: every stream of every connector the model refers to, since streams the model
    /// does not score (Stripe customers) may be the bridge that joins others (invoices) to an account.
    pub fn model_streams(&self) -> BTreeSet<StreamRef> {
        let m = &self.config.model;
        let mut connectors = BTreeSet::from([m.accounts.stream.connector.clone()]);
        for metric in &m.metrics {
            if let MetricInput::Records { stream, .. } = &metric.input {
                connectors.insert(stream.connector.clone());
            }
        }
        if let Some(o) = &m.outcomes {
            connectors.insert(o.subscriptions.connector.clone());
        }
        let mut set = BTreeSet::new();
        for id in connectors {
            if let Some(c) = self.config.connector(&id) {
                for stream in &c.streams {
                    set.insert(StreamRef {
                        connector: id.clone(),
                        stream: stream.clone(),
                    });
                }
            }
        }
        set
    }

    /// Scores every account from cached records as of `as_of`, stores the scores and their history, then
    /// runs every export (a failing export is recorded in its outcome; the run still counts).
    pub fn score(&self, as_of: DateTime<Utc>) -> Result<ScoreRun, StoreError> {
        let mut run = self.score_and_store(as_of)?;
        run.exports = self.export(&run)?;
        Ok(run)
    }

    /// Scores and stores, without the exports: a backfilled past week is history, not a new current file.
    fn score_and_store(&self, as_of: DateTime<Utc>) -> Result<ScoreRun, StoreError> {
        let run = self.compute_scores(as_of)?;
        let pairs: Vec<(String, &AccountScore)> = run
            .scores
            .iter()
            .map(|s| (s.account.id.clone(), s))
            .collect();
        self.store.put_scores(as_of.date_naive(), &pairs)?;
        self.store.put_meta(
            "last_score_run",
            &ScoreSummary {
                as_of,
                model: run.model.clone(),
                model_hash: run.model_hash.clone(),
                accounts: run.scores.len(),
                distribution: run.distribution.clone(),
                unmatched: run.unmatched.clone(),
                duration_ms: run.duration_ms,
            },
        )?;
        Ok(run)
    }

    /// Scores and stores every account as of each of the `weeks` weeks before `now`, oldest first, from
    /// cached records (metrics never read a record from after their date). For a first install, so trends
    /// and backtests have a history; `on_week(done, total)` reports progress.
    pub fn backfill(
        &self,
        now: DateTime<Utc>,
        weeks: u32,
        on_week: &dyn Fn(usize, usize),
    ) -> Result<(), StoreError> {
        for week in (1..=weeks).rev() {
            self.score_and_store(now - chrono::Duration::weeks(i64::from(week)))?;
            on_week((weeks - week + 1) as usize, weeks as usize);
        }
        Ok(())
    }

    /// Writes a scoring run to every built export, and stores each outcome as the `export/<id>` status.
    /// Each account's 30-day trend is read from the stored history only when an export is configured.
    fn export(&self, run: &ScoreRun) -> Result<Vec<ExportOutcome>, StoreError> {
        if self.exports.is_empty() {
            return Ok(Vec::new());
        }
        let mut trends = BTreeMap::new();
        for s in &run.scores {
            let history: Vec<(String, AccountScore)> = self.store.history(&s.account.id)?;
            if let Some(t) = scoring::trend(&history, s, 30) {
                trends.insert(s.account.id.clone(), t);
            }
        }
        let input = connector::ExportRun {
            as_of: run.as_of,
            model: &self.config.model,
            scores: &run.scores,
            trends: &trends,
        };
        let mut out = Vec::new();
        for (id, export) in &self.exports {
            let clock = Instant::now();
            let result = export.export(&input);
            let outcome = ExportOutcome {
                export: id.clone(),
                as_of: run.as_of,
                files: result.as_ref().map(|f| f.clone()).unwrap_or_default(),
                error: result.as_ref().err().map(|e| e.to_string()),
                duration_ms: clock.elapsed().as_millis() as u64,
            };
            match &outcome.error {
                None => {
                    tracing::info!(export = %id, files = outcome.files.len(), duration_ms = outcome.duration_ms, "export written")
                }
                Some(e) => tracing::error!(export = %id, error = %e, "export failed"),
            }
            self.store.put_status(&format!("export/{id}"), &outcome)?;
            out.push(outcome);
        }
        Ok(out)
    }

    /// Scores every account from cached records as of `as_of` and stores nothing: what `score` persists,
    /// and what a shadow (candidate) model is judged by. Hysteresis compares with the stored scores.
    pub fn compute_scores(&self, as_of: DateTime<Utc>) -> Result<ScoreRun, StoreError> {
        let clock = Instant::now();
        let model = &self.config.model;
        let resolved = self.resolve_accounts()?;
        // Values first, so percentile metrics rank each account against the whole book of business.
        let mut inputs = Vec::with_capacity(resolved.accounts.len());
        let mut previous = BTreeMap::new();
        for data in &resolved.accounts {
            if let Some(p) = self.store.score::<AccountScore>(&data.account.id)? {
                previous.insert(data.account.id.clone(), p);
            }
            let values = crate::metrics::compute(model, data, as_of);
            inputs.push((data.account.clone(), values));
        }
        let scores = scoring::score_all(model, &inputs, |id| previous.get(id).cloned(), as_of);
        Ok(ScoreRun {
            as_of,
            model: model.name.clone(),
            model_hash: model.hash.clone(),
            distribution: Distribution::of(&scores),
            unmatched: resolved
                .unmatched
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            scores,
            duration_ms: clock.elapsed().as_millis() as u64,
            exports: Vec::new(),
        })
    }

    /// Every account with its cached records from the streams the model reads.
    pub fn resolve_accounts(&self) -> Result<identity::Resolved, StoreError> {
        let mut streams = BTreeMap::new();
        for s in self.model_streams() {
            let records = self
                .store
                .records(&s.connector, &s.stream)?
                .collect::<Result<Vec<_>, _>>()?;
            streams.insert(s, records);
        }
        Ok(identity::resolve(&self.config.model.accounts, streams))
    }

    /// The current stored scores (from the last scoring run).
    pub fn stored_scores(&self) -> Result<Vec<AccountScore>, StoreError> {
        self.store.scores()
    }

    /// Plans writes for every enabled sink from the given scores. Sends and stores nothing.
    pub fn plan(&self, scores: &[AccountScore], now: DateTime<Utc>) -> Result<Plan, StoreError> {
        let sinks: Vec<_> = self.config.sinks().collect();
        planner::plan(&self.store, &self.config.model, &sinks, scores, now)
    }

    /// Puts a plan's writes into the durable outbox and records recoveries. Returns the number enqueued.
    pub fn enqueue(&self, plan: &Plan, now: DateTime<Utc>) -> Result<usize, StoreError> {
        for w in &plan.writes {
            self.store
                .enqueue(&w.sink, &w.key, w.op.clone(), w.project.as_ref(), now)?;
        }
        for r in &plan.recoveries {
            if let Some(mut p) = self.store.project(&r.sink, &r.account_id, &r.playbook)? {
                p.state = ProjectState::Resolved { at: now };
                self.store.put_project(&p)?;
            }
        }
        Ok(plan.writes.len())
    }

    /// Delivers what is in the outbox, once.
    pub async fn push(
        &self,
        shutdown: &watch::Receiver<bool>,
        now: DateTime<Utc>,
        progress: &(dyn Fn(usize, usize) + Send + Sync),
    ) -> Result<DeliveryReport, StoreError> {
        let report = outbox::deliver(&self.store, &self.sinks, shutdown, now, progress).await?;
        self.store.put_status("delivery", &report)?;
        self.store.flush()?;
        Ok(report)
    }

    /// Syncs every enabled source, scores as of `now`, plans, enqueues and delivers: `healthsync once`.
    /// Sync, score, plan, queue and push, once. With `backfill_weeks`, first scores as of each of that many
    /// past weeks (as `score --backfill-weeks` does), so the history has something to trend and backtest.
    pub async fn once(
        &self,
        shutdown: &watch::Receiver<bool>,
        now: DateTime<Utc>,
        backfill_weeks: u32,
        progress: RunProgress<'_>,
    ) -> Result<OnceOutcome, PipelineError> {
        let ids = self.select_sources(&[])?;
        let statuses = self
            .sync(&ids, &SyncOptions::default(), shutdown, progress.records)
            .await?;
        self.backfill(now, backfill_weeks, &|_, _| {})?;
        let run = self.score(now)?;
        let plan = self.plan(&run.scores, now)?;
        self.enqueue(&plan, now)?;
        let delivery = self.push(shutdown, now, progress.deliveries).await?;
        Ok(OnceOutcome {
            statuses,
            run,
            plan,
            delivery,
        })
    }
}
