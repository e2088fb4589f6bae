//! Tests of the `intercom` kind against wiremock serving the 2.14 spec's shapes: list then search,
//! resume, ties, loops, `X-RateLimit-Reset`, server errors, bad bodies, and auth plus version headers.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::{
    body_partial_json, header, method, path, query_param, query_param_is_missing,
};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::*;
use crate::connector::kinds::support_testkit::{
    self, assert_auth_on_every_request, hwm, run, run_ok, FAULT_TIMEOUT,
};
use crate::http::testing::{Fault, FaultProxy};
use crate::http::ManualClock;

/// 2026-11-23T12:00:00Z, the manual clock's start.
const NOW: i64 = 1_795_435_200;

fn conversation(id: &str, updated: i64, email: Option<&str>) -> Value {
    let author = match email {
        Some(e) => json!({"type": "user", "id": "c1", "name": "Jane", "email": e}),
        None => {
            json!({"type": "admin", "id": "991267628", "name": "Agent", "email": "agent@intercom.example"})
        }
    };
    json!({
        "type": "conversation", "id": id, "title": null, "created_at": 1_790_000_000, "updated_at": updated,
        "waiting_since": null, "snoozed_until": null, "open": true, "state": "open", "read": false,
        "priority": "priority", "admin_assignee_id": 991267628, "team_assignee_id": null,
        "tags": {"type": "tag.list", "tags": []},
        "conversation_rating": {"rating": 2, "remark": "meh", "created_at": 1_790_000_100},
        "source": {"type": "conversation", "id": "403918320", "delivered_as": "customer_initiated",
                   "subject": "", "body": "<p>help</p>", "author": author, "attachments": [], "url": null, "redacted": false},
        "contacts": {"type": "contact.list", "contacts": [{"type": "contact", "id": format!("contact_{id}"), "external_id": "70"}]},
        "teammates": null, "custom_attributes": {}, "first_contact_reply": null, "sla_applied": null,
        "statistics": null, "conversation_parts": null,
    })
}

fn conversation_list(items: Vec<Value>, next: Option<&str>) -> ResponseTemplate {
    let mut pages = json!({"type": "pages", "page": 1, "per_page": 150, "total_pages": 3});
    if let Some(n) = next {
        pages["next"] = json!({"per_page": 150, "starting_after": n});
    }
    ResponseTemplate::new(200).set_body_json(json!({
        "type": "conversation.list", "pages": pages, "total_count": 5, "conversations": items,
    }))
}

fn source(server: &MockServer) -> (Intercom, Arc<ManualClock>) {
    intercom(support_testkit::client(
        &server.uri(),
        AuthScheme::Bearer,
        &[("token", "tok_ic")],
    ))
}

/// A source reaching the server through `proxy`, its requests timing out after [`FAULT_TIMEOUT`].
fn source_through(proxy: &FaultProxy) -> (Intercom, Arc<ManualClock>) {
    intercom(support_testkit::client_with_timeout(
        proxy.url(),
        AuthScheme::Bearer,
        &[("token", "tok_ic")],
        FAULT_TIMEOUT,
    ))
}

fn intercom((http, clock): (HttpClient, Arc<ManualClock>)) -> (Intercom, Arc<ManualClock>) {
    let streams = SPEC.streams.iter().map(|s| s.to_string()).collect();
    (Intercom::new(http, streams, None), clock)
}

async fn mount_three_list_pages(server: &MockServer) {
    let list = || {
        Mock::given(method("GET"))
            .and(path("/conversations"))
            .and(query_param("per_page", "150"))
            .and(header("intercom-version", "2.14"))
    };
    list()
        .and(query_param_is_missing("starting_after"))
        .respond_with(conversation_list(
            vec![
                conversation("1", 1_790_000_000, Some("jane@Acme.com")),
                conversation("2", 1_790_000_500, None),
            ],
            Some("WzE3OTAwMDA1MDAsMl0="),
        ))
        .mount(server)
        .await;
    let mut broken = conversation("4", 0, None);
    broken.as_object_mut().map(|o| o.remove("updated_at"));
    list()
        .and(query_param("starting_after", "WzE3OTAwMDA1MDAsMl0="))
        .respond_with(conversation_list(
            vec![
                conversation("3", 1_790_001_000, Some("ops@beta.io")),
                broken,
            ],
            Some("p3"),
        ))
        .mount(server)
        .await;
    list()
        .and(query_param("starting_after", "p3"))
        .respond_with(conversation_list(
            vec![conversation("5", 1_790_002_000, None)],
            None,
        ))
        .mount(server)
        .await;
}

#[tokio::test]
async fn conversations_list_three_pages_then_search_only_changes() {
    let server = MockServer::start().await;
    mount_three_list_pages(&server).await;
    let (src, _) = source(&server);
    let first = run_ok(&src, "conversations", None).await;
    assert_eq!((first.pages, first.ids()), (3, vec!["1", "2", "3", "5"]));
    assert_eq!(first.rejected.len(), 1);
    assert_eq!(first.rejected[0].id.as_deref(), Some("4"));
    assert!(first.rejected[0].reason.contains("updated_at"));
    assert_eq!(first.key(0, "domain"), Some("acme.com"));
    assert_eq!(first.key(0, "intercom_contact"), Some("contact_1"));
    assert_eq!(
        first.key(1, "domain"),
        None,
        "an admin's address is not the account's"
    );
    assert_eq!(first.records[0].fields["state"], json!("open"));
    assert_eq!(
        first.records[0].fields["conversation_rating"]["rating"],
        json!(2)
    );
    // Second run: search updated_at > mark − 300 s − 1.
    Mock::given(method("POST"))
        .and(path("/conversations/search"))
        .and(body_partial_json(json!({
            "query": {"field": "updated_at", "operator": ">", "value": 1_790_002_000 - 301},
            "pagination": {"per_page": 150},
        })))
        .respond_with(conversation_list(
            vec![conversation("2", 1_790_003_000, None)],
            None,
        ))
        .expect(1)
        .mount(&server)
        .await;
    let second = run_ok(&src, "conversations", Some(first.cursor)).await;
    assert_eq!(second.ids(), ["2"]);
    assert_eq!(hwm(&second.cursor).map(|m| m.1), Some("2".to_string()));
    let n = assert_auth_on_every_request(&server, "Bearer tok_ic").await;
    assert_eq!(n, 4);
    for r in server.received_requests().await.unwrap() {
        assert_eq!(r.headers.get("intercom-version").unwrap(), "2.14");
    }
}

#[tokio::test]
async fn a_timeout_and_a_reset_midway_are_retried_and_every_request_carries_the_key() {
    let server = MockServer::start().await;
    mount_three_list_pages(&server).await;
    // Request 1 is the first list page; requests 2 and 3 are the first two attempts at the second
    // (`starting_after=WzE3…`): one times out, one is reset. Request 4 fetches it, request 5 the third page.
    let proxy = FaultProxy::start(&server.uri(), &[(2, Fault::Hang), (3, Fault::Reset)]).await;
    let (src, clock) = source_through(&proxy);
    let r = run_ok(&src, "conversations", None).await;
    assert_eq!((r.pages, r.ids()), (3, vec!["1", "2", "3", "5"]));
    assert_eq!(r.rejected.len(), 1, "the second page arrived whole");
    assert_eq!(proxy.requests(), 5);
    assert_eq!(clock.sleeps().len(), 2, "one backoff per failed attempt");
    assert_eq!(
        assert_auth_on_every_request(&server, "Bearer tok_ic").await,
        3,
        "the faulted attempts never reached the server"
    );
    for r in server.received_requests().await.unwrap() {
        assert_eq!(r.headers.get("intercom-version").unwrap(), "2.14");
    }
    assert_eq!(
        support_testkit::query_of(&server, 1, "starting_after")
            .await
            .as_deref(),
        Some("WzE3OTAwMDA1MDAsMl0=")
    );
}

#[tokio::test]
async fn resumes_from_every_checkpoint_and_a_future_mark_finds_nothing() {
    let server = MockServer::start().await;
    mount_three_list_pages(&server).await;
    let (src, _) = source(&server);
    let p1 = src.fetch_page("conversations", None).await.unwrap();
    let p2 = src
        .fetch_page("conversations", Some(&p1.cursor))
        .await
        .unwrap();
    let rest = run_ok(&source(&server).0, "conversations", Some(p1.cursor)).await;
    assert_eq!((rest.pages, rest.ids()), (2, vec!["3", "5"]));
    let rest = run_ok(&source(&server).0, "conversations", Some(p2.cursor)).await;
    assert_eq!((rest.pages, rest.ids()), (1, vec!["5"]));

    Mock::given(path("/conversations/search"))
        .and(body_partial_json(
            json!({"query": {"value": NOW + 86_400 - 301}}),
        ))
        .respond_with(conversation_list(vec![], None))
        .expect(1)
        .mount(&server)
        .await;
    let future = json!({"hwm": {"updated_at": "2026-11-24T12:00:00Z", "id": "9"}});
    let r = run_ok(&src, "conversations", Some(Cursor(future))).await;
    assert!(r.records.is_empty());
    assert_eq!(hwm(&r.cursor).map(|m| m.1), Some("9".to_string()));
}

#[tokio::test]
async fn equal_timestamps_across_a_page_boundary_are_all_kept() {
    let server = MockServer::start().await;
    let t = 1_790_000_000;
    Mock::given(path("/conversations"))
        .and(query_param_is_missing("starting_after"))
        .respond_with(conversation_list(
            vec![conversation("7", t, None), conversation("8", t, None)],
            Some("c1"),
        ))
        .mount(&server)
        .await;
    Mock::given(path("/conversations"))
        .and(query_param("starting_after", "c1"))
        .respond_with(conversation_list(vec![conversation("9", t, None)], None))
        .mount(&server)
        .await;
    let r = run_ok(&source(&server).0, "conversations", None).await;
    assert_eq!(r.ids(), ["7", "8", "9"]);
    assert_eq!(
        hwm(&r.cursor).map(|m| (m.0.timestamp(), m.1)),
        Some((t, "9".into()))
    );
}

#[tokio::test]
async fn a_repeated_starting_after_stops_with_an_error() {
    let server = MockServer::start().await;
    Mock::given(path("/conversations"))
        .respond_with(conversation_list(
            vec![conversation("1", 1, None)],
            Some("same"),
        ))
        .mount(&server)
        .await;
    let err = run(&source(&server).0, "conversations", None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("page token `same` again"), "{err}");
    assert!(
        err.contains("conversations") && err.contains("connector test_test"),
        "{err}"
    );
}

#[tokio::test]
async fn throttled_waits_until_the_unix_reset_and_server_errors_are_retried() {
    let server = MockServer::start().await;
    let limited = ResponseTemplate::new(429)
        .insert_header("x-ratelimit-limit", "166")
        .insert_header("x-ratelimit-remaining", "0")
        .insert_header("x-ratelimit-reset", (NOW + 8).to_string().as_str())
        .set_body_json(json!({"type": "error.list", "request_id": "r1",
            "errors": [{"code": "rate_limit_exceeded", "message": "Exceeded rate limit of 166 in 10_seconds"}]}));
    Mock::given(path("/conversations"))
        .respond_with(limited)
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/conversations"))
        .respond_with(ResponseTemplate::new(502))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(path("/conversations"))
        .respond_with(conversation_list(vec![conversation("1", 5, None)], None))
        .mount(&server)
        .await;
    let (src, clock) = source(&server);
    let r = run_ok(&src, "conversations", None).await;
    assert_eq!(r.ids(), ["1"]);
    let sleeps = clock.sleeps();
    assert_eq!(sleeps.len(), 3, "{sleeps:?}");
    assert_eq!(sleeps[0], Duration::from_secs(8), "until X-RateLimit-Reset");
}

#[test]
fn reset_header_in_the_past_means_no_wait() {
    let mut h = HeaderMap::new();
    h.insert("x-ratelimit-reset", "100".parse().unwrap());
    let now = chrono::TimeZone::timestamp_opt(&Utc, 200, 0).unwrap();
    assert_eq!(reset_wait(&h, now), Some(Duration::ZERO));
    h.insert("x-ratelimit-reset", "230".parse().unwrap());
    assert_eq!(reset_wait(&h, now), Some(Duration::from_secs(30)));
}

#[tokio::test]
async fn malformed_json_names_connector_and_stream() {
    let server = MockServer::start().await;
    Mock::given(path("/conversations"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>oops</html>"))
        .mount(&server)
        .await;
    let err = run(&source(&server).0, "conversations", None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("stream conversations") && err.contains("connector test_test"),
        "{err}"
    );
}

fn company(id: &str, website: &str) -> Value {
    json!({
        "type": "company", "id": id, "name": format!("Co {id}"), "app_id": "app",
        "plan": {}, "company_id": format!("crm_{id}"), "remote_created_at": 1_700_000_000,
        "created_at": 1_700_000_000, "updated_at": 1_790_000_000, "last_request_at": 1_790_000_000,
        "size": 50, "website": website, "industry": "Software", "monthly_spend": 1200,
        "session_count": 40, "user_count": 7, "custom_attributes": {},
        "tags": {"type": "tag.list", "tags": []}, "segments": {"type": "segment.list", "segments": []},
    })
}

fn company_page(items: Vec<Value>, page: u64, total_pages: u64, total: u64) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "type": "list", "data": items, "total_count": total,
        "pages": {"type": "pages", "page": page, "per_page": 50, "total_pages": total_pages},
    }))
}

#[tokio::test]
async fn companies_page_by_number_and_refuse_more_than_the_list_cap() {
    let server = MockServer::start().await;
    for (page, items) in [
        (1, vec![company("a", "https://www.Acme.com/about")]),
        (2, vec![company("b", "beta.io")]),
        (3, vec![company("c", "")]),
    ] {
        Mock::given(method("POST"))
            .and(path("/companies/list"))
            .and(query_param("page", page.to_string().as_str()))
            .and(query_param("per_page", "50"))
            .respond_with(company_page(items, page, 3, 3))
            .mount(&server)
            .await;
    }
    let (src, _) = source(&server);
    let r = run_ok(&src, "companies", None).await;
    assert_eq!((r.pages, r.ids()), (3, vec!["a", "b", "c"]));
    assert_eq!(r.key(0, "domain"), Some("acme.com"));
    assert_eq!(r.key(1, "domain"), Some("beta.io"));
    assert_eq!(r.key(2, "domain"), None);
    assert_eq!(r.key(0, "intercom_company"), Some("a"));
    assert_eq!(r.records[0].fields["monthly_spend"], json!(1200));

    let big = MockServer::start().await;
    Mock::given(path("/companies/list"))
        .respond_with(company_page(vec![company("a", "a.com")], 1, 200, 10_001))
        .mount(&big)
        .await;
    let err = run(&source(&big).0, "companies", None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("10001 companies"), "{err}");
}

#[test]
fn params_are_validated() {
    assert!((SPEC.parse_params)(&toml::Table::new()).is_ok());
    let unknown: toml::Table = toml::from_str("region = \"eu\"").unwrap();
    assert!((SPEC.parse_params)(&unknown)
        .unwrap_err()
        .contains("takes no params"));
}

#[tokio::test]
async fn a_spent_quota_pauses_the_next_request_until_the_unix_reset() {
    let server = MockServer::start().await;
    Mock::given(path("/conversations"))
        .and(query_param_is_missing("starting_after"))
        .respond_with(
            conversation_list(vec![conversation("1", 5, None)], Some("c1"))
                .insert_header("x-ratelimit-limit", "166")
                .insert_header("x-ratelimit-remaining", "0")
                .insert_header("x-ratelimit-reset", (NOW + 6).to_string().as_str()),
        )
        .mount(&server)
        .await;
    Mock::given(path("/conversations"))
        .and(query_param("starting_after", "c1"))
        .respond_with(
            conversation_list(vec![conversation("2", 6, None)], None)
                .insert_header("x-ratelimit-remaining", "165")
                .insert_header("x-ratelimit-reset", (NOW + 16).to_string().as_str()),
        )
        .mount(&server)
        .await;
    let (src, clock) = source(&server);
    let r = run_ok(&src, "conversations", None).await;
    assert_eq!(r.ids(), ["1", "2"]);
    assert_eq!(clock.sleeps(), [Duration::from_secs(6)]);
}
