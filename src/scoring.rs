//! Scoring: metric values → 1–100 metric scores → weighted categories → an overall score, with bands,
//! coverage and the inputs that cost the most points.
//!
//! Pure: no I/O, no async, no clock (time comes in as `as_of`), and deterministic bit for bit for the same
//! inputs. Missing inputs have their weight redistributed over present ones, and the score carries the share
//! of weight that was present (coverage); below the model's minimum the score is N/A. Band changes use the
//! model's hysteresis margin against the previous band, so an account hovering at a threshold does not flap.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{Band, Bands, Model, ScoreFn};
use crate::identity::Account;
use crate::metrics::MetricValue;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricScore {
    pub id: String,
    pub label: String,
    pub value: Option<f64>,
    pub score: Option<f64>,
    pub band: Option<Band>,
    /// Share of its category, as configured (0–1).
    pub weight: f64,
    /// Overall points this metric cost the account: its effective overall weight × (100 − score).
    pub points_lost: f64,
    pub missing: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryScore {
    pub id: String,
    pub label: String,
    pub score: Option<f64>,
    pub band: Option<Band>,
    /// Share of the overall score, as configured (0–1).
    pub weight: f64,
    pub coverage: f64,
    pub metrics: Vec<MetricScore>,
}

/// One account's score as of one time: what is stored, shown, explained and written back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountScore {
    pub account: Account,
    pub as_of: DateTime<Utc>,
    pub model_hash: String,
    pub overall: Option<f64>,
    pub band: Option<Band>,
    pub coverage: f64,
    pub categories: Vec<CategoryScore>,
}

impl AccountScore {
    pub fn category(&self, id: &str) -> Option<&CategoryScore> {
        self.categories.iter().find(|c| c.id == id)
    }

    /// Scored metrics ranked by the points they cost, worst first (ties by id, for determinism).
    pub fn drags(&self) -> Vec<&MetricScore> {
        let mut all: Vec<&MetricScore> = self
            .categories
            .iter()
            .flat_map(|c| &c.metrics)
            .filter(|m| m.score.is_some())
            .collect();
        all.sort_by(|a, b| {
            b.points_lost
                .total_cmp(&a.points_lost)
                .then_with(|| a.id.cmp(&b.id))
        });
        all
    }

    /// The input that hurts most, if it costs anything at all.
    pub fn top_drag(&self) -> Option<&MetricScore> {
        self.drags()
            .into_iter()
            .next()
            .filter(|m| m.points_lost > 0.0)
    }
}

/// Maps a raw value onto 1–100 with the metric's scoring function.
pub fn apply(f: &ScoreFn, x: f64) -> f64 {
    let s = match f {
        ScoreFn::Linear(points) => {
            let (first, last) = (points[0], points[points.len() - 1]);
            if x <= first.0 {
                first.1
            } else if x >= last.0 {
                last.1
            } else {
                points
                    .windows(2)
                    .find(|w| x <= w[1].0)
                    .map(|w| w[0].1 + (x - w[0].0) * (w[1].1 - w[0].1) / (w[1].0 - w[0].0))
                    .unwrap_or(last.1)
            }
        }
        ScoreFn::Steps(points) => {
            points
                .iter()
                .rev()
                .find(|(at, _)| x >= *at)
                .unwrap_or(&points[0])
                .1
        }
    };
    s.clamp(1.0, 100.0)
}

/// The band a score falls in, with no history.
pub fn band_of(score: f64, bands: &Bands) -> Band {
    if score < bands.red_below {
        Band::Red
    } else if score < bands.green_from {
        Band::Amber
    } else {
        Band::Green
    }
}

/// The band with hysteresis: leaving `previous` needs the score to clear the threshold by `margin`.
pub fn band_with_hysteresis(score: f64, previous: Option<Band>, bands: &Bands) -> Band {
    let raw = band_of(score, bands);
    match previous {
        None => raw,
        Some(prev) if raw > prev => prev.max(band_of(score - bands.margin, bands)),
        Some(prev) if raw < prev => prev.min(band_of(score + bands.margin, bands)),
        Some(prev) => prev,
    }
}

/// Scores one account. `previous` is its last stored score (for hysteresis), if any.
pub fn score_account(
    model: &Model,
    account: &Account,
    values: &BTreeMap<String, MetricValue>,
    previous: Option<&AccountScore>,
    as_of: DateTime<Utc>,
) -> AccountScore {
    // Previous bands only count when the model is the same: a new model starts from fresh bands.
    let previous = previous.filter(|p| p.model_hash == model.hash);
    let mut categories = Vec::with_capacity(model.categories.len());
    for c in &model.categories {
        let prev_cat = previous.and_then(|p| p.category(&c.id));
        let mut metrics = Vec::with_capacity(c.metrics.len());
        let (mut sum, mut present) = (0.0, 0.0);
        for (id, weight) in &c.metrics {
            let Some(m) = model.metric(id) else { continue };
            let v = values.get(id);
            let value = v.and_then(|v| v.value);
            let score = match (&m.score, value) {
                (Some(f), Some(x)) => Some(apply(f, x)),
                _ => None,
            };
            if let Some(s) = score {
                sum += weight * s;
                present += weight;
            }
            let prev_band = prev_cat
                .and_then(|pc| pc.metrics.iter().find(|pm| pm.id == *id))
                .and_then(|pm| pm.band);
            metrics.push(MetricScore {
                id: id.clone(),
                label: m.label.clone(),
                value,
                score,
                band: score.map(|s| band_with_hysteresis(s, prev_band, &model.bands)),
                weight: *weight,
                points_lost: 0.0,
                missing: if score.is_some() {
                    None
                } else {
                    v.and_then(|v| v.missing.clone())
                        .or_else(|| Some("no value".into()))
                },
            });
        }
        let score = (present > 0.0).then(|| sum / present);
        categories.push(CategoryScore {
            id: c.id.clone(),
            label: c.label.clone(),
            band: score
                .map(|s| band_with_hysteresis(s, prev_cat.and_then(|p| p.band), &model.bands)),
            score,
            weight: c.weight,
            coverage: present,
            metrics,
        });
    }

    let (mut sum, mut present, mut coverage) = (0.0, 0.0, 0.0);
    for c in &categories {
        if let Some(s) = c.score {
            sum += c.weight * s;
            present += c.weight;
            coverage += c.weight * c.coverage;
        }
    }
    let overall = (present > 0.0 && coverage >= model.min_coverage).then(|| sum / present);
    // Effective weight of a metric in the overall score, after redistribution at both levels.
    for c in &mut categories {
        if c.score.is_none() || present == 0.0 {
            continue;
        }
        let cat_share = c.weight / present;
        let cov = c.coverage;
        for m in &mut c.metrics {
            if let Some(s) = m.score {
                m.points_lost = cat_share * (m.weight / cov) * (100.0 - s);
            }
        }
    }
    AccountScore {
        account: account.clone(),
        as_of,
        model_hash: model.hash.clone(),
        band: overall.map(|s| band_with_hysteresis(s, previous.and_then(|p| p.band), &model.bands)),
        overall,
        coverage,
        categories,
    }
}

/// Accounts per band, N/A last.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Distribution {
    pub red: usize,
    pub amber: usize,
    pub green: usize,
    pub not_scored: usize,
}

impl Distribution {
    pub fn of<'a>(scores: impl IntoIterator<Item = &'a AccountScore>) -> Distribution {
        let mut d = Distribution::default();
        for s in scores {
            match s.band {
                Some(Band::Red) => d.red += 1,
                Some(Band::Amber) => d.amber += 1,
                Some(Band::Green) => d.green += 1,
                None => d.not_scored += 1,
            }
        }
        d
    }

    /// A band holding over 60% of scored accounts makes the score hard to act on.
    pub fn lopsided(&self) -> Option<(Band, f64)> {
        let total = (self.red + self.amber + self.green) as f64;
        if total == 0.0 {
            return None;
        }
        [
            (Band::Red, self.red),
            (Band::Amber, self.amber),
            (Band::Green, self.green),
        ]
        .into_iter()
        .map(|(b, n)| (b, n as f64 / total))
        .find(|(_, share)| *share > 0.6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AccountsSpec, Aggregate, Category, Metric, MetricInput, StreamRef};

    const BANDS: Bands = Bands {
        red_below: 40.0,
        green_from: 70.0,
        margin: 5.0,
    };

    #[test]
    fn linear_and_steps_stay_in_range() {
        let lin = ScoreFn::Linear(vec![(0.0, 1.0), (10.0, 100.0)]);
        for (x, want) in [
            (-5.0, 1.0),
            (0.0, 1.0),
            (5.0, 50.5),
            (10.0, 100.0),
            (99.0, 100.0),
        ] {
            assert_eq!(apply(&lin, x), want, "linear at {x}");
        }
        let down = ScoreFn::Linear(vec![(0.0, 100.0), (30.0, 50.0), (90.0, 1.0)]);
        assert_eq!(apply(&down, 15.0), 75.0);
        let steps = ScoreFn::Steps(vec![(0.0, 10.0), (3.0, 60.0), (10.0, 100.0)]);
        for (x, want) in [(-1.0, 10.0), (2.9, 10.0), (3.0, 60.0), (50.0, 100.0)] {
            assert_eq!(apply(&steps, x), want, "steps at {x}");
        }
    }

    #[test]
    fn hysteresis_needs_the_margin_to_change_band() {
        // (score, previous, expected)
        let cases = [
            (38.0, None, Band::Red),
            (41.0, Some(Band::Red), Band::Red), // above 40 but not by 5
            (45.0, Some(Band::Red), Band::Amber), // cleared the margin
            (37.0, Some(Band::Amber), Band::Amber),
            (34.9, Some(Band::Amber), Band::Red),
            (90.0, Some(Band::Red), Band::Green), // a big jump crosses two bands
            (66.0, Some(Band::Green), Band::Green),
            (64.0, Some(Band::Green), Band::Amber),
        ];
        for (score, prev, want) in cases {
            assert_eq!(
                band_with_hysteresis(score, prev, &BANDS),
                want,
                "score {score} from {prev:?}"
            );
        }
    }

    fn model() -> Model {
        let m = |id: &str| Metric {
            id: id.into(),
            label: id.to_uppercase(),
            input: MetricInput::Records {
                stream: StreamRef {
                    connector: "c".into(),
                    stream: "s".into(),
                },
                aggregate: Aggregate::Count,
                filter: vec![],
                window_days: None,
            },
            // The identity on 1–100, so expected scores can be read off the values.
            score: Some(ScoreFn::Linear(vec![(1.0, 1.0), (100.0, 100.0)])),
            ttl_days: None,
            advice: None,
        };
        Model {
            name: "t".into(),
            description: String::new(),
            hash: "h".into(),
            accounts: AccountsSpec {
                stream: StreamRef {
                    connector: "c".into(),
                    stream: "s".into(),
                },
                key: "k".into(),
                name_field: "n".into(),
                stage_field: None,
                segment_field: None,
                owner_field: None,
            },
            bands: BANDS,
            min_coverage: 0.5,
            metrics: vec![m("a"), m("b"), m("c")],
            categories: vec![
                Category {
                    id: "x".into(),
                    label: "X".into(),
                    weight: 0.75,
                    metrics: vec![("a".into(), 0.5), ("b".into(), 0.5)],
                },
                Category {
                    id: "y".into(),
                    label: "Y".into(),
                    weight: 0.25,
                    metrics: vec![("c".into(), 1.0)],
                },
            ],
            playbooks: vec![],
        }
    }

    fn values(pairs: &[(&str, Option<f64>)]) -> BTreeMap<String, MetricValue> {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    MetricValue {
                        value: *v,
                        missing: v.is_none().then(|| "none".to_string()),
                    },
                )
            })
            .collect()
    }

    fn account() -> Account {
        Account {
            id: "1".into(),
            name: "Acme".into(),
            stage: None,
            segment: None,
            owner: None,
        }
    }

    #[test]
    fn weighted_roll_up_and_redistribution() {
        let m = model();
        let now = DateTime::<Utc>::UNIX_EPOCH;
        let full = score_account(
            &m,
            &account(),
            &values(&[("a", Some(80.0)), ("b", Some(40.0)), ("c", Some(20.0))]),
            None,
            now,
        );
        assert_eq!(full.category("x").unwrap().score, Some(60.0));
        assert_eq!(full.overall, Some(0.75 * 60.0 + 0.25 * 20.0));
        assert_eq!(full.coverage, 1.0);
        // c costs 0.25 × 80 = 20 points, b costs 0.375 × 60 = 22.5: b is the worst drag.
        assert_eq!(full.top_drag().unwrap().id, "b");
        assert_eq!(full.drags()[1].id, "c");

        // b missing: its weight goes to a inside x; coverage drops by b's overall share.
        let partial = score_account(
            &m,
            &account(),
            &values(&[("a", Some(80.0)), ("b", None), ("c", Some(20.0))]),
            None,
            now,
        );
        assert_eq!(partial.category("x").unwrap().score, Some(80.0));
        assert_eq!(partial.coverage, 0.75 * 0.5 + 0.25);
        assert!(partial.category("x").unwrap().metrics[1].missing.is_some());

        // Only y present: coverage 0.25 is below the minimum, so the overall score is N/A.
        let thin = score_account(
            &m,
            &account(),
            &values(&[("a", None), ("b", None), ("c", Some(20.0))]),
            None,
            now,
        );
        assert_eq!(thin.overall, None);
        assert_eq!(thin.band, None);
    }

    #[test]
    fn same_inputs_same_bits() {
        let m = model();
        let v = values(&[("a", Some(33.3)), ("b", Some(71.7)), ("c", Some(12.1))]);
        let now = DateTime::<Utc>::UNIX_EPOCH;
        let a = score_account(&m, &account(), &v, None, now);
        let b = score_account(&m, &account(), &v, None, now);
        assert_eq!(a.overall.unwrap().to_bits(), b.overall.unwrap().to_bits());
    }

    #[test]
    fn lopsided_distribution_is_flagged() {
        let d = Distribution {
            red: 1,
            amber: 1,
            green: 8,
            not_scored: 3,
        };
        assert_eq!(d.lopsided().map(|(b, _)| b), Some(Band::Green));
        let even = Distribution {
            red: 3,
            amber: 4,
            green: 3,
            not_scored: 0,
        };
        assert_eq!(even.lopsided(), None);
    }
}
