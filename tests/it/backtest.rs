//! Backtests against the simulator, whose ground truth knows who churned and when: outcomes read from the
//! simulated Stripe billing agree with that truth, the stored history is replayed (or recomputed without
//! look-ahead), the score predicts churn, and weights are fitted on earlier dates than they are tested on.

use chrono::{Duration, TimeZone, Utc};
use healthsync::backtest::{self, BacktestError, BacktestOptions, ScoreSource};
use healthsync::book::Book;
use healthsync::config;
use healthsync::pipeline::Runtime;
use healthsync::sim::{self, SimOptions, SimRateLimits, Vendor};
use healthsync::store::Store;
use healthsync::sync::SyncOptions;
use tokio::sync::watch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backtest_reads_the_simulated_churn_and_the_score_predicts_it() {
    let now = Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap();
    // Generous budgets: this test is about the figures, not throttling.
    let limits = SimRateLimits::default()
        .with(Vendor::Hubspot, 1000)
        .with(Vendor::Stripe, 500)
        .with(Vendor::Usage, 30_000)
        .with(Vendor::Vitally, 60_000);
    let sim = sim::start(SimOptions {
        accounts: 400,
        seed: 5,
        now,
        rate_limits: limits,
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = healthsync::cli::demo::write_config(dir.path(), &sim, &limits).unwrap();
    let cfg = config::load(&path, &healthsync::connector::kinds::catalog())
        .unwrap_or_else(|e| panic!("{:?}", e.0));
    let store = Store::open(&cfg.daemon.state_dir).unwrap();
    let rt = Runtime::build(cfg.clone(), store.clone());
    let (_tx, shutdown) = watch::channel(false);
    let ids = rt.select_sources(&[]).unwrap();
    rt.sync(&ids, &SyncOptions::default(), &shutdown, &|_, _, _| {})
        .await
        .unwrap();
    rt.book().backfill(now, 16, &|_, _| {}).unwrap();
    rt.score(now).unwrap();

    let b = backtest::run(&rt.book(), now, BacktestOptions::default()).unwrap();
    // Outcomes come from the billing records alone; they must match the simulator's hidden truth: every
    // account whose subscription ended more than the 30-day grace period ago, and no other.
    let truth = sim.world().truth();
    let expected = truth
        .values()
        .filter(|t| t.churn_at.is_some_and(|c| c + Duration::days(30) <= now))
        .count();
    assert!(
        expected >= 20,
        "the simulated history has churn: {expected}"
    );
    assert_eq!(b.churn_events, expected);

    assert_eq!(b.dates.len(), 17, "16 backfilled weeks and today");
    assert!(b.dates.iter().all(|d| d.source == ScoreSource::Stored));
    let overall = &b.signals[0];
    assert_eq!(overall.id, "overall");
    let auc_30 = overall.auc[0].expect("enough churn within 30 days");
    assert!(
        auc_30 > 0.65,
        "the starter model predicts the simulated churn: {auc_30}"
    );
    assert_eq!(b.roc.first(), Some(&(0.0, 0.0)));
    assert_eq!(b.roc.last(), Some(&(1.0, 1.0)));
    assert_eq!(b.deciles.len(), 10);
    let observed: usize = b.bands.iter().map(|x| x.observations).sum();
    assert_eq!(
        observed,
        b.deciles.iter().map(|d| d.observations).sum::<usize>()
    );

    // Weights are fitted on dates whose churn windows close before the first test date.
    let s = b.suggestion.as_ref().expect("enough churn to fit and test");
    let last_fit = *s.fitted_on.last().unwrap();
    let first_test = *s.tested_on.first().unwrap();
    assert!(
        last_fit + Duration::days(i64::from(s.horizon)) <= first_test,
        "{s:?}"
    );
    let total: f64 = s.rows.iter().map(|r| r.suggested).sum();
    assert!(
        (total - 100.0).abs() < 0.5,
        "suggested weights add up to 100%: {total}"
    );
    assert!(s.configured_auc.is_some() && s.suggested_auc.is_some());

    // Recomputed from the cached records: the same dates, none stored, and the score still predicts.
    let r = backtest::run(&rt.book(), now, BacktestOptions { recompute: true }).unwrap();
    assert!(r.dates.iter().all(|d| d.source == ScoreSource::Recomputed));
    assert_eq!(r.churn_events, expected);
    assert!(
        r.signals[0].auc[0].is_some_and(|a| a > 0.65),
        "{:?}",
        r.signals[0]
    );

    // An empty cache is told to sync first, not given a page of empty figures.
    let empty = Runtime::build(cfg.clone(), Store::temporary().unwrap());
    let err = backtest::run(&empty.book(), now, BacktestOptions::default()).unwrap_err();
    assert!(matches!(err, BacktestError::NoAccounts(_)), "{err}");
    assert!(err.to_string().contains("healthsync sync"), "{err}");

    // A model without [outcomes] is told what to add, not given empty figures.
    let mut bare = cfg;
    bare.model.outcomes = None;
    let err = backtest::run(
        &Book {
            config: &bare,
            store: &store,
        },
        now,
        BacktestOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, BacktestError::NoOutcomes(_)));
    assert!(err.to_string().contains("[outcomes]"), "{err}");
    sim.shutdown().await;
}

/// The command line end to end: sync, backfill, then a candidate model backtested beside the current one.
#[test]
fn cli_compares_a_candidate_model_on_the_same_dates() {
    let dir = tempfile::tempdir().unwrap();
    let sim = crate::support::start_sim(dir.path(), "8");
    let config = sim.config.to_str().unwrap().to_string();
    let ok = |args: &[&str]| {
        let mut all = vec!["--config", config.as_str()];
        all.extend_from_slice(args);
        let out = crate::support::run(&all);
        let stderr = crate::support::text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        crate::support::text(&out.stdout)
    };
    ok(&["sync"]);
    ok(&["score", "--backfill-weeks", "14", "--limit", "1"]);
    // A shipped model with other categories than the sinks' field maps name: a backtest writes nothing, so
    // it is not held to them (a shadow `plan` is).
    let candidate = crate::support::repo().join("config/models/simple-seven.toml");
    let out = ok(&["backtest", "--json", "--model", candidate.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let dates = |side: &str| -> Vec<(String, String)> {
        (v[side]["dates"].as_array().unwrap().iter())
            .map(|d| (d["date"].to_string(), d["source"].to_string()))
            .collect()
    };
    assert_eq!(dates("current"), dates("candidate"), "same dates for both");
    assert!(dates("current").iter().all(|d| d.1 == "\"recomputed\""));
    assert_ne!(v["current"]["model_hash"], v["candidate"]["model_hash"]);
    let human = ok(&["backtest"]);
    assert!(human.contains("AUC for churn within"), "{human}");
    assert!(human.contains("replayed from the score history"), "{human}");
}
