//! Write-back against the simulated Vitally, through the library: 1,000 accounts going red open exactly
//! 1,000 projects and a rerun opens none; one changed score sends exactly that change; recovery closes the
//! project on the platform (a keyed note, since Vitally cannot complete a project); a dead-lettered write
//! replays idempotently.

use chrono::{TimeZone, Utc};
use healthsync::config::{self, Band, ForEach, Playbook, Target, TaskTemplate};
use healthsync::pipeline::Runtime;
use healthsync::scoring::AccountScore;
use healthsync::sim::{self, SimOptions, SimRateLimits, Vendor};
use healthsync::store::Store;
use serde_json::Value;
use tokio::sync::watch;

fn limits() -> SimRateLimits {
    SimRateLimits::default().with(Vendor::Vitally, 1_000_000)
}

fn score(id: &str, overall: f64, band: Band) -> AccountScore {
    AccountScore::overall_only(
        id,
        overall,
        band,
        Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap(),
    )
}

async fn platform(addr: std::net::SocketAddr) -> Value {
    reqwest::get(format!("http://{addr}/_sim/state"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn count(state: &Value, what: &str) -> usize {
    state[what].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_red_accounts_open_a_thousand_projects_once() {
    let now = Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap();
    let sim = sim::start(SimOptions {
        accounts: 1000,
        seed: 5,
        now,
        rate_limits: limits(),
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = healthsync::cli::demo::write_config(dir.path(), &sim, &limits()).unwrap();
    let mut cfg = config::load(&path, &healthsync::connector::kinds::catalog())
        .unwrap_or_else(|e| panic!("{:?}", e.0));
    cfg.model.playbooks = vec![Playbook {
        id: "overall_red".into(),
        when: Target::Overall,
        enters: Band::Red,
        cooldown_days: 30,
        limit: None,
        drop: None,
        thriving_days: None,
        project: "Poor Health: {{ account.name }}".into(),
        description: "Overall {{ score }}".into(),
        tasks: vec![TaskTemplate {
            name: "Call {{ account.name }}".into(),
            description: "Find out why".into(),
            for_each: ForEach::Once,
            due_days: 3,
        }],
    }];
    let store = Store::open(&cfg.daemon.state_dir).unwrap();
    let rt = Runtime::build(cfg, store);
    let (_tx, shutdown) = watch::channel(false);
    let ids: Vec<String> = platform(sim.addr()).await["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["externalId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 1000);

    let red: Vec<AccountScore> = ids.iter().map(|id| score(id, 30.0, Band::Red)).collect();
    let plan = rt.plan(&red, now).unwrap();
    assert_eq!((plan.field_writes(), plan.projects()), (1000, 1000));
    rt.enqueue(&plan, now).unwrap();
    let report = rt.push(&shutdown, now, &|_, _| {}).await.unwrap();
    assert_eq!(report.projects_created, 1000, "{report:?}");
    assert_eq!(
        (report.dead_lettered, report.remaining),
        (0, 0),
        "{report:?}"
    );
    let state = platform(sim.addr()).await;
    assert_eq!(count(&state, "projects"), 1000);
    assert_eq!(count(&state, "tasks"), 1000);
    let received = reqwest::get(format!("http://{}/_sim/received", sim.addr()))
        .await
        .unwrap()
        .json::<Vec<Value>>()
        .await
        .unwrap()
        .len();

    // A rerun with the same scores plans and sends nothing.
    let again = rt.plan(&red, now).unwrap();
    assert!(
        again.writes.is_empty(),
        "{} writes planned",
        again.writes.len()
    );
    let report = rt.push(&shutdown, now, &|_, _| {}).await.unwrap();
    assert_eq!(report.calls, 0);

    // One account's score moves: exactly one write, carrying only what changed.
    let mut moved = red.clone();
    moved[7] = score(&ids[7], 35.0, Band::Red);
    let plan = rt.plan(&moved, now).unwrap();
    assert_eq!(plan.writes.len(), 1);
    let changed: Vec<&str> = plan.writes[0]
        .changes
        .iter()
        .map(|c| c.field.as_str())
        .collect();
    assert!(
        !changed.is_empty() && !changed.iter().any(|f| f.contains("band")),
        "{changed:?}"
    );
    rt.enqueue(&plan, now).unwrap();
    let report = rt.push(&shutdown, now, &|_, _| {}).await.unwrap();
    assert_eq!(report.applied, 1);
    let log: Vec<Value> = reqwest::get(format!("http://{}/_sim/received", sim.addr()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(log.len(), received + 1);

    // It recovers: the project is closed on the platform with a note, once.
    moved[7] = score(&ids[7], 88.0, Band::Green);
    let plan = rt.plan(&moved, now).unwrap();
    assert_eq!(plan.closures(), 1);
    rt.enqueue(&plan, now).unwrap();
    let report = rt.push(&shutdown, now, &|_, _| {}).await.unwrap();
    assert_eq!(
        (report.projects_closed, report.remaining),
        (1, 0),
        "{report:?}"
    );
    let notes = platform(sim.addr()).await["notes"].clone();
    assert_eq!(notes.as_array().map(Vec::len), Some(1));
    assert!(notes[0]["externalId"]
        .as_str()
        .unwrap()
        .ends_with("/closed"));
    assert!(rt.plan(&moved, now).unwrap().writes.is_empty());
    sim.shutdown().await;
}
