//! Tests of the `hubspot` source kind against wiremock serving HubSpot's CRM v3 list, search and v4
//! association responses: paging, incremental search, the 10,000-result ceiling, throttling and errors.

use super::*;
use crate::connector::kinds::testkit::drain;
use crate::http::testing::{
    assert_every_request_carries, bearer_client, bearer_client_behind_proxy, Fault, FaultProxy,
};
use crate::http::HttpError;
use wiremock::matchers::{
    body_partial_json, header, method, path, query_param, query_param_is_missing,
};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A company as `GET /crm/v3/objects/companies` returns it (SimplePublicObjectWithAssociations).
fn company(id: &str, domain: &str, updated: &str) -> Value {
    json!({
        "id": id,
        "properties": {
            "name": format!("Company {id}"),
            "domain": domain,
            "hs_lastmodifieddate": updated,
            "createdate": "2024-01-01T00:00:00Z",
            "hs_object_id": id,
        },
        "createdAt": "2024-01-01T00:00:00Z",
        "updatedAt": updated,
        "archived": false,
    })
}

fn list_page(results: Vec<Value>, next: Option<&str>) -> Value {
    let mut v = json!({ "results": results });
    if let Some(after) = next {
        v["paging"] = json!({"next": {"after": after, "link": format!("?after={after}")}});
    }
    v
}

fn source(server: &MockServer, streams: &[&str]) -> HubSpot {
    let (http, _) = bearer_client(&format!("{}/hubspot", server.uri()));
    HubSpot::new(
        http.with_classifier(classify),
        streams.iter().map(|s| s.to_string()).collect(),
        vec!["industry".into()],
        None,
    )
}

/// [`drain`], as the tuple the older tests destructure.
async fn run_to_end(
    src: &HubSpot,
    stream: &str,
    cursor: Option<Cursor>,
) -> (Vec<Record>, Vec<RejectedRecord>, Cursor, usize) {
    let d = drain(src, stream, cursor).await.unwrap();
    (d.records, d.rejected, d.cursor, d.pages)
}

async fn mount_three_pages(server: &MockServer) {
    let list = || {
        Mock::given(method("GET"))
            .and(path("/hubspot/crm/v3/objects/companies"))
            .and(header("authorization", "Bearer tok_test"))
            .and(query_param("limit", "100"))
            .and(query_param("archived", "false"))
            .and(query_param(
                "properties",
                "name,domain,hs_lastmodifieddate,createdate,industry",
            ))
    };
    list()
        .and(query_param_is_missing("after"))
        .respond_with(ResponseTemplate::new(200).set_body_json(list_page(
            vec![
                company("101", "Acme.com", "2024-03-01T10:00:00Z"),
                company("102", "beta.io", "2024-03-02T10:00:00Z"),
            ],
            Some("p2"),
        )))
        .expect(1)
        .mount(server)
        .await;
    list()
        .and(query_param("after", "p2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(list_page(
            vec![
                company("103", "gamma.dev", "2024-03-05T10:00:00Z"),
                json!({"properties": {"name": "no id"}, "updatedAt": "2024-03-01T00:00:00Z"}),
            ],
            Some("p3"),
        )))
        .mount(server)
        .await;
    list()
        .and(query_param("after", "p3"))
        .respond_with(ResponseTemplate::new(200).set_body_json(list_page(
            vec![company("104", "", "2024-03-03T10:00:00Z")],
            None,
        )))
        .mount(server)
        .await;
}

#[tokio::test]
async fn a_timeout_and_a_reset_midway_are_retried_and_every_request_carries_the_token() {
    let server = MockServer::start().await;
    mount_three_pages(&server).await;
    // Requests 2 and 3 are the first two attempts at the second page.
    let proxy = FaultProxy::start(&server.uri(), &[(2, Fault::Hang), (3, Fault::Reset)]).await;
    let (http, clock) = bearer_client_behind_proxy(&format!("{}/hubspot", proxy.url()));
    let src = HubSpot::new(
        http.with_classifier(classify),
        vec!["companies".into()],
        vec!["industry".into()],
        None,
    );
    let d = drain(&src, "companies", None).await.unwrap();
    assert_eq!(d.ids(), ["101", "102", "103", "104"]);
    assert_eq!(proxy.requests(), 5);
    assert_eq!(clock.sleeps().len(), 2, "one backoff per failed attempt");
    assert_eq!(
        assert_every_request_carries(&server, "/", "authorization", "Bearer tok_test").await,
        3,
        "the faulted attempts never reached the server"
    );
}

#[tokio::test]
async fn full_run_across_pages_then_incremental_search() {
    let server = MockServer::start().await;
    mount_three_pages(&server).await;
    let src = source(&server, &["companies"]);
    let (records, rejected, cursor, pages) = run_to_end(&src, "companies", None).await;
    assert_eq!(pages, 3);
    assert_eq!(
        records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["101", "102", "103", "104"]
    );
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].reason, "missing `id`");
    let acme = &records[0];
    assert_eq!(
        acme.account_keys.get("crm_id").map(String::as_str),
        Some("101")
    );
    assert_eq!(
        acme.account_keys.get("domain").map(String::as_str),
        Some("acme.com")
    );
    assert_eq!(acme.fields["name"], json!("Company 101"));
    assert_eq!(acme.fields["archived"], json!(false));
    assert!(!records[3].account_keys.contains_key("domain"));

    // Second run: search from the high-water mark (2024-03-05T10:00:00Z) minus five minutes.
    let since_ms = "1709632500000";
    Mock::given(method("POST"))
        .and(path("/hubspot/crm/v3/objects/companies/search"))
        .and(header("authorization", "Bearer tok_test"))
        .and(body_partial_json(json!({
            "filterGroups": [{"filters": [{"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": since_ms}]}],
            "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
            "limit": 100,
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "total": 1,
            "results": [company("102", "beta.io", "2024-03-06T08:00:00Z")],
        })))
        .expect(1)
        .mount(&server)
        .await;
    let (records, _, cursor2, pages) = run_to_end(&src, "companies", Some(cursor)).await;
    assert_eq!(pages, 1);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].id, "102");
    let state: StreamCursor = serde_json::from_value(cursor2.0).unwrap();
    assert_eq!(state.hwm.unwrap().id, "102");
    let gets = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "GET")
        .count();
    assert_eq!(gets, 3, "the incremental run must not re-list");
}

#[tokio::test]
async fn resumes_from_a_mid_run_cursor() {
    let server = MockServer::start().await;
    mount_three_pages(&server).await;
    let src = source(&server, &["companies"]);
    let first = src.fetch_page("companies", None).await.unwrap();
    assert!(!first.done);
    // A new process picks up the stored cursor: the next request is page 2, not page 1 again.
    let src2 = source(&server, &["companies"]);
    let (records, _, _, pages) = run_to_end(&src2, "companies", Some(first.cursor)).await;
    assert_eq!(pages, 2);
    assert_eq!(
        records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["103", "104"]
    );
}

#[tokio::test]
async fn repeated_page_token_is_an_error() {
    let server = MockServer::start().await;
    Mock::given(path("/hubspot/crm/v3/objects/companies"))
        .respond_with(ResponseTemplate::new(200).set_body_json(list_page(
            vec![company("1", "a.com", "2024-01-01T00:00:00Z")],
            Some("same"),
        )))
        .mount(&server)
        .await;
    let src = source(&server, &["companies"]);
    let p1 = src.fetch_page("companies", None).await.unwrap();
    let err = src
        .fetch_page("companies", Some(&p1.cursor))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("page token `same` again"), "{err}");
    assert!(err.to_string().contains("connector test_test"), "{err}");
}

#[tokio::test]
async fn daily_quota_stops_and_burst_limit_retries() {
    let server = MockServer::start().await;
    Mock::given(path("/hubspot/crm/v3/objects/companies"))
        .respond_with(ResponseTemplate::new(429).set_body_json(json!({
            "status": "error", "message": "You have reached your daily limit.",
            "errorType": "RATE_LIMIT", "correlationId": "c1", "policyName": "DAILY",
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/hubspot/crm/v3/objects/deals"))
        .respond_with(ResponseTemplate::new(429).set_body_json(json!({
            "status": "error", "errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING",
        })))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(path("/hubspot/crm/v3/objects/deals"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(list_page(vec![deal("9001", "2024-02-01T00:00:00Z")], None)),
        )
        .mount(&server)
        .await;
    mount_associations(&server, "deals", &[("9001", Some(101))], 1).await;
    let src = source(&server, &["companies", "deals"]);
    let err = src.fetch_page("companies", None).await.unwrap_err();
    assert!(
        matches!(err, SourceError::Http(HttpError::QuotaExhausted { .. })),
        "{err:?}"
    );
    let page = src.fetch_page("deals", None).await.unwrap();
    assert!(page.done);
    assert_eq!(
        page.records[0]
            .account_keys
            .get("crm_id")
            .map(String::as_str),
        Some("101")
    );
    assert_eq!(page.records[0].fields["amount"], json!("1200"));
}

/// A deal as the list and search endpoints return it: no company property, no associations.
fn deal(id: &str, updated: &str) -> Value {
    json!({
        "id": id,
        "properties": {"dealname": "Renewal", "amount": "1200", "hs_lastmodifieddate": updated},
        "createdAt": "2024-01-01T00:00:00Z", "updatedAt": updated, "archived": false,
    })
}

/// `POST /crm/v4/associations/{stream}/companies/batch/read` answering for `pairs` (id, company); an id
/// without a company comes back under `errors` with 207, as HubSpot's batch endpoints answer.
async fn mount_associations(
    server: &MockServer,
    stream: &str,
    pairs: &[(&str, Option<u64>)],
    times: u64,
) {
    let inputs: Vec<Value> = pairs.iter().map(|(id, _)| json!({"id": id})).collect();
    let results: Vec<Value> = pairs
        .iter()
        .filter_map(|(id, c)| c.map(|c| json!({
            "from": {"id": id},
            "to": [{"toObjectId": c, "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 5, "label": null}]}],
        })))
        .collect();
    let errors: Vec<Value> = pairs
        .iter()
        .filter(|(_, c)| c.is_none())
        .map(|(id, _)| {
            json!({
                "status": "error", "category": "OBJECT_NOT_FOUND",
                "subCategory": "crm.associations.NO_ASSOCIATIONS_FOUND",
                "message": format!("No companies are associated with {stream} {id}."),
                "context": {"fromObjectId": [id]},
            })
        })
        .collect();
    let mut body = json!({"status": "COMPLETE", "results": results,
        "startedAt": "2024-03-06T00:00:00Z", "completedAt": "2024-03-06T00:00:01Z"});
    let status = if errors.is_empty() { 200 } else { 207 };
    if !errors.is_empty() {
        body["numErrors"] = json!(errors.len());
        body["errors"] = Value::Array(errors);
    }
    Mock::given(method("POST"))
        .and(path(format!(
            "/hubspot/crm/v4/associations/{stream}/companies/batch/read"
        )))
        .and(header("authorization", "Bearer tok_test"))
        .and(body_partial_json(json!({ "inputs": inputs })))
        .respond_with(ResponseTemplate::new(status).set_body_json(body))
        .expect(times)
        .mount(server)
        .await;
}

#[tokio::test]
async fn deals_run_incrementally_and_take_their_company_from_v4_associations() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/hubspot/crm/v3/objects/deals"))
        .and(query_param_is_missing("associations"))
        .respond_with(ResponseTemplate::new(200).set_body_json(list_page(
            vec![
                deal("9001", "2024-03-01T00:00:00Z"),
                deal("9002", "2024-03-02T00:00:00Z"),
            ],
            None,
        )))
        .expect(1)
        .mount(&server)
        .await;
    // 9002 has no company: HubSpot answers 207 and the deal is still stored, without crm_id.
    mount_associations(&server, "deals", &[("9001", Some(101)), ("9002", None)], 1).await;
    let src = source(&server, &["deals"]);
    let (records, _, cursor, _) = run_to_end(&src, "deals", None).await;
    let crm = |r: &Record| r.account_keys.get("crm_id").cloned();
    assert_eq!(
        records.iter().map(crm).collect::<Vec<_>>(),
        [Some("101".to_string()), None]
    );

    // The next run searches by hs_lastmodifieddate and asks for the changed deal's company again.
    Mock::given(method("POST"))
        .and(path("/hubspot/crm/v3/objects/deals/search"))
        .and(body_partial_json(json!({
            "filterGroups": [{"filters": [{"propertyName": "hs_lastmodifieddate", "operator": "GTE"}]}],
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "total": 1, "results": [deal("9002", "2024-03-04T00:00:00Z")],
        })))
        .expect(1)
        .mount(&server)
        .await;
    mount_associations(&server, "deals", &[("9002", Some(102))], 1).await;
    let (records, _, _, pages) = run_to_end(&src, "deals", Some(cursor)).await;
    assert_eq!(pages, 1);
    assert_eq!(records.len(), 1);
    assert_eq!(crm(&records[0]).as_deref(), Some("102"));
}

#[tokio::test]
async fn contacts_search_by_lastmodifieddate_and_name_their_primary_company() {
    let server = MockServer::start().await;
    let contact = |id: &str, company: &str, updated: &str| {
        json!({
            "id": id,
            "properties": {"email": "ana@acme.com", "associatedcompanyid": company, "lastmodifieddate": updated},
            "createdAt": "2024-01-01T00:00:00Z", "updatedAt": updated, "archived": false,
        })
    };
    Mock::given(method("GET"))
        .and(path("/hubspot/crm/v3/objects/contacts"))
        .respond_with(ResponseTemplate::new(200).set_body_json(list_page(
            vec![contact("501", "101", "2024-03-01T00:00:00Z")],
            None,
        )))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/hubspot/crm/v3/objects/contacts/search"))
        .and(body_partial_json(json!({
            "filterGroups": [{"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE"}]}],
            "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "total": 1, "results": [contact("501", "103", "2024-03-05T00:00:00Z")],
        })))
        .expect(1)
        .mount(&server)
        .await;
    let src = source(&server, &["contacts"]);
    let (records, _, cursor, _) = run_to_end(&src, "contacts", None).await;
    assert_eq!(records[0].account_keys["crm_id"], "101");
    let (records, _, _, _) = run_to_end(&src, "contacts", Some(cursor)).await;
    assert_eq!(records[0].account_keys["crm_id"], "103");
    // Contacts name their company themselves: no association reads.
    let assoc = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path().contains("/crm/v4/"))
        .count();
    assert_eq!(assoc, 0);
}

#[test]
fn search_restarts_before_the_ceiling_and_refuses_a_stuck_window() {
    use chrono::TimeZone;
    let t = |s: i64| Utc.timestamp_opt(s, 0).unwrap();
    let mut run = RunState {
        token: Some("9900".into()),
        prev: Some("9800".into()),
        since: Some(t(100)),
        max: Some(common::Mark {
            updated_at: t(500),
            id: "7".into(),
        }),
        fetched: 9_950,
    };
    restart_search(&mut run, Some(t(100))).unwrap();
    assert_eq!(
        (run.since, run.token.clone(), run.fetched),
        (Some(t(500)), None, 0)
    );
    let mut stuck = RunState {
        since: Some(t(500)),
        ..run.clone()
    };
    assert!(restart_search(&mut stuck, Some(t(500))).is_err());
}

#[test]
fn the_ten_secondly_quota_is_read_from_the_rate_limit_headers() {
    let mut h = HeaderMap::new();
    assert_eq!(quota(&h), None);
    h.insert("x-hubspot-ratelimit-max", "190".parse().unwrap());
    assert_eq!(quota(&h), None, "max without the interval says nothing");
    h.insert(
        "x-hubspot-ratelimit-interval-milliseconds",
        "10000".parse().unwrap(),
    );
    assert_eq!(
        quota(&h),
        Some(WindowQuota {
            requests: 190,
            window: Duration::from_secs(10),
        })
    );
    h.insert("x-hubspot-ratelimit-max", "many".parse().unwrap());
    assert_eq!(quota(&h), None);
}

#[test]
fn params_are_validated() {
    let ok: toml::Table =
        toml::from_str("properties = [\"industry\", \"numberofemployees\"]").unwrap();
    assert!((SPEC.parse_params)(&ok).is_ok());
    assert!((SPEC.parse_params)(&toml::Table::new()).is_ok());
    let bad: toml::Table = toml::from_str("properties = \"industry\"").unwrap();
    assert_eq!(
        (SPEC.parse_params)(&bad).unwrap_err(),
        "`properties` must be a list of strings"
    );
    let unknown: toml::Table = toml::from_str("objects = []").unwrap();
    assert!((SPEC.parse_params)(&unknown)
        .unwrap_err()
        .contains("unknown key `objects`"));
}

// ---- Future marks, ties, bad bodies and resuming from every checkpoint ----

/// Matches a search whose body pages `after` the given token (`None`: the query's first page).
fn search_after(after: Option<&'static str>) -> impl Fn(&wiremock::Request) -> bool + Send + Sync {
    move |r| {
        serde_json::from_slice::<Value>(&r.body)
            .is_ok_and(|b| b.get("after").and_then(Value::as_str) == after)
    }
}

/// The `GTE` value and `after` of every search the server received, in order.
async fn searches(server: &MockServer) -> Vec<(String, Option<String>)> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path().ends_with("/search"))
        .map(|r| {
            let b: Value = serde_json::from_slice(&r.body).unwrap();
            let gte = b
                .pointer("/filterGroups/0/filters/0/value")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            (
                gte,
                b.get("after").and_then(Value::as_str).map(str::to_string),
            )
        })
        .collect()
}

fn search_page(results: Vec<Value>, next: Option<&str>) -> ResponseTemplate {
    let mut body = list_page(results, next);
    body["total"] = json!(4);
    ResponseTemplate::new(200).set_body_json(body)
}

#[tokio::test]
async fn a_future_mark_searches_from_it_and_finds_nothing() {
    let server = MockServer::start().await;
    // 2027-01-01T12:00:00Z is after the manual clock's 2026-11-23T12:00Z; HubSpot has nothing modified
    // since five minutes before it. The kind does not consult the clock: it asks, once.
    Mock::given(method("POST"))
        .and(path("/hubspot/crm/v3/objects/deals/search"))
        .and(body_partial_json(json!({"filterGroups": [{"filters": [{
            "propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": "1798804500000",
        }]}]})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"total": 0, "results": []})))
        .expect(1)
        .mount(&server)
        .await;
    let src = source(&server, &["deals"]);
    let future = json!({"hwm": {"updated_at": "2027-01-01T12:00:00Z", "id": "9"}});
    let r = drain(&src, "deals", Some(Cursor(future.clone())))
        .await
        .unwrap();
    assert_eq!((r.pages, r.records.len(), r.rejected.len()), (1, 0, 0));
    assert_eq!(
        r.state(),
        serde_json::from_value::<StreamCursor>(future).unwrap(),
        "the mark stays where it was"
    );
    let reqs = server.received_requests().await.unwrap();
    assert_eq!(
        reqs.len(),
        1,
        "no list and no association read for an empty page"
    );
}

#[tokio::test]
async fn equal_timestamps_across_a_page_boundary_and_across_runs_are_all_kept() {
    let server = MockServer::start().await;
    let t = "2026-11-10T12:00:00Z";
    Mock::given(method("GET"))
        .and(path("/hubspot/crm/v3/objects/companies"))
        .and(query_param_is_missing("after"))
        .respond_with(ResponseTemplate::new(200).set_body_json(list_page(
            vec![company("7", "a.com", t), company("8", "b.com", t)],
            Some("c1"),
        )))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/hubspot/crm/v3/objects/companies"))
        .and(query_param("after", "c1"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(list_page(vec![company("9", "c.com", t)], None)),
        )
        .expect(1)
        .mount(&server)
        .await;
    let src = source(&server, &["companies"]);
    let first = drain(&src, "companies", None).await.unwrap();
    assert_eq!(first.ids(), ["7", "8", "9"]);
    let hwm = first.state().hwm.unwrap();
    assert_eq!(
        (hwm.updated_at.to_rfc3339(), hwm.id.as_str()),
        ("2026-11-10T12:00:00+00:00".to_string(), "9")
    );

    // The next run searches GTE the mark's timestamp minus five minutes, so a company committed late
    // with the same timestamp and an id below the mark's ("6") is found, on either side of a page
    // boundary. Search pages are offsets; ties come in any order.
    let search =
        || Mock::given(method("POST")).and(path("/hubspot/crm/v3/objects/companies/search"));
    search()
        .and(search_after(None))
        .respond_with(search_page(
            vec![company("8", "b.com", t), company("6", "z.com", t)],
            Some("2"),
        ))
        .expect(1)
        .mount(&server)
        .await;
    search()
        .and(search_after(Some("2")))
        .respond_with(search_page(
            vec![company("7", "a.com", t), company("9", "c.com", t)],
            None,
        ))
        .expect(1)
        .mount(&server)
        .await;
    let second = drain(&src, "companies", Some(first.cursor)).await.unwrap();
    assert_eq!(second.pages, 2);
    assert_eq!(
        second.ids(),
        ["8", "6", "7", "9"],
        "each once, 6 not skipped"
    );
    // 2026-11-10T11:55:00Z in epoch ms, on both pages of the run.
    let since = "1794311700000".to_string();
    assert_eq!(
        searches(&server).await,
        [(since.clone(), None), (since, Some("2".to_string()))]
    );
    assert_eq!(second.state().hwm.map(|m| m.id), Some("9".to_string()));
}

#[tokio::test]
async fn a_search_restarted_before_the_ceiling_keeps_the_records_tied_with_the_last_one() {
    let server = MockServer::start().await;
    let t = "2026-11-10T12:00:00Z";
    // 9,950 results into a query: the page after it would pass 10,000, so the query restarts GTE the
    // highest timestamp seen (no lookback) and re-reads what shares it.
    let cursor = json!({
        "hwm": {"updated_at": "2026-11-01T00:05:00Z", "id": "1"},
        "run": {"token": "9950", "prev": "9850", "since": "2026-11-01T00:00:00Z",
                "max": {"updated_at": "2026-11-09T00:00:00Z", "id": "50"}, "fetched": 9950},
    });
    let search =
        || Mock::given(method("POST")).and(path("/hubspot/crm/v3/objects/companies/search"));
    search()
        .and(search_after(Some("9950")))
        .respond_with(search_page(
            vec![company("60", "a.com", t), company("61", "b.com", t)],
            Some("10050"),
        ))
        .expect(1)
        .mount(&server)
        .await;
    search()
        .and(search_after(None))
        .respond_with(search_page(
            vec![company("61", "b.com", t), company("59", "c.com", t)],
            None,
        ))
        .expect(1)
        .mount(&server)
        .await;
    let src = source(&server, &["companies"]);
    let r = drain(&src, "companies", Some(Cursor(cursor)))
        .await
        .unwrap();
    assert_eq!(r.pages, 2);
    // 61 is read twice by design (the restart's GTE); 59, tied with it and below it, is not skipped.
    assert_eq!(r.ids(), ["60", "61", "61", "59"]);
    assert_eq!(
        searches(&server).await,
        [
            ("1793491200000".to_string(), Some("9950".to_string())),
            ("1794312000000".to_string(), None)
        ]
    );
    assert_eq!(r.state().hwm.map(|m| m.id), Some("61".to_string()));
}

#[tokio::test]
async fn malformed_json_names_connector_and_request_path() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/hubspot/crm/v3/objects/companies"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{\"results\": ["))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/hubspot/crm/v3/objects/companies/search"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string("{\"total\": 1, \"results\": [{\"id\": \"1\","),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/hubspot/crm/v3/objects/deals"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(list_page(vec![deal("9001", "2024-02-01T00:00:00Z")], None)),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(
            "/hubspot/crm/v4/associations/deals/companies/batch/read",
        ))
        .respond_with(
            ResponseTemplate::new(207)
                .set_body_string("{\"status\": \"COMPLETE\", \"results\": [{"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let src = source(&server, &["companies", "deals"]);
    let decode = |err: SourceError, path: &str| {
        assert!(matches!(&err, SourceError::Malformed { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("for stream "), "{msg}");
        assert!(msg.contains("connector test_test"), "{msg}");
        assert!(msg.contains(path), "{msg}");
    };
    let err = drain(&src, "companies", None).await.unwrap_err();
    decode(err, "GET /hubspot/crm/v3/objects/companies:");
    let incremental = json!({"hwm": {"updated_at": "2024-03-05T10:00:00Z", "id": "103"}});
    let err = drain(&src, "companies", Some(Cursor(incremental)))
        .await
        .unwrap_err();
    decode(err, "POST /hubspot/crm/v3/objects/companies/search:");
    let err = drain(&src, "deals", None).await.unwrap_err();
    decode(
        err,
        "POST /hubspot/crm/v4/associations/deals/companies/batch/read:",
    );
    // A body that does not parse is not retried (the mocks expect one request each).
    assert_eq!(server.received_requests().await.unwrap().len(), 4);
}

#[tokio::test]
async fn resumes_from_every_checkpoint() {
    let server = MockServer::start().await;
    mount_three_pages(&server).await;
    // After the full list the mark is 103's 2024-03-05T10:00:00Z; the search from five minutes before it
    // re-reads 103 (unchanged), which is the only duplicate the design allows.
    Mock::given(method("POST"))
        .and(path("/hubspot/crm/v3/objects/companies/search"))
        .and(body_partial_json(
            json!({"filterGroups": [{"filters": [{"value": "1709632500000"}]}]}),
        ))
        .respond_with(search_page(
            vec![company("103", "gamma.dev", "2024-03-05T10:00:00Z")],
            None,
        ))
        .expect(1)
        .mount(&server)
        .await;
    let src = source(&server, &["companies"]);
    let mut cursor = None;
    let mut checkpoints: Vec<(Vec<String>, Cursor)> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    loop {
        let page = src.fetch_page("companies", cursor.as_ref()).await.unwrap();
        seen.extend(page.records.iter().map(|r| r.id.clone()));
        checkpoints.push((seen.clone(), page.cursor.clone()));
        cursor = Some(page.cursor);
        if page.done {
            break;
        }
    }
    let full = ["101", "102", "103", "104"];
    assert_eq!(seen, full);
    assert_eq!(checkpoints.len(), 3);
    let expected_rest: [&[&str]; 3] = [&["103", "104"], &["104"], &["103"]];
    for (k, ((before, checkpoint), rest)) in checkpoints.into_iter().zip(expected_rest).enumerate()
    {
        // A fresh process resuming from the checkpoint stored after page k+1.
        let after = drain(
            &source(&server, &["companies"]),
            "companies",
            Some(checkpoint),
        )
        .await
        .unwrap();
        assert_eq!(after.ids(), rest, "resumed after page {}", k + 1);
        let mut union: Vec<&str> = before
            .iter()
            .map(String::as_str)
            .chain(after.ids())
            .collect();
        union.sort_unstable();
        union.dedup();
        assert_eq!(union, full, "nothing lost resuming after page {}", k + 1);
    }
    // Page 1 was fetched once (its mock expects one request); page 2 once more, page 3 twice more.
    let reqs = server.received_requests().await.unwrap();
    let gets = |after: &str| {
        reqs.iter()
            .filter(|r| r.url.query_pairs().any(|(k, v)| k == "after" && v == after))
            .count()
    };
    assert_eq!((gets("p2"), gets("p3")), (2, 3));
}

#[tokio::test]
async fn a_public_app_refreshes_its_oauth_token_on_a_401_and_sends_the_new_one() {
    use crate::http::testing::oauth2_config;
    use crate::vocab::AuthScheme;
    use wiremock::matchers::body_string_contains;

    let server = MockServer::start().await;
    let token = |access: &str| {
        // HubSpot's token response (OAuth v1): bearer token, refresh token, 30-minute lifetime.
        ResponseTemplate::new(200).set_body_json(json!({
            "token_type": "bearer", "refresh_token": "rt_test",
            "access_token": access, "expires_in": 1800
        }))
    };
    let grant = || {
        Mock::given(method("POST"))
            .and(path("/oauth/v1/token"))
            .and(body_string_contains("grant_type=refresh_token"))
            .and(body_string_contains("refresh_token=rt_test"))
            .and(body_string_contains("client_id=cid_test"))
    };
    grant()
        .respond_with(token("at-1"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    grant()
        .respond_with(token("at-2"))
        .expect(1)
        .mount(&server)
        .await;
    // The first token was revoked early: HubSpot answers 401 with its error body.
    Mock::given(method("GET"))
        .and(path("/hubspot/crm/v3/objects/companies"))
        .and(header("authorization", "Bearer at-1"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "status": "error", "message": "The OAuth token used to make this call expired 1 second(s) ago.",
            "correlationId": "c", "category": "EXPIRED_AUTHENTICATION"
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/hubspot/crm/v3/objects/companies"))
        .and(header("authorization", "Bearer at-2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(list_page(
            vec![company("1", "a.example", "2024-03-01T00:00:00Z")],
            None,
        )))
        .expect(1)
        .mount(&server)
        .await;
    let (cfg, secrets) = oauth2_config(
        "hubspot",
        &format!("{}/hubspot", server.uri()),
        &format!("{}/oauth/v1/token", server.uri()),
        AuthScheme::OAuth2RefreshToken,
    );
    assert!(SPEC.auth.contains(&AuthScheme::OAuth2RefreshToken));
    let http = HttpClient::new(&cfg, &secrets)
        .unwrap()
        .with_clock(crate::http::testing::manual_clock());
    let src = HubSpot::new(
        http.with_classifier(classify),
        vec!["companies".into()],
        Vec::new(),
        None,
    );
    let d = drain(&src, "companies", None).await.unwrap();
    assert_eq!(d.ids(), ["1"]);
}
