//! `file_export`: every account's score as CSV and/or an XLSX workbook in a folder, after each scoring run,
//! for teams that work in spreadsheets or a BI tool (Excel, Tableau, Domo) before or beside a CS platform.
//!
//! An export is not a sink: it writes whole files per run, not per-account changes through the outbox.
//! Each run replaces `<stem>.csv` / `<stem>.xlsx` atomically (temp file in the same folder, fsync, rename),
//! so a BI tool polling the folder never reads a half-written file; keeps `keep` timestamped copies
//! (`<stem>-YYYYMMDDTHHMMSSZ.<ext>`, hard links of the current file); and appends the run to
//! `<stem>-history.csv` (by default one row per account per day: the day's latest run), which the
//! workbook's History sheet is rendered from. The rows and columns are in
//! `table.rs`, the file mechanics in `files.rs`, the workbook in `xlsx.rs`. This module owns the params
//! and the run; reading the store (trends) is the pipeline's job.

mod files;
mod table;
#[cfg(test)]
mod tests;
mod xlsx;

use std::path::PathBuf;

use super::super::{BuildError, Export, ExportError, ExportRun};
use crate::config::{ExportConfig, KindSpec, DEFAULT_FILE_STEM};
use crate::vocab::{RateLimit, Role};

pub use files::probe_directory;
pub use table::{history_columns, Cell, Table};

pub static SPEC: KindSpec = KindSpec {
    name: "file_export",
    role: Role::Export,
    streams: &[],
    default_streams: &[],
    auth: &[],
    // Unused: an export makes no HTTP calls.
    default_rate_limit: RateLimit::per_secs(1, 1),
    parse_params: read_params,
    limitations: &[],
};

const PARAM_KEYS: &[&str] = &[
    "directory",
    "file_stem",
    "formats",
    "keep",
    "history",
    "history_days",
];

/// Timestamped copies kept when the file does not say.
pub const DEFAULT_KEEP: usize = 7;
/// Days of history on the workbook's History sheet when the file does not say. The sheet is what costs
/// time: 30 days of 10,000 accounts is 300,000 rows (BENCHMARKS.md).
pub const DEFAULT_HISTORY_DAYS: u32 = 30;

/// What `<stem>-history.csv` keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryMode {
    /// One row per account per UTC day: the day's latest run replaces the day's earlier one, as in the
    /// store's daily history. A daemon scoring every 15 minutes would otherwise add 96 rows per account
    /// per day, which no spreadsheet holds for long.
    Daily,
    /// Every run's rows.
    EveryRun,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Xlsx,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Xlsx => "xlsx",
        }
    }
}

/// The validated `[params]` of a `file_export` connector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub directory: PathBuf,
    /// File names start with this: `<stem>.csv`, `<stem>.xlsx`, `<stem>-history.csv`.
    pub file_stem: String,
    pub formats: Vec<Format>,
    /// Timestamped copies to keep (the newest, the current run's included); 0 keeps none.
    pub keep: usize,
    /// What `<stem>-history.csv` keeps (and the History sheet shows).
    pub history: HistoryMode,
    /// Days of history on the workbook's History sheet (the CSV keeps everything).
    pub history_days: u32,
}

/// Everything but the directory, which the config resolves against its own folder.
#[allow(clippy::type_complexity)]
fn parse_params(t: &toml::Table) -> Result<(String, Vec<Format>, usize, HistoryMode, u32), String> {
    let mut problems = Vec::new();
    for k in t.keys() {
        if !PARAM_KEYS.contains(&k.as_str()) {
            problems.push(format!(
                "unknown key `{k}`; file_export takes: {}",
                PARAM_KEYS.join(", ")
            ));
        }
    }
    match t.get("directory") {
        Some(toml::Value::String(d)) if !d.trim().is_empty() => {}
        Some(_) => problems.push("directory must be a non-empty folder path".into()),
        None => problems.push("directory is required: the folder the files are written to".into()),
    }
    let file_stem = match t.get("file_stem") {
        None => DEFAULT_FILE_STEM.to_string(),
        Some(toml::Value::String(s)) if valid_stem(s) => s.clone(),
        Some(v) => {
            problems.push(format!(
                "file_stem {v} must be 1–64 letters, digits, `_`, `-` or `.`, not starting with `.` or `-` (it names files, not folders)"
            ));
            String::new()
        }
    };
    let formats = match t.get("formats") {
        None => vec![Format::Csv, Format::Xlsx],
        Some(toml::Value::Array(items)) => {
            let mut out = Vec::new();
            for item in items {
                match item.as_str() {
                    Some("csv") if !out.contains(&Format::Csv) => out.push(Format::Csv),
                    Some("xlsx") if !out.contains(&Format::Xlsx) => out.push(Format::Xlsx),
                    Some(f @ ("csv" | "xlsx")) => {
                        problems.push(format!("formats lists `{f}` twice"))
                    }
                    _ => problems.push(format!("unknown format {item}; use \"csv\" or \"xlsx\"")),
                }
            }
            if items.is_empty() {
                problems.push("formats is empty; list \"csv\", \"xlsx\" or both".into());
            }
            out
        }
        Some(_) => {
            problems.push("formats must be a list such as [\"csv\", \"xlsx\"]".into());
            Vec::new()
        }
    };
    let keep = match t.get("keep") {
        None => DEFAULT_KEEP,
        Some(toml::Value::Integer(n)) if (0..=1000).contains(n) => *n as usize,
        Some(_) => {
            problems.push("keep must be a whole number between 0 and 1000".into());
            0
        }
    };
    let history = match t.get("history").map(|v| v.as_str()) {
        None | Some(Some("daily")) => HistoryMode::Daily,
        Some(Some("every_run")) => HistoryMode::EveryRun,
        Some(Some("off")) => HistoryMode::Off,
        Some(_) => {
            problems.push("history must be \"daily\", \"every_run\" or \"off\"".into());
            HistoryMode::Daily
        }
    };
    let history_days = match t.get("history_days") {
        None => DEFAULT_HISTORY_DAYS,
        Some(toml::Value::Integer(n)) if (1..=3660).contains(n) => *n as u32,
        Some(_) => {
            problems.push("history_days must be a whole number between 1 and 3660".into());
            DEFAULT_HISTORY_DAYS
        }
    };
    if problems.is_empty() {
        Ok((file_stem, formats, keep, history, history_days))
    } else {
        Err(problems.join("; "))
    }
}

fn valid_stem(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with(['.', '-'])
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The catalog's check. Exports are built from an `ExportConfig`, which keeps the table, so the parsed
/// settings are not kept here.
fn read_params(params: &toml::Table) -> Result<crate::config::Params, String> {
    parse_params(params).map(|_| crate::config::Params::none())
}


pub fn settings(config: &ExportConfig) -> Result<Settings, BuildError> {
    let (file_stem, formats, keep, history, history_days) =
        parse_params(&config.params).map_err(|reason| BuildError::Invalid {
            connector: config.id.clone(),
            reason,
        })?;
    Ok(Settings {
        directory: config.directory.clone(),
        file_stem,
        formats,
        keep,
        history,
        history_days,
    })
}

pub fn build(config: &ExportConfig) -> Result<Box<dyn Export>, BuildError> {
    Ok(Box::new(FileExport {
        settings: settings(config)?,
    }))
}

/// One `file_export` instance.
pub struct FileExport {
    pub settings: Settings,
}

impl FileExport {
    fn path(&self, name: &str) -> PathBuf {
        self.settings.directory.join(name)
    }

    pub fn history_path(&self) -> PathBuf {
        self.path(&format!("{}-history.csv", self.settings.file_stem))
    }
}

impl Export for FileExport {
    fn export(&self, run: &ExportRun<'_>) -> Result<Vec<PathBuf>, ExportError> {
        let s = &self.settings;
        let dir = &s.directory;
        std::fs::create_dir_all(dir).map_err(|e| files::err(dir, e))?;
        // Leftovers of a run that crashed between creating a temp file and renaming it.
        files::remove_stale_temps(dir, &s.file_stem).map_err(|e| files::err(dir, e))?;
        let stamp = run.as_of.format("%Y%m%dT%H%M%SZ").to_string();
        let current = table::current(run);
        let history_now = current.project(&history_columns(run.model));
        let mut written = Vec::new();

        let history = if s.history != HistoryMode::Off {
            let path = self.history_path();
            let aside = self.path(&format!("{}-history-{stamp}.csv", s.file_stem));
            let daily = s.history == HistoryMode::Daily;
            files::append_history(&path, &history_now, &aside, daily)?;
            Some(path)
        } else {
            None
        };
        for format in &s.formats {
            let name = format!("{}.{}", s.file_stem, format.extension());
            let path = match format {
                Format::Csv => files::write_atomic(dir, &name, |f| current.write_csv(f))?,
                Format::Xlsx => {
                    let sheet = match &history {
                        Some(path) => {
                            let since = run.as_of - chrono::Duration::days(s.history_days.into());
                            files::read_history(path, since, xlsx::MAX_DATA_ROWS)?
                        }
                        None => history_now.clone(),
                    };
                    let bytes = xlsx::workbook(run, &current, &sheet).map_err(|e| {
                        ExportError::Workbook {
                            path: self.path(&name).display().to_string(),
                            reason: e.to_string(),
                        }
                    })?;
                    files::write_atomic(dir, &name, |f| f.write_all(&bytes))?
                }
            };
            files::rotate(dir, &s.file_stem, format.extension(), &stamp, s.keep)?;
            written.push(path);
        }
        Ok(written)
    }
}
