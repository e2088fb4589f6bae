//! Tests of the `totango` sink: the pixel and REST shapes against wiremock, idempotent projects and closing
//! touchpoints against the simulator.

use super::*;
use crate::connector::Sink;
use crate::connector::kinds::sink_testkit::*;
use crate::http::ManualClock;
use crate::sim::totango::{APP_TOKEN, SERVICE_ID};
use crate::sim::{SimHandle, SimRateLimits, Vendor};
use std::time::Duration;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "tt_secret_app_token";

fn settings(collector: &str) -> Settings {
    let t: toml::Table = toml::from_str(&format!(
        "service_id = \"{SERVICE_ID}\"\ncollector_url = \"{collector}\"\nactivity_type_id = \"health_risk\""
    ))
    .unwrap();
    Settings::from_params(&t).unwrap()
}

fn sink_at(base: &str, token: &str) -> (Totango, Arc<ManualClock>) {
    let (cfg, s) = sink_config(
        "totango",
        base,
        AuthScheme::ApiKeyHeader,
        Some("app-token"),
        token,
    );
    let (api, clock) = client(&cfg, &s, None);
    let (collector, _) = client(&cfg, &s, None);
    let collector = collector.with_clock(clock.clone());
    (
        Totango::new(api, collector, settings(base), clock.clone()),
        clock,
    )
}

fn sink(server: &MockServer) -> (Totango, Arc<ManualClock>) {
    sink_at(&format!("{}/totango", server.uri()), TOKEN)
}

async fn sim() -> (SimHandle, Totango) {
    let sim = crate::sim::test_support::start_sim(3, SimRateLimits::unlimited()).await;
    let (sink, _) = sink_at(&sim.base_url(Vendor::Totango), APP_TOKEN);
    (sim, sink)
}

async fn sim_state(sim: &SimHandle) -> Value {
    let url = format!("http://{}/_sim/state/totango", sim.addr());
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

fn gif() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(b"GIF89a".to_vec(), "image/gif")
}

#[tokio::test]
async fn set_fields_sends_exactly_the_mapped_attributes_on_the_pixel() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/totango/pixel.gif/"))
        .and(query_param("sdr_s", SERVICE_ID))
        .and(query_param("sdr_o", "101"))
        .and(query_param("sdr_o.account_name", "Company 101"))
        .and(query_param("sdr_o.Healthsync Score", "41.5"))
        .and(query_param("sdr_o.Healthsync Band", "red"))
        .and(query_param("sdr_o.Healthsync Top Risk", ""))
        .respond_with(gif())
        .expect(1)
        .mount(&server)
        .await;
    let (sink, _) = sink(&server);
    let op = set_fields(
        "101",
        &[
            ("Healthsync Score", num(41.5)),
            ("Healthsync Band", text("red")),
            ("Healthsync Top Risk", FieldValue::Null),
        ],
    );
    assert_eq!(sink.deliver(&op).await.unwrap(), Delivered::Applied);
    let req = &server.received_requests().await.unwrap()[0];
    assert_eq!(
        req.url.query_pairs().count(),
        6,
        "nothing but the mapped fields: {}",
        req.url
    );
    assert_auth_on_every_request(&server, "app-token", TOKEN, TOKEN).await;
}

#[tokio::test]
async fn a_batch_lands_its_good_items_and_reports_the_refused_one() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(query_param("sdr_o", "bad"))
        .respond_with(ResponseTemplate::new(400).set_body_string("Malformed attribute name"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(gif())
        .expect(2)
        .mount(&server)
        .await;
    let (sink, _) = sink(&server);
    assert_eq!(sink.batch_size(), 1, "the pixel takes one account per call");
    let ops = vec![
        set_fields("101", &[("A", num(1.0))]),
        set_fields("bad", &[("A", num(2.0))]),
        set_fields("103", &[("A", num(3.0))]),
    ];
    let results = sink.deliver_batch(&ops).await;
    assert_eq!(results[0].as_ref().unwrap(), &Delivered::Applied);
    assert_eq!(results[2].as_ref().unwrap(), &Delivered::Applied);
    match &results[1] {
        Err(DeliveryError::Rejected(m)) => assert!(m.contains("Malformed attribute name"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn project_is_a_touchpoint_and_tasks_created_once() {
    let (sim, sink) = sim().await;
    let ext = sim.world().accounts[0].hubspot_id.clone();
    let op = project_op(&ext, KEY);
    assert_eq!(sink.deliver(&op).await.unwrap(), Delivered::Applied);
    assert_eq!(sink.deliver(&op).await.unwrap(), Delivered::AlreadyPresent);
    let state = sim_state(&sim).await;
    let tps = state["touchpoints"].as_array().unwrap();
    assert_eq!(tps.len(), 1);
    assert_eq!(tps[0]["subject"], "Poor Health: usage");
    assert_eq!(
        tps[0]["content"],
        format!("Usage dropped\n- Call champion (due 2026-11-30)\n- Exec sponsor (due 2026-11-23)\nhealthsync key: {KEY}")
    );
    let tasks = state["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2);
    assert_eq!(tasks[0]["title"], "Poor Health: usage: Call champion");
    assert_eq!(
        (tasks[0]["due_date"].as_str(), tasks[0]["status"].as_str()),
        (Some("2026-11-30"), Some("open"))
    );
    assert_eq!(tasks[0]["activity_type_id"], "health_risk");
    let posts = sim
        .received()
        .iter()
        .filter(|r| r.path.starts_with("/totango/api/v3/"))
        .count();
    assert_eq!(posts, 3, "one touchpoint, two tasks, nothing on the resend");

    let close = close_op(&ext, KEY);
    assert_eq!(sink.deliver(&close).await.unwrap(), Delivered::Applied);
    assert_eq!(
        sink.deliver(&close).await.unwrap(),
        Delivered::AlreadyPresent
    );
    let state = sim_state(&sim).await;
    let tps = state["touchpoints"].as_array().unwrap();
    assert_eq!(tps.len(), 2);
    assert_eq!(tps[1]["subject"], "Resolved: Poor Health: usage");
    assert_eq!(
        tps[1]["content"],
        format!("Company {ext} recovered\nhealthsync key: {KEY}/closed")
    );

    let err = sink
        .deliver(&project_op("no-such-account", "k:1"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DeliveryError::Rejected(m) if m.contains("Account not found")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_429_storm_on_the_api_is_waited_out() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/totango/api/v2/events/search"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "2")
                .set_body_json(json!({"error": "Rate limit exceeded"})),
        )
        .up_to_n_times(3)
        .expect(3)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/totango/api/v2/events/search"))
        .and(query_param("account_id", "101"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"response": {"events": {"hits": []}}})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/totango/api/v3/touchpoints/"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "tp-1"})))
        .expect(1)
        .mount(&server)
        .await;
    let (sink, clock) = sink(&server);
    assert_eq!(
        sink.deliver(&close_op("101", KEY)).await.unwrap(),
        Delivered::Applied
    );
    assert_eq!(clock.sleeps(), vec![Duration::from_secs(2); 3]);
    assert_auth_on_every_request(&server, "app-token", TOKEN, TOKEN).await;
}

#[tokio::test]
async fn a_gateway_that_keeps_failing_is_transient_and_names_no_secret() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(502))
        .expect(6)
        .mount(&server)
        .await;
    let (sink, _) = sink(&server);
    let err = sink.deliver(&set_fields("101", &[])).await.unwrap_err();
    assert!(matches!(err, DeliveryError::Transient(_)), "{err:?}");
    assert_no_secret(&err.to_string(), TOKEN);
}

#[test]
fn params_need_a_service_id_and_a_flow() {
    let err = (SPEC.parse_params)(&toml::Table::new()).unwrap_err();
    assert!(err.contains("service_id"), "{err}");
    let t: toml::Table = toml::from_str("service_id = \"SP-1\"").unwrap();
    assert!((SPEC.parse_params)(&t)
        .unwrap_err()
        .contains("activity_type_id"));
    let t: toml::Table = toml::from_str(
        "service_id = \"SP-1\"\nactivity_type_id = \"x\"\ncollector_url = \"not a url\"",
    )
    .unwrap();
    assert!((SPEC.parse_params)(&t).unwrap_err().contains("collector_url"));
    assert_eq!(
        settings("https://sdr.totango.com").collector_url.as_str(),
        "https://sdr.totango.com/"
    );
}
