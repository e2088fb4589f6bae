//! `file_export` tests: the workbook read back with calamine, the CSV round-tripped through a standard CSV
//! reader over generated populations, atomic replace and rotation, the history's crash repair, the folder
//! probe and the params checks. Scores come from the shipped starter model; no clock, no sleeps.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use calamine::{open_workbook, Data, DataType as _, Reader, Xlsx};
use chrono::{DateTime, Duration, TimeZone as _, Utc};
use proptest::prelude::*;

use std::io::Write as _;

use super::table::{columns, current};
use super::*;
use crate::config::Model;
use crate::identity::Account;
use crate::metrics::MetricValue;
use crate::scoring::{self, AccountScore};

fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/healthsync.toml");
        crate::config::load(&path, &crate::connector::kinds::catalog())
            .expect("the shipped config loads")
            .model
    })
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 0, 15, 0)
        .single()
        .expect("valid time")
}

/// Scores accounts named `names`, each metric given the value at the same index (cycled), `None`s kept.
fn population(names: &[String], values: &[Option<f64>], as_of: DateTime<Utc>) -> Vec<AccountScore> {
    let m = model();
    let stages = ["onboard", "adopt", "optimize"];
    let inputs: Vec<(Account, BTreeMap<String, MetricValue>)> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let account = Account {
                id: format!("acc-{i:05}"),
                name: name.clone(),
                stage: (i % 4 != 3).then(|| stages[i % 3].to_string()),
                segment: Some(if i % 2 == 0 { "smb" } else { "enterprise" }.to_string()),
                owner: None,
            };
            let vals = m
                .metrics
                .iter()
                .enumerate()
                .map(|(j, metric)| {
                    let v = if values.is_empty() {
                        Some((i * 7 + j * 13) as f64 % 50.0)
                    } else {
                        values[(i + j) % values.len()]
                    };
                    (
                        metric.id.clone(),
                        MetricValue {
                            value: v,
                            missing: v.is_none().then(|| "no records".to_string()),
                        },
                    )
                })
                .collect();
            (account, vals)
        })
        .collect();
    scoring::score_all(m, &inputs, |_| None, as_of)
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("Account {i}, Inc.")).collect()
}

fn settings(dir: &Path, formats: &[Format], keep: usize) -> Settings {
    Settings {
        directory: dir.to_path_buf(),
        file_stem: "scores".into(),
        formats: formats.to_vec(),
        keep,
        history: HistoryMode::Daily,
        history_days: DEFAULT_HISTORY_DAYS,
    }
}

fn export(
    s: &Settings,
    scores: &[AccountScore],
    trends: &BTreeMap<String, f64>,
) -> Result<Vec<PathBuf>, ExportError> {
    let as_of = scores.first().map(|s| s.as_of).unwrap_or_else(t0);
    FileExport {
        settings: s.clone(),
    }
    .export(&ExportRun {
        as_of,
        model: model(),
        scores,
        trends,
    })
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn excel_serial(t: DateTime<Utc>) -> f64 {
    let epoch = Utc
        .with_ymd_and_hms(1899, 12, 30, 0, 0, 0)
        .single()
        .expect("epoch");
    (t - epoch).num_seconds() as f64 / 86_400.0
}

/// A date cell's Excel serial number.
fn serial(data: &Data) -> Option<f64> {
    data.get_datetime().map(|d| d.as_f64())
}

/// Checks one sheet cell against the cell the export meant to write.
fn assert_cell(data: &Data, want: &Cell, at: &str) {
    match want {
        Cell::Number(n) => assert_eq!(data.get_float(), Some(*n), "{at}: {data:?}"),
        Cell::Text(s) => assert_eq!(data.get_string(), Some(s.as_str()), "{at}: {data:?}"),
        Cell::Time(t) => assert_eq!(serial(data), Some(excel_serial(*t)), "{at}: {data:?}"),
        Cell::Empty => assert!(data.is_empty(), "{at}: {data:?}"),
    }
}

#[test]
fn the_workbook_opens_and_holds_every_sheet_and_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = settings(dir.path(), &[Format::Xlsx], 3);
    let day1 = population(&names(40), &[], t0());
    let trends = BTreeMap::from([("acc-00001".to_string(), -12.5)]);
    export(&s, &day1, &BTreeMap::new()).expect("first run");
    let day2 = population(
        &names(40),
        &[Some(3.0), None, Some(41.0)],
        t0() + Duration::days(1),
    );
    let written = export(&s, &day2, &trends).expect("second run");
    assert_eq!(written, vec![dir.path().join("scores.xlsx")]);

    let mut wb: Xlsx<_> = open_workbook(&written[0]).expect("the workbook opens");
    assert_eq!(wb.sheet_names(), vec!["Scores", "History", "Model"]);

    // Scores: the header, then every cell of every account of the latest run.
    let run = ExportRun {
        as_of: day2[0].as_of,
        model: model(),
        scores: &day2,
        trends: &trends,
    };
    let want = current(&run);
    let sheet = wb.worksheet_range("Scores").expect("Scores sheet");
    let rows: Vec<&[Data]> = sheet.rows().collect();
    assert_eq!(rows.len(), 1 + day2.len());
    let header: Vec<String> = rows[0].iter().map(|d| d.to_string()).collect();
    assert_eq!(header, want.header);
    for (r, row) in want.rows.iter().enumerate() {
        for (c, cell) in row.iter().enumerate() {
            let got = rows[r + 1].get(c).unwrap_or(&Data::Empty);
            assert_cell(
                got,
                cell,
                &format!("Scores row {} {}", r + 1, want.header[c]),
            );
        }
    }
    // The trend given for one account is its trend_30d; the others have none.
    let trend_col = want
        .header
        .iter()
        .position(|h| h == "trend_30d")
        .expect("col");
    assert_eq!(rows[2][trend_col].get_float(), Some(-12.5));
    assert!(rows[1][trend_col].is_empty());

    // History: both runs, oldest first, without the metric columns.
    let history = wb.worksheet_range("History").expect("History sheet");
    let hrows: Vec<&[Data]> = history.rows().collect();
    assert_eq!(hrows.len(), 1 + 2 * 40);
    let hheader: Vec<String> = hrows[0].iter().map(|d| d.to_string()).collect();
    assert_eq!(hheader, history_columns(model()));
    let overall = hheader.iter().position(|h| h == "overall").expect("col");
    let id = hheader.iter().position(|h| h == "account_id").expect("col");
    let at = hheader
        .iter()
        .position(|h| h == "computed_at")
        .expect("col");
    for (i, s) in day1.iter().chain(&day2).enumerate() {
        let row = hrows[i + 1];
        assert_eq!(row[id].get_string(), Some(s.account.id.as_str()));
        assert_eq!(serial(&row[at]), Some(excel_serial(s.as_of)));
        match s.overall {
            Some(o) => assert_eq!(row[overall].get_float(), Some(o)),
            None => assert!(row[overall].is_empty()),
        }
    }

    // Model: the model row with its bands, then every category and metric with weights.
    let m = model();
    let sheet = wb.worksheet_range("Model").expect("Model sheet");
    let mrows: Vec<&[Data]> = sheet.rows().collect();
    let metric_rows: usize = m.categories.iter().map(|c| c.metric_ids().count()).sum();
    assert_eq!(
        mrows.len(),
        1 + 2 + m.categories.len() + metric_rows + m.overrides.len()
    );
    assert_eq!(mrows[1][0].get_string(), Some("model"));
    assert_eq!(mrows[1][6].get_float(), Some(m.bands.red_below));
    assert_eq!(mrows[1][7].get_float(), Some(m.bands.green_from));
    for c in &m.categories {
        let row = mrows
            .iter()
            .find(|r| r[0].get_string() == Some("category") && r[1].get_string() == Some(&c.id))
            .unwrap_or_else(|| panic!("category {} on the Model sheet", c.id));
        assert_eq!(row[4].get_float(), Some(c.weight));
        for (node, w) in &c.children {
            let row = mrows
                .iter()
                .find(|r| {
                    r[0].get_string() == Some("metric")
                        && r[1].get_string() == Some(node.id())
                        && r[3].get_string() == Some(&c.id)
                })
                .unwrap_or_else(|| panic!("metric {} on the Model sheet", node.id()));
            assert_eq!(row[4].get_float(), Some(*w));
        }
    }
    // Top-level weights of the overall sum to 1.
    let top: f64 = mrows
        .iter()
        .filter(|r| r[0].get_string() == Some("category") && r[3].is_empty())
        .filter_map(|r| r[5].get_float())
        .sum();
    assert!((top - 1.0).abs() < 1e-9, "{top}");
}

/// One part of the workbook as text: calamine reads values, not formats, so the conditional formats are
/// checked in the sheet's XML.
fn workbook_part(path: &Path, name: &str) -> String {
    use std::io::Read as _;
    let file = std::fs::File::open(path).expect("open workbook");
    let mut zip = zip::ZipArchive::new(file).expect("the workbook is a zip");
    let mut text = String::new();
    zip.by_name(name)
        .expect("part present")
        .read_to_string(&mut text)
        .expect("part is text");
    text
}

#[test]
fn scores_and_bands_get_red_amber_green_fills_and_header_filters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = settings(dir.path(), &[Format::Xlsx], 0);
    let scores = population(&names(5), &[], t0());
    let written = export(&s, &scores, &BTreeMap::new()).expect("export");
    let xml = workbook_part(&written[0], "xl/worksheets/sheet1.xml");
    let b = model().bands;
    let cols = columns(model());
    let col = |name: &str| {
        let i = cols.iter().position(|(n, _)| n == name).expect("column");
        rust_xlsxwriter::utility::column_number_to_name(i as u16)
    };
    let (overall, band) = (col("overall"), col("band"));
    assert!(
        xml.contains(&format!("{overall}2&lt;{}", b.red_below)),
        "{xml}"
    );
    assert!(
        xml.contains(&format!(
            "{overall}2&gt;={},{overall}2&lt;{}",
            b.red_below, b.green_from
        )),
        "{xml}"
    );
    assert!(
        xml.contains(&format!("{overall}2&gt;={}", b.green_from)),
        "{xml}"
    );
    assert!(xml.contains(&format!("{band}2=\"red\"")), "{xml}");
    assert!(xml.contains(&format!("{band}2=\"green\"")), "{xml}");
    // Every category column is filled too.
    for c in &model().categories {
        let x = col(&format!("category_{}", c.id));
        assert!(
            xml.contains(&format!("ISNUMBER({x}2)")),
            "category_{}",
            c.id
        );
    }
    assert!(
        xml.contains("<autoFilter"),
        "no header filters to sort with"
    );
    // Three fills (red, amber, green) are defined once and shared.
    let styles = workbook_part(&written[0], "xl/styles.xml");
    for rgb in ["FFFFC7CE", "FFFFEB9C", "FFC6EFCE"] {
        assert!(styles.contains(rgb), "{rgb} missing in styles");
    }
}

/// Every number in the CSV, parsed back, is bit for bit the score it came from.
fn assert_csv_round_trips(path: &Path, scores: &[AccountScore], trends: &BTreeMap<String, f64>) {
    let mut reader = csv::Reader::from_path(path).expect("the CSV opens");
    let header: Vec<String> = reader
        .headers()
        .expect("header")
        .iter()
        .map(str::to_string)
        .collect();
    let col = |name: &str| header.iter().position(|h| h == name).expect(name);
    let records: Vec<csv::StringRecord> = reader
        .records()
        .collect::<Result<_, _>>()
        .expect("every record parses");
    assert_eq!(records.len(), scores.len());
    let num = |r: &csv::StringRecord, name: &str| -> Option<f64> {
        let v = &r[col(name)];
        (!v.is_empty()).then(|| v.parse::<f64>().expect("a number"))
    };
    for (r, s) in records.iter().zip(scores) {
        assert_eq!(r.len(), header.len());
        assert_eq!(&r[col("account_id")], s.account.id);
        assert_eq!(&r[col("account_name")], s.account.name);
        assert_eq!(&r[col("band")], s.band.map(|b| b.name()).unwrap_or(""));
        assert_eq!(&r[col("stage")], s.account.stage.as_deref().unwrap_or(""));
        assert_eq!(
            &r[col("segment")],
            s.account.segment.as_deref().unwrap_or("")
        );
        assert_eq!(&r[col("model_hash")], s.model_hash);
        let at = DateTime::parse_from_rfc3339(&r[col("computed_at")]).expect("RFC 3339");
        assert_eq!(at, s.as_of);
        assert_eq!(
            num(r, "overall").map(f64::to_bits),
            s.overall.map(f64::to_bits)
        );
        assert_eq!(num(r, "coverage"), Some(s.coverage));
        assert_eq!(num(r, "trend_30d"), trends.get(&s.account.id).copied());
        assert_eq!(
            &r[col("top_risk")],
            s.top_risk().map(|x| x.label.as_str()).unwrap_or("")
        );
        for c in &s.categories {
            let got = num(r, &format!("category_{}", c.id));
            assert_eq!(got.map(f64::to_bits), c.score.map(f64::to_bits), "{}", c.id);
            for m in &c.metrics {
                let score = num(r, &format!("metric_{}_score", m.id));
                let value = num(r, &format!("metric_{}_value", m.id));
                assert_eq!(
                    score.map(f64::to_bits),
                    m.score.map(f64::to_bits),
                    "{}",
                    m.id
                );
                assert_eq!(
                    value.map(f64::to_bits),
                    m.value.map(f64::to_bits),
                    "{}",
                    m.id
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Generated populations, names with commas, quotes and line breaks, values with and without
    /// fractions, missing inputs: the CSV parses with a standard reader and every score comes back.
    #[test]
    fn the_csv_round_trips_every_score(
        names in proptest::collection::vec("[A-Za-z0-9 ,;\"'\n\r-]{0,16}", 1..30),
        values in proptest::collection::vec(
            proptest::option::weighted(0.8, -1.0e6f64..1.0e6), 1..12),
        trend in -50.0f64..50.0,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let scores = population(&names, &values, t0());
        let trends = BTreeMap::from([(scores[0].account.id.clone(), trend)]);
        let written = export(&settings(dir.path(), &[Format::Csv], 1), &scores, &trends)
            .expect("export");
        assert_csv_round_trips(&written[0], &scores, &trends);
        // The history holds the same run, parsed by the same reader.
        let history = csv::Reader::from_path(dir.path().join("scores-history.csv"))
            .expect("history opens")
            .records()
            .collect::<Result<Vec<_>, _>>()
            .expect("history parses");
        prop_assert_eq!(history.len(), scores.len());
    }
}

#[test]
fn each_run_replaces_the_files_and_keeps_the_newest_copies_without_temp_leftovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = settings(dir.path(), &[Format::Csv, Format::Xlsx], 3);
    // A crashed run's temp files, and another export's that must survive.
    std::fs::write(dir.path().join(".scores.csv.abc123.tmp"), "half").expect("write");
    std::fs::write(
        dir.path().join(".scores-20261101T000000Z.xlsx.link.tmp"),
        "x",
    )
    .expect("w");
    std::fs::write(dir.path().join(".scores-b.csv.xyz.tmp"), "other export").expect("write");
    std::fs::write(dir.path().join("notes.txt"), "the admin's").expect("write");
    let mut last = Vec::new();
    for day in 0..6 {
        last = population(&names(4 + day), &[], t0() + Duration::days(day as i64));
        export(&s, &last, &BTreeMap::new()).expect("export");
    }
    let stamps = ["20261126T001500Z", "20261127T001500Z", "20261128T001500Z"];
    let mut want: Vec<String> = vec![
        ".scores-b.csv.xyz.tmp".into(),
        "notes.txt".into(),
        "scores-history.csv".into(),
        "scores.csv".into(),
        "scores.xlsx".into(),
    ];
    for st in stamps {
        want.push(format!("scores-{st}.csv"));
        want.push(format!("scores-{st}.xlsx"));
    }
    want.sort();
    assert_eq!(files_in(dir.path()), want);
    // The current file is the last run; its copy has the same bytes.
    assert_csv_round_trips(&dir.path().join("scores.csv"), &last, &BTreeMap::new());
    assert_eq!(
        std::fs::read(dir.path().join("scores.csv")).expect("read"),
        std::fs::read(dir.path().join(format!("scores-{}.csv", stamps[2]))).expect("read")
    );
    // A rerun of the same run replaces its copy instead of adding one; keep = 0 removes them all.
    export(&s, &last, &BTreeMap::new()).expect("rerun");
    assert_eq!(files_in(dir.path()).len(), want.len());
    export(
        &settings(dir.path(), &[Format::Csv, Format::Xlsx], 0),
        &last,
        &BTreeMap::new(),
    )
    .expect("keep none");
    assert!(!files_in(dir.path())
        .iter()
        .any(|f| f.starts_with("scores-2026")));
}

#[test]
fn a_failed_write_leaves_the_previous_file_and_no_temp_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    files::write_atomic(dir.path(), "scores.csv", |w| w.write_all(b"old\n")).expect("first");
    let failed = files::write_atomic(dir.path(), "scores.csv", |w| {
        w.write_all(b"half of the new")?;
        Err(std::io::Error::other("disk full"))
    });
    let e = failed.expect_err("the write fails").to_string();
    assert!(e.contains("scores.csv") && e.contains("disk full"), "{e}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("scores.csv")).expect("read"),
        "old\n"
    );
    assert_eq!(files_in(dir.path()), vec!["scores.csv".to_string()]);
}

#[test]
fn a_torn_history_line_is_cut_back_and_new_columns_start_a_new_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = settings(dir.path(), &[Format::Csv], 0);
    let path = dir.path().join("scores-history.csv");
    let first = population(&names(3), &[], t0());
    export(&s, &first, &BTreeMap::new()).expect("first");
    // A crash in the middle of the next append: half a line, no newline.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open");
    f.write_all(b"2026-11-24T00:15:00Z,acc-00000,Acc")
        .expect("torn write");
    drop(f);
    let second = population(&names(3), &[], t0() + Duration::days(1));
    export(&s, &second, &BTreeMap::new()).expect("second");
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.ends_with('\n'));
    assert!(
        !text.contains(",Acc\n") && !text.contains(",Acc2026"),
        "{text}"
    );
    let rows = csv::Reader::from_path(&path)
        .expect("open")
        .records()
        .collect::<Result<Vec<_>, _>>()
        .expect("every line is a whole record");
    assert_eq!(rows.len(), 6);
    assert!(rows
        .iter()
        .all(|r| r.len() == history_columns(model()).len()));

    // A history written with other columns (an older model) is set aside, not mixed.
    std::fs::write(
        &path,
        "computed_at,account_id,overall\n2026-01-01T00:00:00Z,a,50\n",
    )
    .expect("write");
    export(&s, &second, &BTreeMap::new()).expect("third");
    let aside = dir.path().join("scores-history-20261124T001500Z.csv");
    assert!(std::fs::read_to_string(&aside)
        .expect("set aside")
        .contains(",a,50"));
    let rows = csv::Reader::from_path(&path)
        .expect("open")
        .records()
        .count();
    assert_eq!(rows, 3);
}

#[test]
fn the_history_sheet_shows_only_the_last_history_days() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(dir.path(), &[Format::Xlsx], 0);
    s.history_days = 2;
    for day in 0..5 {
        let scores = population(&names(2), &[], t0() + Duration::days(day));
        export(&s, &scores, &BTreeMap::new()).expect("export");
    }
    let mut wb: Xlsx<_> = open_workbook(dir.path().join("scores.xlsx")).expect("opens");
    let history = wb.worksheet_range("History").expect("sheet");
    // Runs at day 2, 3 and 4 are within two days of day 4; the CSV keeps all five.
    assert_eq!(history.rows().count(), 1 + 3 * 2);
    let all = csv::Reader::from_path(dir.path().join("scores-history.csv"))
        .expect("open")
        .records()
        .count();
    assert_eq!(all, 5 * 2);
}

#[test]
fn the_folder_probe_says_why_a_folder_cannot_be_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").expect("write");
    assert_eq!(
        probe_directory(&file).expect_err("a file"),
        "exists but is not a folder"
    );
    let under = probe_directory(&file.join("exports")).expect_err("under a file");
    assert!(under.contains("is a file, not a folder"), "{under}");
    assert!(under.contains("a-file"), "{under}");
    // Missing folders under a writable one are created by the first run.
    probe_directory(&dir.path().join("new/exports")).expect("creatable");
    probe_directory(dir.path()).expect("writable");
    assert_eq!(
        files_in(dir.path()),
        vec!["a-file".to_string()],
        "the probe file is gone"
    );
    // Permissions only bind a non-root user; root writes anywhere, so this part is skipped for root.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let locked = dir.path().join("locked");
        std::fs::create_dir(&locked).expect("mkdir");
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).expect("chmod");
        if unsafe { libc::geteuid() } != 0 {
            let e = probe_directory(&locked).expect_err("read-only folder");
            assert_eq!(e, "is not writable: permission denied");
        }
    }
}

#[test]
fn params_are_checked_with_every_problem_named() {
    let table = |s: &str| -> toml::Table { toml::from_str(s).expect("toml") };
    assert!((SPEC.parse_params)(&table("directory = \"out\"")).is_ok());
    let e = (SPEC.parse_params)(&table(
        "formats = [\"pdf\", \"csv\", \"csv\"]\nkeep = -1\nfile_stem = \"../x\"\nhistory = true\ncolour = 1",
    ))
    .expect_err("bad params");
    for what in [
        "directory is required",
        "unknown format \"pdf\"",
        "formats lists `csv` twice",
        "keep must be",
        "file_stem \"../x\"",
        "history must be \"daily\", \"every_run\" or \"off\"",
        "unknown key `colour`",
    ] {
        assert!(e.contains(what), "{what:?} missing in {e}");
    }
    let e = (SPEC.parse_params)(&table("directory = \"out\"\nformats = []")).expect_err("empty");
    assert!(e.contains("formats is empty"), "{e}");
}

#[test]
fn a_rerun_replaces_its_history_rows_and_each_history_line_is_one_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = settings(dir.path(), &[Format::Csv, Format::Xlsx], 0);
    let path = dir.path().join("scores-history.csv");
    let mut names = names(4);
    names[1] = "Line\nbreak, \"quoted\"\r\nname".into();
    let day1 = population(&names, &[], t0());
    let day2 = population(&names, &[Some(9.0)], t0() + Duration::days(1));
    export(&s, &day1, &BTreeMap::new()).expect("day 1");
    export(&s, &day2, &BTreeMap::new()).expect("day 2");
    // A retried run (same computed_at, new values) replaces its rows instead of adding them twice.
    let day2_again = population(&names, &[Some(33.0)], t0() + Duration::days(1));
    export(&s, &day2_again, &BTreeMap::new()).expect("day 2 again");
    let text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(text.lines().count(), 1 + 2 * 4, "{text}");
    assert!(
        text.contains("\"Line break, \"\"quoted\"\"  name\""),
        "{text}"
    );
    let rows = csv::Reader::from_path(&path)
        .expect("open")
        .records()
        .collect::<Result<Vec<_>, _>>()
        .expect("parses");
    let overall = history_columns(model())
        .iter()
        .position(|h| h == "overall")
        .expect("col");
    let want: Vec<String> = day1
        .iter()
        .chain(&day2_again)
        .map(|s| s.overall.map(|o| o.to_string()).unwrap_or_default())
        .collect();
    let got: Vec<String> = rows.iter().map(|r| r[overall].to_string()).collect();
    assert_eq!(got, want);
    // The current CSV keeps the name exactly as the CRM has it.
    assert_csv_round_trips(
        &dir.path().join("scores.csv"),
        &day2_again,
        &BTreeMap::new(),
    );
}

#[test]
fn the_history_sheet_is_read_from_the_end_of_a_long_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("h.csv");
    let header = "computed_at,account_id,overall\n";
    let mut text = String::from(header);
    // 3,000 days × 50 accounts: long enough to span many read chunks.
    for day in 0..3000 {
        let at = (t0() + Duration::days(day)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        for a in 0..50 {
            text.push_str(&format!("{at},a{a},{}.5\n", day % 100));
        }
    }
    std::fs::write(&path, &text).expect("write");
    let last = t0() + Duration::days(2999);
    let window = files::read_history(&path, last - Duration::days(9), usize::MAX).expect("read");
    assert_eq!(window.header, vec!["computed_at", "account_id", "overall"]);
    assert_eq!(window.rows.len(), 10 * 50);
    assert_eq!(window.rows[0][0], Cell::Time(last - Duration::days(9)));
    assert_eq!(window.rows[499][1], Cell::Text("a49".into()));
    assert_eq!(window.rows[499][2], Cell::Number(99.5));
    // Capped at the newest rows; a window older than the file gives every row but never the header.
    let capped = files::read_history(&path, last - Duration::days(9), 75).expect("read");
    assert_eq!(capped.rows.len(), 75);
    assert_eq!(capped.rows[74][1], Cell::Text("a49".into()));
    let all = files::read_history(&path, t0() - Duration::days(1), usize::MAX).expect("read");
    assert_eq!(all.rows.len(), 3000 * 50);
}

#[test]
fn daily_history_keeps_the_days_latest_run_and_every_run_keeps_all() {
    let count = |mode: HistoryMode| {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = settings(dir.path(), &[Format::Csv], 0);
        s.history = mode;
        // Four runs on day one (every 15 minutes), then one on day two.
        for run in 0..4 {
            let scores = population(
                &names(3),
                &[Some(run as f64)],
                t0() + Duration::minutes(15 * run),
            );
            export(&s, &scores, &BTreeMap::new()).expect("export");
        }
        let day2 = population(&names(3), &[Some(7.0)], t0() + Duration::days(1));
        export(&s, &day2, &BTreeMap::new()).expect("day two");
        let path = dir.path().join("scores-history.csv");
        if !path.exists() {
            return (0, Vec::new());
        }
        let rows = csv::Reader::from_path(&path)
            .expect("open")
            .records()
            .collect::<Result<Vec<_>, _>>()
            .expect("parses");
        let times: Vec<String> = rows.iter().map(|r| r[0].to_string()).collect();
        (rows.len(), times)
    };
    let (n, times) = count(HistoryMode::Daily);
    assert_eq!(n, 6);
    // Day one's rows are its last run's (00:15 + 45 min).
    assert!(
        times[..3].iter().all(|t| t == "2026-11-23T01:00:00Z"),
        "{times:?}"
    );
    assert!(
        times[3..].iter().all(|t| t == "2026-11-24T00:15:00Z"),
        "{times:?}"
    );
    assert_eq!(count(HistoryMode::EveryRun).0, 15);
    assert_eq!(count(HistoryMode::Off).0, 0);
}
