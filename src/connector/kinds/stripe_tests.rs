//! Tests of the `stripe` kind against wiremock serving Stripe's list, events and retrieve responses:
//! paging by `starting_after`, incremental runs through events, throttling and errors.

use super::*;
use crate::connector::kinds::testkit::drain;
use crate::http::testing::{
    assert_every_request_carries, bearer_client, bearer_client_behind_proxy, Fault, FaultProxy,
};
use crate::http::HttpError;
use serde_json::json;
use wiremock::matchers::{header, method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A customer as in Stripe's 2023-09-12 fixtures.
fn customer(id: &str, created: i64, crm: Option<&str>) -> Value {
    let metadata = match crm {
        Some(c) => json!({"hubspot_company_id": c}),
        None => json!({}),
    };
    json!({
        "id": id, "object": "customer", "address": null, "balance": 0, "created": created,
        "currency": "usd", "default_source": null, "delinquent": false, "description": null,
        "email": format!("billing@{id}.example"), "invoice_prefix": "F79089B", "livemode": false,
        "metadata": metadata, "name": null, "next_invoice_sequence": 1, "phone": null,
        "preferred_locales": [], "shipping": null, "tax_exempt": "none", "test_clock": null,
    })
}

fn invoice(id: &str, created: i64, paid_at: Option<i64>) -> Value {
    json!({
        "id": id, "object": "invoice", "amount_due": 1000, "amount_paid": 0, "created": created,
        "currency": "usd", "customer": "cus_A", "status": if paid_at.is_some() { "paid" } else { "open" },
        "status_transitions": {"finalized_at": created, "marked_uncollectible_at": null, "paid_at": paid_at, "voided_at": null},
        "livemode": false, "metadata": {},
    })
}

fn list(url: &str, data: Vec<Value>, has_more: bool) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .set_body_json(json!({"object": "list", "url": url, "has_more": has_more, "data": data}))
}

fn source(server: &MockServer) -> Stripe {
    let (http, _) = bearer_client(&server.uri());
    Stripe::new(
        http.with_classifier(classify),
        SPEC.streams.iter().map(|s| s.to_string()).collect(),
        DEFAULT_CRM_KEY.into(),
        None,
    )
}

/// [`drain`], as the tuple the older tests destructure.
async fn run_to_end(
    src: &Stripe,
    stream: &str,
    cursor: Option<Cursor>,
) -> (Vec<Record>, Vec<RejectedRecord>, Cursor, usize) {
    let d = drain(src, stream, cursor).await.unwrap();
    (d.records, d.rejected, d.cursor, d.pages)
}

#[tokio::test]
async fn customers_across_pages_with_keys_and_a_rejected_record() {
    let server = MockServer::start().await;
    let base = || {
        Mock::given(method("GET"))
            .and(path("/v1/customers"))
            .and(header("authorization", "Bearer tok_test"))
            .and(query_param("limit", "100"))
    };
    base()
        .and(query_param_is_missing("starting_after"))
        .respond_with(list(
            "/v1/customers",
            vec![
                customer("cus_C", 300, Some("101")),
                customer("cus_B", 200, None),
            ],
            true,
        ))
        .mount(&server)
        .await;
    base()
        .and(query_param("starting_after", "cus_B"))
        .respond_with(list(
            "/v1/customers",
            vec![
                json!({"object": "customer", "created": 150}),
                customer("cus_A", 100, None),
            ],
            true,
        ))
        .mount(&server)
        .await;
    base()
        .and(query_param("starting_after", "cus_A"))
        .respond_with(list(
            "/v1/customers",
            vec![customer("cus_0", 50, None)],
            false,
        ))
        .mount(&server)
        .await;
    let src = source(&server);
    let (records, rejected, cursor, pages) = run_to_end(&src, "customers", None).await;
    assert_eq!(pages, 3);
    assert_eq!(
        records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["cus_C", "cus_B", "cus_A", "cus_0"]
    );
    assert_eq!(rejected, vec![common::rejected(None, "missing `id`")]);
    assert_eq!(
        records[0].account_keys.get("crm_id").map(String::as_str),
        Some("101")
    );
    assert_eq!(
        records[0]
            .account_keys
            .get("stripe_customer")
            .map(String::as_str),
        Some("cus_C")
    );
    assert!(!records[1].account_keys.contains_key("crm_id"));
    assert_eq!(records[0].fields["email"], json!("billing@cus_C.example"));

    // Customers have no updated filter: the next run asks the events API what changed, and nothing has.
    Mock::given(method("GET"))
        .and(path("/v1/events"))
        .and(query_param("types[]", "customer.created"))
        .and(query_param("types[]", "customer.updated"))
        .and(query_param("types[]", "customer.deleted"))
        .respond_with(list("/v1/events", vec![], false))
        .expect(1)
        .mount(&server)
        .await;
    let (records, _, _, pages) = run_to_end(&src, "customers", Some(cursor)).await;
    assert_eq!((records.len(), pages), (0, 1));
    let lists = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/v1/customers")
        .count();
    assert_eq!(lists, 3, "the second run must not list customers again");
}

fn event(id: &str, kind: &str, created: i64, object: Value) -> Value {
    json!({
        "id": id, "object": "event", "api_version": "2023-10-16", "created": created,
        "data": {"object": object}, "livemode": false, "pending_webhooks": 0,
        "request": {"id": null, "idempotency_key": null}, "type": kind,
    })
}

#[tokio::test]
async fn later_runs_read_events_and_refetch_what_changed_then_relist_after_30_days() {
    // The invoices are from about ten days before the test clock's 2026-11-23T12:00Z.
    const T0: i64 = 1_795_000_000;
    let server = MockServer::start().await;
    let (http, clock) = bearer_client(&server.uri());
    let listed_at = crate::http::Clock::now(&*clock).timestamp();
    Mock::given(path("/v1/invoices"))
        .and(query_param_is_missing("created[gte]"))
        .respond_with(list(
            "/v1/invoices",
            vec![
                invoice("in_2", T0, Some(T0 + 100_000)),
                invoice("in_1", T0 - 10_000_000, None),
            ],
            false,
        ))
        .expect(2)
        .mount(&server)
        .await;
    // Since: when the full list started, minus 300 s of lookback (not the newest invoice's `created`).
    // Newest events first; in_1 has two.
    let (t1, t2, t3) = (listed_at + 1_000, listed_at + 150_000, listed_at + 200_000);
    Mock::given(path("/v1/events"))
        .and(query_param("created[gte]", (listed_at - 300).to_string()))
        .and(query_param("type", "invoice.*"))
        .respond_with(list(
            "/v1/events",
            vec![
                event(
                    "evt_3",
                    "invoice.paid",
                    t3,
                    invoice("in_1", T0 - 10_000_000, Some(t3)),
                ),
                event("evt_2", "invoice.created", t2, invoice("in_3", t2, None)),
                event(
                    "evt_1",
                    "invoice.finalized",
                    t1,
                    invoice("in_1", T0 - 10_000_000, None),
                ),
            ],
            false,
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/v1/invoices/in_1"))
        .and(header("authorization", "Bearer tok_test"))
        .respond_with(ResponseTemplate::new(200).set_body_json(invoice(
            "in_1",
            T0 - 10_000_000,
            Some(t3),
        )))
        .expect(1)
        .mount(&server)
        .await;
    // in_3 was a draft, deleted since: Stripe answers 404.
    Mock::given(path("/v1/invoices/in_3"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"error": {
            "code": "resource_missing", "message": "No such invoice: 'in_3'", "param": "id",
            "type": "invalid_request_error"}})))
        .expect(1)
        .mount(&server)
        .await;
    let src = Stripe::new(
        http.with_classifier(classify),
        SPEC.streams.iter().map(|s| s.to_string()).collect(),
        DEFAULT_CRM_KEY.into(),
        None,
    );
    let (records, _, cursor, _) = run_to_end(&src, "invoices", None).await;
    assert_eq!(records.len(), 2);
    assert_eq!(
        records[0].updated_at.timestamp(),
        T0 + 100_000,
        "paid_at is the latest transition"
    );
    assert_eq!(records[0].account_keys["stripe_customer"], "cus_A");

    let (records, _, cursor, pages) = run_to_end(&src, "invoices", Some(cursor)).await;
    assert_eq!(pages, 1);
    let got: Vec<(&str, &Value, Option<&Value>)> = records
        .iter()
        .map(|r| (r.id.as_str(), &r.fields["status"], r.fields.get("deleted")))
        .collect();
    assert_eq!(
        got,
        [
            ("in_1", &json!("paid"), None),
            ("in_3", &json!("open"), Some(&json!(true)))
        ],
        "each changed invoice once, as it is now"
    );
    let state: StreamCursor = serde_json::from_value(cursor.0.clone()).unwrap();
    assert_eq!(
        state.hwm.map(|m| (m.updated_at.timestamp(), m.id)),
        Some((t3, "evt_3".to_string()))
    );

    // Forty days later Stripe no longer has the events since the cursor: list everything again.
    crate::http::Clock::sleep(&*clock, std::time::Duration::from_secs(40 * 86_400)).await;
    let (records, _, _, _) = run_to_end(&src, "invoices", Some(cursor)).await;
    assert_eq!(records.len(), 2);
}

#[tokio::test]
async fn subscriptions_resume_mid_run_and_include_canceled() {
    let server = MockServer::start().await;
    let sub = |id: &str, canceled: Option<i64>| {
        json!({"id": id, "object": "subscription", "created": 1_000, "canceled_at": canceled, "ended_at": canceled,
               "customer": {"id": "cus_X", "object": "customer"}, "status": if canceled.is_some() { "canceled" } else { "active" }})
    };
    Mock::given(path("/v1/subscriptions"))
        .and(query_param("status", "all"))
        .and(query_param_is_missing("starting_after"))
        .respond_with(list("/v1/subscriptions", vec![sub("sub_3", None)], true))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/v1/subscriptions"))
        .and(query_param("status", "all"))
        .and(query_param("starting_after", "sub_3"))
        .respond_with(list(
            "/v1/subscriptions",
            vec![sub("sub_2", Some(5_000))],
            true,
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/v1/subscriptions"))
        .and(query_param("starting_after", "sub_2"))
        .respond_with(list("/v1/subscriptions", vec![sub("sub_1", None)], false))
        .expect(1)
        .mount(&server)
        .await;
    let src = source(&server);
    let p1 = src.fetch_page("subscriptions", None).await.unwrap();
    let (records, _, _, pages) =
        run_to_end(&source(&server), "subscriptions", Some(p1.cursor)).await;
    assert_eq!(pages, 2);
    assert_eq!(records[0].id, "sub_2");
    assert_eq!(records[0].updated_at.timestamp(), 5_000);
    assert_eq!(
        records[0]
            .account_keys
            .get("stripe_customer")
            .map(String::as_str),
        Some("cus_X")
    );
}

#[tokio::test]
async fn repeated_starting_after_is_an_error() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/customers"))
        .respond_with(list(
            "/v1/customers",
            vec![customer("cus_same", 1, None)],
            true,
        ))
        .mount(&server)
        .await;
    let src = source(&server);
    let p1 = src.fetch_page("customers", None).await.unwrap();
    let err = src
        .fetch_page("customers", Some(&p1.cursor))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("page token `cus_same` again"),
        "{err}"
    );
}

#[tokio::test]
async fn rate_limit_without_retry_after_backs_off() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/customers"))
        .respond_with(ResponseTemplate::new(429).set_body_json(json!({"error": {
            "type": "invalid_request_error", "code": "rate_limit",
            "message": "Too many requests hit the API too quickly."}})))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(path("/v1/customers"))
        .respond_with(list(
            "/v1/customers",
            vec![customer("cus_1", 1, None)],
            false,
        ))
        .mount(&server)
        .await;
    let (http, clock) = bearer_client(&server.uri());
    let src = Stripe::new(
        http.with_classifier(classify),
        vec!["customers".into()],
        DEFAULT_CRM_KEY.into(),
        None,
    );
    let page = src.fetch_page("customers", None).await.unwrap();
    assert_eq!(page.records.len(), 1);
    assert_eq!(clock.sleeps().len(), 2);
}

#[tokio::test]
async fn stripe_should_retry_decides_over_the_status() {
    let server = MockServer::start().await;
    // A 409 lock_timeout Stripe says to retry, then a 500 it says not to.
    Mock::given(path("/v1/customers"))
        .respond_with(
            ResponseTemplate::new(409)
                .insert_header("stripe-should-retry", "true")
                .set_body_json(json!({"error": {"type": "invalid_request_error", "code": "lock_timeout",
                    "message": "This object cannot be accessed right now because another API request or Stripe process is currently accessing it."}})),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/v1/customers"))
        .respond_with(
            ResponseTemplate::new(500)
                .insert_header("stripe-should-retry", "false")
                .set_body_json(
                    json!({"error": {"type": "api_error", "message": "An unknown error occurred"}}),
                ),
        )
        .mount(&server)
        .await;
    let (http, clock) = bearer_client(&server.uri());
    let src = Stripe::new(
        http.with_classifier(classify),
        vec!["customers".into()],
        DEFAULT_CRM_KEY.into(),
        None,
    );
    let err = src.fetch_page("customers", None).await.unwrap_err();
    assert!(
        matches!(
            err,
            SourceError::Http(HttpError::Permanent { status, .. }) if status.as_u16() == 500
        ),
        "{err:?}"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
    assert_eq!(clock.sleeps().len(), 1, "only the 409 was retried");
}

#[test]
fn params_are_validated() {
    let ok: toml::Table = toml::from_str("crm_id_metadata_key = \"crm_id\"").unwrap();
    assert!((SPEC.parse_params)(&ok).is_ok());
    let bad: toml::Table = toml::from_str("crm_id_metadata_key = 3").unwrap();
    assert!((SPEC.parse_params)(&bad).is_err());
    let unknown: toml::Table = toml::from_str("api_version = \"2023-09-12\"").unwrap();
    assert!((SPEC.parse_params)(&unknown).is_err());
}

// ---- Future marks, ties, bad bodies, resuming from every checkpoint and server errors ----

/// 2026-11-23T12:00:00Z, the manual clock's start.
const NOW: i64 = 1_795_435_200;

/// `GET /v1/invoices/{id}` answering every id with `invoice(id, created, None)`, `times` times in all.
async fn mount_invoices_by_id(server: &MockServer, created: i64, times: u64) {
    Mock::given(method("GET"))
        .and(wiremock::matchers::path_regex("^/v1/invoices/in_[0-9]+$"))
        .respond_with(move |r: &wiremock::Request| {
            let id = r.url.path().trim_start_matches("/v1/invoices/").to_string();
            ResponseTemplate::new(200).set_body_json(invoice(&id, created, None))
        })
        .expect(times)
        .mount(server)
        .await;
}

/// Paths of the requests the server received, in order.
async fn paths(server: &MockServer) -> Vec<String> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.url.path().to_string())
        .collect()
}

/// The customers list of the first test: cus_C, cus_B | a record without id, cus_A | cus_0.
async fn mount_three_customer_pages(server: &MockServer) {
    let base = || {
        Mock::given(method("GET"))
            .and(path("/v1/customers"))
            .and(query_param("limit", "100"))
    };
    base()
        .and(query_param_is_missing("starting_after"))
        .respond_with(list(
            "/v1/customers",
            vec![
                customer("cus_C", 300, Some("101")),
                customer("cus_B", 200, None),
            ],
            true,
        ))
        .expect(1)
        .mount(server)
        .await;
    base()
        .and(query_param("starting_after", "cus_B"))
        .respond_with(list(
            "/v1/customers",
            vec![
                json!({"object": "customer", "created": 150}),
                customer("cus_A", 100, None),
            ],
            true,
        ))
        .mount(server)
        .await;
    base()
        .and(query_param("starting_after", "cus_A"))
        .respond_with(list(
            "/v1/customers",
            vec![customer("cus_0", 50, None)],
            false,
        ))
        .mount(server)
        .await;
}

#[tokio::test]
async fn a_timeout_and_a_reset_midway_are_retried_and_every_request_carries_the_key() {
    let server = MockServer::start().await;
    mount_three_customer_pages(&server).await;
    // Requests 2 and 3 are the first two attempts at the second page (starting_after=cus_B).
    let proxy = FaultProxy::start(&server.uri(), &[(2, Fault::Hang), (3, Fault::Reset)]).await;
    let (http, clock) = bearer_client_behind_proxy(proxy.url());
    let src = Stripe::new(
        http.with_classifier(classify),
        vec!["customers".into()],
        DEFAULT_CRM_KEY.into(),
        None,
    );
    let d = drain(&src, "customers", None).await.unwrap();
    assert_eq!(d.ids(), ["cus_C", "cus_B", "cus_A", "cus_0"]);
    assert_eq!(proxy.requests(), 5);
    assert_eq!(clock.sleeps().len(), 2, "one backoff per failed attempt");
    assert_eq!(
        assert_every_request_carries(&server, "/", "authorization", "Bearer tok_test").await,
        3,
        "the faulted attempts never reached the server"
    );
}

#[tokio::test]
async fn a_future_mark_reads_events_from_it_and_finds_nothing() {
    let server = MockServer::start().await;
    // 2027-01-01T12:00:00Z, after the clock's now: not older than Stripe keeps events, so no re-list;
    // the events API is asked from five minutes before the mark, once, and has nothing.
    Mock::given(method("GET"))
        .and(path("/v1/events"))
        .and(query_param("created[gte]", "1798804500"))
        .and(query_param("type", "invoice.*"))
        .respond_with(list("/v1/events", vec![], false))
        .expect(1)
        .mount(&server)
        .await;
    let src = source(&server);
    let future = json!({"hwm": {"updated_at": "2027-01-01T12:00:00Z", "id": "evt_9"}});
    let r = drain(&src, "invoices", Some(Cursor(future.clone())))
        .await
        .unwrap();
    assert_eq!((r.pages, r.records.len(), r.rejected.len()), (1, 0, 0));
    assert_eq!(
        r.state(),
        serde_json::from_value::<StreamCursor>(future).unwrap(),
        "the mark stays where it was"
    );
    assert_eq!(
        paths(&server).await,
        ["/v1/events"],
        "no list, no object read"
    );
}

#[tokio::test]
async fn equal_timestamps_across_a_page_boundary_and_across_runs_are_all_kept() {
    let server = MockServer::start().await;
    // A full list pages by id, so customers created in the same second split across pages are all kept.
    Mock::given(path("/v1/customers"))
        .and(query_param_is_missing("starting_after"))
        .respond_with(list(
            "/v1/customers",
            vec![
                customer("cus_C", 1_000, None),
                customer("cus_B", 1_000, None),
            ],
            true,
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/v1/customers"))
        .and(query_param("starting_after", "cus_B"))
        .respond_with(list(
            "/v1/customers",
            vec![customer("cus_A", 1_000, None)],
            false,
        ))
        .expect(1)
        .mount(&server)
        .await;
    let src = source(&server);
    let listed = drain(&src, "customers", None).await.unwrap();
    assert_eq!(listed.ids(), ["cus_C", "cus_B", "cus_A"]);

    // Events of one second split across two event pages: every invoice they name is read and kept once.
    let t = NOW - 3_600;
    let since = |at: i64| (at - 300).to_string();
    let inv = |id: &str| invoice(id, t, None);
    Mock::given(path("/v1/events"))
        .and(query_param("created[gte]", since(t - 7_200)))
        .and(query_param_is_missing("starting_after"))
        .respond_with(list(
            "/v1/events",
            vec![
                event("evt_4", "invoice.created", t, inv("in_4")),
                event("evt_3", "invoice.created", t, inv("in_3")),
            ],
            true,
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/v1/events"))
        .and(query_param("created[gte]", since(t - 7_200)))
        .and(query_param("starting_after", "evt_3"))
        .respond_with(list(
            "/v1/events",
            vec![event("evt_2", "invoice.created", t, inv("in_2"))],
            false,
        ))
        .expect(1)
        .mount(&server)
        .await;
    // The next run asks from the mark's second minus the lookback (created[gte]): an event of that same
    // second whose id sorts below the mark's (evt_1 < evt_4), delivered late, is not skipped. The
    // events already read come back too, and their invoices are read again (upserts by id).
    Mock::given(path("/v1/events"))
        .and(query_param("created[gte]", since(t)))
        .respond_with(list(
            "/v1/events",
            vec![
                event("evt_4", "invoice.created", t, inv("in_4")),
                event("evt_3", "invoice.created", t, inv("in_3")),
                event("evt_2", "invoice.created", t, inv("in_2")),
                event("evt_1", "invoice.finalized", t, inv("in_1")),
            ],
            false,
        ))
        .expect(1)
        .mount(&server)
        .await;
    mount_invoices_by_id(&server, t, 7).await;
    let earlier = json!({"hwm": {"updated_at": chrono::TimeZone::timestamp_opt(&Utc, t - 7_200, 0).unwrap(), "id": "evt_0"}});
    let first = drain(&src, "invoices", Some(Cursor(earlier)))
        .await
        .unwrap();
    assert_eq!(first.pages, 2);
    assert_eq!(first.ids(), ["in_4", "in_3", "in_2"]);
    let hwm = first.state().hwm.unwrap();
    assert_eq!((hwm.updated_at.timestamp(), hwm.id.as_str()), (t, "evt_4"));
    let second = drain(&src, "invoices", Some(first.cursor)).await.unwrap();
    assert_eq!(second.ids(), ["in_4", "in_3", "in_2", "in_1"]);
    let hwm = second.state().hwm.unwrap();
    assert_eq!((hwm.updated_at.timestamp(), hwm.id.as_str()), (t, "evt_4"));
}

#[tokio::test]
async fn malformed_json_names_connector_and_request_path() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/customers"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string("{\"object\": \"list\", \"url\": \"/v1/customers\", \"data\": ["),
        )
        .expect(1)
        .mount(&server)
        .await;
    // Events are fine, but the changed invoice's own body is cut short.
    Mock::given(path("/v1/events"))
        .respond_with(list(
            "/v1/events",
            vec![event(
                "evt_1",
                "invoice.paid",
                NOW - 60,
                invoice("in_1", NOW - 600, Some(NOW - 60)),
            )],
            false,
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/v1/invoices/in_1"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{\"id\": \"in_1\", \"object\": "))
        .expect(1)
        .mount(&server)
        .await;
    let src = source(&server);
    let decode = |err: SourceError, path: &str| {
        assert!(matches!(&err, SourceError::Malformed { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("for stream "), "{msg}");
        assert!(msg.contains("connector test_test"), "{msg}");
        assert!(msg.contains(path), "{msg}");
    };
    decode(
        drain(&src, "customers", None).await.unwrap_err(),
        "GET /v1/customers:",
    );
    let incremental = json!({"hwm": {"updated_at": "2026-11-23T11:00:00Z", "id": "evt_0"}});
    let err = drain(&src, "invoices", Some(Cursor(incremental)))
        .await
        .unwrap_err();
    decode(err, "GET /v1/invoices/in_1:");
    // Not retried: one request each.
    assert_eq!(
        paths(&server).await,
        ["/v1/customers", "/v1/events", "/v1/invoices/in_1"]
    );
}

#[tokio::test]
async fn resumes_from_every_checkpoint() {
    let server = MockServer::start().await;
    mount_three_customer_pages(&server).await;
    // A completed list's mark is when it started (the clock's now); the next run reads events from five
    // minutes before that, and there are none.
    Mock::given(path("/v1/events"))
        .and(query_param("created[gte]", (NOW - 300).to_string()))
        .and(query_param("types[]", "customer.updated"))
        .respond_with(list("/v1/events", vec![], false))
        .expect(1)
        .mount(&server)
        .await;
    let src = source(&server);
    let mut cursor = None;
    let mut checkpoints: Vec<(Vec<String>, Cursor)> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    loop {
        let page = src.fetch_page("customers", cursor.as_ref()).await.unwrap();
        seen.extend(page.records.iter().map(|r| r.id.clone()));
        checkpoints.push((seen.clone(), page.cursor.clone()));
        cursor = Some(page.cursor);
        if page.done {
            break;
        }
    }
    let full = ["cus_C", "cus_B", "cus_A", "cus_0"];
    assert_eq!(seen, full);
    assert_eq!(checkpoints.len(), 3);
    let expected_rest: [&[&str]; 3] = [&["cus_A", "cus_0"], &["cus_0"], &[]];
    for (k, ((before, checkpoint), rest)) in checkpoints.into_iter().zip(expected_rest).enumerate()
    {
        let after = drain(&source(&server), "customers", Some(checkpoint))
            .await
            .unwrap();
        assert_eq!(after.ids(), rest, "resumed after page {}", k + 1);
        let mut union: Vec<&str> = before
            .iter()
            .map(String::as_str)
            .chain(after.ids())
            .collect();
        let n = union.len();
        union.sort_unstable();
        union.dedup();
        assert_eq!(union.len(), n, "no duplicate resuming after page {}", k + 1);
        let mut want = full.to_vec();
        want.sort_unstable();
        assert_eq!(union, want, "nothing lost resuming after page {}", k + 1);
    }
    let reqs = server.received_requests().await.unwrap();
    let after = |id: &str| {
        reqs.iter()
            .filter(|r| {
                r.url
                    .query_pairs()
                    .any(|(k, v)| k == "starting_after" && v == id)
            })
            .count()
    };
    // Page 1 once (its mock expects one request), page 2 once more, page 3 twice more.
    assert_eq!((after("cus_B"), after("cus_A")), (2, 3));
}

#[tokio::test]
async fn a_burst_of_server_errors_is_retried_then_the_run_finishes() {
    let api_error = |status: u16| {
        ResponseTemplate::new(status)
            .insert_header("request-id", "req_burst")
            .set_body_json(json!({"error": {
                "type": "api_error",
                "message": "An unknown error occurred",
            }}))
    };
    let server = MockServer::start().await;
    Mock::given(path("/v1/customers"))
        .respond_with(api_error(500))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(path("/v1/customers"))
        .respond_with(api_error(503).insert_header("stripe-should-retry", "true"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/v1/customers"))
        .and(query_param_is_missing("starting_after"))
        .respond_with(list(
            "/v1/customers",
            vec![customer("cus_2", 2, None)],
            true,
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/v1/customers"))
        .and(query_param("starting_after", "cus_2"))
        .respond_with(list(
            "/v1/customers",
            vec![customer("cus_1", 1, None)],
            false,
        ))
        .expect(1)
        .mount(&server)
        .await;
    let (http, clock) = bearer_client(&server.uri());
    let src = Stripe::new(
        http.with_classifier(classify),
        vec!["customers".into()],
        DEFAULT_CRM_KEY.into(),
        None,
    );
    let r = drain(&src, "customers", None).await.unwrap();
    assert_eq!((r.pages, r.ids()), (2, vec!["cus_2", "cus_1"]));
    assert_eq!(clock.sleeps().len(), 3, "one backoff per failed attempt");
    assert_eq!(server.received_requests().await.unwrap().len(), 5);

    // A burst that outlasts the attempts ends the page with an error naming connector and path.
    let down = MockServer::start().await;
    Mock::given(path("/v1/customers"))
        .respond_with(api_error(500))
        .mount(&down)
        .await;
    let (http, clock) = bearer_client(&down.uri());
    let src = Stripe::new(
        http.with_classifier(classify),
        vec!["customers".into()],
        DEFAULT_CRM_KEY.into(),
        None,
    );
    let err = drain(&src, "customers", None).await.unwrap_err();
    assert!(
        matches!(
            &err,
            SourceError::Http(crate::http::HttpError::Transient { .. })
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("connector test_test: GET /v1/customers") && msg.contains("http 500"),
        "{msg}"
    );
    let attempts = crate::http::RetryPolicy::default().max_attempts as usize;
    assert_eq!(down.received_requests().await.unwrap().len(), attempts);
    assert_eq!(clock.sleeps().len(), attempts - 1);
}
