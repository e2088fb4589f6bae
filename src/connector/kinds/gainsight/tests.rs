//! Tests of the `gainsight` sink: wire shapes against wiremock, per-record refusals and idempotent CTAs
//! against the simulator.

use super::*;
use crate::connector::Sink;
use crate::connector::kinds::sink_testkit::*;
use crate::http::ManualClock;
use crate::sim::gainsight::{ACCESS_KEY, MATCH_FIELD};
use crate::sim::{SimHandle, SimRateLimits, Vendor};
use std::time::Duration;
use wiremock::matchers::{body_json, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY_SECRET: &str = "gs_secret_access_key";

fn settings() -> Settings {
    let t: toml::Table = toml::from_str(&format!("match_field = \"{MATCH_FIELD}\"")).unwrap();
    Settings::from_params(&t).unwrap()
}

fn sink_at(base: &str, secret: &str) -> (Gainsight, Arc<ManualClock>) {
    let (cfg, s) = sink_config(
        "gainsight",
        base,
        AuthScheme::ApiKeyHeader,
        Some("accessKey"),
        secret,
    );
    let (http, clock) = client(&cfg, &s, None);
    (Gainsight::new(http, settings(), clock.clone()), clock)
}

fn sink(server: &MockServer) -> (Gainsight, Arc<ManualClock>) {
    sink_at(&format!("{}/gainsight", server.uri()), KEY_SECRET)
}

async fn sim() -> (SimHandle, Gainsight) {
    let sim = crate::sim::test_support::start_sim(4, SimRateLimits::unlimited()).await;
    let (sink, _) = sink_at(&sim.base_url(Vendor::Gainsight), ACCESS_KEY);
    (sim, sink)
}

async fn sim_state(sim: &SimHandle) -> Value {
    let url = format!("http://{}/_sim/state/gainsight", sim.addr());
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

fn ok_envelope() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "result": true, "errorCode": null, "errorDesc": null, "requestId": "r-1",
        "data": {"count": 1, "records": [{"Gsid": "1P02AA"}]},
    }))
}

#[tokio::test]
async fn set_fields_updates_exactly_the_mapped_company_fields() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/gainsight/v1/data/objects/Company"))
        .and(query_param("keys", MATCH_FIELD))
        .and(body_json(json!({"records": [
            {MATCH_FIELD: "101", "Healthsync_Band__gc": "red", "Healthsync_Score__gc": 41.5}
        ]})))
        .respond_with(ok_envelope())
        .expect(1)
        .mount(&server)
        .await;
    let (sink, _) = sink(&server);
    let op = set_fields(
        "101",
        &[
            ("Healthsync_Score__gc", num(41.5)),
            ("Healthsync_Band__gc", text("red")),
        ],
    );
    assert_eq!(sink.deliver(&op).await.unwrap(), Delivered::Applied);
    assert_auth_on_every_request(&server, "accesskey", KEY_SECRET, KEY_SECRET).await;
}

#[tokio::test]
async fn a_refused_batch_is_split_until_the_bad_records_stand_alone() {
    let (sim, sink) = sim().await;
    let w = sim.world();
    let ext: Vec<String> = w.accounts.iter().map(|a| a.hubspot_id.clone()).collect();
    let ops = vec![
        set_fields(&ext[0], &[("Healthsync_Score__gc", num(80.0))]),
        set_fields(&ext[1], &[("Healthsync_Score__gc", text("eighty"))]),
        set_fields(&ext[2], &[("Healthsync_Band__gc", text("green"))]),
        set_fields("no-such-company", &[("Healthsync_Score__gc", num(1.0))]),
    ];
    let results = sink.deliver_batch(&ops).await;
    assert_eq!(results[0].as_ref().unwrap(), &Delivered::Applied);
    assert_eq!(results[2].as_ref().unwrap(), &Delivered::Applied);
    match &results[1] {
        Err(DeliveryError::Invalid(m)) => {
            assert!(
                m.contains("GSOBJ_1008") && m.contains("Healthsync_Score__gc"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    match &results[3] {
        Err(DeliveryError::Invalid(m)) => assert!(m.contains("No record found"), "{m}"),
        other => panic!("{other:?}"),
    }
    let state = sim_state(&sim).await;
    let companies = state["companies"].as_array().unwrap();
    assert_eq!(companies[0]["Healthsync_Score__gc"], 80.0);
    assert_eq!(companies[2]["Healthsync_Band__gc"], "green");
    assert!(companies[1].get("Healthsync_Score__gc").is_none());
    // 4 refused → 2+2 both refused → 4 singles: 7 calls, two of them landing.
    assert_eq!(sim.received().len(), 7);
}

#[tokio::test]
async fn cta_is_created_once_with_its_tasks_and_closed_once() {
    let (sim, sink) = sim().await;
    let ext = sim.world().accounts[0].hubspot_id.clone();
    let op = project_op(&ext, KEY);
    assert_eq!(sink.deliver(&op).await.unwrap(), Delivered::Applied);
    assert_eq!(sink.deliver(&op).await.unwrap(), Delivered::AlreadyPresent);
    let state = sim_state(&sim).await;
    let ctas = state["ctas"].as_array().unwrap();
    assert_eq!(ctas.len(), 1);
    let cta = &ctas[0];
    assert_eq!(cta["Healthsync_Key__gc"], KEY);
    assert_eq!(cta["CompanyId"], state["companies"][0]["Gsid"]);
    assert_eq!(
        (cta["TypeName"].as_str(), cta["DueDate"].as_str()),
        (Some("Risk"), Some("2026-11-30"))
    );
    assert_eq!(
        cta["Comments"],
        "Usage dropped\n[ ] Call champion (due 2026-11-30): Ask why\n[ ] Exec sponsor (due 2026-11-23): Escalate"
    );
    let creates = sim
        .received()
        .iter()
        .filter(|r| r.path == "/gainsight/v2/cockpit/cta/")
        .count();
    assert_eq!(creates, 1);

    let close = close_op(&ext, KEY);
    assert_eq!(sink.deliver(&close).await.unwrap(), Delivered::Applied);
    assert_eq!(
        sink.deliver(&close).await.unwrap(),
        Delivered::AlreadyPresent
    );
    let state = sim_state(&sim).await;
    let cta = &state["ctas"][0];
    assert_eq!(
        (cta["IsClosed"].as_bool(), cta["StatusName"].as_str()),
        (Some(true), Some("Closed Success"))
    );
    assert_eq!(cta["Comments"], format!("Company {ext} recovered"));
    let unknown = sink
        .deliver(&project_op("no-such-company", "x:y:z"))
        .await
        .unwrap_err();
    assert!(matches!(unknown, DeliveryError::Rejected(_)), "{unknown:?}");
}

#[tokio::test]
async fn a_429_storm_is_waited_out_then_lands() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "3")
                .set_body_json(
                    json!({"result": false, "errorCode": "GS_429", "errorDesc": "rate limit"}),
                ),
        )
        .up_to_n_times(4)
        .expect(4)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .respond_with(ok_envelope())
        .expect(1)
        .mount(&server)
        .await;
    let (sink, clock) = sink(&server);
    let op = set_fields("101", &[("Healthsync_Score__gc", num(2.0))]);
    assert_eq!(sink.deliver(&op).await.unwrap(), Delivered::Applied);
    assert_eq!(clock.sleeps(), vec![Duration::from_secs(3); 4]);
    assert_auth_on_every_request(&server, "accesskey", KEY_SECRET, KEY_SECRET).await;
}

#[tokio::test]
async fn persistent_5xx_is_transient_for_every_item_and_names_no_secret() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(503).set_body_string("unavailable"))
        .expect(6)
        .mount(&server)
        .await;
    let (sink, _) = sink(&server);
    let ops = vec![set_fields("101", &[]), set_fields("102", &[])];
    for r in sink.deliver_batch(&ops).await {
        let err = r.unwrap_err();
        assert!(matches!(err, DeliveryError::Transient(_)), "{err:?}");
        assert_no_secret(&err.to_string(), KEY_SECRET);
    }
}

#[test]
fn params_need_a_match_field_and_refuse_unknown_keys() {
    let err = (SPEC.parse_params)(&toml::Table::new()).unwrap_err();
    assert!(err.contains("match_field"), "{err}");
    let t: toml::Table = toml::from_str("match_field = \"X__gc\"\ncta_typ = \"Risk\"").unwrap();
    assert!((SPEC.parse_params)(&t)
        .unwrap_err()
        .contains("unknown key `cta_typ`"));
    assert_eq!(settings().cta_closed_status, "Closed Success");
}
