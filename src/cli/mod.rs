//! The command line: clap definitions, dispatch to the pipeline, and exit codes.
//!
//! Exit codes: 0 success, 2 invalid input or configuration, 1 runtime failure. Human output goes to stdout
//! (tables made for reading, in `output.rs`), progress and logs to stderr; `--json` prints the same data as
//! JSON for machines. This module decides what to run and how to show it; the work is in `crate::pipeline`,
//! `crate::daemon` and `demo.rs` (`healthsync demo` and `healthsync sim`,
//! which print with the same tables).

pub(crate) mod backtest;
pub mod demo;
mod output;
mod report;
mod status;
mod writeback;

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use tokio::sync::watch;

use crate::book::Book;
use crate::config::{self, Config, ConfigErrors};
use crate::pipeline::{PipelineError, RunProgress, Runtime};
use crate::store::{Store, StoreError};
use crate::sync::SyncOptions;

pub use output::{fmt_score, Progress};

#[derive(Debug, Parser)]
#[command(
    name = "healthsync",
    version,
    about = "Customer-health engine: sync CRM, billing and usage data, score accounts, write health back to your CS platform"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// The daemon config file.
    #[arg(
        long,
        global = true,
        env = "HEALTHSYNC_CONFIG",
        default_value = "config/healthsync.toml"
    )]
    pub config: PathBuf,
    /// Use this state directory instead of the config's `state_dir`.
    #[arg(long, global = true, env = "HEALTHSYNC_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Take this time (RFC 3339) as the current time for scoring, planning and project keys, instead of the
    /// clock: for replays and for tests that compare runs made seconds apart.
    #[arg(long, global = true, value_name = "TIME")]
    pub now: Option<DateTime<Utc>>,
}

impl Global {
    /// The current time: `--now` if given, else the system clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.now.unwrap_or_else(Utc::now)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the config, connectors and health model without network access; report every problem.
    Validate(JsonFlag),
    /// Run as a daemon: sync, score and deliver on the configured schedules until stopped.
    Run,
    /// Pull once from source connectors (all enabled ones if none are named).
    Sync {
        /// Connector ids (file stems in the connectors folder).
        connectors: Vec<String>,
        /// Forget cursors and re-read everything.
        #[arg(long)]
        full: bool,
        #[arg(long)]
        json: bool,
    },
    /// Score every account once from cached data and print the table.
    Score {
        #[command(flatten)]
        table: TableArgs,
        /// Score as of this time (RFC 3339) instead of now.
        #[arg(long)]
        as_of: Option<DateTime<Utc>>,
        /// First score as of each of the past N weeks from cached records (records from after each date
        /// are not read), so trends and backtests have a history from the first day.
        #[arg(long, value_name = "N", default_value_t = 0)]
        backfill_weeks: u32,
    },
    /// Does the score predict churn? Past scores against outcomes read from billing data: AUC per signal,
    /// churn and net revenue retention by band, the red band as a churn flag, suggested weights.
    Backtest {
        #[arg(long)]
        json: bool,
        /// Also backtest this candidate model; both models are then recomputed on the same dates.
        #[arg(long, value_name = "PATH")]
        model: Option<PathBuf>,
        /// Recompute past scores from cached records even where the score history has them.
        #[arg(long)]
        recompute: bool,
    },
    /// Show the writes that would be made to the CS platform (dry run: nothing is sent or stored).
    Plan {
        #[arg(long)]
        json: bool,
        /// Shadow mode: score with this candidate model (validated against the same connectors) and show
        /// what it would write. Nothing is sent or stored.
        #[arg(long, value_name = "PATH")]
        model: Option<PathBuf>,
    },
    /// Plan, queue and send the writes to the CS platform, once.
    Push(JsonFlag),
    /// Sync, score and push, once.
    Once(JsonFlag),
    /// Why an account scores what it does: every category and metric, and what costs it the most points.
    Explain {
        /// Account id or name.
        account: String,
        #[arg(long)]
        json: bool,
    },
    /// Connectors' last runs, outbox and dead letters, the last scoring run.
    Status(JsonFlag),
    /// Writes the platforms refused for good, with the reason and attempt count; `--replay` resends them.
    Deadletters {
        #[arg(long)]
        json: bool,
        /// Put them back in the outbox and deliver once (idempotent: sinks find what already landed).
        #[arg(long)]
        replay: bool,
        /// Only this sink's dead letters.
        #[arg(long, value_name = "CONNECTOR")]
        sink: Option<String>,
    },
    /// Write the health report: one self-contained HTML page (bands over time, trends, score vs churn,
    /// metrics and engagement by tier and band, project impact, this week's band moves).
    Report {
        /// Where to write the HTML file (replaced atomically).
        #[arg(long, value_name = "PATH", required_unless_present = "json")]
        out: Option<PathBuf>,
        /// Print the report's data as JSON instead of the path and summary.
        #[arg(long)]
        json: bool,
    },
    /// Serve the simulated vendor APIs on loopback and write a config that points at them.
    Sim {
        #[arg(long, default_value_t = 500)]
        accounts: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Where to write healthsync.toml, connectors/ and models/ for the simulated APIs.
        #[arg(long)]
        config_out: Option<PathBuf>,
        /// Lift the vendors' rate limits (as `demo` does) instead of simulating their real quotas.
        #[arg(long)]
        fast: bool,
    },
    /// Run the whole pipeline once against the built-in simulated APIs and print a summary.
    Demo {
        #[arg(long, default_value_t = 500)]
        accounts: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long)]
        json: bool,
        /// Keep the simulator and the daemon running afterwards, to explore with the other commands.
        #[arg(long)]
        serve: bool,
        /// Also export the scores as files: `xlsx` (a workbook to open and sort) or `csv`; repeatable.
        #[arg(long, value_parser = ["xlsx", "csv"])]
        sink: Vec<String>,
        /// Where `--sink` writes its files.
        #[arg(long, value_name = "DIR", default_value = "healthsync-demo-export")]
        export_dir: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TableArgs {
    #[arg(long)]
    pub json: bool,
    /// Rows to show, worst first (0 = all).
    #[arg(long, default_value_t = 25)]
    pub limit: usize,
}

/// A failure, with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Config(ConfigErrors),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Runtime(#[from] anyhow::Error),
    /// Already explained on the terminal; only the exit code is left to give.
    #[error("exit {0}")]
    Reported(i32),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Config(_) | CliError::Usage(_) => 2,
            CliError::Runtime(_) => 1,
            CliError::Reported(code) => *code,
        }
    }
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        CliError::Runtime(e.into())
    }
}

impl From<PipelineError> for CliError {
    fn from(e: PipelineError) -> Self {
        match e {
            PipelineError::Store(s) => CliError::Runtime(s.into()),
            other => CliError::Usage(other.to_string()),
        }
    }
}

/// Loads and validates the config, applying the `--state-dir` override.
pub fn load_config(global: &Global) -> Result<Config, CliError> {
    let mut config = config::load(&global.config, &crate::connector::kinds::catalog())
        .map_err(CliError::Config)?;
    if let Some(dir) = &global.state_dir {
        config.daemon.state_dir = dir.clone();
    }
    Ok(config)
}

fn open_runtime(global: &Global) -> Result<Runtime, CliError> {
    let config = load_config(global)?;
    let store = Store::open(&config.daemon.state_dir)?;
    Ok(Runtime::build(config, store))
}

/// A shutdown signal that fires on Ctrl-C / SIGTERM, for commands that should stop between pages.
pub fn shutdown_on_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        crate::daemon::wait_for_stop_signal().await;
        let _ = tx.send(true);
    });
    rx
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let g = &cli.global;
    match cli.command {
        Command::Validate(JsonFlag { json }) => {
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
        Command::Run => {
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
        Command::Sync {
            connectors,
            full,
            json,
        } => {
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
        Command::Score {
            table,
            as_of,
            backfill_weeks,
        } => {
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
        Command::Plan { json, model: None } => {
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
        Command::Plan {
            json,
            model: Some(candidate),
        } => {
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
        Command::Backtest {
            json,
            model,
            recompute,
        } => {
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
        Command::Deadletters { json, replay, sink } => {
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
            let progress = Progress::new(json);
            let report = rt
                .push(&shutdown_on_signal(), now, &|i, n| {
                    progress.deliveries(i, n)
                })
                .await?;
            progress.finish();
            writeback::replayed(&replayed, &report, json);
            Ok(())
        }
        Command::Push(JsonFlag { json }) => {
            let rt = open_runtime(g)?;
            let now = g.now();
            let plan = rt.plan(&rt.book().stored_scores()?, now)?;
            rt.enqueue(&plan, now)?;
            let progress = Progress::new(json);
            let report = rt
                .push(&shutdown_on_signal(), now, &|i, n| {
                    progress.deliveries(i, n)
                })
                .await?;
            progress.finish();
            writeback::pushed(&plan, &report, json);
            Ok(())
        }
        Command::Once(JsonFlag { json }) => {
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
            exported(&done.run.exports, json)
        }
        Command::Explain { account, json } => {
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
        Command::Status(JsonFlag { json }) => {
            let config = load_config(g)?;
            let report = match Store::open(&config.daemon.state_dir) {
                Ok(store) => {
                    let rt = Runtime::build(config, store);
                    crate::status::collect(&rt.config, &rt.store, &rt.build_errors, g.now())?
                }
                // The daemon holds the store: ask it instead.
                Err(StoreError::Locked { path }) => match config.daemon.listen {
                    Some(addr) => crate::http::local::fetch_status(addr)
                        .await
                        .map_err(|e| anyhow::anyhow!("the store at {path} is held by a running daemon, and asking it failed: {e}"))?,
                    None => return Err(StoreError::Locked { path }.into()),
                },
                Err(e) => return Err(e.into()),
            };
            status::print(&report, json);
            Ok(())
        }
        Command::Report { out, json } => {
            let rt = open_runtime(g)?;
            report::run(rt.book(), out.as_deref(), json, g.now())
        }
        Command::Sim {
            accounts,
            seed,
            config_out,
            fast,
        } => demo::serve_sim(accounts, seed, config_out, fast)
            .await
            .map_err(CliError::Runtime),
        Command::Demo {
            accounts,
            seed,
            json,
            serve,
            sink,
            export_dir,
        } => {
            if accounts == 0 {
                return Err(CliError::Usage("--accounts must be at least 1".into()));
            }
            let export = (!sink.is_empty()).then_some(demo::DemoExport {
                formats: sink,
                directory: export_dir,
            });
            demo::run(accounts, seed, json, serve, export)
                .await
                .map_err(CliError::Runtime)
        }
    }
}

/// Reports what each export wrote after a scoring run (to stderr, so `--json` output stays one document);
/// a failed export fails the command, after everything else was done and shown.
fn exported(outcomes: &[crate::book::ExportOutcome], json: bool) -> Result<(), CliError> {
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.error.as_ref().map(|e| format!("{}: {e}", o.export)))
        .collect();
    if !json {
        for o in outcomes.iter().filter(|o| o.error.is_none()) {
            for f in &o.files {
                eprintln!("export {}: wrote {}", o.export, f.display());
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::Runtime(anyhow::anyhow!(
            "export failed: {}",
            failed.join("; ")
        )))
    }
}
