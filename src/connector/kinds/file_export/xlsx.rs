//! The XLSX workbook: "Scores" (current scores, red/amber/green fills, filters for sorting), "History"
//! (the appended history, newest `history_days`), "Model" (weights, thresholds and scoring functions).
//!
//! Fills are conditional formats, not cell colours, so they follow the values when a reader sorts,
//! filters or edits. Score columns use the model's default thresholds; the `band` column is the account's
//! own band (hysteresis and stage/segment overrides applied), filled by its text. Built in memory with
//! `rust_xlsxwriter`; `files.rs` writes the bytes atomically.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone as _, Utc};
use rust_xlsxwriter::{
    utility::column_number_to_name, Color, ConditionalFormatFormula, Format, FormatBorder,
    Workbook, Worksheet, XlsxError,
};

use super::table::{Cell, Kind, Table};
use crate::config::{Bands, Model, Node, ScoreFn};
use crate::connector::ExportRun;

/// Data rows a sheet can hold (Excel's 1,048,576 rows, less the header).
pub const MAX_DATA_ROWS: usize = 1_048_575;

/// Excel's day zero for serial dates (the 1900 system, as Excel counts it).
fn excel_serial(t: DateTime<Utc>) -> f64 {
    let epoch = Utc.with_ymd_and_hms(1899, 12, 30, 0, 0, 0).single();
    match epoch {
        Some(e) => (t - e).num_seconds() as f64 / 86_400.0,
        None => 0.0,
    }
}

struct Styles {
    header: Format,
    time: Format,
    score: Format,
    share: Format,
    points: Format,
    red: Format,
    amber: Format,
    green: Format,
}

impl Styles {
    fn new() -> Styles {
        // Excel's own "light red / yellow / green fill with dark text" presets.
        let fill = |bg: u32, fg: u32| {
            Format::new()
                .set_background_color(Color::RGB(bg))
                .set_font_color(Color::RGB(fg))
        };
        Styles {
            header: Format::new()
                .set_bold()
                .set_border_bottom(FormatBorder::Thin),
            time: Format::new().set_num_format("yyyy-mm-dd hh:mm"),
            score: Format::new().set_num_format("0.0"),
            share: Format::new().set_num_format("0%"),
            points: Format::new().set_num_format("+0.0;-0.0;0.0"),
            red: fill(0xFFC7CE, 0x9C0006),
            amber: fill(0xFFEB9C, 0x9C5700),
            green: fill(0xC6EFCE, 0x006100),
        }
    }
}

/// The whole workbook, as bytes.
pub fn workbook(
    run: &ExportRun<'_>,
    current: &Table,
    history: &Table,
) -> Result<Vec<u8>, XlsxError> {
    let styles = Styles::new();
    let mut wb = Workbook::new();
    let sheet = wb.add_worksheet().set_name("Scores")?;
    write_table(sheet, current, &styles, &run.model.bands)?;
    let sheet = wb.add_worksheet().set_name("History")?;
    write_table(sheet, history, &styles, &run.model.bands)?;
    let sheet = wb.add_worksheet().set_name("Model")?;
    write_model(sheet, run.model, &styles)?;
    wb.save_to_buffer()
}

fn write_table(
    sheet: &mut Worksheet,
    table: &Table,
    styles: &Styles,
    bands: &Bands,
) -> Result<(), XlsxError> {
    let rows = table.rows.len().min(MAX_DATA_ROWS);
    for (c, name) in table.header.iter().enumerate() {
        let col = c as u16;
        sheet.write_string_with_format(0, col, name, &styles.header)?;
        let width: f64 = match table.kinds[c] {
            Kind::Time => 17.0,
            Kind::Text if name == "account_name" || name == "top_risk" => 28.0,
            Kind::Text => 14.0,
            _ => 10.0,
        };
        sheet.set_column_width(col, width.max(name.len() as f64 * 0.9).min(40.0))?;
    }
    for (r, row) in table.rows.iter().take(rows).enumerate() {
        let r = (r + 1) as u32;
        for (c, cell) in row.iter().enumerate() {
            let col = c as u16;
            match cell {
                Cell::Text(s) => {
                    sheet.write_string(r, col, s)?;
                }
                Cell::Number(n) => {
                    let format = match table.kinds[c] {
                        Kind::Score => &styles.score,
                        Kind::Share => &styles.share,
                        Kind::Points => &styles.points,
                        _ => {
                            sheet.write_number(r, col, *n)?;
                            continue;
                        }
                    };
                    sheet.write_number_with_format(r, col, *n, format)?;
                }
                Cell::Time(t) => {
                    sheet.write_number_with_format(r, col, excel_serial(*t), &styles.time)?;
                }
                Cell::Empty => {}
            }
        }
    }
    let last_col = table.header.len().saturating_sub(1) as u16;
    sheet.set_freeze_panes(1, 3.min(last_col + 1))?;
    sheet.autofilter(0, 0, rows as u32, last_col)?;
    if rows == 0 {
        return Ok(());
    }
    for (c, kind) in table.kinds.iter().enumerate() {
        let col = c as u16;
        let cell = format!("{}2", column_number_to_name(col));
        let rules: Vec<(String, &Format)> = match kind {
            Kind::Score => vec![
                (
                    format!("=AND(ISNUMBER({cell}),{cell}<{})", bands.red_below),
                    &styles.red,
                ),
                (
                    format!(
                        "=AND(ISNUMBER({cell}),{cell}>={},{cell}<{})",
                        bands.red_below, bands.green_from
                    ),
                    &styles.amber,
                ),
                (
                    format!("=AND(ISNUMBER({cell}),{cell}>={})", bands.green_from),
                    &styles.green,
                ),
            ],
            Kind::Text if table.header[c] == "band" => vec![
                (format!("={cell}=\"red\""), &styles.red),
                (format!("={cell}=\"amber\""), &styles.amber),
                (format!("={cell}=\"green\""), &styles.green),
            ],
            _ => continue,
        };
        for (formula, format) in rules {
            let cf = ConditionalFormatFormula::new()
                .set_rule(formula.as_str())
                .set_format(format);
            sheet.add_conditional_format(1, col, rows as u32, col, &cf)?;
        }
    }
    Ok(())
}

const MODEL_HEADER: &[&str] = &[
    "type",
    "id",
    "label",
    "parent",
    "weight_in_parent",
    "weight_of_overall",
    "red_below",
    "green_from",
    "margin",
    "scoring",
];

/// One row of the Model sheet.
struct ModelRow {
    kind: &'static str,
    id: String,
    label: String,
    parent: String,
    weight: Option<f64>,
    overall: Option<f64>,
    bands: Option<Bands>,
    scoring: String,
}

fn describe(f: &ScoreFn) -> String {
    let points = |ps: &[(f64, f64)]| {
        ps.iter()
            .map(|(v, s)| format!("{v} → {s}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match f {
        ScoreFn::Linear(ps) => format!("linear: {}", points(ps)),
        ScoreFn::Steps(ps) => format!("steps: {}", points(ps)),
        ScoreFn::Percentile { higher_is_better } => format!(
            "percentile within segment ({} is better)",
            if *higher_is_better { "higher" } else { "lower" }
        ),
    }
}

fn model_rows(model: &Model) -> Vec<ModelRow> {
    let mut rows = vec![
        ModelRow {
            kind: "model",
            id: model.name.clone(),
            label: model.description.clone(),
            parent: String::new(),
            weight: Some(1.0),
            overall: Some(1.0),
            bands: Some(model.bands),
            scoring: format!("model hash {}", model.hash),
        },
        ModelRow {
            kind: "setting",
            id: "min_coverage".into(),
            label: format!(
                "an overall score needs {:.0}% of the weight present",
                model.min_coverage * 100.0
            ),
            parent: String::new(),
            weight: None,
            overall: None,
            bands: None,
            scoring: String::new(),
        },
    ];
    let mut overall: BTreeMap<&str, f64> = BTreeMap::new();
    for c in &model.categories {
        let share = c
            .parent
            .as_deref()
            .and_then(|p| overall.get(p))
            .copied()
            .unwrap_or(1.0)
            * c.weight;
        overall.insert(&c.id, share);
        rows.push(ModelRow {
            kind: "category",
            id: c.id.clone(),
            label: c.label.clone(),
            parent: c.parent.clone().unwrap_or_default(),
            weight: Some(c.weight),
            overall: Some(share),
            bands: Some(c.bands.unwrap_or(model.bands)),
            scoring: String::new(),
        });
        for (node, w) in &c.children {
            let Node::Metric(id) = node else { continue };
            let Some(m) = model.metric(id) else { continue };
            rows.push(ModelRow {
                kind: "metric",
                id: m.id.clone(),
                label: m.label.clone(),
                parent: c.id.clone(),
                weight: Some(*w),
                overall: Some(share * w),
                bands: Some(m.bands.unwrap_or(model.bands)),
                scoring: m.score.as_ref().map(describe).unwrap_or_default(),
            });
        }
    }
    for o in &model.overrides {
        let when = [
            o.stage.as_ref().map(|s| format!("stage {s}")),
            o.segment.as_ref().map(|s| format!("segment {s}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
        let weights = o
            .weights
            .iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        let scores = o
            .scores
            .iter()
            .map(|(k, f)| format!("{k}: {}", describe(f)))
            .collect::<Vec<_>>()
            .join("; ");
        rows.push(ModelRow {
            kind: "override",
            id: o.id.clone(),
            label: format!("applies to {when}"),
            parent: String::new(),
            weight: None,
            overall: None,
            bands: o.bands,
            scoring: [
                (!weights.is_empty()).then(|| format!("weights: {weights}")),
                (!scores.is_empty()).then_some(scores),
                o.benchmark.map(|b| format!("benchmark {b}")),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("; "),
        });
    }
    rows
}

fn write_model(sheet: &mut Worksheet, model: &Model, styles: &Styles) -> Result<(), XlsxError> {
    for (c, name) in MODEL_HEADER.iter().enumerate() {
        sheet.write_string_with_format(0, c as u16, *name, &styles.header)?;
    }
    for (c, w) in [10.0, 22.0, 36.0, 14.0, 16.0, 17.0, 10.0, 11.0, 8.0, 60.0]
        .iter()
        .enumerate()
    {
        sheet.set_column_width(c as u16, *w)?;
    }
    let rows = model_rows(model);
    for (r, row) in rows.iter().enumerate() {
        let r = (r + 1) as u32;
        sheet.write_string(r, 0, row.kind)?;
        sheet.write_string(r, 1, &row.id)?;
        sheet.write_string(r, 2, &row.label)?;
        sheet.write_string(r, 3, &row.parent)?;
        if let Some(w) = row.weight {
            sheet.write_number_with_format(r, 4, w, &styles.share)?;
        }
        if let Some(w) = row.overall {
            sheet.write_number_with_format(r, 5, w, &styles.share)?;
        }
        if let Some(b) = row.bands {
            sheet.write_number(r, 6, b.red_below)?;
            sheet.write_number(r, 7, b.green_from)?;
            sheet.write_number(r, 8, b.margin)?;
        }
        sheet.write_string(r, 9, &row.scoring)?;
    }
    sheet.set_freeze_panes(1, 0)?;
    sheet.autofilter(0, 0, rows.len() as u32, (MODEL_HEADER.len() - 1) as u16)?;
    Ok(())
}
