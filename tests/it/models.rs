//! The four shipped health models: each validates with the shipped connectors, each scores the simulator's
//! accounts (and tells its churning accounts from its healthy ones), and hand-built accounts score what
//! was computed by hand; plus validate errors with file:line for the model keys added with them.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use healthsync::config::{self, Band, Model, RiskKind, StreamRef};
use healthsync::identity;
use healthsync::scoring::{self, AccountScore};
use healthsync::sim::{self, SimOptions, SimRateLimits, Vendor};
use healthsync::store::Store;
use healthsync::sync::SyncOptions;
use healthsync::vocab::Record;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::support::{text, ConfigCopy};

const MODELS: [&str; 4] = [
    "four-relationships",
    "eight-categories",
    "five-dimensions",
    "simple-seven",
];

/// The shipped config with `model` as the health model. The sinks' field maps name the starter model's
/// categories, so they are cut down to the overall fields, as an admin switching models would.
fn copy_with(model: &str) -> ConfigCopy {
    let copy = ConfigCopy::new();
    copy.edit(
        "config/healthsync.toml",
        "models/starter.toml",
        &format!("models/{model}.toml"),
    );
    for entry in std::fs::read_dir(copy.path("connectors")).unwrap() {
        let path = entry.unwrap().path();
        let mut file: toml::Table =
            toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let fields = file.get_mut("fields").and_then(|f| f.as_table_mut());
        let cut = fields.map(|f| (f.remove("categories"), f.remove("category_bands")));
        if cut.is_some_and(|(a, b)| a.is_some() || b.is_some()) {
            std::fs::write(&path, toml::to_string(&file).unwrap()).unwrap();
        }
    }
    copy
}

#[test]
fn every_shipped_model_validates() {
    for m in MODELS {
        let out = copy_with(m).validate();
        assert_eq!(out.status.code(), Some(0), "{m}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("config is valid"), "{m}");
    }
}

fn load_model(copy: &ConfigCopy) -> Model {
    config::load(&copy.daemon(), &healthsync::connector::kinds::catalog())
        .unwrap_or_else(|e| panic!("{:?}", e.0))
        .model
}

#[test]
fn bad_model_keys_are_reported_with_file_and_line_all_at_once() {
    let copy = copy_with("four-relationships");
    let file = "config/models/four-relationships.toml";
    copy.edit(
        file,
        "when = \"m.usage_trend < -30.0\"",
        "when = \"m.usage_trnd < -30.0\"",
    );
    copy.edit(
        file,
        "filter = \"double(r.events) > 0.0\"",
        "filter = \"r.events >\"",
    );
    copy.edit(file, "kind = \"soft\"", "kind = \"mild\"");
    copy.edit(
        file,
        "[categories.usage]\nlabel = \"Usage\"\nweight = 25",
        "[categories.usage]\nlabel = \"Usage\"\nparent = \"nowhere\"\nweight = 25",
    );
    copy.edit(
        file,
        "[risks.invoice_overdue]",
        "[overrides.x]\nstage = \"onboard\"\nweights = { usage = 10, nothing = 5 }\n\n[risks.invoice_overdue]",
    );
    let out = copy.validate();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let text_of = std::fs::read_to_string(copy.path(file)).unwrap();
    let line_of = |needle: &str| {
        text_of
            .lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle} not in model"))
            + 1
    };
    let path = copy.path(file).display().to_string();
    for (needle, what) in [
        ("m.usage_trnd", "uses unknown metric(s) usage_trnd"),
        ("r.events >", "CEL does not parse at column"),
        ("kind = \"mild\"", "kind `mild`; use hard, soft, advocacy"),
        ("parent = \"nowhere\"", "parent `nowhere` is not a category"),
        ("nothing = 5", "weights name `nothing`"),
    ] {
        let at = format!("{path}:{}", line_of(needle));
        assert!(
            err.lines().any(|l| l.contains(&at) && l.contains(what)),
            "expected {at} with {what:?} in:\n{err}"
        );
    }
}

#[test]
fn more_bad_model_keys_each_with_their_line() {
    let copy = copy_with("simple-seven");
    let file = "config/models/simple-seven.toml";
    let edits = [
        ("m.active_users_30d / m.seats", "m.active_users_30d / m.seatz"),
        (
            "map = { green = 100, amber = 50, red = 1 }",
            "map = { green = 100, amber = 50, red = 1 }\nbands = { red_below = 90, green_from = 80 }",
        ),
        (
            "score = { linear = [[-40, 1], [-10, 50], [0, 70], [15, 100]] }",
            "score = { percentile = \"up\" }",
        ),
        (
            "segments = [\"enterprise\", \"mid_market\", \"smb\"]",
            "segments = [\"enterprise\", \"mid_market\", \"smb\"]\nlinks = { \"acme.io\" = \"1\" }",
        ),
        ("stage = \"adopt\"", "stage = \"adpot\""),
        ("when = \"product\"", "when = \"risk:nope\""),
        (
            "field = \"support_tickets_90d\"",
            "field = \"support_tickets_90d\"\nfilter = \"r.x ===\"",
        ),
    ];
    for (from, to) in edits {
        copy.edit(file, from, to);
    }
    let out = copy.validate();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let model = std::fs::read_to_string(copy.path(file)).unwrap();
    let path = copy.path(file).display().to_string();
    for (needle, what) in [
        ("m.seatz", "expr uses unknown metric `m.seatz`"),
        (
            "red_below = 90",
            "metric csm_sentiment: bands need 1 < red_below < green_from",
        ),
        (
            "percentile = \"up\"",
            "percentile = `up`; use higher or lower",
        ),
        (
            "\"acme.io\" = \"1\"",
            "must be \"key:value\" = \"account id\"",
        ),
        (
            "stage = \"adpot\"",
            "stage `adpot` is not one of accounts.stages",
        ),
        ("risk:nope", "but the model has no [risks]"),
        ("r.x ===", "filter: CEL does not parse"),
    ] {
        let line = model.lines().position(|l| l.contains(needle)).unwrap() + 1;
        let at = format!("{path}:{line}:");
        assert!(
            err.lines().any(|l| l.contains(&at) && l.contains(what)),
            "expected {at} with {what:?} in:\n{err}"
        );
    }
    assert!(err.contains("7 problem(s) found"), "{err}");
}

fn limits() -> SimRateLimits {
    SimRateLimits::default()
        .with(Vendor::Hubspot, 1000)
        .with(Vendor::Stripe, 500)
        .with(Vendor::Usage, 30_000)
        .with(Vendor::Vitally, 60_000)
}

/// Every record of every source stream, as the pipeline reads them.
fn all_streams(store: &Store) -> BTreeMap<StreamRef, Vec<Record>> {
    let mut out = BTreeMap::new();
    for (c, s) in [
        ("hubspot", "companies"),
        ("stripe", "customers"),
        ("stripe", "subscriptions"),
        ("stripe", "invoices"),
        ("usage", "daily_usage"),
    ] {
        let records = store
            .records(c, s)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        out.insert(
            StreamRef {
                connector: c.into(),
                stream: s.into(),
            },
            records,
        );
    }
    out
}

fn score_book(
    model: &Model,
    streams: BTreeMap<StreamRef, Vec<Record>>,
    as_of: DateTime<Utc>,
) -> Vec<AccountScore> {
    let resolved = identity::resolve(&model.accounts, streams);
    let inputs: Vec<_> = resolved
        .accounts
        .iter()
        .map(|d| {
            (
                d.account.clone(),
                healthsync::metrics::compute(model, d, as_of),
            )
        })
        .collect();
    scoring::score_all(model, &inputs, |_| None, as_of)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shipped_model_scores_the_simulator() {
    let now = Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap();
    let sim = sim::start(SimOptions {
        accounts: 150,
        seed: 11,
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
    let rt = healthsync::pipeline::Runtime::build(cfg, store);
    let (_tx, shutdown) = watch::channel(false);
    let ids = rt.select_sources(&[]).unwrap();
    for s in rt
        .sync(&ids, &SyncOptions::default(), &shutdown, &|_, _, _| {})
        .await
        .unwrap()
    {
        assert!(s.ok(), "{} failed: {:?}", s.connector, s);
    }
    let truth = serde_json::to_value(sim.world().truth()).unwrap();
    let trajectory = |id: &str| -> String {
        truth
            .as_object()
            .unwrap()
            .values()
            .find(|t| t["hubspot_company_id"] == id)
            .map(|t| t["trajectory"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };

    let gone = |id: &str| {
        truth.as_object().unwrap().values().any(|t| {
            t["hubspot_company_id"] == id
                && t["churn_at"]
                    .as_str()
                    .and_then(|c| c.parse::<chrono::DateTime<chrono::Utc>>().ok())
                    .is_some_and(|c| c < now)
        })
    };
    for name in MODELS {
        let model = load_model(&copy_with(name));
        let scores = score_book(&model, all_streams(&rt.store), now);
        assert_eq!(scores.len(), 150, "{name}");
        let scored: Vec<&AccountScore> = scores.iter().filter(|s| s.overall.is_some()).collect();
        for s in scores.iter().filter(|s| s.overall.is_none()) {
            assert!(
                s.coverage < model.min_coverage,
                "{name}: N/A at coverage {}",
                s.coverage
            );
        }
        // Accounts that have already left have no recent usage: a usage-heavy model may rightly leave
        // them unscored. Every account still a customer must score, give or take ten.
        let live: Vec<&AccountScore> = scores.iter().filter(|s| !gone(&s.account.id)).collect();
        let live_scored = live.iter().filter(|s| s.overall.is_some()).count();
        assert!(
            live_scored + 10 >= live.len(),
            "{name}: only {live_scored} of {} current customers scored",
            live.len()
        );
        for s in &scores {
            assert!(s.coverage >= 0.0 && s.coverage <= 1.0 + 1e-9);
            if let Some(o) = s.overall {
                assert!((1.0..=100.0).contains(&o), "{name}: {o}");
            }
        }
        let mean = |kind: &str| {
            let xs: Vec<f64> = scored
                .iter()
                .filter(|s| trajectory(&s.account.id) == kind)
                .filter_map(|s| s.overall)
                .collect();
            assert!(!xs.is_empty(), "{name}: no {kind} accounts");
            xs.iter().sum::<f64>() / xs.len() as f64
        };
        assert!(
            mean("churning") + 5.0 < mean("healthy"),
            "{name}: churning {} vs healthy {}",
            mean("churning"),
            mean("healthy")
        );
        // The manual input (a CRM property the CSM sets, simulated) is read, mapped and scored.
        if model.metric("csm_sentiment").is_some() {
            let present = scores
                .iter()
                .filter(|s| s.metric("csm_sentiment").is_some_and(|m| m.score.is_some()))
                .count();
            assert!(present >= 140, "{name}: sentiment on {present} of 150");
        }
        // Employee counts are banded into segments, and the large ones get their override.
        if name == "five-dimensions" {
            for s in &scores {
                let seg = s.account.segment.as_deref().unwrap_or("");
                assert!(["small", "mid", "large"].contains(&seg), "segment {seg}");
                assert_eq!(s.overrides == ["large"], seg == "large");
            }
            assert!(scores
                .iter()
                .any(|s| s.account.segment.as_deref() == Some("large")));
        }
        // Risk playbooks open a project for exactly the accounts whose event is active.
        if name == "four-relationships" {
            let sinks: Vec<_> = rt.config.sinks().collect();
            let plan = healthsync::planner::plan(&rt.store, &model, &sinks, &scores, now).unwrap();
            let mut opened: Vec<&str> = plan
                .writes
                .iter()
                .filter_map(|w| match &w.op {
                    healthsync::vocab::WriteOp::CreateProject {
                        playbook, account, ..
                    } if playbook == "overdue_invoice_call" => Some(account.account_id.as_str()),
                    _ => None,
                })
                .collect();
            let mut at_risk: Vec<&str> = scores
                .iter()
                .filter(|s| s.risks.iter().any(|r| r.id == "invoice_overdue"))
                .map(|s| s.account.id.as_str())
                .collect();
            opened.sort();
            at_risk.sort();
            assert!(!at_risk.is_empty(), "no overdue invoices in the simulation");
            assert_eq!(opened, at_risk);
        }
        let d = scoring::Distribution::of(&scores);
        assert!(
            [d.red, d.amber, d.green].iter().filter(|n| **n > 0).count() >= 2,
            "{name}: {d:?}"
        );
    }
    sim.shutdown().await;
}

// --- Hand-built accounts, hand-computed scores ------------------------------------------------------

fn at(day: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 10, 1, 0, 0, 0).unwrap() + Duration::days(day)
}

fn rec(id: &str, day: i64, keys: &[(&str, &str)], fields: Value) -> Record {
    Record {
        id: id.into(),
        updated_at: at(day),
        account_keys: keys
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        fields: fields.as_object().cloned().unwrap(),
    }
}

fn sref(c: &str, s: &str) -> StreamRef {
    StreamRef {
        connector: c.into(),
        stream: s.into(),
    }
}

/// One account, `c1`, as of day 60: 20 seats; usage days 1–60 with 8 active users, 100 events and 4
/// features a day in days 1–30 and 10 users, 80 events, 5 features a day in days 31–60; last contacted on
/// day 45; CSM sentiment amber set on day 50; stage and tier as given.
fn book(stage: &str, sentiment_day: i64) -> BTreeMap<StreamRef, Vec<Record>> {
    let mut s = BTreeMap::new();
    s.insert(
        sref("hubspot", "companies"),
        vec![rec(
            "c1",
            sentiment_day,
            &[("crm_id", "c1"), ("domain", "acme.io")],
            json!({"name": "Acme", "cs_stage": stage, "cs_tier": "smb",
                   "notes_last_contacted": at(45).to_rfc3339(), "csm_sentiment": "Amber"}),
        )],
    );
    s.insert(
        sref("stripe", "subscriptions"),
        vec![rec(
            "sub_1",
            1,
            &[("crm_id", "c1")],
            json!({"status": "active", "cancel_at_period_end": false,
                   "items": {"data": [{"quantity": 20}]}}),
        )],
    );
    s.insert(
        sref("stripe", "invoices"),
        vec![rec(
            "in_1",
            20,
            &[("crm_id", "c1")],
            json!({"status": "open", "due_date": at(25).timestamp(), "amount_due": 1000}),
        )],
    );
    let days = (1..=60)
        .map(|d| {
            let (users, events, features) = if d <= 30 { (8, 100, 4) } else { (10, 80, 5) };
            rec(
                &format!("u{d}"),
                d,
                &[("domain", "acme.io")],
                json!({"active_users": users, "events": events, "features_used": features}),
            )
        })
        .collect();
    s.insert(sref("usage", "daily_usage"), days);
    s
}

#[test]
fn simple_seven_scores_a_hand_computed_account_with_stage_benchmarks() {
    let model = load_model(&copy_with("simple-seven"));
    // As of day 60 (window (30, 60]): 10 users / 20 seats = 0.5 → 60 + (0.1 / 0.4) × 40 = 70.
    // Events 2400 vs 3000: −20% → 40. Features 150 vs 120: +25% → 100.
    // Product = 0.4·70 + 0.3·40 + 0.3·100 = 70.
    // Outreach: 15 days → 100 − 15/30·20 = 90. QBR and support: not in the CRM → missing.
    // Engagement = 90 (its only present input). Sentiment: amber → 50.
    // Adopt (no weight override): 0.45·70 + 0.35·90 + 0.20·50 = 73; coverage 1 − 0.35·0.6 = 0.79.
    let as_of = at(60);
    let s = &score_book(&model, book("adopt", 50), as_of)[0];
    let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-9);
    assert!(close(s.metric("mau_ratio").unwrap().score, 70.0));
    assert!(close(s.metric("data_ingested_trend").unwrap().score, 40.0));
    assert!(close(s.metric("feature_usage_trend").unwrap().score, 100.0));
    assert!(close(s.category("product").unwrap().score, 70.0));
    assert!(close(s.metric("outreach_vs_target").unwrap().score, 90.0));
    assert!(s
        .metric("business_review_attendance")
        .unwrap()
        .missing
        .is_some());
    assert!(close(s.category("sentiment").unwrap().score, 50.0));
    assert!(close(s.overall, 73.0), "{:?}", s.overall);
    assert!((s.coverage - 0.79).abs() < 1e-9);
    assert_eq!(s.band, Some(Band::Amber));
    assert_eq!(s.benchmark, Some(70.0));

    // Onboard: product 60, engagement 30, sentiment 10 → 42 + 27 + 5 = 74, benchmark 75.
    let s = &score_book(&model, book("Onboard", 50), as_of)[0];
    assert!(close(s.overall, 74.0), "{:?}", s.overall);
    assert_eq!(s.benchmark, Some(75.0));
    assert_eq!(s.overrides, ["onboard"]);

    // Sentiment set 70 days ago is older than its 60-day TTL: missing, its weight spread over the rest.
    // Adopt: (0.45·70 + 0.35·90) / 0.8 = 78.75.
    let s = &score_book(&model, book("adopt", -10), as_of)[0];
    assert!(s
        .metric("csm_sentiment")
        .unwrap()
        .missing
        .as_deref()
        .unwrap()
        .starts_with("stale"));
    assert!(close(s.overall, 78.75), "{:?}", s.overall);
}

#[test]
fn four_relationships_fires_the_overdue_invoice_risk_and_clears_it() {
    let model = load_model(&copy_with("four-relationships"));
    // The invoice fell due on day 25: overdue by more than 30 days from day 56 on.
    let before = &score_book(&model, book("adopt", 50), at(55))[0];
    assert!(before.risks.iter().all(|r| r.id != "invoice_overdue"));
    let mut streams = book("adopt", 50);
    let s = score_book(&model, streams.clone(), at(60)).remove(0);
    let risk = s.risks.iter().find(|r| r.id == "invoice_overdue").unwrap();
    assert_eq!(risk.kind, RiskKind::Hard);
    assert_eq!(s.top_risk().unwrap().id, "invoice_overdue");
    // Outcomes = 0.4·20 + 0.4·100 + 0.2·100 = 68.
    assert!((s.category("outcomes").unwrap().score.unwrap() - 68.0).abs() < 1e-9);

    // Paid on day 61: the exit condition holds the next day and the event is gone.
    streams.insert(
        sref("stripe", "invoices"),
        vec![rec(
            "in_1",
            61,
            &[("crm_id", "c1")],
            json!({"status": "paid", "due_date": at(25).timestamp(), "amount_due": 1000}),
        )],
    );
    let resolved = identity::resolve(&model.accounts, streams);
    let d = &resolved.accounts[0];
    let values = healthsync::metrics::compute(&model, d, at(62));
    let next = scoring::score_account(&model, &d.account, &values, Some(&s), at(62));
    assert!(
        next.risks.iter().all(|r| r.id != "invoice_overdue"),
        "{:?}",
        next.risks
    );
}

/// The binary end to end on a shipped model: sync, score a week ago and today, then `explain --json` tells
/// what changed (same model, so inputs), the 7-day trend, the benchmark and active risks; a changed model
/// file is reported as a model change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_tells_input_moves_from_model_changes() {
    use crate::support::run;
    let now = Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap();
    let sim = sim::start(SimOptions {
        accounts: 60,
        seed: 5,
        now,
        rate_limits: limits(),
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = healthsync::cli::demo::write_config(dir.path(), &sim, &limits()).unwrap();
    let model_path = dir.path().join("models/starter.toml");
    let shipped = std::fs::read_to_string(
        crate::support::repo().join("config/models/four-relationships.toml"),
    )
    .unwrap();
    std::fs::write(&model_path, &shipped).unwrap();
    let vitally = dir.path().join("connectors/vitally.toml");
    let cut = std::fs::read_to_string(&vitally)
        .unwrap()
        .split("[fields.categories]")
        .next()
        .unwrap()
        .to_string();
    std::fs::write(&vitally, cut).unwrap();
    let c = cfg.to_str().unwrap();
    let ok = |args: &[&str]| {
        let out = tokio::task::block_in_place(|| run(args));
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    ok(&["sync", "--config", c]);
    let week_ago = (now - Duration::days(7)).to_rfc3339();
    ok(&["score", "--config", c, "--now", &week_ago]);
    let scored: Value = serde_json::from_str(&ok(&[
        "score",
        "--config",
        c,
        "--now",
        &now.to_rfc3339(),
        "--json",
    ]))
    .unwrap();
    // The account with the most active risks is the interesting one to explain.
    let scores = scored["scores"].as_array().unwrap();
    let pick = scores
        .iter()
        .max_by_key(|s| s["risks"].as_array().map(|r| r.len()).unwrap_or(0))
        .unwrap();
    let id = pick["account"]["id"].as_str().unwrap();
    let explained: Value =
        serde_json::from_str(&ok(&["explain", id, "--config", c, "--json"])).unwrap();
    assert_eq!(explained["changes"]["kind"], "inputs", "{explained}");
    let delta = explained["changes"]["overall_delta"].as_f64().unwrap();
    let trend = explained["trend"]["7d"].as_f64().unwrap();
    assert!((delta - trend).abs() < 1e-9, "{delta} vs {trend}");
    assert!(!explained["score"]["risks"].as_array().unwrap().is_empty());
    assert!(explained["drags"].as_array().is_some_and(|d| !d.is_empty()));
    let text_out = ok(&["explain", id, "--config", c]);
    assert!(
        text_out.contains("active risk events and signals:"),
        "{text_out}"
    );
    assert!(text_out.contains("(same model)"), "{text_out}");

    // Edit the model (a band threshold) and score again a day later: explain says the model changed.
    std::fs::write(
        &model_path,
        shipped.replace("red_below = 55", "red_below = 50"),
    )
    .unwrap();
    ok(&[
        "score",
        "--config",
        c,
        "--now",
        &(now + Duration::days(1)).to_rfc3339(),
    ]);
    let explained: Value =
        serde_json::from_str(&ok(&["explain", id, "--config", c, "--json"])).unwrap();
    assert_eq!(explained["changes"]["kind"], "model_changed", "{explained}");
    sim.shutdown().await;
}
