//! What `healthsync backtest` prints: how well the score predicted churn (AUC per signal and horizon),
//! churn and NRR by band, the red band as a churn flag, churn by score decile, suggested weights, and the
//! warnings about thin data; a candidate model beside the current one. Like `output.rs`, it only prints
//! what `crate::backtest` produced; `--json` shows the same data.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::output::{print_json, truncate, Progress};
use super::CliError;
use crate::backtest::{
    Backtest, BacktestError, BacktestOptions, ScoreSource, SignalKind, HORIZONS,
};
use crate::book::Book;

/// A share as a whole percentage, `–` when there is none.
pub(crate) fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "–".into(), |v| format!("{:.0}%", v * 100.0))
}

/// An AUC to three places, `–` when there is none.
pub(crate) fn auc(x: Option<f64>) -> String {
    x.map_or_else(|| "–".into(), |v| format!("{v:.3}"))
}

fn cli_error(e: BacktestError) -> CliError {
    match e {
        BacktestError::NoOutcomes(_) | BacktestError::NoAccounts(_) => {
            CliError::Usage(e.to_string())
        }
        BacktestError::Store(s) => s.into(),
    }
}

/// `healthsync backtest`: the current model, and a candidate beside it on the same recomputed dates (a
/// candidate has no stored history of its own), with a progress bar on a terminal.
pub fn run(
    current: Book<'_>,
    candidate: Option<Book<'_>>,
    now: DateTime<Utc>,
    recompute: bool,
    json: bool,
) -> Result<(), CliError> {
    let options = BacktestOptions {
        recompute: recompute || candidate.is_some(),
    };
    let progress = Progress::new(json);
    let judge = |rt: Book<'_>, label: &str| {
        let step = |done, total| progress.steps(label, done, total, "steps");
        crate::backtest::run_with_progress(&rt, now, options, &step).map_err(cli_error)
    };
    let a = judge(current, "backtest");
    let b = candidate.map(|c| judge(c, "backtest candidate"));
    progress.finish();
    let b = b.transpose()?;
    backtest(&a?, b.as_ref(), json);
    Ok(())
}

/// Prints one backtest, or a candidate beside the current model.
pub fn backtest(current: &Backtest, candidate: Option<&Backtest>, json: bool) {
    if json {
        match candidate {
            None => print_json(current),
            Some(c) => print_json(&json!({"current": current, "candidate": c})),
        }
        return;
    }
    report(current);
    if let Some(c) = candidate {
        println!();
        println!("── Candidate ─────────────────────────────────────────────");
        report(c);
        println!();
        let overall = |b: &Backtest| b.signals.first().map(|s| s.auc.clone()).unwrap_or_default();
        let (a, b) = (overall(current), overall(c));
        let cells: Vec<String> = HORIZONS
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let get = |v: &[Option<f64>]| v.get(i).copied().flatten();
                format!("{h}d {} → {}", auc(get(&a)), auc(get(&b)))
            })
            .collect();
        println!(
            "Overall AUC, current → candidate (same dates): {}",
            cells.join(", ")
        );
    }
}

fn report(b: &Backtest) {
    let source = match b.dates.first().map(|d| d.source) {
        Some(ScoreSource::Stored) => "replayed from the score history",
        Some(ScoreSource::Recomputed) => "recomputed from cached records (no look-ahead)",
        None => "none",
    };
    println!("Backtest of {} ({})", b.model, b.model_hash);
    match (b.dates.first(), b.dates.last()) {
        (Some(first), Some(last)) => println!(
            "  {} evaluation dates {} … {}, {source}; data until {}",
            b.dates.len(),
            first.date,
            last.date,
            b.observed_until.format("%Y-%m-%d")
        ),
        _ => println!("  no evaluation dates"),
    }
    println!(
        "  {} accounts scored, {} churned in the observed period",
        b.accounts, b.churn_events
    );
    println!();
    let heads: Vec<String> = HORIZONS.iter().map(|h| format!("{h:>3}d")).collect();
    println!(
        "AUC for churn within   {}   observations  (0.5 = chance)",
        heads.join("    ")
    );
    for s in &b.signals {
        let name = match s.kind {
            SignalKind::Overall => s.label.clone(),
            SignalKind::Category => format!("  {}", s.label),
            SignalKind::Metric => format!("    {}", s.id),
        };
        let cells: Vec<String> = s.auc.iter().map(|a| format!("{:>5}", auc(*a))).collect();
        println!(
            "  {:<22} {}   {:>10}",
            truncate(&name, 22),
            cells.join("  "),
            s.observations
        );
    }
    println!();
    println!(
        "By band (churn and net revenue retention within {} days):",
        b.primary_horizon
    );
    println!(
        "  {:<6} {:>12} {:>8} {:>7} {:>6} {:>6} {:>9} {:>11}",
        "band", "observations", "churned", "rate", "lift", "NRR", "expanded", "downgraded"
    );
    for band in &b.bands {
        println!(
            "  {:<6} {:>12} {:>8} {:>7} {:>6} {:>6} {:>9} {:>11}",
            band.band.name(),
            band.observations,
            band.churned,
            pct(band.churn_rate),
            band.lift.map_or_else(|| "–".into(), |l| format!("{l:.1}×")),
            pct(band.nrr),
            band.expanded,
            band.downgraded
        );
    }
    if !b.cohorts.is_empty() {
        let cells: Vec<String> = b
            .cohorts
            .iter()
            .map(|c| format!("{} {} ({})", c.cohort, pct(c.nrr), c.accounts))
            .collect();
        println!(
            "NRR by start cohort, today vs a month in (accounts): {}",
            cells.join(", ")
        );
    }
    if let Some(r) = &b.red_flag {
        println!(
            "Red as a churn flag: precision {}, recall {}, lift {:.1}×",
            pct(Some(r.precision)),
            pct(Some(r.recall)),
            r.lift
        );
    }
    if !b.deciles.is_empty() {
        let cells: Vec<String> = b
            .deciles
            .iter()
            .map(|d| format!("{}:{}", d.decile, pct(Some(d.churn_rate))))
            .collect();
        println!("Churn by score decile (1 = lowest): {}", cells.join(" "));
    }
    if let Some(s) = &b.suggestion {
        println!();
        println!(
            "Suggested weights (churn within {} days; fitted on {} dates to {}, tested on {} later dates):",
            s.horizon,
            s.fitted_on.len(),
            s.fitted_on.last().map_or_else(String::new, |d| d.to_string()),
            s.tested_on.len()
        );
        println!(
            "  {:<26} {:<14} {:>10} {:>10}",
            "metric", "category", "configured", "suggested"
        );
        for r in &s.rows {
            println!(
                "  {:<26} {:<14} {:>9.1}% {:>9.1}%",
                truncate(&r.metric, 26),
                truncate(&r.category, 14),
                r.configured,
                r.suggested
            );
        }
        println!(
            "  held-out AUC: configured {}, suggested {}",
            auc(s.configured_auc),
            auc(s.suggested_auc)
        );
        if let Some(c) = &s.caveat {
            println!("  note: {c}");
        }
    }
    if !b.warnings.is_empty() {
        println!();
        println!("Read with care:");
        for w in &b.warnings {
            println!("  - {w}");
        }
    }
}
