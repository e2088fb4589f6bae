//! The support and survey sources (zendesk, intercom, freshdesk, delighted) against the simulator through
//! the shipped connector files: every record they sync must join a simulated account through its keys
//! (directly by domain, or through a key learned from a joined record, e.g. a CSAT rating's ticket).

use std::collections::{BTreeMap, HashMap};

use chrono::{TimeZone, Utc};
use healthsync::config::{self, AccountsSpec, StreamRef};
use healthsync::pipeline::Runtime;
use healthsync::sim::{self, SimOptions, SimRateLimits, Trajectory};
use healthsync::store::Store;
use healthsync::sync::SyncOptions;
use tokio::sync::watch;

const SOURCES: [(&str, &[&str]); 4] = [
    (
        "zendesk",
        &["organizations", "tickets", "satisfaction_ratings"],
    ),
    ("intercom", &["companies", "conversations"]),
    ("freshdesk", &["companies", "tickets"]),
    ("delighted", &["survey_responses"]),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn support_and_survey_records_all_join_a_simulated_account() {
    let now = Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap();
    let sim = sim::start(SimOptions {
        accounts: 120,
        seed: 5,
        now,
        rate_limits: SimRateLimits::default(),
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path =
        healthsync::cli::demo::write_config(dir.path(), &sim, &SimRateLimits::default()).unwrap();
    let cfg = config::load(&path, &healthsync::connector::kinds::catalog())
        .unwrap_or_else(|e| panic!("{:?}", e.0));
    let store = Store::open(&cfg.daemon.state_dir).unwrap();
    let rt = Runtime::build(cfg, store);
    assert!(rt.build_errors.is_empty(), "{:?}", rt.build_errors);
    let (_tx, shutdown) = watch::channel(false);
    let mut ids = vec!["hubspot".to_string()];
    ids.extend(SOURCES.iter().map(|(c, _)| c.to_string()));
    let statuses = rt
        .sync(&ids, &SyncOptions::default(), &shutdown, &|_, _, _| {})
        .await
        .unwrap();
    for s in &statuses {
        assert!(s.ok(), "{} failed: {:?}", s.connector, s);
        assert!(s.streams.iter().all(|st| st.rejected == 0), "{s:?}");
    }

    let stream = |c: &str, s: &str| StreamRef {
        connector: c.to_string(),
        stream: s.to_string(),
    };
    let read = |c: &str, s: &str| -> Vec<healthsync::vocab::Record> {
        rt.store
            .records(c, s)
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let mut streams = BTreeMap::new();
    streams.insert(stream("hubspot", "companies"), read("hubspot", "companies"));
    let mut synced = 0;
    for (c, names) in SOURCES {
        for s in names {
            let records = read(c, s);
            assert!(!records.is_empty(), "{c}.{s} synced nothing");
            synced += records.len();
            streams.insert(stream(c, s), records);
        }
    }
    let spec = AccountsSpec {
        stream: stream("hubspot", "companies"),
        key: "crm_id".into(),
        name_field: "name".into(),
        stage_field: None,
        segment_field: None,
        owner_field: None,
        stages: vec![],
        segments: vec![],
        segment_bands: vec![],
        links: vec![],
    };
    let resolved = healthsync::identity::resolve(&spec, streams);
    assert!(
        resolved.unmatched.is_empty(),
        "records that join no account: {:?}",
        resolved.unmatched
    );
    let joined: usize = resolved
        .accounts
        .iter()
        .flat_map(|a| a.records.iter())
        .filter(|(s, _)| s.connector != "hubspot")
        .map(|(_, rs)| rs.len())
        .sum();
    assert_eq!(joined, synced);

    // The joined records carry the signal scoring needs: NPS from accounts the simulator knows to be
    // churning is clearly lower than from healthy ones, and their CSAT ratings are more often bad.
    let truth = sim.world().truth();
    let mut nps: HashMap<Trajectory, Vec<f64>> = HashMap::new();
    let mut csat: HashMap<Trajectory, (usize, usize)> = HashMap::new();
    for a in &resolved.accounts {
        let t = truth[&a.account.id].trajectory;
        for (s, rs) in &a.records {
            for r in rs {
                match (s.connector.as_str(), s.stream.as_str()) {
                    ("delighted", _) => nps
                        .entry(t)
                        .or_default()
                        .push(r.fields["score"].as_f64().unwrap()),
                    ("zendesk", "satisfaction_ratings") => {
                        let e = csat.entry(t).or_default();
                        e.0 += usize::from(r.fields["score"] == "bad");
                        e.1 += 1;
                    }
                    _ => {}
                }
            }
        }
    }
    let mean = |t| {
        let v = &nps[&t];
        v.iter().sum::<f64>() / v.len() as f64
    };
    assert!(
        mean(Trajectory::Healthy) > mean(Trajectory::Churning) + 2.0,
        "{nps:?}"
    );
    let bad = |t| csat[&t].0 as f64 / csat[&t].1 as f64;
    assert!(
        bad(Trajectory::Churning) > bad(Trajectory::Healthy),
        "{csat:?}"
    );
    sim.shutdown().await;
}
