//! The pipeline as library calls: build connectors, sync, score, plan, enqueue, push.
//!
//! Shared by the CLI subcommands, the daemon's scheduled jobs and the demo, so all three run the same code.
//! A connector that cannot be built (a secret missing on this machine) is recorded and skipped; the others
//! run. Time is always passed in (`as_of`, `now`): the demo runs on the simulator's clock, tests on a fixed
//! one. This module wires; the work itself is in `sync`, `identity`, `metrics`, `scoring`, `planner` and
//! `outbox`.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tracing::Instrument as _;

use crate::book::{Book, ExportOutcome, ScoreRun};
use crate::config::Config;
use crate::connector::{self, BuildContext, Built, Sink, Source};
use crate::outbox::{self, DeliveryReport};
use crate::planner::{self, Plan};
use crate::scoring::{self, AccountScore};
use crate::secrets::ResolvedSecrets;
use crate::store::{ProjectState, RunKey, Store, StoreError};
use crate::sync::{self, SyncOptions, SyncStatus};
use crate::vocab::Role;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("unknown connector `{name}`; configured connectors: {known}")]
    UnknownConnector { name: String, known: String },
    #[error("connector {0} is a sink; only sources sync")]
    NotASource(String),
    #[error(transparent)]
    Store(#[from] StoreError),
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
    /// The read side: the store and the model, without the connectors.
    pub fn book(&self) -> Book<'_> {
        Book {
            config: &self.config,
            store: &self.store,
        }
    }

    /// Resolves secrets and builds every enabled connector. Failures are kept per connector.
    pub fn build(config: Config, store: Store) -> Runtime {
        let mut sources = BTreeMap::new();
        let mut sinks = BTreeMap::new();
        let mut build_errors = BTreeMap::new();
        for c in config.connectors.iter().filter(|c| c.enabled) {
            let built = ResolvedSecrets::resolve(&c.auth)
                .map_err(|e| e.to_string())
                .and_then(|secrets| {
                    let kind = connector::kind(&c.kind)
                        .ok_or_else(|| format!("unknown kind {}", c.kind))?;
                    kind.build(&BuildContext {
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
                Some(c) if c.role != Role::Source => {
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
                    self.store.put_status(RunKey::Sync(id), &s)?;
                    s
                }
            };
            out.push(status);
        }
        Ok(out)
    }

    /// Scores every account from cached records as of `as_of`, stores the scores and their history, then
    /// runs every export (a failing export is recorded in its outcome; the run still counts).
    pub fn score(&self, as_of: DateTime<Utc>) -> Result<ScoreRun, StoreError> {
        let mut run = self.book().score_and_store(as_of)?;
        run.exports = self.export(&run)?;
        Ok(run)
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
            self.store.put_status(RunKey::Export(id), &outcome)?;
            out.push(outcome);
        }
        Ok(out)
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
        self.store.put_status(RunKey::Delivery, &report)?;
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
        self.book().backfill(now, backfill_weeks, &|_, _| {})?;
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
