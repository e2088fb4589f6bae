//! Suggested weights: a regularised logistic regression of churn on the metric scores, fitted on earlier
//! evaluation dates and tested on later ones, beside the model's configured (effective) weights.
//!
//! Pure: it reads the labelled observations `evaluate` gathered and returns a `WeightSuggestion` (or says
//! why there is none). It does not choose the evaluation dates nor label them.

use chrono::{DateTime, Duration, NaiveDate, Utc};

use super::evaluate::{Labelled, Observation, MIN_EVENTS};
use super::{stats, WeightRow, WeightSuggestion, HORIZONS};
use crate::config::{Model, Node};

/// L2 penalty of the weight fit, on standardised scores.
const RIDGE: f64 = 1.0;

/// Each metric's effective share of the overall score (what [`suggest`] takes as `configured`) (its share of its category times the category's
/// share of its parent, up to the top), with the category that weighs it.
pub(super) fn effective(model: &Model) -> Vec<(f64, String)> {
    let chain = |id: &str| {
        let (mut w, mut cat) = (1.0, model.category(id));
        while let Some(c) = cat {
            w *= c.weight;
            cat = c.parent.as_deref().and_then(|p| model.category(p));
        }
        w
    };
    model
        .metrics
        .iter()
        .map(|m| {
            let owner = model.categories.iter().find_map(|c| {
                c.children.iter().find_map(|(n, w)| match n {
                    Node::Metric(id) if *id == m.id => Some((w * chain(&c.id), c.id.clone())),
                    _ => None,
                })
            });
            owner.unwrap_or((0.0, String::new()))
        })
        .collect()
}

/// The weighted mean of the present metric scores (a missing one's weight spread over the rest).
fn weighted(o: &Observation, weights: &[f64]) -> Option<f64> {
    let (mut sum, mut total) = (0.0, 0.0);
    for (s, w) in o.metrics.iter().zip(weights) {
        if let Some(s) = s {
            sum += s * w;
            total += w;
        }
    }
    (total > 0.0).then(|| sum / total)
}

fn distinct_dates(set: &[&Observation]) -> Vec<NaiveDate> {
    let mut d: Vec<NaiveDate> = set.iter().map(|o| o.date.date_naive()).collect();
    d.sort();
    d.dedup();
    d
}

/// Fits metric weights on the earlier dates and tests them on the later ones, at the longest horizon that
/// leaves enough churn events on both sides. Every training window ends by the first test date, so no
/// churn the test counts was seen in training.
pub(super) fn suggest(
    model: &Model,
    configured: &[(f64, String)],
    data: &Labelled<'_>,
    date_count: usize,
    warnings: &mut Vec<String>,
) -> Option<WeightSuggestion> {
    let used: Vec<usize> = (0..model.metrics.len())
        .filter(|&i| configured[i].0 > 0.0)
        .collect();
    for &h in HORIZONS.iter().rev() {
        let labelled: Vec<(&Observation, bool)> = data
            .observations
            .iter()
            .filter_map(|o| Some((o, data.label(o, h)?)))
            .collect();
        let mut days: Vec<DateTime<Utc>> = labelled.iter().map(|(o, _)| o.date).collect();
        days.sort();
        days.dedup();
        let horizon = Duration::days(i64::from(h));
        let churned = |set: &[&(&Observation, bool)]| {
            let mut ids: Vec<usize> = set
                .iter()
                .filter(|(_, c)| *c)
                .map(|(o, _)| o.account)
                .collect();
            ids.sort_unstable();
            ids.dedup();
            ids.len()
        };
        let split_at = |split: DateTime<Utc>| {
            let train: Vec<&(&Observation, bool)> = labelled
                .iter()
                .filter(|(o, _)| o.date + horizon <= split)
                .collect();
            let test: Vec<&(&Observation, bool)> =
                labelled.iter().filter(|(o, _)| o.date >= split).collect();
            (train, test)
        };
        // The split date that leaves the most churned accounts on its thinner side.
        let best = days
            .iter()
            .map(|&d| {
                let (train, test) = split_at(d);
                (churned(&train).min(churned(&test)), d)
            })
            .max();
        let Some((fewest, split)) = best else {
            continue;
        };
        if fewest < MIN_EVENTS {
            continue;
        }
        let (train, test) = split_at(split);
        // A missing score takes the training mean, so an absent input neither helps nor hurts.
        let means: Vec<f64> = used
            .iter()
            .map(|&i| {
                let v: Vec<f64> = train.iter().filter_map(|(o, _)| o.metrics[i]).collect();
                if v.is_empty() {
                    50.0
                } else {
                    v.iter().sum::<f64>() / v.len() as f64
                }
            })
            .collect();
        let x: Vec<Vec<f64>> = train
            .iter()
            .map(|(o, _)| {
                used.iter()
                    .zip(&means)
                    .map(|(&i, mean)| o.metrics[i].unwrap_or(*mean))
                    .collect()
            })
            .collect();
        let y: Vec<bool> = train.iter().map(|(_, c)| *c).collect();
        let Some(fit) = stats::fit_churn(&x, &y, RIDGE) else {
            warnings.push(format!(
                "the weight fit did not converge on churn within {h} days"
            ));
            return None;
        };
        let mut suggested = vec![0.0; model.metrics.len()];
        for (k, &i) in used.iter().enumerate() {
            // A point of score that lowers the odds of churn earns weight; one that raises them, none.
            suggested[i] = (-fit.per_point(k)).max(0.0);
        }
        let total: f64 = suggested.iter().sum();
        if total > 0.0 {
            suggested.iter_mut().for_each(|w| *w /= total);
        }
        let now: Vec<f64> = configured.iter().map(|(w, _)| *w).collect();
        let test_auc = |w: &[f64]| {
            let pairs: Vec<(f64, bool)> = test
                .iter()
                .filter_map(|(o, c)| Some((weighted(o, w)?, *c)))
                .collect();
            stats::auc(&pairs)
        };
        let configured_auc = test_auc(&now);
        let suggested_auc = (total > 0.0).then(|| test_auc(&suggested)).flatten();
        let caveat = match (configured_auc, suggested_auc) {
            _ if total <= 0.0 => Some(
                "no metric's score went with less churn on the earlier dates: nothing to suggest"
                    .to_string(),
            ),
            (Some(c), Some(s)) if s <= c => Some(format!(
                "the suggested weights did no better on the later dates (AUC {s:.3} vs {c:.3}): keep the configured ones"
            )),
            _ => None,
        };
        let train_obs: Vec<&Observation> = train.iter().map(|(o, _)| *o).collect();
        let test_obs: Vec<&Observation> = test.iter().map(|(o, _)| *o).collect();
        return Some(WeightSuggestion {
            horizon: h,
            fitted_on: distinct_dates(&train_obs),
            tested_on: distinct_dates(&test_obs),
            rows: used
                .iter()
                .map(|&i| WeightRow {
                    metric: model.metrics[i].id.clone(),
                    label: model.metrics[i].label.clone(),
                    category: configured[i].1.clone(),
                    configured: round1(configured[i].0 * 100.0),
                    suggested: round1(suggested[i] * 100.0),
                })
                .collect(),
            configured_auc,
            suggested_auc,
            caveat,
        });
    }
    warnings.push(format!(
        "too few churn events to fit weights on earlier dates and test them on later ones (at least {MIN_EVENTS} on each side, over {date_count} evaluation dates)"
    ));
    None
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
