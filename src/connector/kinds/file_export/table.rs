//! The export's rows and columns: one row per account, the same columns in the CSV and the workbook.
//!
//! Column names are stable, lowercase and free of spaces so a BI tool's field mapping survives runs:
//! `computed_at, account_id, account_name, overall, band, coverage, trend_30d, top_risk, stage, segment`,
//! one `category_<id>` per category, `metric_<id>_score` and `metric_<id>_value` per weighed metric, and
//! `model_hash`. History keeps every column but the metric ones. This module shapes data; it writes no
//! file (CSV encoding aside, onto a writer it is handed).

use std::collections::BTreeSet;
use std::io::Write;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::config::Model;
use crate::connector::ExportRun;

/// One cell. Numbers stay `f64` so the CSV round-trips them exactly (Rust prints the shortest text that
/// parses back to the same value).
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(String),
    Number(f64),
    Time(DateTime<Utc>),
    Empty,
}

impl Cell {
    fn opt(v: Option<f64>) -> Cell {
        v.filter(|x| x.is_finite())
            .map(Cell::Number)
            .unwrap_or(Cell::Empty)
    }

    fn text(v: Option<&str>) -> Cell {
        v.map(|s| Cell::Text(s.to_string())).unwrap_or(Cell::Empty)
    }

    pub fn to_csv(&self) -> String {
        match self {
            Cell::Text(s) => s.clone(),
            Cell::Number(n) => n.to_string(),
            Cell::Time(t) => t.to_rfc3339_opts(SecondsFormat::Secs, true),
            Cell::Empty => String::new(),
        }
    }
}

/// What a column holds, for parsing history back and formatting the workbook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Time,
    Text,
    /// A 1–100 score: gets red/amber/green fills in the workbook.
    Score,
    /// A share, 0–1.
    Share,
    /// A change in points.
    Points,
    /// A metric's raw value.
    Value,
}

/// A header and rows of cells.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub header: Vec<String>,
    pub kinds: Vec<Kind>,
    pub rows: Vec<Vec<Cell>>,
}

/// The columns before the categories, with what they hold.
const LEADING: &[(&str, Kind)] = &[
    ("computed_at", Kind::Time),
    ("account_id", Kind::Text),
    ("account_name", Kind::Text),
    ("overall", Kind::Score),
    ("band", Kind::Text),
    ("coverage", Kind::Share),
    ("trend_30d", Kind::Points),
    ("top_risk", Kind::Text),
    ("stage", Kind::Text),
    ("segment", Kind::Text),
];

/// Metric ids in column order: by category, then by the category's children, each once.
fn metric_ids(model: &Model) -> Vec<(&str, &str)> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for c in &model.categories {
        for m in c.metric_ids() {
            if seen.insert(m) {
                out.push((c.id.as_str(), m));
            }
        }
    }
    out
}

/// Every column of the current-scores file, with its kind.
pub fn columns(model: &Model) -> Vec<(String, Kind)> {
    let mut cols: Vec<(String, Kind)> = LEADING.iter().map(|(n, k)| (n.to_string(), *k)).collect();
    for c in &model.categories {
        cols.push((format!("category_{}", c.id), Kind::Score));
    }
    for (_, m) in metric_ids(model) {
        cols.push((format!("metric_{m}_score"), Kind::Score));
        cols.push((format!("metric_{m}_value"), Kind::Value));
    }
    cols.push(("model_hash".into(), Kind::Text));
    cols
}

/// The history file's columns: every current column except the metric ones.
pub fn history_columns(model: &Model) -> Vec<String> {
    columns(model)
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| !n.starts_with("metric_"))
        .collect()
}

/// The kind of a column, from its name (for history read back from a file).
pub fn kind_of(name: &str) -> Kind {
    if let Some((_, k)) = LEADING.iter().find(|(n, _)| *n == name) {
        return *k;
    }
    if name.starts_with("category_") || (name.starts_with("metric_") && name.ends_with("_score")) {
        Kind::Score
    } else if name.starts_with("metric_") {
        Kind::Value
    } else {
        Kind::Text
    }
}

/// One row per account, in the order scored.
pub fn current(run: &ExportRun<'_>) -> Table {
    let cols = columns(run.model);
    let metrics = metric_ids(run.model);
    let mut rows = Vec::with_capacity(run.scores.len());
    for s in run.scores {
        let mut row = Vec::with_capacity(cols.len());
        row.push(Cell::Time(s.as_of));
        row.push(Cell::Text(s.account.id.clone()));
        row.push(Cell::Text(s.account.name.clone()));
        row.push(Cell::opt(s.overall));
        row.push(Cell::text(s.band.map(|b| b.name())));
        row.push(Cell::opt(Some(s.coverage)));
        row.push(Cell::opt(run.trends.get(&s.account.id).copied()));
        row.push(Cell::text(s.top_risk().map(|r| r.label.as_str())));
        row.push(Cell::text(s.account.stage.as_deref()));
        row.push(Cell::text(s.account.segment.as_deref()));
        for c in &run.model.categories {
            row.push(Cell::opt(s.category(&c.id).and_then(|c| c.score)));
        }
        for (cat, m) in &metrics {
            let ms = s
                .category(cat)
                .and_then(|c| c.metrics.iter().find(|x| x.id == *m));
            row.push(Cell::opt(ms.and_then(|m| m.score)));
            row.push(Cell::opt(ms.and_then(|m| m.value)));
        }
        row.push(Cell::Text(s.model_hash.clone()));
        rows.push(row);
    }
    Table {
        header: cols.iter().map(|(n, _)| n.clone()).collect(),
        kinds: cols.iter().map(|(_, k)| *k).collect(),
        rows,
    }
}

impl Table {
    /// The named columns only, in the order given (names this table lacks are left out).
    pub fn project(&self, names: &[String]) -> Table {
        let idx: Vec<usize> = names
            .iter()
            .filter_map(|n| self.header.iter().position(|h| h == n))
            .collect();
        Table {
            header: idx.iter().map(|i| self.header[*i].clone()).collect(),
            kinds: idx.iter().map(|i| self.kinds[*i]).collect(),
            rows: self
                .rows
                .iter()
                .map(|r| idx.iter().map(|i| r[*i].clone()).collect())
                .collect(),
        }
    }

    /// The whole table as CSV (RFC 4180: header first, fields quoted where they need it).
    pub fn write_csv(&self, out: impl Write) -> std::io::Result<()> {
        let mut w = csv::Writer::from_writer(out);
        w.write_record(&self.header)?;
        self.write_rows(&mut w)?;
        w.flush()
    }

    /// The rows only, onto a CSV writer.
    pub fn write_rows<W: Write>(&self, w: &mut csv::Writer<W>) -> std::io::Result<()> {
        let mut record = csv::StringRecord::with_capacity(256, self.header.len());
        for row in &self.rows {
            record.clear();
            for cell in row {
                record.push_field(&cell.to_csv());
            }
            w.write_record(&record)?;
        }
        Ok(())
    }

    /// Parses one CSV record back into cells, by this table's column kinds.
    pub fn parse_row(&self, record: &csv::StringRecord) -> Vec<Cell> {
        record
            .iter()
            .zip(&self.kinds)
            .map(|(v, k)| {
                if v.is_empty() {
                    return Cell::Empty;
                }
                match k {
                    Kind::Text => Cell::Text(v.to_string()),
                    Kind::Time => DateTime::parse_from_rfc3339(v)
                        .map(|t| Cell::Time(t.with_timezone(&Utc)))
                        .unwrap_or_else(|_| Cell::Text(v.to_string())),
                    _ => v
                        .parse::<f64>()
                        .map(Cell::Number)
                        .unwrap_or_else(|_| Cell::Text(v.to_string())),
                }
            })
            .collect()
    }
}
