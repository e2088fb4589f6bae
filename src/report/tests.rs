//! Unit tests of the report: gathering from a store (timeline, band moves, heat map, engagement, lowest
//! scores), thin data said plainly, rendering with and without a backtest, escaping, and writing.

use std::path::Path;

use chrono::{Duration, TimeZone as _};

use super::*;
use crate::backtest::{BandOutcome, DecileOutcome, RedFlag, SignalAuc, SignalKind};
use crate::scoring::{CategoryScore, MetricScore};
use crate::store::{ProjectRecord, ProjectState};

fn t(day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 10, 1, 6, 0, 0)
        .single()
        .expect("valid time")
        + Duration::days(i64::from(day))
}

fn model() -> Model {
    crate::config::load(
        Path::new("config/healthsync.toml"),
        &crate::connector::kinds::catalog(),
    )
    .expect("shipped config")
    .model
}

fn band(score: f64) -> Band {
    if score < 40.0 {
        Band::Red
    } else if score < 70.0 {
        Band::Amber
    } else {
        Band::Green
    }
}

/// A score for the starter model: usage (one metric) and engagement (one metric) both at `score`.
fn scored(id: &str, name: &str, tier: &str, score: f64, day: u32) -> AccountScore {
    let mut s = AccountScore::overall_only(id, score, band(score), t(day));
    s.account.name = name.into();
    s.account.segment = Some(tier.into());
    let metric = |id: &str| MetricScore {
        id: id.into(),
        label: id.into(),
        value: Some(score),
        score: Some(score),
        band: Some(band(score)),
        weight: 1.0,
        points_lost: (100.0 - score) / 2.0,
        contribution: score / 2.0,
        missing: None,
    };
    let category = |id: &str, m: &str| CategoryScore {
        id: id.into(),
        label: id.into(),
        score: Some(score),
        band: Some(band(score)),
        weight: 0.5,
        coverage: 1.0,
        parent: None,
        depth: 0,
        contribution: score / 2.0,
        metrics: vec![metric(m)],
    };
    s.categories = vec![
        category("usage", "feature_breadth"),
        category("engagement", "days_since_contact"),
    ];
    s
}

fn put(store: &Store, day: u32, scores: &[AccountScore]) {
    let pairs: Vec<(String, &AccountScore)> =
        scores.iter().map(|s| (s.account.id.clone(), s)).collect();
    store
        .put_scores(t(day).date_naive(), &pairs)
        .expect("put scores");
}

/// Three accounts scored on day 0 and day 10: `b` falls from green to red, `c` rises from red to amber.
fn populated() -> Store {
    let store = Store::temporary().expect("store");
    put(
        &store,
        0,
        &[
            scored("a", "Acme", "enterprise", 80.0, 0),
            scored("b", "Bolt", "smb", 75.0, 0),
            scored("c", "Cord", "smb", 30.0, 0),
        ],
    );
    put(
        &store,
        10,
        &[
            scored("a", "Acme", "enterprise", 82.0, 10),
            scored("b", "Bolt", "smb", 20.0, 10),
            scored("c", "Cord", "smb", 50.0, 10),
        ],
    );
    store
        .put_project(&ProjectRecord {
            sink: "vitally".into(),
            account_id: "c".into(),
            playbook: "poor_usage".into(),
            key: "c/poor_usage".into(),
            name: "Poor Health: Usage".into(),
            opened_at: t(1),
            state: ProjectState::Resolved { at: t(9) },
            earlier_openings: Vec::new(),
        })
        .expect("project");
    store
}

fn backtest() -> Backtest {
    Backtest {
        model: "starter".into(),
        model_hash: "h".into(),
        observed_until: t(100),
        dates: Vec::new(),
        accounts: 3,
        churn_events: 1,
        primary_horizon: 90,
        signals: vec![SignalAuc {
            id: "overall".into(),
            label: "Overall".into(),
            kind: SignalKind::Overall,
            auc: vec![Some(0.71), None, Some(0.734)],
            observations: 9,
        }],
        roc: vec![(0.0, 0.0), (0.2, 0.6), (1.0, 1.0)],
        bands: vec![BandOutcome {
            band: Band::Red,
            observations: 3,
            churned: 1,
            churn_rate: Some(1.0 / 3.0),
            lift: Some(3.0),
            nrr: Some(0.8),
            expanded: 0,
            downgraded: 1,
        }],
        cohorts: Vec::new(),
        deciles: vec![DecileOutcome {
            decile: 1,
            min_score: 10.0,
            max_score: 30.0,
            observations: 3,
            churn_rate: 0.5,
        }],
        red_flag: Some(RedFlag {
            precision: 0.33,
            recall: 1.0,
            lift: 3.0,
        }),
        suggestion: None,
        warnings: vec!["only 1 churn event: AUC is not meaningful".into()],
    }
}

#[test]
fn gather_reads_the_timeline_moves_heat_map_and_projects_from_the_store() {
    let data = gather(&populated(), &model(), t(11)).expect("gather");
    assert_eq!(data.accounts, 3);
    assert_eq!(data.timeline.len(), 2);
    let (first, last) = (&data.timeline[0], &data.timeline[1]);
    assert_eq!((first.red, first.amber, first.green), (1, 0, 2));
    assert_eq!((last.red, last.amber, last.green), (1, 1, 1));
    assert_eq!(last.overall, Some((82.0 + 20.0 + 50.0) / 3.0));
    let usage = data
        .categories
        .iter()
        .position(|c| c.id == "usage")
        .expect("usage");
    assert_eq!(first.categories[usage], Some((80.0 + 75.0 + 30.0) / 3.0));
    assert!(data.notes.is_empty(), "{:?}", data.notes);

    // The biggest fall first.
    let moves: Vec<(&str, Band, Band)> = data
        .movers
        .iter()
        .map(|m| (m.id.as_str(), m.from, m.to))
        .collect();
    assert_eq!(
        moves,
        [("b", Band::Green, Band::Red), ("c", Band::Red, Band::Amber)]
    );
    assert_eq!(data.movers[0].since, t(0).date_naive());

    let row = data
        .heatmap
        .metrics
        .iter()
        .position(|m| m.id == "feature_breadth")
        .expect("metric row");
    let col = |group: &str, key: &str| {
        data.heatmap
            .columns
            .iter()
            .position(|c| c.group == group && c.key == key)
            .expect("column")
    };
    assert_eq!(data.heatmap.cells[row][col("tier", "smb")], Some(35.0));
    assert_eq!(data.heatmap.cells[row][col("band", "green")], Some(82.0));
    assert_eq!(data.heatmap.columns[col("tier", "smb")].accounts, 2);
    // Metrics nobody has a score for go last; the two with scores tie at the same mean, in model order.
    let ids: Vec<&str> = data.heatmap.metrics.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(
        &ids[..2],
        ["days_since_contact", "feature_breadth"],
        "{ids:?}"
    );
    assert!(data.heatmap.cells[2..]
        .iter()
        .flatten()
        .all(Option::is_none));

    assert_eq!(data.engagement.measure.id, "engagement");
    let smb_red = data
        .engagement
        .cells
        .iter()
        .find(|c| c.tier == "smb" && c.band == Band::Red)
        .expect("cell");
    assert_eq!((smb_red.accounts, smb_red.mean), (1, Some(20.0)));

    let lowest: Vec<&str> = data.lowest.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(lowest, ["b", "c", "a"]);
    assert_eq!(data.impact.projects, 1);
    assert_eq!(data.impact.recovery.median_days, Some(8.0));
}

#[test]
fn one_scoring_run_is_said_plainly() {
    let store = Store::temporary().expect("store");
    put(&store, 0, &[scored("a", "Acme", "smb", 50.0, 0)]);
    let data = gather(&store, &model(), t(0)).expect("gather");
    assert!(data
        .notes
        .contains(&"one scoring run so far: trends need at least two".to_string()));
    assert!(data
        .notes
        .iter()
        .any(|n| n.contains("band moves this week need a week")));
    assert_eq!(
        data.impact.notes,
        ["no health projects yet: playbooks have not opened any"]
    );
    let html = render(&data, Err("not run")).expect("render");
    assert!(html.contains("One scoring run so far: trends need at least two."));
    assert!(html.contains("no health projects yet"));
    assert!(html.contains(r#"id="chart-bands""#));
    assert!(!html.contains(r#"id="chart-trends""#));
}

#[test]
fn an_empty_store_renders_and_says_there_are_no_scores() {
    let data = gather(&Store::temporary().expect("store"), &model(), t(0)).expect("gather");
    assert_eq!(
        data.notes,
        ["no scores yet: run `healthsync score` (or the daemon) first"]
    );
    let html = render(&data, Err("no scores")).expect("render");
    assert!(html.contains("no backtest: no scores"));
    assert!(!html.contains("<svg"));
}

#[test]
fn the_backtest_is_drawn_when_given_and_its_absence_explained_when_not() {
    let data = gather(&populated(), &model(), t(11)).expect("gather");
    let without = render(&data, Err("the backtest has not run")).expect("render");
    assert!(without.contains("no backtest: the backtest has not run"));
    for id in ["chart-roc", "chart-deciles", "chart-nrr"] {
        assert!(!without.contains(&format!(r#"id="{id}""#)), "{id}");
    }
    let bt = backtest();
    let with = render(&data, Ok(&bt)).expect("render");
    for id in [
        "chart-bands",
        "chart-trends",
        "chart-roc",
        "chart-deciles",
        "chart-nrr",
        "chart-heatmap",
        "chart-engagement",
        "chart-project-weeks",
        "chart-impact",
    ] {
        assert!(with.contains(&format!(r#"<svg id="{id}""#)), "{id} missing");
    }
    assert!(
        with.contains("0.734"),
        "the 90-day AUC is in the signal table"
    );
    assert!(with.contains("only 1 churn event: AUC is not meaningful"));
    assert!(
        with.contains("precision 33%</strong>")
            && with.contains("recall 100%</strong>")
            && with.contains("lift 3.00</strong>")
    );
    assert!(!with.contains("no backtest"));
    assert!(summary(&data, Ok(&bt)).ends_with("backtest: 3 accounts, 1 churn events"));
}

#[test]
fn text_from_vendors_is_escaped() {
    let store = Store::temporary().expect("store");
    let evil = r#"<script>alert(1)</script>"#;
    let tier = r#""><img src=x onerror=alert(2)>"#;
    put(&store, 0, &[scored("a", evil, tier, 30.0, 0)]);
    put(&store, 8, &[scored("a", evil, tier, 80.0, 8)]);
    let data = gather(&store, &model(), t(8)).expect("gather");
    assert_eq!(data.movers.len(), 1, "the account is in the moves table");
    let html = render(&data, Err("none")).expect("render");
    assert!(!html.contains(evil), "raw account name in the page");
    assert!(!html.contains("<img"), "raw tier in the page");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;"),
        "the name is shown, escaped"
    );
    // Our own two scripts (error recorder, sort) and the ready marker: nothing else.
    assert_eq!(html.matches("<script>").count(), 3);
}

#[test]
fn write_replaces_the_file_and_names_a_bad_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("report.html");
    write(&path, "one").expect("write");
    write(&path, "two").expect("rewrite");
    assert_eq!(std::fs::read_to_string(&path).expect("read"), "two");
    let leftovers = std::fs::read_dir(dir.path()).expect("dir").count();
    assert_eq!(leftovers, 1, "no temporary file left behind");

    let missing = dir.path().join("nope/report.html");
    let e = write(&missing, "x")
        .expect_err("missing folder")
        .to_string();
    assert!(e.contains(&missing.display().to_string()), "{e}");
    assert!(e.contains("does not exist"), "{e}");

    let e = write(dir.path(), "x").expect_err("a folder").to_string();
    assert!(e.ends_with("it is a folder"), "{e}");

    // A folder no one can create files in (even root: procfs refuses).
    #[cfg(target_os = "linux")]
    {
        let e = write(Path::new("/proc/healthsync-report.html"), "x")
            .expect_err("unwritable")
            .to_string();
        assert!(
            e.starts_with("cannot write the report to /proc/healthsync-report.html: cannot create a file in /proc: "),
            "{e}"
        );
        assert!(!e.contains(".healthsync-report-"), "no temporary name: {e}");
    }
}

#[test]
fn the_heat_map_puts_the_lowest_scoring_metric_first() {
    let store = Store::temporary().expect("store");
    let mut s = scored("a", "Acme", "smb", 50.0, 0);
    // usage/feature_breadth scores 90, engagement/days_since_contact 10.
    s.categories[0].metrics[0].score = Some(90.0);
    s.categories[1].metrics[0].score = Some(10.0);
    put(&store, 0, &[s]);
    let data = gather(&store, &model(), t(0)).expect("gather");
    let ids: Vec<&str> = data.heatmap.metrics.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(
        &ids[..2],
        ["days_since_contact", "feature_breadth"],
        "{ids:?}"
    );
    assert_eq!(data.heatmap.cells[0][0], Some(10.0));

    let mut s = scored("a", "Acme", "smb", 50.0, 0);
    s.categories[0].metrics[0].score = Some(10.0);
    s.categories[1].metrics[0].score = Some(90.0);
    put(&store, 1, &[s]);
    let data = gather(&store, &model(), t(1)).expect("gather");
    let ids: Vec<&str> = data.heatmap.metrics.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(
        &ids[..2],
        ["feature_breadth", "days_since_contact"],
        "{ids:?}"
    );
}
