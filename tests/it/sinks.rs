//! The pipeline in-process against the simulator with a CS platform other than Vitally as the sink (Planhat,
//! Gainsight, Totango, ClientSuccess, CustomerSuccessBox): the shipped connector file pointed at the simulator, sync → score → plan → push,
//! every planned write applied and visible in the simulated platform's state, then a rerun that sends
//! nothing. The demo's own sink stays Vitally; this swaps it only in a throwaway config.

use std::path::Path;

use chrono::{TimeZone, Utc};
use healthsync::config;
use healthsync::pipeline::Runtime;
use healthsync::sim::{self, SimHandle, SimOptions, SimRateLimits, Vendor};
use healthsync::store::Store;
use healthsync::sync::SyncOptions;
use serde_json::Value;
use tokio::sync::watch;

const ACCOUNTS: usize = 60;

/// Replaces the Vitally sink of the demo config in `dir` with the shipped `connectors/<kind>.toml`, pointed
/// at the simulator with its credential in a `file:` secret.
fn swap_sink(dir: &Path, sim: &SimHandle, kind: &str, vendor: Vendor, token: &str) {
    std::fs::remove_file(dir.join("connectors/vitally.toml")).unwrap();
    let shipped = crate::support::repo().join(format!("connectors/{kind}.toml"));
    let mut table: toml::Table =
        toml::from_str(&std::fs::read_to_string(shipped).unwrap()).unwrap();
    let base = sim.base_url(vendor);
    table.insert("base_url".into(), base.clone().into());
    // Shipped disabled (the shipped config writes to Vitally); this test turns it on.
    table.insert("enabled".into(), true.into());
    let secret = dir.join(format!("secrets/{kind}"));
    std::fs::write(&secret, token).unwrap();
    let auth = table
        .get_mut("auth")
        .and_then(|a| a.as_table_mut())
        .unwrap();
    let secret_ref = format!("file:{}", secret.display());
    match kind {
        // Basic-auth sinks: ClientSuccess logs in with an email and a password; CustomerSuccessBox takes its
        // secret key as the Basic username.
        "clientsuccess" => {
            let password = dir.join("secrets/clientsuccess_password");
            std::fs::write(&password, sim::clientsuccess::PASSWORD).unwrap();
            auth.insert("username".into(), secret_ref.into());
            auth.insert(
                "password".into(),
                format!("file:{}", password.display()).into(),
            );
        }
        "customersuccessbox" => {
            auth.insert("username".into(), secret_ref.into());
        }
        _ => {
            auth.insert("token".into(), secret_ref.into());
        }
    }
    let mut rl = toml::Table::new();
    rl.insert("requests".into(), 30_000.into());
    rl.insert("per_secs".into(), 60.into());
    table.insert("rate_limit".into(), rl.into());
    if let Some(params) = table.get_mut("params").and_then(|p| p.as_table_mut()) {
        if kind == "totango" {
            params.insert("collector_url".into(), base.into());
            params.insert("service_id".into(), sim::totango::SERVICE_ID.into());
        }
    }
    let path = dir.join(format!("connectors/{kind}.toml"));
    std::fs::write(path, toml::to_string(&table).unwrap()).unwrap();
}

async fn state(sim: &SimHandle, kind: &str) -> Value {
    let url = format!("http://{}/_sim/state/{kind}", sim.addr());
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// The simulator and a runtime whose sink is the shipped `connectors/<kind>.toml`, synced; the temp dir
/// holds the config and the store.
async fn synced(
    kind: &str,
    vendor: Vendor,
    token: &str,
) -> (SimHandle, Runtime, tempfile::TempDir, chrono::DateTime<Utc>) {
    let now = Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap();
    let limits = SimRateLimits::default()
        .with(Vendor::Hubspot, 1000)
        .with(Vendor::Stripe, 500)
        .with(Vendor::Usage, 30_000);
    let opts = SimOptions {
        accounts: ACCOUNTS,
        seed: 11,
        now,
        rate_limits: limits
            .with(Vendor::Planhat, 30_000)
            .with(Vendor::Gainsight, 30_000)
            .with(Vendor::Totango, 30_000)
            .with(Vendor::ClientSuccess, 30_000)
            .with(Vendor::CustomerSuccessBox, 30_000),
    };
    let sim = sim::start(opts).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = healthsync::cli::demo::write_config(dir.path(), &sim, &limits).unwrap();
    swap_sink(dir.path(), &sim, kind, vendor, token);
    let cfg = config::load(&path, &healthsync::connector::kinds::catalog())
        .unwrap_or_else(|e| panic!("{:?}", e.0));
    let store = Store::open(&cfg.daemon.state_dir).unwrap();
    let rt = Runtime::build(cfg, store);
    assert!(rt.build_errors.is_empty(), "{:?}", rt.build_errors);
    let (_tx, shutdown) = watch::channel(false);
    let ids = rt.select_sources(&[]).unwrap();
    let opts = SyncOptions::default();
    rt.sync(&ids, &opts, &shutdown, &|_, _, _| {})
        .await
        .unwrap();
    (sim, rt, dir, now)
}

/// Runs the pipeline twice with `kind` as the sink; returns the platform's state after the first push and
/// the number of projects planned.
async fn run_twice(kind: &str, vendor: Vendor, token: &str) -> (SimHandle, Value, usize) {
    let (sim, rt, _dir, now) = synced(kind, vendor, token).await;
    let (_tx, shutdown) = watch::channel(false);
    let ids = rt.select_sources(&[]).unwrap();
    let opts = SyncOptions::default();
    let run = rt.score(now).unwrap();
    let plan = rt.plan(&run.scores, now).unwrap();
    assert_eq!(
        plan.field_writes(),
        ACCOUNTS,
        "first run writes every account once"
    );
    rt.enqueue(&plan, now).unwrap();
    let report = rt.push(&shutdown, now, &|_, _| {}).await.unwrap();
    assert_eq!(report.applied, plan.writes.len(), "{kind}: {report:?}");
    assert_eq!(
        (report.remaining, report.dead_lettered),
        (0, 0),
        "{kind}: {report:?}"
    );
    let first = state(&sim, kind).await;
    let sent = sim.received().len();

    rt.sync(&ids, &opts, &shutdown, &|_, _, _| {})
        .await
        .unwrap();
    let run2 = rt.score(now).unwrap();
    let plan2 = rt.plan(&run2.scores, now).unwrap();
    assert!(
        plan2.writes.is_empty(),
        "{kind}: unchanged inputs planned writes"
    );
    rt.enqueue(&plan2, now).unwrap();
    rt.push(&shutdown, now, &|_, _| {}).await.unwrap();
    assert_eq!(
        sim.received().len(),
        sent,
        "{kind}: a rerun with no change must send nothing"
    );
    (sim, first, plan.projects())
}

fn count_with(list: &Value, field: &str) -> usize {
    let items = list.as_array().unwrap();
    items
        .iter()
        .filter(|x| x.get(field).is_some_and(|v| !v.is_null()))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planhat_receives_every_field_and_project_once() {
    let (sim, st, projects) = run_twice("planhat", Vendor::Planhat, sim::planhat::API_TOKEN).await;
    let companies = st["companies"].as_array().unwrap();
    let scored = companies
        .iter()
        .filter(|c| c["custom"].get("Health Score (healthsync)").is_some());
    assert_eq!(scored.count(), ACCOUNTS);
    assert!(projects > 0, "the seed should open some projects");
    assert_eq!(st["projects"].as_array().unwrap().len(), projects);
    assert_eq!(count_with(&st["projects"], "externalId"), projects);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gainsight_receives_every_field_and_cta_once() {
    let (sim, st, projects) =
        run_twice("gainsight", Vendor::Gainsight, sim::gainsight::ACCESS_KEY).await;
    assert_eq!(
        count_with(&st["companies"], "Healthsync_Score__gc"),
        ACCOUNTS
    );
    assert!(projects > 0);
    assert_eq!(count_with(&st["ctas"], "Healthsync_Key__gc"), projects);
    // Batching (50 records per Company API call) is the sink's `deliver_batch`; whether a push uses it is
    // the outbox's business, so the number of calls is not asserted here.
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totango_receives_every_attribute_and_project_once() {
    let (sim, st, projects) = run_twice("totango", Vendor::Totango, sim::totango::APP_TOKEN).await;
    let accounts = st["accounts"].as_object().unwrap();
    let scored = accounts
        .values()
        .filter(|a| a.get("Healthsync Score").is_some())
        .count();
    assert_eq!(scored, ACCOUNTS);
    assert_eq!(
        accounts.len(),
        ACCOUNTS,
        "no account was created by mistake"
    );
    assert!(projects > 0);
    assert_eq!(st["touchpoints"].as_array().unwrap().len(), projects);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clientsuccess_receives_every_custom_field_and_to_do_once() {
    let (sim, st, projects) = run_twice(
        "clientsuccess",
        Vendor::ClientSuccess,
        sim::clientsuccess::EMAIL,
    )
    .await;
    let clients = st["clients"].as_array().unwrap();
    let scored = clients
        .iter()
        .filter(|c| c["custom"].get("Health Score").is_some())
        .count();
    assert_eq!(scored, ACCOUNTS);
    assert!(projects > 0);
    // Every project became its to-dos, each named with the project's key; no key twice per task.
    let names: Vec<&str> = st["todos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    let keys: std::collections::BTreeSet<&str> = names
        .iter()
        .filter_map(|n| n.rsplit_once(" [")?.1.split_once("/task-").map(|(k, _)| k))
        .collect();
    assert_eq!(keys.len(), projects);
    let unique: std::collections::BTreeSet<&&str> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "a to-do was created twice");
    assert_eq!(st["logins"], 1, "one login served the whole run");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customersuccessbox_receives_every_attribute_and_playbook_once() {
    let (sim, st, projects) = run_twice(
        "customersuccessbox",
        Vendor::CustomerSuccessBox,
        sim::customersuccessbox::SECRET_KEY,
    )
    .await;
    let accounts = st["accounts"].as_object().unwrap();
    let scored = accounts
        .values()
        .filter(|a| a.get("Health Score").is_some())
        .count();
    assert_eq!(scored, ACCOUNTS);
    assert_eq!(
        st["created"],
        serde_json::json!([]),
        "no account was created"
    );
    assert!(projects > 0);
    let playbooks = accounts
        .values()
        .flat_map(|a| a.as_object().unwrap().keys())
        .filter(|k| k.starts_with("Healthsync Playbook ") && !k.ends_with(" Tasks"))
        .count();
    assert_eq!(playbooks, projects);
    sim.shutdown().await;
}

/// A crash after every write reached the platform but before the outbox recorded any: the writes are
/// delivered straight through a second instance of the sink, then the outbox pushes them all again.
/// Nothing may exist twice and nothing is dead-lettered.
async fn resend_after_crash(
    kind: &str,
    vendor: Vendor,
    token: &str,
) -> (SimHandle, Value, Value, usize) {
    let (sim, rt, _dir, now) = synced(kind, vendor, token).await;
    let run = rt.score(now).unwrap();
    let plan = rt.plan(&run.scores, now).unwrap();
    assert!(plan.projects() > 0);
    let c = rt
        .config
        .connectors
        .iter()
        .find(|c| c.kind == kind)
        .unwrap();
    let secrets = healthsync::secrets::ResolvedSecrets::resolve(&c.auth).unwrap();
    let spec = healthsync::connector::kind(kind).unwrap();
    let ctx = healthsync::connector::BuildContext {
        connector: c,
        secrets: &secrets,
    };
    let Ok(healthsync::connector::Built::Sink(first_attempt)) = spec.build(&ctx) else {
        panic!("{kind} did not build as a sink");
    };
    for w in &plan.writes {
        first_attempt.deliver(&w.op).await.unwrap();
    }
    let before = state(&sim, kind).await;
    rt.enqueue(&plan, now).unwrap();
    let (_tx, shutdown) = watch::channel(false);
    let report = rt.push(&shutdown, now, &|_, _| {}).await.unwrap();
    assert_eq!(
        report.applied + report.already_present,
        plan.writes.len(),
        "{kind}: {report:?}"
    );
    assert_eq!(
        (report.remaining, report.dead_lettered),
        (0, 0),
        "{kind}: {report:?}"
    );
    let after = state(&sim, kind).await;
    (sim, before, after, report.already_present)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clientsuccess_resend_after_a_crash_creates_no_second_to_do() {
    let (sim, before, after, already) = resend_after_crash(
        "clientsuccess",
        Vendor::ClientSuccess,
        sim::clientsuccess::EMAIL,
    )
    .await;
    assert_eq!(after["todos"], before["todos"]);
    assert!(already > 0, "the resent projects were found, not created");
    assert_eq!(after["clients"], before["clients"]);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customersuccessbox_resend_after_a_crash_changes_nothing() {
    let (sim, before, after, _) = resend_after_crash(
        "customersuccessbox",
        Vendor::CustomerSuccessBox,
        sim::customersuccessbox::SECRET_KEY,
    )
    .await;
    assert_eq!(after, before);
    sim.shutdown().await;
}
