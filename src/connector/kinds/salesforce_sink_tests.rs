//! Tests of the `salesforce_sink` kind against wiremock serving Salesforce's OAuth token endpoint, SOQL
//! queries, sObject and sObject Collections responses. Shared setup: [`Fixture`].

use super::*;
use crate::connector::Sink;
use crate::connector::kinds::sink_testkit::*;
use crate::http::testing::{manual_clock, oauth2_config};
use crate::http::ManualClock;
use std::time::Duration;
use wiremock::matchers::{body_json, body_partial_json, method, path, query_param_contains};
use wiremock::{Mock, MockServer, ResponseTemplate};

const V: &str = "/services/data/v62.0";
const AUTH: &str = "Bearer 00Dsim!access";

struct Fixture {
    server: MockServer,
    sink: SalesforceSink,
    clock: Arc<ManualClock>,
}

impl Fixture {
    async fn new(params: &str) -> Fixture {
        let server = MockServer::start().await;
        let token_url = format!("{}/services/oauth2/token", server.uri());
        let (mut cfg, secrets) = oauth2_config(
            "salesforce_sink",
            &server.uri(),
            &token_url,
            AuthScheme::OAuth2ClientCredentials,
        );
        cfg.role = Role::Sink;
        Mock::given(method("POST"))
            .and(path("/services/oauth2/token"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "access_token": "00Dsim!access", "instance_url": server.uri(), "token_type": "Bearer",
                "id": "https://login.salesforce.com/id/00D/005", "issued_at": "1700000000000", "signature": "s",
            })))
            .mount(&server)
            .await;
        let clock = manual_clock();
        let http = HttpClient::new(&cfg, &secrets)
            .unwrap()
            .with_classifier(crate::connector::kinds::salesforce::classify)
            .with_clock(clock.clone());
        let params = parse_params(&toml::from_str(params).unwrap()).unwrap();
        let sink = SalesforceSink::new(http, params, clock.clone());
        Fixture {
            server,
            sink,
            clock,
        }
    }

    /// Answers SOQL containing `soql` with `records`.
    async fn query(&self, soql: &str, records: Vec<Value>) {
        Mock::given(method("GET"))
            .and(path(format!("{V}/query")))
            .and(query_param_contains("q", soql))
            .respond_with(ResponseTemplate::new(200).set_body_json(
                json!({"totalSize": records.len(), "done": true, "records": records}),
            ))
            .mount(&self.server)
            .await;
    }

    async fn api_requests(&self) -> Vec<wiremock::Request> {
        let all = self.server.received_requests().await.unwrap();
        all.into_iter()
            .filter(|r| r.url.path().starts_with("/services/data"))
            .collect()
    }
}

fn task_row(id: &str, n: usize, status: &str) -> Value {
    json!({"attributes": {"type": "Task", "url": format!("{V}/sobjects/Task/{id}")}, "Id": id,
           "Status": status, "IsClosed": status == "Completed",
           "Healthsync_Key__c": format!("{KEY}/task-{n}")})
}

#[tokio::test]
async fn set_fields_patches_the_account_with_json_values() {
    let f = Fixture::new("").await;
    Mock::given(method("PATCH"))
        .and(path(format!("{V}/sobjects/Account/001A")))
        .and(body_json(
            json!({"Health_Score__c": 87.5, "Health_Band__c": "green", "Top_Risk__c": null}),
        ))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&f.server)
        .await;
    let op = set_fields(
        "001A",
        &[
            ("Health_Score__c", num(87.5)),
            ("Health_Band__c", text("green")),
            ("Top_Risk__c", FieldValue::Null),
        ],
    );
    assert_eq!(f.sink.deliver(&op).await.unwrap(), Delivered::Applied);
    for r in f.api_requests().await {
        assert_eq!(r.headers.get("authorization").unwrap(), AUTH);
    }
}

#[tokio::test]
async fn a_collection_with_per_record_errors_lands_the_good_records() {
    let f = Fixture::new("").await;
    Mock::given(method("PATCH"))
        .and(path(format!("{V}/composite/sobjects")))
        .and(body_partial_json(json!({"allOrNone": false})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([
            {"id": "001A", "success": true, "errors": []},
            {"success": false, "errors": [{"statusCode": "INVALID_CROSS_REFERENCE_KEY", "message": "invalid cross reference id", "fields": []}]},
            {"id": "001C", "success": false, "errors": [{"statusCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "message": "Score must be 1-100", "fields": ["Health_Score__c"]}]},
            {"id": "001D", "success": false, "errors": [{"statusCode": "UNABLE_TO_LOCK_ROW", "message": "unable to obtain exclusive access to this record", "fields": []}]},
        ])))
        .expect(1)
        .mount(&f.server)
        .await;
    let ops = vec![
        set_fields("001A", &[("Health_Score__c", num(80.0))]),
        set_fields("001B", &[("Health_Score__c", num(70.0))]),
        set_fields("001C", &[("Health_Score__c", num(600.0))]),
        set_fields("001D", &[("Health_Score__c", num(50.0))]),
    ];
    let results = f.sink.deliver_batch(&ops).await;
    assert_eq!(results[0].as_ref().unwrap(), &Delivered::Applied);
    let e = |i: usize| results[i].as_ref().unwrap_err();
    assert!(
        matches!(e(1), DeliveryError::Rejected(m) if m.contains("INVALID_CROSS_REFERENCE_KEY: invalid cross reference id")),
        "{:?}",
        e(1)
    );
    assert!(
        matches!(e(2), DeliveryError::Invalid(m) if m.contains("Score must be 1-100") && m.contains("account 001C")),
        "{:?}",
        e(2)
    );
    assert!(
        matches!(e(3), DeliveryError::Transient(m) if m.contains("UNABLE_TO_LOCK_ROW")),
        "{:?}",
        e(3)
    );
    let sent = bodies(&f.server, "PATCH", &format!("{V}/composite/sobjects")).await;
    assert_eq!(
        sent[0]["records"][1],
        json!({"attributes": {"type": "Account"}, "id": "001B", "Health_Score__c": 70.0})
    );
    assert_eq!(f.sink.batch_size(), 200);
}

#[tokio::test]
async fn a_refused_collection_is_resent_record_by_record() {
    let f = Fixture::new("").await;
    Mock::given(method("PATCH"))
        .and(path(format!("{V}/composite/sobjects")))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!([{
            "message": "No such column 'Helth__c' on sobject of type Account", "errorCode": "INVALID_FIELD"}])))
        .expect(1)
        .mount(&f.server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(format!("{V}/sobjects/Account/001A")))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&f.server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(format!("{V}/sobjects/Account/001B")))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!([{
            "message": "No such column 'Helth__c' on sobject of type Account", "errorCode": "INVALID_FIELD"}])))
        .expect(1)
        .mount(&f.server)
        .await;
    let ops = vec![
        set_fields("001A", &[("Health_Score__c", num(1.0))]),
        set_fields("001B", &[("Helth__c", num(2.0))]),
    ];
    let results = f.sink.deliver_batch(&ops).await;
    assert_eq!(results[0].as_ref().unwrap(), &Delivered::Applied);
    assert!(
        matches!(results[1].as_ref().unwrap_err(), DeliveryError::Invalid(m) if m.contains("No such column 'Helth__c'"))
    );
}

#[tokio::test]
async fn accounts_are_found_by_their_crm_id_field_and_unknown_ones_rejected() {
    let f = Fixture::new("account_id_field = \"HubSpot_Company_Id__c\"").await;
    f.query(
        "SELECT Id, HubSpot_Company_Id__c FROM Account WHERE HubSpot_Company_Id__c IN ('101', '102')",
        vec![json!({"attributes": {"type": "Account"}, "Id": "001A", "HubSpot_Company_Id__c": "101"})],
    )
    .await;
    Mock::given(method("PATCH"))
        .and(path(format!("{V}/composite/sobjects")))
        .and(body_json(json!({"allOrNone": false, "records": [
            {"attributes": {"type": "Account"}, "id": "001A", "Health_Score__c": 9.0}]})))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!([{"id": "001A", "success": true, "errors": []}])),
        )
        .expect(2)
        .mount(&f.server)
        .await;
    let ops = vec![
        set_fields("101", &[("Health_Score__c", num(9.0))]),
        set_fields("102", &[("Health_Score__c", num(9.0))]),
    ];
    let results = f.sink.deliver_batch(&ops).await;
    assert_eq!(results[0].as_ref().unwrap(), &Delivered::Applied);
    assert!(
        matches!(results[1].as_ref().unwrap_err(), DeliveryError::Rejected(m) if m.contains("no Account has HubSpot_Company_Id__c = 102"))
    );
    // The resolved id is kept: a second batch for 101 sends no query.
    let again = f.sink.deliver_batch(&ops[..1]).await;
    assert_eq!(again[0].as_ref().unwrap(), &Delivered::Applied);
    let queries = f
        .api_requests()
        .await
        .iter()
        .filter(|r| r.method.as_str() == "GET")
        .count();
    assert_eq!(queries, 1);
}

#[tokio::test]
async fn create_project_looks_up_by_key_then_creates_only_missing_tasks() {
    let f = Fixture::new("").await;
    f.query(
        &format!("FROM Task WHERE Healthsync_Key__c LIKE '{KEY}/task-%'"),
        vec![task_row("00T1", 1, "Not Started")],
    )
    .await;
    Mock::given(method("POST"))
        .and(path(format!("{V}/sobjects/Task")))
        .and(body_json(json!({
            "Subject": "Exec sponsor", "Description": "Poor Health: usage: Usage dropped\n\nEscalate",
            "ActivityDate": "2026-11-23", "Status": "Not Started", "Priority": "High", "WhatId": "101",
            "Healthsync_Key__c": format!("{KEY}/task-2"),
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "00T2", "success": true, "errors": []})))
        .expect(1)
        .mount(&f.server)
        .await;
    assert_eq!(
        f.sink.deliver(&project_op("101", KEY)).await.unwrap(),
        Delivered::AlreadyPresent
    );
}

#[tokio::test]
async fn a_fresh_project_creates_every_task_and_a_duplicate_key_counts_as_present() {
    let f = Fixture::new("").await;
    f.query("FROM Task WHERE", vec![]).await;
    Mock::given(method("POST"))
        .and(path(format!("{V}/sobjects/Task")))
        .and(body_partial_json(
            json!({"Subject": "Call champion", "ActivityDate": "2026-11-30"}),
        ))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"id": "00T1", "success": true, "errors": []})),
        )
        .expect(1)
        .mount(&f.server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{V}/sobjects/Task")))
        .and(body_partial_json(json!({"Subject": "Exec sponsor"})))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!([{
            "message": "duplicate value found: Healthsync_Key__c duplicates value on record with id: 00T2",
            "errorCode": "DUPLICATE_VALUE", "fields": []}])))
        .expect(1)
        .mount(&f.server)
        .await;
    assert_eq!(
        f.sink.deliver(&project_op("101", KEY)).await.unwrap(),
        Delivered::AlreadyPresent
    );
}

#[tokio::test]
async fn close_completes_open_tasks_once() {
    let f = Fixture::new("").await;
    f.query(
        "FROM Task WHERE Healthsync_Key__c LIKE",
        vec![
            task_row("00T1", 1, "Not Started"),
            task_row("00T2", 2, "Completed"),
        ],
    )
    .await;
    Mock::given(method("PATCH"))
        .and(path(format!("{V}/composite/sobjects")))
        .and(body_json(json!({"allOrNone": false, "records": [
            {"attributes": {"type": "Task"}, "id": "00T1", "Status": "Completed"}]})))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!([{"id": "00T1", "success": true, "errors": []}])),
        )
        .expect(1)
        .mount(&f.server)
        .await;
    assert_eq!(
        f.sink.deliver(&close_op("101", KEY)).await.unwrap(),
        Delivered::Applied
    );

    let done = Fixture::new("").await;
    done.query("FROM Task WHERE", vec![task_row("00T1", 1, "Completed")])
        .await;
    assert_eq!(
        done.sink.deliver(&close_op("101", KEY)).await.unwrap(),
        Delivered::AlreadyPresent
    );
}

#[tokio::test]
async fn throttling_and_5xx_retry_and_the_org_quota_stops_sending() {
    let f = Fixture::new("max_api_usage_percent = 90").await;
    Mock::given(method("PATCH"))
        .and(path(format!("{V}/sobjects/Account/001A")))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "2"))
        .up_to_n_times(2)
        .expect(2)
        .mount(&f.server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(format!("{V}/sobjects/Account/001A")))
        .respond_with(ResponseTemplate::new(503).set_body_string("Service Unavailable"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&f.server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(format!("{V}/sobjects/Account/001A")))
        .respond_with(
            ResponseTemplate::new(204).insert_header("Sforce-Limit-Info", "api-usage=95/100"),
        )
        .expect(1)
        .mount(&f.server)
        .await;
    let op = set_fields("001A", &[("Health_Score__c", num(1.0))]);
    assert_eq!(f.sink.deliver(&op).await.unwrap(), Delivered::Applied);
    let sleeps = f.clock.sleeps();
    assert_eq!(sleeps.len(), 3);
    assert_eq!(
        &sleeps[..2],
        &[Duration::from_secs(2), Duration::from_secs(2)]
    );
    // Usage is now 95% of the org's allocation: the next write is not sent.
    let err = f.sink.deliver(&op).await.unwrap_err();
    assert!(
        matches!(err, DeliveryError::Transient(ref m) if m.contains("api usage is 95/100")),
        "{err:?}"
    );
    assert_eq!(f.api_requests().await.len(), 4);
}

#[tokio::test]
async fn request_limit_exceeded_is_not_retried() {
    let f = Fixture::new("").await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(403).set_body_json(json!([{
            "message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])))
        .expect(1)
        .mount(&f.server)
        .await;
    let err = f
        .sink
        .deliver(&set_fields("001A", &[("X__c", num(1.0))]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, DeliveryError::Transient(ref m) if m.contains("request limit exceeded")),
        "{err:?}"
    );
    assert!(f.clock.sleeps().is_empty());
}

#[tokio::test]
async fn no_secret_reaches_logs_or_errors() {
    let (log, _guard) = CapturedLog::install();
    let f = Fixture::new("").await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(500).set_body_string("oops"))
        .mount(&f.server)
        .await;
    let err = f
        .sink
        .deliver(&set_fields("001A", &[("X__c", num(1.0))]))
        .await
        .unwrap_err();
    let logged = log.text();
    assert!(
        logged.contains("connector=test_salesforce_sink"),
        "log captured: {logged}"
    );
    for text in [err.to_string(), logged] {
        for secret in ["csecret_test", "00Dsim!access", "cid_test"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
    }
}

#[test]
fn params_and_soql_escaping() {
    assert!(parse_params(&toml::Table::new()).is_ok());
    let bad: toml::Table = toml::from_str("key_field = \"Bad Field\"").unwrap();
    assert!(parse_params(&bad)
        .unwrap_err()
        .contains("`key_field` `Bad Field`"));
    let v: toml::Table = toml::from_str("api_version = \"62\"").unwrap();
    assert!(parse_params(&v).unwrap_err().contains("v62.0"));
    assert_eq!(soql_escape("a'b\\c_d%", false), "a\\'b\\\\c_d%");
    assert_eq!(soql_escape("a_b%", true), "a\\_b\\%");
}

#[tokio::test]
async fn the_task_query_follows_next_records_url() {
    let f = Fixture::new("").await;
    Mock::given(method("GET"))
        .and(path(format!("{V}/query")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "totalSize": 2, "done": false, "nextRecordsUrl": format!("{V}/query/01gSIM-1"),
            "records": [task_row("00T1", 1, "Completed")]})))
        .expect(1)
        .mount(&f.server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{V}/query/01gSIM-1")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "totalSize": 2, "done": true, "records": [task_row("00T2", 2, "Not Started")]})))
        .expect(1)
        .mount(&f.server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(format!("{V}/composite/sobjects")))
        .and(body_json(json!({"allOrNone": false, "records": [
            {"attributes": {"type": "Task"}, "id": "00T2", "Status": "Completed"}]})))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!([{"id": "00T2", "success": true, "errors": []}])),
        )
        .expect(1)
        .mount(&f.server)
        .await;
    assert_eq!(
        f.sink.deliver(&close_op("101", KEY)).await.unwrap(),
        Delivered::Applied
    );
}

#[tokio::test]
async fn a_task_query_whose_next_records_url_repeats_stops_at_the_repeat() {
    // Issue 20: no paging loop may follow the same token twice. The query's next page points at
    // itself; the sink follows it once, sees it again and fails the write as transient.
    let f = Fixture::new("").await;
    Mock::given(method("GET"))
        .and(path(format!("{V}/query")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "totalSize": 9, "done": false, "nextRecordsUrl": format!("{V}/query/01gSIM-1"),
            "records": [task_row("00T1", 1, "Completed")]})))
        .expect(1)
        .mount(&f.server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{V}/query/01gSIM-1")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "totalSize": 9, "done": false, "nextRecordsUrl": format!("{V}/query/01gSIM-1"),
            "records": [task_row("00T2", 2, "Not Started")]})))
        .expect(1)
        .mount(&f.server)
        .await;
    match f.sink.deliver(&close_op("101", KEY)).await {
        Err(DeliveryError::Transient(why)) => assert!(why.contains("again"), "{why}"),
        other => panic!("expected a transient error, got {other:?}"),
    }
}
