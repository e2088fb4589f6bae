//! The report's sections from the current scores, the score history and the projects: the timeline of
//! bands and average scores per day, band moves against a week earlier, mean metric scores by tier and
//! band, engagement by tier and band, and the lowest scores. Pure: the store is read by `gather` in
//! `report/mod.rs`; project impact is `impact.rs`; drawing is `figures.rs` and `charts.rs`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, NaiveDate, Utc};

use super::impact;
use super::{
    AccountRow, DayPoint, Engagement, EngagementCell, HeatColumn, Label, MetricHeatmap, Mover,
    ReportData, BANDS,
};
use crate::config::Model;
use crate::scoring::{AccountScore, Distribution};
use crate::store::ProjectRecord;

/// How many of the lowest-scoring accounts the report lists.
const LOWEST_ROWS: usize = 50;

/// Band moves are measured against the newest history point at least this many days older.
const MOVE_DAYS: i64 = 7;

const NO_TIER: &str = "no tier";

fn tier(s: &AccountScore) -> String {
    s.account
        .segment
        .clone()
        .unwrap_or_else(|| NO_TIER.to_string())
}

pub(super) fn mean(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values
        .into_iter()
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// The pure half of `gather`.
pub(super) fn assemble(
    model: &Model,
    now: DateTime<Utc>,
    scores: &[AccountScore],
    histories: &impact::Histories,
    category_history: &BTreeMap<(NaiveDate, String), Vec<f64>>,
    projects: &[ProjectRecord],
) -> ReportData {
    let categories: Vec<Label> = model
        .categories
        .iter()
        .filter(|c| c.parent.is_none())
        .map(|c| Label {
            id: c.id.clone(),
            label: c.label.clone(),
        })
        .collect();
    let timeline = timeline(histories, category_history, &categories);
    let current: BTreeMap<String, f64> = scores
        .iter()
        .filter_map(|s| Some((s.account.id.clone(), s.overall?)))
        .collect();
    let advocacy: BTreeSet<String> = model
        .playbooks
        .iter()
        .filter(|p| p.thriving_days.is_some())
        .map(|p| p.id.clone())
        .collect();
    let (movers, compared) = movers(scores, histories);
    let mut notes = Vec::new();
    match timeline.len() {
        0 => notes.push("no scores yet: run `healthsync score` (or the daemon) first".to_string()),
        1 => notes.push("one scoring run so far: trends need at least two".to_string()),
        _ => {}
    }
    if !scores.is_empty() && compared == 0 {
        notes.push(format!(
            "no account has a score from {MOVE_DAYS} or more days before its latest: band moves this week need a week of history"
        ));
    }
    ReportData {
        generated_at: now,
        model: model.name.clone(),
        scored_at: scores.iter().map(|s| s.as_of).max(),
        accounts: scores.len(),
        distribution: Distribution::of(scores),
        timeline,
        heatmap: heatmap(model, scores),
        engagement: engagement(model, scores),
        movers,
        lowest: lowest(scores),
        impact: impact::project_impact(projects, &advocacy, histories, &current),
        categories,
        notes,
    }
}

fn timeline(
    histories: &impact::Histories,
    category_history: &BTreeMap<(NaiveDate, String), Vec<f64>>,
    categories: &[Label],
) -> Vec<DayPoint> {
    let mut days: BTreeMap<NaiveDate, (Distribution, Vec<f64>)> = BTreeMap::new();
    for p in histories.values().flatten() {
        let (d, overall) = days.entry(p.day).or_default();
        d.add(p.band);
        overall.extend(p.overall);
    }
    days.into_iter()
        .map(|(day, (d, overall))| DayPoint {
            day,
            red: d.red,
            amber: d.amber,
            green: d.green,
            not_scored: d.not_scored,
            overall: mean(overall),
            categories: categories
                .iter()
                .map(|c| {
                    category_history
                        .get(&(day, c.id.clone()))
                        .and_then(|v| mean(v.iter().copied()))
                })
                .collect(),
        })
        .collect()
}

/// Accounts whose current band differs from their band at the newest history point at least a week older
/// than their current score; and how many accounts had such a point at all.
fn movers(scores: &[AccountScore], histories: &impact::Histories) -> (Vec<Mover>, usize) {
    let mut out = Vec::new();
    let mut compared = 0;
    for s in scores {
        let Some(to) = s.band else { continue };
        let cutoff = s.as_of.date_naive() - Duration::days(MOVE_DAYS);
        let Some(then) = histories
            .get(&s.account.id)
            .and_then(|h| impact::at(h, cutoff))
        else {
            continue;
        };
        compared += 1;
        let Some(from) = then.band else { continue };
        if from != to {
            out.push(Mover {
                id: s.account.id.clone(),
                name: s.account.name.clone(),
                tier: tier(s),
                from,
                to,
                from_score: then.overall,
                to_score: s.overall,
                since: then.day,
            });
        }
    }
    // Worst first: the most bands lost, then the largest fall in score, then by name.
    out.sort_by(|a, b| {
        let steps = |m: &Mover| m.to as i32 - m.from as i32;
        let fall = |m: &Mover| m.to_score.unwrap_or(0.0) - m.from_score.unwrap_or(0.0);
        steps(a)
            .cmp(&steps(b))
            .then(fall(a).total_cmp(&fall(b)))
            .then_with(|| a.name.cmp(&b.name))
    });
    (out, compared)
}

fn heatmap(model: &Model, scores: &[AccountScore]) -> MetricHeatmap {
    let tiers: BTreeSet<String> = scores.iter().map(tier).collect();
    let mut columns: Vec<HeatColumn> = tiers
        .iter()
        .map(|t| HeatColumn {
            group: "tier".into(),
            key: t.clone(),
            accounts: scores.iter().filter(|s| tier(s) == *t).count(),
        })
        .collect();
    columns.extend(BANDS.iter().map(|b| HeatColumn {
        group: "band".into(),
        key: b.name().into(),
        accounts: scores.iter().filter(|s| s.band == Some(*b)).count(),
    }));
    let in_column = |s: &AccountScore, c: &HeatColumn| match c.group.as_str() {
        "tier" => tier(s) == c.key,
        _ => s.band.is_some_and(|b| b.name() == c.key),
    };
    let mut metrics: Vec<(Option<f64>, Label)> = model
        .metrics
        .iter()
        .filter(|m| m.score.is_some())
        .map(|m| {
            let overall = mean(scores.iter().filter_map(|s| s.metric(&m.id)?.score));
            let label = Label {
                id: m.id.clone(),
                label: m.label.clone(),
            };
            (overall, label)
        })
        .collect();
    // Worst first: the lowest mean score over every account on top, metrics with no value at all last.
    metrics.sort_by(|(a, _), (b, _)| match (a, b) {
        (Some(a), Some(b)) => a.total_cmp(b),
        (a, b) => b.is_some().cmp(&a.is_some()),
    });
    let metrics: Vec<Label> = metrics.into_iter().map(|(_, l)| l).collect();
    let cells = metrics
        .iter()
        .map(|m| {
            columns
                .iter()
                .map(|c| {
                    mean(
                        scores
                            .iter()
                            .filter(|s| in_column(s, c))
                            .filter_map(|s| s.metric(&m.id)?.score),
                    )
                })
                .collect()
        })
        .collect();
    MetricHeatmap {
        metrics,
        columns,
        cells,
    }
}

fn engagement(model: &Model, scores: &[AccountScore]) -> Engagement {
    let category = model
        .categories
        .iter()
        .find(|c| c.id == "engagement")
        .or_else(|| {
            model.categories.iter().find(|c| {
                c.id.contains("engagement") || c.label.to_lowercase().contains("engagement")
            })
        });
    let measure = match category {
        Some(c) => Label {
            id: c.id.clone(),
            label: c.label.clone(),
        },
        None => Label {
            id: "overall".into(),
            label: "Overall score (the model has no engagement category)".into(),
        },
    };
    let value = |s: &AccountScore| match category {
        Some(c) => s.category(&c.id).and_then(|c| c.score),
        None => s.overall,
    };
    let tiers: Vec<String> = scores
        .iter()
        .map(tier)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut cells = Vec::new();
    for t in &tiers {
        for band in BANDS {
            let group: Vec<&AccountScore> = scores
                .iter()
                .filter(|s| tier(s) == *t && s.band == Some(band))
                .collect();
            cells.push(EngagementCell {
                tier: t.clone(),
                band,
                accounts: group.len(),
                mean: mean(group.iter().filter_map(|s| value(s))),
            });
        }
    }
    Engagement {
        measure,
        tiers,
        cells,
    }
}

fn lowest(scores: &[AccountScore]) -> Vec<AccountRow> {
    let mut rows: Vec<AccountRow> = scores
        .iter()
        .filter_map(|s| {
            Some(AccountRow {
                id: s.account.id.clone(),
                name: s.account.name.clone(),
                tier: tier(s),
                score: s.overall?,
                band: s.band,
                coverage: s.coverage,
                top_drag: s.top_drag().map(|m| m.label.clone()),
                top_risk: s.top_risk().map(|r| r.label.clone()),
            })
        })
        .collect();
    rows.sort_by(|a, b| {
        a.score
            .total_cmp(&b.score)
            .then_with(|| a.name.cmp(&b.name))
    });
    rows.truncate(LOWEST_ROWS);
    rows
}
