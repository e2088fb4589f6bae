//! `healthsync run`: the long-running daemon.
//!
//! One tokio-cron-scheduler job per scheduled source connector, plus a scoring job (score, plan, enqueue)
//! and a delivery job (drain the outbox). A job never overlaps itself: if the previous run is still going,
//! the tick is skipped and logged. A failing job is logged and the others carry on. Shutdown comes in as a
//! watch channel (mini-redis style): on SIGTERM/SIGINT the scheduler stops, in-flight work stops between
//! pages or writes (everything already committed stays), sled is flushed, and `run` returns.
//!
//! Not built yet (see the production issue): sd_notify, SIGHUP reload, /metrics and /healthz.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context as _;
use chrono::Utc;
use tokio::sync::{watch, Mutex};
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::config::Config;
use crate::pipeline::Runtime;
use crate::store::Store;
use crate::sync::SyncOptions;

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn wait_for_stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

type JobFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A scheduled job body that skips a tick while its previous run is still going.
fn non_overlapping<I, F>(
    name: String,
    guard: Arc<Mutex<()>>,
    work: F,
) -> impl FnMut(I, JobScheduler) -> JobFuture + Send + Sync + 'static
where
    F: Fn() -> JobFuture + Send + Sync + 'static,
{
    let work = Arc::new(work);
    move |_, _| {
        let guard = guard.clone();
        let work = work.clone();
        let name = name.clone();
        Box::pin(async move {
            let Ok(_running) = guard.try_lock() else {
                tracing::warn!(job = %name, "previous run still going; skipping this tick");
                return;
            };
            work().await;
        })
    }
}

/// Runs until `shutdown` turns true.
pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let store = Store::open(&config.daemon.state_dir).with_context(|| {
        format!(
            "cannot open the store in {}",
            config.daemon.state_dir.display()
        )
    })?;
    let scoring_schedule = config.daemon.scoring_schedule.clone();
    let delivery_schedule = config.daemon.delivery_schedule.clone();
    let rt = Arc::new(Runtime::build(config, store));
    let mut sched = JobScheduler::new()
        .await
        .context("cannot start the scheduler")?;

    let sources: Vec<(String, String)> = rt
        .config
        .sources()
        .filter_map(|c| c.schedule.clone().map(|s| (c.id.clone(), s)))
        .collect();
    for (id, schedule) in sources {
        let (rt2, sd) = (rt.clone(), shutdown.clone());
        let id2 = id.clone();
        let job = Job::new_async(
            schedule.as_str(),
            non_overlapping(format!("sync {id}"), Arc::new(Mutex::new(())), move || {
                let (rt, sd, id) = (rt2.clone(), sd.clone(), id2.clone());
                Box::pin(async move {
                    match rt.sync(std::slice::from_ref(&id), &SyncOptions::default(), &sd, &|_, _, _| {}).await {
                        Ok(statuses) => {
                            for s in statuses {
                                tracing::info!(connector = %s.connector, records = s.records(), ok = s.ok(), "sync finished");
                            }
                        }
                        Err(e) => tracing::error!(connector = %id, error = %e, "sync failed"),
                    }
                })
            }),
        )
        .with_context(|| format!("connector {id}: bad schedule `{schedule}`"))?;
        sched.add(job).await.context("cannot add a job")?;
    }

    let rt2 = rt.clone();
    let scoring = Job::new_async(
        scoring_schedule.as_str(),
        non_overlapping("score".into(), Arc::new(Mutex::new(())), move || {
            let rt = rt2.clone();
            Box::pin(async move {
                let now = Utc::now();
                let result = rt.score(now).and_then(|run| {
                    let plan = rt.plan(&run.scores, now)?;
                    rt.enqueue(&plan, now)?;
                    Ok((run.scores.len(), plan.writes.len()))
                });
                match result {
                    Ok((accounts, writes)) => {
                        tracing::info!(accounts, writes, "scored and planned")
                    }
                    Err(e) => tracing::error!(error = %e, "scoring failed"),
                }
            })
        }),
    )
    .context("bad scoring schedule")?;
    sched
        .add(scoring)
        .await
        .context("cannot add the scoring job")?;

    let (rt2, sd) = (rt.clone(), shutdown.clone());
    let delivery = Job::new_async(
        delivery_schedule.as_str(),
        non_overlapping("deliver".into(), Arc::new(Mutex::new(())), move || {
            let (rt, sd) = (rt2.clone(), sd.clone());
            Box::pin(async move {
                match rt.push(&sd, Utc::now(), &|_, _| {}).await {
                    Ok(r) => tracing::info!(
                        applied = r.applied,
                        dead = r.dead_lettered,
                        remaining = r.remaining,
                        "delivery finished"
                    ),
                    Err(e) => tracing::error!(error = %e, "delivery failed"),
                }
            })
        }),
    )
    .context("bad delivery schedule")?;
    sched
        .add(delivery)
        .await
        .context("cannot add the delivery job")?;

    sched.start().await.context("cannot start the scheduler")?;
    tracing::info!(
        connectors = rt.config.connectors.len(),
        "healthsync running"
    );
    let mut sd = shutdown;
    while !*sd.borrow() {
        if sd.changed().await.is_err() {
            break;
        }
    }
    tracing::info!("stopping");
    sched
        .shutdown()
        .await
        .context("scheduler did not stop cleanly")?;
    rt.store.flush().context("cannot flush the store")?;
    tracing::info!("stopped");
    Ok(())
}
