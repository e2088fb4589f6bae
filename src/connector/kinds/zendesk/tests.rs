//! Tests of the `zendesk` kind against wiremock serving Zendesk's response shapes: paging, incremental
//! runs, resume, ties, loops, throttling, server errors, bad bodies and auth on every request.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::{header, method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::*;
use crate::connector::kinds::support_testkit::{
    self, assert_auth_on_every_request, hwm, run, run_ok, FAULT_TIMEOUT,
};
use crate::http::testing::{Fault, FaultProxy};
use crate::http::ManualClock;

const EXPORT: &str = "/api/v2/incremental/tickets/cursor.json";
const ORG_EXPORT: &str = "/api/v2/incremental/organizations";
/// `agent@example.com/token:tok_zd` in base64.
const BASIC: &str = "Basic YWdlbnRAZXhhbXBsZS5jb20vdG9rZW46dG9rX3pk";

fn ticket(id: u64, updated: &str, org: Option<u64>) -> Value {
    json!({
        "url": format!("https://acme.zendesk.com/api/v2/tickets/{id}.json"), "id": id,
        "external_id": null, "type": "incident", "subject": format!("Ticket {id}"),
        "priority": "high", "status": "open", "requester_id": 20, "submitter_id": 20,
        "assignee_id": 30, "organization_id": org, "group_id": 40, "tags": ["billing"],
        "created_at": "2026-10-01T09:00:00Z", "updated_at": updated,
        "generated_timestamp": 1_790_000_000, "satisfaction_rating": {"score": "unoffered"},
    })
}

fn export_page(tickets: Vec<Value>, after: Option<&str>) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "tickets": tickets,
        "after_url": after.map(|c| format!("https://acme.zendesk.com{EXPORT}?cursor={c}")),
        "after_cursor": after.unwrap_or("end_cursor"),
        "before_url": null, "before_cursor": null,
        "end_of_stream": after.is_none(),
    }))
}

/// Basic `{email}/token:{api_token}` as secret roles.
const SECRETS: [(&str, &str); 2] = [
    ("username", "agent@example.com/token"),
    ("password", "tok_zd"),
];

fn source(server: &MockServer) -> (Zendesk, Arc<ManualClock>) {
    zendesk(|| support_testkit::client(&server.uri(), AuthScheme::Basic, &SECRETS))
}

/// A source reaching the server through `proxy`, its requests timing out after [`FAULT_TIMEOUT`].
fn source_through(proxy: &FaultProxy) -> (Zendesk, Arc<ManualClock>) {
    zendesk(|| {
        support_testkit::client_with_timeout(
            proxy.url(),
            AuthScheme::Basic,
            &SECRETS,
            FAULT_TIMEOUT,
        )
    })
}

/// A source of every stream whose list and export clients both come from `client`, on one clock.
fn zendesk(client: impl Fn() -> (HttpClient, Arc<ManualClock>)) -> (Zendesk, Arc<ManualClock>) {
    let (http, clock) = client();
    let (export, _) = client();
    let export = export.with_clock(clock.clone());
    let streams = SPEC.streams.iter().map(|s| s.to_string()).collect();
    (Zendesk::new(http, export, streams, None), clock)
}

/// Three export pages: 1 → `c1` → `c2` → end; the second page holds a ticket without `updated_at`.
async fn mount_three_export_pages(server: &MockServer) {
    let export = || {
        Mock::given(method("GET"))
            .and(path(EXPORT))
            .and(query_param_is_missing("per_page"))
    };
    export()
        .and(query_param("start_time", "0"))
        .and(query_param_is_missing("cursor"))
        .respond_with(export_page(
            vec![
                ticket(1, "2026-11-01T10:00:00Z", Some(900)),
                ticket(2, "2026-11-02T10:00:00Z", Some(901)),
            ],
            Some("c1"),
        ))
        .mount(server)
        .await;
    let mut broken = ticket(4, "", Some(900));
    broken.as_object_mut().map(|o| o.remove("updated_at"));
    export()
        .and(query_param("cursor", "c1"))
        .respond_with(export_page(
            vec![ticket(3, "2026-11-03T10:00:00Z", None), broken],
            Some("c2"),
        ))
        .mount(server)
        .await;
    export()
        .and(query_param("cursor", "c2"))
        .respond_with(export_page(
            vec![ticket(5, "2026-11-04T10:00:00Z", Some(901))],
            None,
        ))
        .mount(server)
        .await;
}

#[tokio::test]
async fn tickets_export_three_pages_then_only_changes() {
    let server = MockServer::start().await;
    mount_three_export_pages(&server).await;
    let (src, _) = source(&server);
    let first = run_ok(&src, "tickets", None).await;
    assert_eq!(first.pages, 3);
    assert_eq!(first.ids(), ["1", "2", "3", "5"]);
    assert_eq!(first.rejected.len(), 1, "the other records go on");
    assert_eq!(first.rejected[0].id.as_deref(), Some("4"));
    assert!(first.rejected[0].reason.contains("updated_at"));
    assert_eq!(first.key(0, "zendesk_org"), Some("900"));
    assert_eq!(first.key(0, "zendesk_ticket"), Some("1"));
    assert_eq!(first.key(2, "zendesk_org"), None);
    assert_eq!(first.records[0].fields["status"], json!("open"));
    assert_eq!(first.records[0].fields["priority"], json!("high"));
    assert_eq!(
        first.records[0].fields["created_at"],
        json!("2026-10-01T09:00:00Z")
    );
    // Second run: start_time = 2026-11-04T10:00:00Z minus the five-minute lookback.
    Mock::given(path(EXPORT))
        .and(query_param("start_time", "1793786100"))
        .respond_with(export_page(
            vec![ticket(2, "2026-11-05T08:00:00Z", Some(901))],
            None,
        ))
        .expect(1)
        .mount(&server)
        .await;
    let second = run_ok(&src, "tickets", Some(first.cursor)).await;
    assert_eq!(second.ids(), ["2"]);
    assert_eq!(hwm(&second.cursor).map(|m| m.1), Some("2".to_string()));
    assert_eq!(assert_auth_on_every_request(&server, BASIC).await, 4);
}

#[tokio::test]
async fn a_timeout_and_a_reset_midway_are_retried_and_every_request_carries_the_key() {
    let server = MockServer::start().await;
    mount_three_export_pages(&server).await;
    // Request 1 is the first export page; requests 2 and 3 are the first two attempts at the second
    // (`cursor=c1`): one times out, one is reset. Request 4 fetches it, request 5 the third page.
    let proxy = FaultProxy::start(&server.uri(), &[(2, Fault::Hang), (3, Fault::Reset)]).await;
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
        support_testkit::query_of(&server, 1, "cursor")
            .await
            .as_deref(),
        Some("c1")
    );
}

#[tokio::test]
async fn resumes_from_every_checkpoint() {
    let server = MockServer::start().await;
    mount_three_export_pages(&server).await;
    let (src, _) = source(&server);
    let mut cursor = None;
    let mut checkpoints = Vec::new();
    loop {
        let page = src.fetch_page("tickets", cursor.as_ref()).await.unwrap();
        checkpoints.push(page.cursor.clone());
        cursor = Some(page.cursor);
        if page.done {
            break;
        }
    }
    assert_eq!(checkpoints.len(), 3);
    // A fresh process resuming from the checkpoint after page k fetches exactly pages k+1…
    let rest = run_ok(&source(&server).0, "tickets", Some(checkpoints[0].clone())).await;
    assert_eq!((rest.pages, rest.ids()), (2, vec!["3", "5"]));
    let rest = run_ok(&source(&server).0, "tickets", Some(checkpoints[1].clone())).await;
    assert_eq!((rest.pages, rest.ids()), (1, vec!["5"]));
}

#[tokio::test]
async fn a_future_mark_yields_nothing_without_a_request() {
    let server = MockServer::start().await;
    let (src, _) = source(&server);
    let future = json!({"hwm": {"updated_at": "2027-01-01T00:00:00Z", "id": "9"}});
    let r = run_ok(&src, "tickets", Some(Cursor(future))).await;
    assert!(r.records.is_empty());
    assert_eq!(hwm(&r.cursor).map(|m| m.1), Some("9".to_string()));
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn equal_timestamps_across_a_page_boundary_are_all_kept() {
    let server = MockServer::start().await;
    let t = "2026-11-10T12:00:00Z";
    Mock::given(path(EXPORT))
        .and(query_param_is_missing("cursor"))
        .respond_with(export_page(
            vec![ticket(7, t, Some(1)), ticket(8, t, Some(1))],
            Some("c1"),
        ))
        .mount(&server)
        .await;
    Mock::given(path(EXPORT))
        .and(query_param("cursor", "c1"))
        .respond_with(export_page(vec![ticket(9, t, Some(1))], None))
        .mount(&server)
        .await;
    let (src, _) = source(&server);
    let r = run_ok(&src, "tickets", None).await;
    assert_eq!(r.ids(), ["7", "8", "9"]);
    assert_eq!(
        hwm(&r.cursor).map(|m| (m.0.to_rfc3339(), m.1)),
        Some(("2026-11-10T12:00:00+00:00".to_string(), "9".to_string()))
    );
}

#[tokio::test]
async fn a_repeated_after_cursor_stops_with_an_error() {
    let server = MockServer::start().await;
    Mock::given(path(EXPORT))
        .respond_with(export_page(
            vec![ticket(1, "2026-11-01T00:00:00Z", None)],
            Some("same"),
        ))
        .mount(&server)
        .await;
    let (src, _) = source(&server);
    let err = run(&src, "tickets", None).await.unwrap_err().to_string();
    assert!(err.contains("page token `same` again"), "{err}");
    assert!(
        err.contains("tickets") && err.contains("connector test_test"),
        "{err}"
    );
}

#[tokio::test]
async fn throttled_export_honours_retry_after_seconds_and_http_date() {
    let server = MockServer::start().await;
    Mock::given(path(EXPORT))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "7"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path(EXPORT))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", support_testkit::http_date_after(37).as_str()),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path(EXPORT))
        .respond_with(export_page(
            vec![ticket(1, "2026-11-01T00:00:00Z", None)],
            None,
        ))
        .mount(&server)
        .await;
    let (src, clock) = source(&server);
    let r = run_ok(&src, "tickets", None).await;
    assert_eq!(r.ids(), ["1"]);
    // 7 s, then the date 37 s after the start, which is 30 s after the first wait ended.
    assert_eq!(
        clock.sleeps(),
        [Duration::from_secs(7), Duration::from_secs(30)]
    );
}

#[tokio::test]
async fn a_burst_of_server_errors_is_retried() {
    let server = MockServer::start().await;
    Mock::given(path(ORG_EXPORT))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(path(ORG_EXPORT))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path(ORG_EXPORT))
        .respond_with(org_export(vec![org(1, "acme.com")], 1_793_491_200, true))
        .mount(&server)
        .await;
    let (src, clock) = source(&server);
    let r = run_ok(&src, "organizations", None).await;
    assert_eq!(r.ids(), ["1"]);
    assert_eq!(clock.sleeps().len(), 3);
}

#[tokio::test]
async fn malformed_json_names_connector_and_stream() {
    let server = MockServer::start().await;
    Mock::given(path(EXPORT))
        .respond_with(ResponseTemplate::new(200).set_body_string("{\"tickets\": [ oops"))
        .mount(&server)
        .await;
    let (src, _) = source(&server);
    let err = run(&src, "tickets", None).await.unwrap_err().to_string();
    assert!(err.contains("stream tickets"), "{err}");
    assert!(err.contains("connector test_test"), "{err}");
}

fn org(id: u64, domain: &str) -> Value {
    json!({
        "url": format!("https://acme.zendesk.com/api/v2/organizations/{id}.json"), "id": id,
        "name": format!("Org {id}"), "shared_tickets": false, "shared_comments": false,
        "external_id": null, "domain_names": [domain, "other.example"], "details": "",
        "notes": "", "group_id": null, "tags": [], "organization_fields": {},
        "created_at": "2025-01-01T00:00:00Z", "updated_at": "2026-11-01T00:00:00Z",
    })
}

/// A legacy CSAT rating as `GET /api/v2/satisfaction_ratings` returns it.
fn rating(id: u64, ticket: Option<u64>, created: &str) -> Value {
    json!({"url": "https://acme.zendesk.com/api/v2/satisfaction_ratings/1.json", "id": id,
           "assignee_id": 30, "group_id": 40, "requester_id": 20, "ticket_id": ticket,
           "score": "bad", "comment": "slow answers", "reason": "Issue took too long",
           "created_at": created, "updated_at": "2026-11-06T00:00:00Z"})
}

fn list_page(key: &str, items: Vec<Value>, after: Option<&str>) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        key: items,
        "meta": {"has_more": after.is_some(), "after_cursor": after, "before_cursor": "b"},
        "links": {"next": after.map(|a| format!("https://acme.zendesk.com/api/v2/{key}?page[after]={a}")), "prev": null},
    }))
}

/// A page of the time-based organization export.
fn org_export(orgs: Vec<Value>, end_time: i64, end_of_stream: bool) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "organizations": orgs, "count": 1, "end_time": end_time, "end_of_stream": end_of_stream,
        "previous_page": null,
        "next_page": format!("https://acme.zendesk.com/api/v2/incremental/organizations.json?start_time={end_time}"),
    }))
}

#[tokio::test]
async fn organizations_export_by_time_then_only_what_changed() {
    let server = MockServer::start().await;
    let at = |t: i64| {
        Mock::given(path(ORG_EXPORT))
            .and(header("authorization", BASIC))
            .and(query_param("start_time", t.to_string()))
    };
    // 2026-11-01T00:00:00Z is 1_793_491_200: each page's end_time starts the next.
    at(0)
        .respond_with(org_export(vec![org(1, "Acme.com")], 1_793_000_000, false))
        .expect(1)
        .mount(&server)
        .await;
    at(1_793_000_000)
        .respond_with(org_export(vec![org(2, "beta.io")], 1_793_400_000, false))
        .expect(1)
        .mount(&server)
        .await;
    at(1_793_400_000)
        .respond_with(org_export(vec![org(3, "gamma.dev")], 1_793_491_200, true))
        .expect(1)
        .mount(&server)
        .await;
    // The next run: from the high-water mark (every org's updated_at) minus five minutes.
    at(1_793_491_200 - 300)
        .respond_with(org_export(vec![], 1_793_491_200, true))
        .expect(1)
        .mount(&server)
        .await;
    let (src, _) = source(&server);
    let r = run_ok(&src, "organizations", None).await;
    assert_eq!((r.pages, r.ids()), (3, vec!["1", "2", "3"]));
    assert_eq!(r.key(0, "domain"), Some("acme.com"));
    assert_eq!(r.key(0, "zendesk_org"), Some("1"));
    let again = run_ok(&src, "organizations", Some(r.cursor)).await;
    assert!(again.records.is_empty(), "only what changed");

    // A page whose end_time does not move would loop: an error, not a spin.
    let stuck = MockServer::start().await;
    Mock::given(path(ORG_EXPORT))
        .respond_with(org_export(vec![org(1, "a.com")], 1_793_000_000, false))
        .mount(&stuck)
        .await;
    let (src, _) = source(&stuck);
    let err = run(&src, "organizations", None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("1793000000"), "{err}");
}

#[tokio::test]
async fn satisfaction_ratings_filter_on_created_at_from_the_second_run() {
    let server = MockServer::start().await;
    let ratings = || Mock::given(path("/api/v2/satisfaction_ratings"));
    let rating = |id, ticket, created: &str| rating(id, ticket, created);
    ratings()
        .and(query_param_is_missing("start_time"))
        .respond_with(list_page(
            "satisfaction_ratings",
            vec![
                rating(11, Some(1), "2026-11-01T00:00:00Z"),
                rating(12, None, "2026-11-02T00:00:00Z"),
            ],
            None,
        ))
        .expect(1)
        .mount(&server)
        .await;
    // 2026-11-01T00:00:00Z minus five minutes.
    ratings()
        .and(query_param("start_time", "1793490900"))
        .respond_with(list_page("satisfaction_ratings", vec![], None))
        .expect(1)
        .mount(&server)
        .await;
    let (src, _) = source(&server);
    let r = run_ok(&src, "satisfaction_ratings", None).await;
    assert_eq!(r.ids(), ["11"]);
    assert_eq!(r.key(0, "zendesk_ticket"), Some("1"));
    assert_eq!(r.records[0].fields["score"], json!("bad"));
    assert_eq!(r.rejected[0].reason, "missing `ticket_id`");
    let again = run_ok(&src, "satisfaction_ratings", Some(r.cursor)).await;
    assert!(again.records.is_empty());
}

#[tokio::test]
async fn oauth_bearer_is_sent_on_every_request() {
    let server = MockServer::start().await;
    Mock::given(path(ORG_EXPORT))
        .respond_with(org_export(vec![org(1, "a.com")], 1_793_491_200, true))
        .mount(&server)
        .await;
    let (http, _) =
        support_testkit::client(&server.uri(), AuthScheme::Bearer, &[("token", "oauth_zd")]);
    let (export, _) =
        support_testkit::client(&server.uri(), AuthScheme::Bearer, &[("token", "oauth_zd")]);
    let src = Zendesk::new(http, export, vec!["organizations".into()], None);
    run_ok(&src, "organizations", None).await;
    run_ok(&src, "organizations", None).await;
    assert_eq!(
        assert_auth_on_every_request(&server, "Bearer oauth_zd").await,
        2
    );
}

#[test]
fn params_and_the_export_quota() {
    let ok: toml::Table = toml::from_str("incremental_per_min = 30").unwrap();
    assert!((SPEC.parse_params)(&ok).is_ok());
    assert_eq!(incremental_per_min(&toml::Table::new()), Ok(10));
    let bad: toml::Table = toml::from_str("incremental_per_min = 0").unwrap();
    assert!((SPEC.parse_params)(&bad).unwrap_err().contains("1 to 1000"));
    let unknown: toml::Table = toml::from_str("subdomain = \"acme\"").unwrap();
    assert!((SPEC.parse_params)(&unknown)
        .unwrap_err()
        .contains("unknown key"));
}

#[test]
fn build_gives_the_export_its_own_quota() {
    use crate::http::testing::{config, secrets};
    let mut cfg = config(
        "zendesk",
        Role::Source,
        "http://127.0.0.1:9",
        AuthScheme::Bearer,
    );
    let s = secrets(&mut cfg, &[("token", "t")]);
    let ctx = BuildContext {
        connector: &cfg,
        secrets: &s,
    };
    assert!(matches!(build(&ctx), Ok(Built::Source(_))));
    let settings = |cfg: &crate::config::ConnectorConfig| {
        export_config(cfg, cfg.params.get::<Settings>().unwrap()).rate_limit
    };
    assert_eq!(settings(&cfg), RateLimit::per_secs(10, 60));
    cfg.params = (SPEC.parse_params)(&toml::from_str("incremental_per_min = 30").unwrap()).unwrap();
    assert_eq!(settings(&cfg), RateLimit::per_secs(30, 60));
}

#[tokio::test]
async fn refused_credentials_are_not_retried() {
    let server = MockServer::start().await;
    Mock::given(path(EXPORT))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"error": "Couldn't authenticate you"})),
        )
        .mount(&server)
        .await;
    let (src, clock) = source(&server);
    let err = run(&src, "tickets", None).await.unwrap_err();
    assert!(
        matches!(err, SourceError::Http(crate::http::HttpError::Auth { .. })),
        "{err:?}"
    );
    assert!(!err.to_string().contains("tok_zd"), "{err}");
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    assert!(clock.sleeps().is_empty());
}

#[tokio::test]
async fn a_spent_quota_pauses_the_next_request_until_the_reset() {
    let server = MockServer::start().await;
    let spent = |items: Vec<Value>, after: Option<&str>| {
        list_page("satisfaction_ratings", items, after)
            .insert_header("ratelimit-limit", "200")
            .insert_header("ratelimit-remaining", "0")
            .insert_header("ratelimit-reset", "41")
    };
    Mock::given(path("/api/v2/satisfaction_ratings"))
        .and(query_param_is_missing("page[after]"))
        .respond_with(spent(
            vec![rating(1, Some(7), "2026-11-01T00:00:00Z")],
            Some("o1"),
        ))
        .mount(&server)
        .await;
    Mock::given(path("/api/v2/satisfaction_ratings"))
        .and(query_param("page[after]", "o1"))
        .respond_with(list_page(
            "satisfaction_ratings",
            vec![rating(2, Some(8), "2026-11-02T00:00:00Z")],
            None,
        ))
        .mount(&server)
        .await;
    let (src, clock) = source(&server);
    let r = run_ok(&src, "satisfaction_ratings", None).await;
    assert_eq!(r.ids(), ["1", "2"]);
    assert_eq!(clock.sleeps(), [Duration::from_secs(41)]);
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        2,
        "no 429 spent"
    );
}
