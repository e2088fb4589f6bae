//! Tests of the `delighted` kind against wiremock serving Delighted's shapes: page-number paging,
//! `updated_since`, resume, ties, a repeated page, throttling, server errors, bad bodies and auth.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::{method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::*;
use crate::connector::kinds::support_testkit::{
    self, assert_auth_on_every_request, hwm, run, run_ok, FAULT_TIMEOUT,
};
use crate::http::testing::{Fault, FaultProxy};
use crate::connector::Source;
use crate::http::ManualClock;
use crate::vocab::Cursor;

const PATH: &str = "/v1/survey_responses.json";
/// `dl_key:` in base64.
const BASIC: &str = "Basic ZGxfa2V5Og==";

fn response(id: &str, updated: Option<i64>, score: i64, email: &str) -> Value {
    json!({
        "id": id, "person": {"id": format!("p{id}"), "email": email, "name": "Jane",
                             "created_at": 1_700_000_000, "last_sent_at": 1_790_000_000},
        "survey_type": "nps", "score": score, "comment": "Support is slow",
        "permalink": format!("https://app.delighted.com/r/{id}"), "created_at": 1_790_000_000,
        "updated_at": updated, "person_properties": {"plan": "pro"}, "notes": [], "tags": [],
        "additional_answers": [],
    })
}

fn listing(items: Vec<Value>) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(items)
}

/// Two records per page, so a page of two is full and a shorter page ends the run.
fn source(server: &MockServer) -> (Delighted, Arc<ManualClock>) {
    delighted(support_testkit::client(
        &server.uri(),
        AuthScheme::Basic,
        &[("username", "dl_key")],
    ))
}

/// [`source`] reaching the server through `proxy`, its requests timing out after [`FAULT_TIMEOUT`].
fn source_through(proxy: &FaultProxy) -> (Delighted, Arc<ManualClock>) {
    delighted(support_testkit::client_with_timeout(
        proxy.url(),
        AuthScheme::Basic,
        &[("username", "dl_key")],
        FAULT_TIMEOUT,
    ))
}

fn delighted((http, clock): (HttpClient, Arc<ManualClock>)) -> (Delighted, Arc<ManualClock>) {
    (
        Delighted::new(http, vec!["survey_responses".into()], Some(2)),
        clock,
    )
}

async fn mount_three_pages(server: &MockServer) {
    let get = |page: &str| {
        Mock::given(method("GET"))
            .and(path(PATH))
            .and(query_param("per_page", "2"))
            .and(query_param("page", page))
            .and(query_param("order", "asc:updated_at"))
            .and(query_param("expand[]", "person"))
            .and(query_param_is_missing("updated_since"))
    };
    get("1")
        .respond_with(listing(vec![
            response("1", Some(1_790_000_100), 10, "jane@Acme.com"),
            response("2", None, 6, "ops@beta.io"),
        ]))
        .mount(server)
        .await;
    let mut broken = response("4", Some(1_790_000_300), 0, "x@acme.com");
    broken["score"] = Value::Null;
    get("2")
        .respond_with(listing(vec![
            response("3", Some(1_790_000_200), 8, "it@gamma.dev"),
            broken,
        ]))
        .mount(server)
        .await;
    get("3")
        .respond_with(listing(vec![response(
            "5",
            Some(1_790_000_400),
            3,
            "a@acme.com",
        )]))
        .mount(server)
        .await;
}

#[tokio::test]
async fn responses_over_three_pages_then_only_changes() {
    let server = MockServer::start().await;
    mount_three_pages(&server).await;
    let (src, _) = source(&server);
    let first = run_ok(&src, "survey_responses", None).await;
    assert_eq!((first.pages, first.ids()), (3, vec!["1", "2", "3", "5"]));
    assert_eq!(first.rejected.len(), 1);
    assert_eq!(first.rejected[0].id.as_deref(), Some("4"));
    assert!(first.rejected[0].reason.contains("score"));
    assert_eq!(first.key(0, "domain"), Some("acme.com"));
    assert_eq!(first.key(0, "delighted_person"), Some("p1"));
    assert_eq!(first.records[0].fields["nps_category"], json!("promoter"));
    assert_eq!(first.records[1].fields["nps_category"], json!("detractor"));
    assert_eq!(first.records[2].fields["nps_category"], json!("passive"));
    assert_eq!(first.records[0].fields["comment"], json!("Support is slow"));
    assert_eq!(
        first.records[1].updated_at.timestamp(),
        1_790_000_000,
        "a null updated_at falls back to created_at"
    );
    Mock::given(path(PATH))
        .and(query_param(
            "updated_since",
            (1_790_000_400 - 300).to_string().as_str(),
        ))
        .and(query_param("page", "1"))
        .respond_with(listing(vec![response(
            "2",
            Some(1_790_009_000),
            9,
            "ops@beta.io",
        )]))
        .expect(1)
        .mount(&server)
        .await;
    let second = run_ok(&src, "survey_responses", Some(first.cursor)).await;
    assert_eq!(second.ids(), ["2"]);
    assert_eq!(assert_auth_on_every_request(&server, BASIC).await, 4);
}

#[tokio::test]
async fn a_timeout_and_a_reset_midway_are_retried_and_every_request_carries_the_key() {
    let server = MockServer::start().await;
    mount_three_pages(&server).await;
    // Request 1 is page 1; requests 2 and 3 are the first two attempts at page 2: one times out, one is
    // reset. Request 4 fetches it, request 5 page 3.
    let proxy = FaultProxy::start(&server.uri(), &[(2, Fault::Hang), (3, Fault::Reset)]).await;
    let (src, clock) = source_through(&proxy);
    let r = run_ok(&src, "survey_responses", None).await;
    assert_eq!((r.pages, r.ids()), (3, vec!["1", "2", "3", "5"]));
    assert_eq!(r.rejected.len(), 1, "the second page arrived whole");
    assert_eq!(proxy.requests(), 5);
    assert_eq!(clock.sleeps().len(), 2, "one backoff per failed attempt");
    assert_eq!(
        assert_auth_on_every_request(&server, BASIC).await,
        3,
        "the faulted attempts never reached the server"
    );
    assert_eq!(
        support_testkit::query_of(&server, 1, "page")
            .await
            .as_deref(),
        Some("2")
    );
}

#[tokio::test]
async fn resumes_from_every_checkpoint_and_a_future_mark_finds_nothing() {
    let server = MockServer::start().await;
    mount_three_pages(&server).await;
    let (src, _) = source(&server);
    let p1 = src.fetch_page("survey_responses", None).await.unwrap();
    let p2 = src
        .fetch_page("survey_responses", Some(&p1.cursor))
        .await
        .unwrap();
    let rest = run_ok(&source(&server).0, "survey_responses", Some(p1.cursor)).await;
    assert_eq!((rest.pages, rest.ids()), (2, vec!["3", "5"]));
    let rest = run_ok(&source(&server).0, "survey_responses", Some(p2.cursor)).await;
    assert_eq!((rest.pages, rest.ids()), (1, vec!["5"]));

    Mock::given(path(PATH))
        .and(query_param("updated_since", "1798804500"))
        .respond_with(listing(vec![]))
        .expect(1)
        .mount(&server)
        .await;
    let future = json!({"hwm": {"updated_at": "2027-01-01T12:00:00Z", "id": "9"}});
    let r = run_ok(&src, "survey_responses", Some(Cursor(future))).await;
    assert!(r.records.is_empty());
    assert_eq!(hwm(&r.cursor).map(|m| m.1), Some("9".to_string()));
}

#[tokio::test]
async fn equal_timestamps_across_a_page_boundary_are_all_kept() {
    let server = MockServer::start().await;
    let t = Some(1_790_000_000);
    Mock::given(path(PATH))
        .and(query_param("page", "1"))
        .respond_with(listing(vec![
            response("7", t, 9, "a@a.com"),
            response("8", t, 9, "a@a.com"),
        ]))
        .mount(&server)
        .await;
    Mock::given(path(PATH))
        .and(query_param("page", "2"))
        .respond_with(listing(vec![response("9", t, 9, "a@a.com")]))
        .mount(&server)
        .await;
    let r = run_ok(&source(&server).0, "survey_responses", None).await;
    assert_eq!(r.ids(), ["7", "8", "9"]);
    assert_eq!(hwm(&r.cursor).map(|m| m.1), Some("9".to_string()));
}

#[tokio::test]
async fn the_same_page_served_again_stops_with_an_error() {
    let server = MockServer::start().await;
    Mock::given(path(PATH))
        .respond_with(listing(vec![
            response("1", Some(1), 9, "a@a.com"),
            response("2", Some(2), 9, "a@a.com"),
        ]))
        .mount(&server)
        .await;
    let err = run(&source(&server).0, "survey_responses", None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("same page again"), "{err}");
    assert!(
        err.contains("survey_responses") && err.contains("connector test_test"),
        "{err}"
    );
}

#[tokio::test]
async fn throttling_and_unavailability_honour_retry_after() {
    let server = MockServer::start().await;
    Mock::given(path(PATH))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "3"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path(PATH))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", support_testkit::http_date_after(13).as_str()),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path(PATH))
        .respond_with(ResponseTemplate::new(503).insert_header("retry-after", "5"))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(path(PATH))
        .respond_with(listing(vec![response("1", Some(1), 9, "a@a.com")]))
        .mount(&server)
        .await;
    let (src, clock) = source(&server);
    let r = run_ok(&src, "survey_responses", None).await;
    assert_eq!(r.ids(), ["1"]);
    let secs = |s: u64| Duration::from_secs(s);
    assert_eq!(clock.sleeps(), [secs(3), secs(10), secs(5), secs(5)]);
}

#[tokio::test]
async fn malformed_json_names_connector_and_stream() {
    let server = MockServer::start().await;
    Mock::given(path(PATH))
        .respond_with(ResponseTemplate::new(200).set_body_string("[{\"id\": \"1\", \"score\": }]"))
        .mount(&server)
        .await;
    let err = run(&source(&server).0, "survey_responses", None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("stream survey_responses") && err.contains("connector test_test"),
        "{err}"
    );
}

#[test]
fn page_tokens_and_params() {
    assert_eq!(parse_token(None), Ok((1, None)));
    assert_eq!(parse_token(Some("3|r9")), Ok((3, Some("r9".into()))));
    assert!(parse_token(Some("x|r9")).is_err());
    assert!((SPEC.parse_params)(&toml::Table::new()).is_ok());
    let unknown: toml::Table = toml::from_str("project = \"a\"").unwrap();
    assert!((SPEC.parse_params)(&unknown).is_err());
}
