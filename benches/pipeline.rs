//! End-to-end pipeline figures against the simulator: sync, score, plan and push for N accounts, with the
//! wall time of each phase, records per second, and the process's peak memory. A bench binary that prints
//! figures (not a criterion harness): each phase is one long run, not a micro-benchmark.
//!
//! Run: `cargo bench --bench pipeline -- 500 2000` (account counts; default 500 and 2000).

use std::time::Instant;

use chrono::{TimeZone, Utc};
use healthsync::pipeline::Runtime;
use healthsync::sim::{self, SimOptions, SimRateLimits, Vendor};
use healthsync::store::Store;
use healthsync::sync::SyncOptions;
use tokio::sync::watch;

/// Peak resident memory of this process (Linux `VmHWM`), in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<f64>()
                    .unwrap_or(0.0)
            })
        })
        .unwrap_or(0.0)
        / 1024.0
}

async fn one(accounts: usize) {
    let now = Utc
        .with_ymd_and_hms(2026, 11, 2, 0, 0, 0)
        .single()
        .expect("valid date");
    // No throttling: this measures healthsync, not the vendors' quotas.
    let limits = SimRateLimits::unlimited()
        .with(Vendor::Hubspot, 1_000_000)
        .with(Vendor::Stripe, 1_000_000)
        .with(Vendor::Usage, 1_000_000)
        .with(Vendor::Vitally, 1_000_000);
    let sim = sim::start(SimOptions {
        accounts,
        seed: 42,
        now,
        rate_limits: limits,
    })
    .await
    .expect("simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = healthsync::cli::demo::write_config(dir.path(), &sim, &limits).expect("config");
    let cfg = healthsync::config::load(&path, &healthsync::connector::kinds::catalog())
        .expect("valid config");
    let rt = Runtime::build(cfg, Store::open(&dir.path().join("state")).expect("store"));
    let (_tx, shutdown) = watch::channel(false);

    let t = Instant::now();
    let ids = rt.select_sources(&[]).expect("sources");
    let statuses = rt
        .sync(&ids, &SyncOptions::default(), &shutdown, &|_, _, _| {})
        .await
        .expect("sync");
    let sync_s = t.elapsed().as_secs_f64();
    let records: usize = statuses.iter().map(|s| s.records()).sum();

    let t = Instant::now();
    let run = rt.score(now).expect("score");
    let score_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let plan = rt.plan(&run.scores, now).expect("plan");
    rt.enqueue(&plan, now).expect("enqueue");
    let report = rt.push(&shutdown, now, &|_, _| {}).await.expect("push");
    let push_s = t.elapsed().as_secs_f64();

    println!(
        "{accounts:>6} accounts | sync {records:>7} records {sync_s:>6.2}s ({:>7.0} rec/s) | score {score_s:>5.2}s | plan+push {:>5} writes {push_s:>5.2}s ({:>5.0} writes/s) | peak RSS {:>5.0} MiB",
        records as f64 / sync_s,
        report.applied,
        report.applied as f64 / push_s,
        peak_rss_mib()
    );
    sim.shutdown().await;
}

fn main() {
    // As the binary does.
    healthsync::decline_transparent_huge_pages();
    let counts: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let counts = if counts.is_empty() {
        vec![500, 2000]
    } else {
        counts
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for n in counts {
        rt.block_on(one(n));
    }
}
