//! `healthsync report`: one self-contained HTML page a CS leader can read: bands over time, overall and
//! category trends, score against churn (from a backtest), metric scores by tier and band, engagement by
//! tier and band, project impact, and the accounts that changed band this week.
//!
//! `gather` reads the current scores, the daily score history and the projects from the store into a
//! serializable `ReportData` (what `--json` prints); `render` turns it and an optional `Backtest` into HTML
//! through a minijinja template with HTML auto-escaping (account names come from vendors), with inline CSS,
//! inline SVG (`charts.rs`) and a small inline script that only sorts tables; `write` replaces the file
//! atomically. Project-impact figures are in `impact.rs`. This module does not compute backtests
//! (`crate::backtest`) and does not score (`crate::scoring`): it reports what is stored.

pub mod charts;
pub mod impact;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::backtest::{Backtest, HORIZONS};
use crate::config::{Band, Model};
use crate::scoring::{AccountScore, Distribution};
use crate::store::{Store, StoreError};

use charts::{band_color, Series, PALETTE};
pub use impact::{HistoryPoint, ProjectImpact};

/// The page template; auto-escaped as HTML because of its name.
const TEMPLATE: &str = include_str!("template.html");

/// How many of the lowest-scoring accounts the report lists.
const LOWEST_ROWS: usize = 50;

/// Band moves are measured against the newest history point at least this many days older.
const MOVE_DAYS: i64 = 7;

/// What the backtest section says until the backtest is passed in (`healthsync report` and the demo).
pub const NO_BACKTEST_YET: &str =
    "the backtest is not wired into the report yet (run `healthsync backtest` once it exists)";

const BANDS: [Band; 3] = [Band::Red, Band::Amber, Band::Green];

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("report template: {0}")]
    Template(#[from] minijinja::Error),
    #[error("cannot write the report to {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

/// An id with its label.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Label {
    pub id: String,
    pub label: String,
}

/// Everything the report shows except the backtest: what `healthsync report --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct ReportData {
    pub generated_at: DateTime<Utc>,
    pub model: String,
    /// The newest current score's time.
    pub scored_at: Option<DateTime<Utc>>,
    pub accounts: usize,
    pub distribution: Distribution,
    /// Top-level categories, in model order; `DayPoint::categories` follows this order.
    pub categories: Vec<Label>,
    /// One point per day with scores in the history, oldest first.
    pub timeline: Vec<DayPoint>,
    pub heatmap: MetricHeatmap,
    pub engagement: Engagement,
    /// Accounts whose band differs from their band a week earlier, worst moves first.
    pub movers: Vec<Mover>,
    /// The lowest overall scores now, lowest first.
    pub lowest: Vec<AccountRow>,
    pub impact: ProjectImpact,
    /// Thin data, said plainly.
    pub notes: Vec<String>,
}

/// Accounts per band and average scores on one day of the history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DayPoint {
    pub day: NaiveDate,
    pub red: usize,
    pub amber: usize,
    pub green: usize,
    pub not_scored: usize,
    pub overall: Option<f64>,
    pub categories: Vec<Option<f64>>,
}

/// Mean metric score of the current scores, per tier (segment) and per band.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricHeatmap {
    pub metrics: Vec<Label>,
    pub columns: Vec<HeatColumn>,
    /// `cells[metric][column]`.
    pub cells: Vec<Vec<Option<f64>>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeatColumn {
    /// `tier` or `band`.
    pub group: String,
    pub key: String,
    pub accounts: usize,
}

/// The engagement category's mean score (or the overall score's, when the model has no engagement
/// category) per tier and band.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Engagement {
    pub measure: Label,
    pub tiers: Vec<String>,
    pub cells: Vec<EngagementCell>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngagementCell {
    pub tier: String,
    pub band: Band,
    pub accounts: usize,
    pub mean: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mover {
    pub id: String,
    pub name: String,
    pub tier: String,
    pub from: Band,
    pub to: Band,
    pub from_score: Option<f64>,
    pub to_score: Option<f64>,
    /// The day of the history point compared with.
    pub since: NaiveDate,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccountRow {
    pub id: String,
    pub name: String,
    pub tier: String,
    pub score: f64,
    pub band: Option<Band>,
    pub coverage: f64,
    pub top_drag: Option<String>,
    pub top_risk: Option<String>,
}

/// What the history needs of a stored score; the rest of the stored JSON is skipped, not parsed into
/// memory.
#[derive(Debug, Deserialize)]
struct StoredPoint {
    overall: Option<f64>,
    band: Option<Band>,
    #[serde(default)]
    categories: Vec<StoredCategory>,
}

#[derive(Debug, Deserialize)]
struct StoredCategory {
    id: String,
    score: Option<f64>,
}

const NO_TIER: &str = "no tier";

fn tier(s: &AccountScore) -> String {
    s.account
        .segment
        .clone()
        .unwrap_or_else(|| NO_TIER.to_string())
}

fn mean(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values
        .into_iter()
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// Reads what the report shows from the store. `now` is only stamped on the report.
pub fn gather(store: &Store, model: &Model, now: DateTime<Utc>) -> Result<ReportData, ReportError> {
    let scores: Vec<AccountScore> = store.scores()?;
    let mut histories = impact::Histories::new();
    let mut category_history: BTreeMap<(NaiveDate, String), Vec<f64>> = BTreeMap::new();
    for s in &scores {
        let mut series = Vec::new();
        for (day, point) in store.history::<StoredPoint>(&s.account.id)? {
            // Keys are written as YYYY-MM-DD by the store; anything else is not a history point.
            let Ok(day) = NaiveDate::parse_from_str(&day, "%Y-%m-%d") else {
                continue;
            };
            for c in &point.categories {
                if let Some(v) = c.score {
                    category_history
                        .entry((day, c.id.clone()))
                        .or_default()
                        .push(v);
                }
            }
            series.push(HistoryPoint {
                day,
                overall: point.overall,
                band: point.band,
            });
        }
        histories.insert(s.account.id.clone(), series);
    }
    let projects = store.projects()?;
    Ok(assemble(
        model,
        now,
        &scores,
        &histories,
        &category_history,
        &projects,
    ))
}

/// The pure half of `gather`.
fn assemble(
    model: &Model,
    now: DateTime<Utc>,
    scores: &[AccountScore],
    histories: &impact::Histories,
    category_history: &BTreeMap<(NaiveDate, String), Vec<f64>>,
    projects: &[crate::store::ProjectRecord],
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
    let metrics: Vec<Label> = model
        .metrics
        .iter()
        .filter(|m| m.score.is_some())
        .map(|m| Label {
            id: m.id.clone(),
            label: m.label.clone(),
        })
        .collect();
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

/// One line for the terminal: what the report holds.
pub fn summary(data: &ReportData, backtest: Result<&Backtest, &str>) -> String {
    let d = &data.distribution;
    format!(
        "{} accounts ({} red, {} amber, {} green), {} scoring day(s), {} band move(s) this week, {} health project(s), backtest: {}",
        data.accounts,
        d.red,
        d.amber,
        d.green,
        data.timeline.len(),
        data.movers.len(),
        data.impact.projects,
        match backtest {
            Ok(b) => format!("{} accounts, {} churn events", b.accounts, b.churn_events),
            Err(_) => "none".to_string(),
        }
    )
}

fn pct(v: f64) -> String {
    format!("{:.0}%", v * 100.0)
}

fn band_series(values: impl Fn(Band) -> Vec<Option<f64>>) -> Vec<Series> {
    BANDS
        .iter()
        .map(|b| Series {
            name: b.name().into(),
            color: band_color(*b).into(),
            values: values(*b),
        })
        .collect()
}

/// The charts, by id (the ids are what the page and its tests look for).
fn charts(data: &ReportData, backtest: Option<&Backtest>) -> BTreeMap<&'static str, String> {
    let mut out = BTreeMap::new();
    let t = &data.timeline;
    if !t.is_empty() {
        let labels: Vec<String> = t
            .iter()
            .map(|p| p.day.format("%b %d").to_string())
            .collect();
        let mut series = band_series(|b| {
            t.iter()
                .map(|p| {
                    Some(match b {
                        Band::Red => p.red,
                        Band::Amber => p.amber,
                        Band::Green => p.green,
                    } as f64)
                })
                .collect()
        });
        if t.iter().any(|p| p.not_scored > 0) {
            series.push(Series {
                name: "not scored (too little data)".into(),
                color: "#c5cbd3".into(),
                values: t.iter().map(|p| Some(p.not_scored as f64)).collect(),
            });
        }
        out.insert(
            "chart-bands",
            charts::stacked_columns(
                "chart-bands",
                "Accounts by band over time",
                &labels,
                &series,
                "scoring day",
            ),
        );
    }
    if t.len() >= 2 {
        let days: Vec<NaiveDate> = t.iter().map(|p| p.day).collect();
        let mut series = vec![Series {
            name: "Overall".into(),
            color: "#222".into(),
            values: t.iter().map(|p| p.overall).collect(),
        }];
        for (i, c) in data.categories.iter().enumerate() {
            series.push(Series {
                name: c.label.clone(),
                color: PALETTE[i % PALETTE.len()].into(),
                values: t
                    .iter()
                    .map(|p| p.categories.get(i).copied().flatten())
                    .collect(),
            });
        }
        out.insert(
            "chart-trends",
            charts::lines(
                "chart-trends",
                "Average overall and category scores over time",
                &days,
                &series,
            ),
        );
    }
    if let Some(b) = backtest {
        if b.roc.len() >= 2 {
            let auc90 = b
                .signals
                .iter()
                .find(|s| s.kind == crate::backtest::SignalKind::Overall)
                .and_then(|s| s.auc.get(2).copied().flatten());
            let label = match auc90 {
                Some(a) => format!("overall score, churn within 90 days (AUC {a:.2})"),
                None => "overall score, churn within 90 days".to_string(),
            };
            out.insert(
                "chart-roc",
                charts::roc(
                    "chart-roc",
                    "ROC curve: overall score vs churn within 90 days",
                    &b.roc,
                    &label,
                ),
            );
        }
        if !b.deciles.is_empty() {
            let labels: Vec<String> = b
                .deciles
                .iter()
                .map(|d| format!("{} ({:.0}–{:.0})", d.decile, d.min_score, d.max_score))
                .collect();
            let values: Vec<Option<f64>> = b.deciles.iter().map(|d| Some(d.churn_rate)).collect();
            let colors = vec![PALETTE[0].to_string(); labels.len()];
            out.insert(
                "chart-deciles",
                charts::columns(
                    "chart-deciles",
                    "Churn within 90 days by overall-score decile",
                    &charts::Columns {
                        labels: &labels,
                        values: &values,
                        colors: &colors,
                        format: &pct,
                        reference: None,
                        x_title: "score decile (1 = lowest scores; score range)",
                    },
                ),
            );
        }
        if !b.bands.is_empty() {
            let labels: Vec<String> = b.bands.iter().map(|o| o.band.name().to_string()).collect();
            let values: Vec<Option<f64>> = b.bands.iter().map(|o| o.nrr).collect();
            let colors: Vec<String> = b
                .bands
                .iter()
                .map(|o| band_color(o.band).to_string())
                .collect();
            out.insert(
                "chart-nrr",
                charts::columns(
                    "chart-nrr",
                    "Net revenue retention over 90 days by band",
                    &charts::Columns {
                        labels: &labels,
                        values: &values,
                        colors: &colors,
                        format: &pct,
                        reference: Some((1.0, "100%")),
                        x_title: "band on the evaluation date",
                    },
                ),
            );
        }
    }
    let h = &data.heatmap;
    if !h.metrics.is_empty() && data.accounts > 0 {
        let rows: Vec<String> = h.metrics.iter().map(|m| m.label.clone()).collect();
        let columns: Vec<String> = h
            .columns
            .iter()
            .map(|c| format!("{} ({})", c.key, c.accounts))
            .collect();
        let tiers = h.columns.iter().filter(|c| c.group == "tier").count();
        let groups = [
            ("tier".to_string(), tiers),
            ("band".to_string(), h.columns.len() - tiers),
        ];
        out.insert(
            "chart-heatmap",
            charts::heatmap(
                "chart-heatmap",
                "Mean metric score by tier and band",
                &charts::Heatmap {
                    rows: &rows,
                    columns: &columns,
                    groups: &groups,
                    cells: &h.cells,
                },
            ),
        );
    }
    let e = &data.engagement;
    if !e.tiers.is_empty() {
        let series = band_series(|b| {
            e.tiers
                .iter()
                .map(|t| {
                    e.cells
                        .iter()
                        .find(|c| c.tier == *t && c.band == b)
                        .and_then(|c| c.mean)
                })
                .collect()
        });
        out.insert(
            "chart-engagement",
            charts::grouped_columns(
                "chart-engagement",
                &format!("{} by tier and band", e.measure.label),
                &e.tiers,
                &series,
                (0.0, 100.0),
                "tier",
            ),
        );
    }
    let weeks = &data.impact.weeks;
    if !weeks.is_empty() {
        let labels: Vec<String> = weeks
            .iter()
            .map(|w| w.week_start.format("%b %d").to_string())
            .collect();
        let series = vec![
            Series {
                name: "resolved".into(),
                color: band_color(Band::Green).into(),
                values: weeks.iter().map(|w| Some(w.resolved as f64)).collect(),
            },
            Series {
                name: "still open".into(),
                color: PALETTE[0].into(),
                values: weeks.iter().map(|w| Some(w.open as f64)).collect(),
            },
        ];
        out.insert(
            "chart-project-weeks",
            charts::stacked_columns(
                "chart-project-weeks",
                "Health projects by the week they opened",
                &labels,
                &series,
                "week opened (Monday)",
            ),
        );
    }
    if let Some(all) = data.impact.comparison.last().filter(|r| r.projects > 0) {
        let groups = vec![
            "30 days after opening".to_string(),
            "60 days after opening".to_string(),
        ];
        let series = vec![
            Series {
                name: "with a completed project".into(),
                color: PALETTE[0].into(),
                values: vec![all.with_projects.change_30d, all.with_projects.change_60d],
            },
            Series {
                name: "comparable, no project".into(),
                color: PALETTE[4].into(),
                values: vec![all.comparable.change_30d, all.comparable.change_60d],
            },
        ];
        out.insert("chart-impact", impact_chart(&groups, &series));
    }
    out
}

/// Change in score can be negative: columns grow up or down from a zero line.
fn impact_chart(groups: &[String], series: &[Series]) -> String {
    let values = series.iter().flat_map(|s| s.values.iter().flatten());
    let (lo, hi) = values.fold((0.0f64, 1.0f64), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    charts::grouped_columns(
        "chart-impact",
        "Change in overall score after a health project opened",
        groups,
        series,
        (lo, hi),
        "points gained (+) or lost (−) since the day the project opened",
    )
}

/// Formats an optional number for the template.
fn num(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "–".to_string())
}

/// Renders the page. `backtest` is the backtest to show, or why there is none.
pub fn render(data: &ReportData, backtest: Result<&Backtest, &str>) -> Result<String, ReportError> {
    let mut env = minijinja::Environment::new();
    env.add_template("report.html", TEMPLATE)?;
    env.add_filter("num", |v: Option<f64>, digits: Option<usize>| {
        num(v, digits.unwrap_or(1))
    });
    env.add_filter("pct", |v: Option<f64>| {
        v.map(pct).unwrap_or_else(|| "–".into())
    });
    let charts: BTreeMap<&str, minijinja::Value> = charts(data, backtest.ok())
        .into_iter()
        .map(|(k, v)| (k, minijinja::Value::from_safe_string(v)))
        .collect();
    let css = minijinja::Value::from_safe_string(include_str!("report.css").to_string());
    let script = minijinja::Value::from_safe_string(include_str!("sort.js").to_string());
    let html = env
        .get_template("report.html")?
        .render(minijinja::context! {
            data => data,
            charts => charts,
            css => css,
            script => script,
            backtest => backtest.ok(),
            no_backtest => backtest.err(),
            horizons => HORIZONS,
            generated => data.generated_at.format("%Y-%m-%d %H:%M UTC").to_string(),
            scored => data.scored_at.map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string()),
        observed_until => backtest.ok().map(|b| b.observed_until.format("%Y-%m-%d").to_string()),
        })?;
    Ok(html)
}

/// Writes the page to `path` atomically: a temporary file beside it, then a rename, so a reader never
/// sees half a report.
pub fn write(path: &Path, html: &str) -> Result<(), ReportError> {
    let fail = |reason: String| ReportError::Write {
        path: path.to_path_buf(),
        reason,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(fail(format!("the folder {} does not exist", dir.display())));
    }
    if path.is_dir() {
        return Err(fail("it is a folder".into()));
    }
    // The OS's own words ("Permission denied"), without tempfile's note of its temporary name.
    let os_text = |e: &std::io::Error| {
        let text = e.to_string();
        text.split(" at path ")
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".healthsync-report-")
        .tempfile_in(&dir)
        .map_err(|e| {
            fail(format!(
                "cannot create a file in {}: {}",
                dir.display(),
                os_text(&e)
            ))
        })?;
    // A report is for reading and sharing, not a secret: the usual permissions, not tempfile's 0600.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
            .map_err(|e| fail(e.to_string()))?;
    }
    tmp.write_all(html.as_bytes())
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| fail(e.to_string()))?;
    tmp.persist(path).map_err(|e| fail(e.error.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests;
