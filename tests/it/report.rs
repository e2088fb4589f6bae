//! The report end to end: a store populated by the pipeline against the simulator (scored weekly for ten
//! weeks, with playbook projects opened and resolved along the way), rendered with a hand-built backtest and
//! loaded in Debian's headless Chromium, which must run the page's scripts without an error and show every
//! chart; and `healthsync report` on the command line (the file and its summary, `--json`, a bad `--out`).
//!
//! Without `/usr/bin/chromium` the browser test is skipped with a printed reason, except under CI (the
//! `CI` variable set), where it fails: `.ci/run` installs Chromium.

use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{Duration, TimeZone, Utc};
use healthsync::backtest::{
    Backtest, BandOutcome, CohortRetention, DecileOutcome, EvaluationDate, RedFlag, ScoreSource,
    SignalAuc, SignalKind, WeightRow, WeightSuggestion,
};
use healthsync::config::{self, Band};
use healthsync::pipeline::Runtime;
use healthsync::report;
use healthsync::sim::{self, SimOptions, SimRateLimits, Vendor};
use healthsync::store::Store;
use healthsync::sync::SyncOptions;
use tokio::sync::watch;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Every chart the report draws when it has history, projects and a backtest.
const CHARTS: [&str; 9] = [
    "chart-bands",
    "chart-trends",
    "chart-roc",
    "chart-deciles",
    "chart-nrr",
    "chart-heatmap",
    "chart-engagement",
    "chart-project-weeks",
    "chart-impact",
];

/// The browser, or `None` (with the reason printed) when it is missing outside CI.
fn chromium() -> Option<PathBuf> {
    let path = PathBuf::from(CHROMIUM);
    if path.exists() {
        return Some(path);
    }
    let reason = format!("{CHROMIUM} is missing (apt-get install chromium)");
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set: the report must be checked in a browser, but {reason}"
    );
    eprintln!("skipping the headless-browser check of the report: {reason}");
    None
}

/// Loads `page` in headless Chromium and returns the DOM after its scripts ran.
fn dump_dom(chromium: &Path, page: &Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.path().display()),
            "--dump-dom",
            &format!("file://{}", page.display()),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn backtest() -> Backtest {
    let day = |d: i64| {
        Utc.with_ymd_and_hms(2026, 9, 1, 0, 0, 0)
            .unwrap()
            .date_naive()
            + Duration::days(d)
    };
    Backtest {
        model: "Starter health model".into(),
        model_hash: "h".into(),
        observed_until: Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap(),
        dates: (0..4)
            .map(|i| EvaluationDate {
                date: day(i * 14),
                source: ScoreSource::Stored,
                scored: 150,
            })
            .collect(),
        accounts: 150,
        churn_events: 21,
        primary_horizon: 90,
        signals: vec![
            SignalAuc {
                id: "overall".into(),
                label: "Overall".into(),
                kind: SignalKind::Overall,
                auc: vec![Some(0.78), Some(0.76), Some(0.74)],
                observations: 600,
            },
            SignalAuc {
                id: "usage".into(),
                label: "Usage <em>".into(),
                kind: SignalKind::Category,
                auc: vec![None, Some(0.66), Some(0.64)],
                observations: 600,
            },
        ],
        roc: vec![
            (0.0, 0.0),
            (0.1, 0.45),
            (0.3, 0.75),
            (0.6, 0.92),
            (1.0, 1.0),
        ],
        bands: [
            (Band::Red, 0.3, 0.82),
            (Band::Amber, 0.1, 0.97),
            (Band::Green, 0.02, 1.08),
        ]
        .into_iter()
        .map(|(band, rate, nrr)| BandOutcome {
            band,
            observations: 200,
            churned: (200.0 * rate) as usize,
            churn_rate: Some(rate),
            lift: Some(rate / 0.1),
            nrr: Some(nrr),
            expanded: 4,
            downgraded: 9,
        })
        .collect(),
        cohorts: vec![CohortRetention {
            cohort: "2025-Q3".into(),
            accounts: 40,
            churned: 3,
            starting_mrr: 52_000.0,
            current_mrr: 49_400.0,
            nrr: Some(0.95),
        }],
        deciles: (1..=10)
            .map(|d| DecileOutcome {
                decile: d,
                min_score: f64::from(d - 1) * 10.0,
                max_score: f64::from(d) * 10.0,
                observations: 60,
                churn_rate: 0.35 / f64::from(d),
            })
            .collect(),
        red_flag: Some(RedFlag {
            precision: 0.3,
            recall: 0.62,
            lift: 3.0,
        }),
        suggestion: Some(WeightSuggestion {
            horizon: 30,
            fitted_on: vec![day(0), day(14)],
            tested_on: vec![day(28), day(42)],
            rows: vec![WeightRow {
                metric: "usage_trend".into(),
                category: "usage".into(),
                label: "Usage trend".into(),
                configured: 45.0,
                suggested: 52.0,
            }],
            configured_auc: Some(0.74),
            suggested_auc: Some(0.77),
            caveat: None,
        }),
        warnings: vec!["21 churn events: figures at 30 days are rough".into()],
    }
}

/// A store the pipeline filled: synced from the simulator, scored every week for ten weeks and today, with
/// each plan's writes landed as a platform would confirm them (so playbooks open and resolve projects).
async fn populated_store(dir: &Path) -> Runtime {
    let now = Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap();
    let limits = SimRateLimits::default()
        .with(Vendor::Hubspot, 1000)
        .with(Vendor::Stripe, 500)
        .with(Vendor::Usage, 30_000)
        .with(Vendor::Vitally, 60_000);
    let sim = sim::start(SimOptions {
        accounts: 150,
        seed: 11,
        now,
        rate_limits: limits,
    })
    .await
    .unwrap();
    let path = healthsync::cli::demo::write_config(dir, &sim, &limits).unwrap();
    let cfg = config::load(&path, &healthsync::connector::kinds::catalog())
        .unwrap_or_else(|e| panic!("{:?}", e.0));
    let store = Store::open(&cfg.daemon.state_dir).unwrap();
    let rt = Runtime::build(cfg, store);
    let (_tx, shutdown) = watch::channel(false);
    let ids = rt.select_sources(&[]).unwrap();
    for s in rt
        .sync(&ids, &SyncOptions::default(), &shutdown, &|_, _, _| {})
        .await
        .unwrap()
    {
        assert!(s.ok(), "{} failed: {:?}", s.connector, s);
    }
    sim.shutdown().await;
    for weeks_ago in (0..=10).rev() {
        let at = now - Duration::days(7 * weeks_ago);
        let run = rt.score(at).unwrap();
        let plan = rt.plan(&run.scores, at).unwrap();
        rt.enqueue(&plan, at).unwrap();
        for e in rt.store.outbox(None).unwrap() {
            rt.store.confirm(&e).unwrap();
        }
    }
    rt
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_loads_in_headless_chromium_with_every_chart() {
    let Some(chromium) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let rt = populated_store(dir.path()).await;
    let data = report::gather(&rt.store, &rt.config.model, Utc::now()).unwrap();
    assert_eq!(data.timeline.len(), 11, "one history point per scoring day");
    assert!(
        data.impact.resolved > 0,
        "some projects resolved: {:?}",
        data.impact
    );
    let bt = backtest();
    let html = report::render(&data, Ok(&bt)).unwrap();
    let page = dir.path().join("report.html");
    report::write(&page, &html).unwrap();

    let dom = dump_dom(&chromium, &page);
    assert!(
        dom.contains(r#"data-ready="1""#),
        "the page's scripts did not finish: {}",
        &dom[..dom.len().min(2000)]
    );
    assert!(
        !dom.contains("data-errors="),
        "script errors: {}",
        dom.split("data-errors=")
            .nth(1)
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect::<String>()
    );
    for id in CHARTS {
        let start = dom.find(&format!(r#"<svg id="{id}""#));
        assert!(
            start.is_some(),
            "chart {id} is missing from the loaded page"
        );
        // Drawn, not just present: an empty chart has axes but no bar, point or line.
        let chart = &dom[start.unwrap_or_default()..];
        let chart = &chart[..chart.find("</svg>").unwrap_or(chart.len())];
        // (One `<rect` may be the plot frame, so bars need a second.)
        let drawn = ["<circle", "<polyline", "<path d=\"M"]
            .iter()
            .any(|mark| chart.contains(mark))
            || chart.matches("<rect").count() > 1;
        assert!(drawn, "chart {id} draws nothing");
    }
    // The sort script ran over every sortable table: it makes each header focusable.
    let tables = html.matches(r#"<table class="sortable">"#).count();
    assert!(tables >= 5, "{tables} sortable tables");
    assert!(dom.contains(r#"tabindex="0""#));
    // Text from data stays text: the label with markup in it is shown, not parsed.
    assert!(dom.contains("Usage &lt;em&gt;"));
    // Clicking a header sorts: the lowest-scores table (lowest first) clicked twice on Score puts the
    // highest of its scores first.
    let click = r#"<script>
var t = document.querySelector('#lowest table.sortable');
var th = t.querySelectorAll('thead th')[2];
th.click(); th.click();
document.documentElement.setAttribute('data-first', t.tBodies[0].rows[0].cells[2].getAttribute('data-v'));
document.documentElement.setAttribute('data-order', th.getAttribute('aria-sort'));
</script></body>"#;
    let clicked = dir.path().join("clicked.html");
    std::fs::write(&clicked, html.replace("</body>", click)).unwrap();
    let dom = dump_dom(&chromium, &clicked);
    assert!(
        !dom.contains("data-errors="),
        "script errors after clicking"
    );
    let attr = |name: &str| {
        dom.split(&format!("{name}=\""))
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default()
            .to_string()
    };
    let highest = data.lowest.iter().map(|r| r.score).fold(f64::MIN, f64::max);
    let first: f64 = attr("data-first").parse().unwrap_or(f64::NAN);
    assert!(
        (first - highest).abs() < 1e-9,
        "first row after sorting descending: {first}, expected {highest}"
    );
    assert_eq!(attr("data-order"), "descending");

    // Self-contained: nothing is fetched.
    for needle in ["http://", "https://", "src=\"", "<link"] {
        let outside_svg_ns = html.replace("http://www.w3.org/2000/svg", "");
        assert!(
            !outside_svg_ns.contains(needle),
            "the page refers to something outside it: {needle}"
        );
    }
}

#[test]
fn report_command_writes_the_file_prints_json_and_names_a_bad_out_path() {
    let copy = crate::support::ConfigCopy::new();
    let state = tempfile::tempdir().unwrap();
    let config = copy.daemon();
    let base = [
        "--config",
        config.to_str().unwrap(),
        "--state-dir",
        state.path().to_str().unwrap(),
        "report",
    ];
    let out_path = state.path().join("report.html");
    let args = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let run = |extra: &[&str]| {
        let a = args(extra);
        crate::support::run(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };

    let ok = run(&["--out", out_path.to_str().unwrap()]);
    assert!(ok.status.success(), "{}", crate::support::text(&ok.stderr));
    let stdout = crate::support::text(&ok.stdout);
    assert!(
        stdout.starts_with(&format!("report written: {}", out_path.display())),
        "{stdout}"
    );
    assert!(stdout.contains("0 accounts"), "{stdout}");
    let html = std::fs::read_to_string(&out_path).unwrap();
    assert!(html.contains("no scores yet"));

    let json = run(&["--json"]);
    assert!(
        json.status.success(),
        "{}",
        crate::support::text(&json.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["accounts"], 0);
    assert_eq!(v["impact"]["projects"], 0);

    let missing = state.path().join("no/such/folder/report.html");
    let bad = run(&["--out", missing.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2));
    let err = crate::support::text(&bad.stderr);
    assert!(
        err.contains(&missing.display().to_string()) && err.contains("does not exist"),
        "{err}"
    );

    let neither = run(&[]);
    assert_eq!(
        neither.status.code(),
        Some(2),
        "--out is required without --json"
    );
}
