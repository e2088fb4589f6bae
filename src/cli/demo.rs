//! `healthsync demo` and `healthsync sim`: the whole pipeline against the built-in simulated APIs.
//!
//! The demo starts the simulator on a loopback port, writes a throwaway config (daemon file, connector files
//! pointing at the simulator, the shipped starter model, secret files referenced with `file:`), then runs
//! the same library calls as `healthsync once`, prints a summary and writes the HTML report into the work
//! folder, which it keeps. It scores on the simulator's clock so the same seed gives the same scores. This
//! module owns the demo's wiring and summary; the simulated vendors are `crate::sim`, the pipeline is
//! `crate::pipeline`, the report `crate::report`. Which connectors the demo writes, from which shipped
//! files, with which quotas and schedules, is each vendor's entry in `sim::VENDORS`, which `write_config`
//! and `healthsync sim` iterate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::watch;

use super::Progress;
use crate::config::Band;
use crate::pipeline::{OnceOutcome, RunProgress, Runtime};
use crate::sim::{self, DemoConnector, SimHandle, SimOptions, SimRateLimits, VendorSpec};
use crate::store::Store;

/// Weeks of score history the demo backfills from the simulated records before scoring today, so the
/// backtest and the report have a history to work with.
const BACKFILL_WEEKS: u32 = 16;
/// The shipped starter model, so the demo needs nothing from the working directory (the shipped connector
/// files are in `sim::VENDORS`).
const STARTER_MODEL: &str = include_str!("../../config/models/starter.toml");

/// The simulated world's "now": the start of today (UTC). Records are generated relative to it and the demo
/// scores as of it, so two runs of the same seed on the same day give identical scores; and it is never
/// ahead of the wall clock, so `healthsync once` against `healthsync sim` sees every simulated record.
fn sim_now() -> DateTime<Utc> {
    let today = Utc::now().date_naive();
    today
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or_else(Utc::now)
}

fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn write_secret(dir: &Path, name: &str, value: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    write_file(&path, value)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(path)
}

/// Writes a complete, valid config for the simulator into `dir` and returns the daemon file's path.
pub fn write_config(
    dir: &Path,
    sim: &SimHandle,
    limits: &SimRateLimits,
) -> anyhow::Result<PathBuf> {
    let dir = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()?.join(dir)
    };
    for sub in ["connectors", "models", "secrets"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
    }
    let secrets = dir.join("secrets");
    let daemon = "# Written by healthsync for the simulated APIs.\nversion = 1\nstate_dir = \"state\"\nconnectors_dir = \"connectors\"\nmodel = \"models/starter.toml\"\njitter_secs = 2\n\n[scoring]\nschedule = \"*/20 * * * * *\"\n\n[delivery]\nschedule = \"*/10 * * * * *\"\n";
    write_file(&dir.join("healthsync.toml"), daemon)?;
    write_file(&dir.join("models/starter.toml"), STARTER_MODEL)?;
    // The shipped connector files, pointed at the simulator: same kinds, params and field maps, with the
    // simulator's URL, a `file:` secret, the demo's quota and a schedule a person can watch.
    for spec in &sim::VENDORS {
        if let Some(demo) = &spec.demo {
            write_connector(&dir, &secrets, sim, limits, spec, demo)?;
        }
    }
    Ok(dir.join("healthsync.toml"))
}

/// Writes `connectors/<id>.toml` for one vendor of `sim::VENDORS`, with its secrets.
fn write_connector(
    dir: &Path,
    secrets: &Path,
    sim: &SimHandle,
    limits: &SimRateLimits,
    spec: &VendorSpec,
    demo: &DemoConnector,
) -> anyhow::Result<()> {
    let (id, base_url) = (demo.id, sim.base_url(spec.vendor));
    let secret = write_secret(secrets, id, spec.credential)?;
    let mut table: toml::Table = toml::from_str(demo.shipped)
        .with_context(|| format!("shipped connectors/{id}.toml does not parse"))?;
    table.insert("base_url".into(), base_url.clone().into());
    if let Some(schedule) = demo.schedule {
        table.insert("schedule".into(), schedule.into());
    }
    if let Some(page_size) = demo.page_size {
        table.insert("page_size".into(), page_size.into());
    }
    if let Some(toml::Value::Table(auth)) = table.get_mut("auth") {
        // Whichever key the shipped file uses for the secret (token, or username for Basic-auth keys).
        for k in ["token", "username"] {
            if auth.contains_key(k) {
                auth.insert(k.into(), format!("file:{}", secret.display()).into());
            }
        }
        // OAuth 2.0 connectors (Salesforce): the simulator's token endpoint and client credentials.
        if let Some(oauth) = demo
            .oauth
            .as_ref()
            .filter(|_| auth.contains_key("token_url"))
        {
            let token_url = format!("{base_url}{}", oauth.token_path);
            auth.insert("token_url".into(), token_url.into());
            for (k, v) in oauth.secrets {
                if auth.contains_key(*k) {
                    let path = write_secret(secrets, &format!("{id}_{k}"), v)?;
                    auth.insert((*k).into(), format!("file:{}", path.display()).into());
                }
            }
        }
        // Basic auth with a fixed user (Zendesk's `{email}/token`) and the credential as the password.
        if let Some(user) = demo.basic_user {
            let user = write_secret(secrets, &format!("{id}_user"), user)?;
            auth.insert("username".into(), format!("file:{}", user.display()).into());
            auth.insert(
                "password".into(),
                format!("file:{}", secret.display()).into(),
            );
        }
    }
    if !demo.params.is_empty() {
        let mut params = match table.remove("params") {
            Some(toml::Value::Table(params)) => params,
            _ => toml::Table::new(),
        };
        for (k, budget) in demo.params {
            params.insert((*k).into(), i64::from(budget(limits)).into());
        }
        table.insert("params".into(), params.into());
    }
    let (requests, per_secs) = demo
        .rate_limit
        .unwrap_or((limits.get(spec.vendor), spec.per_secs));
    let mut rl = toml::Table::new();
    rl.insert("requests".into(), i64::from(requests).into());
    rl.insert("per_secs".into(), i64::from(per_secs).into());
    table.insert("rate_limit".into(), rl.into());
    let text =
        toml::to_string(&table).with_context(|| format!("cannot write connectors/{id}.toml"))?;
    write_file(&dir.join("connectors").join(format!("{id}.toml")), &text)
}

#[derive(Debug, Serialize)]
struct DemoSource {
    connector: String,
    records: BTreeMap<String, usize>,
    ok: bool,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct DemoAccount {
    id: String,
    name: String,
    overall: Option<f64>,
    band: Option<Band>,
    coverage: f64,
    categories: BTreeMap<String, Option<f64>>,
    most_costly_input: Option<String>,
}

#[derive(Debug, Serialize)]
struct DemoSummary {
    accounts: usize,
    seed: u64,
    as_of: DateTime<Utc>,
    model: String,
    sources: Vec<DemoSource>,
    distribution: crate::scoring::Distribution,
    worst: Vec<DemoAccount>,
    planned_field_writes: usize,
    planned_projects: usize,
    delivery: crate::outbox::DeliveryReport,
    platform_received: BTreeMap<String, usize>,
    /// The starter model judged against the churn in the simulated billing history.
    backtest: Option<crate::backtest::Backtest>,
    scores: Vec<DemoAccount>,
    /// Files written by `--sink xlsx|csv`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    exports: Vec<crate::book::ExportOutcome>,
}

fn demo_account(s: &crate::scoring::AccountScore) -> DemoAccount {
    DemoAccount {
        id: s.account.id.clone(),
        name: s.account.name.clone(),
        overall: s.overall.map(|x| (x * 10.0).round() / 10.0),
        band: s.band,
        coverage: (s.coverage * 1000.0).round() / 1000.0,
        categories: s
            .categories
            .iter()
            .map(|c| (c.id.clone(), c.score.map(|x| (x * 10.0).round() / 10.0)))
            .collect(),
        most_costly_input: s.top_drag().map(|m| m.label.clone()),
    }
}

/// `healthsync demo --sink xlsx|csv`: a `file_export` connector added to the demo config, writing into a
/// folder that outlives the demo's temporary one.
#[derive(Debug, Clone)]
pub struct DemoExport {
    pub formats: Vec<String>,
    pub directory: PathBuf,
}

/// Writes `connectors/demo_export.toml` (a `file_export`) into the demo config at `config_dir`.
fn write_export_connector(config_dir: &Path, export: &DemoExport) -> anyhow::Result<()> {
    let directory = if export.directory.is_absolute() {
        export.directory.clone()
    } else {
        std::env::current_dir()
            .context("cannot read the current folder")?
            .join(&export.directory)
    };
    let mut params = toml::Table::new();
    params.insert(
        "directory".into(),
        directory.to_string_lossy().into_owned().into(),
    );
    params.insert("file_stem".into(), "healthsync-scores".into());
    params.insert(
        "formats".into(),
        toml::Value::Array(export.formats.iter().map(|f| f.as_str().into()).collect()),
    );
    let mut table = toml::Table::new();
    table.insert("kind".into(), "file_export".into());
    table.insert("role".into(), "export".into());
    table.insert("params".into(), params.into());
    let text = toml::to_string(&table).context("cannot write connectors/demo_export.toml")?;
    write_file(
        &config_dir.join("connectors").join("demo_export.toml"),
        &text,
    )
}

/// Runs the demo: simulator up, config written, sync → score → plan → push, summary printed.
pub async fn run(
    accounts: usize,
    seed: u64,
    json: bool,
    serve: bool,
    export: Option<DemoExport>,
) -> anyhow::Result<()> {
    let now = sim_now();
    let limits = SimRateLimits::demo();
    let sim = sim::start(SimOptions {
        accounts,
        seed,
        now,
        rate_limits: limits,
    })
    .await
    .context("cannot start the simulator")?;
    let dir = tempfile::Builder::new()
        .prefix("healthsync-demo-")
        .tempdir()
        .context("cannot create a temporary folder")?;
    let config_path = write_config(dir.path(), &sim, &limits)?;
    if let Some(export) = &export {
        write_export_connector(dir.path(), export)?;
    }
    let config =
        crate::config::load(&config_path, &crate::connector::kinds::catalog()).map_err(|e| {
            let lines: Vec<String> = e.0.iter().map(|d| d.to_string()).collect();
            anyhow::anyhow!(
                "the generated demo config is invalid (a bug):\n{}",
                lines.join("\n")
            )
        })?;
    let store = Store::open(&config.daemon.state_dir).context("cannot open the demo store")?;
    let rt = Runtime::build(config, store);
    if let Some((id, e)) = rt.build_errors.iter().next() {
        anyhow::bail!("demo connector {id} could not be built: {e}");
    }
    if !json {
        println!("healthsync demo: {accounts} simulated accounts (seed {seed}), simulated APIs at http://{}\n", sim.addr());
    }

    let (_stop_tx, shutdown) = watch::channel(false);
    let progress = Progress::new(json);
    let records = |c: &str, s: &str, n: usize| progress.records(c, s, n);
    let deliveries = |i: usize, n: usize| progress.deliveries(i, n);
    let OnceOutcome {
        statuses,
        run,
        plan,
        delivery: report,
    } = rt
        .once(
            &shutdown,
            now,
            BACKFILL_WEEKS,
            RunProgress {
                records: &records,
                deliveries: &deliveries,
            },
        )
        .await?;
    progress.finish();

    // The demo's own model always has `[outcomes]`; a failure here is a bug worth seeing, not fatal.
    let backtest = match crate::backtest::run(&rt.book(), now, Default::default()) {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!("warning: backtest failed: {e}");
            None
        }
    };
    let mut received: BTreeMap<String, usize> = BTreeMap::new();
    for r in sim.received() {
        let what = match (
            r.method.as_str(),
            r.path.rsplit('/').nth(1).unwrap_or(""),
            r.path.rsplit('/').next().unwrap_or(""),
        ) {
            ("PUT", "accounts", _) => "trait updates",
            ("POST", _, "projects") => "projects",
            ("POST", _, "tasks") => "tasks",
            _ => "other",
        };
        *received.entry(what.to_string()).or_default() += 1;
    }
    let mut ranked: Vec<&crate::scoring::AccountScore> =
        run.scores.iter().filter(|s| s.overall.is_some()).collect();
    ranked.sort_by(|a, b| {
        a.overall
            .unwrap_or(0.0)
            .total_cmp(&b.overall.unwrap_or(0.0))
            .then_with(|| a.account.id.cmp(&b.account.id))
    });
    let summary = DemoSummary {
        accounts,
        seed,
        as_of: now,
        model: run.model.clone(),
        sources: statuses
            .iter()
            .map(|s| DemoSource {
                connector: s.connector.clone(),
                records: s
                    .streams
                    .iter()
                    .map(|st| (st.stream.clone(), st.stored))
                    .collect(),
                ok: s.ok(),
                error: s.error.clone(),
            })
            .collect(),
        distribution: run.distribution.clone(),
        worst: ranked.iter().take(5).map(|s| demo_account(s)).collect(),
        planned_field_writes: plan.field_writes(),
        planned_projects: plan.projects(),
        delivery: report.clone(),
        platform_received: received,
        backtest,
        scores: run.scores.iter().map(demo_account).collect(),
        exports: run.exports.clone(),
    };

    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary, &run);
        if let Some(b) = &summary.backtest {
            print_backtest(b);
        }
        let files: Vec<&PathBuf> = run.exports.iter().flat_map(|o| &o.files).collect();
        if !files.is_empty() {
            println!("\n5. export (open the workbook in Excel, Numbers or LibreOffice; sort with the header filters)");
            for f in files {
                println!("   wrote {}", f.display());
            }
        }
    }
    if let Some(e) = run.exports.iter().find_map(|o| o.error.as_ref()) {
        anyhow::bail!("the demo export failed: {e}");
    }
    let failed: Vec<&DemoSource> = summary.sources.iter().filter(|s| !s.ok).collect();

    // The report, written into the work folder, which is kept so the page can be opened afterwards.
    let report_path = dir.path().join("report.html");
    let data = crate::report::gather(&rt.store, &rt.config.model, now)?;
    let backtest = summary.backtest.as_ref().ok_or(crate::report::NO_BACKTEST);
    crate::report::write(&report_path, &crate::report::render(&data, backtest)?)?;
    let kept = dir.keep();
    let report_file = kept.join("report.html");
    if json {
        // stdout carries one JSON document.
        eprintln!("report: {}", report_file.display());
    } else {
        println!(
            "\n{}. report\n   {}\n   {}",
            5 + usize::from(run.exports.iter().any(|o| !o.files.is_empty())),
            report_file.display(),
            crate::report::summary(&data, backtest)
        );
    }

    if serve {
        println!(
            "\nserving: simulated APIs at http://{}, config in {}",
            sim.addr(),
            config_path.display()
        );
        println!("the daemon holds the store while it runs; after Ctrl-C, look around with: healthsync --config {} status (or score, explain, plan)", config_path.display());
        println!("the daemon is running on second-level schedules; Ctrl-C stops both");
        let config = rt.config.clone();
        drop(rt); // Releases the sled lock so the daemon can open the store.
        let path = config_path.clone();
        crate::daemon::run(
            config,
            Box::new(move || crate::config::load(&path, &crate::connector::kinds::catalog())),
            crate::daemon::reload_on_sighup(),
            super::shutdown_on_signal(),
        )
        .await?;
        println!("config and store kept in {}", kept.display());
    } else {
        // Only --serve needs the store afterwards; the config and the report stay, the store (tens of
        // megabytes) goes, as the whole folder did before the demo wrote a report.
        let state_dir = rt.config.daemon.state_dir.clone();
        drop(rt);
        std::fs::remove_dir_all(&state_dir)
            .with_context(|| format!("cannot remove the demo store {}", state_dir.display()))?;
    }
    sim.shutdown().await;
    if !failed.is_empty() {
        anyhow::bail!(
            "{} source(s) failed: {}",
            failed.len(),
            failed
                .iter()
                .map(|s| format!("{}: {}", s.connector, s.error.clone().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    Ok(())
}

fn print_summary(s: &DemoSummary, run: &crate::book::ScoreRun) {
    println!("1. sync");
    for src in &s.sources {
        let total: usize = src.records.values().sum();
        let parts: Vec<String> = src
            .records
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let mark = if src.ok { "ok " } else { "ERR" };
        println!(
            "   {mark} {:<10} {:>7} records ({})",
            src.connector,
            total,
            parts.join(", ")
        );
        if let Some(e) = &src.error {
            println!("       {e}");
        }
    }
    for (stream, u) in &run.unmatched {
        println!("   note: {} records in {stream} match no account", u.count);
    }
    let d = &s.distribution;
    let scored = (d.red + d.amber + d.green).max(1) as f64;
    println!(
        "\n2. score (model \"{}\", as of {})",
        s.model,
        s.as_of.format("%Y-%m-%d %H:%M UTC")
    );
    println!(
        "   red {} ({:.0}%)   amber {} ({:.0}%)   green {} ({:.0}%)   not scored {}",
        d.red,
        d.red as f64 / scored * 100.0,
        d.amber,
        d.amber as f64 / scored * 100.0,
        d.green,
        d.green as f64 / scored * 100.0,
        d.not_scored
    );
    println!("   five lowest scores, with the input that costs each the most:");
    for a in &s.worst {
        println!(
            "     {:<28} {:>4} {:<6} {}",
            a.name,
            super::fmt_score(a.overall),
            a.band.map(|b| b.name()).unwrap_or("-"),
            a.most_costly_input.as_deref().unwrap_or("-")
        );
    }
    let r = &s.delivery;
    println!("\n3. push to the CS platform (simulated Vitally)");
    println!(
        "   planned {} field update(s) and {} project(s)",
        s.planned_field_writes, s.planned_projects
    );
    println!(
        "   delivered {} write(s): {} projects created, {} already present, {} to retry, {} dead-lettered",
        r.applied + r.already_present,
        r.projects_created,
        r.already_present,
        r.transient_failures,
        r.dead_lettered
    );
    let recv: Vec<String> = s
        .platform_received
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    println!(
        "   the platform received: {}",
        if recv.is_empty() {
            "nothing".to_string()
        } else {
            recv.join(", ")
        }
    );
}

fn print_backtest(b: &crate::backtest::Backtest) {
    use super::backtest::{auc, pct};
    println!(
        "\n4. backtest ({} weekly scoring dates; {} accounts churned in the simulated billing history)",
        b.dates.len(),
        b.churn_events
    );
    if let Some(overall) = b.signals.first() {
        let cells: Vec<String> = overall.auc.iter().map(|a| auc(*a)).collect();
        println!(
            "   AUC of the overall score for churn within 30 / 60 / 90 days: {}",
            cells.join(" / ")
        );
    }
    let rates: Vec<String> = b
        .bands
        .iter()
        .map(|x| format!("{} {}", x.band.name(), pct(x.churn_rate)))
        .collect();
    println!(
        "   churn within {} days: {}",
        b.primary_horizon,
        rates.join(", ")
    );
    if let Some(s) = &b.suggestion {
        println!(
            "   suggested weights ({}-day churn, fitted on earlier dates, tested on later ones): held-out AUC {} → {}",
            s.horizon,
            auc(s.configured_auc),
            auc(s.suggested_auc)
        );
        if let Some(c) = &s.caveat {
            println!("   note: {c}");
        }
    }
    if !b.warnings.is_empty() {
        println!(
            "   {} warning(s) about the data: `healthsync backtest` lists them",
            b.warnings.len()
        );
    }
}

/// `healthsync sim`: serve the simulated APIs until stopped, optionally writing a config that uses them.
pub async fn serve_sim(
    accounts: usize,
    seed: u64,
    config_out: Option<PathBuf>,
    fast: bool,
) -> anyhow::Result<()> {
    // The vendors' real quotas by default; `--fast` lifts them as the demo does.
    let limits = if fast {
        SimRateLimits::demo()
    } else {
        SimRateLimits::default()
    };
    let sim = sim::start(SimOptions {
        accounts,
        seed,
        now: sim_now(),
        rate_limits: limits,
    })
    .await
    .context("cannot start the simulator")?;
    println!(
        "simulated APIs for {accounts} accounts (seed {seed}) at http://{}",
        sim.addr()
    );
    for spec in sim::VENDORS.iter().filter(|s| s.listed) {
        println!("  {:<8} {}", spec.name, sim.base_url(spec.vendor));
    }
    println!("  received writes: http://{}/_sim/received", sim.addr());
    if let Some(dir) = config_out {
        let path = write_config(&dir, &sim, &limits)?;
        println!(
            "config written: {} (try: healthsync --config {} once)",
            path.display(),
            path.display()
        );
    }
    println!("Ctrl-C stops the simulator");
    crate::daemon::wait_for_stop_signal().await;
    sim.shutdown().await;
    Ok(())
}
