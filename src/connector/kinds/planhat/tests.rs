//! Tests of the `planhat` sink: wire shapes against wiremock, and idempotent projects against the simulator.

use super::*;
use crate::connector::Sink;
use crate::connector::kinds::sink_testkit::*;
use crate::http::ManualClock;
use crate::sim::{SimHandle, SimRateLimits, Vendor};
use std::time::Duration;
use wiremock::matchers::{body_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "ph_secret_token";

fn sink_at(base: &str, token: &str) -> (Planhat, Arc<ManualClock>) {
    let (cfg, s) = sink_config("planhat", base, AuthScheme::Bearer, None, token);
    let (http, clock) = client(&cfg, &s, None);
    (Planhat::new(http, clock.clone()), clock)
}

fn sink(server: &MockServer) -> (Planhat, Arc<ManualClock>) {
    sink_at(&format!("{}/planhat", server.uri()), TOKEN)
}

async fn sim() -> (SimHandle, Planhat) {
    let sim = crate::sim::test_support::start_sim(3, SimRateLimits::unlimited()).await;
    let (sink, _) = sink_at(
        &sim.base_url(Vendor::Planhat),
        crate::sim::planhat::API_TOKEN,
    );
    (sim, sink)
}

async fn sim_state(sim: &SimHandle) -> Value {
    let url = format!("http://{}/_sim/state/planhat", sim.addr());
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

fn upsert_reply(status: u16, body: Value) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(body)
}

#[tokio::test]
async fn set_fields_upserts_exactly_the_mapped_custom_fields() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/planhat/companies"))
        .and(body_json(json!([
            {"externalId": "101", "custom": {"Health Band": "red", "Health Score": 41.5}}
        ])))
        .respond_with(upsert_reply(200, json!({
            "created": 0, "createdErrors": [], "insertsKeys": [], "updated": 1, "updatedErrors": [],
            "updatesKeys": [{"_id": "65aa", "externalId": "101"}], "nonupdates": 0, "modified": [],
            "upsertedIds": [], "permissionErrors": [],
        })))
        .expect(1)
        .mount(&server)
        .await;
    let (sink, _) = sink(&server);
    let op = set_fields(
        "101",
        &[("Health Score", num(41.5)), ("Health Band", text("red"))],
    );
    assert_eq!(sink.deliver(&op).await.unwrap(), Delivered::Applied);
    assert_auth_on_every_request(&server, "authorization", &format!("Bearer {TOKEN}"), TOKEN).await;
}

#[tokio::test]
async fn batch_with_per_item_errors_lands_the_good_items() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/planhat/companies"))
        .respond_with(upsert_reply(206, json!({
            "created": 0,
            "createdErrors": [{"item": {"externalId": "103"}, "error": "Company name is required"}],
            "insertsKeys": [],
            "updated": 1,
            "updatedErrors": [{"item": {"externalId": "102", "custom": {"Health Score": "x"}},
                               "error": "Invalid value for Health Score: expected Number"}],
            "updatesKeys": [{"_id": "65aa", "externalId": "101"}],
            "nonupdates": 0, "modified": [], "upsertedIds": [], "permissionErrors": [],
        })))
        .expect(1)
        .mount(&server)
        .await;
    let (sink, _) = sink(&server);
    assert_eq!(sink.batch_size(), 5000);
    let ops = vec![
        set_fields("101", &[("Health Score", num(80.0))]),
        set_fields("102", &[("Health Score", text("x"))]),
        set_fields("103", &[("Health Score", num(12.0))]),
    ];
    let results = sink.deliver_batch(&ops).await;
    assert_eq!(results.len(), 3);
    assert_eq!(results[0].as_ref().unwrap(), &Delivered::Applied);
    match &results[1] {
        Err(DeliveryError::Invalid(m)) => {
            assert!(
                m.contains("account 102") && m.contains("expected Number"),
                "{m}"
            )
        }
        other => panic!("102: {other:?}"),
    }
    match &results[2] {
        Err(DeliveryError::Rejected(m)) => {
            assert!(
                m.contains("account 103") && m.contains("Company name is required"),
                "{m}"
            )
        }
        other => panic!("103: {other:?}"),
    }
}

#[tokio::test]
async fn a_batch_refused_whole_fails_each_item_without_the_secret() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(upsert_reply(
            403,
            json!({"message": "Service account lacks permission"}),
        ))
        .mount(&server)
        .await;
    let (sink, _) = sink(&server);
    let ops = vec![set_fields("101", &[]), set_fields("102", &[])];
    for r in sink.deliver_batch(&ops).await {
        match r {
            Err(DeliveryError::Rejected(m)) => {
                assert!(m.contains("lacks permission"), "{m}");
                assert_no_secret(&m, TOKEN);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_429_storm_is_waited_out_then_lands() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "7")
                .set_body_json(json!({"message": "Too many requests"})),
        )
        .up_to_n_times(3)
        .expect(3)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .respond_with(upsert_reply(200, json!({
            "created": 0, "createdErrors": [], "insertsKeys": [], "updated": 0, "updatedErrors": [],
            "updatesKeys": [], "nonupdates": 1, "modified": [], "upsertedIds": [], "permissionErrors": [],
        })))
        .expect(1)
        .mount(&server)
        .await;
    let (sink, clock) = sink(&server);
    let op = set_fields("101", &[("Health Score", num(1.0))]);
    assert_eq!(sink.deliver(&op).await.unwrap(), Delivered::Applied);
    assert_eq!(clock.sleeps(), vec![Duration::from_secs(7); 3]);
    assert_auth_on_every_request(&server, "authorization", &format!("Bearer {TOKEN}"), TOKEN).await;
}

#[tokio::test]
async fn persistent_5xx_is_transient_and_names_no_secret() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(500).set_body_string("internal error"))
        .expect(6)
        .mount(&server)
        .await;
    let (sink, clock) = sink(&server);
    let err = sink.deliver(&set_fields("101", &[])).await.unwrap_err();
    assert!(matches!(err, DeliveryError::Transient(_)), "{err:?}");
    assert!(err.to_string().contains("http 500"), "{err}");
    assert_no_secret(&err.to_string(), TOKEN);
    assert_eq!(clock.sleeps().len(), 5);
}

#[tokio::test]
async fn project_is_created_once_and_a_resend_finds_it() {
    let (sim, sink) = sim().await;
    let ext = sim.world().accounts[0].hubspot_id.clone();
    let op = project_op(&ext, KEY);
    assert_eq!(sink.deliver(&op).await.unwrap(), Delivered::Applied);
    assert_eq!(sink.deliver(&op).await.unwrap(), Delivered::AlreadyPresent);
    let state = sim_state(&sim).await;
    let projects = state["projects"].as_array().unwrap();
    assert_eq!(projects.len(), 1, "{projects:?}");
    assert_eq!(projects[0]["externalId"], KEY);
    assert_eq!(projects[0]["name"], "Poor Health: usage");
    assert_eq!(projects[0]["custom"]["Description"], "Usage dropped");
    let tasks = state["tasks"].as_array().unwrap();
    let keys: Vec<&str> = tasks
        .iter()
        .map(|t| t["externalId"].as_str().unwrap())
        .collect();
    assert_eq!(keys, [format!("{KEY}/task-1"), format!("{KEY}/task-2")]);
    assert_eq!(tasks[0]["endTime"], "2026-11-30T12:00:00Z");
    assert_eq!(tasks[0]["mainType"], "task");
    let posts = sim.received().iter().filter(|r| r.method == "POST").count();
    assert_eq!(posts, 3, "one project and two tasks, nothing on the resend");
}

#[tokio::test]
async fn close_sets_the_end_date_once() {
    let (sim, sink) = sim().await;
    let ext = sim.world().accounts[1].hubspot_id.clone();
    sink.deliver(&project_op(&ext, KEY)).await.unwrap();
    let close = close_op(&ext, KEY);
    assert_eq!(sink.deliver(&close).await.unwrap(), Delivered::Applied);
    assert_eq!(
        sink.deliver(&close).await.unwrap(),
        Delivered::AlreadyPresent
    );
    let state = sim_state(&sim).await;
    assert_eq!(state["projects"][0]["endDate"], "2026-11-23T12:00:00Z");
    let puts = sim.received().iter().filter(|r| r.method == "PUT").count();
    assert_eq!(puts, 1);
    // A project Planhat no longer has is already closed.
    let gone = close_op(&ext, "101:other:2026-01-01");
    assert_eq!(
        sink.deliver(&gone).await.unwrap(),
        Delivered::AlreadyPresent
    );
}

#[tokio::test]
async fn against_the_simulator_unknown_companies_are_rejected_and_known_ones_land() {
    let (sim, sink) = sim().await;
    let ext = sim.world().accounts[2].hubspot_id.clone();
    let ops = vec![
        set_fields(&ext, &[("Health Score", num(55.0))]),
        set_fields("no-such-company", &[("Health Score", num(1.0))]),
    ];
    let results = sink.deliver_batch(&ops).await;
    assert_eq!(results[0].as_ref().unwrap(), &Delivered::Applied);
    assert!(matches!(&results[1], Err(DeliveryError::Rejected(m)) if m.contains("needs a name")));
    let state = sim_state(&sim).await;
    let company = state["companies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["externalId"] == ext.as_str())
        .cloned()
        .unwrap();
    assert_eq!(company["custom"], json!({"Health Score": 55.0}));
    // An unknown company cannot get a project either.
    let err = sink
        .deliver(&project_op("no-such-company", KEY))
        .await
        .unwrap_err();
    assert!(matches!(err, DeliveryError::Rejected(_)), "{err:?}");
}

#[test]
fn takes_no_params() {
    assert!((SPEC.parse_params)(&toml::Table::new()).is_ok());
    let t: toml::Table = toml::from_str("region = \"us4\"").unwrap();
    assert!((SPEC.parse_params)(&t).is_err());
}
