//! Tests of the `freshdesk` kind against wiremock serving Freshdesk's shapes: `Link` paging, incremental
//! `updated_since`, resume, ties, loops, foreign links, the page cap, throttling and bad bodies.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::*;
use crate::connector::kinds::support_testkit::{
    self, assert_auth_on_every_request, hwm, run, run_ok, FAULT_TIMEOUT,
};
use crate::http::testing::{Fault, FaultProxy};
use crate::http::ManualClock;

/// `fd_key:X` in base64.
const BASIC: &str = "Basic ZmRfa2V5Olg=";

fn ticket(id: u64, updated: &str, company: Option<u64>) -> Value {
    json!({
        "cc_emails": [], "fwd_emails": [], "reply_cc_emails": [], "fr_escalated": false, "spam": false,
        "email_config_id": null, "group_id": 7, "priority": 4, "requester_id": 33, "responder_id": 44,
        "source": 1, "company_id": company, "status": 2, "subject": format!("Ticket {id}"),
        "to_emails": null, "product_id": null, "id": id, "type": "Question",
        "due_by": "2026-11-30T00:00:00Z", "fr_due_by": "2026-11-25T00:00:00Z", "is_escalated": false,
        "custom_fields": {}, "created_at": "2026-10-01T09:00:00Z", "updated_at": updated, "tags": [],
    })
}

fn page(items: Vec<Value>, next: Option<&str>) -> ResponseTemplate {
    let mut r = ResponseTemplate::new(200)
        .set_body_json(items)
        .insert_header("x-ratelimit-total", "200")
        .insert_header("x-ratelimit-remaining", "199")
        .insert_header("x-ratelimit-used-currentrequest", "1");
    if let Some(n) = next {
        r = r.insert_header("link", format!("<{n}>; rel=\"next\"").as_str());
    }
    r
}

/// The API key and Freshdesk's dummy password `X` as secret roles.
const SECRETS: [(&str, &str); 2] = [("username", "fd_key"), ("password", "X")];

fn source(server: &MockServer) -> (Freshdesk, Arc<ManualClock>) {
    freshdesk(support_testkit::client(
        &server.uri(),
        AuthScheme::Basic,
        &SECRETS,
    ))
}

/// A source reaching the server through `proxy`, its requests timing out after [`FAULT_TIMEOUT`].
fn source_through(proxy: &FaultProxy) -> (Freshdesk, Arc<ManualClock>) {
    freshdesk(support_testkit::client_with_timeout(
        proxy.url(),
        AuthScheme::Basic,
        &SECRETS,
        FAULT_TIMEOUT,
    ))
}

fn freshdesk((http, clock): (HttpClient, Arc<ManualClock>)) -> (Freshdesk, Arc<ManualClock>) {
    let streams = SPEC.streams.iter().map(|s| s.to_string()).collect();
    (Freshdesk::new(http, streams, None), clock)
}

/// Three ticket pages whose `Link` headers point at `base` (the host the source is configured with).
async fn mount_three_pages(server: &MockServer, base: &str) {
    let tickets = || Mock::given(method("GET")).and(path("/api/v2/tickets"));
    let link = |p: u32| {
        format!("{base}/api/v2/tickets?updated_since=2000-01-01T00:00:00Z&order_by=updated_at&order_type=asc&per_page=100&page={p}")
    };
    tickets()
        .and(query_param("updated_since", "2000-01-01T00:00:00Z"))
        .and(query_param("order_by", "updated_at"))
        .and(query_param("order_type", "asc"))
        .and(query_param("per_page", "100"))
        .and(query_param("page", "1"))
        .respond_with(page(
            vec![
                ticket(1, "2026-11-01T10:00:00Z", Some(500)),
                ticket(2, "2026-11-02T10:00:00Z", None),
            ],
            Some(&link(2)),
        ))
        .mount(server)
        .await;
    let mut broken = ticket(4, "", Some(500));
    broken.as_object_mut().map(|o| o.remove("updated_at"));
    tickets()
        .and(query_param("page", "2"))
        .respond_with(page(
            vec![ticket(3, "2026-11-03T10:00:00Z", Some(501)), broken],
            Some(&link(3)),
        ))
        .mount(server)
        .await;
    tickets()
        .and(query_param("page", "3"))
        .respond_with(page(
            vec![ticket(5, "2026-11-04T10:00:00Z", Some(500))],
            None,
        ))
        .mount(server)
        .await;
}

#[tokio::test]
async fn tickets_follow_link_pages_then_only_changes() {
    let server = MockServer::start().await;
    mount_three_pages(&server, &server.uri()).await;
    let (src, _) = source(&server);
    let first = run_ok(&src, "tickets", None).await;
    assert_eq!((first.pages, first.ids()), (3, vec!["1", "2", "3", "5"]));
    assert_eq!(first.rejected.len(), 1);
    assert_eq!(first.rejected[0].id.as_deref(), Some("4"));
    assert_eq!(first.key(0, "freshdesk_company"), Some("500"));
    assert_eq!(first.key(1, "freshdesk_company"), None);
    assert_eq!(first.records[0].fields["status_label"], json!("open"));
    assert_eq!(first.records[0].fields["priority_label"], json!("urgent"));
    assert_eq!(first.records[0].fields["priority"], json!(4));
    Mock::given(path("/api/v2/tickets"))
        .and(query_param("updated_since", "2026-11-04T09:55:00Z"))
        .and(query_param("page", "1"))
        .respond_with(page(vec![ticket(2, "2026-11-05T00:00:00Z", None)], None))
        .expect(1)
        .mount(&server)
        .await;
    let second = run_ok(&src, "tickets", Some(first.cursor)).await;
    assert_eq!(second.ids(), ["2"]);
    assert_eq!(assert_auth_on_every_request(&server, BASIC).await, 4);
}

#[tokio::test]
async fn a_timeout_and_a_reset_midway_are_retried_and_every_request_carries_the_key() {
    let server = MockServer::start().await;
    let proxy = FaultProxy::start(&server.uri(), &[(2, Fault::Hang), (3, Fault::Reset)]).await;
    // The `Link` headers name the proxy: the source refuses a next page on another host.
    mount_three_pages(&server, proxy.url()).await;
    // Request 1 is page 1; requests 2 and 3 are the first two attempts at page 2 (the `Link` target):
    // one times out, one is reset. Request 4 fetches it, request 5 page 3.
    let (src, clock) = source_through(&proxy);
    let r = run_ok(&src, "tickets", None).await;
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
    mount_three_pages(&server, &server.uri()).await;
    let (src, _) = source(&server);
    let p1 = src.fetch_page("tickets", None).await.unwrap();
    let p2 = src.fetch_page("tickets", Some(&p1.cursor)).await.unwrap();
    let rest = run_ok(&source(&server).0, "tickets", Some(p1.cursor)).await;
    assert_eq!((rest.pages, rest.ids()), (2, vec!["3", "5"]));
    let rest = run_ok(&source(&server).0, "tickets", Some(p2.cursor)).await;
    assert_eq!((rest.pages, rest.ids()), (1, vec!["5"]));

    Mock::given(path("/api/v2/tickets"))
        .and(query_param("updated_since", "2027-01-01T11:55:00Z"))
        .respond_with(page(vec![], None))
        .expect(1)
        .mount(&server)
        .await;
    let future = json!({"hwm": {"updated_at": "2027-01-01T12:00:00Z", "id": "9"}});
    let r = run_ok(&src, "tickets", Some(Cursor(future))).await;
    assert!(r.records.is_empty());
    assert_eq!(hwm(&r.cursor).map(|m| m.1), Some("9".to_string()));
}

#[tokio::test]
async fn equal_timestamps_across_a_page_boundary_are_all_kept() {
    let server = MockServer::start().await;
    let t = "2026-11-10T12:00:00Z";
    let next = format!("{}/api/v2/tickets?page=2", server.uri());
    Mock::given(path("/api/v2/tickets"))
        .and(query_param("page", "1"))
        .respond_with(page(
            vec![ticket(7, t, None), ticket(8, t, None)],
            Some(&next),
        ))
        .mount(&server)
        .await;
    Mock::given(path("/api/v2/tickets"))
        .and(query_param("page", "2"))
        .respond_with(page(vec![ticket(9, t, None)], None))
        .mount(&server)
        .await;
    let r = run_ok(&source(&server).0, "tickets", None).await;
    assert_eq!(r.ids(), ["7", "8", "9"]);
    assert_eq!(hwm(&r.cursor).map(|m| m.1), Some("9".to_string()));
}

#[tokio::test]
async fn a_repeated_or_foreign_next_link_stops_with_an_error() {
    let server = MockServer::start().await;
    let same = format!("{}/api/v2/companies?page=2", server.uri());
    Mock::given(path("/api/v2/companies"))
        .respond_with(page(
            vec![
                json!({"id": 1, "name": "A", "domains": [], "updated_at": "2026-01-01T00:00:00Z"}),
            ],
            Some(&same),
        ))
        .mount(&server)
        .await;
    let err = run(&source(&server).0, "companies", None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("again") && err.contains("stream companies"),
        "{err}"
    );

    let other = MockServer::start().await;
    Mock::given(path("/api/v2/companies"))
        .respond_with(page(
            vec![],
            Some("https://evil.example/api/v2/companies?page=2"),
        ))
        .mount(&other)
        .await;
    let err = run(&source(&other).0, "companies", None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not following it"), "{err}");
    assert_eq!(other.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn the_page_cap_restarts_the_query_from_the_highest_mark() {
    let server = MockServer::start().await;
    let next = format!("{}/api/v2/tickets?page=301", server.uri());
    Mock::given(path("/api/v2/tickets"))
        .and(query_param("updated_since", "2000-01-01T00:00:00Z"))
        .respond_with(page(
            vec![ticket(1, "2026-11-01T00:00:00Z", None)],
            Some(&next),
        ))
        .mount(&server)
        .await;
    Mock::given(path("/api/v2/tickets"))
        .and(query_param("updated_since", "2026-11-01T00:00:00Z"))
        .and(query_param("page", "1"))
        .respond_with(page(vec![ticket(2, "2026-11-02T00:00:00Z", None)], None))
        .expect(1)
        .mount(&server)
        .await;
    let r = run_ok(&source(&server).0, "tickets", None).await;
    assert_eq!(r.ids(), ["1", "2"]);
}

#[tokio::test]
async fn throttling_honours_retry_after_and_server_errors_are_retried() {
    let server = MockServer::start().await;
    let limited = |after: &str| {
        ResponseTemplate::new(429)
            .insert_header("retry-after", after)
            .insert_header("x-ratelimit-remaining", "0")
            .set_body_json(json!({"code": "rate_limit_exceeded", "message": "too many requests"}))
    };
    Mock::given(path("/api/v2/companies"))
        .respond_with(limited("20"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/api/v2/companies"))
        .respond_with(limited(&support_testkit::http_date_after(45)))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/api/v2/companies"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(path("/api/v2/companies"))
        .respond_with(page(
            vec![json!({"id": 9, "name": "Acme", "domains": ["Acme.com"], "created_at": "2025-01-01T00:00:00Z",
                        "updated_at": "2026-01-01T00:00:00Z", "custom_fields": {}, "health_score": null})],
            None,
        ))
        .mount(&server)
        .await;
    let (src, clock) = source(&server);
    let r = run_ok(&src, "companies", None).await;
    assert_eq!(r.key(0, "domain"), Some("acme.com"));
    assert_eq!(r.key(0, "freshdesk_company"), Some("9"));
    let sleeps = clock.sleeps();
    assert_eq!(sleeps.len(), 4, "{sleeps:?}");
    assert_eq!(
        &sleeps[..2],
        [Duration::from_secs(20), Duration::from_secs(25)]
    );
}

#[tokio::test]
async fn malformed_json_names_connector_and_stream() {
    let server = MockServer::start().await;
    Mock::given(path("/api/v2/tickets"))
        .respond_with(ResponseTemplate::new(200).set_body_string("[{\"id\": 1,"))
        .mount(&server)
        .await;
    let err = run(&source(&server).0, "tickets", None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("stream tickets") && err.contains("connector test_test"),
        "{err}"
    );
}

#[test]
fn link_headers_are_parsed() {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        reqwest::header::LINK,
        "<https://a.freshdesk.com/api/v2/tickets?page=1>; rel=\"prev\", <https://a.freshdesk.com/api/v2/tickets?page=3>; rel=\"next\""
            .parse()
            .unwrap(),
    );
    assert_eq!(
        next_link(&h).as_deref(),
        Some("https://a.freshdesk.com/api/v2/tickets?page=3")
    );
    assert_eq!(
        page_number("/api/v2/tickets?per_page=100&page=301"),
        Some(301)
    );
    assert!(next_link(&reqwest::header::HeaderMap::new()).is_none());
}
