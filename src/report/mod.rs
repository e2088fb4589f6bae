//! `healthsync report`: one self-contained HTML page a CS leader can read: bands over time, overall and
//! category trends, score against churn (from a backtest), metric scores by tier and band, engagement by
//! tier and band, project impact, and the accounts that changed band this week.
//!
//! `gather` reads the current scores, the daily score history and the projects from the store into a
//! serializable `ReportData` (what `--json` prints; its sections are computed in `sections.rs`, project
//! impact in `impact.rs`); `render` turns it and an optional `Backtest` into HTML through a minijinja
//! template with HTML auto-escaping (account names come from vendors), with inline CSS, inline SVG
//! (`figures.rs` picks the charts, `charts.rs` draws them) and a small inline script that only sorts
//! tables; `write` replaces the file atomically. This module does not compute backtests
//! (`crate::backtest`) and does not score (`crate::scoring`): it reports what is stored.

mod charts;
mod figures;
mod impact;
mod sections;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::atomic_file::AtomicWriteError;
use crate::backtest::{Backtest, HORIZONS};
use crate::config::{Band, Model};
use crate::scoring::{AccountScore, Distribution};
use crate::store::{Store, StoreError};

pub use impact::{HistoryPoint, ProjectImpact};

/// The page template; auto-escaped as HTML because of its name.
const TEMPLATE: &str = include_str!("template.html");

/// Why the report has no backtest when the backtest could not run (`healthsync backtest` says more).
pub const NO_BACKTEST: &str = "the backtest could not run: `healthsync backtest` says why";

pub(crate) const BANDS: [Band; 3] = [Band::Red, Band::Amber, Band::Green];

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
    /// Lowest mean score over every account first.
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

/// Reads what the report shows from the store. `now` is only stamped on the report. The history is read
/// for the accounts with a current score (the store keeps it per account): an account no longer scored
/// drops out of the past days too.
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
    Ok(sections::assemble(
        model,
        now,
        &scores,
        &histories,
        &category_history,
        &projects,
    ))
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

pub(crate) fn pct(v: f64) -> String {
    format!("{:.0}%", v * 100.0)
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
    let charts: BTreeMap<&str, minijinja::Value> = figures::charts(data, backtest.ok())
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
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report.html".into());
    // A report is for reading and sharing: written like the exports, 0644 less the umask.
    crate::atomic_file::write_atomic(&dir, &name, |w| w.write_all(html.as_bytes())).map_err(
        |e| {
            fail(match e {
                AtomicWriteError::Create { dir, source } => {
                    format!(
                        "cannot create a file in {}: {}",
                        dir.display(),
                        os_text(&source)
                    )
                }
                AtomicWriteError::Write { source, .. } => os_text(&source),
            })
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests;
