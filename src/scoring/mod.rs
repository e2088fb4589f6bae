//! Scoring: metric values → 1–100 metric scores → nested weighted categories → an overall score, with
//! bands, coverage, the points each input costs, stage/segment overrides, benchmarks and risk events.
//!
//! Pure: no I/O, no async, no clock (time comes in as `as_of`), and deterministic bit for bit for the same
//! inputs. Missing inputs have their weight redistributed over present siblings at every level, and the
//! score carries the share of weight that was present (coverage); below the model's minimum the overall
//! score is N/A. Band changes use the hysteresis margin against the previous band, so an account hovering
//! at a threshold does not flap. Which overrides apply to an account is decided by its stage and segment;
//! the model as it applies to one set of overrides is resolved once (`Variant`) and reused. Scoring
//! functions are in `functions.rs`, risk rules in `risks.rs`, history comparisons in `history.rs`.

mod functions;
mod history;
mod risks;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{Band, Bands, Model, Node, ScoreFn};
use crate::identity::Account;
use crate::metrics::MetricValue;

pub use functions::{
    apply, band_of, band_with_hysteresis, percentile_score, Population, MIN_PEERS,
};
pub use history::{changes, trend, Change, InputChange};
pub use risks::RiskState;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricScore {
    pub id: String,
    pub label: String,
    pub value: Option<f64>,
    pub score: Option<f64>,
    pub band: Option<Band>,
    /// Share of its category, after stage/segment overrides (0–1).
    pub weight: f64,
    /// Overall points this metric cost the account: its effective overall weight × (100 − score).
    pub points_lost: f64,
    /// Overall points this metric contributed: its effective overall weight × score.
    #[serde(default)]
    pub contribution: f64,
    pub missing: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryScore {
    pub id: String,
    pub label: String,
    pub score: Option<f64>,
    pub band: Option<Band>,
    /// Share of its parent (or of the overall score), after overrides (0–1).
    pub weight: f64,
    pub coverage: f64,
    #[serde(default)]
    pub parent: Option<String>,
    #[serde(default)]
    pub depth: usize,
    /// Overall points this category contributed.
    #[serde(default)]
    pub contribution: f64,
    /// The metrics it weighs directly (sub-categories are their own entries, with `parent` set).
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
    /// Every category, depth first (a parent before its children).
    pub categories: Vec<CategoryScore>,
    /// Overrides that applied to this account's stage and segment, in the order applied.
    #[serde(default)]
    pub overrides: Vec<String>,
    /// Where an account of this stage and segment should be.
    #[serde(default)]
    pub benchmark: Option<f64>,
    /// Active risk events and positive signals.
    #[serde(default)]
    pub risks: Vec<RiskState>,
    /// Rules that could not be evaluated for a reason other than a missing input.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rule_errors: Vec<String>,
}

impl AccountScore {
    /// A score with only the overall value and band: no categories, full coverage. What the planner
    /// reads, for its tests and the write-back benchmark; real scores come from [`score_all`].
    pub fn overall_only(id: &str, overall: f64, band: Band, as_of: DateTime<Utc>) -> AccountScore {
        AccountScore {
            account: Account {
                id: id.into(),
                name: format!("Account {id}"),
                stage: None,
                segment: None,
                owner: None,
            },
            as_of,
            model_hash: "h".into(),
            overall: Some(overall),
            band: Some(band),
            coverage: 1.0,
            categories: Vec::new(),
            overrides: Vec::new(),
            benchmark: None,
            risks: Vec::new(),
            rule_errors: Vec::new(),
        }
    }

    pub fn category(&self, id: &str) -> Option<&CategoryScore> {
        self.categories.iter().find(|c| c.id == id)
    }

    pub fn metric(&self, id: &str) -> Option<&MetricScore> {
        self.categories
            .iter()
            .flat_map(|c| &c.metrics)
            .find(|m| m.id == id)
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

    /// The most serious active risk: hard before soft, then the oldest. Advocacy signals are not risks.
    pub fn top_risk(&self) -> Option<&RiskState> {
        self.risks
            .iter()
            .filter(|r| r.kind != crate::config::RiskKind::Advocacy)
            .min_by(|a, b| (a.kind, a.since, &a.id).cmp(&(b.kind, b.since, &b.id)))
    }
}

/// Where a category's child lives in a `Variant`.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Metric(usize),
    Category(usize),
}

/// The model as it applies to accounts matched by one set of overrides: weights normalized after the
/// overrides, scoring functions and bands resolved.
#[derive(Debug, Clone)]
pub struct Variant {
    pub overrides: Vec<String>,
    pub benchmark: Option<f64>,
    bands: Bands,
    /// By model metric index.
    score_fns: Vec<Option<ScoreFn>>,
    metric_bands: Vec<Bands>,
    /// By model category index.
    cat_bands: Vec<Bands>,
    cat_weight: Vec<f64>,
    children: Vec<Vec<(Slot, f64)>>,
    roots: Vec<usize>,
}

impl Variant {
    /// Resolves `model` with the overrides at `applied` (indices into `model.overrides`, in order).
    pub fn resolve(model: &Model, applied: &[usize]) -> Variant {
        let overrides: Vec<&crate::config::Override> =
            applied.iter().map(|i| &model.overrides[*i]).collect();
        let bands = overrides
            .iter()
            .rev()
            .find_map(|o| o.bands)
            .unwrap_or(model.bands);
        let score_fns = model
            .metrics
            .iter()
            .map(|m| {
                overrides
                    .iter()
                    .rev()
                    .find_map(|o| o.scores.get(&m.id).cloned())
                    .or_else(|| m.score.clone())
            })
            .collect();
        let metric_bands = model
            .metrics
            .iter()
            .map(|m| m.bands.unwrap_or(bands))
            .collect();
        let cat_bands = model
            .categories
            .iter()
            .map(|c| c.bands.unwrap_or(bands))
            .collect();
        let metric_index: BTreeMap<&str, usize> = model
            .metrics
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id.as_str(), i))
            .collect();
        let cat_index: BTreeMap<&str, usize> = model
            .categories
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id.as_str(), i))
            .collect();
        // Overridden raw weights (in percent) for node ids; later overrides win.
        let mut raw: BTreeMap<&str, f64> = BTreeMap::new();
        for o in &overrides {
            for (id, w) in &o.weights {
                raw.insert(id.as_str(), *w);
            }
        }
        let renormalize = |items: Vec<(&str, f64)>| -> Vec<f64> {
            let ws: Vec<f64> = items
                .iter()
                .map(|(id, base)| raw.get(id).copied().unwrap_or(base * 100.0))
                .collect();
            let sum: f64 = ws.iter().sum();
            if sum > 0.0 {
                ws.iter().map(|w| w / sum).collect()
            } else {
                items.iter().map(|(_, base)| *base).collect()
            }
        };
        let root_ids: Vec<usize> = model
            .categories
            .iter()
            .enumerate()
            .filter(|(_, c)| c.parent.is_none())
            .map(|(i, _)| i)
            .collect();
        let mut cat_weight = vec![0.0; model.categories.len()];
        let root_ws = renormalize(
            root_ids
                .iter()
                .map(|i| {
                    (
                        model.categories[*i].id.as_str(),
                        model.categories[*i].weight,
                    )
                })
                .collect(),
        );
        for (i, w) in root_ids.iter().zip(root_ws) {
            cat_weight[*i] = w;
        }
        let mut children = Vec::with_capacity(model.categories.len());
        for c in &model.categories {
            let ws = renormalize(c.children.iter().map(|(n, w)| (n.id(), *w)).collect());
            let mut kids = Vec::with_capacity(c.children.len());
            for ((node, _), w) in c.children.iter().zip(ws) {
                match node {
                    Node::Metric(id) => {
                        if let Some(i) = metric_index.get(id.as_str()) {
                            kids.push((Slot::Metric(*i), w));
                        }
                    }
                    Node::Category(id) => {
                        if let Some(i) = cat_index.get(id.as_str()) {
                            cat_weight[*i] = w;
                            kids.push((Slot::Category(*i), w));
                        }
                    }
                }
            }
            children.push(kids);
        }
        Variant {
            overrides: overrides.iter().map(|o| o.id.clone()).collect(),
            benchmark: overrides.iter().rev().find_map(|o| o.benchmark),
            bands,
            score_fns,
            metric_bands,
            cat_bands,
            cat_weight,
            children,
            roots: root_ids,
        }
    }
}

/// Scores accounts against one model: resolves each override combination once, ranks percentile metrics
/// against the population it was given.
pub struct Scorer<'m> {
    model: &'m Model,
    population: Population,
    variants: BTreeMap<Vec<usize>, Variant>,
}

impl<'m> Scorer<'m> {
    pub fn new(model: &'m Model, population: Population) -> Scorer<'m> {
        Scorer {
            model,
            population,
            variants: BTreeMap::new(),
        }
    }

    /// The population of every percentile-scored metric (in the base model or any override) over the
    /// given accounts' values.
    pub fn population<'a>(
        model: &Model,
        accounts: impl IntoIterator<Item = (&'a Account, &'a BTreeMap<String, MetricValue>)>,
    ) -> Population {
        let ranked: Vec<&str> = model
            .metrics
            .iter()
            .filter(|m| {
                matches!(m.score, Some(ScoreFn::Percentile { .. }))
                    || model
                        .overrides
                        .iter()
                        .any(|o| matches!(o.scores.get(&m.id), Some(ScoreFn::Percentile { .. })))
            })
            .map(|m| m.id.as_str())
            .collect();
        let mut rows = Vec::new();
        for (a, values) in accounts {
            for id in &ranked {
                if let Some(v) = values.get(*id).and_then(|v| v.value) {
                    rows.push((a.segment.as_deref(), *id, v));
                }
            }
        }
        Population::build(rows)
    }

    /// The resolved model for an account's stage and segment.
    pub fn variant(&mut self, account: &Account) -> &Variant {
        let key = applied_overrides(self.model, account);
        let model = self.model;
        self.variants
            .entry(key)
            .or_insert_with_key(|k| Variant::resolve(model, k))
    }

    /// Scores one account from its metric values (as `metrics::compute` gives them), with risk rules.
    pub fn score(
        &mut self,
        account: &Account,
        values: &BTreeMap<String, MetricValue>,
        previous: Option<&AccountScore>,
        as_of: DateTime<Utc>,
    ) -> AccountScore {
        let (inputs, missing): (Vec<Option<f64>>, Vec<Option<&str>>) = self
            .model
            .metrics
            .iter()
            .map(|m| match values.get(&m.id) {
                Some(v) => (v.value, v.missing.as_deref()),
                None => (None, None),
            })
            .unzip();
        let mut s = self.score_inputs(account, &inputs, &missing, previous, as_of);
        if !self.model.risks.is_empty() {
            (s.risks, s.rule_errors) =
                risks::evaluate(self.model, account, values, previous, as_of);
        }
        s
    }

    /// Scores one account from values by model metric index, with why each missing one is missing
    /// (`missing` may be shorter, even empty). Risk rules are not evaluated here (they need the values by
    /// id: use `score`). This is the path the throughput benchmark measures.
    pub fn score_inputs(
        &mut self,
        account: &Account,
        inputs: &[Option<f64>],
        missing: &[Option<&str>],
        previous: Option<&AccountScore>,
        as_of: DateTime<Utc>,
    ) -> AccountScore {
        let model = self.model;
        // Previous bands only count when the model is the same: a new model starts from fresh bands.
        let previous = previous.filter(|p| p.model_hash == model.hash);
        let v: &Variant = self
            .variants
            .entry(applied_overrides(model, account))
            .or_insert_with_key(|k| Variant::resolve(model, k));
        let population = &self.population;

        // Metric scores.
        let metric_scores: Vec<Option<f64>> = model
            .metrics
            .iter()
            .zip(&v.score_fns)
            .enumerate()
            .map(|(i, (m, f))| match (f, inputs.get(i).copied().flatten()) {
                (Some(ScoreFn::Percentile { higher_is_better }), Some(x)) => {
                    population.rank(&m.id, account.segment.as_deref(), x, *higher_is_better)
                }
                (Some(f), Some(x)) => apply(f, x),
                _ => None,
            })
            .collect();

        // Roll-up, children before parents (categories are stored parents first).
        let n = model.categories.len();
        let mut cat_score: Vec<Option<f64>> = vec![None; n];
        let mut cat_cov = vec![0.0; n];
        let mut cat_present = vec![0.0; n];
        for ci in (0..n).rev() {
            let (mut sum, mut present, mut cov) = (0.0, 0.0, 0.0);
            for (slot, w) in &v.children[ci] {
                let (s, c) = match slot {
                    Slot::Metric(mi) => (metric_scores[*mi], 1.0),
                    Slot::Category(k) => (cat_score[*k], cat_cov[*k]),
                };
                if let Some(s) = s {
                    sum += w * s;
                    present += w;
                    cov += w * c;
                }
            }
            cat_score[ci] = (present > 0.0).then(|| sum / present);
            cat_cov[ci] = cov;
            cat_present[ci] = present;
        }
        let (mut sum, mut present, mut coverage) = (0.0, 0.0, 0.0);
        for ri in &v.roots {
            if let Some(s) = cat_score[*ri] {
                sum += v.cat_weight[*ri] * s;
                present += v.cat_weight[*ri];
                coverage += v.cat_weight[*ri] * cat_cov[*ri];
            }
        }
        let overall = (present > 0.0 && coverage >= model.min_coverage).then(|| sum / present);

        // Effective overall weights, parents first: a category's share of the overall score after
        // redistribution at every level above it.
        let mut cat_eff = vec![0.0; n];
        for ri in &v.roots {
            if cat_score[*ri].is_some() && present > 0.0 {
                cat_eff[*ri] = v.cat_weight[*ri] / present;
            }
        }
        let mut metric_eff = vec![0.0; model.metrics.len()];
        for ci in 0..n {
            if cat_score[ci].is_none() || cat_present[ci] == 0.0 {
                continue;
            }
            for (slot, w) in &v.children[ci] {
                let share = cat_eff[ci] * w / cat_present[ci];
                match slot {
                    Slot::Metric(mi) if metric_scores[*mi].is_some() => metric_eff[*mi] = share,
                    Slot::Category(k) if cat_score[*k].is_some() => cat_eff[*k] = share,
                    _ => {}
                }
            }
        }

        let prev_cat = |id: &str| previous.and_then(|p| p.category(id));
        let mut categories = Vec::with_capacity(n);
        for (ci, c) in model.categories.iter().enumerate() {
            let pc = prev_cat(&c.id);
            let mut metrics = Vec::new();
            for (slot, w) in &v.children[ci] {
                let Slot::Metric(mi) = slot else { continue };
                let m = &model.metrics[*mi];
                let value = inputs.get(*mi).copied().flatten();
                let why = missing.get(*mi).copied().flatten();
                let score = metric_scores[*mi];
                let prev_band = pc
                    .and_then(|pc| pc.metrics.iter().find(|pm| pm.id == m.id))
                    .and_then(|pm| pm.band);
                let eff = metric_eff[*mi];
                metrics.push(MetricScore {
                    id: m.id.clone(),
                    label: m.label.clone(),
                    value,
                    score,
                    band: score.map(|s| band_with_hysteresis(s, prev_band, &v.metric_bands[*mi])),
                    weight: *w,
                    points_lost: score.map(|s| eff * (100.0 - s)).unwrap_or(0.0),
                    contribution: score.map(|s| eff * s).unwrap_or(0.0),
                    missing: if score.is_some() {
                        None
                    } else if value.is_some() {
                        Some("no peers to rank against".into())
                    } else {
                        Some(why.unwrap_or("no value").to_string())
                    },
                });
            }
            let score = cat_score[ci];
            categories.push(CategoryScore {
                id: c.id.clone(),
                label: c.label.clone(),
                band: score
                    .map(|s| band_with_hysteresis(s, pc.and_then(|p| p.band), &v.cat_bands[ci])),
                score,
                weight: v.cat_weight[ci],
                coverage: cat_cov[ci],
                parent: c.parent.clone(),
                depth: c.depth,
                contribution: score.map(|s| cat_eff[ci] * s).unwrap_or(0.0),
                metrics,
            });
        }
        AccountScore {
            account: account.clone(),
            as_of,
            model_hash: model.hash.clone(),
            band: overall.map(|s| band_with_hysteresis(s, previous.and_then(|p| p.band), &v.bands)),
            overall,
            coverage,
            categories,
            overrides: v.overrides.clone(),
            benchmark: v.benchmark,
            risks: Vec::new(),
            rule_errors: Vec::new(),
        }
    }
}

/// Indices of the overrides that match the account's stage and segment, in file order.
pub fn applied_overrides(model: &Model, account: &Account) -> Vec<usize> {
    model
        .overrides
        .iter()
        .enumerate()
        .filter(|(_, o)| o.matches(account.stage.as_deref(), account.segment.as_deref()))
        .map(|(i, _)| i)
        .collect()
}

/// Scores one account with no population (percentile metrics are then N/A): a convenience for tests and
/// single-account callers. `previous` is its last stored score (for hysteresis and risk state), if any.
pub fn score_account(
    model: &Model,
    account: &Account,
    values: &BTreeMap<String, MetricValue>,
    previous: Option<&AccountScore>,
    as_of: DateTime<Utc>,
) -> AccountScore {
    Scorer::new(model, Population::default()).score(account, values, previous, as_of)
}

/// Scores a whole book of business: builds the percentile population from every account's values first.
/// `previous` looks up an account's last stored score.
pub fn score_all(
    model: &Model,
    accounts: &[(Account, BTreeMap<String, MetricValue>)],
    previous: impl Fn(&str) -> Option<AccountScore>,
    as_of: DateTime<Utc>,
) -> Vec<AccountScore> {
    let population = Scorer::population(model, accounts.iter().map(|(a, v)| (a, v)));
    let mut scorer = Scorer::new(model, population);
    accounts
        .iter()
        .map(|(a, v)| scorer.score(a, v, previous(&a.id).as_ref(), as_of))
        .collect()
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
    /// The counts by band label, as the `/metrics` gauges name them.
    pub fn by_label(&self) -> [(&'static str, usize); 4] {
        [
            ("red", self.red),
            ("amber", self.amber),
            ("green", self.green),
            ("not_scored", self.not_scored),
        ]
    }

    pub fn of<'a>(scores: impl IntoIterator<Item = &'a AccountScore>) -> Distribution {
        let mut d = Distribution::default();
        for s in scores {
            d.add(s.band);
        }
        d
    }

    pub fn add(&mut self, band: Option<Band>) {
        match band {
            Some(Band::Red) => self.red += 1,
            Some(Band::Amber) => self.amber += 1,
            Some(Band::Green) => self.green += 1,
            None => self.not_scored += 1,
        }
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
