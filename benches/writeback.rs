//! Write-back figures (the write-back issue's performance targets), printed, not a criterion harness:
//!
//! 1. Writes are proportional to changes: 100,000 accounts whose scores have all landed on the platform,
//!    then 2% of them change; the plan must hold at most 2,000 field writes and none for the rest.
//! 2. Delivery under a platform quota: the simulated Vitally enforces Q requests per minute (a token
//!    bucket, as Vitally documents); healthsync's connector is configured with the same quota. It sends
//!    2·Q field writes (one burst of Q, then a minute at the refill rate) and reports the achieved rate
//!    over the refill phase and the number of 429s (target: at least 95% of Q, zero 429s).
//!
//! Run: `cargo bench --bench writeback -- 100000 3000` (accounts for part 1; Q per minute for part 2).

use std::time::Instant;

use chrono::{TimeZone, Utc};
use healthsync::config::Band;
use healthsync::pipeline::Runtime;
use healthsync::scoring::AccountScore;
use healthsync::sim::{self, SimOptions, SimRateLimits, Vendor};
use healthsync::store::Store;
use tokio::sync::watch;

fn score(id: &str, overall: f64) -> AccountScore {
    let band = if overall >= 80.0 {
        Band::Green
    } else {
        Band::Amber
    };
    let as_of = Utc
        .with_ymd_and_hms(2026, 11, 2, 0, 0, 0)
        .single()
        .expect("valid date");
    AccountScore::overall_only(id, overall, band, as_of)
}

fn proportional(accounts: usize) {
    let now = Utc::now();
    let mut config = healthsync::config::load(
        std::path::Path::new("config/healthsync.toml"),
        &healthsync::connector::kinds::catalog(),
    )
    .expect("shipped config");
    config.model.playbooks.clear();
    let rt = Runtime::build(config, Store::temporary().expect("store"));
    let scores: Vec<AccountScore> = (0..accounts)
        .map(|i| score(&format!("acct-{i:06}"), 60.0 + (i % 20) as f64))
        .collect();
    let t = Instant::now();
    let first = rt.plan(&scores, now).expect("plan");
    let plan_all_s = t.elapsed().as_secs_f64();
    rt.enqueue(&first, now).expect("enqueue");
    for e in rt.store.outbox(None).expect("outbox") {
        rt.store.confirm(&e).expect("confirm");
    }
    let changed = accounts / 50;
    let mut next = scores.clone();
    for s in next.iter_mut().step_by(50) {
        s.overall = s.overall.map(|v| v + 1.0);
    }
    let t = Instant::now();
    let plan = rt.plan(&next, now).expect("plan");
    let plan_changes_s = t.elapsed().as_secs_f64();
    let changed_ids: std::collections::BTreeSet<String> = next
        .iter()
        .step_by(50)
        .map(|s| s.account.id.clone())
        .collect();
    let unchanged_writes = plan
        .writes
        .iter()
        .filter(|w| !changed_ids.contains(&w.op.account().account_id))
        .count();
    let fields: usize = plan.writes.iter().map(|w| w.changes.len()).sum();
    println!(
        "proportional: {accounts} accounts, {changed} changed -> {} write(s) ({fields} field values), {unchanged_writes} for unchanged accounts | first plan {plan_all_s:.2}s, plan after changes {plan_changes_s:.2}s",
        plan.field_writes(),
    );
}

async fn under_quota(per_min: u32) {
    let now = Utc
        .with_ymd_and_hms(2026, 11, 2, 0, 0, 0)
        .single()
        .expect("valid date");
    let limits = SimRateLimits::default().with(Vendor::Vitally, per_min);
    let accounts = per_min as usize * 2;
    let sim = sim::start(SimOptions {
        accounts,
        seed: 1,
        now,
        rate_limits: limits,
    })
    .await
    .expect("simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = healthsync::cli::demo::write_config(dir.path(), &sim, &limits).expect("config");
    let mut cfg = healthsync::config::load(&path, &healthsync::connector::kinds::catalog())
        .expect("valid config");
    cfg.model.playbooks.clear();
    let rt = Runtime::build(cfg, Store::open(&dir.path().join("state")).expect("store"));
    let state: serde_json::Value = reqwest::get(format!("http://{}/_sim/state", sim.addr()))
        .await
        .expect("sim state")
        .json()
        .await
        .expect("json");
    let scores: Vec<AccountScore> = state["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .filter_map(|a| a["externalId"].as_str())
        .map(|id| score(id, 70.0))
        .collect();
    let plan = rt.plan(&scores, now).expect("plan");
    rt.enqueue(&plan, now).expect("enqueue");
    let (_tx, shutdown) = watch::channel(false);
    let burst_done = std::sync::Mutex::new(None);
    let t = Instant::now();
    let report = rt
        .push(&shutdown, now, &|i, _| {
            if i == per_min as usize {
                *burst_done.lock().expect("lock") = Some(t.elapsed());
            }
        })
        .await
        .expect("push");
    let total = t.elapsed();
    let burst = burst_done.lock().expect("lock").unwrap_or_default();
    let refill_writes = report.applied.saturating_sub(per_min as usize) as f64;
    let refill_s = (total - burst).as_secs_f64();
    let achieved_per_min = refill_writes / refill_s * 60.0;
    let throttled = healthsync::observe::metrics()
        .http_requests
        .get_or_create(&healthsync::observe::RequestLabels {
            connector: "vitally".into(),
            status: "429".into(),
        })
        .get();
    println!(
        "under quota: Q = {per_min}/min, {} writes in {:.1}s (burst of {per_min} in {:.1}s) | refill phase {:.0}/min = {:.1}% of Q | 429s: {throttled} | dead-lettered {}, left {}",
        report.applied,
        total.as_secs_f64(),
        burst.as_secs_f64(),
        achieved_per_min,
        achieved_per_min / f64::from(per_min) * 100.0,
        report.dead_lettered,
        report.remaining,
    );
    sim.shutdown().await;
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let accounts = args.first().copied().unwrap_or(100_000);
    let per_min = args.get(1).copied().unwrap_or(3000) as u32;
    proportional(accounts);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(under_quota(per_min));
}
