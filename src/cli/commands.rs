//! One function per `healthsync` command: what it opens (config, store, connectors), what it runs and
//! how its result is shown. Parsing the command line and mapping errors to exit codes are `mod.rs`'s; the
//! work itself is in `crate::pipeline`, `crate::book`, `crate::daemon` and the modules beside this one.

use std::path::PathBuf;

use chrono::{DateTime, Utc};

use super::{
    backtest, demo, exported, load_config, open_runtime, output, shutdown_on_signal, status,
    writeback, CliError, ConfigErrors, Global, Progress, TableArgs,
};
use crate::book::Book;
use crate::config;
use crate::outbox::DeliveryReport;
use crate::pipeline::{RunProgress, Runtime};
use crate::store::{Store, StoreError};
use crate::sync::SyncOptions;

/// `healthsync validate`: every problem of the config with file and line, then whether export folders
/// are writable (an effect, so after the pure checks).
pub fn validate(g: &Global, json: bool) -> Result<(), CliError> {
    match config::load(&g.config, &crate::connector::kinds::catalog()) {
        // The pure checks passed; whether export folders are writable is an effect, checked after.
        Ok(config) => match crate::pipeline::check_exports(&config) {
            problems if problems.is_empty() => output::validated(&config, json),
            problems => {
                output::invalid(&ConfigErrors(problems), json);
                Err(CliError::Reported(2))
            }
        },
        Err(errors) => {
            output::invalid(&errors, json);
            Err(CliError::Reported(2))
        }
    }
}

/// `healthsync run`: the daemon, with logging set up from the config (or plain, to report a bad one).
pub async fn daemon(g: &Global) -> Result<(), CliError> {
    if g.now.is_some() {
        // Its schedules run on the clock; one frozen instant would score the same moment forever.
        return Err(CliError::Usage(
            "--now has no meaning for `healthsync run`: the daemon's schedules follow the clock; use it with score, plan, push or once".into(),
        ));
    }
    let config = match load_config(g) {
        Ok(config) => config,
        Err(e) => {
            crate::telemetry::init("info", crate::config::LogFormat::Auto);
            return Err(e);
        }
    };
    let level = match g.verbose {
        0 => config.daemon.log_level.as_str(),
        1 => "info",
        _ => "debug",
    };
    crate::telemetry::init(level, config.daemon.log_format);
    for w in &config.warnings {
        tracing::warn!(problem = %w, "config warning");
    }
    let (path, state_dir) = (g.config.clone(), g.state_dir.clone());
    let loader: crate::daemon::ConfigLoader = Box::new(move || {
        let mut config = config::load(&path, &crate::connector::kinds::catalog())?;
        if let Some(dir) = &state_dir {
            config.daemon.state_dir = dir.clone();
        }
        Ok(config)
    });
    crate::daemon::run(
        config,
        loader,
        crate::daemon::reload_on_sighup(),
        shutdown_on_signal(),
    )
    .await
    .map_err(CliError::Runtime)
}

/// `healthsync sync`: the named sources (all by default), with a progress bar on a terminal.
pub async fn sync(
    g: &Global,
    connectors: Vec<String>,
    full: bool,
    json: bool,
) -> Result<(), CliError> {
    let rt = open_runtime(g)?;
    let ids = rt.select_sources(&connectors)?;
    let shutdown = shutdown_on_signal();
    let progress = Progress::new(json);
    let statuses = rt
        .sync(&ids, &SyncOptions { full }, &shutdown, &|c, s, n| {
            progress.records(c, s, n)
        })
        .await?;
    progress.finish();
    output::synced(&statuses, json);
    if statuses.iter().any(|s| !s.ok()) {
        return Err(CliError::Runtime(anyhow::anyhow!(
            "some connectors failed; see above"
        )));
    }
    Ok(())
}

/// `healthsync score`: backfilled weeks first, then scores as of `as_of` (default now), then exports.
pub fn score(
    g: &Global,
    table: TableArgs,
    as_of: Option<DateTime<Utc>>,
    backfill_weeks: u32,
) -> Result<(), CliError> {
    let rt = open_runtime(g)?;
    let as_of = as_of.unwrap_or_else(|| g.now());
    let progress = Progress::new(table.json);
    rt.book().backfill(as_of, backfill_weeks, &|done, total| {
        progress.steps("backfill", done, total, "weeks")
    })?;
    progress.finish();
    let run = rt.score(as_of)?;
    output::scores(&run, &rt.config.model, table.limit, table.json);
    exported(&run.exports, table.json)
}

/// `healthsync plan`: the writes the stored scores would cause; nothing is sent or stored.
pub fn plan(g: &Global, json: bool) -> Result<(), CliError> {
    let rt = open_runtime(g)?;
    let scores = rt.book().stored_scores()?;
    if scores.is_empty() {
        return Err(CliError::Usage(
            "no scores yet: run `healthsync sync` and `healthsync score` first".into(),
        ));
    }
    let plan = rt.plan(&scores, g.now())?;
    writeback::plan(&plan, json);
    Ok(())
}

/// `healthsync plan --model`: the writes a candidate model would cause, scored now and stored nowhere.
pub fn shadow_plan(g: &Global, json: bool, candidate: PathBuf) -> Result<(), CliError> {
    let mut config = config::load_with_model(
        &g.config,
        Some(&candidate),
        &crate::connector::kinds::catalog(),
    )
    .map_err(CliError::Config)?;
    if let Some(dir) = &g.state_dir {
        config.daemon.state_dir = dir.clone();
    }
    let store = Store::open(&config.daemon.state_dir)?;
    let rt = Runtime::build(config, store);
    let now = g.now();
    let run = rt.book().compute_scores(now)?;
    let plan = rt.plan(&run.scores, now)?;
    writeback::shadow_plan(&run, &plan, json);
    Ok(())
}

/// `healthsync backtest`: the current model, and a candidate beside it on the same store.
pub fn backtest(
    g: &Global,
    json: bool,
    model: Option<PathBuf>,
    recompute: bool,
) -> Result<(), CliError> {
    let current = open_runtime(g)?;
    // Two models on one store: the candidate reads the open store, and builds no connector.
    let candidate = match model {
        None => None,
        Some(path) => Some(
            config::load_for_reading(&g.config, &path, &crate::connector::kinds::catalog())
                .map_err(CliError::Config)?,
        ),
    };
    let candidate = candidate.as_ref().map(|config| Book {
        config,
        store: &current.store,
    });
    backtest::run(current.book(), candidate, g.now(), recompute, json)
}

/// `healthsync deadletters`: lists dead letters, or replays them (optionally for one sink) and delivers.
pub async fn dead_letters(
    g: &Global,
    json: bool,
    replay: bool,
    sink: Option<String>,
) -> Result<(), CliError> {
    let rt = open_runtime(g)?;
    if let Some(s) = &sink {
        if rt
            .config
            .connector(s)
            .is_none_or(|c| c.role != crate::vocab::Role::Sink)
        {
            return Err(CliError::Usage(format!(
                "--sink {s}: no sink connector with that id"
            )));
        }
    }
    if !replay {
        let mut dead = rt.store.dead_letters()?;
        dead.retain(|d| sink.as_ref().is_none_or(|s| *s == d.entry.sink));
        writeback::dead_letters(&dead, json);
        return Ok(());
    }
    let now = g.now();
    let replayed = rt.store.replay_dead_letters(sink.as_deref(), now)?;
    let report = deliver(&rt, now, json).await?;
    writeback::replayed(&replayed, &report, json);
    Ok(())
}

/// `healthsync push`: plans from the stored scores, enqueues and delivers.
pub async fn push(g: &Global, json: bool) -> Result<(), CliError> {
    let rt = open_runtime(g)?;
    let now = g.now();
    let plan = rt.plan(&rt.book().stored_scores()?, now)?;
    rt.enqueue(&plan, now)?;
    let report = deliver(&rt, now, json).await?;
    writeback::pushed(&plan, &report, json);
    Ok(())
}

/// `healthsync once`: sync, score, plan and deliver, once.
pub async fn once(g: &Global, json: bool) -> Result<(), CliError> {
    let rt = open_runtime(g)?;
    let progress = Progress::new(json);
    let records = |c: &str, s: &str, n: usize| progress.records(c, s, n);
    let deliveries = |i: usize, n: usize| progress.deliveries(i, n);
    let done = rt
        .once(
            &shutdown_on_signal(),
            g.now(),
            0,
            RunProgress {
                records: &records,
                deliveries: &deliveries,
            },
        )
        .await?;
    progress.finish();
    output::once(&done.statuses, &done.run, &done.plan, &done.delivery, json);
    exported(&done.run.exports, json)?;
    // A wrapper (cron, CI, a retry loop) must be able to tell a run whose inputs were partial.
    let failed: Vec<&str> = done
        .statuses
        .iter()
        .filter(|s| !s.ok())
        .map(|s| s.connector.as_str())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::Runtime(anyhow::anyhow!(
            "sync failed for {}; this run scored and delivered without their new data (see above)",
            failed.join(", ")
        )))
    }
}

/// `healthsync explain`: one account's score, by id or name, with what moved it.
pub fn explain(g: &Global, account: String, json: bool) -> Result<(), CliError> {
    let rt = open_runtime(g)?;
    let scores = rt.book().stored_scores()?;
    let found = scores.iter().find(|s| s.account.id == account).or_else(|| {
        scores
            .iter()
            .find(|s| s.account.name.eq_ignore_ascii_case(&account))
    });
    let Some(score) = found else {
        return Err(CliError::Usage(format!(
            "no scored account with id or name `{account}` (run `healthsync score` first)"
        )));
    };
    let history: Vec<(String, crate::scoring::AccountScore)> =
        rt.store.history(&score.account.id)?;
    output::explain(score, &history, &rt.config.model, json);
    Ok(())
}

/// `healthsync status`: from the store, or from the daemon that holds it.
pub async fn status(g: &Global, json: bool) -> Result<(), CliError> {
    let config = load_config(g)?;
    let report = match Store::open(&config.daemon.state_dir) {
        Ok(store) => {
            let rt = Runtime::build(config, store);
            crate::status::collect(&rt.config, &rt.store, &rt.build_errors, g.now())?
        }
        // The daemon holds the store: ask it instead.
        Err(StoreError::Locked { path }) => match config.daemon.listen {
            Some(addr) => crate::http::local::fetch_status(addr).await.map_err(|e| {
                anyhow::anyhow!(
                    "the store at {path} is held by a running daemon, and asking it failed: {e}"
                )
            })?,
            None => return Err(StoreError::Locked { path }.into()),
        },
        Err(e) => return Err(e.into()),
    };
    status::print(&report, json);
    Ok(())
}

/// `healthsync demo`.
pub async fn demo(
    accounts: usize,
    seed: u64,
    json: bool,
    serve: bool,
    sink: Vec<String>,
    export_dir: PathBuf,
) -> Result<(), CliError> {
    let export = (!sink.is_empty()).then_some(demo::DemoExport {
        formats: sink,
        directory: export_dir,
    });
    demo::run(accounts, seed, json, serve, export)
        .await
        .map_err(CliError::Runtime)
}

/// Drains the outbox until it is empty or Ctrl-C, with a progress bar of writes on a terminal.
async fn deliver(rt: &Runtime, now: DateTime<Utc>, json: bool) -> Result<DeliveryReport, CliError> {
    let progress = Progress::new(json);
    let report = rt
        .push(&shutdown_on_signal(), now, &|i, n| {
            progress.deliveries(i, n)
        })
        .await?;
    progress.finish();
    Ok(report)
}
