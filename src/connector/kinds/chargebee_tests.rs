//! Tests of the `chargebee` kind against wiremock serving Chargebee's list responses. Shared setup:
//! [`Fixture`] (server, Basic-auth source, manual clock) and the item/list builders.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use wiremock::matchers::{header, method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::*;
use crate::connector::kinds::testkit::drain;
use crate::http::testing::{
    assert_every_request_carries, config, manual_clock, secrets, Fault, FaultProxy, FAULT_TIMEOUT,
};
use crate::http::{HttpError, ManualClock};
use crate::vocab::{AuthScheme, Role};

/// `Authorization` for API key `test_cbkey` with an empty password.
const BASIC: &str = "Basic dGVzdF9jYmtleTo=";

struct Fixture {
    server: MockServer,
    src: Chargebee,
    clock: Arc<ManualClock>,
    proxy: Option<FaultProxy>,
}

impl Fixture {
    async fn new() -> Fixture {
        Fixture::with_faults(&[]).await
    }

    /// A fixture whose source reaches the server through a [`FaultProxy`] injecting `faults`, with a 50 ms
    /// request timeout (real time: reqwest's timeout cannot be paused), when `faults` is not empty.
    async fn with_faults(faults: &[(usize, Fault)]) -> Fixture {
        let server = MockServer::start().await;
        let proxy = match faults {
            [] => None,
            _ => Some(FaultProxy::start(&server.uri(), faults).await),
        };
        let url = proxy.as_ref().map_or(server.uri(), |p| p.url().to_string());
        let mut cfg = config("chargebee", Role::Source, &url, AuthScheme::Basic);
        if proxy.is_some() {
            cfg.timeout = FAULT_TIMEOUT;
        }
        let s = secrets(&mut cfg, &[("username", "test_cbkey")]);
        let clock = manual_clock();
        let http = HttpClient::new(&cfg, &s)
            .unwrap()
            .with_classifier(classify)
            .with_clock(clock.clone());
        let src = Chargebee::new(
            http,
            vec!["customers".into()],
            Some("cf_hubspot_company_id".into()),
            Some(2),
        );
        Fixture {
            server,
            src,
            clock,
            proxy,
        }
    }

    /// A page of `stream` at `offset` (`None`: the first page), answering `body`.
    async fn page(&self, stream: &str, offset: Option<&str>, body: Value) {
        let m = Mock::given(method("GET"))
            .and(path(format!("/api/v2/{stream}")))
            .and(header("authorization", BASIC))
            .and(query_param("limit", "2"))
            .and(query_param("sort_by[asc]", "updated_at"))
            .and(query_param_is_missing("updated_at[after]"));
        let m = match offset {
            Some(o) => m.and(query_param("offset", o)),
            None => m.and(query_param_is_missing("offset")),
        };
        m.respond_with(ResponseTemplate::new(200).set_body_json(body))
            .mount(&self.server)
            .await;
    }
}

fn customer(id: &str, updated: i64) -> Value {
    json!({"customer": {
        "id": id, "first_name": "Ada", "company": format!("Co {id}"), "email": format!("billing@{id}.com"),
        "auto_collection": "on", "net_term_days": 0, "created_at": 1700000000, "updated_at": updated,
        "resource_version": updated * 1000, "deleted": false, "object": "customer",
        "cf_hubspot_company_id": format!("hs-{id}"),
    }})
}

fn list(items: Vec<Value>, next: Option<&str>) -> Value {
    let mut v = json!({ "list": items });
    if let Some(n) = next {
        v["next_offset"] = json!(n);
    }
    v
}

async fn three_pages(f: &Fixture) {
    f.page(
        "customers",
        None,
        list(
            vec![customer("c1", 1_709_280_000), customer("c2", 1_709_290_000)],
            Some("[\"1709290000\",\"2\"]"),
        ),
    )
    .await;
    // c3 and c4 tie on updated_at across the page boundary.
    f.page(
        "customers",
        Some("[\"1709290000\",\"2\"]"),
        list(
            vec![
                customer("c3", 1_709_300_000),
                json!({"customer": {"id": "cX", "object": "customer"}}),
            ],
            Some("[\"1709300000\",\"4\"]"),
        ),
    )
    .await;
    f.page(
        "customers",
        Some("[\"1709300000\",\"4\"]"),
        list(vec![customer("c4", 1_709_300_000)], None),
    )
    .await;
}

#[tokio::test]
async fn pages_with_next_offset_keys_and_a_rejected_item() {
    let f = Fixture::new().await;
    three_pages(&f).await;
    let d = drain(&f.src, "customers", None).await.unwrap();
    assert_eq!((d.pages, d.ids()), (3, vec!["c1", "c2", "c3", "c4"]));
    assert_eq!(d.rejected.len(), 1);
    assert_eq!(d.rejected[0].id.as_deref(), Some("cX"));
    assert!(d.rejected[0].reason.contains("updated_at"));
    assert_eq!(d.records[0].account_keys["chargebee_customer_id"], "c1");
    assert_eq!(d.records[0].account_keys["crm_id"], "hs-c1");
    assert_eq!(d.records[0].fields["company"], "Co c1");
    assert_eq!(
        d.state().hwm.unwrap().id,
        "c4",
        "a tie resolves to the higher id"
    );
    let reqs = f.server.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 3);
    for r in reqs {
        assert_eq!(r.headers.get("authorization").unwrap(), BASIC);
    }
}

#[tokio::test]
async fn second_run_filters_on_updated_at_after_the_mark_minus_lookback() {
    let f = Fixture::new().await;
    three_pages(&f).await;
    let first = drain(&f.src, "customers", None).await.unwrap();
    // The mark is 1709300000; five minutes earlier is 1709299700.
    Mock::given(path("/api/v2/customers"))
        .and(query_param("updated_at[after]", "1709299700"))
        .respond_with(ResponseTemplate::new(200).set_body_json(list(
            vec![
                customer("c3", 1_709_300_000),
                customer("c4", 1_709_300_000),
                customer("c2", 1_709_400_000),
            ],
            None,
        )))
        .expect(1)
        .mount(&f.server)
        .await;
    let second = drain(&f.src, "customers", Some(first.cursor))
        .await
        .unwrap();
    assert_eq!(
        second.ids(),
        ["c3", "c4", "c2"],
        "tied records are re-read, not skipped"
    );
    assert_eq!(second.state().hwm.unwrap().id, "c2");
}

#[tokio::test]
async fn resumes_from_a_checkpoint_and_refuses_a_repeated_offset() {
    let f = Fixture::new().await;
    three_pages(&f).await;
    let p1 = f.src.fetch_page("customers", None).await.unwrap();
    let rest = drain(&f.src, "customers", Some(p1.cursor)).await.unwrap();
    assert_eq!(rest.ids(), ["c3", "c4"]);
    let g = Fixture::new().await;
    g.page(
        "customers",
        None,
        list(vec![customer("c1", 1)], Some("[\"1\",\"1\"]")),
    )
    .await;
    g.page(
        "customers",
        Some("[\"1\",\"1\"]"),
        list(vec![customer("c2", 2)], Some("[\"1\",\"1\"]")),
    )
    .await;
    let err = drain(&g.src, "customers", None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("again")
            && err.contains("customers")
            && err.contains("connector test_chargebee"),
        "{err}"
    );
}

async fn throttle_then_ok(f: &Fixture, throttle: ResponseTemplate) {
    Mock::given(path("/api/v2/customers"))
        .respond_with(throttle)
        .up_to_n_times(1)
        .mount(&f.server)
        .await;
    f.page("customers", None, list(vec![customer("c1", 1)], None))
        .await;
}

fn limit_exceeded() -> ResponseTemplate {
    ResponseTemplate::new(429).set_body_json(json!({
        "message": "Sorry, access has been blocked temporarily due to request count exceeding acceptable limits. Please try after some time.",
        "type": "operation_failed", "api_error_code": "api_request_limit_exceeded", "http_status_code": 429,
    }))
}

#[tokio::test]
async fn a_429_waits_for_retry_after_in_seconds_as_a_date_or_a_quarter_minute() {
    let f = Fixture::new().await;
    throttle_then_ok(&f, limit_exceeded().insert_header("Retry-After", "7")).await;
    drain(&f.src, "customers", None).await.unwrap();
    assert_eq!(f.clock.sleeps(), [Duration::from_secs(7)]);

    let f = Fixture::new().await;
    // The manual clock reads 2026-11-23T12:00:00Z.
    throttle_then_ok(
        &f,
        limit_exceeded().insert_header("Retry-After", "Mon, 23 Nov 2026 12:00:20 GMT"),
    )
    .await;
    drain(&f.src, "customers", None).await.unwrap();
    assert_eq!(f.clock.sleeps(), [Duration::from_secs(20)]);

    let f = Fixture::new().await;
    throttle_then_ok(&f, limit_exceeded()).await;
    drain(&f.src, "customers", None).await.unwrap();
    assert_eq!(f.clock.sleeps(), [NO_RETRY_AFTER_WAIT]);
}

#[tokio::test]
async fn a_timeout_and_a_reset_midway_are_retried_and_every_request_carries_the_key() {
    // Requests 2 and 3 are the second page's first two attempts: one times out, one is reset.
    let f = Fixture::with_faults(&[(2, Fault::Hang), (3, Fault::Reset)]).await;
    three_pages(&f).await;
    let d = drain(&f.src, "customers", None).await.unwrap();
    assert_eq!(d.ids(), vec!["c1", "c2", "c3", "c4"]);
    assert_eq!(f.proxy.as_ref().map(FaultProxy::requests), Some(5));
    assert_eq!(f.clock.sleeps().len(), 2, "one backoff per failed attempt");
    assert_eq!(
        assert_every_request_carries(&f.server, "/", "authorization", BASIC).await,
        3,
        "the faulted attempts never reached the server"
    );
}

#[tokio::test]
async fn a_5xx_burst_is_retried_and_a_bad_key_is_not() {
    let f = Fixture::new().await;
    Mock::given(path("/api/v2/customers"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(3)
        .mount(&f.server)
        .await;
    f.page("customers", None, list(vec![customer("c1", 1)], None))
        .await;
    assert_eq!(
        drain(&f.src, "customers", None).await.unwrap().ids(),
        ["c1"]
    );
    assert_eq!(f.clock.sleeps().len(), 3);

    let g = Fixture::new().await;
    Mock::given(path("/api/v2/customers"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "message": "Sorry, authentication failed. Invalid api key", "type": "untyped",
            "api_error_code": "api_authentication_failed", "http_status_code": 401,
        })))
        .expect(1)
        .mount(&g.server)
        .await;
    let err = g.src.fetch_page("customers", None).await.unwrap_err();
    assert!(
        matches!(err, SourceError::Http(HttpError::Auth { .. })),
        "{err:?}"
    );
    assert!(!format!("{err} {:?}", g.src.http).contains("test_cbkey"));
}

#[tokio::test]
async fn malformed_bodies_name_the_stream() {
    let f = Fixture::new().await;
    Mock::given(path("/api/v2/customers"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"items": []})))
        .mount(&f.server)
        .await;
    let err = f
        .src
        .fetch_page("customers", None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("customers") && err.contains("no `list` array"),
        "{err}"
    );
    let g = Fixture::new().await;
    Mock::given(path("/api/v2/customers"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{\"list\": [ {\"customer\""))
        .mount(&g.server)
        .await;
    let err = g
        .src
        .fetch_page("customers", None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("connector test_chargebee") && err.contains("/api/v2/customers"),
        "{err}"
    );
}

#[test]
fn subscriptions_and_invoices_carry_the_customer() {
    let sub = json!({"subscription": {"id": "s1", "customer_id": "c9", "updated_at": 5, "status": "active", "mrr": 4900},
                     "customer": {"id": "c9"}});
    let r = map_item(sub, "subscription", Some("cf_hubspot_company_id")).unwrap();
    assert_eq!(
        (
            r.id.as_str(),
            r.account_keys["chargebee_customer_id"].as_str()
        ),
        ("s1", "c9")
    );
    assert!(!r.account_keys.contains_key("crm_id"));
    assert_eq!(r.fields["mrr"], 4900);
    assert!(map_item(json!({"invoice": {"updated_at": 5}}), "invoice", None).is_err());
    assert!((SPEC.parse_params)(&toml::from_str("crm_id_field = \"cf_x\"").unwrap()).is_ok());
    assert!((SPEC.parse_params)(&toml::from_str("site = \"x\"").unwrap()).is_err());
}
