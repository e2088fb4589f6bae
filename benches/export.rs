//! Export figures (the spreadsheet/BI export of issue 8), printed, not a criterion harness: how long one
//! scoring run's export takes for N accounts, as CSV, as XLSX, and both, and how the XLSX grows when the
//! History sheet holds 30 earlier runs.
//!
//! Accounts are scored once with the shipped starter model (8 metrics in 3 categories) from generated
//! metric values (5% missing); only the export is timed: building the rows, encoding, writing the temp
//! file, fsync, rename, the timestamped copy, and appending the history. Each figure is the median of 5
//! runs into a fresh folder.
//!
//! Run: `cargo bench --bench export -- 10000` (accounts).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{Duration as Days, TimeZone, Utc};
use healthsync::connector::kinds::file_export::{FileExport, Format, HistoryMode, Settings};
use healthsync::connector::{Export, ExportRun};
use healthsync::identity::Account;
use healthsync::metrics::MetricValue;
use healthsync::scoring::{self, AccountScore};

fn scores(model: &healthsync::config::Model, n: usize, day: i64) -> Vec<AccountScore> {
    let as_of = Utc
        .with_ymd_and_hms(2026, 11, 23, 0, 15, 0)
        .single()
        .expect("valid date")
        + Days::days(day);
    let inputs: Vec<(Account, BTreeMap<String, MetricValue>)> = (0..n)
        .map(|i| {
            let account = Account {
                id: format!("{:010}", 1_000_000_000 + i),
                name: format!("Account {i} Holdings"),
                stage: Some(["onboard", "adopt", "optimize"][i % 3].to_string()),
                segment: Some(["smb", "mid_market", "enterprise"][i % 3].to_string()),
                owner: None,
            };
            let values = model
                .metrics
                .iter()
                .enumerate()
                .map(|(j, m)| {
                    let k = (i * 31 + j * 17 + day as usize) % 100;
                    let v = (k >= 5).then_some(k as f64 * 0.73);
                    (
                        m.id.clone(),
                        MetricValue {
                            value: v,
                            missing: v.is_none().then(|| "no records".into()),
                        },
                    )
                })
                .collect();
            (account, values)
        })
        .collect();
    scoring::score_all(model, &inputs, |_| None, as_of)
}

fn export(dir: &Path, formats: &[Format], model: &healthsync::config::Model, s: &[AccountScore]) {
    let e = FileExport {
        settings: Settings {
            directory: dir.to_path_buf(),
            file_stem: "scores".into(),
            formats: formats.to_vec(),
            keep: 7,
            history: HistoryMode::Daily,
            history_days: 30,
        },
    };
    e.export(&ExportRun {
        as_of: s[0].as_of,
        model,
        scores: s,
        trends: &BTreeMap::new(),
    })
    .expect("export");
}

fn median(mut d: Vec<Duration>) -> Duration {
    d.sort();
    d[d.len() / 2]
}

fn size(path: &Path) -> String {
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let config = healthsync::config::load(
        Path::new("config/healthsync.toml"),
        &healthsync::connector::kinds::catalog(),
    )
    .expect("shipped config");
    let model = &config.model;
    let run = scores(model, n, 0);
    println!(
        "export of {n} accounts, starter model ({} metrics, {} categories)",
        model.metrics.len(),
        model.categories.len()
    );
    for (label, formats) in [
        ("csv", vec![Format::Csv]),
        ("xlsx", vec![Format::Xlsx]),
        ("csv + xlsx", vec![Format::Csv, Format::Xlsx]),
    ] {
        let mut times = Vec::new();
        let mut sizes = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("tempdir");
            let t = Instant::now();
            export(dir.path(), &formats, model, &run);
            times.push(t.elapsed());
            sizes = formats
                .iter()
                .map(|f| {
                    format!(
                        "{} {}",
                        f.extension(),
                        size(&dir.path().join(format!("scores.{}", f.extension())))
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
        }
        println!(
            "  {label:<11} first run: {:>7.1} ms (median of 5)   {sizes}",
            median(times).as_secs_f64() * 1e3
        );
    }

    // A month of daily runs: the 31st run's workbook carries 31 days on its History sheet (the default
    // history_days is 30, so the window holds 31 daily blocks).
    let dir = tempfile::tempdir().expect("tempdir");
    for day in 0..30 {
        export(dir.path(), &[Format::Csv], model, &scores(model, n, day));
    }
    let last = scores(model, n, 30);
    let t = Instant::now();
    export(dir.path(), &[Format::Csv, Format::Xlsx], model, &last);
    println!(
        "  csv + xlsx  31st daily run ({} history rows): {:.1} ms   xlsx {}, history csv {}",
        31 * n,
        t.elapsed().as_secs_f64() * 1e3,
        size(&dir.path().join("scores.xlsx")),
        size(&dir.path().join("scores-history.csv")),
    );
}
