//! Sources whose vendors have no plain "updated since" list, against the simulator through the shipped
//! connector files. HubSpot: every contact, deal and engagement lands with the company the simulator
//! associated it with, over several pages, and the next run searches incrementally and finds nothing
//! changed. Stripe: the next run reads the events API from when the full list began
//! instead of listing again (the kind's unit tests cover re-reading the objects events name).

use std::collections::HashMap;

use chrono::{TimeZone, Utc};
use healthsync::config;
use healthsync::pipeline::Runtime;
use healthsync::sim::{self, SimOptions, SimRateLimits};
use healthsync::store::Store;
use healthsync::sync::SyncOptions;
use tokio::sync::watch;

const STREAMS: [&str; 6] = [
    "companies",
    "contacts",
    "deals",
    "meetings",
    "calls",
    "emails",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_objects_join_their_companies_and_resync_incrementally() {
    let now = Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap();
    let sim = sim::start(SimOptions {
        accounts: 150,
        seed: 9,
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
    let rt = Runtime::build(cfg, Store::open(&dir.path().join("state")).unwrap());
    let (_tx, shutdown) = watch::channel(false);
    let ids = vec!["hubspot".to_string()];
    let first = rt
        .sync(&ids, &SyncOptions::default(), &shutdown, &|_, _, _| {})
        .await
        .unwrap();
    assert!(first[0].ok(), "{:?}", first[0]);
    let synced: Vec<&str> = first[0].streams.iter().map(|s| s.stream.as_str()).collect();
    assert_eq!(synced, STREAMS);

    // The simulator's truth: which company each object belongs to, by object type.
    let base = sim.base_url(sim::Vendor::Hubspot);
    let client = reqwest::Client::new();
    let companies: Vec<String> = sim
        .world()
        .accounts
        .iter()
        .map(|a| a.hubspot_id.clone())
        .collect();
    for s in &first[0].streams {
        let records: Vec<_> = rt
            .store
            .records("hubspot", &s.stream)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(
            s.pages >= 2,
            "{} fits one page ({} records)",
            s.stream,
            records.len()
        );
        assert_eq!(records.len(), s.records, "{}", s.stream);
        if s.stream == "companies" {
            continue;
        }
        let truth: HashMap<String, String> = {
            let inputs: Vec<_> = records
                .iter()
                .map(|r| serde_json::json!({"id": r.id}))
                .collect();
            let url = format!(
                "{base}/crm/v4/associations/{}/companies/batch/read",
                s.stream
            );
            let mut truth = HashMap::new();
            for chunk in inputs.chunks(1000) {
                let body: serde_json::Value = client
                    .post(&url)
                    .bearer_auth(sim::Vendor::Hubspot.credential())
                    .json(&serde_json::json!({ "inputs": chunk }))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                for r in body["results"].as_array().unwrap() {
                    truth.insert(
                        r["from"]["id"].as_str().unwrap().to_string(),
                        r["to"][0]["toObjectId"].to_string(),
                    );
                }
            }
            truth
        };
        for r in &records {
            let crm = r.account_keys.get("crm_id");
            assert_eq!(
                crm,
                truth.get(&r.id),
                "{} {} joined the wrong company",
                s.stream,
                r.id
            );
            assert!(companies.contains(crm.unwrap()), "{} {}", s.stream, r.id);
        }
    }

    // The second run searches from each stream's high-water mark: nothing has changed in the simulator,
    // so it fetches at most the lookback window and stores nothing new.
    let second = rt
        .sync(&ids, &SyncOptions::default(), &shutdown, &|_, _, _| {})
        .await
        .unwrap();
    for (a, b) in first[0].streams.iter().zip(&second[0].streams) {
        assert!(b.error.is_none(), "{b:?}");
        assert_eq!(b.changed, 0, "{}", b.stream);
        assert!(
            b.records < a.records / 2,
            "{} re-listed: {} of {}",
            b.stream,
            b.records,
            a.records
        );
        assert_eq!(b.stored, a.stored);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_reads_changes_from_events_after_the_first_full_list() {
    let now = Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap();
    let sim = sim::start(SimOptions {
        accounts: 300,
        seed: 4,
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
    let rt = Runtime::build(cfg, Store::open(&dir.path().join("state")).unwrap());
    let (_tx, shutdown) = watch::channel(false);
    let ids = vec!["stripe".to_string()];
    let options = SyncOptions::default();
    let sync = || rt.sync(&ids, &options, &shutdown, &|_, _, _| {});
    let first = sync().await.unwrap();
    assert!(first[0].ok(), "{:?}", first[0]);
    let second = sync().await.unwrap();
    assert!(second[0].ok(), "{:?}", second[0]);
    for (a, b) in first[0].streams.iter().zip(&second[0].streams) {
        assert!(a.pages >= 3, "{}: {} pages", a.stream, a.pages);
        assert_eq!(b.changed, 0, "{}", b.stream);
        // One page of events, none since the list began (the simulated history ends before it).
        assert_eq!((b.pages, b.records), (1, 0), "{} re-listed", b.stream);
        assert_eq!(b.stored, a.stored, "{}", b.stream);
    }
}
