//! `healthsync report`: gathers the report from the store, writes the HTML file and prints its path and a
//! one-line summary, or prints the report's data as JSON. What the report holds and how it looks is
//! `crate::report`; this file only maps its results onto the command line (a bad `--out` is bad input).

use std::path::Path;

use chrono::{DateTime, Utc};

use super::CliError;
use crate::book::Book;
use crate::report::{self, ReportError};

fn cli_error(e: ReportError) -> CliError {
    match e {
        ReportError::Write { .. } => CliError::Usage(e.to_string()),
        other => CliError::Runtime(other.into()),
    }
}

pub fn run(
    book: Book<'_>,
    out: Option<&Path>,
    json: bool,
    now: DateTime<Utc>,
) -> Result<(), CliError> {
    let data = report::gather(book.store, &book.config.model, now).map_err(cli_error)?;
    if let Some(path) = out {
        // A report without a backtest is still a report: the section says why it is missing. Only the
        // page shows it; `--json` prints the report's own data (`healthsync backtest --json` has the rest).
        let tested =
            crate::backtest::run(&book, now, Default::default()).map_err(|e| e.to_string());
        let backtest = tested.as_ref().map_err(String::as_str);
        let html = report::render(&data, backtest).map_err(cli_error)?;
        report::write(path, &html).map_err(cli_error)?;
        if !json {
            println!("report written: {}", path.display());
            println!("{}", report::summary(&data, backtest));
        }
    }
    if json {
        let text = serde_json::to_string_pretty(&data).map_err(|e| CliError::Runtime(e.into()))?;
        println!("{text}");
    }
    Ok(())
}
