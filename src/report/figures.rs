//! Which chart shows what: the report's data (and the backtest, when there is one) turned into the
//! inline SVG charts of the page, by id (`chart-bands`, `chart-trends`, `chart-roc`, `chart-deciles`,
//! `chart-nrr`, `chart-heatmap`, `chart-engagement`, `chart-project-weeks`, `chart-impact`). A chart whose
//! data is missing is left out and the page says why. Drawing itself is `charts.rs`.

use std::collections::BTreeMap;

use chrono::NaiveDate;

use super::charts::{self, band_color, Series, PALETTE};
use super::{pct, ReportData, BANDS};
use crate::backtest::Backtest;
use crate::config::Band;

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
pub(super) fn charts(
    data: &ReportData,
    backtest: Option<&Backtest>,
) -> BTreeMap<&'static str, String> {
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
            let h = b.primary_horizon;
            let at = crate::backtest::HORIZONS.iter().position(|x| *x == h);
            let auc = b
                .signals
                .iter()
                .find(|s| s.kind == crate::backtest::SignalKind::Overall)
                .and_then(|s| s.auc.get(at?).copied().flatten());
            let label = match auc {
                Some(a) => format!("overall score, churn within {h} days (AUC {a:.2})"),
                None => format!("overall score, churn within {h} days"),
            };
            let title = format!("ROC curve: overall score vs churn within {h} days");
            out.insert(
                "chart-roc",
                charts::roc("chart-roc", &title, &b.roc, &label),
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
                    &format!(
                        "Churn within {} days by overall-score decile",
                        b.primary_horizon
                    ),
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
                    &format!(
                        "Net revenue retention over {} days by band",
                        b.primary_horizon
                    ),
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
