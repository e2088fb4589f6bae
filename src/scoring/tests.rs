//! Data-driven tests of the roll-up, redistribution, overrides, percentile ranking, hysteresis across runs,
//! risk events and history, plus property tests (range, monotonicity, weights summing to 1).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;

use super::*;
use crate::config::{
    AccountsSpec, Aggregate, Category, Expr, Filter, Metric, MetricInput, Override, RiskKind,
    RiskRule, StreamRef,
};

const BANDS: Bands = Bands {
    red_below: 40.0,
    green_from: 70.0,
    margin: 5.0,
};

/// The identity on 1–100, so expected scores can be read off the values.
fn identity() -> ScoreFn {
    ScoreFn::Linear(vec![(1.0, 1.0), (100.0, 100.0)])
}

fn metric(id: &str, score: ScoreFn) -> Metric {
    Metric {
        id: id.into(),
        label: id.to_uppercase(),
        input: MetricInput::Records {
            stream: StreamRef {
                connector: "c".into(),
                stream: "s".into(),
            },
            aggregate: Aggregate::Count,
            filter: Filter::Equals(vec![]),
            window_days: None,
            map: None,
        },
        score: Some(score),
        bands: None,
        ttl_days: None,
        advice: None,
    }
}

fn cat(id: &str, weight: f64, parent: Option<&str>, children: &[(&str, bool, f64)]) -> Category {
    Category {
        id: id.into(),
        label: id.to_uppercase(),
        weight,
        parent: parent.map(str::to_string),
        depth: usize::from(parent.is_some()),
        children: children
            .iter()
            .map(|(id, is_metric, w)| {
                let node = if *is_metric {
                    Node::Metric(id.to_string())
                } else {
                    Node::Category(id.to_string())
                };
                (node, *w)
            })
            .collect(),
        bands: None,
    }
}

fn base_model(metrics: Vec<Metric>, categories: Vec<Category>) -> Model {
    Model {
        name: "t".into(),
        description: String::new(),
        hash: "h".into(),
        accounts: AccountsSpec {
            stream: StreamRef {
                connector: "c".into(),
                stream: "s".into(),
            },
            key: "k".into(),
            name_field: "n".into(),
            stage_field: Some("stage".into()),
            segment_field: Some("tier".into()),
            owner_field: None,
            stages: vec![],
            segments: vec![],
            segment_bands: vec![],
            links: vec![],
        },
        bands: BANDS,
        min_coverage: 0.5,
        metrics,
        categories,
        overrides: vec![],
        risks: vec![],
        playbooks: vec![],
        outcomes: None,
    }
}

/// x (75%) = { a 50%, b 50% }, y (25%) = { c }.
fn flat_model() -> Model {
    base_model(
        vec![
            metric("a", identity()),
            metric("b", identity()),
            metric("c", identity()),
        ],
        vec![
            cat("x", 0.75, None, &[("a", true, 0.5), ("b", true, 0.5)]),
            cat("y", 0.25, None, &[("c", true, 1.0)]),
        ],
    )
}

fn values(pairs: &[(&str, Option<f64>)]) -> BTreeMap<String, MetricValue> {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                MetricValue {
                    value: *v,
                    missing: v.is_none().then(|| "none".to_string()),
                },
            )
        })
        .collect()
}

fn account(stage: Option<&str>, segment: Option<&str>) -> Account {
    Account {
        id: "1".into(),
        name: "Acme".into(),
        stage: stage.map(str::to_string),
        segment: segment.map(str::to_string),
        owner: None,
    }
}

fn t0() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH + Duration::days(20_000)
}

#[test]
fn weighted_roll_up_and_redistribution() {
    let m = flat_model();
    let a = account(None, None);
    // (values a, b, c) → (overall, coverage, x score)
    type Case = ([Option<f64>; 3], Option<f64>, f64, Option<f64>);
    let cases: &[Case] = &[
        (
            [Some(80.0), Some(40.0), Some(20.0)],
            Some(0.75 * 60.0 + 0.25 * 20.0),
            1.0,
            Some(60.0),
        ),
        // b missing: its weight goes to a inside x; coverage drops by b's overall share.
        (
            [Some(80.0), None, Some(20.0)],
            Some(0.75 * 80.0 + 0.25 * 20.0),
            0.625,
            Some(80.0),
        ),
        // y missing entirely: x carries the whole score.
        ([Some(80.0), Some(40.0), None], Some(60.0), 0.75, Some(60.0)),
        // Only y present: coverage 0.25 is below the 0.5 minimum, so the overall score is N/A.
        ([None, None, Some(20.0)], None, 0.25, None),
    ];
    for (vals, overall, coverage, x) in cases {
        let v = values(&[("a", vals[0]), ("b", vals[1]), ("c", vals[2])]);
        let s = score_account(&m, &a, &v, None, t0());
        assert_eq!(s.overall, *overall, "{vals:?}");
        assert_eq!(s.coverage, *coverage, "{vals:?}");
        assert_eq!(s.category("x").unwrap().score, *x, "{vals:?}");
        assert_eq!(s.band.is_none(), overall.is_none());
    }
    let full = score_account(
        &m,
        &a,
        &values(&[("a", Some(80.0)), ("b", Some(40.0)), ("c", Some(20.0))]),
        None,
        t0(),
    );
    // c costs 0.25 × 80 = 20 points, b costs 0.375 × 60 = 22.5: b is the worst drag.
    assert_eq!(full.top_drag().unwrap().id, "b");
    assert_eq!(full.drags()[1].id, "c");
    assert_eq!(full.metric("a").unwrap().contribution, 0.375 * 80.0);
}

#[test]
fn nested_categories_roll_up_through_every_level() {
    // product (60) = { mau 50, adoption (50) = { f1 50, f2 50 } }, service (40) = { t }.
    let m = base_model(
        vec![
            metric("mau", identity()),
            metric("f1", identity()),
            metric("f2", identity()),
            metric("t", identity()),
        ],
        vec![
            cat(
                "product",
                0.6,
                None,
                &[("mau", true, 0.5), ("adoption", false, 0.5)],
            ),
            cat(
                "adoption",
                0.5,
                Some("product"),
                &[("f1", true, 0.5), ("f2", true, 0.5)],
            ),
            cat("service", 0.4, None, &[("t", true, 1.0)]),
        ],
    );
    let a = account(None, None);
    let s = score_account(
        &m,
        &a,
        &values(&[
            ("mau", Some(80.0)),
            ("f1", Some(20.0)),
            ("f2", Some(60.0)),
            ("t", Some(50.0)),
        ]),
        None,
        t0(),
    );
    assert_eq!(s.category("adoption").unwrap().score, Some(40.0));
    assert_eq!(s.category("product").unwrap().score, Some(60.0));
    assert_eq!(s.overall, Some(0.6 * 60.0 + 0.4 * 50.0));
    assert_eq!(
        s.category("adoption").unwrap().parent.as_deref(),
        Some("product")
    );
    // f1's effective weight is 0.6 × 0.5 × 0.5 = 0.15: it costs 0.15 × 80 = 12 points.
    assert!((s.metric("f1").unwrap().points_lost - 12.0).abs() < 1e-9);

    // f1 and f2 missing: adoption is N/A, its weight goes to mau inside product; coverage is 1 − 0.3.
    let s = score_account(
        &m,
        &a,
        &values(&[
            ("mau", Some(80.0)),
            ("f1", None),
            ("f2", None),
            ("t", Some(50.0)),
        ]),
        None,
        t0(),
    );
    assert_eq!(s.category("adoption").unwrap().score, None);
    assert_eq!(s.category("product").unwrap().score, Some(80.0));
    assert!((s.coverage - 0.7).abs() < 1e-12);
    assert!((s.overall.unwrap() - (0.6 * 80.0 + 0.4 * 50.0)).abs() < 1e-9);
}

fn onboard_override() -> Override {
    Override {
        id: "onboard".into(),
        stage: Some("onboard".into()),
        segment: None,
        // x 25 / y 75 instead of 75 / 25; within x, b counts three times as much as a.
        weights: [("x", 25.0), ("y", 75.0), ("a", 25.0), ("b", 75.0)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        scores: [(
            "c".to_string(),
            ScoreFn::Steps(vec![(0.0, 10.0), (10.0, 90.0)]),
        )]
        .into_iter()
        .collect(),
        bands: Some(Bands {
            red_below: 30.0,
            green_from: 60.0,
            margin: 5.0,
        }),
        benchmark: Some(75.0),
    }
}

#[test]
fn stage_and_segment_overrides_change_weights_thresholds_and_benchmarks() {
    let mut m = flat_model();
    m.overrides = vec![
        onboard_override(),
        Override {
            id: "enterprise".into(),
            stage: None,
            segment: Some("enterprise".into()),
            weights: BTreeMap::new(),
            scores: BTreeMap::new(),
            bands: None,
            benchmark: Some(80.0),
        },
    ];
    let v = values(&[("a", Some(80.0)), ("b", Some(40.0)), ("c", Some(20.0))]);
    // (stage, segment) → (overall, band, benchmark, overrides applied)
    type Case<'a> = (
        Option<&'a str>,
        Option<&'a str>,
        f64,
        Band,
        Option<f64>,
        &'a [&'a str],
    );
    let cases: &[Case] = &[
        (None, None, 50.0, Band::Amber, None, &[]),
        // Onboard: x = 0.25·80 + 0.75·40 = 50, c scores 90 on the steps; 0.25·50 + 0.75·90 = 80.
        (
            Some("Onboard"),
            None,
            80.0,
            Band::Green,
            Some(75.0),
            &["onboard"],
        ),
        (
            Some("adopt"),
            Some("Enterprise"),
            50.0,
            Band::Amber,
            Some(80.0),
            &["enterprise"],
        ),
        // Both match: the later override's benchmark wins, weights come from onboard.
        (
            Some("onboard"),
            Some("enterprise"),
            80.0,
            Band::Green,
            Some(80.0),
            &["onboard", "enterprise"],
        ),
    ];
    let mut scorer = Scorer::new(&m, Population::default());
    for (stage, seg, overall, band, bench, applied) in cases {
        let s = scorer.score(&account(*stage, *seg), &v, None, t0());
        assert!(
            (s.overall.unwrap() - overall).abs() < 1e-9,
            "{stage:?}/{seg:?}: {:?}",
            s.overall
        );
        assert_eq!(s.band, Some(*band), "{stage:?}/{seg:?}");
        assert_eq!(s.benchmark, *bench, "{stage:?}/{seg:?}");
        assert_eq!(s.overrides, *applied, "{stage:?}/{seg:?}");
    }
    // Overridden bands: 35 is amber for onboard (red below 30) but red in the base model.
    let low = values(&[("a", Some(35.0)), ("b", Some(35.0)), ("c", Some(1.0))]);
    let s = scorer.score(&account(Some("onboard"), None), &low, None, t0());
    assert_eq!(s.category("x").unwrap().band, Some(Band::Amber));
    let s = scorer.score(&account(None, None), &low, None, t0());
    assert_eq!(s.category("x").unwrap().band, Some(Band::Red));
}

#[test]
fn percentile_metrics_rank_within_the_segment() {
    let m = base_model(
        vec![metric(
            "arr",
            ScoreFn::Percentile {
                higher_is_better: true,
            },
        )],
        vec![cat("x", 1.0, None, &[("arr", true, 1.0)])],
    );
    let accounts: Vec<(Account, BTreeMap<String, MetricValue>)> = (0..10)
        .map(|i| {
            let seg = if i < 5 { "smb" } else { "enterprise" };
            let mut a = account(None, Some(seg));
            a.id = i.to_string();
            (a, values(&[("arr", Some(f64::from(i) * 10.0))]))
        })
        .collect();
    let scores = score_all(&m, &accounts, |_| None, t0());
    // Within smb (0..40) account 0 is the lowest, 4 the highest; within enterprise (50..90) likewise.
    let rank = |i: usize| scores[i].overall.unwrap();
    assert_eq!(rank(0), 1.0 + 99.0 * 0.1);
    assert_eq!(rank(4), 1.0 + 99.0 * 0.9);
    assert_eq!(rank(5), rank(0));
    assert_eq!(rank(9), rank(4));
    // Without a population the metric is N/A, with a reason.
    let alone = score_account(&m, &accounts[0].0, &accounts[0].1, None, t0());
    assert_eq!(alone.overall, None);
    assert!(alone.metric("arr").unwrap().missing.is_some());
}

#[test]
fn hysteresis_holds_the_band_across_runs_unless_the_model_changed() {
    let m = flat_model();
    let a = account(None, None);
    let all = |x: f64| values(&[("a", Some(x)), ("b", Some(x)), ("c", Some(x))]);
    let first = score_account(&m, &a, &all(38.0), None, t0());
    assert_eq!(first.band, Some(Band::Red));
    // 42 is above red_below (40) but not by the 5-point margin: still red.
    let second = score_account(&m, &a, &all(42.0), Some(&first), t0() + Duration::days(1));
    assert_eq!(second.band, Some(Band::Red));
    assert_eq!(second.metric("a").unwrap().band, Some(Band::Red));
    let third = score_account(&m, &a, &all(46.0), Some(&second), t0() + Duration::days(2));
    assert_eq!(third.band, Some(Band::Amber));
    // A different model starts from fresh bands.
    let mut m2 = flat_model();
    m2.hash = "other".into();
    let fresh = score_account(&m2, &a, &all(42.0), Some(&first), t0() + Duration::days(1));
    assert_eq!(fresh.band, Some(Band::Amber));
}

fn rule(id: &str, kind: RiskKind, when: &str, clear: Option<&str>) -> RiskRule {
    RiskRule {
        id: id.into(),
        label: id.replace('_', " "),
        kind,
        when: Expr::compile(when).unwrap(),
        clear_when: clear.map(|c| Expr::compile(c).unwrap()),
        advice: None,
    }
}

#[test]
fn risks_fire_stay_until_their_exit_condition_and_rank_hard_first() {
    let mut m = flat_model();
    m.risks = vec![
        rule(
            "usage_drop",
            RiskKind::Soft,
            "m.a < 30.0",
            Some("m.a >= 50.0"),
        ),
        rule("overdue", RiskKind::Hard, "m.c > 0.0 && m.c >= 10.0", None),
        rule("promoter", RiskKind::Advocacy, "m.b >= 90.0", None),
        rule(
            "enterprise_only",
            RiskKind::Soft,
            "account.segment == 'enterprise'",
            None,
        ),
        // A mistake in the rule (text compared with a number) is reported, not silently false.
        rule("broken", RiskKind::Soft, "account.segment > 3.0", None),
    ];
    let a = account(None, Some("smb"));
    let v = |x: f64, c: Option<f64>| values(&[("a", Some(x)), ("b", Some(95.0)), ("c", c)]);
    let ids = |s: &AccountScore| s.risks.iter().map(|r| r.id.clone()).collect::<Vec<_>>();

    let d0 = score_account(&m, &a, &v(20.0, Some(12.0)), None, t0());
    assert_eq!(ids(&d0), ["usage_drop", "overdue", "promoter"]);
    assert_eq!(d0.top_risk().unwrap().id, "overdue");
    assert_eq!(d0.rule_errors.len(), 1, "{:?}", d0.rule_errors);
    assert!(d0.rule_errors[0].starts_with("risk broken: when:"));
    // a recovers to 40: above the firing line, below the exit line, so usage_drop stays, since day 0.
    // c goes missing: `overdue` cannot be evaluated, so it neither clears nor fires.
    let d1 = score_account(&m, &a, &v(40.0, None), Some(&d0), t0() + Duration::days(1));
    assert_eq!(ids(&d1), ["usage_drop", "overdue", "promoter"]);
    // c missing is a missing input, not a rule error: only the broken rule is reported.
    assert_eq!(d1.rule_errors.len(), 1, "{:?}", d1.rule_errors);
    assert_eq!(d1.risks[0].since, t0());
    // a reaches 50 and c is back at 0: both clear.
    let d2 = score_account(
        &m,
        &a,
        &v(50.0, Some(0.0)),
        Some(&d1),
        t0() + Duration::days(2),
    );
    assert_eq!(ids(&d2), ["promoter"]);
    assert_eq!(d2.top_risk(), None);
    match changes(&d1, &d2) {
        Change::Inputs {
            risks_ended,
            inputs,
            ..
        } => {
            assert_eq!(risks_ended, ["usage_drop", "overdue"]);
            let moved: Vec<&str> = inputs.iter().map(|i| i.id.as_str()).collect();
            assert_eq!(moved, ["a", "c"]);
        }
        other => panic!("expected input changes, got {other:?}"),
    }
}

#[test]
fn trends_compare_against_the_newest_point_old_enough() {
    let m = flat_model();
    let a = account(None, None);
    let at = |day: i64, x: f64| {
        let s = score_account(
            &m,
            &a,
            &values(&[("a", Some(x)), ("b", Some(x)), ("c", Some(x))]),
            None,
            t0() + Duration::days(day),
        );
        (format!("d{day}"), s)
    };
    let history = vec![at(0, 20.0), at(60, 30.0), at(83, 50.0), at(89, 55.0)];
    let now = at(90, 60.0).1;
    assert_eq!(trend(&history, &now, 7), Some(10.0)); // day 83
    assert_eq!(trend(&history, &now, 30), Some(30.0)); // day 60
    assert_eq!(trend(&history, &now, 90), Some(40.0)); // day 0
    assert_eq!(trend(&history[1..], &now, 90), None);
    let mut other = now.clone();
    other.model_hash = "new".into();
    assert_eq!(trend(&history, &other, 7), None);
    assert!(matches!(
        changes(&history[3].1, &other),
        Change::ModelChanged { .. }
    ));
}

#[test]
fn same_inputs_same_bits() {
    let m = flat_model();
    let v = values(&[("a", Some(33.3)), ("b", Some(71.7)), ("c", Some(12.1))]);
    let a = score_account(&m, &account(None, None), &v, None, t0());
    let b = score_account(&m, &account(None, None), &v, None, t0());
    assert_eq!(a.overall.unwrap().to_bits(), b.overall.unwrap().to_bits());
    assert_eq!(a, b);
}

#[test]
fn lopsided_distribution_is_flagged() {
    let d = Distribution {
        red: 1,
        amber: 1,
        green: 8,
        not_scored: 3,
    };
    assert_eq!(d.lopsided().map(|(b, _)| b), Some(Band::Green));
    let even = Distribution {
        red: 3,
        amber: 4,
        green: 3,
        not_scored: 0,
    };
    assert_eq!(even.lopsided(), None);
}

/// Increasing linear points with scores in 1–100.
fn linear_fn() -> impl Strategy<Value = ScoreFn> {
    prop::collection::vec((0.1f64..50.0, 1.0f64..=100.0), 2..6).prop_map(|steps| {
        let mut x = -20.0;
        let mut y: f64 = 1.0;
        let pts = steps
            .into_iter()
            .map(|(dx, s)| {
                x += dx;
                y = y.max(s).min(100.0);
                (x, y)
            })
            .collect();
        ScoreFn::Linear(pts)
    })
}

fn value() -> impl Strategy<Value = Option<f64>> {
    prop_oneof![1 => Just(None), 4 => (-100.0f64..300.0).prop_map(Some)]
}

proptest! {
    #[test]
    fn scores_stay_in_range_and_weights_sum_to_one(
        f in linear_fn(),
        vals in prop::collection::vec(value(), 3),
        stage in prop_oneof![Just(None), Just(Some("onboard"))],
    ) {
        let mut m = flat_model();
        for metric in &mut m.metrics {
            metric.score = Some(f.clone());
        }
        m.overrides = vec![onboard_override()];
        m.min_coverage = 0.0;
        let v = values(&[("a", vals[0]), ("b", vals[1]), ("c", vals[2])]);
        let s = score_account(&m, &account(stage, None), &v, None, t0());
        for x in s.categories.iter().flat_map(|c| c.metrics.iter().filter_map(|m| m.score))
            .chain(s.categories.iter().filter_map(|c| c.score))
            .chain(s.overall)
        {
            prop_assert!((1.0..=100.0).contains(&x), "{x}");
        }
        prop_assert!((0.0..=1.0 + 1e-12).contains(&s.coverage));
        if let Some(overall) = s.overall {
            // Effective weights after redistribution sum to 1: contributions add up to the overall score,
            // and contribution + points lost is 100 points in total.
            let contrib: f64 = s.categories.iter().flat_map(|c| &c.metrics).map(|m| m.contribution).sum();
            let lost: f64 = s.categories.iter().flat_map(|c| &c.metrics).map(|m| m.points_lost).sum();
            prop_assert!((contrib - overall).abs() < 1e-6, "{contrib} vs {overall}");
            prop_assert!((contrib + lost - 100.0).abs() < 1e-6);
        }
    }

    #[test]
    fn overall_is_monotone_in_each_input_of_a_non_decreasing_function(
        f in linear_fn(),
        vals in prop::collection::vec(-100.0f64..300.0, 3),
        which in 0usize..3,
        bump in 0.0f64..100.0,
    ) {
        prop_assume!(f.is_non_decreasing());
        let mut m = flat_model();
        for metric in &mut m.metrics {
            metric.score = Some(f.clone());
        }
        let ids = ["a", "b", "c"];
        let mk = |vs: &[f64]| values(&ids.iter().zip(vs).map(|(k, v)| (*k, Some(*v))).collect::<Vec<_>>());
        let mut higher = vals.clone();
        higher[which] += bump;
        let lo = score_account(&m, &account(None, None), &mk(&vals), None, t0());
        let hi = score_account(&m, &account(None, None), &mk(&higher), None, t0());
        prop_assert!(hi.overall.unwrap() >= lo.overall.unwrap() - 1e-9);
    }

    #[test]
    fn percentile_scores_are_in_range_and_monotone(
        mut peers in prop::collection::vec(-1e6f64..1e6, 1..50),
        x in -2e6f64..2e6,
        bump in 0.0f64..1e6,
    ) {
        peers.sort_by(f64::total_cmp);
        let a = percentile_score(&peers, x, true);
        let b = percentile_score(&peers, x + bump, true);
        prop_assert!((1.0..=100.0).contains(&a));
        prop_assert!(b >= a);
        prop_assert!(percentile_score(&peers, x + bump, false) <= percentile_score(&peers, x, false));
    }
}
