//! Score history: trends over 7/30/90 days and what changed since the previous run, telling a model
//! change (a different model hash) apart from inputs that moved.
//!
//! Pure functions over stored `AccountScore`s; reading the history from the store is the caller's job.

use chrono::Duration;
use serde::Serialize;

use super::AccountScore;

/// Change of the overall score against the newest stored score at least `days` before `current`. `None`
/// when there is no such point, either score is N/A, or the model changed in between.
pub fn trend(history: &[(String, AccountScore)], current: &AccountScore, days: i64) -> Option<f64> {
    let cutoff = current.as_of - Duration::days(days);
    let then = history
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.as_of <= cutoff)
        .max_by_key(|s| s.as_of)?;
    if then.model_hash != current.model_hash {
        return None;
    }
    Some(current.overall? - then.overall?)
}

/// One input that moved between two runs of the same model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InputChange {
    pub id: String,
    pub label: String,
    pub old_value: Option<f64>,
    pub new_value: Option<f64>,
    pub old_score: Option<f64>,
    pub new_score: Option<f64>,
    /// Change in the metric's contribution to the overall score, in points.
    pub points: f64,
}

/// What changed since the previous score, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// The model file changed: scores are not comparable input by input.
    ModelChanged { old_hash: String, new_hash: String },
    /// Same model: these inputs moved, largest effect first; risk events that started or ended.
    Inputs {
        overall_delta: Option<f64>,
        inputs: Vec<InputChange>,
        risks_started: Vec<String>,
        risks_ended: Vec<String>,
    },
}

pub fn changes(previous: &AccountScore, current: &AccountScore) -> Change {
    if previous.model_hash != current.model_hash {
        return Change::ModelChanged {
            old_hash: previous.model_hash.clone(),
            new_hash: current.model_hash.clone(),
        };
    }
    let mut inputs = Vec::new();
    for c in &current.categories {
        for m in &c.metrics {
            let Some(old) = previous.metric(&m.id) else {
                continue;
            };
            if old.value != m.value || old.score != m.score {
                inputs.push(InputChange {
                    id: m.id.clone(),
                    label: m.label.clone(),
                    old_value: old.value,
                    new_value: m.value,
                    old_score: old.score,
                    new_score: m.score,
                    points: m.contribution - old.contribution,
                });
            }
        }
    }
    inputs.sort_by(|a, b| {
        b.points
            .abs()
            .total_cmp(&a.points.abs())
            .then_with(|| a.id.cmp(&b.id))
    });
    let ids = |s: &AccountScore| -> Vec<String> { s.risks.iter().map(|r| r.id.clone()).collect() };
    let (before, after) = (ids(previous), ids(current));
    Change::Inputs {
        overall_delta: current.overall.zip(previous.overall).map(|(a, b)| a - b),
        inputs,
        risks_started: after
            .iter()
            .filter(|r| !before.contains(r))
            .cloned()
            .collect(),
        risks_ended: before
            .iter()
            .filter(|r| !after.contains(r))
            .cloned()
            .collect(),
    }
}
