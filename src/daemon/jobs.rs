//! The daemon's scheduled jobs: one sync job per scheduled source, one scoring job, one delivery job.
//!
//! Every job body runs under a named guard ([`JobGuards`]) that outlives config reloads, so a job never
//! overlaps itself, not even across a SIGHUP that replaced its schedule: a tick that finds its previous run
//! still going is skipped and logged. Each tick first waits a random jitter (so connectors on the same
//! schedule don't hit the network in the same second), and scoring waits for in-flight syncs of the
//! connectors its model reads. Shutdown waits on the same guards. This module builds jobs; it does not
//! own the scheduler or the process lifecycle (`daemon/mod.rs`).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use rand::Rng as _;
use tokio::sync::{watch, Mutex};
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};
use tracing::Instrument as _;

use crate::observe;
use crate::pipeline::Runtime;
use crate::sync::SyncOptions;

type JobFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Name of the guard a source's sync job runs under.
pub fn sync_job(connector: &str) -> String {
    format!("sync {connector}")
}

pub const SCORE_JOB: &str = "score";
pub const DELIVER_JOB: &str = "deliver";

/// One lock per job name, kept for the life of the process.
#[derive(Default)]
pub struct JobGuards(StdMutex<BTreeMap<String, Arc<Mutex<()>>>>);

impl JobGuards {
    pub fn get(&self, name: &str) -> Arc<Mutex<()>> {
        // A poisoned map only means a panic elsewhere while inserting; the map itself is still sound.
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(name.to_string()).or_default().clone()
    }

    /// Waits until no job is running, or until `deadline`. Returns the jobs still running then.
    pub async fn wait_idle(&self, deadline: tokio::time::Instant) -> Vec<String> {
        let all: Vec<(String, Arc<Mutex<()>>)> = {
            let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
            map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        let mut busy = Vec::new();
        for (name, guard) in all {
            if tokio::time::timeout_at(deadline, guard.lock())
                .await
                .is_err()
            {
                busy.push(name);
            }
        }
        busy
    }
}

/// What every job needs besides its body.
#[derive(Clone)]
pub struct JobContext {
    pub guards: Arc<JobGuards>,
    pub jitter: Duration,
    pub shutdown: watch::Receiver<bool>,
}

impl JobContext {
    /// A cron job that runs `work` under the guard `name`, after a random jitter, unless the previous run
    /// is still going or shutdown has begun.
    fn job<F>(&self, schedule: &str, name: String, work: F) -> Result<Job, JobSchedulerError>
    where
        F: Fn() -> JobFuture + Send + Sync + 'static,
    {
        let work = Arc::new(work);
        let ctx = self.clone();
        Job::new_async(schedule, move |_, _: JobScheduler| {
            let (ctx, work, name) = (ctx.clone(), work.clone(), name.clone());
            Box::pin(async move {
                let guard = ctx.guards.get(&name);
                let Ok(_running) = guard.try_lock() else {
                    tracing::warn!(job = %name, "previous run still going; skipping this tick");
                    return;
                };
                if !ctx.pause(random_jitter(ctx.jitter)).await {
                    return;
                }
                work().await;
            })
        })
    }

    /// Sleeps for `d` unless shutdown comes first; false if it did.
    async fn pause(&self, d: Duration) -> bool {
        let mut sd = self.shutdown.clone();
        if *sd.borrow() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => !*sd.borrow(),
            _ = sd.changed() => false,
        }
    }
}

fn random_jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    Duration::from_millis(rand::thread_rng().gen_range(0..=max.as_millis() as u64))
}

/// Every job for this runtime's config: one per scheduled source, scoring and delivery.
pub fn build_jobs(rt: &Arc<Runtime>, ctx: &JobContext) -> Result<Vec<Job>, JobSchedulerError> {
    let mut jobs = Vec::new();
    for c in rt.config.sources() {
        let Some(schedule) = &c.schedule else {
            continue;
        };
        let (rt, ctx2, id) = (rt.clone(), ctx.clone(), c.id.clone());
        jobs.push(ctx.job(schedule, sync_job(&c.id), move || {
            let (rt, sd, id) = (rt.clone(), ctx2.shutdown.clone(), id.clone());
            Box::pin(async move { run_sync(&rt, &id, &sd).await })
        })?);
    }
    let (rt2, ctx2) = (rt.clone(), ctx.clone());
    jobs.push(ctx.job(
        &rt.config.daemon.scoring_schedule,
        SCORE_JOB.into(),
        move || {
            let (rt, ctx) = (rt2.clone(), ctx2.clone());
            Box::pin(async move { run_scoring(&rt, &ctx).await })
        },
    )?);
    let (rt2, sd) = (rt.clone(), ctx.shutdown.clone());
    jobs.push(ctx.job(
        &rt.config.daemon.delivery_schedule,
        DELIVER_JOB.into(),
        move || {
            let (rt, sd) = (rt2.clone(), sd.clone());
            Box::pin(async move { run_delivery(&rt, &sd).await })
        },
    )?);
    Ok(jobs)
}

async fn run_sync(rt: &Runtime, id: &str, shutdown: &watch::Receiver<bool>) {
    let ids = [id.to_string()];
    match rt
        .sync(&ids, &SyncOptions::default(), shutdown, &|_, _, _| {})
        .await
    {
        Ok(statuses) => {
            for s in statuses {
                if s.ok() {
                    tracing::info!(connector = %s.connector, records = s.records(), duration_ms = s.duration_ms, interrupted = s.interrupted, "sync finished");
                } else {
                    tracing::error!(connector = %s.connector, records = s.records(), error = s.error.as_deref().unwrap_or("failed"), "sync failed");
                }
            }
        }
        Err(e) => tracing::error!(connector = %id, error = %e, "sync failed"),
    }
}

/// Waits for in-flight syncs the model reads (so it never scores a half-synced connector), then scores,
/// plans and enqueues.
async fn run_scoring(rt: &Runtime, ctx: &JobContext) {
    let inputs: std::collections::BTreeSet<String> = rt
        .book()
        .model_streams()
        .into_iter()
        .map(|s| s.connector)
        .collect();
    for connector in &inputs {
        let guard = ctx.guards.get(&sync_job(connector));
        let mut sd = ctx.shutdown.clone();
        tokio::select! {
            _ = guard.lock() => {}
            _ = sd.changed() => return,
        }
    }
    let span = tracing::info_span!("score_run", model = %rt.config.model.name);
    let started = Instant::now();
    let now = Utc::now();
    let result = span.in_scope(|| {
        rt.score(now).and_then(|run| {
            let plan = rt.plan(&run.scores, now)?;
            rt.enqueue(&plan, now)?;
            Ok((run, plan.writes.len()))
        })
    });
    match result {
        Ok((run, writes)) => {
            // Accounts by band are read from the stored run summary when /metrics is scraped.
            observe::metrics()
                .scoring_duration_seconds
                .observe(started.elapsed().as_secs_f64());
            let d = &run.distribution;
            tracing::info!(
                accounts = run.scores.len(),
                red = d.red,
                amber = d.amber,
                green = d.green,
                writes,
                "scored and planned"
            )
        }
        Err(e) => tracing::error!(error = %e, "scoring failed"),
    }
}

async fn run_delivery(rt: &Runtime, shutdown: &watch::Receiver<bool>) {
    let span = tracing::info_span!("deliver_run");
    match rt
        .push(shutdown, Utc::now(), &|_, _| {})
        .instrument(span)
        .await
    {
        Ok(r) => tracing::info!(
            applied = r.applied,
            dead = r.dead_lettered,
            remaining = r.remaining,
            "delivery finished"
        ),
        Err(e) => tracing::error!(error = %e, "delivery failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn guards_are_shared_by_name_and_wait_idle_reports_busy_jobs() {
        let guards = JobGuards::default();
        let a = guards.get("sync a");
        assert!(Arc::ptr_eq(&a, &guards.get("sync a")));
        let held = a.lock().await;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(20);
        assert_eq!(guards.wait_idle(deadline).await, vec!["sync a".to_string()]);
        drop(held);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(20);
        assert!(guards.wait_idle(deadline).await.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn pause_ends_early_on_shutdown() {
        let (tx, rx) = watch::channel(false);
        let ctx = JobContext {
            guards: Arc::default(),
            jitter: Duration::from_secs(60),
            shutdown: rx,
        };
        let pausing = tokio::spawn(async move { ctx.pause(Duration::from_secs(60)).await });
        tokio::task::yield_now().await;
        tx.send(true).expect("receiver alive");
        assert!(!pausing.await.expect("task"));
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        assert_eq!(random_jitter(Duration::ZERO), Duration::ZERO);
        for _ in 0..100 {
            assert!(random_jitter(Duration::from_millis(50)) <= Duration::from_millis(50));
        }
    }
}
