//! `healthsync run`: the long-running daemon and its lifecycle.
//!
//! Startup opens the store (a second instance gets sled's lock error and stops), binds the HTTP endpoints,
//! schedules the jobs (`jobs.rs`) and tells systemd `READY=1`. The main loop then waits for three things:
//! shutdown, a reload request (SIGHUP), and the watchdog tick (it pings `WATCHDOG=1` at half the interval
//! systemd asked for, from this loop, so a wedged runtime stops the pings). A reload loads and validates
//! the config again: an invalid one is logged and rejected and the running config stays; a valid one
//! replaces every job, so connectors added, removed or changed take effect without a restart. Shutdown
//! (`STOPPING=1`) stops the scheduler, lets in-flight pages and batches finish within the grace period
//! (they check the shutdown flag between pages and writes, and everything committed stays), flushes sled
//! and returns.
//!
//! This module does not decide what a job does (`jobs.rs`, `crate::pipeline`) or how endpoints answer
//! (`server.rs`). Signals are turned into channels by the caller, so tests drive reloads and shutdowns
//! directly.

mod jobs;
mod server;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sd_notify::NotifyState;
use tokio::sync::{mpsc, watch};
use tokio_cron_scheduler::JobScheduler;
use uuid::Uuid;

use crate::config::{Config, ConfigErrors};
use crate::observe;
use crate::pipeline::Runtime;
use crate::status::{self, DaemonInfo, ReloadOutcome, StatusReport};
use crate::store::{MetaKey, RunKey, Store, StoreError};

use jobs::{JobContext, JobGuards};

/// Loads and validates the config again, for a reload.
pub type ConfigLoader = Box<dyn Fn() -> Result<Config, ConfigErrors> + Send + Sync>;

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

/// A channel that receives one message per SIGHUP.
pub fn reload_on_sighup() -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(4);
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; reload needs a restart");
            return;
        };
        while hup.recv().await.is_some() {
            // A full channel already holds a pending reload; one is enough.
            let _ = tx.try_send(());
        }
    });
    #[cfg(not(unix))]
    drop(tx);
    rx
}

/// What the endpoints read: the store, the running runtime (swapped on reload) and the daemon's facts.
pub struct DaemonState {
    store: Store,
    runtime: RwLock<Arc<Runtime>>,
    info: Mutex<DaemonInfo>,
}

impl DaemonState {
    fn runtime(&self) -> Arc<Runtime> {
        self.runtime
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The status report, stamped with the daemon's facts.
    pub fn report(&self, now: DateTime<Utc>) -> Result<StatusReport, StoreError> {
        let rt = self.runtime();
        let mut report = status::collect(&rt.config, &self.store, &rt.build_errors, now)?;
        report.daemon = Some(self.info.lock().unwrap_or_else(|p| p.into_inner()).clone());
        Ok(report)
    }

    /// Sets the gauges that mirror the store: depths, freshness, last success, accounts by band.
    fn refresh_gauges(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        let rt = self.runtime();
        let m = observe::metrics();
        m.outbox_depth.set(self.store.outbox_len() as i64);
        m.dead_letters.set(self.store.dead_letter_len() as i64);
        for c in rt.config.sources() {
            let label = observe::connector(&c.id);
            let last: Option<DateTime<Utc>> = self.store.status(RunKey::SyncOk(&c.id))?;
            if let Some(t) = last {
                m.last_success_timestamp
                    .get_or_create(&label)
                    .set(t.timestamp());
            }
            let stale = status::is_stale(last, c.max_age, now);
            m.connector_stale
                .get_or_create(&label)
                .set(i64::from(stale));
        }
        let summary: Option<crate::book::ScoreSummary> = self.store.meta(MetaKey::LastScoreRun)?;
        if let Some(s) = summary {
            observe::set_accounts(s.distribution.by_label());
        }
        Ok(())
    }
}

/// Tells systemd, when it is listening (`NOTIFY_SOCKET`); a no-op otherwise.
fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// The jobs currently in the scheduler, replaced as a whole on reload.
struct Schedule {
    scheduler: JobScheduler,
    jobs: Vec<Uuid>,
}

impl Schedule {
    async fn install(&mut self, rt: &Arc<Runtime>, ctx: &JobContext) -> anyhow::Result<()> {
        let jobs = jobs::build_jobs(rt, ctx).context("cannot build the jobs")?;
        for id in std::mem::take(&mut self.jobs) {
            self.scheduler
                .remove(&id)
                .await
                .context("cannot remove a job")?;
        }
        for job in jobs {
            self.jobs
                .push(self.scheduler.add(job).await.context("cannot add a job")?);
        }
        Ok(())
    }
}

/// Runs until `shutdown` turns true. `reload` carries SIGHUPs; `loader` reads the config again.
pub async fn run(
    config: Config,
    loader: ConfigLoader,
    mut reload: mpsc::Receiver<()>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let state_dir = config.daemon.state_dir.clone();
    let store = Store::open(&state_dir)
        .with_context(|| format!("cannot open the store in {}", state_dir.display()))?;
    let listen = config.daemon.listen;
    let grace = config.daemon.shutdown_grace;
    let rt = Arc::new(Runtime::build(config, store.clone()));
    for (id, e) in &rt.build_errors {
        tracing::error!(connector = %id, error = %e, "connector cannot run");
    }
    let state = Arc::new(DaemonState {
        store: store.clone(),
        runtime: RwLock::new(rt.clone()),
        info: Mutex::new(DaemonInfo {
            pid: std::process::id(),
            started_at: Utc::now(),
            config: rt.config.daemon.path.display().to_string(),
            last_reload: None,
        }),
    });
    let server = match listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            let bound = listener.local_addr().unwrap_or(addr);
            tracing::info!(%bound, "serving /metrics /healthz /readyz /status");
            Some(tokio::spawn(server::serve(
                listener,
                state.clone(),
                shutdown.clone(),
            )))
        }
        None => None,
    };

    let ctx = JobContext {
        guards: Arc::new(JobGuards::default()),
        jitter: rt.config.daemon.jitter,
        shutdown: shutdown.clone(),
    };
    let mut schedule = Schedule {
        scheduler: JobScheduler::new()
            .await
            .context("cannot start the scheduler")?,
        jobs: Vec::new(),
    };
    schedule.install(&rt, &ctx).await?;
    schedule
        .scheduler
        .start()
        .await
        .context("cannot start the scheduler")?;
    let running = format!(
        "running: {} sources, {} sinks",
        rt.config.sources().count(),
        rt.config.sinks().count()
    );
    tracing::info!(
        connectors = rt.config.connectors.len(),
        model = %rt.config.model.name,
        "healthsync running"
    );
    notify(&[NotifyState::Ready, NotifyState::Status(&running)]);
    drop(rt);

    let mut watchdog = sd_notify::watchdog_enabled().map(|d| tokio::time::interval(d / 2));
    let mut sd = shutdown.clone();
    let mut reload_open = true;
    loop {
        tokio::select! {
            changed = sd.changed() => {
                if changed.is_err() || *sd.borrow() {
                    break;
                }
            }
            got = reload.recv(), if reload_open => match got {
                Some(()) => apply_reload(&state, &loader, &mut schedule, &ctx, &state_dir, listen).await,
                None => reload_open = false,
            },
            _ = async { match watchdog.as_mut() {
                Some(w) => { w.tick().await; }
                None => std::future::pending().await,
            } } => notify(&[NotifyState::Watchdog]),
        }
    }

    tracing::info!(grace_secs = grace.as_secs(), "stopping");
    notify(&[NotifyState::Stopping]);
    schedule
        .scheduler
        .shutdown()
        .await
        .context("scheduler did not stop cleanly")?;
    let busy = ctx
        .guards
        .wait_idle(tokio::time::Instant::now() + grace)
        .await;
    if !busy.is_empty() {
        // Their uncommitted page or write is simply redone next time: cursors and the outbox only move
        // on commit.
        tracing::warn!(jobs = ?busy, "jobs still running after the grace period; leaving them");
    }
    if let Some(server) = server {
        if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(2), server).await {
            tracing::warn!(error = %e, "http endpoint stopped with an error");
        }
    }
    store.flush().context("cannot flush the store")?;
    tracing::info!("stopped");
    Ok(())
}

/// Reloads the config. A config that fails validation is rejected whole and the old one keeps running.
async fn apply_reload(
    state: &DaemonState,
    loader: &ConfigLoader,
    schedule: &mut Schedule,
    ctx: &JobContext,
    state_dir: &std::path::Path,
    listen: Option<SocketAddr>,
) {
    notify(&[NotifyState::Reloading]);
    let outcome = match loader() {
        Err(errors) => {
            for d in &errors.0 {
                tracing::error!(problem = %d, "reload rejected; keeping the running config");
            }
            ReloadOutcome {
                at: Utc::now(),
                applied: false,
                errors: errors.0.iter().map(ToString::to_string).collect(),
            }
        }
        Ok(mut config) => {
            if config.daemon.state_dir != state_dir {
                tracing::warn!(
                    "state_dir changed; the new one takes effect on restart, the store stays in {}",
                    state_dir.display()
                );
                config.daemon.state_dir = state_dir.to_path_buf();
            }
            if config.daemon.listen != listen {
                tracing::warn!("listen changed; the new address takes effect on restart");
            }
            let rt = Arc::new(Runtime::build(config, state.store.clone()));
            for (id, e) in &rt.build_errors {
                tracing::error!(connector = %id, error = %e, "connector cannot run");
            }
            match schedule.install(&rt, ctx).await {
                Ok(()) => {
                    tracing::info!(
                        connectors = rt.config.connectors.len(),
                        model = %rt.config.model.name,
                        "config reloaded"
                    );
                    *state.runtime.write().unwrap_or_else(|p| p.into_inner()) = rt;
                    ReloadOutcome {
                        at: Utc::now(),
                        applied: true,
                        errors: Vec::new(),
                    }
                }
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "reload failed while rescheduling");
                    ReloadOutcome {
                        at: Utc::now(),
                        applied: false,
                        errors: vec![format!("{e:#}")],
                    }
                }
            }
        }
    };
    observe::metrics()
        .config_reloads
        .get_or_create(&observe::OutcomeLabel {
            outcome: if outcome.applied {
                "applied"
            } else {
                "rejected"
            }
            .into(),
        })
        .inc();
    state
        .info
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .last_reload = Some(outcome);
    notify(&[NotifyState::Ready]);
}
