//! Backtests: does the health score predict churn? Scores from the past (the stored score history, or
//! scores recomputed from cached records as of past dates, which never read a record from after that
//! date) are set against outcomes derived from billing data (`outcomes`), and measured: AUC for churn
//! within 30/60/90 days for the overall score and every category and metric, churn rate and net revenue
//! retention by band, the red band's lift, precision and recall of "red" as a churn flag, calibration, and
//! suggested weights fitted on an earlier period and tested on a later one.
//!
//! This file owns the result types (what `healthsync backtest --json` prints and the report draws) and the
//! evaluation. It does not own outcome derivation (`outcomes`), the statistics (`stats`), scoring itself
//! (`crate::scoring`) nor rendering (`crate::report`).

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Band;

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
    /// Accounts whose subscriptions all ended in the observed period.
    pub churn_events: usize,
    /// The overall score, then each category, then each metric: AUC per horizon.
    pub signals: Vec<SignalAuc>,
    /// ROC curve of the overall score for churn within 90 days: (false positive rate, true positive rate),
    /// from (0,0) to (1,1).
    pub roc: Vec<(f64, f64)>,
    /// Per band at the evaluation dates: churn within 90 days and net revenue retention over 90 days.
    pub bands: Vec<BandOutcome>,
    /// Churn within 90 days by overall-score decile, lowest scores first.
    pub deciles: Vec<DecileOutcome>,
    /// "Red" as a churn flag (churn within 90 days).
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
    /// What the band promises, for calibration: the share of all churn a band of this colour is expected
    /// to hold is not a probability, so calibration compares each band's observed rate with the overall
    /// rate (`lift`).
    pub lift: Option<f64>,
    /// MRR 90 days later / MRR on the date, over the band's accounts with MRR on the date.
    pub nrr: Option<f64>,
}

/// Churn within 90 days for one decile of the overall score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecileOutcome {
    /// 1 = lowest scores.
    pub decile: u8,
    pub min_score: f64,
    pub max_score: f64,
    pub observations: usize,
    pub churn_rate: f64,
}

/// "Red" read as a prediction of churn within 90 days.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RedFlag {
    /// Of the red accounts, the share that churned.
    pub precision: f64,
    /// Of the churners, the share that were red.
    pub recall: f64,
    /// Red churn rate / overall churn rate.
    pub lift: f64,
}

/// Suggested category weights (in percent, like the model file) from a logistic regression of churn on the
/// category scores, fitted on the earlier evaluation dates and tested on the later ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightSuggestion {
    pub fitted_on: Vec<NaiveDate>,
    pub tested_on: Vec<NaiveDate>,
    pub rows: Vec<WeightRow>,
    /// Held-out AUC (churn within 90 days) of the overall score with the configured weights.
    pub configured_auc: Option<f64>,
    /// Held-out AUC of the same score with the suggested weights.
    pub suggested_auc: Option<f64>,
    /// Why the suggestion should not be used, when it should not (worse held-out AUC, too few events).
    pub caveat: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightRow {
    pub category: String,
    pub label: String,
    pub configured: f64,
    pub suggested: f64,
}
