//! The book of business as healthsync holds it: the cached records and stored scores (`store`) read
//! through the health model (`config`). Scoring now, backfilling past weeks, a shadow model's scores,
//! the backtest and the report all read through a [`Book`]; none of them needs a connector, an HTTP
//! client or a secret, and a `Book` has none to give.
//!
//! Syncing, planning against the sinks, delivery and exports are `crate::pipeline`'s `Runtime`, which
//! owns the connectors and lends its store and config out as a `Book`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{Config, MetricInput, StreamRef};
use crate::identity::{self, Unmatched};
use crate::scoring::{self, AccountScore, Distribution};
use crate::store::{MetaKey, Store, StoreError};

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

/// The store read through the model: what scoring, backfill, the backtest and the report read.
#[derive(Clone, Copy)]
pub struct Book<'a> {
    pub config: &'a Config,
    pub store: &'a Store,
}

impl Book<'_> {
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

    /// Scores and stores, without the exports: a backfilled past week is history, not a new current file.
    pub fn score_and_store(&self, as_of: DateTime<Utc>) -> Result<ScoreRun, StoreError> {
        let run = self.compute_scores(as_of)?;
        let pairs: Vec<(String, &AccountScore)> = run
            .scores
            .iter()
            .map(|s| (s.account.id.clone(), s))
            .collect();
        self.store.put_scores(as_of.date_naive(), &pairs)?;
        self.store.put_meta(
            MetaKey::LastScoreRun,
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
}
