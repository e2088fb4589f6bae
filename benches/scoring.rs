//! Scoring throughput: 1,000,000 accounts × 8 metrics from cached aggregates (metric values already
//! computed), through nested categories and stage overrides, on one core. Prints the peak resident memory
//! of the process after the run (Linux `VmHWM`). Figures go to BENCHMARKS.md.
//!
//! Measures `Scorer::score_inputs` (the roll-up, bands and per-input costs) and folds each score into the
//! band distribution, as a scoring run does before storing; it does not measure metric computation from
//! raw records, risk rules (CEL), or the store.

use chrono::{TimeZone, Utc};
use criterion::{BenchmarkId, Criterion, Throughput};
use healthsync::config::{
    AccountsSpec, Aggregate, Bands, Category, Filter, Metric, MetricInput, Model, Node, Override,
    ScoreFn, StreamRef,
};
use healthsync::identity::Account;
use healthsync::scoring::{Distribution, Population, Scorer};

const ACCOUNTS: usize = 1_000_000;
const METRICS: usize = 8;

fn model() -> Model {
    let stream = StreamRef {
        connector: "usage".into(),
        stream: "daily".into(),
    };
    let metric = |i: usize| Metric {
        id: format!("m{i}"),
        label: format!("Metric {i}"),
        input: MetricInput::Records {
            stream: stream.clone(),
            aggregate: Aggregate::Count,
            filter: Filter::Equals(vec![]),
            window_days: Some(30),
            map: None,
        },
        score: Some(if i % 2 == 0 {
            ScoreFn::Linear(vec![(0.0, 1.0), (30.0, 50.0), (100.0, 100.0)])
        } else {
            ScoreFn::Steps(vec![(0.0, 10.0), (25.0, 50.0), (60.0, 90.0)])
        }),
        bands: None,
        ttl_days: None,
        advice: None,
    };
    let node = |id: &str, metric: bool, w: f64| {
        (
            if metric {
                Node::Metric(id.into())
            } else {
                Node::Category(id.into())
            },
            w,
        )
    };
    let cat = |id: &str, w: f64, parent: Option<&str>, children: Vec<(Node, f64)>| Category {
        id: id.into(),
        label: id.into(),
        weight: w,
        parent: parent.map(str::to_string),
        depth: usize::from(parent.is_some()),
        children,
        bands: None,
    };
    Model {
        name: "bench".into(),
        description: String::new(),
        hash: "bench".into(),
        accounts: AccountsSpec {
            stream: stream.clone(),
            key: "id".into(),
            name_field: "name".into(),
            stage_field: Some("stage".into()),
            segment_field: Some("tier".into()),
            owner_field: None,
            stages: vec![],
            segments: vec![],
            segment_bands: vec![],
            links: vec![],
        },
        bands: Bands {
            red_below: 40.0,
            green_from: 70.0,
            margin: 5.0,
        },
        min_coverage: 0.5,
        metrics: (0..METRICS).map(metric).collect(),
        // product (50) = { m0, m1, adoption (40) = { m2, m3 } }, engagement (30) = { m4, m5 },
        // financial (20) = { m6, m7 }.
        categories: vec![
            cat(
                "product",
                0.5,
                None,
                vec![
                    node("m0", true, 0.3),
                    node("m1", true, 0.3),
                    node("adoption", false, 0.4),
                ],
            ),
            cat(
                "adoption",
                0.4,
                Some("product"),
                vec![node("m2", true, 0.5), node("m3", true, 0.5)],
            ),
            cat(
                "engagement",
                0.3,
                None,
                vec![node("m4", true, 0.5), node("m5", true, 0.5)],
            ),
            cat(
                "financial",
                0.2,
                None,
                vec![node("m6", true, 0.6), node("m7", true, 0.4)],
            ),
        ],
        overrides: ["onboard", "adopt", "optimize", "renew"]
            .iter()
            .enumerate()
            .map(|(i, stage)| Override {
                id: stage.to_string(),
                stage: Some(stage.to_string()),
                segment: None,
                weights: [("product".to_string(), 40.0 + 10.0 * i as f64)]
                    .into_iter()
                    .collect(),
                scores: Default::default(),
                bands: None,
                benchmark: Some(70.0 + i as f64),
            })
            .collect(),
        risks: vec![],
        playbooks: vec![],
        outcomes: None,
    }
}

/// Deterministic values (an LCG), one in twenty missing.
fn inputs() -> (Vec<Account>, Vec<Option<f64>>) {
    let stages = ["onboard", "adopt", "optimize", "renew"];
    let tiers = ["enterprise", "mid_market", "smb"];
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        x >> 33
    };
    let accounts = (0..ACCOUNTS)
        .map(|i| Account {
            id: i.to_string(),
            name: format!("Account {i}"),
            stage: Some(stages[i % 4].to_string()),
            segment: Some(tiers[i % 3].to_string()),
            owner: None,
        })
        .collect();
    let values = (0..ACCOUNTS * METRICS)
        .map(|_| {
            let r = next();
            (r % 20 != 0).then(|| (r % 10_000) as f64 / 100.0)
        })
        .collect();
    (accounts, values)
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn main() {
    let model = model();
    let (accounts, values) = inputs();
    let as_of = Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap();
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(std::time::Duration::from_secs(1));
    let mut group = c.benchmark_group("scoring");
    group.throughput(Throughput::Elements(ACCOUNTS as u64));
    group.bench_function(
        BenchmarkId::new("score_inputs", format!("{ACCOUNTS}x{METRICS}")),
        |b| {
            b.iter(|| {
                let mut scorer = Scorer::new(&model, Population::default());
                let mut d = Distribution::default();
                for (a, vals) in accounts.iter().zip(values.chunks_exact(METRICS)) {
                    let s = scorer.score_inputs(a, vals, &[], None, as_of);
                    d.add(s.band);
                }
                d
            })
        },
    );
    group.finish();
    c.final_summary();
    if let Some(mib) = peak_rss_mib() {
        println!("peak resident memory: {mib:.0} MiB");
    }
}
