//! The command line: clap definitions, dispatch to the pipeline, and exit codes.
//!
//! Exit codes: 0 success, 2 invalid input or configuration, 1 runtime failure. Human output goes to stdout
//! (tables made for reading, in `output.rs`), progress and logs to stderr; `--json` prints the same data as
//! JSON for machines. This module decides what to run and how to show it; the work is in `crate::pipeline`,
//! `crate::daemon` and `demo.rs` (`healthsync demo` and `healthsync sim`,
//! which print with the same tables).

pub(crate) mod backtest;
mod commands;
pub mod demo;
mod output;
mod report;
mod status;
mod writeback;

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use tokio::sync::watch;

use crate::config::{self, Config, ConfigErrors};
use crate::pipeline::{PipelineError, Runtime};
use crate::store::{Store, StoreError};

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
        /// At most 520 (ten years): each week is a full scoring run.
        #[arg(long, value_name = "N", default_value_t = 0,
              value_parser = clap::value_parser!(u32).range(0..=MAX_BACKFILL_WEEKS as i64))]
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
        /// Simulated accounts, 1 to 200,000 (the simulator holds every account's history in memory:
        /// about 13 GiB at 160,000).
        #[arg(long, default_value_t = 500, value_parser = sim_accounts())]
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
        /// Simulated accounts, 1 to 200,000.
        #[arg(long, default_value_t = 500, value_parser = sim_accounts())]
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

/// The most weeks `score --backfill-weeks` replays: ten years.
const MAX_BACKFILL_WEEKS: u32 = 520;

/// The simulator's population bounds: at least one account, and no more than fits in this machine's
/// class of memory (the simulator holds about 13 GiB at 160,000 accounts).
fn sim_accounts() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..=200_000)
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

pub(crate) fn open_runtime(global: &Global) -> Result<Runtime, CliError> {
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

/// Runs a parsed command line: one function per command, in `commands.rs`.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let g = &cli.global;
    match cli.command {
        Command::Validate(JsonFlag { json }) => commands::validate(g, json),
        Command::Run => commands::daemon(g).await,
        Command::Sync {
            connectors,
            full,
            json,
        } => commands::sync(g, connectors, full, json).await,
        Command::Score {
            table,
            as_of,
            backfill_weeks,
        } => commands::score(g, table, as_of, backfill_weeks),
        Command::Plan { json, model: None } => commands::plan(g, json),
        Command::Plan {
            json,
            model: Some(candidate),
        } => commands::shadow_plan(g, json, candidate),
        Command::Backtest {
            json,
            model,
            recompute,
        } => commands::backtest(g, json, model, recompute),
        Command::Deadletters { json, replay, sink } => {
            commands::dead_letters(g, json, replay, sink).await
        }
        Command::Push(JsonFlag { json }) => commands::push(g, json).await,
        Command::Once(JsonFlag { json }) => commands::once(g, json).await,
        Command::Explain { account, json } => commands::explain(g, account, json),
        Command::Status(JsonFlag { json }) => commands::status(g, json).await,
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
        } => commands::demo(accounts, seed, json, serve, sink, export_dir).await,
    }
}

/// Reports what each export wrote after a scoring run (to stderr, so `--json` output stays one document);
/// a failed export fails the command, after everything else was done and shown.
pub(crate) fn exported(
    outcomes: &[crate::book::ExportOutcome],
    json: bool,
) -> Result<(), CliError> {
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
