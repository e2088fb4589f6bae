//! Source-side figures for the connector issue: how close to a vendor's real quota the HTTP engine runs, and
//! how fast and in how much memory healthsync parses and stores records. A bench binary that prints figures.
//!
//! Run: `cargo bench --bench sources -- quota` (about 70 s: two runs of three HubSpot windows) and
//! `cargo bench --bench sources -- throughput 2000 10000 30000` (account counts).
//!
//! `quota`: the simulator enforces HubSpot's 100 requests per rolling 10 s; the HubSpot connector (page size
//! 10) syncs 3,001 companies, i.e. 301 requests. Once with the quota known to the client (`rate_limit` 100
//! per 10 s) and once with the client's limit far above it (1,000 per 10 s). Requests and 429s are counted by
//! the simulator as they arrive. The achieved rate is phase-free: 300 requests (three full quotas) divided
//! by the time from the first request to the 301st. Then a vendor that reports no quota at all: Stripe
//! (1,001 accounts, page size 10, about 750 requests) against a simulated 25 per second, the client at 1,000.
//!
//! `throughput`: the simulator runs in a child process (this binary with `--serve-sim`), rate limits lifted,
//! so this process holds only healthsync's side: every source syncs into a fresh sled store. Records per
//! CPU-second of this process (user + system, every thread) is the per-core rate; peak RSS (`VmHWM`, reset
//! before each size) shows whether memory grows with the number of records. Each size is then synced again
//! with `--full` semantics (cursors forgotten): the same records fetched and parsed again and found
//! unchanged, the cost of a lookback window or a full refresh; and read back, as scoring reads it
//! (`PHASES=sync` stops after the first sync, for profiles and A/B runs).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveTime, Utc};
use healthsync::pipeline::Runtime;
use healthsync::sim::{self, SimOptions, SimRateLimits, Vendor};
use healthsync::store::Store;
use healthsync::sync::SyncOptions;
use tokio::sync::watch;

/// The simulated world ends at today's midnight: the connectors run on the real clock, and a date-windowed
/// export (Mixpanel asks for the last `backfill_days`) would find nothing in a world fixed in the past.
fn now() -> DateTime<Utc> {
    Utc::now().date_naive().and_time(NaiveTime::MIN).and_utc()
}

/// Rate limits nobody reaches (the same as benches/pipeline.rs).
fn lifted() -> SimRateLimits {
    let mut limits = SimRateLimits::unlimited();
    for vendor in [
        Vendor::Hubspot,
        Vendor::Stripe,
        Vendor::Usage,
        Vendor::Vitally,
        Vendor::Chargebee,
        Vendor::Mixpanel,
        Vendor::Zendesk,
        Vendor::Intercom,
        Vendor::Freshdesk,
        Vendor::Delighted,
    ] {
        limits.set(vendor, 1_000_000);
    }
    // The connector accepts at most 1,000 (its incremental export budget is a param).
    limits.zendesk_incremental_per_min = 1000;
    limits
}

/// Sets `key = value` in `connectors/<id>.toml` of a written config.
fn set_param(dir: &Path, id: &str, key: &str, value: toml::Value) {
    let path = dir.join("connectors").join(format!("{id}.toml"));
    let text = std::fs::read_to_string(&path).expect("connector file");
    let mut table: toml::Table = toml::from_str(&text).expect("connector toml");
    table.insert(key.into(), value);
    std::fs::write(&path, toml::to_string(&table).expect("toml")).expect("write connector");
}

fn proc_status_kib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(field)).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .unwrap_or(0.0)
}

/// Bytes this process has passed to `write` and friends so far (`wchar` of `/proc/self/io`): sled's log
/// writes, including every leaf it rewrites, so the store's write amplification shows next to its CPU.
fn bytes_written() -> f64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("wchar:"))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0)
}

/// CPU time of this process, every thread, user + system (from `/proc/self/stat`, in clock ticks of 10 ms).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the stat line: 12 and 13 after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

/// A simulator with `sim_limits`, and one source of its config (`connector`, page size 10, its params as
/// `tweak` leaves them) in a fresh store with `client_limits`: the setup both quota runs share.
async fn quota_setup(
    accounts: usize,
    sim_limits: SimRateLimits,
    client_limits: SimRateLimits,
    connector: &str,
    tweak: impl FnOnce(&Path),
) -> (sim::SimHandle, tempfile::TempDir, Runtime, Vec<String>) {
    let sim = sim::start(SimOptions {
        accounts,
        seed: 42,
        now: now(),
        rate_limits: sim_limits,
    })
    .await
    .expect("simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let path =
        healthsync::cli::demo::write_config(dir.path(), &sim, &client_limits).expect("config");
    set_param(dir.path(), connector, "page_size", 10.into());
    tweak(dir.path());
    let cfg = healthsync::config::load(&path, &healthsync::connector::kinds::catalog())
        .expect("valid config");
    let rt = Runtime::build(cfg, Store::open(&dir.path().join("state")).expect("store"));
    let ids = rt
        .select_sources(&[connector.to_string()])
        .expect("the connector");
    (sim, dir, rt, ids)
}

async fn quota_run(label: &str, client_per_10s: u32) {
    let (sim, _dir, rt, ids) = quota_setup(
        3001,
        lifted().with(Vendor::Hubspot, 100),
        lifted().with(Vendor::Hubspot, client_per_10s),
        "hubspot",
        // Companies only: the shipped connector's other five streams would make each run minutes long.
        |dir| {
            set_param(
                dir,
                "hubspot",
                "streams",
                toml::Value::Array(vec!["companies".into()]),
            )
        },
    )
    .await;
    let (_tx, shutdown) = watch::channel(false);
    let t = Instant::now();
    let statuses = rt
        .sync(&ids, &SyncOptions::default(), &shutdown, &|_, _, _| {})
        .await
        .expect("sync");
    let wall = t.elapsed().as_secs_f64();
    let status = &statuses[0];
    let log = sim.hubspot_requests();
    let throttled = log.iter().filter(|(_, t)| *t).count();
    let accepted: Vec<Duration> = log.iter().filter(|(_, t)| !*t).map(|(at, _)| *at).collect();
    let rate = match (accepted.first(), accepted.get(300)) {
        (Some(first), Some(after_three_quotas)) => {
            300.0 / (after_three_quotas.saturating_sub(*first)).as_secs_f64()
        }
        _ => f64::NAN,
    };
    println!(
        "quota {label:<32} | client limit {client_per_10s:>5}/10s | sim 100/10s | requests {:>4} | 429s {throttled:>3} ({:.2} %) | records {:>5} ok {} | achieved {rate:.2} req/s = {:.1} % of quota | wall {wall:.1} s",
        log.len(),
        100.0 * throttled as f64 / log.len().max(1) as f64,
        status.records(),
        status.ok(),
        rate * 10.0,
    );
    if let Some(e) = &status.error {
        println!("  error: {e}");
    }
    for s in &status.streams {
        if let Some(e) = &s.error {
            println!("  stream {}: {e}", s.stream);
        }
    }
    sim.shutdown().await;
}

/// Requests the engine has counted for `connector` so far, all of them and the 429s, from its metrics.
fn client_requests(connector: &str) -> (u64, u64) {
    let text = healthsync::observe::metrics().render();
    let label = format!("connector=\"{connector}\"");
    let (mut all, mut throttled) = (0, 0);
    for line in text
        .lines()
        .filter(|l| l.contains("http_requests_total{") && l.contains(&label))
    {
        let n: u64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
        all += n;
        if line.contains("status=\"429\"") {
            throttled += n;
        }
    }
    (all, throttled)
}

/// A vendor that reports no quota (Stripe sends no rate-limit headers and no `Retry-After`): the simulator
/// allows 25 requests per rolling second, as Stripe's test mode does, and the client is configured far
/// above it. The engine infers a quota from the first 429 (`SendLog::throttled`).
async fn quota_without_headers_run() {
    let (sim, _dir, rt, ids) = quota_setup(
        1001,
        lifted().with(Vendor::Stripe, 25),
        lifted().with(Vendor::Stripe, 1000),
        "stripe",
        |_| {},
    )
    .await;
    let (_tx, shutdown) = watch::channel(false);
    let before = client_requests("stripe");
    let t = Instant::now();
    let statuses = rt
        .sync(&ids, &SyncOptions::default(), &shutdown, &|_, _, _| {})
        .await
        .expect("sync");
    let wall = t.elapsed().as_secs_f64();
    let after = client_requests("stripe");
    let (requests, throttled) = (after.0 - before.0, after.1 - before.1);
    let status = &statuses[0];
    let accepted = requests - throttled;
    println!(
        "quota unknown, no quota headers (Stripe) | client limit 1000/s | sim 25/s | requests {requests:>4} | 429s {throttled:>3} ({:.2} %) | records {:>5} ok {} | {:.2} accepted req/s = {:.1} % of quota | wall {wall:.1} s",
        100.0 * throttled as f64 / requests.max(1) as f64,
        status.records(),
        status.ok(),
        accepted as f64 / wall,
        100.0 * accepted as f64 / wall / 25.0,
    );
    if let Some(e) = &status.error {
        println!("  error: {e}");
    }
    sim.shutdown().await;
}

/// The child: a simulator with lifted limits that writes its config into `dir` and serves until stdin closes.
async fn serve_sim(accounts: usize, dir: &Path) {
    let sim = sim::start(SimOptions {
        accounts,
        seed: 42,
        now: now(),
        rate_limits: lifted(),
    })
    .await
    .expect("simulator");
    healthsync::cli::demo::write_config(dir, &sim, &lifted()).expect("config");
    println!("ready");
    std::io::stdout().flush().expect("stdout");
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await
    .expect("stdin reader");
    sim.shutdown().await;
}

async fn throughput_run(accounts: usize, only: &[String]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(std::env::current_exe().expect("current exe"))
        .arg("--serve-sim")
        .arg(accounts.to_string())
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn simulator child");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("child stdout"))
        .read_line(&mut line)
        .expect("child says ready");
    assert_eq!(line.trim(), "ready", "simulator child did not start");

    let cfg = healthsync::config::load(
        &dir.path().join("healthsync.toml"),
        &healthsync::connector::kinds::catalog(),
    )
    .expect("valid config");
    let rt = Runtime::build(cfg, Store::open(&dir.path().join("state")).expect("store"));
    let (_tx, shutdown) = watch::channel(false);
    let ids = rt.select_sources(only).expect("sources");
    // Reset the peak-RSS mark so each size reports its own peak.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss_before = proc_status_kib("VmRSS:") / 1024.0;
    let (cpu0, written0, t) = (cpu_seconds(), bytes_written(), Instant::now());
    let statuses = rt
        .sync(&ids, &SyncOptions::default(), &shutdown, &|_, _, _| {})
        .await
        .expect("sync");
    let (cpu, wall) = (cpu_seconds() - cpu0, t.elapsed().as_secs_f64());
    let written = bytes_written() - written0;
    let records: usize = statuses.iter().map(|s| s.records()).sum();
    let failed: Vec<String> = statuses
        .iter()
        .filter(|s| !s.ok())
        .map(|s| s.connector.clone())
        .collect();
    println!(
        "throughput {accounts:>6} accounts | {} sources | {records:>8} records | wall {wall:>6.2} s ({:>7.0} rec/s) | client CPU {cpu:>6.2} s ({:>7.0} rec per CPU-second) | written {:>6.0} MiB ({:>5.0} B/rec) | RSS before {rss_before:>5.0} MiB, peak {:>5.0} MiB, after {:>5.0} MiB (anon {:>5.0}, file {:>4.0}){}",
        ids.len(),
        records as f64 / wall,
        records as f64 / cpu.max(0.01),
        written / 1048576.0,
        written / records.max(1) as f64,
        proc_status_kib("VmHWM:") / 1024.0,
        proc_status_kib("VmRSS:") / 1024.0,
        proc_status_kib("RssAnon:") / 1024.0,
        proc_status_kib("RssFile:") / 1024.0,
        if failed.is_empty() { String::new() } else { format!(" | FAILED: {}", failed.join(", ")) },
    );
    for s in &statuses {
        let per: Vec<String> = s
            .streams
            .iter()
            .map(|st| format!("{}={}", st.stream, st.records))
            .collect();
        println!("    {:<10} {}", s.connector, per.join(" "));
    }
    if std::env::var("PHASES").as_deref() == Ok("sync") {
        drop(child.stdin.take());
        let _ = child.wait();
        return;
    }
    // A full refresh of the same data: every record is fetched and parsed again, and found unchanged.
    let (cpu0, t) = (cpu_seconds(), Instant::now());
    let again = rt
        .sync(&ids, &SyncOptions { full: true }, &shutdown, &|_, _, _| {})
        .await
        .expect("refresh");
    let (cpu, wall) = (cpu_seconds() - cpu0, t.elapsed().as_secs_f64());
    let records: usize = again.iter().map(|s| s.records()).sum();
    let changed: usize = again
        .iter()
        .flat_map(|s| &s.streams)
        .map(|st| st.changed)
        .sum();
    println!(
        "refresh    {accounts:>6} accounts | {} sources | {records:>8} records, {changed} changed | wall {wall:>6.2} s ({:>7.0} rec/s) | client CPU {cpu:>6.2} s ({:>7.0} rec per CPU-second) | peak RSS {:>5.0} MiB",
        ids.len(),
        records as f64 / wall,
        records as f64 / cpu.max(0.01),
        proc_status_kib("VmHWM:") / 1024.0,
    );
    // Reading every stream back, as scoring does.
    let (cpu0, t) = (cpu_seconds(), Instant::now());
    let mut read = 0usize;
    for status in &again {
        for st in &status.streams {
            for r in rt
                .store
                .records(&status.connector, &st.stream)
                .expect("records")
            {
                r.expect("record");
                read += 1;
            }
        }
    }
    let (cpu, wall) = (cpu_seconds() - cpu0, t.elapsed().as_secs_f64());
    println!(
        "read back  {accounts:>6} accounts | {read:>8} records | wall {wall:>6.2} s ({:>7.0} rec/s) | client CPU {cpu:>6.2} s ({:>7.0} rec per CPU-second)",
        read as f64 / wall,
        read as f64 / cpu.max(0.01),
    );
    drop(child.stdin.take());
    let _ = child.wait();
}

fn main() {
    // As the binary does.
    healthsync::decline_transparent_huge_pages();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match args.first().map(String::as_str) {
        Some("--serve-sim") => {
            let accounts = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(500);
            let dir = args.get(2).expect("config dir");
            rt.block_on(serve_sim(accounts, Path::new(dir)));
        }
        Some("quota") => {
            rt.block_on(quota_run("quota known to the client", 100));
            rt.block_on(quota_run("quota unknown to the client", 1000));
            rt.block_on(quota_without_headers_run());
        }
        Some("throughput") => {
            let sizes: Vec<usize> = args[1..].iter().filter_map(|a| a.parse().ok()).collect();
            let only: Vec<String> = std::env::var("SOURCES")
                .map(|s| s.split(',').map(str::to_string).collect())
                .unwrap_or_default();
            let sizes = if sizes.is_empty() {
                vec![2000, 10000]
            } else {
                sizes
            };
            for n in sizes {
                rt.block_on(throughput_run(n, &only));
            }
        }
        _ => eprintln!("usage: sources quota | sources throughput [ACCOUNTS...]"),
    }
}
