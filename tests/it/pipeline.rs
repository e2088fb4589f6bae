//! The pipeline in-process against the simulator: sync → score → plan → push, then a rerun that must send
//! nothing, and the score's ability to tell the simulator's churning accounts from its healthy ones.

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use healthsync::config;
use healthsync::pipeline::Runtime;
use healthsync::sim::{self, SimOptions, SimRateLimits, Vendor};
use healthsync::store::Store;
use healthsync::sync::SyncOptions;
use tokio::sync::watch;

fn limits() -> SimRateLimits {
    SimRateLimits::default()
        .with(Vendor::Hubspot, 1000)
        .with(Vendor::Stripe, 500)
        .with(Vendor::Usage, 30_000)
        .with(Vendor::Vitally, 60_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_then_rerun_sends_nothing() {
    let now = Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap();
    let sim = sim::start(SimOptions {
        accounts: 150,
        seed: 7,
        now,
        rate_limits: limits(),
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = healthsync::cli::demo::write_config(dir.path(), &sim, &limits()).unwrap();
    let cfg = config::load(&path, &healthsync::connector::kinds::catalog())
        .unwrap_or_else(|e| panic!("{:?}", e.0));
    let store = Store::open(&cfg.daemon.state_dir).unwrap();
    let rt = Runtime::build(cfg, store);
    assert!(rt.build_errors.is_empty(), "{:?}", rt.build_errors);
    let (_tx, shutdown) = watch::channel(false);

    let ids = rt.select_sources(&[]).unwrap();
    let statuses = rt
        .sync(&ids, &SyncOptions::default(), &shutdown, &|_, _, _| {})
        .await
        .unwrap();
    for s in &statuses {
        assert!(s.ok(), "{} failed: {:?}", s.connector, s);
    }
    assert_eq!(rt.store.record_count("hubspot", "companies").unwrap(), 150);

    let run = rt.score(now).unwrap();
    assert_eq!(run.scores.len(), 150);
    let d = &run.distribution;
    assert!(
        d.red > 0 && d.amber > 0 && d.green > 0,
        "every band should be used: {d:?}"
    );
    assert!(
        run.unmatched.is_empty(),
        "unmatched records: {:?}",
        run.unmatched
    );

    let plan = rt.plan(&run.scores, now).unwrap();
    assert_eq!(
        plan.field_writes(),
        150,
        "first run writes every account once"
    );
    let red_categories: usize = run
        .scores
        .iter()
        .map(|s| {
            s.categories
                .iter()
                .filter(|c| c.band == Some(healthsync::config::Band::Red))
                .count()
        })
        .sum();
    assert_eq!(
        plan.projects(),
        red_categories,
        "one project per red category, each with its playbook"
    );
    rt.enqueue(&plan, now).unwrap();
    let report = rt.push(&shutdown, now, &|_, _| {}).await.unwrap();
    assert_eq!(report.applied, plan.writes.len(), "{report:?}");
    assert_eq!(report.remaining, 0);

    let received = sim.received();
    let count = |method: &str, suffix: &str| {
        received
            .iter()
            .filter(|r| r.method == method && r.path.ends_with(suffix))
            .count()
    };
    assert_eq!(received.iter().filter(|r| r.method == "PUT").count(), 150);
    assert_eq!(count("POST", "/projects"), plan.projects());
    let first_round = received.len();

    // Rerun with nothing changed upstream: nothing planned, nothing sent.
    let statuses = rt
        .sync(&ids, &SyncOptions::default(), &shutdown, &|_, _, _| {})
        .await
        .unwrap();
    assert!(statuses.iter().all(|s| s.ok()));
    let run2 = rt.score(now).unwrap();
    let plan2 = rt.plan(&run2.scores, now).unwrap();
    assert!(
        plan2.writes.is_empty(),
        "unchanged inputs planned writes: {:?}",
        plan2.writes.first()
    );
    rt.enqueue(&plan2, now).unwrap();
    rt.push(&shutdown, now, &|_, _| {}).await.unwrap();
    assert_eq!(
        sim.received().len(),
        first_round,
        "a rerun with no change must send nothing"
    );

    // The score separates the simulator's hidden trajectories: churners score lower than healthy accounts.
    let truth = serde_json::to_value(sim.world().truth()).unwrap();
    let mut by_kind: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for s in &run.scores {
        let kind = truth
            .get(&s.account.id)
            .map(|t| t.to_string())
            .unwrap_or_default();
        if let Some(o) = s.overall {
            let k = if kind.contains("churning") {
                "churning"
            } else if kind.contains("healthy") {
                "healthy"
            } else {
                "declining"
            };
            by_kind.entry(k.into()).or_default().push(o);
        }
    }
    let mean = |k: &str| {
        let v = &by_kind[k];
        v.iter().sum::<f64>() / v.len() as f64
    };
    assert!(
        mean("churning") + 10.0 < mean("healthy"),
        "churning {} vs healthy {}",
        mean("churning"),
        mean("healthy")
    );
    sim.shutdown().await;
}

/// `healthsync demo --json` gives the same scores for the same seed, run after run (and different ones for
/// another seed, so the comparison can fail), and writes its report.
#[test]
fn demo_is_deterministic_per_seed() {
    let scores = |seed: &str| {
        let out = crate::support::run(&["demo", "--accounts", "300", "--seed", seed, "--json"]);
        assert!(
            out.status.success(),
            "{}",
            crate::support::text(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        // The demo ends by writing its report into the work folder it keeps, and says where (on stderr,
        // since stdout is the JSON); the folder holds no store, and the test removes it.
        let stderr = crate::support::text(&out.stderr);
        let report = stderr
            .lines()
            .find_map(|l| l.strip_prefix("report: "))
            .unwrap_or_else(|| panic!("no report path in: {stderr}"));
        let report = std::path::Path::new(report);
        let html = std::fs::read_to_string(report).unwrap();
        assert!(html.contains("<svg id=\"chart-heatmap\""));
        let folder = report.parent().unwrap();
        assert!(!folder.join("state").exists(), "the demo store is removed");
        std::fs::remove_dir_all(folder).unwrap();
        assert_eq!(v["delivery"]["dead_lettered"], 0);
        assert_eq!(v["scores"].as_array().unwrap().len(), 300);
        v["scores"].clone()
    };
    let a = scores("9");
    assert_eq!(a, scores("9"));
    assert_ne!(a, scores("10"));
}

/// `once` exits 1 and names the connector when a source failed, after doing (and printing) the rest, so
/// a wrapper can tell a run on partial inputs from a complete one (issue 25, case 5, the exit code).
#[test]
fn once_exits_non_zero_naming_a_source_that_failed() {
    let dir = tempfile::tempdir().unwrap();
    let sim = crate::support::start_sim(dir.path(), "7");
    // Delighted refuses a wrong API key with 401, which is final: its stream fails at once.
    std::fs::write(dir.path().join("secrets/delighted"), "not-the-key").unwrap();
    let out = crate::support::run(&["once", "--config", sim.config.to_str().unwrap()]);
    let err = crate::support::text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{err}");
    assert!(err.contains("sync failed for delighted"), "stderr:\n{err}");
    // The other sources still ran and the scores were still written.
    let stdout = crate::support::text(&out.stdout);
    assert!(stdout.contains("hubspot"), "stdout:\n{stdout}");
}
