//! Tests of the `hubspot_sink` kind against wiremock: the exact bodies HubSpot receives, per-item batch
//! results, idempotent task creation by subject marker, closing, throttling and auth.

use super::*;
use crate::connector::Sink;
use crate::connector::kinds::sink_testkit::*;
use crate::http::testing::{config, manual_clock, secrets};
use crate::http::ManualClock;
use std::time::Duration;
use wiremock::matchers::{body_json, body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "pat-na1-secret-hubspot";
const AUTH: &str = "Bearer pat-na1-secret-hubspot";

fn sink(server: &MockServer) -> (HubSpotSink, Arc<ManualClock>) {
    let mut cfg = config(
        "hubspot_sink",
        Role::Sink,
        &format!("{}/hubspot", server.uri()),
        AuthScheme::Bearer,
    );
    let s = secrets(&mut cfg, &[("token", TOKEN)]);
    let clock = manual_clock();
    let http = HttpClient::new(&cfg, &s)
        .unwrap()
        .with_classifier(crate::connector::kinds::hubspot::classify)
        .with_quota_reader(crate::connector::kinds::hubspot::quota)
        .with_clock(clock.clone());
    (HubSpotSink::new(http, clock.clone()), clock)
}

fn company(id: &str) -> Value {
    json!({"id": id, "properties": {}, "createdAt": "2024-01-01T00:00:00Z",
           "updatedAt": "2026-11-23T12:00:00Z", "archived": false})
}

fn search_hit(id: &str, subject: &str, status: &str) -> Value {
    json!({"id": id, "properties": {"hs_task_subject": subject, "hs_task_status": status,
           "hs_object_id": id}, "createdAt": "2026-11-23T12:00:00Z",
           "updatedAt": "2026-11-23T12:00:00Z", "archived": false})
}

async fn mount_search(server: &MockServer, hits: Vec<Value>) {
    Mock::given(method("POST"))
        .and(path("/hubspot/crm/v3/objects/tasks/search"))
        .and(body_partial_json(json!({"filterGroups": [{"filters": [
            {"propertyName": "associations.company", "operator": "EQ", "value": "101"}]}]})))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"total": hits.len(), "results": hits})),
        )
        .mount(server)
        .await;
}

#[tokio::test]
async fn set_fields_patches_exactly_the_mapped_properties_as_strings() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .and(path("/hubspot/crm/v3/objects/companies/101"))
        .and(body_json(json!({"properties": {
            "healthsync_score": "87.5", "healthsync_band": "green", "healthsync_top_risk": ""}})))
        .respond_with(ResponseTemplate::new(200).set_body_json(company("101")))
        .expect(1)
        .mount(&server)
        .await;
    let (sink, _) = sink(&server);
    let op = set_fields(
        "101",
        &[
            ("healthsync_score", num(87.5)),
            ("healthsync_band", text("green")),
            ("healthsync_top_risk", FieldValue::Null),
        ],
    );
    assert_eq!(sink.deliver(&op).await.unwrap(), Delivered::Applied);
    assert_all_authed(&server, AUTH).await;
}

#[tokio::test]
async fn batch_with_per_item_errors_lands_the_good_items() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hubspot/crm/v3/objects/companies/batch/update"))
        .respond_with(ResponseTemplate::new(207).set_body_json(json!({
            "status": "COMPLETE", "startedAt": "2026-11-23T12:00:00Z", "completedAt": "2026-11-23T12:00:01Z",
            "results": [company("101"), company("104")],
            "numErrors": 2,
            "errors": [
                {"status": "error", "category": "OBJECT_NOT_FOUND", "message": "Could not get some COMPANY objects, they may be deleted or not exist. Check that ids are valid.",
                 "context": {"ids": ["102"]}, "errors": [], "links": {}},
                {"status": "error", "category": "VALIDATION_ERROR", "message": "Property \"healthsync_scroe\" does not exist",
                 "context": {"objectWriteTraceId": ["2"]}, "errors": [{"message": "Property \"healthsync_scroe\" does not exist", "code": "PROPERTY_DOESNT_EXIST"}], "links": {}},
            ],
        })))
        .expect(1)
        .mount(&server)
        .await;
    let (sink, _) = sink(&server);
    let ops = vec![
        set_fields("101", &[("healthsync_score", num(80.0))]),
        set_fields("102", &[("healthsync_score", num(70.0))]),
        set_fields("103", &[("healthsync_scroe", num(60.0))]),
        set_fields("104", &[("healthsync_band", text("red"))]),
    ];
    let results = sink.deliver_batch(&ops).await;
    assert_eq!(results.len(), 4);
    assert_eq!(results[0].as_ref().unwrap(), &Delivered::Applied);
    let e1 = results[1].as_ref().unwrap_err();
    assert!(matches!(e1, DeliveryError::Rejected(_)), "{e1:?}");
    assert!(e1.to_string().contains("account 102"), "{e1}");
    assert!(
        e1.to_string()
            .contains("Could not get some COMPANY objects"),
        "{e1}"
    );
    let e2 = results[2].as_ref().unwrap_err();
    assert!(matches!(e2, DeliveryError::Invalid(_)), "{e2:?}");
    assert!(
        e2.to_string()
            .contains("\"healthsync_scroe\" does not exist"),
        "{e2}"
    );
    assert_eq!(results[3].as_ref().unwrap(), &Delivered::Applied);
    let sent = bodies(
        &server,
        "POST",
        "/hubspot/crm/v3/objects/companies/batch/update",
    )
    .await;
    assert_eq!(
        sent[0]["inputs"][2],
        json!({"id": "103", "properties": {"healthsync_scroe": "60"}, "objectWriteTraceId": "2"})
    );
    assert_eq!(sink.batch_size(), 100);
}

#[tokio::test]
async fn a_whole_batch_refused_is_resent_item_by_item() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hubspot/crm/v3/objects/companies/batch/update"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "status": "error", "message": "Property values were not valid", "category": "VALIDATION_ERROR",
            "correlationId": "c-1"})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/hubspot/crm/v3/objects/companies/201"))
        .respond_with(ResponseTemplate::new(200).set_body_json(company("201")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/hubspot/crm/v3/objects/companies/202"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "status": "error", "message": "Property \"nope\" does not exist", "category": "VALIDATION_ERROR"})))
        .expect(1)
        .mount(&server)
        .await;
    let (sink, _) = sink(&server);
    let ops = vec![
        set_fields("201", &[("healthsync_score", num(1.0))]),
        set_fields("202", &[("nope", num(2.0))]),
    ];
    let results = sink.deliver_batch(&ops).await;
    assert_eq!(results[0].as_ref().unwrap(), &Delivered::Applied);
    let e = results[1].as_ref().unwrap_err();
    assert!(matches!(e, DeliveryError::Invalid(_)), "{e:?}");
    assert!(e.to_string().contains("\"nope\" does not exist"), "{e}");
}

#[tokio::test]
async fn create_project_makes_one_marked_task_per_task_then_finds_them() {
    let server = MockServer::start().await;
    mount_search(&server, vec![]).await;
    for (n, (name, due)) in [
        ("Call champion", "2026-11-30"),
        ("Exec sponsor", "2026-11-23"),
    ]
    .iter()
    .enumerate()
    {
        Mock::given(method("POST"))
            .and(path("/hubspot/crm/v3/objects/tasks"))
            .and(body_json(json!({
                "properties": {
                    "hs_timestamp": format!("{due}T00:00:00.000Z"),
                    "hs_task_subject": format!("{name} [{KEY}/task-{}]", n + 1),
                    "hs_task_body": format!("Poor Health: usage: Usage dropped\n\n{}", if n == 0 { "Ask why" } else { "Escalate" }),
                    "hs_task_status": "NOT_STARTED", "hs_task_priority": "HIGH", "hs_task_type": "TODO",
                },
                "associations": [{"to": {"id": "101"}, "types": [
                    {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 192}]}],
            })))
            .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": format!("t-{n}")})))
            .expect(1)
            .mount(&server)
            .await;
    }
    let (sink, _) = sink(&server);
    assert_eq!(
        sink.deliver(&project_op("101", KEY)).await.unwrap(),
        Delivered::Applied
    );
    assert_all_authed(&server, AUTH).await;
}

#[tokio::test]
async fn a_resent_project_is_already_present_and_only_missing_tasks_are_created() {
    let server = MockServer::start().await;
    mount_search(
        &server,
        vec![
            search_hit(
                "t-1",
                &format!("Call champion [{KEY}/task-1]"),
                "NOT_STARTED",
            ),
            // Another project's task on the same company is not ours.
            search_hit(
                "t-9",
                "Call champion [101:other:2026-01-01/task-2]",
                "NOT_STARTED",
            ),
        ],
    )
    .await;
    Mock::given(method("POST"))
        .and(path("/hubspot/crm/v3/objects/tasks"))
        .and(body_partial_json(json!({"properties": {
            "hs_task_subject": format!("Exec sponsor [{KEY}/task-2]")}})))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "t-2"})))
        .expect(1)
        .mount(&server)
        .await;
    let (sink, _) = sink(&server);
    assert_eq!(
        sink.deliver(&project_op("101", KEY)).await.unwrap(),
        Delivered::AlreadyPresent
    );
    let creates = bodies(&server, "POST", "/hubspot/crm/v3/objects/tasks").await;
    assert_eq!(creates.len(), 1);
}

#[tokio::test]
async fn close_completes_the_open_tasks_and_a_resend_is_already_present() {
    let server = MockServer::start().await;
    mount_search(
        &server,
        vec![
            search_hit(
                "t-1",
                &format!("Call champion [{KEY}/task-1]"),
                "NOT_STARTED",
            ),
            search_hit("t-2", &format!("Exec sponsor [{KEY}/task-2]"), "COMPLETED"),
        ],
    )
    .await;
    Mock::given(method("POST"))
        .and(path("/hubspot/crm/v3/objects/tasks/batch/update"))
        .and(body_json(json!({"inputs": [
            {"id": "t-1", "properties": {"hs_task_status": "COMPLETED"}}]})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "status": "COMPLETE", "results": [], "startedAt": "x", "completedAt": "y"})))
        .expect(1)
        .mount(&server)
        .await;
    let (first, _) = sink(&server);
    assert_eq!(
        first.deliver(&close_op("101", KEY)).await.unwrap(),
        Delivered::Applied
    );

    let done = MockServer::start().await;
    mount_search(
        &done,
        vec![search_hit(
            "t-1",
            &format!("Call champion [{KEY}/task-1]"),
            "COMPLETED",
        )],
    )
    .await;
    let (again, _) = sink(&done);
    assert_eq!(
        again.deliver(&close_op("101", KEY)).await.unwrap(),
        Delivered::AlreadyPresent
    );
}

#[tokio::test]
async fn ten_secondly_429s_are_retried_and_the_daily_limit_is_not() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .and(path("/hubspot/crm/v3/objects/companies/101"))
        .respond_with(ResponseTemplate::new(429).set_body_json(json!({
            "status": "error", "message": "You have reached your ten_secondly_rolling limit.",
            "errorType": "RATE_LIMIT", "correlationId": "c", "policyName": "TEN_SECONDLY_ROLLING"})))
        .up_to_n_times(3)
        .expect(3)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/hubspot/crm/v3/objects/companies/101"))
        .respond_with(ResponseTemplate::new(200).set_body_json(company("101")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/hubspot/crm/v3/objects/companies/102"))
        .respond_with(ResponseTemplate::new(429).set_body_json(json!({
            "status": "error", "message": "You have reached your daily limit.",
            "errorType": "RATE_LIMIT", "correlationId": "c", "policyName": "DAILY"})))
        .expect(1)
        .mount(&server)
        .await;
    let (sink, clock) = sink(&server);
    let ok = set_fields("101", &[("healthsync_score", num(5.0))]);
    assert_eq!(sink.deliver(&ok).await.unwrap(), Delivered::Applied);
    assert_eq!(clock.sleeps().len(), 3, "three backoffs, no real sleep");
    let daily = set_fields("102", &[("healthsync_score", num(5.0))]);
    let err = sink.deliver(&daily).await.unwrap_err();
    assert!(matches!(err, DeliveryError::Transient(_)), "{err:?}");
    assert!(err.to_string().contains("daily api limit"), "{err}");
    assert_eq!(clock.sleeps().len(), 3, "the daily limit is not waited on");
}

#[tokio::test]
async fn server_errors_are_retried_then_transient_for_every_batch_item() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hubspot/crm/v3/objects/companies/batch/update"))
        .respond_with(ResponseTemplate::new(502).set_body_string("Bad Gateway"))
        .expect(6)
        .mount(&server)
        .await;
    let (sink, clock) = sink(&server);
    let ops = vec![
        set_fields("101", &[("a", num(1.0))]),
        set_fields("102", &[("a", num(2.0))]),
    ];
    let results = sink.deliver_batch(&ops).await;
    for r in &results {
        let e = r.as_ref().unwrap_err();
        assert!(matches!(e, DeliveryError::Transient(_)), "{e:?}");
        assert!(e.to_string().contains("http 502"), "{e}");
    }
    assert_eq!(clock.sleeps().len(), 5);
    assert!(clock.slept() <= Duration::from_secs(120));
}

#[tokio::test]
async fn no_secret_reaches_logs_or_errors() {
    let (log, _guard) = CapturedLog::install();
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(500).set_body_string("oops"))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"message": "bad"})))
        .mount(&server)
        .await;
    let (sink, _) = sink(&server);
    let ops = vec![
        set_fields("101", &[("a", num(1.0))]),
        set_fields("102", &[("a", num(1.0))]),
    ];
    let results = sink.deliver_batch(&ops).await;
    let errors: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
        .collect();
    assert_eq!(errors.len(), 2);
    let logged = log.text();
    // Other test threads share tracing's callsite cache, so which lines land here varies; some do.
    assert!(
        logged.contains("connector=test_hubspot_sink"),
        "log captured: {logged}"
    );
    for text in errors.iter().chain([&logged]) {
        assert!(!text.contains(TOKEN), "secret leaked: {text}");
    }
    assert_all_authed(&server, AUTH).await;
}

#[test]
fn markers_parse_back_to_their_task() {
    assert_eq!(marked_index(&format!("Call [{KEY}/task-1]"), KEY), Some(0));
    assert_eq!(marked_index(&format!("X [{KEY}/task-12] "), KEY), Some(11));
    assert_eq!(marked_index("Call [other/task-1]", KEY), None);
    assert_eq!(marked_index(&format!("Call [{KEY}/task-0]"), KEY), None);
    assert_eq!(marked_index("no marker", KEY), None);
    assert!((SPEC.parse_params)(&toml::Table::new()).is_ok());
}

#[tokio::test]
async fn the_task_search_follows_paging_to_find_an_earlier_task() {
    let server = MockServer::start().await;
    let others: Vec<Value> = (0..3)
        .map(|i| search_hit(&format!("o-{i}"), "Unrelated call", "NOT_STARTED"))
        .collect();
    Mock::given(method("POST"))
        .and(path("/hubspot/crm/v3/objects/tasks/search"))
        .and(body_partial_json(json!({"after": "3"})))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"total": 4, "results": [
                search_hit("t-1", &format!("Call champion [{KEY}/task-1]"), "NOT_STARTED"),
            ]})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/hubspot/crm/v3/objects/tasks/search"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "total": 4, "results": others, "paging": {"next": {"after": "3"}}})))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/hubspot/crm/v3/objects/tasks/batch/update"))
        .and(body_json(json!({"inputs": [
            {"id": "t-1", "properties": {"hs_task_status": "COMPLETED"}}]})))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"status": "COMPLETE", "results": []})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let (sink, _) = sink(&server);
    assert_eq!(
        sink.deliver(&close_op("101", KEY)).await.unwrap(),
        Delivered::Applied
    );
}

#[tokio::test]
async fn a_mapped_owner_becomes_the_task_owner() {
    let server = MockServer::start().await;
    mount_search(&server, vec![]).await;
    Mock::given(method("POST"))
        .and(path("/hubspot/crm/v3/objects/tasks"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "t-1"})))
        .mount(&server)
        .await;
    let (mut sink, _) = sink(&server);
    sink.owners = BTreeMap::from([("crm-7".to_string(), "9001".to_string())]);
    let op = with_owner(project_op("101", KEY), "crm-7");
    sink.deliver(&op).await.unwrap();
    let owners: Vec<Value> = bodies(&server, "POST", "/hubspot/crm/v3/objects/tasks")
        .await
        .iter()
        .map(|b| b["properties"]["hubspot_owner_id"].clone())
        .collect();
    assert_eq!(owners, vec![json!("9001"), json!("9001")]);
}

#[tokio::test]
async fn a_task_search_that_repeats_its_page_token_stops_after_one_repeat() {
    // Issue 20: against a server that answered the same `after` every time, the lookup sent 9,999
    // identical searches. The first repeat now ends it with a transient error, and a project whose
    // lookup did not finish creates no task (it could be a duplicate).
    let server = MockServer::start().await;
    let others: Vec<Value> = (0..3)
        .map(|i| search_hit(&format!("o-{i}"), "Unrelated call", "NOT_STARTED"))
        .collect();
    Mock::given(method("POST"))
        .and(path("/hubspot/crm/v3/objects/tasks/search"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "total": 99, "results": others, "paging": {"next": {"after": "3"}}})))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/hubspot/crm/v3/objects/tasks"))
        .respond_with(ResponseTemplate::new(201))
        .expect(0)
        .mount(&server)
        .await;
    let (sink, _) = sink(&server);
    match sink.deliver(&project_op("101", KEY)).await {
        Err(DeliveryError::Transient(why)) => assert!(why.contains("page token `3` again"), "{why}"),
        other => panic!("expected a transient error, got {other:?}"),
    }
}
