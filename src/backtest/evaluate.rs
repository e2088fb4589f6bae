//! Runs a backtest: gathers past scores (replayed from the stored history, or recomputed from cached
//! records as of past dates), sets them against the outcomes, and fills in every figure of `Backtest`.
//!
//! Recomputed scores never read a record from after their date (`crate::metrics` ignores records updated
//! later) and never see a later score (no hysteresis against today's bands). Stored history is only used
//! when it was scored by the same model (same hash). This module reads the store but writes nothing.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};

use super::outcomes::{self, Outcomes};
use super::stats;
use super::*;
use crate::book::Book;
use crate::config::Model;
use crate::scoring::{self, AccountScore};
use crate::store::{RunKey, StoreError};

/// Fewer churned accounts (or fewer that stayed) than this and a figure is not given.
pub const MIN_EVENTS: usize = 10;
/// Recomputed evaluation dates: weekly, this many weeks back from the end of the observed data.
const WEEKS_BACK: i64 = 16;

#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    #[error("the model `{0}` has no [outcomes] section: add one to say where churn and revenue are read from (config/models/starter.toml has an example)")]
    NoOutcomes(String),
    #[error("no accounts in the cache ({0} has no records): run `healthsync sync` first")]
    NoAccounts(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where the past scores come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BacktestOptions {
    /// Recompute scores from cached records even where the stored history has them (a candidate model
    /// has no history; comparing two models recomputes both, on the same dates).
    pub recompute: bool,
}

/// One account's scores on one date, reduced to what is measured.
pub(super) struct Observation {
    pub(super) account: usize,
    pub(super) date: DateTime<Utc>,
    overall: Option<f64>,
    band: Option<Band>,
    /// Model category order.
    categories: Vec<Option<f64>>,
    /// Model metric order.
    pub(super) metrics: Vec<Option<f64>>,
}

fn observe(model: &Model, account: usize, s: &AccountScore) -> Observation {
    Observation {
        account,
        date: s.as_of,
        overall: s.overall,
        band: s.band,
        categories: (model.categories.iter())
            .map(|c| s.category(&c.id).and_then(|x| x.score))
            .collect(),
        metrics: (model.metrics.iter())
            .map(|m| s.metric(&m.id).and_then(|x| x.score))
            .collect(),
    }
}

/// Backtests the book's model against the outcomes in its cache, with data observed until `now` (or
/// the outcome connector's last successful sync, when that is earlier).
pub fn run(
    rt: &Book<'_>,
    now: DateTime<Utc>,
    options: BacktestOptions,
) -> Result<Backtest, BacktestError> {
    run_with_progress(rt, now, options, &|_, _| {})
}

/// [`run`], reporting `(done, total)` as it reads the history (per account) or recomputes (per date).
pub fn run_with_progress(
    rt: &Book<'_>,
    now: DateTime<Utc>,
    options: BacktestOptions,
    progress: &dyn Fn(usize, usize),
) -> Result<Backtest, BacktestError> {
    let model = &rt.config.model;
    let spec = model
        .outcomes
        .as_ref()
        .ok_or_else(|| BacktestError::NoOutcomes(model.name.clone()))?;
    let last_sync: Option<DateTime<Utc>> = rt
        .store
        .status(RunKey::SyncOk(&spec.subscriptions.connector))?;
    let observed_until = last_sync.map_or(now, |t| t.min(now));
    let resolved = rt.resolve_accounts()?;
    if resolved.accounts.is_empty() {
        return Err(BacktestError::NoAccounts(model.accounts.stream.to_string()));
    }
    let outcomes = outcomes::derive(spec, &resolved.accounts, observed_until);
    let ids: Vec<String> = (resolved.accounts.iter())
        .map(|a| a.account.id.clone())
        .collect();

    let mut warnings: Vec<String> = outcomes.problems.iter().take(5).cloned().collect();
    if outcomes.problems.len() > 5 {
        warnings.push(format!(
            "{} more subscription records could not be read",
            outcomes.problems.len() - 5
        ));
    }
    let (observations, dates) = if options.recompute {
        recompute(model, &resolved.accounts, observed_until, progress)
    } else {
        let (obs, dates) = replay(rt, model, &ids, progress)?;
        if dates.len() >= 2 {
            (obs, dates)
        } else {
            if !dates.is_empty() {
                warnings.push("one stored scoring run for this model: past scores were recomputed from cached records instead".into());
            }
            recompute(model, &resolved.accounts, observed_until, progress)
        }
    };
    let no_billing = ids.iter().filter(|id| outcomes.of(id).is_none()).count();
    if no_billing > 0 {
        warnings.push(format!(
            "{no_billing} of {} accounts have no subscription in {}: they are left out (no outcome to judge them by)",
            ids.len(),
            spec.subscriptions
        ));
    }
    let labelled = Labelled {
        ids: &ids,
        outcomes: &outcomes,
        observations: &observations,
        observed_until,
    };
    Ok(measure(model, &labelled, dates, warnings))
}

/// Stored history of this model, grouped by scoring date.
fn replay(
    rt: &Book<'_>,
    model: &Model,
    ids: &[String],
    progress: &dyn Fn(usize, usize),
) -> Result<(Vec<Observation>, Vec<EvaluationDate>), StoreError> {
    let mut observations = Vec::new();
    let mut per_day: BTreeMap<NaiveDate, usize> = BTreeMap::new();
    for (i, id) in ids.iter().enumerate() {
        let mut seen = std::collections::BTreeSet::new();
        for (_, s) in rt.store.history::<AccountScore>(id)? {
            // One score per account and day (the history keeps the day's last run).
            if s.model_hash != model.hash || !seen.insert(s.as_of.date_naive()) {
                continue;
            }
            *per_day.entry(s.as_of.date_naive()).or_default() += usize::from(s.overall.is_some());
            observations.push(observe(model, i, &s));
        }
        progress(i + 1, ids.len());
    }
    let dates = per_day
        .into_iter()
        .map(|(date, scored)| EvaluationDate {
            date,
            source: ScoreSource::Stored,
            scored,
        })
        .collect();
    Ok((observations, dates))
}

/// Scores every account as of each weekly date from cached records, without hysteresis.
fn recompute(
    model: &Model,
    accounts: &[crate::identity::AccountData],
    observed_until: DateTime<Utc>,
    progress: &dyn Fn(usize, usize),
) -> (Vec<Observation>, Vec<EvaluationDate>) {
    let mut observations = Vec::new();
    let mut dates = Vec::new();
    for k in (1..=WEEKS_BACK).rev() {
        let as_of = observed_until - Duration::days(7 * k);
        let inputs: Vec<_> = accounts
            .iter()
            .map(|d| (d.account.clone(), crate::metrics::compute(model, d, as_of)))
            .collect();
        let scores = scoring::score_all(model, &inputs, |_| None, as_of);
        dates.push(EvaluationDate {
            date: as_of.date_naive(),
            source: ScoreSource::Recomputed,
            scored: scores.iter().filter(|s| s.overall.is_some()).count(),
        });
        observations.extend(scores.iter().enumerate().map(|(i, s)| observe(model, i, s)));
        progress((WEEKS_BACK - k + 1) as usize, WEEKS_BACK as usize);
    }
    (observations, dates)
}

/// Observations with what is known of their accounts' outcomes.
pub(super) struct Labelled<'a> {
    pub(super) ids: &'a [String],
    pub(super) outcomes: &'a Outcomes,
    pub(super) observations: &'a [Observation],
    pub(super) observed_until: DateTime<Utc>,
}

impl Labelled<'_> {
    /// Whether the account churned within `horizon` days of the observation, when that is known: the
    /// account paid on the date, had not churned by then, and the window ends before the data does.
    pub(super) fn label(&self, o: &Observation, horizon: u32) -> Option<bool> {
        if o.date + Duration::days(i64::from(horizon)) > self.observed_until {
            return None;
        }
        let outcome = self.outcomes.of(&self.ids[o.account])?;
        if !outcome.customer_at(o.date) || outcome.churned_at.is_some_and(|c| c <= o.date) {
            return None;
        }
        Some(outcome.churned_within(o.date, horizon))
    }

    /// (account, value, churned) of one signal at one horizon, where value and outcome are both known.
    fn pairs(&self, horizon: u32, value: impl Fn(&Observation) -> Option<f64>) -> Vec<Labelled3> {
        self.observations
            .iter()
            .filter_map(|o| Some((o.account, value(o)?, self.label(o, horizon)?)))
            .collect()
    }

    /// Labelled observations at `horizon` that have an overall score.
    fn scored(&self, horizon: u32) -> impl Iterator<Item = (&Observation, bool)> {
        self.observations
            .iter()
            .filter(|o| o.overall.is_some())
            .filter_map(move |o| Some((o, self.label(o, horizon)?)))
    }

    /// MRR `horizon` days after each observation over MRR on its date, summed over the observations.
    fn mrr_ratio<'o>(
        &self,
        horizon: u32,
        of: impl Iterator<Item = &'o Observation>,
    ) -> Option<f64> {
        let (mut before, mut after) = (0.0, 0.0);
        for o in of {
            if let Some(outcome) = self.outcomes.of(&self.ids[o.account]) {
                before += outcome.mrr_at(o.date);
                after += outcome.mrr_at(o.date + Duration::days(i64::from(horizon)));
            }
        }
        (before > 0.0).then(|| after / before)
    }
}

/// An observation's account, its value of one signal, and whether it churned within the horizon.
type Labelled3 = (usize, f64, bool);

/// Distinct accounts among the observations with the given outcome.
fn accounts_with(pairs: &[Labelled3], churned: bool) -> usize {
    let mut ids: Vec<usize> = pairs
        .iter()
        .filter(|p| p.2 == churned)
        .map(|p| p.0)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids.len()
}

/// Enough accounts that churned, and enough that stayed, for a figure to mean something. Counted in
/// accounts, not observations: one churner seen on five dates is still one churn event.
fn enough(pairs: &[Labelled3]) -> bool {
    accounts_with(pairs, true) >= MIN_EVENTS && accounts_with(pairs, false) >= MIN_EVENTS
}

fn value_pairs(pairs: &[Labelled3]) -> Vec<(f64, bool)> {
    pairs.iter().map(|p| (p.1, p.2)).collect()
}

fn measure(
    model: &Model,
    data: &Labelled<'_>,
    dates: Vec<EvaluationDate>,
    mut warnings: Vec<String>,
) -> Backtest {
    let overall = |o: &Observation| o.overall;
    let overall_pairs: Vec<Vec<Labelled3>> =
        HORIZONS.iter().map(|&h| data.pairs(h, overall)).collect();
    for (h, pairs) in HORIZONS.iter().zip(&overall_pairs) {
        let churned = accounts_with(pairs, true);
        if churned < MIN_EVENTS {
            warnings.push(format!(
                "churn within {h} days: {churned} scored accounts churned; a figure needs at least {MIN_EVENTS}",
            ));
        }
    }
    // The horizon with the most churned accounts to learn from (the longer one on a tie).
    let primary = HORIZONS
        .iter()
        .zip(&overall_pairs)
        .filter(|(_, p)| enough(p))
        .max_by_key(|(h, p)| (accounts_with(p, true), **h))
        .map_or(HORIZONS[HORIZONS.len() - 1], |(h, _)| *h);

    let mut signals = vec![signal(
        data,
        ("overall", "Overall score"),
        SignalKind::Overall,
        overall,
    )];
    for (i, c) in model.categories.iter().enumerate() {
        let s = signal(data, (&c.id, &c.label), SignalKind::Category, |o| {
            o.categories[i]
        });
        if s.observations == 0 {
            warnings.push(format!(
                "category `{}` has no score on any evaluation date: its inputs are missing",
                c.id
            ));
        }
        signals.push(s);
    }
    let weights = super::weights::effective(model);
    for (i, m) in model.metrics.iter().enumerate() {
        // A metric no category weighs (an input to a ratio) has no score of its own to judge.
        if weights[i].0 <= 0.0 {
            continue;
        }
        let mut values = data.observations.iter().filter_map(|o| o.metrics[i]);
        match values.next() {
            None => warnings.push(format!(
                "metric `{}` has no score on any evaluation date",
                m.id
            )),
            Some(first) if values.all(|v| v == first) => warnings.push(format!(
                "metric `{}` scores {first} for every account: with no variance it cannot tell churners apart",
                m.id
            )),
            Some(_) => {}
        }
        signals.push(signal(data, (&m.id, &m.label), SignalKind::Metric, |o| {
            o.metrics[i]
        }));
    }

    let labelled = data.pairs(primary, overall);
    let measurable = enough(&labelled);
    let pairs = value_pairs(&labelled);
    let churned_observations = pairs.iter().filter(|p| p.1).count();
    let rate = |n: usize, churned: usize| (n > 0).then(|| churned as f64 / n as f64);
    let base_rate = rate(pairs.len(), churned_observations).filter(|r| *r > 0.0);
    let bands: Vec<BandOutcome> = [Band::Red, Band::Amber, Band::Green]
        .into_iter()
        .map(|band| {
            let in_band: Vec<(&Observation, bool)> = data
                .scored(primary)
                .filter(|(o, _)| o.band == Some(band))
                .collect();
            let churned = in_band.iter().filter(|(_, c)| *c).count();
            let churn_rate = rate(in_band.len(), churned);
            let moves: Vec<bool> = in_band
                .iter()
                .filter_map(|(o, _)| {
                    let outcome = data.outcomes.of(&data.ids[o.account])?;
                    outcome.revenue_change_within(o.date, primary)
                })
                .collect();
            BandOutcome {
                band,
                observations: in_band.len(),
                churned,
                churn_rate,
                lift: churn_rate.zip(base_rate).map(|(r, b)| r / b),
                nrr: data.mrr_ratio(primary, in_band.iter().map(|(o, _)| *o)),
                expanded: moves.iter().filter(|up| **up).count(),
                downgraded: moves.iter().filter(|up| !**up).count(),
            }
        })
        .collect();
    let rate_of = |b: Band| {
        bands
            .iter()
            .find(|x| x.band == b)
            .and_then(|x| x.churn_rate)
    };
    if let (Some(r), Some(a), Some(g)) = (
        rate_of(Band::Red),
        rate_of(Band::Amber),
        rate_of(Band::Green),
    ) {
        if !(r >= a && a >= g) {
            warnings.push(format!(
                "the bands are out of order: churn within {primary} days is {:.0}% for red, {:.0}% for amber, {:.0}% for green",
                r * 100.0,
                a * 100.0,
                g * 100.0
            ));
        }
    }
    let red_flag = measurable.then(|| {
        let red: Vec<bool> = data
            .scored(primary)
            .filter(|(o, _)| o.band == Some(Band::Red))
            .map(|(_, c)| c)
            .collect();
        let red_churned = red.iter().filter(|c| **c).count();
        let precision = rate(red.len(), red_churned).unwrap_or(0.0);
        RedFlag {
            precision,
            recall: red_churned as f64 / churned_observations.max(1) as f64,
            lift: base_rate.map_or(0.0, |b| precision / b),
        }
    });
    let deciles = if measurable {
        stats::deciles(&pairs)
            .into_iter()
            .zip(1u8..)
            .map(|((min, max, n, churned), decile)| DecileOutcome {
                decile,
                min_score: min,
                max_score: max,
                observations: n,
                churn_rate: churned as f64 / n.max(1) as f64,
            })
            .collect()
    } else {
        Vec::new()
    };
    let roc = if measurable {
        stats::roc(&pairs)
    } else {
        Vec::new()
    };
    let suggestion = super::weights::suggest(model, &weights, data, dates.len(), &mut warnings);
    let mut accounts: Vec<usize> = data.observations.iter().map(|o| o.account).collect();
    accounts.sort_unstable();
    accounts.dedup();
    Backtest {
        model: model.name.clone(),
        model_hash: model.hash.clone(),
        observed_until: data.observed_until,
        dates,
        accounts: accounts.len(),
        churn_events: data.outcomes.churn_events(),
        primary_horizon: primary,
        signals,
        roc,
        bands,
        cohorts: data.outcomes.cohorts(data.observed_until),
        deciles,
        red_flag,
        suggestion,
        warnings,
    }
}

fn signal(
    data: &Labelled<'_>,
    (id, label): (&str, &str),
    kind: SignalKind,
    value: impl Fn(&Observation) -> Option<f64> + Copy,
) -> SignalAuc {
    SignalAuc {
        id: id.into(),
        label: label.into(),
        kind,
        auc: HORIZONS
            .iter()
            .map(|&h| {
                let pairs = data.pairs(h, value);
                enough(&pairs)
                    .then(|| stats::auc(&value_pairs(&pairs)))
                    .flatten()
            })
            .collect(),
        observations: data
            .observations
            .iter()
            .filter(|o| value(o).is_some())
            .count(),
    }
}
