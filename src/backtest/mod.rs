//! Backtests: does the health score predict churn? Scores from the past (the stored score history, or
//! scores recomputed from cached records as of past dates, which never read a record from after that
//! date) are set against outcomes derived from billing data (`outcomes`), and measured: AUC for churn
//! within 30/60/90 days for the overall score and every category and metric, churn rate and net revenue
//! retention by band, the red band's lift, precision and recall of "red" as a churn flag, calibration, and
//! suggested weights fitted on an earlier period and tested on a later one.
//!
//! This file owns the result types (what `healthsync backtest --json` prints and the report draws); the
//! evaluation is `evaluate`, the weight fit `weights`, outcome derivation `outcomes` and the statistics
//! `stats`. Scoring itself is `crate::scoring`, rendering `crate::report`.

mod evaluate;
pub mod outcomes;
pub mod stats;
mod weights;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Band;

pub use evaluate::{run, run_with_progress, BacktestError, BacktestOptions};

/// The churn horizons every figure is given for, in days.
pub const HORIZONS: [u32; 3] = [30, 60, 90];

/// A backtest of one model against the outcomes in the cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backtest {
    pub model: String,
    pub model_hash: String,
    /// The newest data the outcomes were read from: an outcome window must end by then to count.
    pub observed_until: DateTime<Utc>,
    /// The dates scores were taken at, oldest first, and where each date's scores came from.
    pub dates: Vec<EvaluationDate>,
    /// Distinct accounts scored on at least one evaluation date.
    pub accounts: usize,
    /// Accounts that churned in the observed period (see `outcomes`).
    pub churn_events: usize,
    /// The horizon the band, decile, ROC and red-flag figures use: of `HORIZONS` with enough churn events
    /// to mean something, the one with the most churned accounts (90 when none has enough).
    pub primary_horizon: u32,
    /// The overall score, then each category, then each metric: AUC per horizon.
    pub signals: Vec<SignalAuc>,
    /// ROC curve of the overall score for churn within the primary horizon: (false positive rate, true positive rate),
    /// from (0,0) to (1,1).
    pub roc: Vec<(f64, f64)>,
    /// Per band at the evaluation dates: churn and net revenue retention within the primary horizon.
    pub bands: Vec<BandOutcome>,
    /// Net revenue retention by start-quarter cohort, oldest first.
    #[serde(default)]
    pub cohorts: Vec<CohortRetention>,
    /// Churn within the primary horizon by overall-score decile, lowest scores first.
    pub deciles: Vec<DecileOutcome>,
    /// "Red" as a churn flag (churn within the primary horizon).
    pub red_flag: Option<RedFlag>,
    /// Weights fitted by regularised logistic regression on the earlier dates, tested on the later ones.
    pub suggestion: Option<WeightSuggestion>,
    /// Thin or bad data, said plainly: too few churn events, a metric with no variance, an empty category.
    pub warnings: Vec<String>,
}

/// Where one evaluation date's scores came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationDate {
    pub date: NaiveDate,
    /// `stored` (replayed from the score history) or `recomputed` (from cached records, no look-ahead).
    pub source: ScoreSource,
    /// Accounts with an overall score on this date (not N/A, not churned before it).
    pub scored: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreSource {
    Stored,
    Recomputed,
}

/// How well one signal (the overall score, a category or a metric) ranks churners below the rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalAuc {
    /// `overall`, a category id or a metric id.
    pub id: String,
    pub label: String,
    pub kind: SignalKind,
    /// AUC for churn within each of `HORIZONS` (same order); `None` when it cannot mean anything (fewer
    /// than the minimum churn events, or no variance). 0.5 is chance; higher is better.
    pub auc: Vec<Option<f64>>,
    /// (account, date) pairs with a value for this signal.
    pub observations: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    Overall,
    Category,
    Metric,
}

/// Outcomes of the accounts that were in one band on an evaluation date.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BandOutcome {
    pub band: Band,
    /// (account, date) pairs in the band.
    pub observations: usize,
    pub churned: usize,
    /// churned / observations.
    pub churn_rate: Option<f64>,
    /// Calibration: a band is not a probability, so each band's observed churn rate is compared with the
    /// overall rate (red should be well above 1, green well below).
    pub lift: Option<f64>,
    /// MRR a horizon later / MRR on the date, over the band's accounts with MRR on the date.
    pub nrr: Option<f64>,
    /// Observations whose account expanded (MRR up) or downgraded (MRR down) within the horizon without
    /// churning.
    #[serde(default)]
    pub expanded: usize,
    #[serde(default)]
    pub downgraded: usize,
}

/// Net revenue retention of the accounts that started in one quarter: their MRR at the end of the observed
/// data over their MRR a month after they started (churned accounts count at zero).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CohortRetention {
    /// `2025-Q3`.
    pub cohort: String,
    pub accounts: usize,
    pub churned: usize,
    pub starting_mrr: f64,
    pub current_mrr: f64,
    pub nrr: Option<f64>,
}

/// Churn within the primary horizon for one decile of the overall score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecileOutcome {
    /// 1 = lowest scores.
    pub decile: u8,
    pub min_score: f64,
    pub max_score: f64,
    pub observations: usize,
    pub churn_rate: f64,
}

/// "Red" read as a prediction of churn within the primary horizon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RedFlag {
    /// Of the red accounts, the share that churned.
    pub precision: f64,
    /// Of the churners, the share that were red.
    pub recall: f64,
    /// Red churn rate / overall churn rate.
    pub lift: f64,
}

/// Suggested metric weights from a regularised logistic regression of churn on the metric scores, fitted
/// on the earlier evaluation dates and tested on the later ones (never on the same data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightSuggestion {
    /// Churn within this many days is what was fitted and tested.
    pub horizon: u32,
    pub fitted_on: Vec<NaiveDate>,
    pub tested_on: Vec<NaiveDate>,
    /// One row per metric, in percent of the overall score (each row's share of the whole model).
    pub rows: Vec<WeightRow>,
    /// Held-out AUC of the weighted metric scores with the configured (effective) weights.
    pub configured_auc: Option<f64>,
    /// Held-out AUC of the same weighted sum with the suggested weights.
    pub suggested_auc: Option<f64>,
    /// Why the suggestion should not be used, when it should not (worse held-out AUC, too few events).
    pub caveat: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightRow {
    pub metric: String,
    pub label: String,
    /// The category that weighs it.
    pub category: String,
    /// Effective share of the overall score today, in percent (category weight × metric weight).
    pub configured: f64,
    /// Suggested share, in percent; 0 for a metric whose higher scores went with more churn.
    pub suggested: f64,
}
