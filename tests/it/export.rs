//! Spreadsheet/BI exports end to end: `healthsync demo --sink xlsx` leaves a workbook that opens, a
//! scoring run records what each export did (and a broken export does not fail the run), and `validate`
//! names the file, line, folder and reason for a bad export.

use calamine::{open_workbook, Reader, Xlsx};
use chrono::{TimeZone, Utc};
use healthsync::book::ExportOutcome;
use healthsync::config;
use healthsync::pipeline::Runtime;
use healthsync::store::Store;

use crate::support::{run, text, ConfigCopy};

#[test]
fn demo_sink_xlsx_writes_a_workbook_to_open_and_sort_and_prints_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("exports");
    let out = run(&[
        "demo",
        "--accounts",
        "60",
        "--sink",
        "xlsx",
        "--sink",
        "csv",
        "--export-dir",
        out_dir.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", text(&out.stderr));
    let workbook = out_dir.join("healthsync-scores.xlsx");
    assert!(
        stdout.contains(&format!("wrote {}", workbook.display())),
        "{stdout}"
    );
    assert!(stdout.contains(&format!(
        "wrote {}",
        out_dir.join("healthsync-scores.csv").display()
    )));
    let mut wb: Xlsx<_> = open_workbook(&workbook).expect("the workbook opens");
    assert_eq!(wb.sheet_names(), vec!["Scores", "History", "Model"]);
    let scores = wb.worksheet_range("Scores").unwrap();
    assert_eq!(scores.rows().count(), 1 + 60);
    let csv_rows = csv::Reader::from_path(out_dir.join("healthsync-scores.csv"))
        .unwrap()
        .records()
        .collect::<Result<Vec<_>, _>>()
        .expect("the CSV parses");
    assert_eq!(csv_rows.len(), 60);
    // The pipeline's own values reach the file: every account has an overall score or says N/A, and the
    // demo's 16 backfilled weeks give most accounts a 30-day trend.
    let headers = csv::Reader::from_path(out_dir.join("healthsync-scores.csv"))
        .unwrap()
        .headers()
        .unwrap()
        .clone();
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (overall, trend) = (column("overall"), column("trend_30d"));
    let scored = csv_rows.iter().filter(|r| !r[overall].is_empty()).count();
    let trended = csv_rows
        .iter()
        .filter(|r| r[trend].parse::<f64>().is_ok())
        .count();
    assert!(
        scored >= 50,
        "{scored} of 60 accounts have an overall score"
    );
    assert!(
        trended >= 40,
        "{trended} of 60 accounts have a 30-day trend"
    );
}

/// The shipped config with the export enabled and pointed at `directory`.
fn with_export(directory: &str) -> ConfigCopy {
    let c = ConfigCopy::new();
    c.edit(
        "connectors/file_export.toml",
        "enabled = false",
        "enabled = true",
    );
    c.edit(
        "connectors/file_export.toml",
        "directory = \"/var/lib/healthsync/exports\"",
        &format!("directory = \"{directory}\""),
    );
    c
}

#[test]
fn a_scoring_run_records_each_export_and_a_broken_one_does_not_fail_it() {
    let c = ConfigCopy::new();
    let blocker = c.path("not-a-folder");
    std::fs::write(&blocker, "x").unwrap();
    let c = {
        c.edit(
            "connectors/file_export.toml",
            "enabled = false",
            "enabled = true",
        );
        c.edit(
            "connectors/file_export.toml",
            "directory = \"/var/lib/healthsync/exports\"",
            &format!("directory = \"{}\"", c.path("exports").display()),
        );
        c.write(
            "connectors/broken_export.toml",
            &format!(
                "kind = \"file_export\"\nrole = \"export\"\n[params]\ndirectory = \"{}\"\n",
                blocker.join("exports").display()
            ),
        );
        c
    };
    let config = config::load(&c.daemon(), &healthsync::connector::kinds::catalog())
        .unwrap_or_else(|e| panic!("{:?}", e.0));
    let state = tempfile::tempdir().unwrap();
    let rt = Runtime::build(config, Store::open(state.path()).unwrap());
    // Sources without their secrets on this machine are not built; both exports are.
    assert!(
        !rt.build_errors.contains_key("file_export"),
        "{:?}",
        rt.build_errors
    );
    assert!(
        !rt.build_errors.contains_key("broken_export"),
        "{:?}",
        rt.build_errors
    );
    let now = Utc.with_ymd_and_hms(2026, 11, 23, 6, 0, 0).unwrap();
    let run = rt.score(now).expect("the scoring run still counts");
    assert_eq!(run.exports.len(), 2);
    let broken = &run.exports[0];
    assert_eq!(broken.export, "broken_export");
    let e = broken.error.as_deref().expect("the broken export failed");
    assert!(e.contains("not-a-folder"), "{e}");
    assert!(broken.files.is_empty());
    let good = &run.exports[1];
    assert_eq!(good.error, None);
    assert_eq!(
        good.files,
        vec![
            c.path("exports/healthsync-scores.csv"),
            c.path("exports/healthsync-scores.xlsx")
        ]
    );
    // Stored for `status` and the daemon, like a sync's status.
    let stored: ExportOutcome = rt
        .store
        .status(healthsync::store::RunKey::Export("file_export"))
        .unwrap()
        .unwrap();
    assert_eq!(&stored, good);
    // And `status` reports both, the failure with its reason.
    let report = healthsync::status::collect(&rt.config, &rt.store, &rt.build_errors, now).unwrap();
    let broken = report
        .exports
        .iter()
        .find(|e| e.id == "broken_export")
        .unwrap();
    assert!(broken.last_run.as_ref().unwrap().error.is_some());
    let good = report
        .exports
        .iter()
        .find(|e| e.id == "file_export")
        .unwrap();
    assert_eq!(good.last_run.as_ref().unwrap().files.len(), 2);
}

#[test]
fn validate_names_file_line_folder_and_why_for_an_unwritable_export_folder() {
    let c = ConfigCopy::new();
    let blocker = c.path("a-file");
    std::fs::write(&blocker, "x").unwrap();
    let target = blocker.join("exports");
    let c2 = with_export(target.to_str().unwrap());
    let out = c2.validate();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let file_line = format!("{}:13:", c2.path("connectors/file_export.toml").display());
    assert!(err.contains(&file_line), "{file_line} in {err}");
    assert!(err.contains(&target.display().to_string()), "{err}");
    assert!(err.contains("is a file, not a folder"), "{err}");

    // A writable folder passes and is named in the summary.
    let ok = with_export(c.path("exports").to_str().unwrap());
    let out = ok.validate();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("note: export file_export (file_export) writes into"));
}

#[test]
fn validate_reports_bad_export_files_purely_with_file_and_line() {
    let c = ConfigCopy::new();
    c.edit(
        "connectors/file_export.toml",
        "formats = [\"csv\", \"xlsx\"]",
        "formats = [\"pdf\"]",
    );
    c.write(
        "connectors/wrong_kind.toml",
        "kind = \"vitally\"\nrole = \"export\"\n[params]\ndirectory = \"out\"\n",
    );
    c.write(
        "connectors/with_url.toml",
        "kind = \"file_export\"\nrole = \"export\"\nbase_url = \"https://x\"\n[params]\ndirectory = \"out\"\n",
    );
    // Same folder and stem as another enabled export.
    c.write(
        "connectors/export_a.toml",
        "kind = \"file_export\"\nrole = \"export\"\n[params]\ndirectory = \"out\"\n",
    );
    c.write(
        "connectors/export_b.toml",
        "kind = \"file_export\"\nrole = \"export\"\n[params]\nformats = [\"csv\"]\ndirectory = \"out\"\n",
    );
    c.write(
        "connectors/no_dir.toml",
        "kind = \"file_export\"\nrole = \"export\"\n\n[params]\nkeep = 2\n",
    );
    let out = c.validate();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for (file_line, what) in [
        ("connectors/file_export.toml:10", "unknown format \"pdf\""),
        (
            "connectors/wrong_kind.toml:2",
            "kind vitally is a sink, not an export",
        ),
        ("connectors/with_url.toml:3", "unknown field `base_url`"),
        ("connectors/no_dir.toml:4", "directory is required"),
        (
            "connectors/export_b.toml:5",
            "writes healthsync-scores.* into",
        ),
    ] {
        let needle = format!("{}:", c.path(file_line).display());
        let line = err
            .lines()
            .find(|l| l.contains(&needle))
            .unwrap_or_else(|| panic!("{needle} in {err}"));
        assert!(line.contains(what), "{what:?} in {line}");
    }
}
